// The worker against a real server (lease 2 s): handler kinds, capacity, heartbeats, cancel,
// timeout, stale completions, graceful stop, tokens. Partitions, crashes and SIGTERM are in
// the cross-language conformance suite (sdks/conformance/).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Client, HandlerError, Worker } from "../src/index.js";
import { memoryLogger, startServer, waitUntil } from "./support.js";

describe("worker", () => {
  let server;
  let client;
  const running = [];
  before(async () => {
    server = await startServer();
    client = new Client(server.url);
  });
  after(async () => {
    for (const [w, done] of running) {
      w.stop();
      await done;
    }
    await server.stop();
  });

  async function start(worker) {
    const done = worker.run({ handleSignals: false });
    running.push([worker, done]);
    await waitUntil("the worker to register", () => worker.workerId);
    return { done }; // wrapped: returning the promise itself would await the whole run
  }
  const runOf = async (handler, payload, options) => {
    const job = await client.submit(handler, payload, options);
    return (await client.listRuns({ job_id: job.id })).items[0].id;
  };
  const quiet = () => memoryLogger();

  test("function, class, object, async and failing handlers", async () => {
    const w = new Worker(server.url, { name: "kinds", claimWait: 1000, logger: quiet() })
      .handler("k-fn", (ctx) => ({ echo: ctx.payload, attempt: ctx.attempt }))
      .handler("k-class", class { run(ctx) { return ctx.payload.n * 2; } })
      .handler("k-object", { run: async () => "object ok" })
      .handler("k-fail", () => { throw new HandlerError("bad input", { output: { partial: 1 } }); })
      .handler("k-crash", () => { throw new TypeError("boom"); });
    await start(w);
    const once = { retry: { max_attempts: 1 } };
    const ids = {
      fn: await runOf("k-fn", { a: 1 }),
      cls: await runOf("k-class", { n: 21 }),
      obj: await runOf("k-object"),
      fail: await runOf("k-fail", undefined, once),
      crash: await runOf("k-crash", undefined, once),
    };
    const got = {};
    for (const [k, id] of Object.entries(ids)) got[k] = await client.waitForRun(id, { timeout: 20_000 });
    assert.deepEqual([got.fn.state, got.fn.output], ["succeeded", { echo: { a: 1 }, attempt: 1 }]);
    assert.deepEqual([got.cls.state, got.cls.output], ["succeeded", 42]);
    assert.deepEqual([got.obj.state, got.obj.output], ["succeeded", "object ok"]);
    assert.deepEqual([got.fail.state, got.fail.error, got.fail.output], ["failed", "bad input", { partial: 1 }]);
    assert.deepEqual([got.crash.state, got.crash.error], ["failed", "TypeError: boom"]);
  });

  test("capacity bounds concurrent runs", async () => {
    let now = 0;
    let peak = 0;
    let release;
    const gate = new Promise((r) => (release = r));
    const w = new Worker(server.url, { name: "cap", capacity: 2, claimWait: 1000, logger: quiet() }).handler("cap-hold", async () => {
      now += 1;
      peak = Math.max(peak, now);
      await gate;
      now -= 1;
    });
    const ids = [];
    for (let i = 0; i < 5; i++) ids.push(await runOf("cap-hold"));
    await start(w);
    await waitUntil("two runs running", () => now === 2);
    const states = await Promise.all(ids.map(async (id) => (await client.getRun(id)).state));
    assert.equal(states.filter((s) => s === "pending").length, 3, "a worker of capacity 2 claimed more than 2 runs");
    release();
    for (const id of ids) assert.equal((await client.waitForRun(id, { timeout: 20_000 })).state, "succeeded");
    assert.equal(peak, 2);
  });

  test("heartbeats keep a run longer than its lease", async () => {
    const w = new Worker(server.url, { name: "long", capacity: 1, claimWait: 1000, logger: quiet() }).handler(
      "long-run",
      (ctx) => new Promise((r) => setTimeout(() => r(ctx.signal.aborted ? "stopped" : "done"), 5000)),
    );
    await start(w);
    const run = await client.waitForRun(await runOf("long-run", undefined, { retry: { max_attempts: 1 } }), { timeout: 30_000 });
    assert.deepEqual([run.state, run.attempt, run.output], ["succeeded", 1, "done"]);
  });

  test("cancel aborts the handler's signal", async () => {
    let reason;
    let started;
    const began = new Promise((r) => (started = r));
    const w = new Worker(server.url, { name: "cancel", capacity: 1, claimWait: 1000, logger: quiet() }).handler("cancel-me", (ctx) => {
      started();
      return new Promise((r) =>
        ctx.signal.addEventListener("abort", () => {
          reason = ctx.stopReason;
          r("stopped early");
        }),
      );
    });
    await start(w);
    const id = await runOf("cancel-me");
    await began;
    await client.cancel(id);
    const run = await client.waitForRun(id, { timeout: 10_000 });
    assert.deepEqual([run.state, run.output, reason], ["cancelled", "stopped early", "cancelled"]);
  });

  test("a timeout aborts the handler", async () => {
    let reason;
    const w = new Worker(server.url, { name: "timeout", capacity: 1, claimWait: 1000, logger: quiet() }).handler(
      "slow",
      (ctx) =>
        new Promise((_, reject) =>
          ctx.signal.addEventListener("abort", () => {
            reason = ctx.stopReason;
            reject(ctx.signal.reason);
          }),
        ),
    );
    await start(w);
    const run = await client.waitForRun(await runOf("slow", undefined, { timeout: 500, retry: { max_attempts: 1 } }), { timeout: 15_000 });
    assert.deepEqual([run.state, run.error, reason], ["timed_out", "timed out after 500ms", "timed_out"]);
  });

  test("a stale completion is logged, not retried", async () => {
    const logger = memoryLogger();
    const w = new Worker(server.url, { name: "stale", capacity: 1, claimWait: 1000, logger });
    w.handler("stale", async (ctx) => {
      // Someone else settles this attempt first: the worker's own complete is stale.
      await client.request("POST", `/v1/runs/${ctx.runId}/complete`, { worker_id: w.workerId, attempt: ctx.attempt, state: "succeeded", output: "first" });
      return "second";
    });
    const { done } = await start(w);
    const id = await runOf("stale");
    await waitUntil("the stale warning", () => logger.lines.some((l) => l.includes("rejected as stale")));
    w.stop();
    await done;
    assert.equal(logger.lines.filter((l) => l.includes("rejected as stale")).length, 1, logger.lines.join("\n"));
    const settled = await client.getRun(id);
    assert.equal(settled.output, "first", JSON.stringify(settled) + logger.lines.join("\n"));
  });

  test("stop() lets a running handler finish, claims nothing new, deregisters", async () => {
    let started;
    let go;
    const began = new Promise((r) => (started = r));
    const gate = new Promise((r) => (go = r));
    const w = new Worker(server.url, { name: "drain", capacity: 1, claimWait: 5000, logger: quiet() }).handler("drain-me", async () => {
      started();
      await gate;
      return "finished";
    });
    let finished = false;
    const done = (await start(w)).done.then(() => (finished = true));
    const id = await runOf("drain-me");
    await began;
    w.stop();
    const later = await runOf("drain-me");
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(finished, false, "run() resolved before the running handler finished");
    go();
    await done;
    assert.equal((await client.getRun(id)).state, "succeeded");
    assert.equal((await client.getRun(later)).state, "pending");
    const me = (await client.listWorkers()).find((x) => x.id === w.workerId);
    assert.notEqual(me?.state ?? "gone", "active");
    await client.cancel(later);
  });
});

test("the worker reconnects after the server restarts", async () => {
  const server = await startServer();
  const logger = memoryLogger();
  const w = new Worker(server.url, { name: "restart", capacity: 1, claimWait: 1000, logger }).handler("after-restart", () => "served");
  const done = w.run({ handleSignals: false });
  try {
    await waitUntil("the worker to register", () => w.workerId);
    await server.kill();
    await waitUntil("the worker to notice", () => logger.lines.some((l) => l.includes("ECONNREFUSED")), 10_000);
    await server.restart();
    const client = new Client(server.url);
    const job = await client.submit("after-restart");
    const run = await client.waitForRun((await client.listRuns({ job_id: job.id })).items[0].id, { timeout: 30_000 });
    assert.deepEqual([run.state, run.output], ["succeeded", "served"]);
  } finally {
    w.stop();
    await done;
    await server.stop();
  }
});

test("the worker sends its token", async () => {
  const server = await startServer("--token", "w-token");
  try {
    const w = new Worker(server.url, { token: "w-token", name: "tok", capacity: 1, claimWait: 1000, logger: memoryLogger() }).handler("tok", () => "ok");
    const done = w.run({ handleSignals: false });
    const client = new Client(server.url, { token: "w-token" });
    const job = await client.submit("tok");
    const run = await client.waitForRun((await client.listRuns({ job_id: job.id })).items[0].id, { timeout: 20_000 });
    assert.equal(run.output, "ok");
    w.stop();
    await done;
  } finally {
    await server.stop();
  }
});
