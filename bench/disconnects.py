"""CPU of a disconnect storm in the Socket.IO manager: N sessions, each in its own room, its
user's room and one metric room, all disconnecting, on python-socketio's stock manager and on
livedash's (`realtime/room_index.py`). In-process, one core; no sockets.

    .venv/bin/python bench/disconnects.py --sessions 1000,3000,10000
"""

from __future__ import annotations

import argparse
import time

import socketio

from livedash.realtime.frames import FrameManager
from livedash.realtime.rooms import room_name

NAMESPACE = "/"


def _storm(manager: socketio.AsyncManager, sessions: int) -> float:
    """Seconds of CPU to disconnect `sessions` sessions, one after the other."""
    for n in range(sessions):
        sid = f"s{n}"
        manager.basic_enter_room(sid, NAMESPACE, None, eio_sid=f"e{n}")
        manager.basic_enter_room(sid, NAMESPACE, sid)
        manager.basic_enter_room(sid, NAMESPACE, f"user|viewer-{n}")
        manager.basic_enter_room(sid, NAMESPACE, room_name("patients_total", "ED"))
    started = time.process_time()
    for n in range(sessions):
        manager.basic_disconnect(f"s{n}", NAMESPACE)
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", default="1000,3000,10000")
    args = parser.parse_args()
    heads = ("sessions", "stock s", "livedash s", "stock ms/each", "livedash ms/each")
    print(
        " ".join(f"{head:>{width}}" for head, width in zip(heads, (9, 9, 11, 14, 17), strict=True))
    )
    for sessions in (int(n) for n in args.sessions.split(",")):
        stock = _storm(socketio.AsyncManager(), sessions)
        ours = _storm(FrameManager(), sessions)
        print(
            f"{sessions:>9} {stock:>9.2f} {ours:>11.3f} "
            f"{1000 * stock / sessions:>14.3f} {1000 * ours / sessions:>17.4f}"
        )


if __name__ == "__main__":
    main()
