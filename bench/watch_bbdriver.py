#!/usr/bin/env python3
"""Benchmark helper: drive prometheus-blackbox-exporter the way Prometheus would, but
cheaply: one /probe?module=tcp_connect request per target every INTERVAL seconds, targets
spread evenly over the interval, over keep-alive connections. Every second it prints
"<completed> <succeeded> <late>" (cumulative) so the caller can take a window.
Usage: watch_bbdriver.py EXPORTER_PORT FIRST COUNT INTERVAL SECONDS [CONNECTIONS]"""
import asyncio
import sys
import time

exp_port, first, count, interval, seconds = (int(a) for a in sys.argv[1:6])
conns = int(sys.argv[6]) if len(sys.argv) > 6 else 64
done = ok = late = 0


async def worker(q):
    global done, ok, late
    reader = writer = None
    while True:
        port, due = await q.get()
        if time.monotonic() - due > interval:
            late += 1
        for _ in range(2):
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", exp_port)
                writer.write(
                    f"GET /probe?module=tcp_connect&target=127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
                )
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await asyncio.wait_for(reader.readexactly(length), 10)
                done += 1
                if b"\nprobe_success 1" in body:
                    ok += 1
                break
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
                if writer is not None:
                    writer.close()
                reader = writer = None
        q.task_done()


async def report():
    while True:
        print(done, ok, late, flush=True)
        await asyncio.sleep(1)


async def main():
    q = asyncio.Queue()
    for _ in range(conns):
        asyncio.ensure_future(worker(q))
    asyncio.ensure_future(report())
    start = time.monotonic()
    step = interval / count
    k = 0
    while time.monotonic() - start < seconds:
        now = time.monotonic()
        # Enqueue every probe whose slot has come (slots: start + k * step).
        while start + k * step <= now:
            q.put_nowait((first + k % count, start + k * step))
            k += 1
        await asyncio.sleep(0.005)
    print(done, ok, late, flush=True)


asyncio.run(main())
