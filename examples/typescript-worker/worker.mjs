// A sundial worker in TypeScript/JavaScript on the SDK in sdks/typescript (Node >= 20).
//
//   cd examples/typescript-worker && npm install && node worker.mjs --server http://127.0.0.1:7070
//
// Serves `ts-echo` (echoes the payload, signed "by": "typescript") and `ts-fetch` (GETs
// payload.url, aborted with the run on cancel, timeout or a lease it can no longer hold), and
// logs each run. The SDK heartbeats leases, reconnects with backoff when the server restarts,
// and drains on SIGTERM/Ctrl-C (running runs finish, then it deregisters).
import { parseArgs } from "node:util";
import { HandlerError, Worker } from "sundial";

const { values: args } = parseArgs({
  options: {
    server: { type: "string", default: "http://127.0.0.1:7070" },
    capacity: { type: "string", default: "8" },
    token: { type: "string" },
  },
});

const worker = new Worker(args.server, { token: args.token, capacity: Number(args.capacity) });

worker.handler("ts-echo", (ctx) => {
  console.log(`run ${ctx.runId} attempt ${ctx.attempt}: ${JSON.stringify(ctx.payload)}`);
  return { ...ctx.payload, by: "typescript" };
});

worker.handler("ts-fetch", async (ctx) => {
  if (typeof ctx.payload?.url !== "string") throw new HandlerError("payload.url: expected a string");
  const resp = await fetch(ctx.payload.url, { signal: ctx.signal });
  console.log(`run ${ctx.runId}: GET ${ctx.payload.url} -> ${resp.status}`);
  return { status: resp.status, bytes: (await resp.arrayBuffer()).byteLength };
});

await worker.run();
console.log("worker stopped");
