"""Remote-worker throughput of each worker implementation with a no-op handler, side by side.

For each implementation: a fresh `sundial serve --workers 0` (SQLite), N `conf-echo` jobs
stored via batch before any worker exists, then ONE worker process of `--capacity` slots;
timed from spawning the worker to the last run's `finished_at` (read back from the API once
every run succeeded). Checks that exactly N runs succeeded, each at attempt 1.

    python3 sdks/conformance/throughput.py [--n 5000] [--capacity 32] [--workers rust,python,typescript]

Uses the same worker launchers and environment variables as test_conformance.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from harness import REPO, Server, WorkerProc, make_workdir, remove_workdir, ts, wait_until
from test_conformance import IMPLEMENTATIONS


def measure(impl: str, n: int, capacity: int, node_dir: Path | None) -> dict:
    cmd = IMPLEMENTATIONS[impl](node_dir)
    if cmd is None:
        raise SystemExit(f"{impl} worker not available")
    env = {} if node_dir else {"SUNDIAL_TS_SDK": (REPO / "sdks" / "typescript" / "src" / "index.js").as_uri()}
    if not os.environ.get("SUNDIAL_CONF_PYTHON"):
        env["PYTHONPATH"] = str(REPO / "sdks" / "python" / "src")
    workdir = make_workdir(f"sundial-tp-{impl}-")
    server = Server(workdir, lease="30s")
    worker = None
    try:
        api = server.api
        for start in range(0, n, 1000):
            jobs = [{"handler": "conf-echo", "payload": {"i": i}} for i in range(start, min(n, start + 1000))]
            answer = api.ok("POST", "/v1/jobs/batch", {"jobs": jobs})
            assert all(item["status"] == 201 for item in answer["items"])
        t0 = time.time()
        worker = WorkerProc(cmd + ["--server", server.base, "--name", f"tp-{impl}", "--capacity", str(capacity)],
                            workdir, f"tp-{impl}", env)

        def settled() -> bool:
            pending = api.ok("GET", "/v1/runs?state=pending&limit=1")["items"]
            running = api.ok("GET", "/v1/runs?state=running&limit=1")["items"]
            return not pending and not running

        wait_until("every run to finish", settled, timeout=600, every=0.2)
        runs, cursor = [], None
        while True:
            page = api.ok("GET", "/v1/runs?limit=1000" + (f"&cursor={cursor}" if cursor else ""))
            runs += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                break
        assert len(runs) == n, f"{len(runs)} runs, expected {n}"
        bad = [r for r in runs if r["state"] != "succeeded" or r["attempt"] != 1]
        assert not bad, f"{len(bad)} runs not succeeded at attempt 1, e.g. {bad[0]}"
        first_start = min(ts(r["started_at"]) for r in runs)
        last_end = max(ts(r["finished_at"]) for r in runs)
        return {
            "impl": impl,
            "n": n,
            "capacity": capacity,
            "seconds": round(last_end - t0, 3),
            "jobs_per_s": round(n / (last_end - t0)),
            "jobs_per_s_excl_startup": round(n / (last_end - first_start)),
            "startup_s": round(first_start - t0, 3),
        }
    finally:
        if worker is not None:
            worker.stop()
        server.stop()
        remove_workdir(workdir, keep=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--capacity", type=int, default=32)
    p.add_argument("--workers", default="rust,python,typescript")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    args = p.parse_args()
    node_dir = Path(os.environ["SUNDIAL_CONF_NODE_DIR"]) if os.environ.get("SUNDIAL_CONF_NODE_DIR") else None
    results = [measure(impl.strip(), args.n, args.capacity, node_dir) for impl in args.workers.split(",")]
    if args.json:
        for r in results:
            print(json.dumps(r))
        return
    print(f"{'worker':<12}{'n':>7}{'cap':>5}{'seconds':>10}{'jobs/s':>9}{'excl. startup':>15}{'startup s':>11}")
    for r in results:
        print(f"{r['impl']:<12}{r['n']:>7}{r['capacity']:>5}{r['seconds']:>10}{r['jobs_per_s']:>9}"
              f"{r['jobs_per_s_excl_startup']:>15}{r['startup_s']:>11}")
    if shutil.which("nproc"):
        print(f"(machine: {os.cpu_count()} cores, shared with other processes)")


if __name__ == "__main__":
    main()
