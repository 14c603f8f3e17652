#!/usr/bin/env bash
# Build a binary .deb of snapfs with cargo and dpkg's own tools, no
# debhelper and no source package:
#
#     bash packaging/build-deb.sh [OUTDIR]     # -> OUTDIR (dist/)/snapfs_<version>_<arch>.deb
#
# It stages what packaging/debian/snapfs.install names, plus the man pages
# and shell completions that the freshly built code generates from its own
# command-line definition (examples/generate.rs), and packs the tree. The
# version comes from Cargo.toml. Install with: apt install ./dist/snapfs_*.deb
# Check with: lintian --fail-on error dist/snapfs_*.deb (tests/package.rs).
set -euo pipefail

cd "$(dirname "$0")/.."
out_dir=${1:-dist}

for tool in cargo dpkg-deb dpkg dpkg-shlibdeps strip gzip; do
    command -v "$tool" >/dev/null || {
        echo "build-deb.sh: $tool not found (dpkg-shlibdeps is in dpkg-dev, strip in binutils)" >&2
        exit 1
    }
done

version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
echo "==== cargo build --release (snapfs $version, $arch)"
cargo build --release --locked --bin snapfs --example generate
release="${CARGO_TARGET_DIR:-target}/release"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/snapfs_${version}_${arch}

install -D -m 0755 "$release/snapfs" "$root/usr/bin/snapfs"
# The release profile keeps line tables for backtraces; the package keeps
# neither them nor the symbol table (as dh_strip does).
strip --remove-section=.comment --remove-section=.note --strip-unneeded "$root/usr/bin/snapfs"
install -D -m 0755 packaging/mount.snapfs "$root/usr/sbin/mount.snapfs"
install -D -m 0644 packaging/default/snapfs "$root/etc/default/snapfs"
install -D -m 0644 packaging/snapfs.toml "$root/etc/snapfs/snapfs.toml"
for unit in packaging/systemd/*.service packaging/systemd/*.timer; do
    install -D -m 0644 "$unit" "$root/usr/lib/systemd/system/$(basename "$unit")"
done

# Man pages and completions from the binary's own clap definition.
"$release/examples/generate" man "$stage" >/dev/null
mkdir -p "$root/usr/share/man/man1" "$root/usr/share/man/man8"
for page in "$stage"/*.1; do
    gzip -9n -c "$page" > "$root/usr/share/man/man1/$(basename "$page").gz"
done
gzip -9n -c packaging/mount.snapfs.8 > "$root/usr/share/man/man8/mount.snapfs.8.gz"
"$release/examples/generate" completions "$stage"
install -D -m 0644 "$stage/snapfs.bash" "$root/usr/share/bash-completion/completions/snapfs"
install -D -m 0644 "$stage/_snapfs" "$root/usr/share/zsh/vendor-completions/_snapfs"
install -D -m 0644 "$stage/snapfs.fish" "$root/usr/share/fish/vendor_completions.d/snapfs.fish"

doc=$root/usr/share/doc/snapfs
# Compressed, as Debian policy wants documentation over 4 KiB (and as
# dh_compress does in the debhelper build).
mkdir -p "$doc"
gzip -9n -c README.md > "$doc/README.md.gz"
gzip -9n -c docs/FORMAT.md > "$doc/FORMAT.md.gz"
install -D -m 0644 packaging/fstab.example "$doc/fstab.example"
# Where `snapfs run` points when /etc/snapfs/snapfs.toml is missing.
install -D -m 0644 packaging/snapfs.toml "$doc/snapfs.toml"
install -D -m 0644 packaging/debian/copyright "$doc/copyright"
# A native package (no Debian revision): its changelog is changelog.gz.
gzip -9n -c packaging/debian/changelog > "$doc/changelog.gz"
chmod -R u=rwX,go=rX "$root/usr/share"

mkdir -p "$root/DEBIAN"
# The maintainer scripts without debhelper's placeholder: each does its
# systemd part itself (see packaging/debian/postinst).
for script in postinst prerm postrm; do
    grep -v '^#DEBHELPER#$' "packaging/debian/$script" > "$root/DEBIAN/$script"
    chmod 0755 "$root/DEBIAN/$script"
done
printf '%s\n' /etc/default/snapfs /etc/snapfs/snapfs.toml > "$root/DEBIAN/conffiles"
# Checksums for debsums and dpkg --verify; conffiles have theirs in dpkg's
# status file (as dh_md5sums does).
(cd "$root" && find usr -type f -print0 | LC_ALL=C sort -z | xargs -0 md5sum) > "$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums"

# Depends from the libraries the binary links, with the versions their
# symbols need: dpkg-shlibdeps, as dh_shlibdeps runs it. It wants a
# debian/control beside it. (ldd plus dpkg -S would name the packages but
# not the minimum versions.)
mkdir -p "$stage/debian"
cp packaging/debian/control "$stage/debian/control"
shlibs=$(cd "$stage" && dpkg-shlibdeps -O "$root/usr/bin/snapfs" | sed -n 's/^shlibs:Depends=//p')
[[ -n $shlibs ]] || { echo "build-deb.sh: dpkg-shlibdeps found no libraries" >&2; exit 1; }

installed_kb=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
# Description and metadata from the source package's control file.
description=$(sed -n '/^Description:/,$p' packaging/debian/control)
cat > "$root/DEBIAN/control" <<CONTROL
Package: snapfs
Version: $version
Architecture: $arch
Maintainer: $(sed -n 's/^Maintainer: //p' packaging/debian/control)
Installed-Size: $installed_kb
Depends: $shlibs, fuse3
Recommends: openssh-server
Section: admin
Priority: optional
$description
CONTROL

mkdir -p "$out_dir"
out=$out_dir/snapfs_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$out" >/dev/null
echo "==== $out"
dpkg-deb -I "$out"
dpkg-deb -c "$out"
