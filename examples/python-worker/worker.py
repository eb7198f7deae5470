#!/usr/bin/env python3
"""A sundial worker in plain Python 3 (standard library only): the worker protocol of API.md.

  POST /v1/workers                      register: {"name", "handlers", "capacity"} -> {"id", "lease", "heartbeat_interval"}
  POST /v1/workers/{id}/claim           {"max", "wait"} -> {"runs": [...]}; long-polls up to `wait`
  POST /v1/workers/{id}/heartbeat       {"runs": [{"run_id", "attempt"}]} -> {"cancel": [...], "lost": [...]}
  POST /v1/runs/{id}/complete           {"worker_id", "attempt", "state", "output", "error"}; 409 = stale: drop it
  DELETE /v1/workers/{id}               leave

Usage: python3 worker.py --server http://127.0.0.1:7070 [--handler py-echo] [--once N] [--token T]
"""
import argparse, json, re, signal, socket, sys, threading, time, urllib.error, urllib.request

p = argparse.ArgumentParser()
p.add_argument("--server", default="http://127.0.0.1:7070")
p.add_argument("--handler", default="py-echo")
p.add_argument("--once", type=int, default=0, help="exit after N completed runs")
p.add_argument("--token")
args = p.parse_args()
held, lost, lock = {}, set(), threading.Lock()  # run_id -> attempt; runs the server took back


def call(method, path, body=None, timeout=30):
    """One JSON request; returns (status, parsed body or None). HTTP errors are returned, not raised."""
    req = urllib.request.Request(args.server.rstrip("/") + path, method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    if args.token:
        req.add_header("authorization", "Bearer " + args.token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            data = resp.read()
            return resp.status, json.loads(data) if data else None
    except urllib.error.HTTPError as e:
        return e.code, None


def seconds(d):  # humantime subset: "250ms", "10s", "5m", "1h 30m"
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)", d))


def heartbeat_loop(worker_id, every):
    # Renews the lease of every held run (an empty list is still a sign of life); runs the
    # server lists in `lost` are no longer ours and must not be completed.
    while True:
        time.sleep(every)
        with lock:
            runs = [{"run_id": r, "attempt": a} for r, a in held.items()]
        try:
            status, body = call("POST", f"/v1/workers/{worker_id}/heartbeat", {"runs": runs})
            if status == 200:
                with lock:
                    lost.update(body.get("lost", []))
        except OSError:
            pass  # server unreachable: the next beat tries again


def handle(payload):  # the trivial handler: echo the payload, signed
    return {**(payload if isinstance(payload, dict) else {"payload": payload}), "by": "python"}


status, me = call("POST", "/v1/workers", {"name": f"py-{socket.gethostname()}", "handlers": [args.handler], "capacity": 1})
assert status == 201, f"register failed: HTTP {status}"
threading.Thread(target=heartbeat_loop, args=(me["id"], seconds(me["heartbeat_interval"])), daemon=True).start()
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so `finally` deregisters
done = 0
try:
    while not args.once or done < args.once:
        try:
            status, body = call("POST", f"/v1/workers/{me['id']}/claim", {"max": 1, "wait": "5s"}, timeout=15)
        except OSError:
            time.sleep(1)
            continue
        for run in (body or {}).get("runs", []) if status == 200 else []:
            with lock:
                held[run["run_id"]] = run["attempt"]
            try:
                result = {"state": "succeeded", "output": handle(run["payload"])}
            except Exception as e:  # a handler error fails the attempt (the server may retry it)
                result = {"state": "failed", "error": str(e)}
            with lock:
                was_lost = run["run_id"] in lost
            try:  # complete with the fencing token (worker_id, attempt); 409 = stale: drop it
                if not was_lost:
                    status, _ = call("POST", f"/v1/runs/{run['run_id']}/complete",
                                     {"worker_id": me["id"], "attempt": run["attempt"], **result})
                    done += status == 200
            except OSError:
                pass  # unreachable: the lease expires and the server retries the run
            with lock:
                held.pop(run["run_id"], None)
except KeyboardInterrupt:
    pass
finally:
    call("DELETE", f"/v1/workers/{me['id']}")
