#!/usr/bin/env python3
"""Runs `sh -c SCRIPT` as root of a new user namespace that maps ids
0..65535 onto the same host ids (identity, as xroot's own sandbox does
for a root caller), with its own mount and pid namespaces. Must be started
as real root: only a process with CAP_SETUID outside can write such a map.
bench/debian.sh uses it to give mmdebstrap a private binfmt_misc instance
(Linux 6.7+) without touching the host's handlers.

    sudo python3 bench/userns-root.py 'SCRIPT'
"""
import ctypes
import os
import sys

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID = 0x00020000, 0x10000000, 0x20000000
libc = ctypes.CDLL(None, use_errno=True)

ready_r, ready_w = os.pipe()
go_r, go_w = os.pipe()
pid = os.fork()
if pid == 0:
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID) != 0:
        sys.exit(f"unshare: {os.strerror(ctypes.get_errno())}")
    os.write(ready_w, b"x")
    os.read(go_r, 1)
    child = os.fork()  # the first child of a new pid namespace is its pid 1
    if child == 0:
        os.execvp("sh", ["sh", "-c", sys.argv[1]])
    _, status = os.waitpid(child, 0)
    os._exit(os.waitstatus_to_exitcode(status))
os.read(ready_r, 1)
with open(f"/proc/{pid}/setgroups", "w") as f:
    f.write("allow")
for name in ("uid_map", "gid_map"):
    with open(f"/proc/{pid}/{name}", "w") as f:
        f.write("0 0 65536\n")
os.write(go_w, b"x")
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
