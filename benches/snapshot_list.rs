//! How long `backup` spends finding its parent snapshot in a repository
//! shared by many accounts, and a mount of one account's backups
//! (`mount --account`, one per account on a hosting platform) to list its
//! root: both read that account's folder of snapshot files only. Listing
//! every snapshot (`snapshots`, `check`, `prune`) reads them all.
//!
//! `cargo bench --bench snapshot_list` (ACCOUNTS=1000 DAYS=30 by default).
//! Prints medians of 5 runs, warm, and cold too when run as root (the page
//! cache is dropped first). The baseline in the same run reads every
//! snapshot file's bytes without decoding or verifying them.

use snapfs::chunker::ChunkerParams;
use snapfs::id::Id;
use snapfs::mount::view::{Options, SnapshotFs, Top};
use snapfs::repository::backend::FileType;
use snapfs::repository::Repository;
use snapfs::snapshot::{self, Snapshot, Summary, Timestamp};
use std::path::Path;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Drop the page cache; false when not allowed (not root).
fn drop_caches() -> bool {
    if unsafe { libc::geteuid() } != 0 {
        return false;
    }
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

fn timed(cold: bool, f: impl Fn()) -> f64 {
    let runs: Vec<f64> = (0..5)
        .map(|_| {
            if cold {
                drop_caches();
            }
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    median(runs)
}

/// Read every snapshot file's bytes, in account folders or not.
fn read_raw(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            read_raw(&entry.path());
        } else {
            std::hint::black_box(std::fs::read(entry.path()).unwrap());
        }
    }
}

fn main() {
    // `cargo test --all-targets` runs bench binaries too, without `--bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("snapshot_list: run with `cargo bench --bench snapshot_list`");
        return;
    }
    let (accounts, days) = (env("ACCOUNTS", 1000), env("DAYS", 30));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let repo = Repository::init(&root, ChunkerParams::default(), None).unwrap();
    for account in 0..accounts {
        for day in 0..days {
            let snapshot = Snapshot {
                time: Timestamp {
                    secs: 1_767_225_600 + day as i64 * 86_400 + account as i64,
                    nanos: 0,
                },
                utc_offset: 3600,
                hostname: "web1.example.net".into(),
                account: format!("account{account:04}"),
                paths: vec![format!("/home/account{account:04}").into_bytes()],
                tags: Vec::new(),
                tree: Id::hash(&[account.to_le_bytes(), day.to_le_bytes()].concat()),
                parent: None,
                summary: Summary::default(),
                root: None,
                sources: Vec::new(),
                version: snapfs::snapshot::SNAPSHOT_VERSION,
            };
            snapshot::save(&repo, &snapshot).unwrap();
        }
    }
    let total = accounts * days;
    let find_parent = || {
        let found = snapshot::list_warn(&repo, Some("account0500"))
            .unwrap()
            .into_iter()
            .next_back();
        assert!(found.is_some() || accounts <= 500);
    };
    let mount_one = || {
        let opts = Options {
            top: Top::Account("account0500".into()),
            prefetch_threads: 0,
            release_idle_after: None,
            ..Options::default()
        };
        let fs = SnapshotFs::new(Repository::open(&root).unwrap(), opts).unwrap();
        let shown = if accounts > 500 { days } else { 0 };
        assert_eq!(fs.snapshot_names().len() as u64, shown);
    };
    let list_all = || {
        let all = snapshot::list_warn(&repo, None).unwrap();
        assert_eq!(all.len() as u64, accounts * days);
    };
    let raw = || read_raw(&root.join("snapshots"));
    assert_eq!(
        repo.list_files(FileType::Snapshot).unwrap().len() as u64,
        total
    );
    println!("snapshot_list: {accounts} accounts x {days} days = {total} snapshot files");
    let report = |label: &str, cold: bool| {
        let (base, all, list, mount) = (
            timed(cold, raw),
            timed(cold, list_all),
            timed(cold, find_parent),
            timed(cold, mount_one),
        );
        println!(
            "  {label}: read every file {base:.3} s; list every snapshot {all:.3} s ({:.2}x); \
             find a parent {list:.4} s ({:.3}x); mount one account's root {mount:.4} s ({:.3}x)",
            all / base,
            list / base,
            mount / base
        );
    };
    report("warm", false);
    if drop_caches() {
        report("cold", true);
    } else {
        println!("  cold: needs root (drop_caches)");
    }
}
