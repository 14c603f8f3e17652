#!/usr/bin/env bash
# Backup benchmark (issue 2): first-backup and unchanged-re-backup throughput
# on a generated tree, each as a ratio to reading the same tree with tar in
# the same run.
#
#     bash benches/backup.sh                          # ~1 GiB, 100k small files
#     SIZE_MB=300 FILES=30000 bash benches/backup.sh  # quicker
#
# Environment:
#   SIZE_MB   total size of the tree in MiB (default 1024); 70 % of it is in
#             a few large semi-compressible files, the rest in FILES small ones
#   FILES     number of small files (default 100000)
#   RUNS      runs per measurement, the median is reported (default 3)
#   WORK      scratch folder (default: a new one under ${TMPDIR:-/tmp});
#             it needs about 2.5 x SIZE_MB of free space
#   KEEP=1    keep the scratch folder afterwards
#
# Targets (issue 2): first backup within 3x the tar time on 2 cores; an
# unchanged re-backup of 100k files in under 2 s.
set -euo pipefail

cd "$(dirname "$0")/.."

SIZE_MB=${SIZE_MB:-1024}
FILES=${FILES:-100000}
RUNS=${RUNS:-3}
LARGE_FILES=4

section() { printf '\n==== %s ====\n' "$*"; }

section "build (release)"
cargo build --release --quiet
BIN="${CARGO_TARGET_DIR:-target}/release/snapfs"
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

if [[ -z ${WORK:-} ]]; then
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/snapfs-bench.XXXXXX")
fi
mkdir -p "$WORK"
cleanup() {
    if [[ ${KEEP:-0} != 1 ]]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT
TREE=$WORK/tree
REPO=$WORK/repo

# ---------------------------------------------------------------------------
section "generate tree: $SIZE_MB MiB, $LARGE_FILES large files + $FILES small files"
# Large files: each 64 KiB block is 32 KiB of random bytes and 32 KiB of
# text, so zstd halves it and no chunk repeats (nothing deduplicates by
# accident). Small files: distinct text with a random tail, sizes spread
# around the average, 1000 per folder in two levels.
rm -rf "$TREE"
mkdir -p "$TREE"
large_mb=$((SIZE_MB * 70 / 100))
small_bytes=$(((SIZE_MB - large_mb) * 1024 * 1024))
perl -e '
    use strict; use warnings;
    my ($tree, $large_mb, $nlarge, $files, $small_bytes) = @ARGV;
    open(my $rnd, "<:raw", "/dev/urandom") or die "urandom: $!";
    my $text = join("", map { sprintf("%06d the quick brown fox jumps over the lazy dog; snapfs bench line\n", $_) } 0 .. 600);
    $text = substr($text, 0, 32768);
    my $blocks = int($large_mb * 16 / $nlarge);              # 64 KiB blocks per file
    for my $f (1 .. $nlarge) {
        open(my $out, ">:raw", "$tree/large-$f.bin") or die "$f: $!";
        for (1 .. $blocks) {
            read($rnd, my $r, 32768) == 32768 or die "short read";
            print $out $r, $text;
        }
        close($out) or die;
    }
    my $avg = $files ? int($small_bytes / $files) : 0;
    for my $i (0 .. $files - 1) {
        my $dir = sprintf("%s/small/%03d/%03d", $tree, int($i / 100000), int($i / 1000) % 100);
        if ($i % 1000 == 0) { system("mkdir", "-p", $dir) == 0 or die "mkdir $dir"; }
        my $size = int($avg / 2 + rand($avg + 1));
        my $body = sprintf("small file %d\n", $i) x (1 + int($size / 16));
        my $tail = int($size / 4);
        read($rnd, my $r, $tail) if $tail;
        open(my $out, ">:raw", sprintf("%s/f%06d", $dir, $i)) or die "$i: $!";
        print $out substr($body, 0, $size - $tail), ($tail ? $r : "");
        close($out) or die;
    }
' "$TREE" "$large_mb" "$LARGE_FILES" "$FILES" "$small_bytes"
tree_bytes=$(du -sb --apparent-size "$TREE" | cut -f1)
tree_files=$(find "$TREE" -type f | wc -l)
echo "tree: $tree_bytes bytes in $tree_files files"

# ---------------------------------------------------------------------------
# Measuring: wall time with date, peak RSS with GNU time -v when it exists,
# else by sampling VmHWM from /proc while the process runs.
have_gnu_time=0
if /usr/bin/time -v true >/dev/null 2>&1; then have_gnu_time=1; fi

LAST_SECS=0
LAST_RSS_KB=0
# measure LOGFILE CMD...: run CMD, set LAST_SECS and LAST_RSS_KB; fail if it fails.
measure() {
    local log=$1
    shift
    sync
    local start end
    start=$(date +%s.%N)
    if ((have_gnu_time)); then
        /usr/bin/time -v -o "$log.time" "$@" >"$log" 2>&1 || { cat "$log" >&2; return 1; }
        end=$(date +%s.%N)
        LAST_RSS_KB=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log.time")
    else
        "$@" >"$log" 2>&1 &
        local pid=$! hwm=0 v
        while kill -0 "$pid" 2>/dev/null; do
            v=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
            [[ -n $v ]] && ((v > hwm)) && hwm=$v
            sleep 0.02
        done
        wait "$pid" || { cat "$log" >&2; return 1; }
        end=$(date +%s.%N)
        LAST_RSS_KB=$hwm
    fi
    LAST_SECS=$(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.3f", b - a}')
}

median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
max() { printf '%s\n' "$@" | sort -g | tail -1; }
mibps() { awk -v b="$tree_bytes" -v s="$1" 'BEGIN {printf "%.0f MiB/s", b / 1048576 / s}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2fx", a / b}'; }

# ---------------------------------------------------------------------------
section "tar baselines (warm cache, median of $RUNS)"
# Warm the page cache so that every measurement below reads from memory.
tar cf - -C "$WORK" tree | cat >/dev/null

# GNU tar notices that its archive is /dev/null and then does not read file
# contents at all (it only stats them), so `tar cf /dev/null` measures a
# metadata walk. It is printed for reference, but the baseline is
# `tar cf - TREE | cat > /dev/null`, which reads every byte, as a backup must.
t_null=()
t_tar=()
for _ in $(seq "$RUNS"); do
    measure "$WORK/tar-null.log" tar cf /dev/null -C "$WORK" tree
    t_null+=("$LAST_SECS")
    measure "$WORK/tar-pipe.log" bash -c 'tar cf - -C "$1" tree | cat > /dev/null' _ "$WORK"
    t_tar+=("$LAST_SECS")
done
tar_null=$(median "${t_null[@]}")
tar_s=$(median "${t_tar[@]}")
echo "tar cf /dev/null TREE:          ${tar_null}s (metadata only; reference)"
echo "tar cf - TREE | cat >/dev/null: ${tar_s}s, $(mibps "$tar_s")  <- baseline"

# ---------------------------------------------------------------------------
section "first backup into a fresh repository (median of $RUNS)"
t_first=()
rss_first=()
for _ in $(seq "$RUNS"); do
    rm -rf "$REPO"
    "$BIN" --repo "$REPO" init >/dev/null
    measure "$WORK/first.log" "$BIN" --repo "$REPO" --json backup --account bench "$TREE"
    t_first+=("$LAST_SECS")
    rss_first+=("$LAST_RSS_KB")
done
first_s=$(median "${t_first[@]}")
repo_bytes=$(du -sb "$REPO" | cut -f1)
echo "runs: ${t_first[*]}"
echo "first backup: ${first_s}s, $(mibps "$first_s"), $(ratio "$first_s" "$tar_s") the tar time; repository $((repo_bytes / 1048576)) MiB"

# ---------------------------------------------------------------------------
section "unchanged re-backup (median of $RUNS)"
t_again=()
rss_again=()
for _ in $(seq "$RUNS"); do
    measure "$WORK/again.log" "$BIN" --repo "$REPO" --json backup --account bench "$TREE"
    t_again+=("$LAST_SECS")
    rss_again+=("$LAST_RSS_KB")
done
again_s=$(median "${t_again[@]}")
echo "runs: ${t_again[*]}"
echo "re-backup: ${again_s}s, $(mibps "$again_s"), $(ratio "$again_s" "$tar_s") the tar time"
grep -o '"files_read":[0-9]*\|"files_unchanged":[0-9]*\|"bytes_read":[0-9]*\|"bytes_added":[0-9]*' "$WORK/again.log" | tr '\n' ' '
echo

# ---------------------------------------------------------------------------
section "summary"
cat <<SUMMARY
machine:   $(nproc) cores, $(uname -sr), tree on $(df -T "$WORK" | awk 'NR == 2 {print $2}')
tree:      $tree_bytes bytes, $tree_files files ($LARGE_FILES large, $FILES small); SIZE_MB=$SIZE_MB FILES=$FILES RUNS=$RUNS
baseline:  tar cf - | cat      ${tar_s}s  $(mibps "$tar_s")   (tar cf /dev/null: ${tar_null}s)
first:     snapfs backup       ${first_s}s  $(mibps "$first_s")  $(ratio "$first_s" "$tar_s") tar   peak RSS $(($(max "${rss_first[@]}") / 1024)) MiB
unchanged: snapfs backup       ${again_s}s  $(mibps "$again_s")  $(ratio "$again_s" "$tar_s") tar   peak RSS $(($(max "${rss_again[@]}") / 1024)) MiB
re-backup of $tree_files unchanged files: ${again_s} s (target: < 2 s for 100k files)
SUMMARY
