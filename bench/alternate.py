#!/usr/bin/env python3
"""Time whole processes side by side, alternating: round after round, each command once per
round (so a change of the machine's load hits every command alike), after WARMUP rounds.

    bench/alternate.py RUNS WARMUP NAME=COMMAND [NAME=COMMAND ...]

COMMAND is split like a shell would (no shell runs: what is timed is the program itself,
from spawn to exit, with its output to /dev/null). Prints one JSON object: for each name its
wall-time median, mean, min and the mean user + system CPU of the process (wait4), in ms,
and the load average before and after.
"""
import json
import os
import shlex
import statistics
import sys
import time


def run_once(argv):
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        t0 = time.perf_counter_ns()
        pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=[
            (os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)])
        _, status, ru = os.wait4(pid, 0)
        t1 = time.perf_counter_ns()
    finally:
        os.close(devnull)
    return (t1 - t0) / 1e6, (ru.ru_utime + ru.ru_stime) * 1e3, os.waitstatus_to_exitcode(status)


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    runs, warmup = int(sys.argv[1]), int(sys.argv[2])
    cmds = []
    for spec in sys.argv[3:]:
        name, _, cmd = spec.partition("=")
        cmds.append((name, shlex.split(cmd)))
    load0 = open("/proc/loadavg").read().split()[:3]
    wall = {n: [] for n, _ in cmds}
    cpu = {n: [] for n, _ in cmds}
    codes = {}
    for r in range(warmup + runs):
        for name, argv in cmds:
            w, c, code = run_once(argv)
            codes[name] = code
            if r >= warmup:
                wall[name].append(w)
                cpu[name].append(c)
    out = {"load_before": load0, "load_after": open("/proc/loadavg").read().split()[:3],
           "nproc": os.cpu_count(), "runs": runs, "results": {}}
    for name, _ in cmds:
        w = wall[name]
        out["results"][name] = {"median_ms": statistics.median(w), "mean_ms": statistics.fmean(w),
                                "min_ms": min(w), "cpu_ms": statistics.fmean(cpu[name]),
                                "exit": codes[name]}
    print(json.dumps(out))


main()
