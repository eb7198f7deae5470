// The sundial dashboard: hash-routed views over the public /v1 API, refreshed every 2 s while
// the tab is visible. Preact + htm, no build step; each view owns its requests.
import { render } from "preact";
import { useState, useEffect, useRef, useCallback, useMemo } from "preact/hooks";
import { html } from "./html.js";
import { get, post, del, qs, missingRoute, jobPath, health, token, setToken, ApiError } from "./api.js";
import {
  rel, abs, timeTitle, dur, between, shortId, triggerText, localInputToIso, isoToLocalInput,
  FAILED_STATES, RETRYABLE, CANCELLABLE, RUN_STATES,
} from "./util.js";
import { Chart } from "./charts.js";

const POLL_MS = 2000;

// ---------------------------------------------------------------------------------------------
// Small shared state: the live toggle, toasts, the confirmation dialog, the job name cache.

function store(initial) {
  const s = { value: initial, subs: new Set() };
  s.set = (v) => {
    s.value = typeof v === "function" ? v(s.value) : v;
    for (const f of s.subs) f();
  };
  return s;
}
function useStore(s) {
  const [, force] = useState(0);
  useEffect(() => {
    const f = () => force((n) => n + 1);
    s.subs.add(f);
    return () => s.subs.delete(f);
  }, [s]);
  return s.value;
}

const live = store(true);
const toasts = store([]);
const dialog = store(null);

let toastSeq = 0;
function toast(text, kind = "ok") {
  const id = ++toastSeq;
  toasts.set((t) => [...t, { id, text, kind }]);
  setTimeout(() => toasts.set((t) => t.filter((x) => x.id !== id)), kind === "error" ? 8000 : 4000);
}

/** Opens the in-page dialog; resolves with the submitted form values, or null when dismissed. */
function ask(opts) {
  return new Promise((resolve) => dialog.set({ ...opts, resolve }));
}

/** Runs an action, reports how it went, and refreshes the view. */
async function act(label, fn, after) {
  try {
    const out = await fn();
    toast(typeof label === "function" ? label(out) : label);
    after?.(out);
    return out;
  } catch (e) {
    // 404 from the router's fallback (not from a handler) means the route itself is missing.
    if (e.status === 405 || (e.status === 404 && e.message === "route not found")) toast("This action is not available on this server.", "error");
    else toast(`${e.message}`, "error");
    return undefined;
  }
}

// Job names for runs, which carry only `job_id`; filled from every job the page loads.
const jobCache = new Map();
const jobWaits = new Map();
function rememberJob(j) {
  jobCache.set(j.id, { name: j.name, namespace: j.namespace });
}
function useJobName(id) {
  const [, force] = useState(0);
  useEffect(() => {
    if (!id || jobCache.has(id)) return;
    if (!jobWaits.has(id)) {
      jobWaits.set(
        id,
        get(jobPath(id))
          .then(rememberJob)
          .catch((e) => {
            if (e instanceof ApiError && e.status === 404) jobCache.set(id, { name: null, gone: true });
          })
          .finally(() => jobWaits.delete(id)),
      );
    }
    jobWaits.get(id)?.then(() => force((n) => n + 1));
  }, [id]);
  return jobCache.get(id);
}

// Worker names for runs from servers that do not send `worker_name` yet.
const workerNames = new Map();
async function loadWorkerNames() {
  try {
    for (const w of (await get("/workers")).items) workerNames.set(w.id, w.name);
  } catch {
    // Names are a nicety; ids still show.
  }
}
const workerLabel = (name, id) => name || workerNames.get(id) || (id ? shortId(id) : "—");

// ---------------------------------------------------------------------------------------------
// Routing: #/view/id?filters — filters live in the URL so views can be linked and reloaded.

function parseHash() {
  const h = location.hash.replace(/^#\/?/, "");
  const [path, q = ""] = h.split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), query: Object.fromEntries(new URLSearchParams(q)) };
}
function useRoute() {
  const [route, setRoute] = useState(parseHash);
  useEffect(() => {
    const f = () => setRoute(parseHash());
    addEventListener("hashchange", f);
    return () => removeEventListener("hashchange", f);
  }, []);
  return route;
}
const href = (path, query = {}) => `#/${path}${qs(query)}`;
const go = (path, query) => {
  location.hash = href(path, query);
};

// ---------------------------------------------------------------------------------------------
// Polling: `fn` runs now, again when `deps` change, and every POLL_MS while live and visible.

function usePoll(fn, deps) {
  const [state, setState] = useState({ data: undefined, error: null });
  const busy = useRef(false);
  const gen = useRef(0);
  const liveOn = useStore(live);
  const run = useCallback(async () => {
    const my = gen.current;
    busy.current = true;
    try {
      const data = await fn();
      if (my === gen.current) setState({ data, error: null });
    } catch (error) {
      if (my === gen.current) setState((s) => ({ data: s.data, error }));
    } finally {
      busy.current = false;
    }
  }, deps);
  useEffect(() => {
    gen.current++;
    setState({ data: undefined, error: null });
    run();
  }, [run]);
  useEffect(() => {
    if (!liveOn) return undefined;
    const id = setInterval(() => {
      if (!document.hidden && !busy.current) run();
    }, POLL_MS);
    return () => clearInterval(id);
  }, [run, liveOn]);
  return { ...state, reload: run };
}

/** Re-renders every second so relative times stay true between polls. */
function useTick(ms = 1000) {
  const [, set] = useState(0);
  useEffect(() => {
    const id = setInterval(() => set((n) => n + 1), ms);
    return () => clearInterval(id);
  }, [ms]);
}

// ---------------------------------------------------------------------------------------------
// Building blocks.

function Time({ t, zone, prefix = "" }) {
  if (!t) return html`<span class="muted">—</span>`;
  return html`<time datetime=${t} title=${timeTitle(t, zone)}>${prefix}${rel(t)}</time>`;
}

function State({ state, big }) {
  const label = state === "timed_out" ? "timed out" : state;
  return html`<span class=${`badge state-${state}${big ? " big" : ""}`} data-state=${state}>${label}</span>`;
}

function Json({ value }) {
  if (value === null || value === undefined) return html`<span class="muted">none</span>`;
  return html`<pre class="json">${JSON.stringify(value, null, 2)}</pre>`;
}

function Panel({ title, children, actions, testid, cls = "" }) {
  return html`<section class=${`panel ${cls}`} data-testid=${testid}>
    ${title && html`<header><h2>${title}</h2>${actions && html`<div class="actions">${actions}</div>`}</header>`}
    ${children}
  </section>`;
}

/** What a panel shows instead of data: loading, route missing, or the API's error. */
function Status({ q, what }) {
  if (q.error && missingRoute(q.error)) {
    return html`<p class="unavailable" data-testid="unavailable">${what}: not available on this server (it answers ${q.error.status} for this route).</p>`;
  }
  if (q.error && q.data === undefined) return html`<p class="error-text">${q.error.message}</p>`;
  if (q.data === undefined) return html`<p class="muted">Loading…</p>`;
  return null;
}

function JobRef({ id }) {
  const j = useJobName(id);
  if (!id) return html`<span class="muted">—</span>`;
  if (j?.gone) return html`<span class="muted" title=${id}>deleted job ${shortId(id)}</span>`;
  return html`<a href=${href(`jobs/${id}`)} title=${id}>${j ? j.name : shortId(id)}</a>`;
}

function Table({ head, children, testid, empty = "Nothing here." }) {
  const rows = [children].flat(3).filter(Boolean);
  return html`<div class="table-wrap"><table data-testid=${testid}>
    <thead><tr>${head.map((h) => (typeof h === "string" ? html`<th>${h}</th>` : html`<th class=${h.cls}>${h.label}</th>`))}</tr></thead>
    <tbody>${rows.length ? rows : html`<tr><td colspan=${head.length} class="muted empty">${empty}</td></tr>`}</tbody>
  </table></div>`;
}

/** Cursor paging: the stack of cursors that led to this page. */
function usePager(resetKey) {
  const [stack, setStack] = useState([]);
  useEffect(() => setStack([]), [resetKey]);
  return {
    cursor: stack[stack.length - 1] || "",
    page: stack.length + 1,
    next: (c) => setStack((s) => [...s, c]),
    prev: () => setStack((s) => s.slice(0, -1)),
  };
}
function Pager({ pager, nextCursor }) {
  if (pager.page === 1 && !nextCursor) return null;
  return html`<nav class="pager">
    <button disabled=${pager.page === 1} onClick=${pager.prev}>← Newer</button>
    <span class="muted">page ${pager.page}</span>
    <button disabled=${!nextCursor} onClick=${() => pager.next(nextCursor)} data-testid="next-page">Older →</button>
  </nav>`;
}

// ---------------------------------------------------------------------------------------------
// Overview.

const STAT_SERIES = [
  { key: "succeeded", label: "succeeded", color: "--succeeded" },
  { key: "failed", label: "failed", color: "--failed" },
  { key: "timed_out", label: "timed out", color: "--timed_out" },
  { key: "cancelled", label: "cancelled", color: "--cancelled" },
  { key: "skipped", label: "skipped", color: "--skipped" },
  { key: "started", label: "started", color: "--running" },
];

function Overview() {
  useTick();
  const stats = usePoll(() => get("/stats/runs"), []);
  const handlers = usePoll(() => get("/stats/handlers"), []);
  const workers = usePoll(() => get("/workers"), []);
  const failures = usePoll(() => get(`/runs${qs({ state: "failed", limit: 5 })}`), []);

  const chart = useMemo(() => {
    const items = stats.data?.items || [];
    const xs = items.map((b) => new Date(b.t).getTime() / 1000);
    const counts = STAT_SERIES.map((s) => ({ ...s, values: items.map((b) => b[s.key] ?? 0) }));
    const lag = [
      { label: "p50", color: "--running", points: true, values: items.map((b) => (b.lag_p50_ms ?? null) === null ? null : b.lag_p50_ms / 1000) },
      { label: "p99", color: "--failed", points: true, values: items.map((b) => (b.lag_p99_ms ?? null) === null ? null : b.lag_p99_ms / 1000) },
    ];
    const totals = Object.fromEntries(STAT_SERIES.map((s) => [s.key, items.reduce((n, b) => n + (b[s.key] || 0), 0)]));
    return { xs, counts, lag, totals };
  }, [stats.data]);

  const stranded = (handlers.data?.items || []).filter((h) => h.due > 0 && h.workers === 0);
  const ws = workers.data?.items || [];
  const dead = ws.filter((w) => w.state === "dead").length;

  return html`<div class="view" data-testid="view-overview">
    ${stranded.map((h) => html`<div class="alert" data-testid="stranded-handler" role="alert">
      <strong>${h.due} run${h.due === 1 ? " is" : "s are"} due for handler <code>${h.handler}</code>, but no live worker serves it.</strong>
      ${" "}They stay pending until a worker that registers <code>${h.handler}</code> connects.
      ${" "}<a href=${href("runs", { handler: h.handler, state: "pending" })}>See them</a>
    </div>`)}
    <div class="tiles">
      ${stats.data && STAT_SERIES.slice(0, 5).map((s) => html`<a class=${`tile${FAILED_STATES.includes(s.key) && chart.totals[s.key] ? " bad" : ""}`}
          href=${href("runs", { state: s.key })} data-testid=${`tile-${s.key}`}>
        <span class="n">${chart.totals[s.key]}</span><span class="l">${s.label} · 1h</span></a>`)}
      <a class="tile" href=${href("workers")}><span class="n">${ws.length - dead}</span><span class="l">live workers</span></a>
      ${dead > 0 && html`<a class="tile bad" href=${href("workers")}><span class="n">${dead}</span><span class="l">dead workers</span></a>`}
    </div>
    <div class="grid2">
      <${Panel} title="Runs per minute, last hour" testid="chart-runs">
        ${html`<${Status} q=${stats} what="Run statistics" />`}
        ${stats.data && html`<${Chart} xs=${chart.xs} series=${chart.counts} testid="runs-chart" />`}
      <//>
      <${Panel} title="Due → start lag, last hour" testid="chart-lag">
        ${html`<${Status} q=${stats} what="Run statistics" />`}
        ${stats.data && html`<${Chart} xs=${chart.xs} series=${chart.lag} unit="s" testid="lag-chart" />`}
      <//>
    </div>
    <${Panel} title="Queues by handler" testid="handlers">
      <${Status} q=${handlers} what="Handler statistics" />
      ${handlers.data && html`<${Table} testid="handlers-table" empty="No pending or running runs and no live workers."
          head=${["Handler", "Due", "Pending", "Running", "Oldest due", "Live workers"]}>
        ${handlers.data.items.map((h) => html`<tr class=${h.due > 0 && h.workers === 0 ? "row-bad" : ""}>
          <td><a href=${href("runs", { handler: h.handler })}><code>${h.handler}</code></a></td>
          <td class="num">${h.due}</td><td class="num">${h.pending}</td><td class="num">${h.running}</td>
          <td><${Time} t=${h.oldest_due_at} /></td>
          <td class="num">${h.workers === 0 ? html`<span class="badge state-failed">none</span>` : h.workers}</td>
        </tr>`)}
      <//>`}
    <//>
    <${Panel} title="Latest failures" testid="latest-failures"
        actions=${html`<a href=${href("runs", { state: "failed" })}>all failed runs →</a>`}>
      <${Status} q=${failures} what="Runs" />
      ${failures.data && html`<${RunRows} runs=${failures.data.items} empty="No failed runs. " />`}
    <//>
  </div>`;
}

// ---------------------------------------------------------------------------------------------
// Jobs.

const JOB_PAGE = 25;

function Filters({ query, fields, view }) {
  const [draft, setDraft] = useState(query);
  useEffect(() => setDraft(query), [JSON.stringify(query)]);
  const submit = (e) => {
    e.preventDefault();
    go(view, draft);
  };
  const field = (f) => {
    const v = draft[f.name] || "";
    const set = (val) => setDraft({ ...draft, [f.name]: val });
    if (f.options) {
      return html`<label>${f.label}<select name=${f.name} value=${v} onChange=${(e) => { const d = { ...draft, [f.name]: e.target.value }; setDraft(d); go(view, d); }}>
        ${f.options.map(([val, text]) => html`<option value=${val}>${text}</option>`)}</select></label>`;
    }
    if (f.time) {
      return html`<label>${f.label}<input type="datetime-local" name=${f.name} value=${isoToLocalInput(v)}
        onChange=${(e) => set(localInputToIso(e.target.value))} /></label>`;
    }
    return html`<label>${f.label}<input name=${f.name} value=${v} placeholder=${f.placeholder || ""} onInput=${(e) => set(e.target.value)} /></label>`;
  };
  return html`<form class="filters" onSubmit=${submit} data-testid="filters">
    ${fields.map(field)}
    <div class="filter-buttons"><button type="submit" class="primary">Apply</button>
    ${Object.values(query).some(Boolean) && html`<a class="button" href=${href(view)}>Clear</a>`}</div>
  </form>`;
}

/** Each job's newest run: one page of recent runs, then one request per job not in it. */
async function lastRuns(jobs) {
  const out = {};
  const recent = await get(`/runs${qs({ limit: 200 })}`);
  for (const r of recent.items) if (!out[r.job_id]) out[r.job_id] = r;
  await Promise.all(
    jobs
      .filter((j) => !out[j.id])
      .map((j) => get(`/runs${qs({ job_id: j.id, limit: 1 })}`).then((p) => { if (p.items[0]) out[j.id] = p.items[0]; }, () => {})),
  );
  return out;
}

/** The zone of the trigger that fires next, so "next fire" reads in the schedule's own time. */
function nextZone(job) {
  const t = job.triggers.find((t) => t.next_fire_at && job.next_fire_time && new Date(t.next_fire_at).getTime() === new Date(job.next_fire_time).getTime());
  return t?.timezone || "UTC";
}

function Jobs({ query }) {
  useTick();
  const pager = usePager(JSON.stringify(query));
  const q = (query.q || "").trim().toLowerCase();
  const jobs = usePoll(async () => {
    // The API has no name search: a search scans the newest 1000 jobs of the other filters.
    const page = await get(`/jobs${qs({ namespace: query.namespace, handler: query.handler, paused: query.paused, limit: q ? 1000 : JOB_PAGE, cursor: q ? "" : pager.cursor })}`);
    let items = page.items;
    items.forEach(rememberJob);
    if (q) items = items.filter((j) => `${j.namespace}/${j.name}`.toLowerCase().includes(q));
    const runs = await lastRuns(items.slice(0, 100));
    return { items, runs, next: q ? null : page.next_cursor, scanned: q && page.next_cursor };
  }, [JSON.stringify(query), pager.cursor]);

  return html`<div class="view" data-testid="view-jobs">
    <${Filters} view="jobs" query=${query} fields=${[
      { name: "q", label: "Search", placeholder: "name" },
      { name: "namespace", label: "Namespace", placeholder: "all" },
      { name: "handler", label: "Handler", placeholder: "all" },
      { name: "paused", label: "Paused", options: [["", "any"], ["true", "paused"], ["false", "active"]] },
    ]} />
    <${Panel} title="Jobs">
      <${Status} q=${jobs} what="Jobs" />
      ${jobs.data?.scanned && html`<p class="muted">Search covers the 1000 newest jobs matching the other filters.</p>`}
      ${jobs.data && html`<${Table} testid="jobs-table" empty="No jobs match." head=${[
        "Job", { label: "Handler", cls: "wide" }, { label: "Schedule", cls: "wide" }, "Last run", "Next fire", "Status"]}>
        ${jobs.data.items.map((j) => {
          const last = jobs.data.runs[j.id];
          const failing = last && FAILED_STATES.includes(last.state);
          const zone = nextZone(j);
          return html`<tr class=${failing ? "row-bad" : ""} data-job=${j.name} data-failing=${failing ? "true" : "false"}>
            <td><a href=${href(`jobs/${j.id}`)} class="strong">${j.name}</a>
              ${j.namespace !== "default" && html` <span class="ns">${j.namespace}</span>`}</td>
            <td class="wide"><code>${j.handler}</code></td>
            <td class="wide">${j.triggers.length ? j.triggers.map((t) => html`<div>${triggerText(t)}${t.timezone && t.timezone !== "UTC" ? html` <span class="muted">${t.timezone}</span>` : ""}</div>`) : html`<span class="muted">one run</span>`}</td>
            <td>${last ? html`<a href=${href(`runs/${last.id}`)}><${State} state=${last.state} /></a> <${Time} t=${last.finished_at || last.started_at || last.scheduled_for} />` : html`<span class="muted">never ran</span>`}</td>
            <td>${j.next_fire_time ? html`<${Time} t=${j.next_fire_time} zone=${zone} /><div class="muted small">${abs(j.next_fire_time, zone)}</div>` : html`<span class="muted">—</span>`}</td>
            <td>${j.paused ? html`<span class="badge paused" title=${j.paused_reason || "paused by an operator"}>paused</span>` : html`<span class="badge active">active</span>`}
              ${j.running && html` <span class="badge state-running">running</span>`}
              ${failing && html` <span class="badge state-failed">failing</span>`}</td>
          </tr>`;
        })}
      <//>`}
      ${jobs.data && html`<${Pager} pager=${pager} nextCursor=${jobs.data.next} />`}
    <//>
  </div>`;
}

function JobPage({ id }) {
  useTick();
  const job = usePoll(() => get(jobPath(id)), [id]);
  const fires = usePoll(() => get(`${jobPath(id)}/fires${qs({ limit: 5 })}`), [id]);
  const runs = usePoll(() => get(`/runs${qs({ job_id: job.data?.id || id, limit: 10 })}`), [id, job.data?.id]);
  const j = job.data;
  if (j) rememberJob(j);
  if (job.error && job.error.status === 404 && !j) return html`<div class="view"><${Panel} title="Job not found"><p>No job <code>${id}</code>: it may have been deleted. Its runs stay in <a href=${href("runs", { job: id })}>Runs</a>.</p><//></div>`;
  if (!j) return html`<div class="view"><${Status} q=${job} what="Jobs" /></div>`;
  const path = jobPath(j.id);
  const reload = () => {
    job.reload();
    runs.reload();
    fires.reload();
  };
  const lastFailed = runs.data?.items[0] && FAILED_STATES.includes(runs.data.items[0].state);

  const backfill = async () => {
    const v = await ask({
      title: `Backfill ${j.name}`,
      text: "One run for every due time in the range that has no run yet (past times only).",
      fields: [
        { name: "from", label: "From", type: "datetime-local", value: isoToLocalInput(new Date(Date.now() - 3600e3).toISOString()) },
        { name: "until", label: "Until", type: "datetime-local", value: isoToLocalInput(new Date().toISOString()) },
        { name: "trigger_id", label: "Trigger", options: [["", "all triggers"], ...j.triggers.map((t, i) => [t.id, `#${i + 1} ${triggerText(t)}`])] },
      ],
      confirm: "Backfill",
    });
    if (!v) return;
    const body = { from: localInputToIso(v.from), until: localInputToIso(v.until) };
    if (v.trigger_id) body.trigger_id = v.trigger_id;
    await act((o) => `Backfill: ${o.created} run(s) created, ${o.existing} already existed.`, () => post(`${path}/backfill`, body), reload);
  };
  const remove = async () => {
    if (!(await ask({ title: `Delete ${j.name}?`, text: "Its pending runs are cancelled; its runs stay queryable.", confirm: "Delete", danger: true }))) return;
    await act("Job deleted.", () => del(path), () => go("jobs"));
  };

  return html`<div class="view" data-testid="view-job">
    <header class=${`page-head${lastFailed ? " failing" : ""}`}>
      <div>
        <p class="crumbs"><a href=${href("jobs")}>Jobs</a> / ${j.namespace}</p>
        <h1 data-testid="job-name">${j.name}</h1>
        <p class="badges">
          ${j.paused ? html`<span class="badge paused" data-testid="job-status">paused</span>` : html`<span class="badge active" data-testid="job-status">active</span>`}
          ${j.running && html`<span class="badge state-running">running</span>`}
          ${lastFailed && html`<span class="badge state-failed">last run failed</span>`}
          ${j.paused_reason && html`<span class="muted">${j.paused_reason}</span>`}
        </p>
      </div>
      <div class="actions">
        ${j.paused
          ? html`<button onClick=${() => act("Job resumed.", () => post(`${path}/resume`), reload)} data-testid="resume">Resume</button>`
          : html`<button onClick=${() => act("Job paused.", () => post(`${path}/pause`), reload)} data-testid="pause">Pause</button>`}
        <button class="primary" data-testid="run-now" onClick=${() => act((r) => `Run ${shortId(r.id)} queued.`, () => post(`${path}/run`), reload)}>Run now</button>
        <button onClick=${backfill} data-testid="backfill">Backfill…</button>
        <button class="danger" onClick=${remove} data-testid="delete">Delete</button>
      </div>
    </header>
    <div class="grid2">
      <${Panel} title="Definition">
        <dl class="kv">
          <dt>Handler</dt><dd><code>${j.handler}</code></dd>
          <dt>Id</dt><dd><code class="small">${j.id}</code></dd>
          <dt>Retry</dt><dd>${j.retry ? `${j.retry.max_attempts} attempts, ${j.retry.initial_delay} → ${j.retry.max_delay}` : "—"}</dd>
          <dt>Timeout</dt><dd>${j.timeout || "none"}</dd>
          <dt>Overlap</dt><dd>${j.overlap}</dd>
          <dt>Priority</dt><dd>${j.priority}</dd>
          ${j.limits?.length > 0 && html`<dt>Limits</dt><dd>${j.limits.map((k) => html`<code class="chip">${k}</code> `)}</dd>`}
          ${j.pause_after_failures && html`<dt>Pause after</dt><dd>${j.pause_after_failures} failed runs in a row</dd>`}
          <dt>Last start</dt><dd><${Time} t=${j.last_start_time} /></dd>
          <dt>Last end</dt><dd><${Time} t=${j.last_end_time} /></dd>
          <dt>Created</dt><dd><${Time} t=${j.created_at} /></dd>
          <dt>Updated</dt><dd><${Time} t=${j.updated_at} /></dd>
        </dl>
        <h3>Payload</h3><${Json} value=${j.payload} />
      <//>
      <${Panel} title="Triggers" testid="triggers">
        ${j.triggers.length === 0 ? html`<p class="muted">No triggers: the job runs once, when created, and on "Run now".</p>` : html`<${Table} head=${["#", "Schedule", "Next", "Fires", { label: "Misfire", cls: "wide" }]}>
          ${j.triggers.map((t, i) => html`<tr>
            <td>${i + 1}</td>
            <td>${triggerText(t)}${t.timezone && html`<div class="muted small">${t.timezone}</div>`}
              ${t.calendars?.length > 0 && html`<div class="small">except ${t.calendars.map((c) => html`<a href=${href("calendars")} class="chip">${c}</a> `)}</div>`}
              ${(t.start_at || t.end_at) && html`<div class="muted small">${t.start_at ? `from ${abs(t.start_at, t.timezone)}` : ""} ${t.end_at ? `until ${abs(t.end_at, t.timezone)}` : ""}</div>`}</td>
            <td><${Time} t=${t.next_fire_at} zone=${t.timezone} /></td>
            <td class="num">${t.fires}${t.max_fires ? ` / ${t.max_fires}` : ""}</td>
            <td class="wide">${t.misfire}</td>
          </tr>`)}
        <//>`}
        <h3>Next 5 fire times</h3>
        <${Status} q=${fires} what="Fire time preview" />
        ${fires.data && (fires.data.items.length === 0 ? html`<p class="muted">No future fire times.</p>` : html`<ol class="fires" data-testid="fires">
          ${fires.data.items.map((f) => {
            const n = j.triggers.findIndex((t) => t.id === f.trigger_id);
            return html`<li><${Time} t=${f.at} zone=${j.triggers[n]?.timezone} /> <code class="small">${f.local}</code>${j.triggers.length > 1 && html` <span class="muted small">trigger #${n + 1}</span>`}</li>`;
          })}</ol>`)}
      <//>
    </div>
    <${Panel} title="Recent runs" testid="job-runs" actions=${html`<a href=${href("runs", { job: j.id })}>all runs of this job →</a>`}>
      <${Status} q=${runs} what="Runs" />
      ${runs.data && html`<${RunRows} runs=${runs.data.items} hideJob=${true} empty="No runs yet." reload=${runs.reload} />`}
    <//>
  </div>`;
}

// ---------------------------------------------------------------------------------------------
// Runs.

/** Retry or cancel one run from a list, without opening it. */
async function rowAction(r, action, reload) {
  if (action === "cancel" && !(await ask({ title: `Cancel run ${shortId(r.id)}?`, confirm: "Cancel run", danger: true, testid: "cancel-confirm" }))) return;
  await act(action === "retry" ? `Run ${shortId(r.id)} queued for retry.` : `Run ${shortId(r.id)} cancelled.`, () => post(`/runs/${r.id}/${action}`), reload);
}

function RunRows({ runs, hideJob, empty, reload }) {
  return html`<${Table} testid="runs-table" empty=${empty} head=${[
    "Run", ...(hideJob ? [] : ["Job"]), "State", { label: "Attempt", cls: "wide" }, "Scheduled", { label: "Took", cls: "wide" }, { label: "Worker", cls: "wide" }, { label: "Why", cls: "wide" }, ...(reload ? [{ label: "", cls: "wide" }] : [])]}>
    ${runs.map((r) => html`<tr class=${FAILED_STATES.includes(r.state) ? "row-bad" : ""} data-run=${r.id} data-state=${r.state}>
      <td><a href=${href(`runs/${r.id}`)} class="mono">${shortId(r.id)}</a></td>
      ${!hideJob && html`<td><${JobRef} id=${r.job_id} /></td>`}
      <td><${State} state=${r.state} />${r.cancel_requested && r.state === "running" ? html` <span class="muted small">cancelling</span>` : ""}</td>
      <td class="wide num">${r.attempt}${r.max_attempts ? ` / ${r.max_attempts}` : ""}</td>
      <td><${Time} t=${r.scheduled_for} /></td>
      <td class="wide">${dur(between(r.started_at, r.finished_at))}</td>
      <td class="wide" title=${r.worker_id || ""}>${workerLabel(r.worker_name, r.worker_id)}</td>
      <td class="wide why" title=${r.error || r.reason || ""}>${r.error ? html`<span class="error-text">${r.error}</span>` : r.reason || ""}</td>
      ${reload && html`<td class="wide row-actions">
        ${RETRYABLE.includes(r.state) && html`<button class="small" onClick=${() => rowAction(r, "retry", reload)}>Retry</button>`}
        ${CANCELLABLE.includes(r.state) && !r.cancel_requested && html`<button class="small danger" onClick=${() => rowAction(r, "cancel", reload)}>Cancel</button>`}
      </td>`}
    </tr>`)}
  <//>`;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A job's id from what a person types: an id, `namespace/name`, or a name in `default`. */
async function resolveJob(text) {
  if (!text || UUID.test(text)) return text;
  const [ns, name] = text.includes("/") ? [text.slice(0, text.indexOf("/")), text.slice(text.indexOf("/") + 1)] : ["default", text];
  try {
    return (await get(jobPath(`${ns}/${name}`))).id;
  } catch (e) {
    if (!(e instanceof ApiError) || e.status !== 404) throw e;
  }
  // Servers without name lookup: find it among the namespace's jobs.
  const page = await get(`/jobs${qs({ namespace: ns, limit: 1000 })}`);
  const job = page.items.find((j) => j.name === name);
  if (!job) throw new Error(`job: no job named ${ns}/${name}`);
  return job.id;
}

/** The API filter a runs view stands for; `job` may be an id, `namespace/name` or a name. */
async function runFilter(query) {
  const jobId = await resolveJob((query.job || "").trim());
  return { job_id: jobId, state: query.state, namespace: query.namespace, handler: query.handler, since: query.since, until: query.until };
}

/** How many runs a filter matches: pages through the list (at most 20,000). */
async function countRuns(filter) {
  let n = 0;
  let cursor = "";
  for (let i = 0; i < 20; i++) {
    const page = await get(`/runs${qs({ ...filter, limit: 1000, cursor })}`);
    n += filter.handler ? page.items.filter((r) => r.handler === filter.handler).length : page.items.length;
    if (!page.next_cursor) return { n, more: false };
    cursor = page.next_cursor;
  }
  return { n, more: true };
}

function Runs({ query }) {
  useTick();
  const pager = usePager(JSON.stringify(query));
  const runs = usePoll(async () => {
    const filter = await runFilter(query);
    const page = await get(`/runs${qs({ ...filter, limit: 50, cursor: pager.cursor })}`);
    // Older servers ignore `handler` on this list; runs carry it, so the page is filtered here too.
    const items = filter.handler ? page.items.filter((r) => r.handler === filter.handler) : page.items;
    return { items, next: page.next_cursor };
  }, [JSON.stringify(query), pager.cursor]);

  const bulk = async (action) => {
    let filter;
    try {
      filter = Object.fromEntries(Object.entries(await runFilter(query)).filter(([, v]) => v));
    } catch (e) {
      toast(e.message, "error");
      return;
    }
    const everything = Object.keys(filter).length === 0;
    const { n, more } = await countRuns(filter).catch(() => ({ n: "?", more: false }));
    const verb = action === "retry" ? "Retry" : "Cancel";
    const applies = action === "retry" ? "failed, timed-out or cancelled" : "pending or running";
    const ok = await ask({
      title: `${verb} ${more ? "more than " : ""}${n} run${n === 1 ? "" : "s"}?`,
      text: everything
        ? `No filter is set: this acts on EVERY run on the server. Only ${applies} runs change.`
        : `Acts on every run matching ${Object.entries(filter).map(([k, v]) => `${k} = ${v}`).join(", ")} — all pages, not only this one. Only ${applies} runs change.`,
      confirm: `${verb} ${more ? `${n}+` : n} run${n === 1 ? "" : "s"}`,
      danger: action === "cancel",
      testid: "bulk-confirm",
    });
    if (!ok) return;
    await act(
      (o) => `${verb}: ${o.matched} matched, ${o.changed} changed.`,
      () => post("/runs/bulk", { action, filter: everything ? { all: true } : filter }).catch((e) => {
        if (missingRoute(e)) throw new Error("Bulk actions are not available on this server.");
        throw e;
      }),
      runs.reload,
    );
  };

  return html`<div class="view" data-testid="view-runs">
    <${Filters} view="runs" query=${query} fields=${[
      { name: "state", label: "State", options: [["", "any"], ...RUN_STATES.map((s) => [s, s.replace("_", " ")])] },
      { name: "job", label: "Job", placeholder: "name, ns/name or id" },
      { name: "handler", label: "Handler", placeholder: "all" },
      { name: "namespace", label: "Namespace", placeholder: "all" },
      { name: "since", label: "Due from", time: true },
      { name: "until", label: "Due before", time: true },
    ]} />
    <${Panel} title="Runs" actions=${html`
      <button onClick=${() => bulk("retry")} data-testid="bulk-retry" title="Retry every failed, timed-out or cancelled run the filter matches">Retry all matching…</button>
      <button class="danger" onClick=${() => bulk("cancel")} data-testid="bulk-cancel" title="Cancel every pending or running run the filter matches">Cancel all matching…</button>`}>
      <${Status} q=${runs} what="Runs" />
      ${runs.data && html`<${RunRows} runs=${runs.data.items} empty="No runs match." reload=${runs.reload} />`}
      ${runs.data && html`<${Pager} pager=${pager} nextCursor=${runs.data.next} />`}
    <//>
  </div>`;
}

function Output({ value }) {
  // `shell` output: show stdout/stderr as text, which is what people read.
  if (value && typeof value === "object" && ("stdout" in value || "stderr" in value)) {
    return html`<div>
      ${"exit_code" in value && html`<p>exit code <strong class=${value.exit_code ? "error-text" : ""}>${value.exit_code}</strong></p>`}
      ${value.stdout && html`<h4>stdout</h4><pre class="json">${value.stdout}</pre>`}
      ${value.stderr && html`<h4>stderr</h4><pre class="json error-text">${value.stderr}</pre>`}
    </div>`;
  }
  return html`<${Json} value=${value} />`;
}

function RunPage({ id }) {
  useTick();
  const run = usePoll(() => get(`/runs/${encodeURIComponent(id)}`), [id]);
  const attempts = usePoll(() => get(`/runs/${encodeURIComponent(id)}/attempts`), [id]);
  const jobId = run.data?.job_id;
  // Runs do not echo their payload; the job's is what its runs get.
  const job = usePoll(() => (jobId ? get(jobPath(jobId)) : Promise.resolve(null)), [jobId]);
  const r = run.data;
  if (run.error?.status === 404 && !r) return html`<div class="view"><${Panel} title="Run not found"><p>No run <code>${id}</code>.</p><//></div>`;
  if (!r) return html`<div class="view"><${Status} q=${run} what="Runs" /></div>`;
  const reload = () => {
    run.reload();
    attempts.reload();
  };
  const failed = FAILED_STATES.includes(r.state);
  const retry = async () => {
    const ok = await ask({ title: `Retry run ${shortId(r.id)}?`, text: "It goes back to pending, due now, with its job's attempts added.", confirm: "Retry", testid: "retry-confirm" });
    if (ok) await act("Run queued for retry.", () => post(`/runs/${r.id}/retry`).catch((e) => { if (missingRoute(e)) throw new Error("Retry is not available on this server."); throw e; }), reload);
  };
  const cancel = async () => {
    const ok = await ask({ title: `Cancel run ${shortId(r.id)}?`, text: r.state === "running" ? "Its worker is told at its next heartbeat." : "It will not run.", confirm: "Cancel run", danger: true, testid: "cancel-confirm" });
    if (ok) await act("Run cancelled.", () => post(`/runs/${r.id}/cancel`), reload);
  };
  return html`<div class="view" data-testid="view-run">
    <header class=${`page-head${failed ? " failing" : ""}`}>
      <div>
        <p class="crumbs"><a href=${href("runs")}>Runs</a> / <${JobRef} id=${r.job_id} /></p>
        <h1>Run <span class="mono">${shortId(r.id)}</span> <${State} state=${r.state} big=${true} /></h1>
        <p class="muted small mono">${r.id}</p>
        ${r.cancel_requested && r.state === "running" && html`<p class="badge state-cancelled">cancel requested</p>`}
      </div>
      <div class="actions">
        ${CANCELLABLE.includes(r.state) && !r.cancel_requested && html`<button class="danger" onClick=${cancel} data-testid="cancel">Cancel</button>`}
        ${RETRYABLE.includes(r.state) && html`<button class="primary" onClick=${retry} data-testid="retry">Retry</button>`}
      </div>
    </header>
    ${r.error && html`<div class="alert" data-testid="run-error"><strong>Error:</strong> <span class="pre">${r.error}</span></div>`}
    ${r.reason && html`<p class="note" data-testid="run-reason"><strong>Reason:</strong> ${r.reason}</p>`}
    <div class="grid2">
      <${Panel} title="Timings">
        <dl class="kv">
          <dt>Job</dt><dd><${JobRef} id=${r.job_id} /> <code class="small">${r.handler}</code></dd>
          <dt>Fire time</dt><dd><${Time} t=${r.fire_time} /></dd>
          <dt>Due</dt><dd><${Time} t=${r.scheduled_for} /></dd>
          <dt>Started</dt><dd><${Time} t=${r.started_at} /> ${r.started_at && html`<span class="muted small">(${dur(between(r.scheduled_for, r.started_at))} after due)</span>`}</dd>
          <dt>Finished</dt><dd><${Time} t=${r.finished_at} /></dd>
          <dt>Took</dt><dd>${dur(between(r.started_at, r.finished_at))}</dd>
          <dt>Attempt</dt><dd>${r.attempt}${r.max_attempts ? ` of ${r.max_attempts}` : ""}</dd>
          <dt>Worker</dt><dd title=${r.worker_id || ""}>${workerLabel(r.worker_name, r.worker_id)}</dd>
          ${r.lease_expires_at && r.state === "running" && html`<dt>Lease until</dt><dd><${Time} t=${r.lease_expires_at} /></dd>`}
          ${r.limits?.length > 0 && html`<dt>Limits</dt><dd>${r.limits.map((k) => html`<code class="chip">${k}</code> `)}</dd>`}
        </dl>
      <//>
      <${Panel} title="Payload">${"payload" in r ? html`<${Json} value=${r.payload} />` : job.data ? html`<p class="muted small">The job's payload:</p><${Json} value=${job.data.payload} />` : html`<p class="muted">${job.error ? "The job is gone." : "Loading…"}</p>`}<//>
    </div>
    <${Panel} title="Output" testid="run-output"><${Output} value=${r.output} /><//>
    <${Panel} title="Attempts" testid="attempts">
      <${Status} q=${attempts} what="Attempt history" />
      ${attempts.data && html`<${Table} head=${["#", "Outcome", "Worker", "Started", "Took", "Error"]} empty="Not claimed yet.">
        ${attempts.data.items.map((a) => html`<tr class=${["failed", "timed_out", "lost"].includes(a.state) ? "row-bad" : ""}>
          <td class="num">${a.attempt}</td><td><${State} state=${a.state} /></td>
          <td title=${a.worker_id || ""}>${workerLabel(a.worker_name, a.worker_id)}</td>
          <td><${Time} t=${a.started_at} /></td><td>${dur(between(a.started_at, a.finished_at))}</td>
          <td class="why">${a.error ? html`<span class="error-text pre">${a.error}</span>` : ""}</td>
        </tr>`)}
      <//>`}
    <//>
  </div>`;
}

// ---------------------------------------------------------------------------------------------
// Workers, limits, calendars.

function Workers() {
  useTick();
  const ws = usePoll(() => get("/workers"), []);
  return html`<div class="view" data-testid="view-workers"><${Panel} title="Workers">
    <${Status} q=${ws} what="Workers" />
    ${ws.data && html`<${Table} testid="workers-table" empty="No workers registered." head=${["Name", "State", "Running", "Handlers", { label: "Last heartbeat", cls: "wide" }, { label: "Id", cls: "wide" }]}>
      ${ws.data.items.map((w) => html`<tr class=${w.state === "dead" ? "row-bad dead" : ""} data-worker-state=${w.state}>
        <td class="strong">${w.name}</td>
        <td><span class=${`badge worker-${w.state}`}>${w.state}</span></td>
        <td class="num">${w.running} / ${w.capacity}</td>
        <td>${w.handlers.map((h) => html`<code class="chip">${h}</code> `)}</td>
        <td class="wide"><${Time} t=${w.last_heartbeat} /></td>
        <td class="wide mono small" title=${w.id}>${shortId(w.id)}</td>
      </tr>`)}
    <//>`}
  <//></div>`;
}

function Limits() {
  const ls = usePoll(() => get("/limits"), []);
  return html`<div class="view" data-testid="view-limits"><${Panel} title="Limits">
    <${Status} q=${ls} what="Limits" />
    ${ls.data && html`<${Table} testid="limits-table" empty="No limits defined (PUT /v1/limits/{key})." head=${["Key", "Running / max", "Rate", { label: "Updated", cls: "wide" }]}>
      ${ls.data.items.map((l) => {
        const full = l.max_running !== null && l.running !== null && l.running >= l.max_running;
        const pct = l.max_running ? Math.min(100, (100 * (l.running || 0)) / l.max_running) : 0;
        return html`<tr class=${full ? "row-warn" : ""}>
          <td><code>${l.key}</code>${l.key.endsWith("*") && html` <span class="muted small">each matching key</span>`}</td>
          <td>${l.max_running === null ? html`${l.running ?? "—"} <span class="muted">/ no bound</span>` : html`<div class="meter" title=${`${l.running ?? "?"} of ${l.max_running}`}><span style=${`width:${pct}%`}></span></div>${l.running ?? "—"} / ${l.max_running}${full ? html` <span class="badge state-pending">full</span>` : ""}`}</td>
          <td>${l.rate ? `${l.rate.count} per ${l.rate.per}` : html`<span class="muted">none</span>`}</td>
          <td class="wide"><${Time} t=${l.updated_at} /></td>
        </tr>`;
      })}
    <//>`}
  <//></div>`;
}

function exclusion(e) {
  if (e.date) return `${e.date}`;
  if (e.cron) return `cron ${e.cron}`;
  if (e.from || e.until) return `${e.from || "…"} → ${e.until || "…"}`;
  return JSON.stringify(e);
}

function Calendars() {
  const cs = usePoll(() => get("/calendars"), []);
  return html`<div class="view" data-testid="view-calendars"><${Panel} title="Calendars">
    <p class="muted small">A calendar excludes times from the triggers that name it: no run, no misfire.</p>
    <${Status} q=${cs} what="Calendars" />
    ${cs.data && html`<${Table} testid="calendars-table" empty="No calendars (PUT /v1/calendars/{name})." head=${["Name", "Zone", "Excludes", { label: "Updated", cls: "wide" }]}>
      ${cs.data.items.map((c) => html`<tr>
        <td class="strong">${c.name}</td><td>${c.timezone}</td>
        <td>${c.exclude.map((e) => html`<code class="chip">${exclusion(e)}</code> `)}</td>
        <td class="wide"><${Time} t=${c.updated_at} /></td>
      </tr>`)}
    <//>`}
  <//></div>`;
}

// ---------------------------------------------------------------------------------------------
// Shell: navigation, live status, token, dialogs, toasts.

const NAV = [
  ["overview", "Overview"],
  ["jobs", "Jobs"],
  ["runs", "Runs"],
  ["workers", "Workers"],
  ["limits", "Limits"],
  ["calendars", "Calendars"],
];

function LiveStatus() {
  useTick();
  const on = useStore(live);
  const [, force] = useState(0);
  useEffect(() => {
    const f = () => force((n) => n + 1);
    health.subs.add(f);
    return () => health.subs.delete(f);
  }, []);
  const down = health.lastError;
  return html`<button class=${`live${down ? " down" : on ? " on" : ""}`} onClick=${() => live.set(!on)}
      title=${down || (health.lastOk ? `last answer ${rel(new Date(health.lastOk).toISOString())}; click to ${on ? "pause" : "resume"} live updates` : "")}>
    <span class="dot"></span>${down ? "offline" : on ? "live" : "paused"}</button>`;
}

function TokenButton() {
  const change = async () => {
    const v = await ask({
      title: "API token",
      text: "Sent as Authorization: Bearer on every request; kept in this browser's local storage.",
      fields: [{ name: "token", label: "Token", type: "password", value: token() }],
      confirm: "Save",
      extra: token() ? { label: "Forget token", value: { token: "" } } : null,
    });
    if (v) {
      setToken(v.token.trim());
      location.reload();
    }
  };
  return html`<button class="ghost" onClick=${change} title="Set the API token">${token() ? "🔑" : "token"}</button>`;
}

/** Shown when the server answers 401: the only way forward is a token. */
function TokenGate() {
  const [value, setValue] = useState("");
  const [err, setErr] = useState("");
  const submit = async (e) => {
    e.preventDefault();
    setToken(value.trim());
    try {
      await get("/workers");
      location.reload();
    } catch (x) {
      setErr(x.status === 401 ? "The server did not accept this token." : x.message);
    }
  };
  return html`<div class="modal-back"><form class="modal" onSubmit=${submit} data-testid="token-form">
    <h2>This server needs a token</h2>
    <p>Paste an API token (a <code>--token</code> of the server, or one from its tokens file). It is kept in this browser's local storage and sent as <code>Authorization: Bearer</code>.</p>
    <label>Token<input type="password" name="token" autofocus value=${value} onInput=${(e) => setValue(e.target.value)} /></label>
    ${err && html`<p class="error-text" data-testid="token-error">${err}</p>`}
    <div class="actions"><button type="submit" class="primary">Use token</button></div>
  </form></div>`;
}

function Dialog() {
  const d = useStore(dialog);
  const form = useRef(null);
  useEffect(() => {
    form.current?.querySelector("input, button.primary, button.danger")?.focus();
  }, [d]);
  if (!d) return null;
  const close = (v) => {
    dialog.set(null);
    d.resolve(v);
  };
  const submit = (e) => {
    e.preventDefault();
    const v = Object.fromEntries(new FormData(form.current));
    close(d.fields ? v : true);
  };
  return html`<div class="modal-back" onClick=${(e) => e.target === e.currentTarget && close(null)}>
    <form class="modal" ref=${form} onSubmit=${submit} data-testid=${d.testid || "dialog"} onKeyDown=${(e) => e.key === "Escape" && close(null)}>
      <h2>${d.title}</h2>
      ${d.text && html`<p>${d.text}</p>`}
      ${(d.fields || []).map((f) => f.options
        ? html`<label>${f.label}<select name=${f.name}>${f.options.map(([v, t]) => html`<option value=${v}>${t}</option>`)}</select></label>`
        : html`<label>${f.label}<input name=${f.name} type=${f.type || "text"} value=${f.value || ""} /></label>`)}
      <div class="actions">
        ${d.extra && html`<button type="button" onClick=${() => close(d.extra.value)}>${d.extra.label}</button>`}
        <button type="button" onClick=${() => close(null)}>Cancel</button>
        <button type="submit" class=${d.danger ? "danger" : "primary"} data-testid="confirm">${d.confirm || "OK"}</button>
      </div>
    </form>
  </div>`;
}

function Toasts() {
  const ts = useStore(toasts);
  return html`<div class="toasts" aria-live="polite">${ts.map((t) => html`<div class=${`toast ${t.kind}`} data-testid="toast">${t.text}</div>`)}</div>`;
}

function App() {
  const { parts, query } = useRoute();
  const [, force] = useState(0);
  useEffect(() => {
    const f = () => force((n) => n + 1);
    health.subs.add(f);
    return () => health.subs.delete(f);
  }, []);
  const [view = "overview", id] = parts;
  let page;
  if (view === "jobs" && id) page = html`<${JobPage} id=${id} key=${id} />`;
  else if (view === "jobs") page = html`<${Jobs} query=${query} />`;
  else if (view === "runs" && id) page = html`<${RunPage} id=${id} key=${id} />`;
  else if (view === "runs") page = html`<${Runs} query=${query} />`;
  else if (view === "workers") page = html`<${Workers} />`;
  else if (view === "limits") page = html`<${Limits} />`;
  else if (view === "calendars") page = html`<${Calendars} />`;
  else page = html`<${Overview} />`;
  return html`
    <header class="top">
      <a class="brand" href="#/overview"><span class="logo">◴</span> sundial</a>
      <nav>${NAV.map(([v, label]) => html`<a href=${href(v)} class=${view === v ? "current" : ""} data-nav=${v}>${label}</a>`)}</nav>
      <div class="top-right"><${LiveStatus} /><${TokenButton} /></div>
    </header>
    <main>${page}</main>
    ${health.needToken && html`<${TokenGate} />`}
    <${Dialog} /><${Toasts} />`;
}

loadWorkerNames();
setInterval(loadWorkerNames, 30_000);
const root = document.getElementById("app");
root.textContent = ""; // the boot message
render(html`<${App} />`, root);
