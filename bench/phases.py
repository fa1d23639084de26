#!/usr/bin/env python3
"""Wall-clock phases of a launch, from kernel tracepoints (no strace overhead).

Record interleaved launches with perf, then summarise:

    perf record -q -o launch.data \\
        -e sched:sched_process_exec -e sched:sched_process_exit -e sched:sched_process_fork \\
        -e syscalls:sys_enter_mount -e syscalls:sys_exit_pivot_root -e syscalls:sys_exit_chroot \\
        -- sh -c 'for i in $(seq 40); do
                     xroot run aarch64 -- /bin/true
                     unshare -mpf chroot ROOTFS /bin/true
                     xroot run aarch64 --binfmt host -- /bin/true
                   done'
    perf script -i launch.data -F comm,pid,tid,time,event,trace > launch.txt
    python3 bench/phases.py launch.txt

A launch starts at the exec of xroot (any path ending in /xroot) or
/usr/bin/unshare and covers its process tree. xroot launches alternate
between the first and second xroot command of the loop (named "xroot" and
"xroot #2"). Phases (medians, ms): start -> first mount(2); mounts ->
pivot_root/chroot returns; -> exec of the guest's /bin/true; the guest's
run under qemu; guest exit -> last process of the tree exits (namespace
teardown happens in PID 1's exit).
"""

import re
import statistics as st
import sys

LINE = re.compile(r"\s*(\S+)\s+(\d+)/(\d+)\s+([\d.]+):\s+(\S+):\s*(.*)")


def main(path):
    runs, cur = [], None
    for line in open(path, errors="replace"):
        m = LINE.match(line)
        if not m:
            continue
        comm, pid, t, name, args = m.group(1), int(m.group(2)), float(m.group(4)), m.group(5), m.group(6)
        if name == "sched:sched_process_exec":
            fm = re.search(r"filename=(\S+)", args)
            fn = fm.group(1) if fm else ""
            if fn.endswith("/xroot") or fn.endswith("/unshare") or re.search(r"/xr\w*$", fn):
                cur = {"start": t, "pids": {pid}, "kind": "bare" if fn.endswith("/unshare") else "xroot"}
                runs.append(cur)
                continue
        if cur is None:
            continue
        if name == "sched:sched_process_fork":
            p = int(re.search(r" pid=(\d+) child", args).group(1))
            c = int(re.search(r"child_pid=(\d+)", args).group(1))
            if p in cur["pids"]:
                cur["pids"].add(c)
            continue
        if pid not in cur["pids"]:
            continue
        if name == "sched:sched_process_exec" and "filename=/bin/true" in args:
            cur["guest_exec"] = t
        elif name == "syscalls:sys_enter_mount" and "first_mount" not in cur:
            cur["first_mount"] = t
        elif name in ("syscalls:sys_exit_pivot_root", "syscalls:sys_exit_chroot"):
            cur["enter"] = t
        elif name == "sched:sched_process_exit" and "group_dead=true" in args:
            if comm == "true" and "guest_exit" not in cur:
                cur["guest_exit"] = t
            cur["last_exit"] = t
    k = 0
    for r in runs:
        if r["kind"] == "xroot":
            r["kind"] = "xroot" if k % 2 == 0 else "xroot #2"
            k += 1
    kinds = [x for x in ("xroot", "xroot #2", "bare") if any(r["kind"] == x for r in runs)]
    rows = [
        ("start", "first_mount", "start → first mount"),
        ("first_mount", "enter", "first mount → pivot_root/chroot done"),
        ("enter", "guest_exec", "→ guest exec"),
        ("start", "guest_exec", "= start → guest exec"),
        ("guest_exec", "guest_exit", "guest runtime (qemu)"),
        ("guest_exit", "last_exit", "guest exit → last exit (teardown)"),
        ("start", "last_exit", "= total"),
    ]
    n = min(sum(1 for r in runs if r["kind"] == x) for x in kinds) if kinds else 0
    print(f"| phase (median ms, {n} interleaved launches each) | " + " | ".join(kinds) + " |")
    print("|---|" + "---:|" * len(kinds))
    for a, b, label in rows:
        cells = []
        for kd in kinds:
            v = [(r[b] - r[a]) * 1000 for r in runs if r["kind"] == kd and a in r and b in r]
            cells.append(f"{st.median(v):.2f}" if v else "-")
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
