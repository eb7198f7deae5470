// The client against a real server: jobs, errors, batch, pause/resume, cancel, wait, tokens.
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { after, before, describe, test } from "node:test";
import { Client, SundialError, Trigger, Unavailable, formatDuration, jobSpec, parseDuration } from "../src/index.js";
import { startServer } from "./support.js";

describe("client", () => {
  let server;
  let client;
  before(async () => {
    server = await startServer();
    client = new Client(server.url);
  });
  after(() => server.stop());

  test("submit returns the job as stored; get finds it", async () => {
    const job = await client.submit("send-email", { to: "a@b.c" }, {
      name: "digest",
      namespace: "mail",
      priority: 3,
      retry: { max_attempts: 2 },
      timeout: 90_000,
      triggers: [Trigger.cron("0 9 * * *", { timezone: "Europe/Berlin" }), Trigger.interval(15_000)],
    });
    assert.deepEqual([job.name, job.namespace, job.handler, job.priority], ["digest", "mail", "send-email", 3]);
    assert.deepEqual(job.payload, { to: "a@b.c" });
    assert.equal(job.timeout, "1m 30s");
    assert.deepEqual(job.triggers.map((t) => t.kind), ["cron", "interval"]);
    assert.ok(Date.parse(job.triggers[0].next_fire_at) > Date.now());
    assert.equal((await client.getJob(job.id)).id, job.id);
  });

  test("errors carry code, message and status", async () => {
    await assert.rejects(client.getJob("no-such-job"), (e) => e instanceof SundialError && e.status === 404 && e.code === "not_found");
    await assert.rejects(
      client.submit("x", undefined, { triggers: [Trigger.cron("61 * * * *")] }),
      (e) => e.status === 422 && e.message.includes("triggers[0].expr"),
    );
  });

  test("batch items stand alone", async () => {
    const items = await client.submitBatch([jobSpec("a", { n: 1 }, { paused: true }), { handler: "b", triggers: [{ kind: "cron", expr: "nope" }] }]);
    assert.deepEqual(items.map((i) => i.status), [201, 422]);
    assert.deepEqual(items[0].job.payload, { n: 1 });
    assert.ok(items[1].error instanceof SundialError);
    assert.match(items[1].error.message, /expr/);
  });

  test("pause, resume, list", async () => {
    const job = await client.submit("nobody-serves-this", undefined, { paused: true });
    assert.equal(job.paused, true);
    assert.equal((await client.resume(job.id)).paused, false);
    assert.equal((await client.pause(job.id)).paused, true);
    const page = await client.listJobs({ handler: "nobody-serves-this" });
    assert.ok(page.items.some((j) => j.id === job.id));
  });

  test("cancel a pending run; waitForRun sees it finish", async () => {
    const job = await client.submit("nobody-serves-this-either");
    const [run] = (await client.listRuns({ job_id: job.id })).items;
    assert.equal(run.state, "pending");
    await assert.rejects(client.waitForRun(run.id, { timeout: 200, poll: 50 }), /still pending/);
    assert.equal((await client.cancel(run.id)).state, "cancelled");
    assert.equal((await client.waitForRun(run.id, { timeout: 5000 })).state, "cancelled");
    const all = [];
    for await (const r of client.iterRuns({ job_id: job.id, limit: 1 })) all.push(r.id);
    assert.deepEqual(all, [run.id]);
  });

  test("retry puts a cancelled run back", async (t) => {
    const job = await client.submit("nobody-serves-this-retry");
    const [run] = (await client.listRuns({ job_id: job.id })).items;
    await client.cancel(run.id);
    try {
      assert.equal((await client.retry(run.id)).state, "pending");
    } catch (e) {
      if (e.status === 404 && e.message.includes("route")) return t.skip("server predates POST /v1/runs/{id}/retry");
      throw e;
    }
  });

  test("an unreachable server is Unavailable", async () => {
    const port = await new Promise((res) => {
      const s = createServer().listen(0, "127.0.0.1", () => {
        const p = s.address().port;
        s.close(() => res(p));
      });
    });
    await assert.rejects(new Client(`http://127.0.0.1:${port}`).getRun("x"), (e) => e instanceof Unavailable && e.status === null);
  });
});

test("the token is sent as Authorization: Bearer", async () => {
  const server = await startServer("--token", "s3cret");
  try {
    await assert.rejects(new Client(server.url).listRuns(), (e) => e.status === 401);
    assert.deepEqual((await new Client(server.url, { token: "s3cret" }).listRuns()).items, []);
  } finally {
    await server.stop();
  }
});

test("durations", () => {
  assert.equal(parseDuration("1h 30m"), 5_400_000);
  assert.equal(parseDuration("250ms"), 250);
  assert.equal(formatDuration(1500), "1500ms");
  assert.equal(formatDuration(120_000), "120s");
  assert.throws(() => parseDuration("soon"), TypeError);
});
