#!/usr/bin/env bash
# The nightly run of a simulated host (issue 10): N accounts, each a small
# home, a maildir and (when PostgreSQL's server binaries are installed and
# this runs as root) a PostgreSQL database; 3 % of it changes per night.
#
#     bash benches/run.sh                 # 200 accounts
#     ACCOUNTS=1000 bash benches/run.sh   # a larger host
#
# Measured, each night with `snapfs run` and, in the same run, with the same
# work done by one `snapfs backup` process per account (the baseline: what
# an operator's loop over accounts does; dumps go to a file first there, as
# `snapfs backup` cannot stream them):
#   night 1   everything new
#   night 2   3 % of each home's files and of the databases' rows changed,
#             new mail; the fixed cost per account is the run's time over
#             the accounts when nothing changed (night 3)
#   night 4   5 % of the messages renamed as a mail server does (flags,
#             new/ -> cur/): how many files were read
#
# Environment:
#   ACCOUNTS  accounts (default 200)
#   FILES     files per home (default 200, 4-40 KiB each)
#   MESSAGES  messages per maildir (default 300, 2-8 KiB each)
#   ROWS      rows per account's database (default 2000)
#   JOBS      snapfs run --jobs (default: the number of cores)
#   WORK      scratch folder (default: a new one under ${TMPDIR:-/tmp})
#   KEEP=1    keep the scratch folder afterwards
set -euo pipefail

cd "$(dirname "$0")/.."

ACCOUNTS=${ACCOUNTS:-200}
FILES=${FILES:-200}
MESSAGES=${MESSAGES:-300}
ROWS=${ROWS:-2000}
JOBS=${JOBS:-$(nproc)}

section() { printf '\n==== %s ====\n' "$*"; }

section "build (release)"
cargo build --release --quiet
BIN="${CARGO_TARGET_DIR:-target}/release/snapfs"
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

if [[ -z ${WORK:-} ]]; then
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/snapfs-run-bench.XXXXXX")
fi
mkdir -p "$WORK"
chmod 755 "$WORK"
PGDATA_DIR=$WORK/pgdata
PGSOCK=$WORK/pgsock
cleanup() {
    if [[ -n ${PG_BIN:-} && -d $PGDATA_DIR ]]; then
        runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m immediate stop >/dev/null 2>&1 || true
    fi
    if [[ ${KEEP:-0} != 1 ]]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

# ---------------------------------------------------------------------------
section "PostgreSQL"
PG_BIN=
if [[ $(id -u) -eq 0 ]] && id postgres >/dev/null 2>&1; then
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
fi
if [[ -n $PG_BIN && -x $PG_BIN/initdb ]]; then
    mkdir -p "$PGDATA_DIR" "$PGSOCK"
    chown postgres: "$PGDATA_DIR" "$PGSOCK"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$PGDATA_DIR" -A trust -U postgres >/dev/null
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -w -l "$PGDATA_DIR/server.log" \
        -o "-k $PGSOCK -h '' -c fsync=off -c max_connections=50" start >/dev/null
    export PGHOST=$PGSOCK PGUSER=postgres
    echo "throwaway server from $PG_BIN on $PGSOCK"
else
    echo "no PostgreSQL server binaries (or not root): the accounts have no database"
fi
psql_q() { psql -X -q -v ON_ERROR_STOP=1 "$@" >/dev/null; }

# ---------------------------------------------------------------------------
section "generate $ACCOUNTS accounts: $FILES files, $MESSAGES messages${PG_BIN:+, a database of $ROWS rows} each"
perl -e '
    use strict; use warnings;
    my ($root, $accounts, $files, $messages) = @ARGV;
    open(my $rnd, "<:raw", "/dev/urandom") or die;
    for my $a (0 .. $accounts - 1) {
        my $name = sprintf("u%04d", $a);
        for my $d ("home/$name/www", "home/$name/docs", "mail/$name/Maildir/cur", "mail/$name/Maildir/new", "mail/$name/Maildir/tmp") {
            system("mkdir", "-p", "$root/$d") == 0 or die;
        }
        for my $f (0 .. $files - 1) {
            my $size = 4096 + int(rand(36864));
            read($rnd, my $r, int($size / 2));
            my $dir = $f % 2 ? "www" : "docs";
            open(my $out, ">:raw", "$root/home/$name/$dir/f$f") or die;
            print $out $r, ("<p>account $name file $f</p>\n" x int($size / 60));
            close($out);
        }
        for my $m (0 .. $messages - 1) {
            my $size = 2048 + int(rand(6144));
            read($rnd, my $r, int($size / 3));
            open(my $out, ">:raw", sprintf("%s/mail/%s/Maildir/new/17%08d.M%dP1.host", $root, $name, $m, $m)) or die;
            print $out "From: someone\nSubject: message $m\n\n", unpack("H*", $r);
            close($out);
        }
    }
' "$WORK" "$ACCOUNTS" "$FILES" "$MESSAGES"
if [[ -n $PG_BIN ]]; then
    for a in $(seq 0 $((ACCOUNTS - 1))); do
        name=$(printf 'u%04d' "$a")
        psql_q -c "CREATE ROLE $name" -c "CREATE DATABASE $name OWNER $name"
        psql_q -d "$name" -c "CREATE TABLE t (id int PRIMARY KEY, v text)" \
            -c "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, $ROWS) g" \
            -c "ALTER TABLE t OWNER TO $name"
    done
fi
du -sh "$WORK/home" "$WORK/mail"

cat >"$WORK/snapfs.toml" <<EOF
repository = "$WORK/repo-run"
[accounts]
names = [$(for a in $(seq 0 $((ACCOUNTS - 1))); do printf '"u%04d",' "$a"; done | sed 's/,$//')]
[files]
path = "$WORK/home/{account}"
[mail]
path = "$WORK/mail/{account}/Maildir"
EOF
if [[ -n $PG_BIN ]]; then
    printf '[postgresql]\nhost = "%s"\nuser = "postgres"\ndatabases = "owner"\n' "$PGSOCK" >>"$WORK/snapfs.toml"
fi

# ---------------------------------------------------------------------------
# measure LOG CMD...: wall seconds in LAST_SECS, peak RSS (KiB) in LAST_RSS_KB.
measure() {
    local log=$1
    shift
    local start end
    start=$(date +%s.%N)
    /usr/bin/time -f '%M' -o "$log.rss" "$@" >"$log" 2>"$log.err" || {
        local rc=$?
        ((rc == 3)) || { cat "$log.err" >&2; return 1; }
    }
    end=$(date +%s.%N)
    LAST_SECS=$(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.2f", b - a}')
    LAST_RSS_KB=$(tail -1 "$log.rss")
}

# The baseline: one `snapfs backup` per account (home and maildir, the dump
# taken to a file first), $JOBS at a time as `xargs -P` would run them. RSS:
# the largest single process.
cat >"$WORK/one.sh" <<'ONE'
#!/usr/bin/env bash
set -u
name=$1 night=$2 work=$3 bin=$4 pg=$5
paths=("$work/home/$name" "$work/mail/$name/Maildir")
if [[ -n $pg ]]; then
    mkdir -p "$work/dumps/$name/postgresql"
    pg_dump --format=plain --no-password -d "$name" >"$work/dumps/$name/postgresql/$name.sql"
    paths+=("$work/dumps/$name/postgresql")
fi
/usr/bin/time -f '%M' -o "$work/rss/$name" "$bin" --repo "$work/repo-each" backup \
    --account "$name" --time "$night" "${paths[@]}" >/dev/null 2>&1
rc=$?
((rc == 0 || rc == 3))
ONE
per_account() {
    mkdir -p "$WORK/rss"
    for a in $(seq 0 $((ACCOUNTS - 1))); do printf 'u%04d\n' "$a"; done |
        xargs -P "$JOBS" -I{} bash "$WORK/one.sh" {} "$1" "$WORK" "$BIN" "$PG_BIN"
    cat "$WORK"/rss/* | sort -n | tail -1 >"$WORK/pa.maxrss"
}

run_night() {
    local night=$1
    measure "$WORK/run.json" "$BIN" --json run --config "$WORK/snapfs.toml" --jobs "$JOBS" --time "$night"
    RUN_S=$LAST_SECS RUN_RSS=$LAST_RSS_KB
    RUN_READ=$(grep -o '"files_read": [0-9]*' "$WORK/run.json" | awk '{s += $2} END {print s + 0}')
    sync
    local start end
    start=$(date +%s.%N)
    per_account "$night"
    end=$(date +%s.%N)
    EACH_S=$(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.2f", b - a}')
    EACH_RSS=$(cat "$WORK/pa.maxrss")
    sync
}

change_three_percent() {
    perl -e '
        use strict; use warnings;
        my ($root, $accounts, $files, $night) = @ARGV;
        for my $a (0 .. $accounts - 1) {
            my $name = sprintf("u%04d", $a);
            for my $f (0 .. $files - 1) {
                next if rand() >= 0.03;
                my $dir = $f % 2 ? "www" : "docs";
                open(my $out, ">>", "$root/home/$name/$dir/f$f") or die;
                print $out "<p>edited on night $night</p>\n";
                close($out);
            }
            for my $m (0 .. 9) {
                open(my $out, ">", sprintf("%s/mail/%s/Maildir/new/18%02d%06d.M%dP2.host", $root, $name, $night, $m, $m)) or die;
                print $out "From: someone\nSubject: night $night\n\n", "x" x 3000;
                close($out);
            }
        }
    ' "$WORK" "$ACCOUNTS" "$FILES" "$1"
    if [[ -n $PG_BIN ]]; then
        for a in $(seq 0 $((ACCOUNTS - 1))); do
            psql_q -d "$(printf 'u%04d' "$a")" -c "UPDATE t SET v = md5(v) WHERE random() < 0.03"
        done
    fi
}

rename_five_percent() {
    perl -e '
        use strict; use warnings;
        my ($root, $accounts) = @ARGV;
        for my $a (0 .. $accounts - 1) {
            my $dir = sprintf("%s/mail/u%04d/Maildir", $root, $a);
            opendir(my $d, "$dir/new") or die;
            for my $m (grep { !/^\./ } readdir($d)) {
                next if rand() >= 0.05;
                rename("$dir/new/$m", "$dir/cur/$m:2,S") or die;
            }
        }
    ' "$WORK" "$ACCOUNTS"
}

report() {
    printf '%-34s %8ss %6s MiB %10s | %8ss %6s MiB  %s\n' "$1" "$RUN_S" $((RUN_RSS / 1024)) "$RUN_READ" \
        "$EACH_S" $((EACH_RSS / 1024)) "$(awk -v a="$RUN_S" -v b="$EACH_S" 'BEGIN {printf "%.2fx", a / b}')"
}

section "nights"
printf '%-34s %9s %10s %10s | %9s %10s  %s\n' night "run" "run RSS" "files read" "per-acct" "max RSS" "run/per-account"
run_night "2026-11-24 02:00:00"
report "1: everything new"
change_three_percent 2
run_night "2026-11-25 02:00:00"
report "2: 3 % changed, new mail"
run_night "2026-11-26 02:00:00"
report "3: nothing changed"
FIXED_RUN=$(awk -v s="$RUN_S" -v n="$ACCOUNTS" 'BEGIN {printf "%.1f", s / n * 1000}')
FIXED_EACH=$(awk -v s="$EACH_S" -v n="$ACCOUNTS" 'BEGIN {printf "%.1f", s / n * 1000}')
rename_five_percent
run_night "2026-11-27 02:00:00"
report "4: 5 % of the messages renamed"

section "summary"
cat <<SUMMARY
machine:  $(nproc) cores, $(uname -sr); $ACCOUNTS accounts x ($FILES files, $MESSAGES messages${PG_BIN:+, $ROWS rows}); --jobs $JOBS
fixed cost per account (night 3, nothing changed): run ${FIXED_RUN} ms, one backup per account ${FIXED_EACH} ms
repository: run $(du -sh "$WORK/repo-run" | cut -f1), per-account backups $(du -sh "$WORK/repo-each" | cut -f1)
SUMMARY
