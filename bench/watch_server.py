#!/usr/bin/env python3
"""Benchmark helper: listen on N consecutive loopback ports and hold every accepted
connection open, quiet, until the peer closes or resets it (one epoll loop). A healthy
server: a `tcp://` check watches the opened connection for 150 ms and fails one that the
server closes (docs/watch.md), so accept-and-close would make every target down.
Bounded: a connection is closed after HOLD seconds, and when more than MAX are held the
oldest is closed. Run only inside the benchmark's own network namespace.
Usage: watch_server.py FIRST COUNT [HOLD_SECONDS=10] [MAX=20000]"""
import collections
import select
import socket
import sys
import time

first, count = int(sys.argv[1]), int(sys.argv[2])
hold = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
most = int(sys.argv[4]) if len(sys.argv) > 4 else 20000
ep = select.epoll()
listeners = {}
for port in range(first, first + count):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(1024)
    s.setblocking(False)
    ep.register(s.fileno(), select.EPOLLIN)
    listeners[s.fileno()] = s
held = {}  # fd -> (socket, accepted at)
order = collections.deque()  # (accepted at, fd, socket) in accept order


def drop(fd):
    c = held.pop(fd, None)
    if c is not None:
        ep.unregister(fd)
        c[0].close()


print(f"listening on 127.0.0.1:{first}-{first + count - 1}; hold {hold}s, at most {most}", flush=True)
while True:
    for fd, _ in ep.poll(0.5):
        s = listeners.get(fd)
        if s is None:
            # Data, EOF or a reset from a held connection: read (bounded) and close on EOF/error.
            c = held.get(fd)
            if c is None:
                continue
            try:
                if c[0].recv(4096):
                    continue
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                pass
            drop(fd)
            continue
        for _ in range(1024):  # bounded per wake-up; the rest on the next poll
            try:
                c, _ = s.accept()
            except OSError:
                break
            c.setblocking(False)
            now = time.monotonic()
            held[c.fileno()] = (c, now)
            order.append((now, c.fileno(), c))
            ep.register(c.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
    now = time.monotonic()
    while order and (len(held) > most or now - order[0][0] > hold):
        _, fd, c = order.popleft()
        if held.get(fd, (None,))[0] is c:  # not closed by the peer already (fds are reused)
            drop(fd)
    # Entries of connections the peer closed stay until they age out; bound them too.
    while len(order) > 4 * most:
        _, fd, c = order.popleft()
        if held.get(fd, (None,))[0] is c:
            drop(fd)
