#!/usr/bin/env bash
# Build a binary .deb of snapfs with nothing but cargo and dpkg-deb:
#
#     bash packaging/build-deb.sh          # -> dist/snapfs_<version>_<arch>.deb
#
# It stages the same files as packaging/debian/snapfs.install into a tree
# and packs it; no debhelper, no source package. The version comes from
# Cargo.toml. Install with: apt install ./dist/snapfs_*.deb
set -euo pipefail

cd "$(dirname "$0")/.."

for tool in cargo dpkg-deb dpkg; do
    command -v "$tool" >/dev/null || { echo "build-deb.sh: $tool not found" >&2; exit 1; }
done

version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
echo "==== cargo build --release (snapfs $version, $arch)"
cargo build --release --locked
bin="${CARGO_TARGET_DIR:-target}/release/snapfs"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/snapfs_${version}_${arch}

install -D -m 0755 "$bin" "$root/usr/bin/snapfs"
# The release profile keeps line tables for backtraces; the package does not
# need them.
if command -v strip >/dev/null; then strip --strip-debug "$root/usr/bin/snapfs"; fi
install -D -m 0755 packaging/mount.snapfs "$root/usr/sbin/mount.snapfs"
install -D -m 0644 packaging/default/snapfs "$root/etc/default/snapfs"
for unit in packaging/systemd/*.service packaging/systemd/*.timer; do
    install -D -m 0644 "$unit" "$root/usr/lib/systemd/system/$(basename "$unit")"
done
doc=$root/usr/share/doc/snapfs
install -D -m 0644 README.md "$doc/README.md"
install -D -m 0644 docs/FORMAT.md "$doc/FORMAT.md"
install -D -m 0644 packaging/fstab.example "$doc/fstab.example"
install -D -m 0644 packaging/debian/copyright "$doc/copyright"
gzip -9n -c packaging/debian/changelog > "$doc/changelog.gz"
chmod 0644 "$doc/changelog.gz"

mkdir -p "$root/DEBIAN"
# The maintainer script without debhelper's placeholder.
grep -v '^#DEBHELPER#$' packaging/debian/postinst > "$root/DEBIAN/postinst"
chmod 0755 "$root/DEBIAN/postinst"
echo /etc/default/snapfs > "$root/DEBIAN/conffiles"

installed_kb=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
# Description and metadata from the source package's control file.
description=$(sed -n '/^Description:/,$p' packaging/debian/control)
cat > "$root/DEBIAN/control" <<CONTROL
Package: snapfs
Version: $version
Architecture: $arch
Maintainer: $(sed -n 's/^Maintainer: //p' packaging/debian/control)
Installed-Size: $installed_kb
Depends: libc6, libgcc-s1, fuse3
Recommends: openssh-server
Section: admin
Priority: optional
$description
CONTROL

mkdir -p dist
out=dist/snapfs_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$out" >/dev/null
echo "==== $out"
dpkg-deb -I "$out"
dpkg-deb -c "$out"
