"""Connection floods against a master on loopback, from 127.0.0.2, bounded in time and count.

``python tests/attacks.py flood|drip PORT SECONDS [RATE]`` prints ``started`` once it runs and, when
the time is up or at SIGTERM, ``opened N S``: N connections in S seconds. Only ever aimed at
127.0.0.1.
"""

from __future__ import annotations

import collections
import signal
import socket
import struct
import sys
import time

ATTACKER = "127.0.0.2"
TARGET = "127.0.0.1"
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
# Open at once, at most: the flood's connections each live HOLD seconds.
MAX_OPEN = 5000
HOLD = 0.2
FLOOD_RATE = 20_000
# The drip's connections, each sending a byte of an unfinished login every DRIP_EVERY seconds.
DRIPPING = 450
DRIP_EVERY = 0.5
DRIP_TICKS = 25
NEW_PER_TICK = 4


class Deadline:
    """Until ``seconds`` have passed or SIGTERM came."""

    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds
        signal.signal(signal.SIGTERM, self._stop)

    def _stop(self, signum: int, frame: object) -> None:
        self._end = 0.0

    def __bool__(self) -> bool:
        return time.monotonic() < self._end


def _socket() -> socket.socket:
    sock = socket.socket()
    # A reset on close: no TIME_WAIT left behind to use up the ports.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    # The port is chosen at connect(), per destination: more of them.
    sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    sock.bind((ATTACKER, 0))
    sock.setblocking(False)
    return sock


def _open(port: int) -> socket.socket | None:
    sock = _socket()
    try:
        sock.connect((TARGET, port))
    except BlockingIOError:
        pass  # under way
    except OSError:
        sock.close()
        return None
    return sock


def flood(port: int, seconds: float, rate: float = FLOOD_RATE) -> int:
    """``rate`` connections a second (or as many as this process opens), each closed after
    HOLD seconds."""
    held: collections.deque[tuple[float, socket.socket]] = collections.deque()
    opened = 0
    running = Deadline(seconds)
    started = time.monotonic()
    while running:
        now = time.monotonic()
        if opened > (now - started) * rate:
            time.sleep(0.001)
            continue
        while held and (now - held[0][0] > HOLD or len(held) >= MAX_OPEN):
            held.popleft()[1].close()
        sock = _open(port)
        if sock is not None:
            held.append((now, sock))
            opened += 1
    for _, sock in held:
        sock.close()
    return opened


def drip(port: int, seconds: float) -> int:
    """DRIPPING connections that announce a login answer and send it a byte at a time; each
    one the master closes is opened again, a few at a time so as not to overflow the backlog."""
    socks: list[socket.socket | None] = [None] * DRIPPING
    announced: set[int] = set()  # indexes of the connections that sent the length
    opened = 0
    running = Deadline(seconds)
    tick = 0
    while running:
        started = time.monotonic()
        new = 0
        # Each tick visits a slice of the connections: each is visited every DRIP_EVERY.
        for i in range(tick % DRIP_TICKS, DRIPPING, DRIP_TICKS):
            sock = socks[i]
            try:
                if sock is None:
                    if new == NEW_PER_TICK:
                        continue
                    socks[i] = _open(port)
                    announced.discard(i)
                    opened += 1
                    new += 1
                elif _closed(sock):
                    raise ConnectionResetError
                elif i in announced:
                    sock.send(b"x")  # ...a byte at a time
                else:
                    sock.send(struct.pack("!i", 200))  # a 200-byte answer follows...
                    announced.add(i)
            except BlockingIOError:
                pass  # still connecting
            except OSError:
                if sock is not None:
                    sock.close()
                socks[i] = None
        tick += 1
        time.sleep(max(0.0, DRIP_EVERY / DRIP_TICKS - (time.monotonic() - started)))
    for sock in socks:
        if sock is not None:
            sock.close()
    return opened


def _closed(sock: socket.socket) -> bool:
    """Whether the master closed ``sock``; reads what it sent meanwhile (the challenge)."""
    try:
        while sock.recv(4096):
            pass
    except BlockingIOError:
        return False
    except OSError:
        pass
    return True


def main() -> int:
    kind, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    print("started", flush=True)
    started = time.monotonic()
    if kind == "flood":
        opened = flood(port, seconds, *map(float, sys.argv[4:5]))
    else:
        opened = drip(port, seconds)
    print(f"opened {opened} {time.monotonic() - started:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
