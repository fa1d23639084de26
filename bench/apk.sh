#!/usr/bin/env bash
# bench/apk.sh: what building a system from apk repositories costs (issue #14).
#
#   1. `xroot fetch aarch64 --source apk` (native bootstrap of alpine-base:
#      signed index, 15 packages verified, unpacked, scripts run under qemu)
#      against `--source alpine` (the release tarball), cold store; and the
#      bootstrap again with the packages in the store's cache;
#   2. `--packages` natively (`xroot run aarch64 --packages bench-payload
#      -- true`) against the guest's own apk under emulation (`xroot run
#      aarch64 -- apk add bench-payload`), on the same release tree.
#
# The repository is the tests' (tests/common/apkrepo.rs: the v3.20.3
# minirootfs split into its real packages, signed with a test key) plus a
# 7 MB package of real aarch64 files, served by python3's http.server on
# 127.0.0.1. Needs root (sandbox), qemu-user-static, hyperfine, python3.
# Usage: sudo bash bench/apk.sh [RUNS]   (default 5 runs each)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
ARCH=aarch64
command -v hyperfine >/dev/null || { echo "bench/apk.sh: needs hyperfine" >&2; exit 1; }
cargo build --release -q
XROOT=
for f in target/*/release/xroot target/release/xroot; do
    [ -x "$f" ] && { XROOT=$PWD/$f; break; }
done
[ -n "$XROOT" ] || { echo "bench/apk.sh: no release build of xroot" >&2; exit 1; }
WORK=$(mktemp -d /tmp/xroot-bench-apk.XXXXXX)
SERVER=
cleanup() {
    [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "== building the repository"
# (the test profile: only the repository is made there, nothing is timed)
XROOT_BENCH_REPO=$WORK/mirror cargo test -q --test apk_repo make_bench_repository -- --ignored --exact >/dev/null 2>&1
KEY=$WORK/mirror/keys/xroot-test-0001.rsa.pub
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server --bind 127.0.0.1 "$PORT" --directory "$WORK/mirror" >/dev/null 2>&1 &
SERVER=$!
URL=http://127.0.0.1:$PORT
for _ in $(seq 50); do curl -sf "$URL/latest-stable/main/$ARCH/APKINDEX.tar.gz" -o /dev/null && break; sleep 0.1; done

H=$WORK/home
export XROOT_MIRROR=$URL
x() { XROOT_HOME=$H "$XROOT" --quiet "$@"; }

echo "== 1. bootstrap vs release tarball (cold store)"
hyperfine --runs "$RUNS" --export-json "$WORK/fetch.json" \
    --prepare "rm -rf $H" \
    --prepare "rm -rf $H" \
    --prepare "rm -rf $H/rootfs" \
    -n release-tarball "XROOT_HOME=$H $XROOT --quiet fetch $ARCH --source alpine" \
    -n apk-bootstrap-cold "XROOT_HOME=$H $XROOT --quiet fetch $ARCH --source apk --key $KEY" \
    -n apk-bootstrap-cached "XROOT_HOME=$H $XROOT --quiet fetch $ARCH --source apk --key $KEY"

echo "== 2. --packages: native vs the guest's apk under emulation"
rm -rf "$H"
x fetch "$ARCH" --source alpine
hyperfine --runs "$RUNS" --export-json "$WORK/packages.json" \
    --prepare "XROOT_HOME=$H $XROOT --quiet reset $ARCH; rm -rf $H/cache/apk" \
    -n native-packages "XROOT_HOME=$H $XROOT --quiet run $ARCH --packages bench-payload --key $KEY -- true" \
    -n emulated-apk-add "XROOT_HOME=$H $XROOT --quiet run $ARCH --ro-bind $(dirname "$KEY"):/xroot-keys -- apk add --quiet --no-progress --keys-dir /xroot-keys --repositories-file /dev/null -X $URL/v3.20/main bench-payload"

python3 - "$WORK/fetch.json" "$WORK/packages.json" <<'PY'
import json, sys, statistics
rows = {}
for f in sys.argv[1:]:
    for r in json.load(open(f))["results"]:
        rows[r["command"]] = r
print("\n| what | median s | min s | max s |\n|---|---|---|---|")
for n, r in rows.items():
    print(f"| {n} | {statistics.median(r['times']):.3f} | {min(r['times']):.3f} | {max(r['times']):.3f} |")
m = lambda n: statistics.median(rows[n]["times"])
print(f"\nbootstrap / release tarball: cold {m('apk-bootstrap-cold')/m('release-tarball'):.2f}, cached {m('apk-bootstrap-cached')/m('release-tarball'):.2f}")
print(f"emulated apk add / native --packages: {m('emulated-apk-add')/m('native-packages'):.2f}x")
PY
