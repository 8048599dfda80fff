"""`python -m livedash.worker NAME BUS_FD HANDOFF_FD`: one socket worker of `livedash serve`.

Started by the main process (`livedash.realtime.socket_workers`), never by hand: the two file
descriptors are its ends of the bus and of the connection hand-off.
"""

from __future__ import annotations

import sys


def main(arguments: list[str]) -> int:
    from livedash.realtime.imports import import_engineio_for_serving

    import_engineio_for_serving()  # first: it must be the first import of python-engineio
    import asyncio
    import socket

    from livedash.cluster.local_bus import BusLink
    from livedash.service import run_worker

    if len(arguments) != 3:
        print("usage: python -m livedash.worker NAME BUS_FD HANDOFF_FD", file=sys.stderr)
        return 2
    name, bus_fd, handoff_fd = arguments[0], int(arguments[1]), int(arguments[2])
    bus = socket.socket(fileno=bus_fd)
    channel = socket.socket(fileno=handoff_fd)

    async def run() -> None:
        await run_worker(name, await BusLink.open(bus), channel)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
