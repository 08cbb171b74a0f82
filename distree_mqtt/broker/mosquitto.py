"""A private Mosquitto on a free loopback port, started and always stopped by its owner."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from distree_mqtt.broker.process import BrokerProcess, free_port

__all__ = ["MosquittoBroker", "free_port", "mosquitto_available"]


def mosquitto_available() -> str | None:
    return shutil.which("mosquitto") or next(
        (
            str(path)
            for path in (Path("/usr/sbin/mosquitto"), Path("/usr/local/sbin/mosquitto"))
            if path.exists()
        ),
        None,
    )


class MosquittoBroker(BrokerProcess):
    """`with MosquittoBroker() as broker: broker.url` -> mqtt://127.0.0.1:<port>."""

    name = "mosquitto"

    def __init__(self, port: int | None = None, persistence: bool = False, extra_config: str = "") -> None:
        binary = mosquitto_available()
        if binary is None:
            raise RuntimeError("mosquitto is not installed (Debian: apt-get install mosquitto)")
        super().__init__(port)
        self.binary = binary
        self.persistence = persistence
        self.extra_config = extra_config
        self.workdir = Path(tempfile.mkdtemp(prefix="distree-mosquitto-"))

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
            # Started as root, Mosquitto drops to the `mosquitto` user, which could not write
            # the persistence file into our private directory; stay the user who started it.
            "user root" if os.geteuid() == 0 else "",
            self.extra_config,
        ]
        path = self.workdir / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def _spawn(self) -> subprocess.Popen[bytes]:
        config = self._write_config()
        log = (self.workdir / "mosquitto.log").open("ab")
        return subprocess.Popen([self.binary, "-c", str(config)], stdout=log, stderr=log)

    def _exit_reason(self) -> str:
        return (self.workdir / "mosquitto.log").read_text()[-500:]

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
