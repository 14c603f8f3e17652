#!/usr/bin/env bash
# Prune benchmark (issue 4): wall time and peak RSS of `snapfs prune` on a
# repository of daily snapshots of a 100k-file tree, after `forget` removed
# the oldest days. Baseline in the same run: `snapfs check`, which walks the
# same trees and loads the same index without deleting anything.
#
#     bash benches/prune.sh                 # 100k files, 35 days, keep 30
#     FILES=20000 DAYS=12 KEEP_DAYS=7 bash benches/prune.sh
#
# Each day 1 % of the files get new content, 0.1 % are added and 0.1 %
# deleted. Peak RSS is what the process reports itself (SNAPFS_LOG=debug).
set -euo pipefail
cd "$(dirname "$0")/.."

FILES=${FILES:-100000}
DAYS=${DAYS:-35}
KEEP_DAYS=${KEEP_DAYS:-30}
RUNS=${RUNS:-3}

cargo build --release --quiet
BIN=$(pwd)/${CARGO_TARGET_DIR:-target}/release/snapfs
WORK=$(mktemp -d "${TMPDIR:-/tmp}/snapfs-prune-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export SNAPFS_REPO=$WORK/repo TZ=UTC
TREE=$WORK/tree

# One perl run per day: create (day 0) or change the tree.
change_tree() {
    perl -e '
        use strict; use warnings;
        my ($tree, $files, $day) = @ARGV;
        srand($day + 1);
        sub write_file { my ($i, $tag) = @_;
            my $dir = sprintf("%s/%03d", $tree, int($i / 1000));
            mkdir $dir unless -d $dir;
            open(my $f, ">", "$dir/f$i") or die "$dir/f$i: $!";
            print $f ("file $i version $tag\n" x (20 + $i % 200)); close $f; }
        if ($day == 0) { write_file($_, 0) for 0 .. $files - 1; exit; }
        write_file(int(rand($files)), $day) for 1 .. $files / 100;
        write_file($files + $day * 1000 + $_, $day) for 1 .. $files / 1000;
        for (1 .. $files / 1000) { my $i = int(rand($files)); unlink sprintf("%s/%03d/f%d", $tree, int($i / 1000), $i); }
    ' "$TREE" "$FILES" "$1"
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
now() { date +%s.%N; }
peak_mib() { sed -n 's/.*peak RSS \([0-9.]*\) \(MiB\|GiB\|KiB\).*/\1 \2/p' | awk '{ v = $1; if ($2 == "GiB") v *= 1024; if ($2 == "KiB") v /= 1024; print v }'; }

mkdir -p "$TREE"
echo "generating $FILES files and $DAYS daily backups in $WORK"
for day in $(seq 0 $((DAYS - 1))); do
    change_tree "$day"
    "$BIN" backup --account bench --time "$(date -u -d "2026-10-01 +$day days" '+%F') 02:00:00" "$TREE" > /dev/null
done
"$BIN" snapshots | tail -1
du -sh "$SNAPFS_REPO"

"$BIN" forget --keep-within "${KEEP_DAYS}d" | tail -1

check_times=()
for _ in $(seq "$RUNS"); do
    start=$(now)
    check_rss=$(SNAPFS_LOG=snapfs=debug "$BIN" check 2>&1 >/dev/null | peak_mib)
    check_times+=("$(echo "$(now) - $start" | bc)")
done
check_time=$(printf '%s\n' "${check_times[@]}" | median)

cp -a "$SNAPFS_REPO" "$WORK/template"
prune_times=()
for _ in $(seq "$RUNS"); do
    rm -rf "$SNAPFS_REPO" && cp -a "$WORK/template" "$SNAPFS_REPO"
    sync
    start=$(now)
    out=$(SNAPFS_LOG=snapfs=debug "$BIN" prune 2>&1)
    prune_times+=("$(echo "$(now) - $start" | bc)")
    prune_rss=$(echo "$out" | peak_mib)
done
prune_time=$(printf '%s\n' "${prune_times[@]}" | median)
echo "$out" | grep -v "peak RSS"
du -sh "$SNAPFS_REPO"

echo
echo "== prune: $FILES files, $DAYS daily snapshots, forget kept $KEEP_DAYS (medians of $RUNS)"
printf 'check (baseline): %.2f s, peak RSS %.0f MiB\n' "$check_time" "$check_rss"
printf 'prune:            %.2f s (%.2fx check), peak RSS %.0f MiB (%.2fx check)\n' \
    "$prune_time" "$(echo "$prune_time / $check_time" | bc -l)" "$prune_rss" "$(echo "$prune_rss / $check_rss" | bc -l)"
