"""A real Unix datagram socket standing in for systemd's `$NOTIFY_SOCKET` in tests."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path


class NotifySocket:
    """Bound to a file in a short temporary directory, or to the abstract namespace (`@name`)."""

    def __init__(self, abstract: bool = False) -> None:
        self._directory: tempfile.TemporaryDirectory[str] | None = None
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"distree-test-{os.getpid()}-{id(self):x}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            # Not pytest's tmp_path: a Unix socket path must stay under 108 bytes.
            self._directory = tempfile.TemporaryDirectory(prefix="sdnotify-")
            path = Path(self._directory.name) / "notify"
            self.sock.bind(str(path))
            self.address = str(path)
        self.received: list[dict[str, str]] = []

    def receive(self, timeout_s: float = 5.0) -> dict[str, str] | None:
        """The next datagram as `{KEY: value}`, or None if none arrives in time."""
        self.sock.settimeout(timeout_s)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return None
        message = dict(line.split("=", 1) for line in data.decode("utf-8").splitlines() if "=" in line)
        self.received.append(message)
        return message

    def drain(self) -> None:
        """Forget datagrams already queued."""
        while self.receive(0.01) is not None:
            pass

    def wait_for(self, key: str, timeout_s: float = 10.0) -> dict[str, str]:
        """Read datagrams until one carries `key`; fail naming what did arrive."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message is not None and key in message:
                return message
        raise AssertionError(f"no {key}= within {timeout_s} s; received {self.received}")

    def close(self) -> None:
        self.sock.close()
        if self._directory is not None:
            self._directory.cleanup()

    def __enter__(self) -> NotifySocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
