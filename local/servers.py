"""Start and stop the real servers sluice runs against locally: `redis-server` and a moto
server, each as a plain child process on a free loopback port.

The test fixtures, the local runtime and the benchmarks all use these, so every tier talks to
the same kind of server.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from local.moto_server import check_moto_version

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 20.0
# Servers run in their own process group: a Ctrl-C at the terminal reaches only the process that
# started them, which stops them itself after its summary (it still needs them for that).
OWN_PROCESS_GROUP = 0

# moto needs credentials and a region to sign requests; these are never real.
FAKE_AWS_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


class ServerError(RuntimeError):
    """A server could not be started."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _wait_until(ready: Callable[[], bool], what: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"{what} exited with code {process.returncode} while starting")
        if ready():
            return
        time.sleep(0.05)
    process.kill()
    raise ServerError(f"{what} did not become ready within {START_TIMEOUT_S} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class RedisServer:
    """A redis-server child process. `restart()` brings it back on the same port, empty unless
    `appendonly` is on (ElastiCache keeps no AOF, so sluice must survive an empty restart)."""

    port: int
    directory: Path
    appendonly: bool = False
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServerError("redis-server is not installed; run `make setup` (it installs it with apt)")
        command = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            LOOPBACK,
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--maxmemory-policy",
            "noeviction",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, process_group=OWN_PROCESS_GROUP
        )
        _wait_until(self._ping, "redis-server", self.process)

    def _ping(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: the server dies with whatever it had not persisted."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self, *, keep_data: bool | None = None) -> None:
        self.kill()
        if keep_data is False:
            for leftover in self.directory.glob("*"):
                if leftover.is_file():
                    leftover.unlink()
                elif leftover.is_dir():
                    shutil.rmtree(leftover)
        self.start()

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)


@dataclass
class MotoServer:
    """A moto server child process (threads and processes share it)."""

    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        check_moto_version()  # here, with its reason: the child's own output is not kept
        command = [sys.executable, "-m", "local.moto_server", "-H", LOOPBACK, "-p", str(self.port)]
        env = {**os.environ, **FAKE_AWS_ENVIRONMENT}
        self.process = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            process_group=OWN_PROCESS_GROUP,
        )
        _wait_until(self._ready, "moto server", self.process)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/moto-api/data.json", timeout=0.5):
                return True
        except OSError:
            return False

    def reset(self) -> None:
        """Drop every resource (moto's own reset endpoint)."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)


@contextmanager
def running_redis(*, appendonly: bool = False) -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory(prefix="sluice-redis-") as directory:
        server = RedisServer(port=free_port(), directory=Path(directory), appendonly=appendonly)
        server.start()
        try:
            yield server
        finally:
            server.stop()


@contextmanager
def running_moto() -> Iterator[MotoServer]:
    server = MotoServer(port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
