//! One mount for the whole host (`mount --per-account`) against one
//! `mount --account` process per account, on a repository of ACCOUNTS
//! accounts × DAYS daily snapshots (1,000 × 30 by default), made through
//! the library: one real backup (a tree with a FILE_MIB file), its record
//! copied under every account and day, so every day folder can be entered.
//!
//! `sudo cargo bench --bench accounts_mount` (root: FUSE mounts, and the
//! page cache dropped before each cold figure). Prints, with medians of
//! RUNS runs:
//!
//! - time until mounted, and until one account's folder lists, cold (first
//!   look) and warm (again), for the one mount and for a per-account mount;
//! - the one daemon's RSS, threads and file descriptors, idle and after
//!   every account's folder was listed once, against SAMPLE per-account
//!   processes measured and multiplied by ACCOUNTS;
//! - a cold sequential read of the file through an account's folder of the
//!   one mount, against the same read through that account's own mount.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod common;

use common::{drop_caches, env, median, pid_serving};
use snapfs::backup::{self, BackupOptions};
use snapfs::chunker::ChunkerParams;
use snapfs::repository::Repository;
use snapfs::snapshot::{self, Snapshot, Timestamp};

const SNAPFS: &str = env!("CARGO_BIN_EXE_snapfs");
const DAY_ONE: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

fn account(n: u64) -> String {
    format!("account{n:04}")
}

/// The repository: one real backup, its record under every account and day.
fn build(dir: &Path, accounts: u64, days: u64, file_mib: u64) -> PathBuf {
    let root = dir.join("repo");
    let repo = Repository::init(&root, ChunkerParams::default(), None).unwrap();
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("www")).unwrap();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let data: Vec<u8> = (0..file_mib << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    std::fs::write(src.join("big"), data).unwrap();
    std::fs::write(src.join("www/index.html"), b"hello").unwrap();
    let first = backup::run(
        &repo,
        &BackupOptions {
            paths: vec![src],
            account: account(0),
            hostname: "web1".into(),
            time: Some((
                Timestamp {
                    secs: DAY_ONE,
                    nanos: 0,
                },
                0,
            )),
            excludes: vec![],
            one_file_system: false,
            tags: vec![],
            progress: false,
            lock_wait: Duration::from_secs(10),
        },
    )
    .unwrap()
    .snapshot;
    for a in 0..accounts {
        for day in 0..days {
            if a == 0 && day == 0 {
                continue;
            }
            let snapshot = Snapshot {
                account: account(a),
                time: Timestamp {
                    secs: DAY_ONE + day as i64 * 86_400 + 7_200 + a as i64,
                    nanos: 0,
                },
                ..first.clone()
            };
            snapshot::save(&repo, &snapshot).unwrap();
        }
    }
    root
}

struct Daemon {
    mnt: PathBuf,
    pid: i32,
}

impl Daemon {
    /// `snapfs mount --daemon ARGS MNT`, and how long until it returned.
    fn start(repo: &Path, mnt: &Path, args: &[&str]) -> (Daemon, f64) {
        std::fs::create_dir_all(mnt).unwrap();
        let started = Instant::now();
        let out = Command::new(SNAPFS)
            .arg("--repo")
            .arg(repo)
            .args(["mount", "--daemon", "--utc"])
            .args(args)
            .arg(mnt)
            .output()
            .unwrap();
        let took = started.elapsed().as_secs_f64();
        assert!(out.status.success(), "{out:?}");
        let pid = pid_serving(mnt);
        (
            Daemon {
                mnt: mnt.to_path_buf(),
                pid,
            },
            took,
        )
    }

    /// (RSS in KiB, threads, open file descriptors).
    fn footprint(&self) -> (u64, u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let fds = std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .unwrap()
            .count() as u64;
        (field("VmRSS:"), field("Threads:"), fds)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new(SNAPFS)
            .args(["unmount", "--lazy"])
            .arg(&self.mnt)
            .output();
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn list(path: &Path) -> f64 {
    let started = Instant::now();
    let n = std::fs::read_dir(path).unwrap().count();
    assert!(n > 0, "{}", path.display());
    started.elapsed().as_secs_f64()
}

/// MB/s of reading `path` whole.
fn read_rate(path: &Path) -> f64 {
    let started = Instant::now();
    let bytes = std::fs::read(path).unwrap().len();
    bytes as f64 / 1e6 / started.elapsed().as_secs_f64()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("accounts_mount: run with `sudo cargo bench --bench accounts_mount`");
        return;
    }
    let (accounts, days) = (env("ACCOUNTS", 1000), env("DAYS", 30));
    let (sample, runs, file_mib) = (env("SAMPLE", 5), env("RUNS", 3), env("FILE_MIB", 256));
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let made = Instant::now();
    let repo = build(dir.path(), accounts, days, file_mib);
    println!(
        "accounts_mount: {accounts} accounts x {days} days, made in {:.1} s; medians of {runs}",
        made.elapsed().as_secs_f64()
    );
    let one = account(accounts / 2);
    let (mut host_mounted, mut host_cold, mut host_warm) = (vec![], vec![], vec![]);
    let (mut own_mounted, mut own_cold, mut own_warm) = (vec![], vec![], vec![]);
    let (mut host_read, mut own_read) = (vec![], vec![]);
    for _ in 0..runs {
        drop_caches();
        let (host, took) = Daemon::start(&repo, &dir.path().join("host"), &["--per-account"]);
        host_mounted.push(took);
        host_cold.push(list(&host.mnt.join(&one)));
        host_warm.push(list(&host.mnt.join(&one)));
        drop_caches();
        host_read.push(read_rate(&host.mnt.join(account(0)).join("2026-01-01/big")));
        drop(host);
        drop_caches();
        let mnt = dir.path().join("own");
        let (own, took) = Daemon::start(&repo, &mnt, &["--allow-other", "--account", &one]);
        own_mounted.push(took);
        own_cold.push(list(&own.mnt));
        own_warm.push(list(&own.mnt));
        drop(own);
        drop_caches();
        let (own, _) = Daemon::start(&repo, &mnt, &["--allow-other", "--account", &account(0)]);
        own_read.push(read_rate(&own.mnt.join("2026-01-01/big")));
    }
    let ms = |v: Vec<f64>| median(v) * 1e3;
    let (hm, om) = (ms(host_mounted), ms(own_mounted));
    let (hc, oc) = (ms(host_cold), ms(own_cold));
    let (hw, ow) = (ms(host_warm), ms(own_warm));
    println!(
        "  mounted: one mount {hm:.1} ms, an account's own mount {om:.1} ms ({:.2}x)",
        hm / om
    );
    println!(
        "  one account's folder listed, cold: {hc:.2} ms vs {oc:.2} ms ({:.2}x)",
        hc / oc
    );
    println!(
        "  the same, warm: {hw:.3} ms vs {ow:.3} ms ({:.2}x)",
        hw / ow
    );
    let (hr, or) = (median(host_read), median(own_read));
    println!(
        "  cold sequential read of {file_mib} MiB: {hr:.0} MB/s through the one mount, \
         {or:.0} MB/s through the account's own ({:.2}x)",
        hr / or
    );

    // Footprints: the one daemon, idle and after every account listed once;
    // a sample of per-account daemons, multiplied.
    let (host, _) = Daemon::start(&repo, &dir.path().join("host"), &["--per-account"]);
    let idle = host.footprint();
    let started = Instant::now();
    for a in 0..accounts {
        list(&host.mnt.join(account(a)));
    }
    let every = started.elapsed().as_secs_f64();
    let listed = host.footprint();
    drop(host);
    let mut own = Vec::new();
    let mut daemons = Vec::new();
    for s in 0..sample {
        let (d, _) = Daemon::start(
            &repo,
            &dir.path().join(format!("own{s}")),
            &[
                "--allow-other",
                "--account",
                &account(s * (accounts / sample.max(1))),
            ],
        );
        list(&d.mnt);
        own.push(d.footprint());
        daemons.push(d);
    }
    drop(daemons);
    let mean =
        |f: fn(&(u64, u64, u64)) -> u64| own.iter().map(f).sum::<u64>() as f64 / own.len() as f64;
    let (rss, threads, fds) = (mean(|f| f.0), mean(|f| f.1), mean(|f| f.2));
    let total = rss * accounts as f64;
    println!(
        "  one daemon: {:.1} MiB RSS, {} threads, {} fds idle; {:.1} MiB, {} threads, {} fds \
         after all {accounts} account folders were listed once ({:.2} s for all)",
        idle.0 as f64 / 1024.0,
        idle.1,
        idle.2,
        listed.0 as f64 / 1024.0,
        listed.1,
        listed.2,
        every
    );
    println!(
        "  per-account daemons: {:.1} MiB RSS, {threads:.0} threads, {fds:.0} fds each \
         (mean of {sample}); x{accounts} = {:.0} MiB, {:.0} threads, {:.0} fds ({:.0}x the one daemon's RSS)",
        rss / 1024.0,
        total / 1024.0,
        threads * accounts as f64,
        fds * accounts as f64,
        total / listed.0 as f64
    );
}
