// The TypeScript SDK's side of the worker conformance suite: serves conf-echo, conf-sleep and
// conf-marker (contract in ../README.md). The SDK is imported as the package `sundial`, or
// from SUNDIAL_TS_SDK (a file URL) when the suite runs against the repository's copy.
import { appendFileSync, writeFileSync } from "node:fs";
import { parseArgs } from "node:util";

const { Worker } = await import(process.env.SUNDIAL_TS_SDK || "sundial");
const { values: args } = parseArgs({
  options: {
    server: { type: "string" },
    name: { type: "string", default: "conf-typescript" },
    capacity: { type: "string", default: "4" },
    "drain-timeout": { type: "string", default: "30" },
    token: { type: "string" },
  },
});
const nowNs = () => (BigInt(Date.now()) * 1_000_000n).toString();
const write = (path, text) => path && writeFileSync(path, text);

const worker = new Worker(args.server, {
  token: args.token,
  name: args.name,
  capacity: Number(args.capacity),
  drainTimeout: Number(args["drain-timeout"]) * 1000,
});

worker.handler("conf-echo", (ctx) => ctx.payload);

worker.handler("conf-sleep", async (ctx) => {
  const end = Date.now() + ctx.payload.ms;
  while (Date.now() < end) {
    write(ctx.payload.beat, nowNs());
    await new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        ctx.signal.removeEventListener("abort", done);
        resolve();
      };
      const t = setTimeout(done, Math.min(50, Math.max(0, end - Date.now())));
      ctx.signal.addEventListener("abort", done);
    });
    if (ctx.signal.aborted) {
      write(ctx.payload.stopped, `${nowNs()} ${ctx.stopReason}`);
      return { slept_ms: ctx.payload.ms - (end - Date.now()), stopped: true };
    }
  }
  return { slept_ms: ctx.payload.ms, stopped: false };
});

worker.handler(
  "conf-marker",
  class Marker {
    run(ctx) {
      appendFileSync(ctx.payload.path, `${ctx.runId} ${ctx.attempt}\n`);
      return { run_id: ctx.runId };
    }
  },
);

await worker.run();
