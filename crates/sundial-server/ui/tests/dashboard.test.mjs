// The dashboard in a real headless Chromium (Debian's, driven by playwright-core) against a
// real `sundial serve`: jobs that succeed, fail and wait; then an operator clicks through pause,
// resume, run now, cancel, retry and bulk retry, and the page and the API must agree on the
// outcome. Screenshots of every main view (desktop and 400 px) go to target/screenshots/.
//
// Run: `npm ci && npm test` in crates/sundial-server/ui after `cargo build -p sundial`.
// SUNDIAL_BIN and CHROMIUM override where the binary and the browser are. Steps that need a
// round-2 route the server lacks are skipped (each panel must then say "not available");
// SUNDIAL_UI_ALL_ROUTES=1 makes them mandatory.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, existsSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../../../..");
const BIN = process.env.SUNDIAL_BIN || join(root, "target/debug/sundial");
const BROWSER = process.env.CHROMIUM || "/usr/bin/chromium";
const SHOTS = join(root, "target/screenshots");
const TIMEOUT = 20_000;

const servers = [];
let browser;

before(async () => {
  assert.ok(existsSync(BIN), `${BIN} missing: run cargo build -p sundial first`);
  mkdirSync(SHOTS, { recursive: true });
  browser = await chromium.launch({ executablePath: BROWSER, args: ["--no-sandbox", "--disable-gpu"] });
});
after(async () => {
  await browser?.close();
  for (const s of servers) s.stop();
});

function freePort() {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.on("error", fail);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => ok(port));
    });
  });
}

/** Polls `fn` until it returns something truthy; fails with `what` after TIMEOUT. */
async function until(what, fn, timeout = TIMEOUT) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A real `sundial serve` on a free port over a temporary SQLite file. */
async function startServer(extra = []) {
  const dir = mkdtempSync(join(tmpdir(), "sundial-ui-"));
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const proc = spawn(BIN, ["serve", "--listen", `127.0.0.1:${port}`, "--db", `sqlite://${dir}/ui.db`, "--workers", "2", "--enable-shell", ...extra], {
    env: { ...process.env, RUST_LOG: "warn" },
    stdio: ["ignore", "ignore", "inherit"],
  });
  const s = {
    base,
    stop() {
      proc.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    },
  };
  servers.push(s);
  await until("the server to be ready", async () => (await fetch(`${base}/readyz`)).ok);
  return s;
}

function client(base, token) {
  const call = async (method, path, body) => {
    const headers = { "Content-Type": "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    const res = await fetch(`${base}/v1${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    const data = text ? JSON.parse(text) : null;
    if (!res.ok) throw new Error(`${method} ${path} → ${res.status} ${text}`);
    return data;
  };
  return { get: (p) => call("GET", p), post: (p, b = {}) => call("POST", p, b) };
}

/**
 * Whether the server has a route (several are built in parallel with the dashboard): an absent
 * one answers 405, or 404 from the router's fallback ("route not found") rather than from the
 * handler ("run … not found").
 */
async function hasRoute(base, method, path) {
  const res = await fetch(`${base}/v1${path}`, { method, headers: { "Content-Type": "application/json" }, body: method === "GET" ? undefined : "{}" });
  const body = await res.json().catch(() => null);
  const has = !(res.status === 405 || (res.status === 404 && body?.error?.message === "route not found"));
  // Once every round-2 route has landed, SUNDIAL_UI_ALL_ROUTES=1 makes the optional steps mandatory.
  if (!has && process.env.SUNDIAL_UI_ALL_ROUTES === "1") assert.fail(`the server lacks ${method} /v1${path}`);
  return has;
}
const NO_ID = "00000000-0000-0000-0000-000000000000";

async function shot(page, name) {
  // Toasts from earlier clicks would cover the view.
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true, style: ".toasts { display: none; }" });
}

/** Opens a fresh page that fails the test on any script error. */
async function newPage(viewport = { width: 1280, height: 640 }) {
  const context = await browser.newContext({ viewport, colorScheme: "light" });
  const page = await context.newPage();
  page.errors = [];
  page.on("pageerror", (e) => page.errors.push(e.message));
  page.setDefaultTimeout(TIMEOUT);
  return page;
}

test("an operator pauses, runs, cancels and retries from the dashboard", async () => {
  const { base } = await startServer();
  const api = client(base);
  const ok = await api.post("/jobs", { name: "ok-echo", handler: "echo", payload: { hello: "world" } });
  const bad = await api.post("/jobs", { name: "fails-exit-3", handler: "shell", payload: { command: "echo about to fail; exit 3" }, retry: { max_attempts: 1 } });
  const nightly = await api.post("/jobs", { name: "nightly-report", handler: "echo", triggers: [{ kind: "cron", expr: "0 3 * * *", timezone: "Europe/Berlin" }] });
  const stuck = await api.post("/jobs", { name: "needs-gpu", handler: "gpu-render" });
  const held = await api.post("/jobs", { name: "held", handler: "echo", paused: true });
  const lastRun = async (job) => (await api.get(`/runs?job_id=${job.id}`)).items[0];
  await until("ok-echo to succeed", async () => (await lastRun(ok))?.state === "succeeded");
  await until("fails-exit-3 to fail", async () => (await lastRun(bad))?.state === "failed");
  const stuckRun = await lastRun(stuck);
  assert.equal(stuckRun.state, "pending");

  const page = await newPage();
  await page.goto(`${base}/`);

  // Overview: the handler nobody serves is called out.
  await page.getByTestId("view-overview").waitFor();
  if (await hasRoute(base, "GET", "/stats/handlers")) {
    await page.getByTestId("stranded-handler").filter({ hasText: "gpu-render" }).waitFor();
    // The queue table agrees with the API: gpu-render has a due run and no live worker.
    const queues = (await api.get("/stats/handlers")).items;
    const gpu = queues.find((q) => q.handler === "gpu-render");
    assert.deepEqual([gpu.due, gpu.workers], [1, 0]);
    const row = page.getByTestId("handlers-table").locator("tr.row-bad").filter({ hasText: "gpu-render" });
    await row.locator(".badge", { hasText: "none" }).waitFor();
    assert.equal((await row.locator("td.num").first().textContent()).trim(), "1");
    // Live workers serve echo: no warning for it.
    assert.ok(queues.find((q) => q.handler === "echo").workers > 0);
    assert.equal(await page.getByTestId("stranded-handler").filter({ hasText: "echo" }).count(), 0);
  } else {
    await page.getByTestId("handlers").getByTestId("unavailable").waitFor();
  }
  if (await hasRoute(base, "GET", "/stats/runs")) {
    // Runs per minute by state and the lag percentiles, from the last hour's buckets.
    const buckets = (await api.get("/stats/runs")).items;
    assert.ok(buckets.length >= 60 && buckets.length <= 61, `${buckets.length} buckets`);
    const sum = (k) => buckets.reduce((n, b) => n + b[k], 0);
    assert.ok(sum("succeeded") >= 1 && sum("failed") >= 1 && sum("started") >= 2);
    assert.ok(buckets.some((b) => b.lag_p50_ms !== null && b.lag_p99_ms >= b.lag_p50_ms));
    for (const key of ["succeeded", "failed"]) {
      await until(`the ${key} tile to count the API's runs`, async () =>
        Number(await page.getByTestId(`tile-${key}`).locator(".n").textContent()) >= 1);
    }
    for (const chart of ["runs-chart", "lag-chart"]) {
      await page.getByTestId(chart).locator("canvas").waitFor();
      const legend = await page.getByTestId(chart).locator(".u-legend").textContent();
      assert.match(legend, chart === "runs-chart" ? /succeeded[\s\S]*failed[\s\S]*started/ : /p50[\s\S]*p99/);
    }
  } else {
    await page.getByTestId("chart-runs").getByTestId("unavailable").waitFor();
  }
  await shot(page, "overview");

  // Jobs: the failing job looks failing, the healthy one does not.
  await page.click('[data-nav="jobs"]');
  const failing = page.locator('tr[data-job="fails-exit-3"]');
  await failing.locator(".state-failed").first().waitFor();
  assert.equal(await failing.getAttribute("data-failing"), "true");
  assert.match(await failing.getAttribute("class"), /row-bad/);
  await page.locator('tr[data-job="ok-echo"] .state-succeeded').waitFor();
  assert.equal(await page.locator('tr[data-job="ok-echo"]').getAttribute("data-failing"), "false");
  // The next fire time reads in the trigger's zone on hover.
  const next = page.locator('tr[data-job="nightly-report"] time').last();
  assert.match(await next.getAttribute("title"), /Europe\/Berlin/);
  await shot(page, "jobs");

  // Live: a job made elsewhere shows up without a reload, within a couple of polls.
  await api.post("/jobs", { name: "made-elsewhere", handler: "echo", paused: true });
  await page.locator('tr[data-job="made-elsewhere"]').waitFor({ timeout: 5000 });

  // Search by name narrows the list.
  await page.getByTestId("filters").locator('input[name="q"]').fill("nightly");
  await page.getByTestId("filters").getByRole("button", { name: "Apply" }).click();
  await until("the search to narrow the jobs", async () => (await page.locator("tr[data-job]").count()) === 1);

  // Job page: pause, resume, run now.
  await page.click('tr[data-job="nightly-report"] a');
  await page.getByTestId("view-job").waitFor();
  assert.equal(await page.getByTestId("job-name").textContent(), "nightly-report");
  if (await hasRoute(base, "GET", `/jobs/${nightly.id}/fires`)) {
    await until("five previewed fire times", async () => (await page.getByTestId("fires").locator("li").count()) === 5);
    assert.match(await page.getByTestId("fires").textContent(), /T03:00:00\+0[12]:00/);
  } else {
    await page.getByTestId("triggers").getByTestId("unavailable").waitFor();
  }
  await page.getByTestId("pause").click();
  await page.getByTestId("job-status").filter({ hasText: "paused" }).waitFor();
  assert.equal((await api.get(`/jobs/${nightly.id}`)).paused, true);
  await shot(page, "job");
  await page.getByTestId("resume").click();
  await page.getByTestId("job-status").filter({ hasText: "active" }).waitFor();
  assert.equal((await api.get(`/jobs/${nightly.id}`)).paused, false);

  await page.getByTestId("run-now").click();
  await page.getByTestId("job-runs").locator('tr[data-state="succeeded"]').waitFor();
  const manual = await api.get(`/runs?job_id=${nightly.id}`);
  assert.equal(manual.items.length, 1);
  assert.equal(manual.items[0].state, "succeeded");

  // Runs: find the pending run nobody will take, cancel it.
  await page.goto(`${base}/#/runs?state=pending&handler=gpu-render`);
  await page.locator(`tr[data-run="${stuckRun.id}"] a`).first().click();
  await page.getByTestId("view-run").waitFor();
  await page.getByTestId("cancel").click();
  await page.getByTestId("cancel-confirm").getByTestId("confirm").click();
  await page.locator('[data-state="cancelled"]').first().waitFor();
  assert.equal((await api.get(`/runs/${stuckRun.id}`)).state, "cancelled");

  // The failed run explains itself: output, error, attempts.
  const failedRun = await lastRun(bad);
  await page.goto(`${base}/#/runs?state=failed&job=fails-exit-3`); // a job by its name
  await page.locator(`tr[data-run="${failedRun.id}"] a`).first().click();
  await page.getByTestId("view-run").waitFor();
  assert.match(await page.getByTestId("run-output").textContent(), /exit code\s*3[\s\S]*about to fail/);
  if (failedRun.error) assert.ok((await page.getByTestId("run-error").textContent()).includes(failedRun.error));
  if (await hasRoute(base, "GET", `/runs/${failedRun.id}/attempts`)) {
    await page.getByTestId("attempts").locator(".state-failed").first().waitFor();
  } else {
    await page.getByTestId("attempts").getByTestId("unavailable").waitFor();
  }
  await shot(page, "run");

  // Retry from the run page (the route is built in parallel: exercised once it exists).
  if (await hasRoute(base, "POST", `/runs/${NO_ID}/retry`)) {
    await page.getByTestId("retry").click();
    await page.getByTestId("retry-confirm").getByTestId("confirm").click();
    const retried = await until("the retried run to fail again", async () => {
      const r = await api.get(`/runs/${failedRun.id}`);
      return r.state === "failed" && r.attempt === 2 && r;
    });
    assert.match(retried.reason, /retried by operator/);
    await page.getByTestId("view-run").locator("h1 .state-failed").waitFor();
  }

  // Bulk retry of every failed run (the route is built in parallel: exercised once it exists).
  if (await hasRoute(base, "POST", "/runs/bulk")) {
    const more = await api.post("/jobs", { name: "fails-too", handler: "shell", payload: { command: "exit 3" }, retry: { max_attempts: 1 } });
    await until("fails-too to fail", async () => (await lastRun(more))?.state === "failed");
    const failedNow = (await api.get("/runs?state=failed")).items;
    assert.equal(failedNow.length, 2);
    await page.goto(`${base}/#/runs?state=failed`);
    await page.locator(`tr[data-run="${more.id}"], tr[data-state="failed"]`).first().waitFor();
    await page.getByTestId("bulk-retry").click();
    const confirm = page.getByTestId("bulk-confirm");
    await confirm.waitFor();
    assert.match(await confirm.locator("h2").textContent(), /Retry 2 runs\?/);
    await confirm.getByTestId("confirm").click();
    await page.getByTestId("toast").filter({ hasText: "2 matched, 2 changed" }).waitFor();
    for (const r of failedNow) {
      const after = await api.get(`/runs/${r.id}`);
      assert.match(after.reason, /retried by operator/);
    }
  }

  // Backfill (built in parallel: exercised once it exists) and delete from the job page.
  await page.goto(`${base}/#/jobs/${nightly.id}`);
  await page.getByTestId("view-job").waitFor();
  if (await hasRoute(base, "POST", `/jobs/${NO_ID}/backfill`)) {
    await page.getByTestId("backfill").click();
    const form = page.getByTestId("dialog");
    const day = (offset) => new Date(Date.now() + offset * 86400e3);
    const local = (d) => new Date(d.getTime() - d.getTimezoneOffset() * 60e3).toISOString().slice(0, 16);
    await form.locator('input[name="from"]').fill(local(day(-3)));
    await form.locator('input[name="until"]').fill(local(day(-1)));
    await form.getByTestId("confirm").click();
    // 03:00 Berlin falls once a day: two or three due times in a two-day window, by the hour.
    const toast = await page.getByTestId("toast").filter({ hasText: "Backfill" }).textContent();
    const created = Number(/(\d+) run\(s\) created/.exec(toast)[1]);
    assert.ok(created >= 1 && created <= 3, toast);
    const backfilled = (await api.get(`/runs?job_id=${nightly.id}`)).items.filter((r) => r.reason === "backfill");
    assert.equal(backfilled.length, created);
  }
  await page.goto(`${base}/#/jobs/${held.id}`);
  await page.getByTestId("delete").click();
  await page.getByTestId("dialog").getByTestId("confirm").click();
  await page.getByTestId("view-jobs").waitFor();
  assert.equal((await fetch(`${base}/v1/jobs/${held.id}`)).status, 404);

  // The other views render (or say the server lacks them) without script errors.
  for (const view of ["workers", "limits", "calendars"]) {
    await page.click(`[data-nav="${view}"]`);
    await page.getByTestId(`view-${view}`).waitFor();
    await page.locator(`[data-testid="view-${view}"] table, [data-testid="view-${view}"] [data-testid="unavailable"]`).first().waitFor();
    await shot(page, view);
  }
  assert.match(await page.getByTestId("view-calendars").textContent(), /Calendars/);
  await page.click('[data-nav="workers"]');
  await page.locator('[data-testid="workers-table"] tr[data-worker-state="active"]').first().waitFor();
  assert.deepEqual(page.errors, []);

  // 400 px wide: every main view fits without sideways scrolling of the page.
  const narrow = await newPage({ width: 400, height: 700 });
  const views = {
    overview: "#/overview",
    jobs: "#/jobs",
    job: `#/jobs/${bad.id}`,
    runs: "#/runs",
    run: `#/runs/${failedRun.id}`,
    workers: "#/workers",
  };
  for (const [name, hash] of Object.entries(views)) {
    await narrow.goto(`${base}/${hash}`);
    await narrow.getByTestId(`view-${name}`).waitFor();
    await narrow.locator("main table, main .unavailable").first().waitFor();
    const width = await narrow.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 400, `${name} is ${width}px wide at 400px`);
    await shot(narrow, `${name}-400px`);
  }
  assert.deepEqual(narrow.errors, []);

  // Dark mode follows the system.
  const dark = await browser.newContext({ viewport: { width: 1280, height: 640 }, colorScheme: "dark" });
  const darkPage = await dark.newPage();
  await darkPage.goto(`${base}/#/jobs`);
  await darkPage.locator('tr[data-job="fails-exit-3"]').waitFor();
  const bg = await darkPage.evaluate(() => getComputedStyle(document.body).backgroundColor);
  assert.equal(bg, "rgb(13, 17, 23)");
  await shot(darkPage, "jobs-dark");
});

test("with tokens, the dashboard asks for one, keeps it and sends it", async () => {
  const { base } = await startServer(["--token", "s3cret"]);
  await client(base, "s3cret").post("/jobs", { name: "guarded", handler: "echo" });
  const page = await newPage();
  await page.goto(`${base}/#/jobs`);
  const form = page.getByTestId("token-form");
  await form.locator('input[name="token"]').fill("wrong");
  await form.getByRole("button", { name: "Use token" }).click();
  await page.getByTestId("token-error").filter({ hasText: "did not accept" }).waitFor();
  await form.locator('input[name="token"]').fill("s3cret");
  await form.getByRole("button", { name: "Use token" }).click();
  await page.locator('tr[data-job="guarded"]').waitFor();
  assert.equal(await page.evaluate(() => localStorage.getItem("sundial.token")), "s3cret");
  // A reload keeps it: no prompt, data shows.
  await page.reload();
  await page.locator('tr[data-job="guarded"]').waitFor();
  assert.equal(await page.getByTestId("token-form").count(), 0);
  assert.deepEqual(page.errors, []);
});
