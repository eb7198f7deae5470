"""Worker conformance suite: the same guarantees checked against every worker implementation
(the Rust `sundial-worker` SDK, the Python SDK, the TypeScript SDK), each a real process
talking HTTP to a real `sundial serve --workers 0 --lease 2s`.

    python3 -m unittest sdks/conformance/test_conformance.py        # every implementation
    SUNDIAL_CONF_WORKERS=python python3 -m unittest ...             # one

Environment: SUNDIAL_BIN (server binary, default target/debug/sundial), SUNDIAL_CONF_RUST_WORKER
(default target/debug/examples/conformance_worker), SUNDIAL_CONF_PYTHON (a Python with the
`sundial` package, default this one), SUNDIAL_CONF_NODE_DIR (a directory whose node_modules
holds the `sundial` package; default: import the SDK from the repository),
SUNDIAL_CONF_REQUIRE=1 (fail rather than skip an implementation that is not available),
SUNDIAL_CONF_KEEP=1 (keep the temporary directories and logs).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
import unittest
from pathlib import Path

from harness import HERE, REPO, Proxy, Server, WorkerProc, make_workdir, read_ns, remove_workdir, ts, wait_until

LEASE_S = 2.0
HEARTBEAT_S = LEASE_S / 3  # the server's heartbeat interval: a third of the lease
# Scheduling slack on a shared 2-core machine for bounds that are otherwise exact.
SLACK_S = 0.75


def rust_cmd(node_dir: Path | None) -> list[str] | None:
    exe = os.environ.get("SUNDIAL_CONF_RUST_WORKER") or str(REPO / "target" / "debug" / "examples" / "conformance_worker")
    return [exe] if Path(exe).exists() else None


def python_cmd(node_dir: Path | None) -> list[str] | None:
    return [os.environ.get("SUNDIAL_CONF_PYTHON") or sys.executable, str(HERE / "workers" / "python_worker.py")]


def typescript_cmd(node_dir: Path | None) -> list[str] | None:
    node = shutil.which("node")
    if node is None:
        return None
    script = HERE / "workers" / "ts_worker.mjs"
    if node_dir is not None:
        # Copied next to node_modules, so `import "sundial"` resolves to the installed package.
        target = node_dir / "ts_worker.mjs"
        shutil.copy(script, target)
        script = target
    return [node, str(script)]


IMPLEMENTATIONS = {"rust": rust_cmd, "python": python_cmd, "typescript": typescript_cmd}


class Conformance:
    """The checks; mixed into one TestCase per implementation (see the bottom of the file)."""

    impl: str

    def setUp(self) -> None:
        node_dir = os.environ.get("SUNDIAL_CONF_NODE_DIR")
        cmd = IMPLEMENTATIONS[self.impl](Path(node_dir) if node_dir else None)
        if cmd is None:
            if os.environ.get("SUNDIAL_CONF_REQUIRE") == "1":
                self.fail(f"{self.impl} worker not available")
            self.skipTest(f"{self.impl} worker not available")
        self.cmd = cmd
        # Without installed packages, the workers use the SDKs in this repository.
        self.env = {} if node_dir else {"SUNDIAL_TS_SDK": (REPO / "sdks" / "typescript" / "src" / "index.js").as_uri()}
        if not os.environ.get("SUNDIAL_CONF_PYTHON"):
            self.env["PYTHONPATH"] = str(REPO / "sdks" / "python" / "src")
        self.dir = make_workdir(f"sundial-conf-{self.impl}-")
        self.server = Server(self.dir, lease=f"{int(LEASE_S)}s")
        self.api = self.server.api
        self.workers: list[WorkerProc] = []
        self.proxies: list[Proxy] = []

    def tearDown(self) -> None:
        failed = not getattr(self._outcome, "success", True)
        for w in self.workers:
            w.stop()
            if failed:
                print(f"--- {w.name} log ---\n{w.output()[-4000:]}", file=sys.stderr)
        for p in self.proxies:
            p.close()
        self.server.stop()
        remove_workdir(self.dir, keep=os.environ.get("SUNDIAL_CONF_KEEP") == "1")

    def start_worker(self, name: str, capacity: int = 4, drain_timeout: float = 30.0, server: str | None = None) -> WorkerProc:
        cmd = self.cmd + ["--server", server or self.server.base, "--name", name, "--capacity", str(capacity),
                          "--drain-timeout", str(drain_timeout)]
        w = WorkerProc(cmd, self.dir, name, self.env)
        self.workers.append(w)
        wait_until(f"worker {name} to register", lambda: self._alive(w) and self.api.worker_named(name), 20)
        return w

    def _alive(self, w: WorkerProc) -> bool:
        assert w.proc.poll() is None, f"worker {w.name} exited {w.proc.returncode}:\n{w.output()[-3000:]}"
        return True

    def last_heartbeat(self, name: str) -> float:
        return ts((self.api.worker_named(name) or {}).get("last_heartbeat"))

    def sleep_job(self, tag: str, ms: int, **job: object) -> dict:
        payload = {"ms": ms, "beat": str(self.dir / f"{tag}.beat"), "stopped": str(self.dir / f"{tag}.stopped")}
        return self.api.submit(handler="conf-sleep", payload=payload, **job)

    def wait_running(self, run: dict, tag: str) -> dict:
        running = self.api.wait_run(run["id"], lambda r: r["state"] != "pending", f"{tag} to start")
        wait_until(f"{tag}'s handler to start", lambda: (self.dir / f"{tag}.beat").exists())
        return running

    # The guarantees

    def test_every_run_completes_once(self) -> None:
        marks = self.dir / "marks"
        jobs = [{"handler": "conf-marker", "payload": {"path": str(marks)}} for _ in range(60)]
        jobs += [{"handler": "conf-echo", "payload": {"i": i, "text": "é✓"}} for i in range(20)]
        answer = self.api.ok("POST", "/v1/jobs/batch", {"jobs": jobs})
        assert all(item["status"] == 201 for item in answer["items"]), answer
        job_ids = {item["job"]["id"]: jobs[i] for i, item in enumerate(answer["items"])}
        self.start_worker("conf-a", capacity=4)
        self.start_worker("conf-b", capacity=4)

        def all_done() -> list | None:
            runs = self.api.ok("GET", "/v1/runs?limit=1000")["items"]
            return runs if len(runs) == len(jobs) and all(r["state"] == "succeeded" for r in runs) else None

        runs = wait_until("every run to succeed", all_done, 60)
        self.assertEqual({r["attempt"] for r in runs}, {1})
        lines = marks.read_text().splitlines()
        marker_runs = {r["id"] for r in runs if job_ids[r["job_id"]]["handler"] == "conf-marker"}
        self.assertEqual(sorted(lines), sorted(f"{rid} 1" for rid in marker_runs), "each marker run executed exactly once")
        for r in runs:
            spec = job_ids[r["job_id"]]
            if spec["handler"] == "conf-echo":
                self.assertEqual(r["output"], spec["payload"])

    def test_partitioned_handler_is_stopped_before_its_lease_ends_and_never_completed(self) -> None:
        proxy = Proxy(self.server.port)
        self.proxies.append(proxy)
        self.start_worker("conf-p", capacity=1, server=proxy.base)
        run = self.sleep_job("p", 60_000, retry={"max_attempts": 1})
        started = self.wait_running(run, "p")
        # Let a heartbeat renew the lease after the start, so the cut falls mid-lease.
        wait_until("a heartbeat after the run started",
                   lambda: self.last_heartbeat("conf-p") > ts(started["started_at"]))
        cut_ns = time.time_ns()
        proxy.cut()
        # The server expires the lease (its last renewal was before the cut) ...
        failed = self.api.wait_run(run["id"], lambda r: r["state"] != "running", "the lease to expire", 30)
        self.assertEqual((failed["state"], failed["reason"]), ("failed", "lease expired"))
        # ... and the handler had stopped before the lease could end: within a lease of the cut.
        self.assertTrue((self.dir / "p.stopped").exists(), "handler was not told to stop")
        stopped_ns = read_ns(self.dir / "p.stopped")
        last_beat_ns = read_ns(self.dir / "p.beat")
        self.assertLess(stopped_ns - cut_ns, LEASE_S * 1e9, "handler told to stop after the lease ended")
        self.assertLess(last_beat_ns - cut_ns, LEASE_S * 1e9, "handler still working after the lease ended")
        # Reconnect: the worker heartbeats again, and it never sends the dropped result.
        restored = time.time()
        proxy.restore()
        wait_until("the worker to heartbeat again", lambda: self.last_heartbeat("conf-p") > restored, 30)
        sent_complete = f"/v1/runs/{run['id']}/complete".encode() in bytes(proxy.sent)
        self.assertFalse(sent_complete, "the worker sent the result it had to drop")
        self.assertEqual(self.api.run(run["id"])["state"], "failed")

    def test_cancel_reaches_a_running_handler_within_one_heartbeat(self) -> None:
        self.start_worker("conf-c", capacity=1)
        run = self.sleep_job("c", 60_000)
        self.wait_running(run, "c")
        asked_ns = time.time_ns()
        self.api.ok("POST", f"/v1/runs/{run['id']}/cancel")
        done = self.api.wait_run(run["id"], lambda r: r["state"] != "running", "the run to end", 20)
        self.assertEqual(done["state"], "cancelled")
        took = (read_ns(self.dir / "c.stopped") - asked_ns) / 1e9
        self.assertLess(took, HEARTBEAT_S + SLACK_S, f"cancel reached the handler after {took:.3f}s")

    def test_timeout_stops_the_handler(self) -> None:
        self.start_worker("conf-t", capacity=1)
        run = self.sleep_job("t", 60_000, timeout="1s", retry={"max_attempts": 1})
        started_ns = int(ts(self.wait_running(run, "t")["started_at"]) * 1e9)
        done = self.api.wait_run(run["id"], lambda r: r["state"] not in ("pending", "running"), "the timeout", 20)
        self.assertEqual(done["state"], "timed_out")
        stopped_ns = read_ns(self.dir / "t.stopped")
        self.assertLess((stopped_ns - started_ns) / 1e9, 1.0 + SLACK_S, "handler stopped long after its timeout")
        self.assertLessEqual(read_ns(self.dir / "t.beat"), stopped_ns, "handler kept working after it was stopped")

    def test_a_crashed_workers_runs_are_retried_elsewhere(self) -> None:
        first = self.start_worker("conf-k1", capacity=2)
        retry = {"max_attempts": 3, "initial_delay": "100ms"}
        runs = [self.sleep_job(f"k{i}", 1500, retry=retry) for i in range(2)]
        for i, r in enumerate(runs):
            self.wait_running(r, f"k{i}")
        first.signal(signal.SIGKILL)
        first.wait(10)
        second = self.start_worker("conf-k2", capacity=2)
        second_id = self.api.worker_named("conf-k2")["id"]
        for r in runs:
            done = self.api.wait_run(r["id"], lambda x: x["state"] == "succeeded", "the retry on the second worker", 30)
            self.assertEqual((done["attempt"], done["worker_id"]), (2, second_id))
        self.assertIsNone(second.proc.poll())

    def test_sigterm_finishes_in_flight_runs(self) -> None:
        w = self.start_worker("conf-s", capacity=2, drain_timeout=30)
        runs = [self.sleep_job(f"s{i}", 1500) for i in range(2)]
        for i, r in enumerate(runs):
            self.wait_running(r, f"s{i}")
        w.signal(signal.SIGTERM)
        self.assertEqual(w.wait(20), 0, "worker did not exit 0 after draining")
        me = self.api.worker_named("conf-s")
        for r in runs:
            done = self.api.run(r["id"])
            self.assertEqual((done["state"], done["attempt"], done["worker_id"]), ("succeeded", 1, me["id"]))
        self.assertNotEqual(me["state"], "active", "worker did not deregister")

    def test_sigterm_hands_back_runs_that_outlast_the_drain(self) -> None:
        w = self.start_worker("conf-h", capacity=1, drain_timeout=0.5)
        run = self.sleep_job("h", 60_000, retry={"max_attempts": 2, "initial_delay": "100ms"})
        self.wait_running(run, "h")
        w.signal(signal.SIGTERM)
        self.assertEqual(w.wait(20), 0, "worker did not exit 0 after draining")
        self.assertTrue((self.dir / "h.stopped").exists(), "handler was not told to stop")
        back = self.api.run(run["id"])
        self.assertEqual((back["state"], back["attempt"]), ("pending", 1), "the run was not handed back for a retry")


for _impl in os.environ.get("SUNDIAL_CONF_WORKERS", "rust,python,typescript").split(","):
    _name = f"Test{_impl.strip().title()}Worker"
    globals()[_name] = type(_name, (Conformance, unittest.TestCase), {"impl": _impl.strip()})

if __name__ == "__main__":
    unittest.main()
