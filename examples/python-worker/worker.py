#!/usr/bin/env python3
"""A sundial worker in Python, on the SDK in sdks/python (standard library only).

    pip install ./sdks/python          # or run from a checkout: falls back to sdks/python/src
    python3 examples/python-worker/worker.py --server http://127.0.0.1:7070 [--handler py-echo] [--once N] [--token T]

It serves one handler that echoes the payload, signed `"by": "python"`, and logs each run.
The SDK heartbeats leases, stops runs it can no longer hold, reconnects with backoff when the
server restarts, and drains on SIGTERM/Ctrl-C (running runs finish, then it deregisters).
"""

import argparse
import logging
import sys
from pathlib import Path

try:
    from sundial import RunContext, Worker
except ImportError:  # not installed: use the SDK of this checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sdks" / "python" / "src"))
    from sundial import RunContext, Worker

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--server", default="http://127.0.0.1:7070")
p.add_argument("--handler", default="py-echo", help="handler name to serve")
p.add_argument("--capacity", type=int, default=4)
p.add_argument("--once", type=int, default=0, help="exit after N runs (0 = run until SIGTERM)")
p.add_argument("--token", help="API token (Authorization: Bearer)")
args = p.parse_args()

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
log = logging.getLogger("python-worker")
worker = Worker(args.server, token=args.token, capacity=1 if args.once else args.capacity)
done = 0


@worker.handler(args.handler)
def echo(ctx: RunContext) -> dict:
    global done
    log.info("run %s attempt %d: %s", ctx.run_id, ctx.attempt, ctx.payload)
    payload = ctx.payload if isinstance(ctx.payload, dict) else {"payload": ctx.payload}
    done += 1
    if args.once and done >= args.once:
        worker.stop()  # this run still completes: stop() drains before deregistering
    return {**payload, "by": "python"}


worker.run()
log.info("stopped after %d runs", done)
