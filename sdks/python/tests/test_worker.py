"""The worker against a real server (lease 2 s): handler kinds, capacity, heartbeats, cancel,
timeout, stale completions, graceful stop, tokens. Partitions, crashes and SIGTERM are in the
cross-language conformance suite (sdks/conformance/)."""

from __future__ import annotations

import asyncio
import threading
import unittest
from typing import Any

from support import Server, wait_until

from sundial import Client, HandlerError, RunContext, Worker


class WorkerTest(unittest.TestCase):
    server: Server
    client: Client

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = Server(lease="2s")
        cls.client = Client(cls.server.url)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.client.close()
        cls.server.stop()

    def start(self, worker: Worker) -> threading.Thread:
        t = threading.Thread(target=worker.run, kwargs={"install_signal_handlers": False}, daemon=True)
        t.start()
        def stop() -> None:
            worker.stop()
            t.join(30)

        self.addCleanup(stop)
        wait_until("the worker to register", lambda: worker.worker_id)
        return t

    def run_of(self, handler: str, payload: Any = None, **options: Any) -> str:
        job = self.client.submit(handler, payload, **options)
        return self.client.list_runs(job_id=job.id).items[0].id

    def test_function_class_async_and_failing_handlers(self) -> None:
        w = Worker(self.server.url, name="kinds", capacity=4, claim_wait=1)

        @w.handler("k-sync")
        def sync(ctx: RunContext) -> Any:
            return {"echo": ctx.payload, "attempt": ctx.attempt}

        @w.handler("k-class")
        class Doubler:
            def run(self, ctx: RunContext) -> Any:
                return ctx.payload["n"] * 2

        @w.handler("k-async")
        async def later(ctx: RunContext) -> Any:
            await asyncio.sleep(0.01)
            return "async ok"

        @w.handler("k-fail")
        def fail(ctx: RunContext) -> Any:
            raise HandlerError("bad input", output={"partial": 1})

        @w.handler("k-crash")
        def crash(ctx: RunContext) -> Any:
            raise KeyError("missing")

        self.start(w)
        once = {"max_attempts": 1}
        runs = {
            "sync": self.run_of("k-sync", {"a": 1}),
            "class": self.run_of("k-class", {"n": 21}),
            "async": self.run_of("k-async"),
            "fail": self.run_of("k-fail", retry=once),
            "crash": self.run_of("k-crash", retry=once),
        }
        got = {k: self.client.wait_for_run(v, timeout=20) for k, v in runs.items()}
        self.assertEqual((got["sync"].state, got["sync"].output), ("succeeded", {"echo": {"a": 1}, "attempt": 1}))
        self.assertEqual((got["class"].state, got["class"].output), ("succeeded", 42))
        self.assertEqual((got["async"].state, got["async"].output), ("succeeded", "async ok"))
        self.assertEqual((got["fail"].state, got["fail"].error, got["fail"].output), ("failed", "bad input", {"partial": 1}))
        self.assertEqual((got["crash"].state, got["crash"].error), ("failed", "KeyError: 'missing'"))

    def test_capacity_bounds_concurrent_runs(self) -> None:
        w = Worker(self.server.url, name="cap", capacity=2, claim_wait=1)
        lock, running, peak = threading.Lock(), [0], [0]
        release = threading.Event()

        @w.handler("cap-hold")
        def hold(ctx: RunContext) -> None:
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            release.wait(10)
            with lock:
                running[0] -= 1

        runs = [self.run_of("cap-hold") for _ in range(5)]
        self.start(w)
        wait_until("two runs to be running", lambda: running[0] == 2)
        pending = [r for r in runs if self.client.get_run(r).state == "pending"]
        self.assertEqual(len(pending), 3, "a worker of capacity 2 claimed more than 2 runs")
        release.set()
        for r in runs:
            self.assertEqual(self.client.wait_for_run(r, timeout=20).state, "succeeded")
        self.assertEqual(peak[0], 2)

    def test_heartbeats_keep_a_run_longer_than_its_lease(self) -> None:
        w = Worker(self.server.url, name="long", capacity=1, claim_wait=1)

        @w.handler("long-run")
        def long_run(ctx: RunContext) -> str:
            stopped = ctx.sleep(5.0)  # 2.5 leases
            return "stopped" if stopped else "done"

        self.start(w)
        run = self.client.wait_for_run(self.run_of("long-run", retry={"max_attempts": 1}), timeout=30)
        self.assertEqual((run.state, run.attempt, run.output), ("succeeded", 1, "done"))

    def test_cancel_is_delivered_to_the_handler(self) -> None:
        w = Worker(self.server.url, name="cancel", capacity=1, claim_wait=1)
        seen: list[str | None] = []
        started = threading.Event()

        @w.handler("cancel-me")
        def wait_for_cancel(ctx: RunContext) -> str:
            started.set()
            ctx.cancelled.wait(20)
            seen.append(ctx.stop_reason)
            return "stopped early"

        self.start(w)
        run_id = self.run_of("cancel-me")
        self.assertTrue(started.wait(10))
        self.client.cancel(run_id)
        run = self.client.wait_for_run(run_id, timeout=10)
        self.assertEqual((run.state, run.output), ("cancelled", "stopped early"))
        self.assertEqual(seen, ["cancelled"])

    def test_timeout_stops_sync_and_async_handlers(self) -> None:
        w = Worker(self.server.url, name="timeout", capacity=2, claim_wait=1)
        reasons: list[str | None] = []

        @w.handler("slow-sync")
        def slow_sync(ctx: RunContext) -> None:
            ctx.sleep(30)
            reasons.append(ctx.stop_reason)

        @w.handler("slow-async")
        async def slow_async(ctx: RunContext) -> None:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                reasons.append(ctx.stop_reason)
                raise

        self.start(w)
        once = {"max_attempts": 1}
        runs = [self.run_of("slow-sync", timeout="500ms", retry=once), self.run_of("slow-async", timeout="500ms", retry=once)]
        for r in runs:
            run = self.client.wait_for_run(r, timeout=15)
            self.assertEqual((run.state, run.error), ("timed_out", "timed out after 500ms"))
        self.assertEqual(reasons, ["timed_out", "timed_out"])

    def test_a_stale_completion_is_logged_not_retried(self) -> None:
        w = Worker(self.server.url, name="stale", capacity=1, claim_wait=1)

        @w.handler("stale")
        def complete_first(ctx: RunContext) -> str:
            # Someone else settles this attempt first: the worker's own complete is stale.
            self.client.request("POST", f"/v1/runs/{ctx.run_id}/complete", {
                "worker_id": w.worker_id, "attempt": ctx.attempt, "state": "succeeded", "output": "first",
            })
            return "second"

        with self.assertLogs("sundial.worker", "WARNING") as logs:
            self.start(w)
            run_id = self.run_of("stale")
            run = self.client.wait_for_run(run_id, timeout=10)
            wait_until("the stale warning", lambda: any("rejected as stale" in m for m in logs.output))
            w.stop()
        self.assertEqual(run.output, "first")
        self.assertEqual(sum("rejected as stale" in m for m in logs.output), 1, logs.output)
        self.assertEqual(self.client.get_run(run_id).output, "first")

    def test_stop_lets_a_running_handler_finish_then_deregisters(self) -> None:
        w = Worker(self.server.url, name="drain", capacity=1, claim_wait=5)
        started, go = threading.Event(), threading.Event()

        @w.handler("drain-me")
        def slow(ctx: RunContext) -> str:
            started.set()
            go.wait(10)
            return "finished"

        t = self.start(w)
        run_id = self.run_of("drain-me")
        self.assertTrue(started.wait(10))
        w.stop()
        self.assertTrue(t.is_alive(), "stop() returned before the running handler finished")
        later = self.run_of("drain-me")  # submitted after stop(): not claimed
        go.set()
        t.join(20)
        self.assertFalse(t.is_alive())
        self.assertEqual(self.client.get_run(run_id).state, "succeeded")
        self.assertEqual(self.client.get_run(later).state, "pending")
        me = [x for x in self.client.list_workers() if x.id == w.worker_id]
        self.assertNotEqual(me[0].state if me else "gone", "active")
        self.client.cancel(later)


class ServerRestartTest(unittest.TestCase):
    def test_worker_reconnects_after_the_server_restarts(self) -> None:
        server = Server(lease="2s")
        w = Worker(server.url, name="restart", capacity=1, claim_wait=1)
        w.add_handler("after-restart", lambda ctx: "served")
        t = threading.Thread(target=w.run, kwargs={"install_signal_handlers": False}, daemon=True)
        try:
            t.start()
            wait_until("the worker to register", lambda: w.worker_id)
            server.kill()
            with self.assertLogs("sundial.worker", "WARNING") as logs:
                wait_until("the worker to notice", lambda: any("unavailable" in m for m in logs.output), 10)
            server.restart()
            with Client(server.url) as client:
                job = client.submit("after-restart")
                run = client.wait_for_run(client.list_runs(job_id=job.id).items[0].id, timeout=30)
            self.assertEqual((run.state, run.output), ("succeeded", "served"))
        finally:
            w.stop()
            t.join(20)
            server.stop()


class WorkerTokenTest(unittest.TestCase):
    def test_worker_sends_its_token(self) -> None:
        server = Server("--token", "w-token")
        try:
            w = Worker(server.url, token="w-token", name="tok", capacity=1, claim_wait=1)
            w.add_handler("tok", lambda ctx: "ok")
            t = threading.Thread(target=w.run, kwargs={"install_signal_handlers": False}, daemon=True)
            t.start()
            client = Client(server.url, token="w-token")
            job = client.submit("tok")
            run = client.wait_for_run(client.list_runs(job_id=job.id).items[0].id, timeout=20)
            self.assertEqual(run.output, "ok")
            w.stop()
            t.join(20)
            client.close()
        finally:
            server.stop()


if __name__ == "__main__":
    unittest.main()
