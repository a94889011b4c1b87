"""What one more process on a request's way costs this machine, whatever the process does.

    .venv/bin/python bench/hop.py [--messages 400] [--gaps 0,8]

A gateway puts a process between the client and the node: on the way to the first token the
request and the token each cross one more process boundary than they do straight to the node.
This times that crossing alone: an asyncio echo server that does nothing, on the head's core,
and an asyncio client on the client's core (bench/gateway.py's `head-alone` layout), trading
64-byte messages over loopback TCP. With `--gaps` the client waits that many ms between
messages, as a stream's tokens do (a decode step of the demo model here takes about 8 ms), so
that both processes sleep between messages and wake up cold, as they do in the gateway.

It prints the round trip's p50 and p99 (two crossings, what the gateway adds to a first token
beyond its own work) and the CPU each side spends per message, with the echo server's as the
floor of what any relay costs per token.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import time

from common import cpu_seconds, layout_cores, percentile

SIZE = 64


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.readexactly(SIZE):
            writer.write(data)
    except asyncio.IncompleteReadError:
        writer.close()


def serve(listener: socket.socket, cores: set[int], ready: int) -> None:
    """The echo server's process: pinned, then answering until its client leaves."""
    os.sched_setaffinity(0, cores)

    async def main() -> None:
        server = await asyncio.start_server(_echo, sock=listener)
        os.write(ready, b"x")
        async with server:
            await server.serve_forever()

    asyncio.run(main())


async def trade(port: int, messages: int, gap_s: float) -> tuple[list[float], float]:
    """Round trips in seconds, and this side's CPU seconds per message."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    payload, trips = b"x" * SIZE, []
    for _ in range(20):  # warm-up
        writer.write(payload)
        await reader.readexactly(SIZE)
    cpu = time.process_time()
    for _ in range(messages):
        if gap_s:
            await asyncio.sleep(gap_s)
        started = time.perf_counter()
        writer.write(payload)
        await reader.readexactly(SIZE)
        trips.append(time.perf_counter() - started)
    cpu = (time.process_time() - cpu) / messages
    writer.close()
    return trips, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--gaps", default="0,8", help="ms between messages, comma-separated")
    args = parser.parse_args()
    cores = layout_cores("head-alone")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        serve(listener, cores["head"], ready_w)
        os._exit(0)
    os.read(ready_r, 1)
    os.sched_setaffinity(0, cores["client"])
    print(
        f"echo server on cores {sorted(cores['head'])}, client on {sorted(cores['client'])}, "
        f"{args.messages} messages of {SIZE} bytes per gap"
    )
    print(
        f"{'gap ms':>6} {'rtt p50 us':>10} {'rtt p99 us':>10} {'client cpu us':>13} "
        f"{'server cpu us':>13}"
    )
    try:
        for gap in (float(g) for g in args.gaps.split(",")):
            before = cpu_seconds([pid], descendants=False)
            trips, client_cpu = asyncio.run(trade(port, args.messages, gap / 1000))
            server_cpu = (cpu_seconds([pid], descendants=False) - before) / (args.messages + 20)
            print(
                f"{gap:6g} {statistics.median(trips) * 1e6:10.0f} "
                f"{percentile(trips, 99) * 1e6:10.0f} {client_cpu * 1e6:13.0f} "
                f"{server_cpu * 1e6:13.0f}"
            )
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
