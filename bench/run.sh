#!/usr/bin/env bash
# bench/run.sh: xroot measured side by side with the alternatives (issue #6).
#
#   sudo bash bench/run.sh [--install] [--quick] [--xroot PATH] [--mirror DIR] [--out DIR]
#
# Measures, in one run and against the same rootfs tree:
#   1. launch      `xroot run aarch64 -- /bin/true` vs bare unshare+chroot, bwrap,
#                  proot; as root and as an unprivileged user
#   2. exec-heavy  a guest shell script running 200 short foreign processes
#   3. fetch       cold (empty store) vs curl + sha256sum -c + tar xzf; warm
#   4. scale       20 concurrent runs; all eight arches fetched in one command
#   5. memory      peak RSS of xroot during fetch and run (GNU time, /proc VmHWM)
# Launches and the exec-heavy runs are interleaved (bench/interleave.py: one
# run of each way per sub-round, random order); fetch and scale use hyperfine. Medians over
# pooled samples, ratios of medians, written to
# OUT/latest.json and OUT/latest.md (raw hyperfine JSON in OUT/raw-latest/).
# See docs/performance.md for the method and the analysis.
#
# Needs root (bare way = unshare+chroot, host binfmt handler, a bench user).
# Everything it creates (a temp dir, a local HTTP mirror, the host binfmt
# handler for aarch64 if there was none, the user xroot-bench if missing)
# is removed at exit, also on error or Ctrl-C. Only the results stay.
#
# Tunables (environment): BENCH_ROUNDS (launch rounds, default 12),
# BENCH_LAUNCH_RUNS (runs per round, 15), BENCH_EXEC_ROUNDS (3),
# BENCH_EXEC_RUNS (runs per round, 3), BENCH_FETCH_RUNS (20),
# BENCH_SCALE_RUNS (10), BENCH_SCALE_N (20), BENCH_FETCH8_RUNS (3).

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HOST_TRIPLE=$(rustc -vV 2>/dev/null | sed -n 's/^host: //p')
# .cargo/config.toml builds for the host triple (static release binaries).
XROOT_SRC=${XROOT_BIN:-$REPO/target/${HOST_TRIPLE:-x86_64-unknown-linux-gnu}/release/xroot}
MIRROR_DIR=${XROOT_BENCH_MIRROR:-$REPO/../shared/alpine-mirror}
OUT=$REPO/bench/results
ARCH=aarch64
BRANCH=v3.20
ALL_ARCHES=(aarch64 armhf armv7 ppc64le riscv64 s390x x86 x86_64)
BENCH_USER=xroot-bench        # rootless, with subordinate ids (as useradd gives)
BENCH_USER1=xroot-bench1id    # rootless, without: one id mapped
INSTALL=0
QUICK=0

usage() {
    sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
    cat <<'EOF'
Options:
  --install      apt-get install the missing tools first (nothing is installed otherwise)
  --quick        fewer runs (a smoke test, ~2 minutes; numbers are rougher)
  --xroot PATH   the xroot binary to measure [default: target/HOST-TRIPLE/release/xroot, or $XROOT_BIN]
  --mirror DIR   a local Alpine mirror tree with v3.20/releases/aarch64/ [default: ../shared/alpine-mirror beside the project]
  --out DIR      where results go [default: bench/results]
EOF
}

while [ $# -gt 0 ]; do
    case $1 in
        --install) INSTALL=1 ;;
        --quick) QUICK=1 ;;
        --xroot) XROOT_SRC=${2:?--xroot needs a path}; shift ;;
        --mirror) MIRROR_DIR=${2:?--mirror needs a directory}; shift ;;
        --out) OUT=${2:?--out needs a directory}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ "$QUICK" = 1 ]; then
    : "${BENCH_ROUNDS:=2}" "${BENCH_LAUNCH_RUNS:=15}" "${BENCH_EXEC_ROUNDS:=2}" "${BENCH_EXEC_RUNS:=1}"
    : "${BENCH_FETCH_RUNS:=6}" "${BENCH_SCALE_RUNS:=4}" "${BENCH_FETCH8_RUNS:=2}"
fi
# A launch round is LAUNCH_RUNS sub-rounds, each running every way once in
# a random order (interleave.py), so drift falls on all ways alike; the
# rounds give the spread of the per-round ratios. The longer groups use
# hyperfine (one way after another) in short rounds whose starting way
# rotates.
ROUNDS=${BENCH_ROUNDS:-12}
LAUNCH_RUNS=${BENCH_LAUNCH_RUNS:-15}
EXEC_ROUNDS=${BENCH_EXEC_ROUNDS:-3}
EXEC_RUNS=${BENCH_EXEC_RUNS:-3}
FETCH_RUNS=${BENCH_FETCH_RUNS:-20}
SCALE_RUNS=${BENCH_SCALE_RUNS:-10}
SCALE_N=${BENCH_SCALE_N:-20}
FETCH8_RUNS=${BENCH_FETCH8_RUNS:-3}

say() { printf '\033[1mbench\033[0m [%3ds]: %s\n' "$SECONDS" "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- preflight
[ "$(id -u)" = 0 ] || die "run as root (the bare way needs unshare+chroot as root, a host binfmt handler and a bench user): sudo bash bench/run.sh"
[ "$(uname -s)" = Linux ] || die "Linux only"

# tool -> Debian package
declare -A PKG=(
    [hyperfine]=hyperfine [python3]=python3 [unshare]=util-linux [chroot]=coreutils
    [setpriv]=util-linux [bwrap]=bubblewrap [proot]=proot [qemu-aarch64-static]=qemu-user-static
    [curl]=curl [sha256sum]=coreutils [tar]=tar [useradd]=passwd [userdel]=passwd
    [newuidmap]=uidmap [newgidmap]=uidmap [/usr/bin/time]=time
)
missing_tools() {
    local t
    for t in "${!PKG[@]}"; do
        if [ "${t#/}" != "$t" ]; then [ -x "$t" ] || echo "$t"; else command -v "$t" >/dev/null || echo "$t"; fi
    done
}
mapfile -t MISSING < <(missing_tools)
if [ ${#MISSING[@]} -gt 0 ]; then
    pkgs=$(for t in "${MISSING[@]}"; do echo "${PKG[$t]}"; done | sort -u | tr '\n' ' ')
    if [ "$INSTALL" = 1 ]; then
        say "installing: $pkgs"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs >/dev/null \
            || die "apt-get install $pkgs failed"
        mapfile -t MISSING < <(missing_tools)
        [ ${#MISSING[@]} -eq 0 ] || die "still missing after install: ${MISSING[*]}"
    else
        die "missing tools: ${MISSING[*]}
       install them with: apt-get install $pkgs
       (or rerun with --install)"
    fi
fi
/usr/bin/time -f %M true >/dev/null 2>&1 || die "/usr/bin/time is not GNU time (apt-get install time)"
hyperfine --help 2>/dev/null | grep -q -- '--shell' || die "hyperfine too old (need --shell=none, hyperfine >= 1.13)"
[ -x "$XROOT_SRC" ] || die "no xroot binary at $XROOT_SRC: build it first (cargo build --release) or pass --xroot PATH"
TARBALL_DIR=$MIRROR_DIR/$BRANCH/releases/$ARCH
[ -f "$TARBALL_DIR/latest-releases.yaml" ] || die "$MIRROR_DIR is not an Alpine mirror with $BRANCH/releases/$ARCH/latest-releases.yaml (pass --mirror DIR)"
TARBALL=$(cd "$TARBALL_DIR" && ls alpine-minirootfs-*-"$ARCH".tar.gz | head -n1)
[ -n "$TARBALL" ] || die "no alpine-minirootfs tarball in $TARBALL_DIR"
for a in "${ALL_ARCHES[@]}"; do
    [ -f "$MIRROR_DIR/$BRANCH/releases/$a/latest-releases.yaml" ] || die "mirror lacks $BRANCH/releases/$a (needed for the eight-arch fetch)"
done

# ---------------------------------------------------------------- workspace + cleanup
WORK=$(mktemp -d /tmp/xroot-bench.XXXXXX)
chmod 755 "$WORK"      # the rootless user reads the xroot copy in here
RAW=$WORK/raw          # copied to $OUT/raw-latest at the end
mkdir -p "$RAW"
HTTP_PID=
ADDED_HANDLER=0
MOUNTED_BINFMT=0
CREATED_USER=0
CREATED_USER1=0
HOST_BINFMT=/proc/sys/fs/binfmt_misc

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    [ -n "$HTTP_PID" ] && kill "$HTTP_PID" 2>/dev/null && wait "$HTTP_PID" 2>/dev/null
    if [ "$ADDED_HANDLER" = 1 ]; then
        "$WORK/xroot" -q binfmt remove "$ARCH" >/dev/null 2>&1 || say "warning: could not remove the host binfmt handler for $ARCH; remove it with: xroot binfmt remove $ARCH"
    fi
    if [ "$MOUNTED_BINFMT" = 1 ] && [ -z "$(ls "$HOST_BINFMT" 2>/dev/null | grep -v -x -e register -e status)" ]; then
        umount "$HOST_BINFMT" 2>/dev/null
    fi
    if [ "$CREATED_USER" = 1 ]; then
        userdel -r "$BENCH_USER" >/dev/null 2>&1 || say "warning: could not remove user $BENCH_USER (userdel -r $BENCH_USER)"
    fi
    if [ "$CREATED_USER1" = 1 ]; then
        userdel -r "$BENCH_USER1" >/dev/null 2>&1 || say "warning: could not remove user $BENCH_USER1 (userdel -r $BENCH_USER1)"
    fi
    rm -rf "$WORK"
    [ $rc -ne 0 ] && say "failed (exit $rc); everything created was removed"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

install -m 0755 "$XROOT_SRC" "$WORK/xroot"
install -m 0755 "$REPO/bench/interleave.py" "$WORK/interleave.py"
XR=$WORK/xroot
export XROOT_HOME=$WORK/home
unset XROOT_MIRROR
ROOT=$XROOT_HOME/rootfs/$ARCH/root
# A clean, fixed environment for everything measured: same PATH for every way.
CLEAN_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH=$CLEAN_PATH LANG=C.UTF-8
# xroot binds the current directory into the guest unless it is / or a system
# directory: measure from / so every way sees the same tree.
cd /

# ---------------------------------------------------------------- local HTTP mirror
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server "$PORT" --bind 127.0.0.1 --directory "$MIRROR_DIR" >"$RAW/http.log" 2>&1 &
HTTP_PID=$!
URL=http://127.0.0.1:$PORT
for _ in $(seq 50); do curl -fsS -o /dev/null "$URL/$BRANCH/releases/$ARCH/latest-releases.yaml" 2>/dev/null && break; sleep 0.1; done
curl -fsS -o /dev/null "$URL/$BRANCH/releases/$ARCH/latest-releases.yaml" || die "the local HTTP mirror on $URL did not come up (see $RAW/http.log)"
SRC=(--mirror "$URL" --branch "$BRANCH")

# The two timers, as argument lists: hyperfine runs one way after another;
# interleave.py runs one run of each way per sub-round, in random order.
# Both write hyperfine's JSON shape.
HF=(hyperfine -N --style basic)
IL=(python3 "$WORK/interleave.py")
# timed [--user] TIMER GROUP TAG [args...]: output to RAW/GROUP/TAG.log,
# JSON to RAW/GROUP/TAG.json. --user: as a bench user (rootless), with its
# own XROOT_HOME; U_NAME, U_HOME and U_XHOME say which (use_user1 / use_user
# switch).
timed() {
    local as=() json
    if [ "$1" = --user ]; then
        shift
        as=(setpriv --reuid="$U_NAME" --regid="$U_NAME" --init-groups
            env -i HOME="$U_HOME" PATH="$CLEAN_PATH" LANG=C.UTF-8 XROOT_HOME="$U_XHOME")
    fi
    local -n timer=$1
    local group=$2 tag=$3
    shift 3
    mkdir -p "$RAW/$group"
    json=$RAW/$group/$tag.json
    if [ ${#as[@]} -gt 0 ]; then
        install -d -o "$U_NAME" "$WORK/u-out"   # a place the user may write
        json=$WORK/u-out/$tag.json
    fi
    if ! "${as[@]}" "${timer[@]}" --export-json "$json" "$@" >"$RAW/$group/$tag.log" 2>&1; then
        tail -n 20 "$RAW/$group/$tag.log" >&2
        die "${timer[0]}${as:+ (as $U_NAME)} failed in $group/$tag (log above)"
    fi
    [ "$json" = "$RAW/$group/$tag.json" ] || cp "$json" "$RAW/$group/$tag.json"
}
hf() { timed HF "$@"; }
hf_user() { timed --user HF "$@"; }
il() { timed IL "$@"; }
il_user() { timed --user IL "$@"; }
as_user() {
    setpriv --reuid="$U_NAME" --regid="$U_NAME" --init-groups \
        env -i HOME="$U_HOME" PATH="$CLEAN_PATH" LANG=C.UTF-8 XROOT_HOME="$U_XHOME" "$@"
}
use_user() { U_NAME=$BENCH_USER U_HOME=$UHOME_DIR U_XHOME=$UXROOT_HOME; }
use_user1() { U_NAME=$BENCH_USER1 U_HOME=$UHOME_DIR1 U_XHOME=$UXROOT_HOME1; }

T0=$(date +%s)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${LOAD0%% *}" -v n="$(nproc)" 'BEGIN { exit !(l > n / 2) }'; then
    say "warning: load average ${LOAD0%% *} on $(nproc) CPUs: other work is running; wall-clock numbers will be noisy (see the CPU-time ratios)"
fi

# ---------------------------------------------------------------- setup: store, handler, user
say "fetching $ARCH into a fresh store ($XROOT_HOME) from $URL"
"$XR" -q fetch "$ARCH" "${SRC[@]}" || die "xroot fetch $ARCH failed"
[ -x "$ROOT/bin/busybox" ] || die "no rootfs at $ROOT after fetch"

[ -e "$HOST_BINFMT/register" ] || MOUNTED_BINFMT=1   # `xroot binfmt install` will mount it
has_handler() {
    "$XR" binfmt status "$ARCH" --json | python3 -c 'import json,sys; a=json.load(sys.stdin)["arches"][0]; sys.exit(0 if a["handlers"] else 1)'
}
handler_ok() {
    "$XR" binfmt status "$ARCH" --json | python3 -c 'import json,sys; a=json.load(sys.stdin)["arches"][0]; sys.exit(0 if a["ok"] else 1)'
}
if has_handler; then
    say "using the existing host binfmt handler for $ARCH"
    handler_ok || die "the host's binfmt handler for $ARCH is unfit (see: xroot binfmt status $ARCH); the bare and bwrap ways need one with flag F"
else
    say "registering a host binfmt handler for $ARCH (removed at exit)"
    ADDED_HANDLER=1
    "$XR" -q binfmt install "$ARCH" || die "xroot binfmt install $ARCH failed"
fi
HANDLER_FLAGS=$("$XR" binfmt status "$ARCH" --json | python3 -c 'import json,sys; a=json.load(sys.stdin)["arches"][0]; print(a["handlers"][0]["flags"] if a["handlers"] else "")')

if id "$BENCH_USER" >/dev/null 2>&1; then
    say "using the existing user $BENCH_USER"
else
    say "creating user $BENCH_USER (removed at exit)"
    useradd -m "$BENCH_USER" || die "useradd $BENCH_USER failed"
    CREATED_USER=1
fi
has_subids() { grep -q "^$1:" /etc/subuid 2>/dev/null && grep -q "^$1:" /etc/subgid 2>/dev/null; }
# useradd gives subordinate ids where login.defs asks for them (Debian's does)
has_subids "$BENCH_USER" || die "$BENCH_USER has no subordinate ids: add a range (usermod --add-subuids 2000000-2065535 --add-subgids 2000000-2065535 $BENCH_USER)"
if id "$BENCH_USER1" >/dev/null 2>&1; then
    has_subids "$BENCH_USER1" && die "$BENCH_USER1 must have no subordinate ids (remove its lines from /etc/subuid and /etc/subgid)"
    say "using the existing user $BENCH_USER1"
else
    say "creating user $BENCH_USER1, without subordinate ids (removed at exit)"
    useradd -m -K SUB_UID_COUNT=0 -K SUB_GID_COUNT=0 "$BENCH_USER1" || die "useradd $BENCH_USER1 failed"
    CREATED_USER1=1
fi
UHOME_DIR=$(getent passwd "$BENCH_USER" | cut -d: -f6)
UXROOT_HOME=$WORK/uhome
install -d -o "$BENCH_USER" -m 700 "$UXROOT_HOME"
UROOT=$UXROOT_HOME/rootfs/$ARCH/root
UHOME_DIR1=$(getent passwd "$BENCH_USER1" | cut -d: -f6)
UXROOT_HOME1=$WORK/uhome1
install -d -o "$BENCH_USER1" -m 700 "$UXROOT_HOME1"
UROOT1=$UXROOT_HOME1/rootfs/$ARCH/root
use_user1
as_user "$XR" -q fetch "$ARCH" "${SRC[@]}" || die "xroot fetch as $BENCH_USER1 failed"
use_user
as_user "$XR" -q fetch "$ARCH" "${SRC[@]}" || die "xroot fetch as $BENCH_USER failed"
USER_MAP=subordinate

# ---------------------------------------------------------------- 1. launch
TRUE=/bin/true
PROJECT_DIR=$WORK/project
mkdir -p "$PROJECT_DIR"
L_ROOT_NAMES=("xroot" "xroot --binfmt host" "bare" "bwrap" "proot" "qemu alone (no sandbox)")
L_ROOT_CMDS=(
    "$XR run $ARCH -- $TRUE"
    "$XR run $ARCH --binfmt host -- $TRUE"
    "unshare -mpf chroot $ROOT $TRUE"
    "bwrap --bind $ROOT / --proc /proc --dev /dev --unshare-pid $TRUE"
    "proot -q qemu-$ARCH-static -r $ROOT $TRUE"
    "qemu-$ARCH-static -L $ROOT $ROOT/bin/busybox true"
)
# rootless with subordinate ids: xroot maps them (newuidmap/newgidmap), so
# the like-for-like bare way is unshare's --map-users/--map-groups=auto;
# plain `unshare -r` (one id) is measured too.
L_USER_NAMES=("xroot (rootless)" "bare (rootless)" "bare (rootless, subids)")
L_USER_CMDS=(
    "$XR run $ARCH -- $TRUE"
    "unshare -rmpf chroot $UROOT $TRUE"
    "unshare -rmpf --map-users=auto --map-groups=auto chroot $UROOT $TRUE"
)
# rootless without subordinate ids: one id mapped both ways
L_USER1_NAMES=("xroot (rootless, one id)" "bare (rootless, one id)")
L_USER1_CMDS=(
    "$XR run $ARCH -- $TRUE"
    "unshare -rmpf chroot $UROOT1 $TRUE"
)
# rotate: round r starts at way r, so no way is always first or last
rotated_args() { # rotated_args ROUND names... -- cmds...
    local r=$1; shift
    local -a names=() cmds=()
    while [ "$1" != -- ]; do names+=("$1"); shift; done; shift
    cmds=("$@")
    local n=${#names[@]} i j
    for ((i = 0; i < n; i++)); do
        j=$(((i + r) % n))
        printf '%s\0%s\0' "-n" "${names[$j]}"
    done
    for ((i = 0; i < n; i++)); do
        j=$(((i + r) % n))
        printf '%s\0' "${cmds[$j]}"
    done
}
say "1/5 launch: $ROUNDS rounds x $LAUNCH_RUNS runs of /bin/true, 5 ways as root + 3 rootless with subordinate ids + 2 rootless with one id + qemu alone"
for ((r = 0; r < ROUNDS; r++)); do
    mapfile -d '' -t A < <(rotated_args $r "${L_ROOT_NAMES[@]}" -- "${L_ROOT_CMDS[@]}")
    il launch "root-$r" --warmup 3 --runs "$LAUNCH_RUNS" "${A[@]}"
    mapfile -d '' -t A < <(rotated_args $r "${L_USER_NAMES[@]}" -- "${L_USER_CMDS[@]}")
    il_user launch "user-$r" --warmup 3 --runs "$LAUNCH_RUNS" "${A[@]}"
    use_user1
    mapfile -d '' -t A < <(rotated_args $r "${L_USER1_NAMES[@]}" -- "${L_USER1_CMDS[@]}")
    il_user launch "user1-$r" --warmup 3 --runs "$LAUNCH_RUNS" "${A[@]}"
    use_user
    # From a project directory, which `xroot run` binds into the guest at
    # the same path (creating the mount point, removed afterwards); the
    # bare way does not bind it. Informational (no target).
    (cd "$PROJECT_DIR" && il launch "cwd-$r" --warmup 3 --runs "$LAUNCH_RUNS" \
        -n "xroot (from a project directory)" "$XR run $ARCH -- $TRUE" \
        -n "bare (from a project directory)" "unshare -mpf chroot $ROOT $TRUE")
done

# ---------------------------------------------------------------- 2. exec-heavy
# 200 foreign processes: each iteration forks a subshell (echo) and execs
# busybox sha256sum, i.e. starts qemu once more.
SCRIPT='i=0; while [ $i -lt 200 ]; do echo $i | sha256sum >/dev/null; i=$((i+1)); done'
E_ROOT_NAMES=("xroot" "bare" "bwrap" "proot")
E_ROOT_CMDS=(
    "$XR run $ARCH -- /bin/sh -c '$SCRIPT'"
    "unshare -mpf chroot $ROOT /bin/sh -c '$SCRIPT'"
    "bwrap --bind $ROOT / --proc /proc --dev /dev --unshare-pid /bin/sh -c '$SCRIPT'"
    "proot -q qemu-$ARCH-static -r $ROOT /bin/sh -c '$SCRIPT'"
)
E_USER_NAMES=("xroot (rootless)" "bare (rootless)")
E_USER_CMDS=(
    "$XR run $ARCH -- /bin/sh -c '$SCRIPT'"
    "unshare -rmpf chroot $UROOT /bin/sh -c '$SCRIPT'"
)
say "2/5 exec-heavy: $EXEC_ROUNDS rounds x $EXEC_RUNS runs of 200 foreign processes, 4 ways (+ 1 rootless run of 2 ways per round; the longest part)"
for ((r = 0; r < EXEC_ROUNDS; r++)); do
    mapfile -d '' -t A < <(rotated_args $r "${E_ROOT_NAMES[@]}" -- "${E_ROOT_CMDS[@]}")
    il exec "root-$r" --warmup 0 --runs "$EXEC_RUNS" "${A[@]}"
    mapfile -d '' -t A < <(rotated_args $r "${E_USER_NAMES[@]}" -- "${E_USER_CMDS[@]}")
    il_user exec "user-$r" --warmup 0 --runs 1 "${A[@]}"
done

# ---------------------------------------------------------------- 3. fetch
cat >"$WORK/shell-fetch.sh" <<'EOF'
#!/bin/bash
# The shell way: download, check, unpack (three passes over the file).
set -euo pipefail
dest=$1 url=$2
f=${url##*/}
mkdir -p "$dest/root"
cd "$dest"
curl -fsS -o "$f" "$url"
curl -fsS -o "$f.sha256" "$url.sha256"
sha256sum -c --quiet "$f.sha256"
tar xzf "$f" -C root
EOF
FHOME=$WORK/fetch-home
SDIR=$WORK/shell-fetch
say "3/5 fetch: cold x $FETCH_RUNS (xroot vs curl+sha256sum+tar), warm x 30"
hf fetch cold --warmup 2 --runs "$FETCH_RUNS" \
    -n "xroot fetch (cold)" --prepare "rm -rf $FHOME" "env XROOT_HOME=$FHOME $XR -q fetch $ARCH --mirror $URL --branch $BRANCH" \
    -n "shell: curl + sha256sum -c + tar xzf" --prepare "rm -rf $SDIR" "bash $WORK/shell-fetch.sh $SDIR $URL/$BRANCH/releases/$ARCH/$TARBALL"
hf fetch warm --warmup 3 --runs 30 -n "xroot fetch (warm)" "$XR -q fetch $ARCH --mirror $URL --branch $BRANCH"
rm -rf "$FHOME" "$SDIR"

# ---------------------------------------------------------------- 4. scale
cat >"$WORK/conc.sh" <<'EOF'
#!/bin/bash
# conc.sh N CMD...: start N copies of CMD at once, wait for all; fail if any fails.
n=$1; shift
pids=()
for ((i = 0; i < n; i++)); do "$@" & pids+=($!); done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
exit $rc
EOF
F8HOME=$WORK/fetch8-home
say "4/5 scale: $SCALE_N concurrent launches x $SCALE_RUNS; eight-arch fetch x $FETCH8_RUNS"
for ((r = 0; r < 2; r++)); do
    mapfile -d '' -t A < <(rotated_args $r "xroot" "bare" "bwrap" "proot" -- \
        "bash $WORK/conc.sh $SCALE_N $XR run $ARCH -- $TRUE" \
        "bash $WORK/conc.sh $SCALE_N unshare -mpf chroot $ROOT $TRUE" \
        "bash $WORK/conc.sh $SCALE_N bwrap --bind $ROOT / --proc /proc --dev /dev --unshare-pid $TRUE" \
        "bash $WORK/conc.sh $SCALE_N proot -q qemu-$ARCH-static -r $ROOT $TRUE")
    hf scale "concurrent-$r" --warmup 1 --runs $(((SCALE_RUNS + 1) / 2)) "${A[@]}"
done
hf scale fetch8 --runs "$FETCH8_RUNS" \
    -n "xroot fetch, 8 arches in one command" --prepare "rm -rf $F8HOME" \
    "env XROOT_HOME=$F8HOME $XR -q fetch ${ALL_ARCHES[*]} --mirror $URL --branch $BRANCH" \
    -n "xroot fetch, 8 arches one after another" --prepare "rm -rf $F8HOME" \
    "env XROOT_HOME=$F8HOME bash -c 'for a in ${ALL_ARCHES[*]}; do $XR -q fetch \$a --mirror $URL --branch $BRANCH || exit 1; done'"
rm -rf "$F8HOME"

# ---------------------------------------------------------------- 5. memory
say "5/5 peak memory (GNU time maxrss; VmHWM of xroot's own processes during a run)"
RSS=$RAW/rss.tsv
: >"$RSS"
maxrss() { # maxrss KEY CMD...: peak RSS (KiB) of CMD's largest process
    local key=$1 f=$WORK/time.out; shift
    /usr/bin/time -o "$f" -f %M "$@" >/dev/null 2>&1 || die "measuring $key: $* failed"
    printf '%s\t%s\n' "$key" "$(tail -n1 "$f")" >>"$RSS"
}
for i in 1 2 3 4 5; do
    rm -rf "$FHOME"; maxrss fetch_cold env XROOT_HOME="$FHOME" "$XR" -q fetch "$ARCH" "${SRC[@]}"
    rm -rf "$SDIR"; maxrss shell_fetch bash "$WORK/shell-fetch.sh" "$SDIR" "$URL/$BRANCH/releases/$ARCH/$TARBALL"
    maxrss run_tree "$XR" run "$ARCH" -- "$TRUE"
    maxrss bare_tree unshare -mpf chroot "$ROOT" "$TRUE"
done
for i in 1 2 3; do
    rm -rf "$F8HOME"; maxrss fetch8 env XROOT_HOME="$F8HOME" "$XR" -q fetch "${ALL_ARCHES[@]}" "${SRC[@]}"
done
rm -rf "$FHOME" "$SDIR" "$F8HOME"
# /usr/bin/time reports the largest process of the tree, which for `run` is
# the guest's qemu. xroot's own two processes (the waiting parent and the
# guest's PID 1) are read from /proc while the guest sleeps.
vmhwm() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
for i in 1 2 3; do
    "$XR" run "$ARCH" -- /bin/sleep 1 &
    p=$!
    sleep 0.6
    init=$(cut -d' ' -f1 "/proc/$p/task/$p/children" 2>/dev/null || true)
    guest=$( [ -n "$init" ] && cut -d' ' -f1 "/proc/$init/task/$init/children" 2>/dev/null || true)
    printf 'run_xroot_parent\t%s\n' "$(vmhwm "$p")" >>"$RSS"
    [ -n "$init" ] && printf 'run_xroot_init\t%s\n' "$(vmhwm "$init")" >>"$RSS"
    [ -n "$guest" ] && printf 'run_guest_qemu\t%s\n' "$(vmhwm "$guest")" >>"$RSS"
    wait "$p" || die "xroot run -- /bin/sleep 1 failed"
done

# ---------------------------------------------------------------- phases
# Where xroot's own launch time goes: XROOT_TRACE=1 makes xroot print
# µs-since-start at each phase (builds without it print nothing: skipped).
TRACE_OUT=$(XROOT_TRACE=1 "$XR" run "$ARCH" -- "$TRUE" 2>&1 >/dev/null || true)
if grep -q 'trace:' <<<"$TRACE_OUT"; then
    say "phases: XROOT_TRACE=1, 30 runs each of private / host binfmt / rootless"
    for i in $(seq 30); do
        XROOT_TRACE=1 "$XR" run "$ARCH" -- "$TRUE" 2>>"$RAW/phases-private.txt"
        XROOT_TRACE=1 "$XR" run "$ARCH" --binfmt host -- "$TRUE" 2>>"$RAW/phases-host.txt"
        as_user env XROOT_TRACE=1 "$XR" run "$ARCH" -- "$TRUE" 2>>"$RAW/phases-rootless.txt"
    done
fi

# ---------------------------------------------------------------- report
T1=$(date +%s)
qemu_v=$(qemu-$ARCH-static --version | head -n1)
cat >"$RAW/meta.json" <<EOF
{
  "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "duration_s": $((T1 - T0)),
  "nproc": $(nproc),
  "cpu": "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)",
  "mem_total_kib": $(awk '/^MemTotal:/ {print $2}' /proc/meminfo),
  "kernel": "$(uname -r)",
  "os": "$(. /etc/os-release && echo "$PRETTY_NAME")",
  "qemu": "$qemu_v",
  "hyperfine": "$(hyperfine --version)",
  "bwrap": "$(bwrap --version)",
  "proot": "$(dpkg-query -W -f '${Version}' proot 2>/dev/null || echo unknown)",
  "util_linux": "$(unshare --version | awk '{print $NF}')",
  "xroot": "$("$XR" --version)",
  "xroot_binary": "${XROOT_SRC#"$REPO"/}",
  "xroot_binary_sha256": "$(sha256sum "$XR" | cut -c1-16)",
  "xroot_binary_mtime": "$(date -u -r "$XROOT_SRC" +%Y-%m-%dT%H:%M:%SZ)",
  "xroot_commit": "$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$REPO" diff --quiet HEAD -- src 2>/dev/null || echo '+dirty-src')",
  "loadavg_start": "$LOAD0",
  "loadavg_end": "$(cut -d' ' -f1-3 /proc/loadavg)",
  "host_handler_flags": "$HANDLER_FLAGS",
  "host_handler_added_by_bench": $([ "$ADDED_HANDLER" = 1 ] && echo true || echo false),
  "rootless_user_idmap": "$USER_MAP",
  "arch": "$ARCH",
  "alpine": "$BRANCH/$TARBALL",
  "cwd": "/",
  "config": {"launch_rounds": $ROUNDS, "launch_runs_per_round": $LAUNCH_RUNS, "exec_rounds": $EXEC_ROUNDS,
             "exec_runs_per_round": $EXEC_RUNS, "fetch_runs": $FETCH_RUNS, "scale_n": $SCALE_N,
             "scale_runs": $SCALE_RUNS, "fetch8_runs": $FETCH8_RUNS, "quick": $([ "$QUICK" = 1 ] && echo true || echo false)}
}
EOF
mkdir -p "$OUT"
rm -rf "$OUT/raw-latest"
cp -r "$RAW" "$OUT/raw-latest"
python3 "$REPO/bench/report.py" "$OUT/raw-latest" "$OUT"
say "done in $((T1 - T0)) s: $OUT/latest.md, $OUT/latest.json"
