"""A private Mosquitto on a free loopback port, started and always stopped by its owner."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def mosquitto_available() -> str | None:
    return shutil.which("mosquitto") or next(
        (
            str(path)
            for path in (Path("/usr/sbin/mosquitto"), Path("/usr/local/sbin/mosquitto"))
            if path.exists()
        ),
        None,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class MosquittoBroker:
    """`with MosquittoBroker() as broker: broker.url` -> mqtt://127.0.0.1:<port>."""

    def __init__(self, port: int | None = None, persistence: bool = False, extra_config: str = "") -> None:
        binary = mosquitto_available()
        if binary is None:
            raise RuntimeError("mosquitto is not installed (Debian: apt-get install mosquitto)")
        self.binary = binary
        self.port = port or free_port()
        self.persistence = persistence
        self.extra_config = extra_config
        self.workdir = Path(tempfile.mkdtemp(prefix="distree-mosquitto-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            "autosave_interval 1",
            "max_queued_messages 100000",
            # Nagle's algorithm holds small packets for the peer's delayed ACK: ~40 ms per hop.
            "set_tcp_nodelay true",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            self.extra_config,
        ]
        path = self.workdir / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, timeout_s: float = 10.0) -> MosquittoBroker:
        config = self._write_config()
        log = (self.workdir / "mosquitto.log").open("ab")
        self.process = subprocess.Popen([self.binary, "-c", str(config)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited at start: {(self.workdir / 'mosquitto.log').read_text()[-500:]}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within {timeout_s} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
