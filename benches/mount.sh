#!/usr/bin/env bash
# Benchmark `snapfs mount` against the source tree it was backed up from.
#
# Every figure is a ratio to the same operation on the source tree in the
# same run: source and mount take turns, and the ratio is the median of
# the $RUNS runs' own ratios. The cold sequential read is also put
# beside a bare FUSE passthrough of the source (benches/fuse_passthrough.rs,
# same fuser settings, nothing decompressed or verified): what FUSE itself
# allows on the machine. "Cold" drops the page cache
# (echo 3 > /proc/sys/vm/drop_caches) and, for the mount, also remounts so
# that snapfs's own chunk and tree caches start empty too.
#
# The 1 GiB file is base64 of random bytes, like a mail attachment: zstd
# saves only a quarter of it yet must entropy-decode every byte, the
# costliest data to read back. A second repository holds a file of each
# other kind at the same size, read cold the same way: random bytes (photos,
# archives; stored raw) and an SQL dump (compresses 3-4x).
#
#   sudo benches/mount.sh                     # 1 GiB file + 100k small files
#   sudo SIZE=256M FILES=20000 benches/mount.sh   # a quicker run
#   sudo KINDS=0 benches/mount.sh             # without the other data kinds
#
# Needs root, FUSE, fio and python3. Uses $SNAPFS or target/release/snapfs
# (built if missing), and $WORK (default /var/tmp/snapfs-bench, removed at
# the end unless KEEP=1).
set -euo pipefail

SIZE=${SIZE:-1G}
FILES=${FILES:-100000}
RUNS=${RUNS:-3}
SNAPSHOTS=${SNAPSHOTS:-30}
KINDS=${KINDS:-1}
WORK=${WORK:-/var/tmp/snapfs-bench}
HERE=$(cd "$(dirname "$0")/.." && pwd)
SNAPFS=${SNAPFS:-${CARGO_TARGET_DIR:-$HERE/target}/release/snapfs}

[ "$(id -u)" = 0 ] || { echo "run as root (drop_caches, mount)" >&2; exit 1; }
for tool in fio python3 fusermount3; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
if [ ! -x "$SNAPFS" ]; then
    (cd "$HERE" && cargo build --release --quiet)
fi
# The FUSE limit to put the mount's cold read beside (benches/fuse_passthrough.rs).
PASSTHROUGH=$(cd "$HERE" && cargo bench --no-run --quiet --bench fuse_passthrough --message-format=json |
    python3 -c 'import json, sys; print(*[j["executable"] for j in map(json.loads, sys.stdin) if j.get("target", {}).get("name") == "fuse_passthrough" and j.get("executable")])')
[ -x "$PASSTHROUGH" ] || { echo "fuse_passthrough did not build" >&2; exit 1; }

SRC=$WORK/src
REPO=$WORK/repo
KINDS_SRC=$WORK/kinds
KINDS_REPO=$WORK/kinds-repo
MOUNTED_REPO=$REPO
MNT=$WORK/mnt
PT=$WORK/passthrough
MOUNT_PID=
PEAK_RSS_KB=0

cleanup() {
    unmount || true
    unmount_passthrough || true
    [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
bytes() { numfmt --from=iec "$1"; }
# CPU seconds (user + system) that process $1 has used.
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }

# Wait until process $1 serves a mount at $2; fail if it exits first.
wait_for_mount() {
    until mountpoint -q "$2"; do
        kill -0 "$1" 2>/dev/null || { echo "the mount at $2 exited (see $WORK/mount.log)" >&2; exit 1; }
        sleep 0.01
    done
}

mount_snapfs() {
    "$SNAPFS" --repo "$MOUNTED_REPO" mount --utc "$MNT" 2>>"$WORK/mount.log" &
    MOUNT_PID=$!
    SESSION=${PHASE:-mount time}
    wait_for_mount "$MOUNT_PID" "$MNT"
}

unmount() {
    [ -n "$MOUNT_PID" ] || return 0
    local hwm
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$MOUNT_PID/status" 2>/dev/null || echo 0)
    [ "${hwm:-0}" -gt "$PEAK_RSS_KB" ] && PEAK_RSS_KB=$hwm
    echo "$(date +%T) ${SESSION:-?}: mount VmHWM $((hwm / 1024)) MiB" >>"$WORK/rss.log"
    fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -u -z "$MNT"
    wait "$MOUNT_PID" 2>/dev/null || true
    MOUNT_PID=
}

# The passthrough of $SRC at $PT, mounted afresh for each cold read.
mount_passthrough() {
    "$PASSTHROUGH" "$SRC" "$PT" 2>>"$WORK/mount.log" &
    PT_PID=$!
    wait_for_mount "$PT_PID" "$PT"
}

unmount_passthrough() {
    [ -n "${PT_PID:-}" ] || return 0
    fusermount3 -u "$PT" 2>/dev/null || fusermount3 -u -z "$PT"
    wait "$PT_PID" 2>/dev/null || true
    PT_PID=
}

# Seconds that "$@" takes, after dropping caches (and remounting: $1 = mount).
timed() {
    local cold=$1 side=$2; shift 2
    if [ "$cold" = cold ]; then
        [ "$side" = mount ] && unmount
        [ "$side" = passthrough ] && unmount_passthrough
        drop_caches
        [ "$side" = mount ] && mount_snapfs
        [ "$side" = passthrough ] && mount_passthrough
    fi
    local t0 t1
    t0=$(now)
    "$@" >/dev/null
    t1=$(now)
    echo "$t1 - $t0" | bc -l
    # A cold mount is fresh: its CPU time is this operation's (and a lookup).
    if [ "$cold" = cold ] && [ "$side" = mount ]; then
        cpu_seconds "$MOUNT_PID" >>"$WORK/cpu"
    fi
}

root_of() {
    case $1 in
        src) echo "$SRC" ;;
        passthrough) echo "$PT" ;;
        *) echo "$MNT/latest" ;;
    esac
}

# Run `fn` on the source and on each side given, in turn, $RUNS times.
# Why in turn: the disk's speed drifts between runs here (the source alone
# read a cold GiB at 0.8 to 1.7 GB/s), and alternating puts both sides
# under the same drift. Sets T[side] (median seconds, the source's too),
# R[side] (the median of each run's own source/side ratio, so > 1 is
# faster than the source) and CPU (the mount's median CPU seconds, cold).
# No subshell: timed remounts, and the mount's pid and peak RSS must stay
# in this shell.
declare -A T R
compare() {
    local cold=$1 fn=$2 run side
    shift 2
    for side in src "$@"; do
        : >"$WORK/times.$side"
        : >"$WORK/ratios.$side"
    done
    : >"$WORK/cpu"
    for run in $(seq "$RUNS"); do
        for side in src "$@"; do
            PHASE="$cold $side $fn${FILE:+ $FILE}"
            if [ "$side" = mount ] && [ "$cold" = warm ] && [ "$run" = 1 ]; then
                SESSION="$SESSION, then $PHASE"
            fi
            timed "$cold" "$side" "$fn" "$(root_of "$side")" >>"$WORK/times.$side"
            [ "$side" = src ] && continue
            echo "$(tail -1 "$WORK/times.src") / $(tail -1 "$WORK/times.$side")" | bc -l >>"$WORK/ratios.$side"
        done
    done
    for side in src "$@"; do
        T[$side]=$(median <"$WORK/times.$side")
        R[$side]=$(median <"$WORK/ratios.$side")
    done
    CPU=$(median <"$WORK/cpu")
}

read_big() { cat "$1/big.bin"; }
read_file() { cat "$1/$FILE"; }
find_all() { find "$1/small"; }
ls_all() { ls -lR "$1/small"; }
tar_all() { tar cf - -C "$1" . | wc -c; }

ratio() { echo "$1 / $2" | bc -l | xargs printf '%.2f'; }

echo "== generating $SIZE file + $FILES small files in $SRC"
rm -rf "$WORK"
mkdir -p "$SRC/small" "$MNT" "$PT"
size_bytes=$(bytes "$SIZE")
# Semi-compressible: base64 of random bytes compresses to about 75%.
# (The last head may cut base64 off with SIGPIPE: the size check is what counts.)
head -c $((size_bytes * 3 / 4 + 4)) /dev/urandom | base64 -w 0 | head -c "$size_bytes" >"$SRC/big.bin" || true
[ "$(stat -c %s "$SRC/big.bin")" = "$size_bytes" ] || { echo "could not write $SRC/big.bin" >&2; exit 1; }
python3 - "$SRC/small" "$FILES" <<'EOF'
import os, sys, random
root, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(1)
for i in range(n):
    d = os.path.join(root, f"d{i // 1000:03d}")
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:06d}.txt"), "wb") as f:
        f.write(rnd.randbytes(rnd.randint(100, 8000)))
EOF

echo "== backing up ($SNAPSHOTS snapshots)"
"$SNAPFS" --repo "$REPO" init >/dev/null
t0=$(now)
"$SNAPFS" --repo "$REPO" backup "$SRC" --time "2025-01-01T00:00:00Z" >/dev/null
echo "first backup: $(echo "$(now) - $t0" | bc -l | xargs printf '%.1f') s"
# More snapshots of the same tree (unchanged files are not read again), one a day.
for d in $(seq 2 "$SNAPSHOTS"); do
    "$SNAPFS" --repo "$REPO" backup "$SRC" --time "$(date -u -d "2025-01-01 +$((d - 1)) days" +%Y-%m-%dT00:00:00Z)" >/dev/null
done

if [ "$KINDS" = 1 ]; then
    echo "== the other data kinds: $SIZE of random bytes, $SIZE of SQL dump"
    mkdir -p "$KINDS_SRC"
    head -c "$size_bytes" /dev/urandom >"$KINDS_SRC/random.bin"
    python3 "$HERE/benches/gen_sql_dump.py" "$KINDS_SRC/dump.sql" "$size_bytes"
    "$SNAPFS" --repo "$KINDS_REPO" init >/dev/null
    "$SNAPFS" --repo "$KINDS_REPO" backup "$KINDS_SRC" >/dev/null
fi

echo "== mount to a listable root with $SNAPSHOTS snapshots"
: >"$WORK/times"
for _ in $(seq "$RUNS"); do
    drop_caches
    t0=$(now)
    mount_snapfs
    until [ "$(ls "$MNT" | wc -l)" -gt "$SNAPSHOTS" ]; do sleep 0.001; done
    t1=$(now)
    unmount
    echo "$t1 - $t0" | bc -l >>"$WORK/times"
done
mount_time=$(median <"$WORK/times")
mount_snapfs

echo "== measuring (median of $RUNS, source and mount in turn)"
mib=$(echo "$size_bytes / 1048576" | bc -l)
compare cold read_big passthrough mount
src_cold=${T[src]} pt_cold=${T[passthrough]} mnt_cold=${T[mount]}
pt_cold_ratio=${R[passthrough]} mnt_cold_ratio=${R[mount]} mnt_cold_cpu=$CPU
unmount_passthrough
compare warm read_big mount
src_warm=${T[src]} mnt_warm=${T[mount]} warm_ratio=${R[mount]}
compare cold find_all mount
src_find=${T[src]} mnt_find=${T[mount]} find_ratio=${R[mount]}
compare cold ls_all mount
src_ls=${T[src]} mnt_ls=${T[mount]} ls_ratio=${R[mount]}
compare cold tar_all mount
src_tar=${T[src]} mnt_tar=${T[mount]} tar_ratio=${R[mount]}

# --invalidate=0: fio would otherwise drop the file's page cache first, and
# the figure asked for is reads "once the file has been read once".
fio_run() { # path jobs -> "iops p99_us"
    fio --name=rand --filename="$1" --rw=randread --bs=4k --ioengine=psync --numjobs="$2" --invalidate=0 \
        --runtime=5 --time_based --group_reporting --output-format=json 2>/dev/null |
        python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]["read"]; print(round(j["iops"]), round(j["clat_ns"]["percentile"]["99.000000"]/1000, 1))'
}
SESSION="$SESSION, then cat + fio"
cat "$MNT/latest/big.bin" >/dev/null   # "once the file has been read once"
cat "$SRC/big.bin" >/dev/null
declare -A fio
for jobs in 1 4; do
    for side in src mount; do
        path=$SRC/big.bin; [ "$side" = mount ] && path=$MNT/latest/big.bin
        fio[$side$jobs]=$(for _ in $(seq "$RUNS"); do fio_run "$path" "$jobs"; done | sort -n | awk '{a[NR]=$0} END {print a[int((NR+1)/2)]}')
    done
done
unmount

# Cold reads of the other kinds, from their own repository.
declare -A kind_src kind_mnt kind_ratio kind_cpu
kinds=()
if [ "$KINDS" = 1 ]; then
    kinds=(random.bin dump.sql)
    SRC_MAIN=$SRC
    SRC=$KINDS_SRC MOUNTED_REPO=$KINDS_REPO
    PHASE="other kinds"
    mount_snapfs
    for FILE in "${kinds[@]}"; do
        compare cold read_file mount
        kind_src[$FILE]=${T[src]} kind_mnt[$FILE]=${T[mount]}
        kind_ratio[$FILE]=${R[mount]} kind_cpu[$FILE]=$CPU
    done
    unmount
    SRC=$SRC_MAIN MOUNTED_REPO=$REPO
fi

rate() { echo "scale=0; $mib / $1" | bc -l; }
cpu_per_gib() { echo "$1 * 1024 / $mib" | bc -l | xargs printf '%.2f'; }
echo
echo "snapfs mount benchmark: $SIZE file, $FILES small files, $SNAPSHOTS snapshots, median of $RUNS"
printf '%-34s %12s %12s %8s\n' operation source mount ratio
row_rate() { printf '%-34s %8s MiB/s %6s MiB/s %7.2fx\n' "$1" "$(rate "$2")" "$(rate "$3")" "$4"; }
# Times: the ratio is the mount's time over the source's.
row_time() { printf '%-34s %10.2f s %10.2f s %7.2fx\n' "$1" "$2" "$3" "$(echo "1 / $4" | bc -l)"; }
row_rate "cold sequential read, base64" "$src_cold" "$mnt_cold" "$mnt_cold_ratio"
row_rate "  the same, bare FUSE passthrough" "$src_cold" "$pt_cold" "$pt_cold_ratio"
printf '%-34s %31s\n' "  mount / passthrough" "$(ratio "$pt_cold" "$mnt_cold")x"
printf '%-34s %25s\n' "  mount CPU (user + system) per GiB" "$(cpu_per_gib "$mnt_cold_cpu") s"
for FILE in "${kinds[@]}"; do
    row_rate "  the same, $FILE" "${kind_src[$FILE]}" "${kind_mnt[$FILE]}" "${kind_ratio[$FILE]}"
    printf '%-34s %25s\n' "    mount CPU per GiB" "$(cpu_per_gib "${kind_cpu[$FILE]}") s"
done
row_rate "warm re-read" "$src_warm" "$mnt_warm" "$warm_ratio"
row_time "find, cold (time)" "$src_find" "$mnt_find" "$find_ratio"
row_time "ls -lR, cold (time)" "$src_ls" "$mnt_ls" "$ls_ratio"
printf '%-34s %10.2f s %10.2f s %7.2fx\n' "tar cf - | wc -c, cold (rate)" "$src_tar" "$mnt_tar" "$tar_ratio"
for jobs in 1 4; do
    read -r s_iops s_p99 <<<"${fio[src$jobs]}"
    read -r m_iops m_p99 <<<"${fio[mount$jobs]}"
    printf '%-34s %12s %12s %8s\n' "fio randread 4k psync, $jobs job(s)" "$s_iops IOPS" "$m_iops IOPS" "$(ratio "$m_iops" "$s_iops")x"
    printf '%-34s %9s us %9s us\n' "  p99 latency" "$s_p99" "$m_p99"
done
printf '%-34s %25s\n' "mount to listable root" "$(printf '%.3f' "$mount_time") s"
printf '%-34s %25s\n' "peak RSS of the mount (VmHWM)" "$((PEAK_RSS_KB / 1024)) MiB (cache 256 MiB)"
echo "peak RSS by phase (each remount starts afresh):"
sed 's/^/  /' "$WORK/rss.log"
