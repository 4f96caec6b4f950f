"""The demo's embedded MQTT broker, for a machine without Mosquitto: amqtt (pure Python, MQTT
3.1.1 only), run as a process of its own by :func:`guantong._demo._servers.embedded_broker`::

    python guantong/_demo/_amqtt.py CONFIG.yaml

It is started by file path, not as ``-m guantong._demo._amqtt``, so that it does not import
the demo (and everything the demo imports) only to run a broker. A process of its own gives the
broker its own core and interpreter lock: it would otherwise compete with the gateway and
ingest on the demo's event loop. SIGTERM or SIGINT shut it down cleanly (exit status 0).

What amqtt keeps is in memory: sessions and the messages queued for a disconnected subscriber
are gone when it stops; and a QoS 1 message it has sent and that was not acknowledged is not
sent again when the subscriber reconnects, nor after amqtt stopped waiting for its
acknowledgement (5 s). See docs/demo.md.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

import yaml


async def serve(config: dict[str, object]) -> None:
    """Run an amqtt broker with ``config`` (amqtt's own format) until SIGTERM or SIGINT."""
    from amqtt.broker import Broker  # noqa: PLC0415 - an optional dependency, in this process only

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    broker = Broker(config)
    await broker.start()
    try:
        await stop.wait()
    finally:
        await broker.shutdown()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} CONFIG.yaml", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    config = yaml.safe_load(Path(argv[1]).read_text(encoding="utf-8"))
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
