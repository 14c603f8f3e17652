#!/usr/bin/env bash
# snapfs copy of DAYS daily snapshots (default 30) of a SIZE_MB tree (3 % of
# it new each day) into a fresh repository: folder to folder, and folder to
# S3 (a throwaway `weed mini` on 127.0.0.1, when `weed` is installed: see
# tests/run.sh), each beside a baseline that copies the same repository's
# files without looking into them (`cp -a`; `rclone copy` to the same
# bucket when rclone is installed; AWS_CA_BUNDLE, if set, is hidden from
# rclone 1.60, which refuses it over plain http). Then a rerun, which finds
# nothing to do.
#
#   SIZE_MB=200 DAYS=30 bash benches/copy.sh
set -euo pipefail

SIZE_MB=${SIZE_MB:-200}
DAYS=${DAYS:-30}
cd "$(dirname "$0")/.."
cargo build --release -j"${CARGO_BUILD_JOBS:-1}" --bin snapfs >/dev/null
SNAPFS=$PWD/target/release/snapfs
WORK=$(mktemp -d /tmp/snapfs-copy-bench.XXXXXX)
WEED_PID=
cleanup() {
    [[ -n $WEED_PID ]] && kill "$WEED_PID" 2>/dev/null && wait "$WEED_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

seconds() { # command... -> elapsed seconds on stdout, its output discarded
    local start end
    start=$(date +%s.%N)
    "$@" >/dev/null
    end=$(date +%s.%N)
    awk "BEGIN { printf \"%.2f\", $end - $start }"
}

echo "building $DAYS days of a ${SIZE_MB} MiB tree in $WORK"
src=$WORK/home
mkdir -p "$src/text" "$src/data"
files=$((SIZE_MB / 2))
for i in $(seq 1 "$files"); do
    head -c 1048576 /dev/urandom >"$src/data/f$i"
    head -c 786432 /dev/urandom | base64 >"$src/text/t$i"
done
export SNAPFS_REPO=$WORK/local
$SNAPFS init >/dev/null
daily_kib=$((SIZE_MB * 1024 * 3 / 100))
for day in $(seq 1 "$DAYS"); do
    head -c $((daily_kib * 1024)) /dev/urandom >"$src/data/day-$day"
    for i in 1 2 3; do echo "day $day" >>"$src/text/t$i"; done
    $SNAPFS backup --account web --time "$(date -d "2026-10-01 +$day days" '+%Y-%m-%d 02:00:00')" \
        "$src" >/dev/null
done
unset SNAPFS_REPO
repo_mib=$(du -sm "$WORK/local" | cut -f1)
echo "source repository: $repo_mib MiB, $($SNAPFS --repo "$WORK/local" snapshots | tail -1)"

echo
echo "folder to folder"
chunks=512KiB/1MiB/8MiB
$SNAPFS --repo "$WORK/offsite" init --chunk-sizes $chunks >/dev/null
sync
echo "  snapfs copy:        $(seconds $SNAPFS copy --from "$WORK/local" --to "$WORK/offsite") s"
echo "  rerun (nothing new): $(seconds $SNAPFS copy --from "$WORK/local" --to "$WORK/offsite") s"
sync
echo "  cp -a (baseline):    $(seconds cp -a "$WORK/local" "$WORK/cp-copy") s"

WEED=$(command -v weed || echo /opt/snapfs-test/venv/bin/weed)
if [[ ! -x $WEED ]]; then
    echo "no weed: folder to S3 skipped"
    exit 0
fi
echo
echo "folder to S3 (weed mini on 127.0.0.1)"
mkdir -p "$WORK/weed"
cat >"$WORK/weed/s3.json" <<'EOF'
{"identities":[{"name":"bench","credentials":[{"accessKey":"bench","secretKey":"bench-secret"}],"actions":["Admin","Read","List","Tagging","Write"]}]}
EOF
port=28333
(cd "$WORK/weed" && exec "$WEED" mini -dir="$WORK/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -s3.port=$port -s3.port.iceberg=0 -s3.port.lance=0 -webdav=false -admin.ui=false \
    -s3.config="$WORK/weed/s3.json" -bucket=bench >"$WORK/weed/log" 2>&1) &
WEED_PID=$!
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret
for _ in $(seq 1 100); do
    $SNAPFS --repo "s3:http://127.0.0.1:$port/bench/offsite" init --chunk-sizes $chunks \
        >/dev/null 2>&1 && break
    sleep 0.3
done
echo "  snapfs copy:        $(seconds $SNAPFS copy --from "$WORK/local" --to "s3:http://127.0.0.1:$port/bench/offsite") s"
echo "  rerun (nothing new): $(seconds $SNAPFS copy --from "$WORK/local" --to "s3:http://127.0.0.1:$port/bench/offsite") s"
if command -v rclone >/dev/null; then
    printf '[b]\ntype = s3\nprovider = Other\naccess_key_id = bench\nsecret_access_key = %s\nendpoint = %s\n' \
        bench-secret "http://127.0.0.1:$port" >"$WORK/rclone.conf"
    echo "  rclone copy (baseline): $(seconds env -u AWS_CA_BUNDLE rclone --config "$WORK/rclone.conf" copy \
        "$WORK/local" b:bench/rclone) s"
else
    echo "  rclone not installed: no baseline"
fi
