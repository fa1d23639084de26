#!/usr/bin/env python3
"""Interleaved timing of several commands: one run of each per sub-round, in
a new random order every time, so that the machine's drift (other load,
frequency, caches) falls on every command alike. hyperfine runs all runs of
one command, then all of the next; on a noisy VM that biased launch ratios
by several percent.

    interleave.py --runs N --warmup W --export-json FILE -n NAME CMD [-n NAME CMD ...]

Writes hyperfine's JSON shape (results: command, times, user, system, in
seconds; user/system are each run's rusage), so bench/report.py reads both.
Commands are split like a shell would split words (shlex); no shell runs.
"""
import argparse
import json
import os
import random
import shlex
import sys
import time


def run_once(argv, devnull):
    t = time.perf_counter_ns()
    pid = os.posix_spawnp(argv[0], argv, os.environ,
                          file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 0),
                                        (os.POSIX_SPAWN_DUP2, devnull, 1),
                                        (os.POSIX_SPAWN_DUP2, devnull, 2)])
    _, status, ru = os.wait4(pid, 0)
    dt = (time.perf_counter_ns() - t) / 1e9
    if status != 0:
        sys.exit(f"interleave: {' '.join(argv)!r} failed (wait status {status})")
    return dt, ru.ru_utime, ru.ru_stime


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, required=True)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--export-json", required=True)
    p.add_argument("-n", "--name", action="append", dest="names", default=[])
    p.add_argument("commands", nargs="+")
    a = p.parse_intermixed_args()
    if len(a.names) != len(a.commands):
        sys.exit("interleave: give one -n NAME per command")
    argvs = [shlex.split(c) for c in a.commands]
    devnull = os.open(os.devnull, os.O_RDWR)
    for argv in argvs:
        for _ in range(a.warmup):
            run_once(argv, devnull)
    res = [{"command": n, "times": [], "user_runs": [], "system_runs": []} for n in a.names]
    order = list(range(len(argvs)))
    for _ in range(a.runs):
        random.shuffle(order)
        for i in order:
            dt, u, s = run_once(argvs[i], devnull)
            res[i]["times"].append(dt)
            res[i]["user_runs"].append(u)
            res[i]["system_runs"].append(s)
    for r in res:
        r["user"] = sum(r["user_runs"]) / len(r["user_runs"])
        r["system"] = sum(r["system_runs"]) / len(r["system_runs"])
        r["mean"] = sum(r["times"]) / len(r["times"])
    with open(a.export_json, "w") as f:
        json.dump({"results": res, "interleaved": True}, f)


if __name__ == "__main__":
    main()
