"""A real `sundial serve --workers 0` for the SDK's tests (binary from SUNDIAL_BIN, default the
repository's target/debug/sundial), on a free port with a fresh SQLite file."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[3]


def wait_until(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Server:
    def __init__(self, *extra: str, lease: str = "2s") -> None:
        self.dir = tempfile.mkdtemp(prefix="sundial-py-sdk-")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        binary = os.environ.get("SUNDIAL_BIN") or str(REPO / "target" / "debug" / "sundial")
        self.log = open(Path(self.dir) / "server.log", "wb")
        self.cmd = [binary, "serve", "--listen", f"127.0.0.1:{port}", "--db", f"sqlite://{self.dir}/t.db",
                    "--workers", "0", "--lease", lease, *extra]
        self._start()

    def _start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT)

        def ready() -> bool:
            assert self.proc.poll() is None, "server exited; see " + self.dir
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_until("the server to be ready", ready)

    def kill(self) -> None:
        """SIGKILL the server (its database stays)."""
        self.proc.kill()
        self.proc.wait()

    def restart(self) -> None:
        """Start the server again on the same port and database."""
        self._start()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
