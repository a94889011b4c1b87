"""A link with latency and loss in user space: two tap devices and this process between them.

Minimal kernels (this project's CI among them) lack `tc netem`, so a host whose link must be
impaired is plugged in through a tap pair instead of a veth pair. Frames leaving the host are
delayed and dropped as told, as `tc qdisc add dev eth0 root netem delay D loss P` on the host's
interface would; frames towards the host pass straight through.

    python -m tests.multihost.wire HOST_TAP LAN_TAP

makes both taps, prints `ready`, then takes commands on stdin, one per line:
`impair DELAY_MS LOSS_PERCENT` (`impair 0 0` heals the link). The taps vanish when it ends.
"""

from __future__ import annotations

import collections
import fcntl
import os
import random
import selectors
import struct
import sys
import time
from dataclasses import dataclass, field

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
FRAME_MAX = 65536


def open_tap(name: str) -> int:
    """Create the tap device `name` (gone when the fd closes); its non-blocking fd."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


@dataclass
class Delayer:
    """One direction's impairment: frames in, the frames due by `now` out, in order."""

    delay_s: float = 0.0
    loss: float = 0.0  # probability of dropping a frame
    rng: random.Random = field(default_factory=random.Random)
    queue: collections.deque[tuple[float, bytes]] = field(default_factory=collections.deque)
    sent: int = 0
    dropped: int = 0

    def put(self, frame: bytes, now: float) -> None:
        """Take a frame: dropped with probability `loss`, else queued until its time."""
        if self.loss and self.rng.random() < self.loss:
            self.dropped += 1
            return
        # Never overtake a frame queued under a longer delay: a link does not reorder.
        due = max(now + self.delay_s, self.queue[-1][0] if self.queue else now)
        self.queue.append((due, frame))

    def due(self, now: float) -> list[bytes]:
        """The frames whose time has come."""
        out = []
        while self.queue and self.queue[0][0] <= now:
            out.append(self.queue.popleft()[1])
        self.sent += len(out)
        return out

    def wait_s(self, now: float) -> float | None:
        """Seconds until the next frame is due; None when nothing waits."""
        return max(self.queue[0][0] - now, 0.0) if self.queue else None


def read_frames(fd: int) -> list[bytes]:
    """Every frame waiting on a tap."""
    frames = []
    while True:
        try:
            frames.append(os.read(fd, FRAME_MAX))
        except (BlockingIOError, OSError):
            return frames


def write_frame(fd: int, frame: bytes) -> None:
    """Hand a frame to a tap; a full queue drops it, as a busy link would."""
    try:
        os.write(fd, frame)
    except OSError:
        pass


def command(line: str, outgoing: Delayer) -> None:
    """Apply one stdin command."""
    words = line.split()
    if len(words) == 3 and words[0] == "impair":
        outgoing.delay_s = float(words[1]) / 1000
        outgoing.loss = float(words[2]) / 100


def serve(host_fd: int, lan_fd: int) -> None:
    """Move frames between the taps until stdin closes."""
    outgoing = Delayer()
    sel = selectors.DefaultSelector()
    sel.register(host_fd, selectors.EVENT_READ, "host")
    sel.register(lan_fd, selectors.EVENT_READ, "lan")
    sel.register(0, selectors.EVENT_READ, "stdin")
    pending = b""
    while True:
        for key, _ in sel.select(outgoing.wait_s(time.monotonic())):
            if key.data == "host":
                now = time.monotonic()
                for frame in read_frames(host_fd):
                    outgoing.put(frame, now)
            elif key.data == "lan":
                for frame in read_frames(lan_fd):
                    write_frame(host_fd, frame)
            elif chunk := os.read(0, 4096):
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    command(line.decode(), outgoing)
            else:  # stdin closed: the office is gone
                return
        for frame in outgoing.due(time.monotonic()):
            write_frame(lan_fd, frame)


def main(argv: list[str]) -> int:
    """Make the taps, say ready, serve."""
    host_fd, lan_fd = open_tap(argv[0]), open_tap(argv[1])
    print("ready", flush=True)
    serve(host_fd, lan_fd)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
