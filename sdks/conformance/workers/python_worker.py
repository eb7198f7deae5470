"""The Python SDK's side of the worker conformance suite: serves conf-echo, conf-sleep and
conf-marker (contract in ../README.md). conf-sleep is async (exercising the asyncio path);
conf-marker is a class with run(ctx); conf-echo a plain function."""

import argparse
import asyncio
import logging
import time

from sundial import RunContext, Worker

p = argparse.ArgumentParser()
p.add_argument("--server", required=True)
p.add_argument("--name", default="conf-python")
p.add_argument("--capacity", type=int, default=4)
p.add_argument("--drain-timeout", type=float, default=30.0)
p.add_argument("--token")
args = p.parse_args()
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
worker = Worker(args.server, token=args.token, name=args.name, capacity=args.capacity, drain_timeout=args.drain_timeout)


def write(path, text):
    if path:
        with open(path, "w") as f:
            f.write(text)


@worker.handler("conf-echo")
def echo(ctx: RunContext):
    return ctx.payload


@worker.handler("conf-sleep")
async def sleep(ctx: RunContext):
    start = time.monotonic()
    end = start + ctx.payload["ms"] / 1000
    try:
        while time.monotonic() < end:
            write(ctx.payload.get("beat"), str(time.time_ns()))
            await asyncio.sleep(min(0.05, max(0.0, end - time.monotonic())))
    except asyncio.CancelledError:
        write(ctx.payload.get("stopped"), f"{time.time_ns()} {ctx.stop_reason}")
        raise
    return {"slept_ms": ctx.payload["ms"], "stopped": False}


@worker.handler("conf-marker")
class Marker:
    def run(self, ctx: RunContext):
        with open(ctx.payload["path"], "a") as f:
            f.write(f"{ctx.run_id} {ctx.attempt}\n")
        return {"run_id": ctx.run_id}


worker.run()
