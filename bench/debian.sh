#!/usr/bin/env bash
# bench/debian.sh: `xroot fetch ARCH --source debian` against mmdebstrap
# for the same package set (issue #15).
#
#   sudo bash bench/debian.sh [ARCH] [VARIANT]      # default: s390x minbase
#
# Both bootstrap Debian 12 for a foreign ARCH from the same local mirror,
# which tests/common/debmirror.sh builds from real Debian data with apt
# (cached in target/debmirror/) and python3's http.server serves on
# 127.0.0.1. Both verify the same signed InRelease with Debian's keyring,
# both configure under qemu-user.
#
# mmdebstrap needs a binfmt_misc handler for ARCH. To leave the host's
# handlers alone, it runs in a new user+mount+pid namespace mapping ids
# 0..65535 onto themselves (bench/userns-root.py; the identity map xroot's
# sandbox uses for root too) with a private binfmt_misc instance (Linux
# 6.7+) where qemu-ARCH-static is registered with the F flag, in
# mmdebstrap's root mode (device nodes and sysfs skipped: a user namespace
# cannot make or mount them; xroot binds them at run time the same way).
#
# Needs root, mmdebstrap and arch-test (mmdebstrap's check for foreign
# architectures), python3, bc, qemu-user-static.
#
# Timed: xroot cold (empty store: downloads from the local mirror too),
# xroot with the .deb cache warm, mmdebstrap (its own apt downloads each
# time). One run of each (the second stage takes minutes); results go to
# bench/results/debian-latest.md.
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:-s390x} variant=${2:-minbase}
case $arch in
    s390x) xarch=s390x qarch=s390x ;;
    arm64) xarch=aarch64 qarch=aarch64 ;;
    mips64el) xarch=mips64el qarch=mips64el ;;
    *) echo "bench/debian.sh: unsupported arch $arch" >&2; exit 2 ;;
esac
xroot=${XROOT:-target/x86_64-unknown-linux-gnu/release/xroot}
[ -x "$xroot" ] || { echo "build first: cargo build --release ($xroot missing)" >&2; exit 2; }
extra=()
[ "$variant" = buildd ] && extra=(build-essential)
key=$( [ ${#extra[@]} -gt 0 ] && echo build-essential || echo base )
dir=target/debmirror/$arch-bookworm-$key
bash tests/common/debmirror.sh "$dir" "$arch" bookworm "${extra[@]}"
work=$(mktemp -d /tmp/xroot-bench-debian.XXXXXX)
port=$((20000 + RANDOM % 20000))
python3 -m http.server "$port" --bind 127.0.0.1 --directory "$dir/mirror" >/dev/null 2>&1 &
server=$!
cleanup() { kill "$server" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
sleep 1
url=http://127.0.0.1:$port
now() { date +%s.%N; }

t0=$(now)
XROOT_HOME=$work/xh "$xroot" -q fetch "$xarch" --source debian --mirror "$url" --variant "$variant"
t1=$(now)
echo "bench: xroot cold: $(echo "$t1 - $t0" | bc) s" >&2
n_x=$(XROOT_HOME=$work/xh "$xroot" run "$xarch" -- dpkg-query -W | wc -l)
XROOT_HOME=$work/xh "$xroot" rm "$xarch" >/dev/null
t2=$(now)
XROOT_HOME=$work/xh "$xroot" -q fetch "$xarch" --source debian --mirror "$url" --variant "$variant"
t3=$(now)
echo "bench: xroot warm .deb cache: $(echo "$t3 - $t2" | bc) s" >&2

qemu=$(command -v "qemu-$qarch-static")
magic=$(sed -n 's/^:qemu-[^:]*:M::\([^:]*\):\([^:]*\):.*/\1:\2/p' "/usr/lib/binfmt.d/qemu-$qarch.conf")
t4=$(now)
python3 bench/userns-root.py "
    set -e
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    printf '%s' ':qemu-$qarch:M::$magic:$qemu:F' > /proc/sys/fs/binfmt_misc/register
    mmdebstrap --quiet --mode=root --variant=$variant --architectures=$arch \
        ${extra:+--include=${extra[*]}} \
        --skip=output/dev,chroot/mount/dev,chroot/mount/sys \
        --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
        bookworm $work/mm 'deb $url bookworm main'
"
t5=$(now)
n_m=$(grep -c '^Package:' "$work/mm/var/lib/dpkg/status")

out=bench/results/debian-latest.md
mkdir -p bench/results
{
    echo "# xroot vs mmdebstrap: Debian 12 $arch, variant $variant ($(date -u +%FT%TZ))"
    echo
    echo "Same local mirror (real Debian data), same signed InRelease; $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    echo "| way | seconds | packages |"
    echo "|---|---|---|"
    printf '| xroot, cold store | %.1f | %s |\n' "$(echo "$t1 - $t0" | bc)" "$n_x"
    printf '| xroot, .deb cache warm | %.1f | %s |\n' "$(echo "$t3 - $t2" | bc)" "$n_x"
    printf '| mmdebstrap (root mode, identity-mapped user namespace, private binfmt_misc) | %.1f | %s |\n' "$(echo "$t5 - $t4" | bc)" "$n_m"
} | tee "$out"
