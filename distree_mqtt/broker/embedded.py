"""An embedded pure-Python broker (amqtt, MQTT 3.1.1, no shared subscriptions) for machines
without Mosquitto, so the demo needs nothing but pip. Runs in its own process:

    python -m distree_mqtt.broker.embedded --port 1883
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import subprocess
import sys

from distree_mqtt.broker.process import BrokerProcess


def embedded_available() -> bool:
    try:
        import amqtt  # noqa: F401
    except ImportError:
        return False
    return True


async def _serve(port: int) -> None:
    from amqtt.broker import Broker

    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    broker = Broker(config)
    await broker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    with contextlib.suppress(Exception):
        await broker.shutdown()


class EmbeddedBroker(BrokerProcess):
    name = "the embedded broker"
    protocol = "3.1.1"

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "distree_mqtt.broker.embedded", "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _exit_reason(self) -> str:
        return "is amqtt installed?"


def main() -> None:
    parser = argparse.ArgumentParser(description="embedded MQTT 3.1.1 broker (amqtt)")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_serve(args.port))


if __name__ == "__main__":
    main()
