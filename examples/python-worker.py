#!/usr/bin/env python3
"""The seed's Hello/Goodbye server in Python, as a quiesce (or systemd) worker.

    quiesce run --listen 127.0.0.1:8080 -- python3 examples/python-worker.py

In a checkout of the quiesce repository (the CLI on its pinned Node 24):

    npm run quiesce -- run --listen 127.0.0.1:8080 -- python3 examples/python-worker.py
    npm run quiesce -- reload

What a worker in any language does, in three steps:
1. Take the listening sockets from fd 3 on, the systemd way (LISTEN_FDS, LISTEN_PID).
2. Say it is ready: write "READY=1\\n" to the fd in QUIESCE_READY_FD (under quiesce), or send
   READY=1 to NOTIFY_SOCKET (under systemd directly).
3. On SIGTERM stop accepting, finish the connections in flight, exit 0.

The sockets are shared with the supervisor and the other generation, and they are
non-blocking: never switch them to blocking mode (asyncio keeps them non-blocking).
"""

import asyncio
import os
import signal
import socket
import sys

SD_LISTEN_FDS_START = 3


def inherited_sockets():
    """Sockets passed by the parent (sd_listen_fds): ours only if LISTEN_PID is our pid."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    count = int(os.environ.get("LISTEN_FDS", "0"))
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(key, None)
    return [socket.socket(fileno=SD_LISTEN_FDS_START + i) for i in range(count)]


def notify_ready():
    fd = os.environ.pop("QUIESCE_READY_FD", None)
    if fd:
        os.write(int(fd), b"READY=1\n")
        os.close(int(fd))
    path = os.environ.get("NOTIFY_SOCKET")
    if path:
        if path.startswith("@"):
            path = "\0" + path[1:]
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"READY=1", path)


async def main():
    socks = inherited_sockets()
    if not socks:
        fallback = socket.create_server(("127.0.0.1", int(os.environ.get("PORT", "8080"))))
        socks = [fallback]

    async def hello(reader, writer):
        try:
            writer.write(b"Hello.\n")
            writer.write(b"Goodbye.\n")
            await writer.drain()
            writer.close()
            await writer.wait_closed()
        except ConnectionError:
            pass

    servers = [await asyncio.start_server(hello, sock=s) for s in socks]
    notify_ready()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    # Drain: stop accepting (the supervisor's copy keeps the port open), finish what is in flight.
    # asyncio (3.11) creates an accepted connection's transport a loop turn after accept(), and
    # drops the connection if the server was closed meanwhile; so first stop watching the
    # listening sockets, let the connections already accepted attach, and only then close.
    for server in servers:
        for s in server.sockets:
            loop.remove_reader(s.fileno())
    await asyncio.sleep(0.05)
    for server in servers:
        server.close()
    in_flight = asyncio.all_tasks() - {asyncio.current_task()}
    if in_flight:
        await asyncio.wait(in_flight, timeout=25)


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
