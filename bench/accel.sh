#!/usr/bin/env bash
# Issue #16: zlib's ./configure && make -j2 && make test in a Debian 12
# s390x tree, four ways, interleaved (each round runs every way once, in a
# new random order, on a fresh copy of the source):
#
#   native   the host's own gcc, no guest at all (the physical limit)
#   bare     unshare + chroot, qemu through binfmt_misc (the system's qemu)
#   xroot    xroot run s390x --rootfs TREE
#   accel    xroot run s390x --rootfs TREE --accel=stable-updates
#
# Then it checks that the xroot and accel builds made the same objects
# (every byte outside .comment) and writes medians and ratios to
# bench/results/accel-latest.md.
#
#   sudo bash bench/accel.sh [--rounds N] [--tree DIR] [--src DIR]
#
# The tree and the zlib source default to what tests/accel.rs made and
# cached (run `cargo test --test accel` once first). Needs root (unshare,
# chroot) and a release build of xroot (cargo build --release).
#
# The bare way needs a binfmt handler for s390x. Instead of registering one
# on the host (other users of the machine would see it), it mounts a
# binfmt_misc instance private to a new user namespace (Linux 6.7+), as
# xroot does, and registers qemu-s390x-static there: nothing on the host
# changes, and the handler vanishes with the namespace. Its flags (F, no
# prelinked copy) are what a hand-made `unshare chroot` setup has.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ROUNDS=5
TREE=
SRC=
while [ $# -gt 0 ]; do
    case $1 in
        --rounds) ROUNDS=$2; shift 2 ;;
        --tree) TREE=$2; shift 2 ;;
        --src) SRC=$2; shift 2 ;;
        *) echo "usage: $0 [--rounds N] [--tree DIR] [--src DIR]" >&2; exit 2 ;;
    esac
done
die() { echo "bench/accel.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (unshare + chroot for the bare way)"
TMPD=$(ls -d target/*/tmp/accel 2>/dev/null | head -n1 || true)
[ -n "$TREE" ] || TREE=$(ls -d "$TMPD"/debian-*/tree 2>/dev/null | head -n1 || true)
[ -n "$SRC" ] || SRC=$(ls -d "$TMPD"/zlib-source/zlib-*/ 2>/dev/null | head -n1 || true)
[ -d "$TREE" ] || die "no Debian s390x tree: run 'cargo test --test accel' once, or give --tree DIR"
[ -d "$SRC" ] || die "no zlib source: run 'cargo test --test accel' once, or give --src DIR"
XR=$(ls target/*/release/xroot 2>/dev/null | head -n1 || true)
[ -x "$XR" ] || die "no release build: cargo build --release"
QEMU=$(command -v qemu-s390x-static) || die "qemu-s390x-static missing (apt-get install qemu-user-static)"
TREE=$(realpath "$TREE"); SRC=$(realpath "$SRC"); XR=$(realpath "$XR")

WORK=$(mktemp -d /tmp/xroot-bench-accel.XXXXXX)
export XROOT_HOME=$WORK/home
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
BUILD='./configure >/dev/null && make -j2 >/dev/null && make test >/dev/null'
# s390x's ELF magic and mask, as in rootfs-specs/s390x.toml.
MAGIC='\x7fELF\x02\x02\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x16'
MASK='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff'

run_way() { # WAY DIR
    local way=$1 dir=$2 rc=
    case $way in
        native) (cd "$dir" && sh -c "$BUILD") ;;
        bare)
            local name; name=$(basename "$dir")
            mkdir "$TREE/tmp/$name"
            env MAGIC="$MAGIC" MASK="$MASK" QEMU="$QEMU" TREE="$TREE" DIR="$dir" NAME="$name" BUILD="$BUILD" \
                unshare --user --map-root-user --mount --pid --fork sh -c '
                set -e
                mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
                printf ":qemu-s390x:M::%s:%s:%s:F" "$MAGIC" "$MASK" "$QEMU" > /proc/sys/fs/binfmt_misc/register
                mount --rbind /dev "$TREE/dev"
                mount -t proc proc "$TREE/proc"
                mount --bind "$DIR" "$TREE/tmp/$NAME"
                exec chroot "$TREE" sh -c "cd /tmp/$NAME && $BUILD"' || rc=$?
            rmdir "$TREE/tmp/$name"
            return "${rc:-0}" ;;
        xroot) (cd "$dir" && "$XR" -q run s390x --rootfs "$TREE" -- sh -c "$BUILD") ;;
        accel) (cd "$dir" && "$XR" -q run s390x --rootfs "$TREE" --accel=stable-updates -- sh -c "$BUILD") ;;
    esac
}

WAYS=(native bare xroot accel)
: > "$WORK/times"
echo "== warm-up (one accel build: the native directory is made once)"
cp -a --no-preserve=ownership "$SRC" "$WORK/warm"; run_way accel "$WORK/warm"; rm -rf "$WORK/warm"
for r in $(seq 1 "$ROUNDS"); do
    for way in $(printf '%s\n' "${WAYS[@]}" | shuf); do
        d=$WORK/r$r-$way
        # Owned by root: the bare way's user namespace maps no other id.
        cp -a --no-preserve=ownership "$SRC" "$d"
        t0=$(date +%s.%N)
        run_way "$way" "$d" || die "round $r: the $way build failed"
        t1=$(date +%s.%N)
        echo "$way $(echo "$t1 - $t0" | bc)" | tee -a "$WORK/times"
        [ "$way" = xroot ] || [ "$way" = accel ] || rm -rf "$d"
    done
    # Same objects from xroot and accel, every byte outside .comment.
    for o in $(cd "$WORK/r$r-xroot" && find . -name '*.o' | sort); do
        s390x-linux-gnu-objcopy -R .comment "$WORK/r$r-xroot/$o" "$WORK/a.o"
        s390x-linux-gnu-objcopy -R .comment "$WORK/r$r-accel/$o" "$WORK/b.o"
        cmp -s "$WORK/a.o" "$WORK/b.o" || die "round $r: $o differs between xroot and accel"
    done
    rm -rf "$WORK/r$r-xroot" "$WORK/r$r-accel"
done

mkdir -p bench/results
python3 - "$WORK/times" "$ROUNDS" "$(uptime)" > bench/results/accel-latest.md <<'EOF'
import statistics, sys
times = {}
for line in open(sys.argv[1]):
    w, t = line.split()
    times.setdefault(w, []).append(float(t))
med = {w: statistics.median(v) for w, v in times.items()}
print("# zlib configure + make -j2 + make test, Debian 12 s390x tree (bench/accel.sh)\n")
print(f"{sys.argv[2]} interleaved rounds; medians; machine: {sys.argv[3].strip()}\n")
print("| way | median s | min s | max s | / native | bare / way |")
print("|---|---|---|---|---|---|")
for w in ["native", "bare", "xroot", "accel"]:
    v = times[w]
    print(f"| {w} | {med[w]:.2f} | {min(v):.2f} | {max(v):.2f} | {med[w]/med['native']:.2f} | {med['bare']/med[w]:.2f} |")
print("\nObjects of the xroot and accel builds: identical outside .comment in every round.")
EOF
cat bench/results/accel-latest.md
