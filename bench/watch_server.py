#!/usr/bin/env python3
"""Benchmark helper: listen on N consecutive loopback ports, accept and close every
connection (one epoll loop). Run only inside the benchmark's own network namespace."""
import select
import socket
import sys

first, count = int(sys.argv[1]), int(sys.argv[2])
ep = select.epoll()
socks = {}
for port in range(first, first + count):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(1024)
    s.setblocking(False)
    ep.register(s.fileno(), select.EPOLLIN)
    socks[s.fileno()] = s
print(f"listening on 127.0.0.1:{first}-{first + count - 1}", flush=True)
while True:
    for fd, _ in ep.poll(1.0):
        s = socks[fd]
        while True:
            try:
                c, _ = s.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            c.close()
