#!/usr/bin/env bash
# Builds the root file system of the wgmesh image's final stage without
# Docker, from the Debian packages that stage consists of:
#   FROM debian:bookworm-slim    = Debian's "minbase" set: every package of
#                                  Priority required (apt among them), as
#                                  debootstrap --variant=minbase and the
#                                  official image take it, slimmed like the
#                                  official image (no docs, man, locales)
#   apt-get install --no-install-recommends iptables iproute2 wireguard-tools
# resolved together by apt against an empty package database, downloaded
# with apt-get (`install --download-only`), unpacked with dpkg-deb and then
# installed by the image's own dpkg in a chroot (maintainer scripts run, so
# update-alternatives knows iptables-nft/-legacy, as in the real image).
#
# The result is one layer tar, cached outside the clone keyed by the exact
# package versions (the .deb file names):
#   $WGMESH_CACHE/wgmesh-image/rootfs-<key>.tar   (printed on stdout)
# A second run with the same versions only asks apt which versions they are.
# Needs root (chroot, file ownership) and Debian's apt/dpkg.
set -euo pipefail

CACHE=${WGMESH_CACHE:-$HOME/.cache/wgmesh}
OUT=$CACHE/wgmesh-image
# The Dockerfile's final stage installs exactly these (keep in step with it;
# deploy's tests compare them).
IMAGE_PACKAGES=(iptables iproute2 wireguard-tools)
# Bump when this script changes what it produces from the same packages.
RECIPE=1
mkdir -p "$OUT"

exec 9>"$OUT/.build.lock"
flock 9

state=$OUT/apt-state
mkdir -p "$state/debs/partial" "$state/resolve/partial"
: >"$state/status" # empty database: apt resolves the whole image, not this machine's delta
APT=(apt-get -q -y -o "Dir::State::status=$state/status" -o "Dir::Cache::archives=$state/debs"
	-o Debug::NoLocking=1 -o APT::Install-Recommends=false)

required() {
	apt-cache dumpavail | awk '/^Package:/{p=$2} /^Priority: required/{print p}' | sort -u
}

# debootstrap picks usr-is-merged (its own merged /usr) where apt alone
# would pick the usrmerge converter, which pulls perl.
resolve() {
	local req
	req=$(required)
	[ -n "$req" ] || return 1
	# shellcheck disable=SC2086
	# An archive dir of its own that stays empty: --print-uris leaves out
	# what is already downloaded.
	"${APT[@]}" -o "Dir::Cache::archives=$state/resolve" --print-uris install $req usr-is-merged "${IMAGE_PACKAGES[@]}" 2>/dev/null |
		awk -F"'" '/^.http/{split($3, f, " "); print f[1]}' | awk '{print $1}' | sort
}
debs=$(resolve || true)
if [ -z "$debs" ]; then
	# A machine whose package lists were never fetched (apt-get update).
	apt-get update -qq >&2
	debs=$(resolve)
fi
key=$( { echo "recipe $RECIPE"; echo "$debs"; } | sha256sum | cut -c1-16)
tarball=$OUT/rootfs-$key.tar
if [ -f "$tarball" ]; then
	echo "$tarball"
	exit 0
fi
echo "build-wgmesh-rootfs: $(echo "$debs" | wc -l) packages -> $tarball" >&2

# shellcheck disable=SC2046
"${APT[@]}" install --download-only $(required) usr-is-merged "${IMAGE_PACKAGES[@]}" >&2
files=()
while read -r f; do files+=("$state/debs/$f"); done <<<"$debs"

root=$(mktemp -d "$OUT/rootfs.XXXXXX")
trap 'rm -rf "$root"' EXIT
# Merged /usr, as debootstrap lays out bookworm.
mkdir -p "$root/usr/bin" "$root/usr/sbin" "$root/usr/lib" "$root/usr/lib64"
for d in bin sbin lib lib64; do ln -s "usr/$d" "$root/$d"; done
# Stage 1 (debootstrap's): unpack every package so that the chroot has a
# shell, libc and dpkg.
for f in "${files[@]}"; do
	dpkg-deb --fsys-tarfile "$f" | tar -x --keep-directory-symlink -C "$root"
done
# The official slim image's dpkg exclusions (debuerreotype-slimify).
mkdir -p "$root/etc/dpkg/dpkg.cfg.d"
cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
EOF
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/tmp/debs"
: >"$root/var/lib/dpkg/status"
: >"$root/var/lib/dpkg/available"
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
cp "${files[@]}" "$root/tmp/debs/"
# Stage 2: the image's dpkg installs every package for real (database,
# maintainer scripts, alternatives). A private mount namespace holds the
# chroot's /proc, gone when it ends.
unshare --mount --propagation private sh -ec '
	mount -t proc proc "$1/proc"
	export DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin
	chroot "$1" sh -c "dpkg --force-depends --force-unsafe-io --unpack /tmp/debs/*.deb" >/dev/null
	chroot "$1" dpkg --force-depends --force-unsafe-io --configure --pending >/dev/null
	umount "$1/proc"
' sh "$root" >&2
rm -rf "$root/tmp/debs" "$root/usr/sbin/policy-rc.d"
# What the official image and the Dockerfile's `rm -rf /var/lib/apt/lists/*` leave out.
find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
rm -rf "$root"/usr/share/{info,linda,locale,man,groff}/* "$root"/usr/share/lintian/overrides/* \
	"$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
	"$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old "$root"/var/log/*.log "$root"/var/log/apt/*
# Every file owned by root with a fixed time: the same packages give the
# same layer, byte for byte.
tar --sort=name --numeric-owner --owner=0 --group=0 --mtime=@0 -C "$root" -cf "$tarball.tmp" .
mv "$tarball.tmp" "$tarball"
echo "$tarball"
