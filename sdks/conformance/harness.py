"""Parts of the worker conformance suite: a real `sundial serve` on a free port, a TCP proxy
that can cut a worker off the server, worker processes, and small API helpers. Standard
library only, so the suite drives every worker implementation the same way."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sundial_bin() -> str:
    return os.environ.get("SUNDIAL_BIN") or str(REPO / "target" / "debug" / "sundial")


def wait_until(what: str, check: Callable[[], Any], timeout: float = 30.0, every: float = 0.05) -> Any:
    """Poll `check` until it returns something truthy; AssertionError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


class Api:
    """The few API calls the suite needs, over urllib (independent of the SDKs under test)."""

    def __init__(self, base: str) -> None:
        self.base = base

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, json.loads(raw) if raw else None

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = self.call(method, path, body)
        assert 200 <= status < 300, f"{method} {path} -> {status} {answer}"
        return answer

    def submit(self, **job: Any) -> dict[str, Any]:
        """Create a job with no triggers; its one run (due now)."""
        created = self.ok("POST", "/v1/jobs", job)
        return self.ok("GET", f"/v1/runs?job_id={created['id']}")["items"][0]

    def run(self, run_id: str) -> dict[str, Any]:
        return self.ok("GET", f"/v1/runs/{run_id}")

    def wait_run(self, run_id: str, pred: Callable[[dict[str, Any]], bool], what: str, timeout: float = 30.0) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def check() -> Any:
            last.update(self.run(run_id))
            return dict(last) if pred(last) else None

        try:
            return wait_until(what, check, timeout)
        except AssertionError as e:
            raise AssertionError(f"{e}; run: {last}") from None

    def worker_named(self, name: str) -> dict[str, Any] | None:
        answer = self.ok("GET", "/v1/workers")
        items = answer["items"] if isinstance(answer, dict) else answer
        matches = [w for w in items if w["name"] == name]
        return matches[-1] if matches else None


class Server:
    """`sundial serve --workers 0` on a fresh SQLite file."""

    def __init__(self, workdir: Path, lease: str = "2s") -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = open(workdir / "server.log", "wb")
        self.proc = subprocess.Popen(
            [sundial_bin(), "serve", "--listen", f"127.0.0.1:{self.port}", "--db", f"sqlite://{workdir}/conf.db",
             "--workers", "0", "--lease", lease],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        self.api = Api(self.base)

        def ready() -> bool:
            assert self.proc.poll() is None, f"server exited: see {workdir / 'server.log'}"
            try:
                return self.api.call("GET", "/readyz")[0] == 200
            except OSError:
                return False

        wait_until("the server to be ready", ready, 30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Proxy:
    """Forwards TCP to the server until cut; then drops every connection and refuses new ones
    (accepts and closes them) until restored. Records every byte the worker sent."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self._cut = threading.Event()
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self.sent = bytearray()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                inbound, _ = self.listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                inbound.close()
                continue
            try:
                outbound = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                inbound.close()
                continue
            with self._lock:
                self._open += [inbound, outbound]
            threading.Thread(target=self._pump, args=(inbound, outbound, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(outbound, inbound, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data or self._cut.is_set():
                    break
                if record:
                    with self._lock:
                        self.sent += data
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if record:  # the other pump has ended or will end on the shutdown; close once
            src.close()
            dst.close()

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            conns, self._open = self._open, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def restore(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self.cut()
        self.listener.close()


class WorkerProc:
    """One worker process of the implementation under test."""

    def __init__(self, cmd: list[str], workdir: Path, name: str, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                     cwd=str(workdir))

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def ts(value: str | None) -> float:
    """An RFC 3339 time from the API as Unix seconds (0 for None)."""
    if not value:
        return 0.0
    from datetime import datetime
    base, _, rest = value.rstrip("Zz").partition(".")
    frac = float("0." + rest) if rest else 0.0
    return datetime.fromisoformat(base + "+00:00").timestamp() + frac


def read_ns(path: Path) -> int:
    """The nanosecond time at the start of a file the handlers write."""
    return int(path.read_text().split()[0])


def make_workdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def remove_workdir(path: Path, keep: bool) -> None:
    if keep:
        print(f"kept {path}", file=sys.stderr)
    else:
        shutil.rmtree(path, ignore_errors=True)
