#!/usr/bin/env bash
# Builds a small local Debian mirror from REAL Debian data with apt itself
# (never with xroot), for tests/debian.rs and bench/debian.sh:
#
#   debmirror.sh DIR ARCH SUITE [PACKAGE...]
#
# apt runs with a private configuration (its own Dir::State, Dir::Cache,
# Dir::Etc and an empty dpkg status under DIR/apt), so the host's dpkg and
# apt state are not changed: no `dpkg --add-architecture` on the host.
# `apt-get update` fetches and verifies the archive's signed InRelease and
# the Packages index of ARCH; `apt-get install --download-only` with an
# empty status resolves and downloads the Priority: required and Essential
# packages plus PACKAGE... . The result is laid out as the archive lays it
# out:
#
#   DIR/mirror/dists/SUITE/InRelease                    (Debian's own signature)
#   DIR/mirror/dists/SUITE/main/binary-ARCH/Packages    (verified by the InRelease)
#   DIR/mirror/pool/main/...                            (the .debs, at their Filename)
#
# DIR/complete marks a finished mirror; a second call with it present does
# nothing (the tests cache DIR under target/).
set -euo pipefail
dir=$1 arch=$2 suite=$3
shift 3
uri=${DEBMIRROR_URI:-http://deb.debian.org/debian}
keyring=${DEBMIRROR_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}
[ -e "$dir/complete" ] && exit 0
rm -rf "$dir"
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
a=$dir/apt
mkdir -p "$a/etc/apt.conf.d" "$a/etc/preferences.d" "$a/etc/sources.list.d" \
    "$a/state/lists/partial" "$a/cache/archives/partial" "$a/log"
: > "$a/status"
echo "deb [arch=$arch signed-by=$keyring] $uri $suite main" > "$a/etc/sources.list"
# APT_CONFIG: the host's /etc/apt/apt.conf.d is not read either (some
# images store lists lz4-compressed or add DEP-11 targets there).
cat > "$a/apt.conf" <<CONF
Dir::Etc "$a/etc";
Dir::State "$a/state";
Dir::Cache "$a/cache";
Dir::State::status "$a/status";
Dir::Log "$a/log";
APT::Architecture "$arch";
APT::Architectures { "$arch"; };
Acquire::Languages "none";
Acquire::GzipIndexes "false";
Debug::NoLocking "true";
APT::Sandbox::User "root";
CONF
export APT_CONFIG=$a/apt.conf
apt=(apt-get -q)
"${apt[@]}" update >&2
lists=$a/state/lists
inrelease=$(ls "$lists"/*_dists_"${suite}"_InRelease)
packages=$(ls "$lists"/*_dists_"${suite}"_main_binary-"${arch}"_Packages)
# The base set, as mmdebstrap's minbase variant picks it.
mapfile -t base < <(awk -v RS= '/\nPriority: required/ || /\nEssential: yes/ {
    match($0, /^Package: [^\n]+/); print substr($0, 10, RLENGTH - 9) }' "$packages" | sort -u)
"${apt[@]}" install -y --download-only --no-install-recommends "${base[@]}" "$@" >&2
m=$dir/mirror
mkdir -p "$m/dists/$suite/main/binary-$arch"
cp "$inrelease" "$m/dists/$suite/InRelease"
cp "$packages" "$m/dists/$suite/main/binary-$arch/Packages"
# Each .deb goes where the index's Filename says (found by its basename:
# the pool name has no epoch, apt's cache name has it as `N%3a`).
declare -A where
while read -r f; do where[${f##*/}]=$f; done < <(sed -n 's/^Filename: //p' "$packages")
for deb in "$a"/cache/archives/*.deb; do
    b=${deb##*/}
    b=$(sed -E 's/_[0-9]+%3a/_/' <<<"$b")
    f=${where[$b]:?"$b is not in the Packages index"}
    mkdir -p "$m/$(dirname "$f")"
    mv "$deb" "$m/$f"
done
touch "$dir/complete"
