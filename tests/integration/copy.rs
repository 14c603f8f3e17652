//! `snapfs copy` end to end: every copied snapshot restores exactly as it
//! does from the source, a second copy of a mostly unchanged day sends only
//! its new chunks, a rerun sends nothing, `--account` limits, refusals are
//! clear, a copy killed at any point and run again leaves a destination
//! that checks clean; the same from a folder to S3 (a throwaway SeaweedFS,
//! `tests/servers`) and back to a folder.

use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use crate::servers::{seaweedfs, Seaweed};
use crate::support::*;

const CHUNKS: &str = "1KiB/4KiB/16KiB";

/// A repository somewhere: a folder, or a prefix of the test bucket with
/// the server's credentials.
struct Place {
    location: String,
    env: Vec<(&'static str, String)>,
}

impl Place {
    fn folder(path: &Path) -> Place {
        Place {
            location: path.to_str().unwrap().to_string(),
            env: Vec::new(),
        }
    }

    fn s3(server: &Seaweed, test: &str) -> Place {
        let prefix = format!("{test}-{}-{}", std::process::id(), rand_suffix());
        Place {
            location: server.location(&prefix),
            env: server.env(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("SNAPFS_REPO", &self.location)
            .envs(self.env.iter().cloned())
            .env("TZ", "UTC");
        cmd
    }

    fn ok(&self, args: &[&str]) -> String {
        succeeded(args, self.command(args).output().unwrap())
    }

    fn init(&self, chunks: &str) {
        self.ok(&["init", "--chunk-sizes", chunks, "--pack-size", "64KiB"]);
    }

    fn snapshot_ids(&self) -> Vec<String> {
        let list: Vec<Value> = serde_json::from_str(&self.ok(&["snapshots", "--json"])).unwrap();
        list.iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    }

    fn check_clean(&self) {
        let out = self.ok(&["check", "--read-data"]);
        assert!(out.contains("no errors"), "{out}");
    }
}

fn succeeded(args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "snapfs {args:?} failed ({:?}):\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn copy_command(from: &Place, to: &Place, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["copy", "--from", &from.location, "--to", &to.location])
        .args(extra)
        .envs(from.env.iter().chain(&to.env).cloned())
        .env("TZ", "UTC");
    cmd
}

/// `snapfs copy --json` that must succeed: its summary.
fn copy(from: &Place, to: &Place, extra: &[&str]) -> Value {
    let out = copy_command(from, to, &[&["--json"], extra].concat())
        .output()
        .unwrap();
    serde_json::from_str(&succeeded(&["copy"], out)).unwrap()
}

/// A source repository with `days` daily snapshots of alice's changing
/// home (every kind of node; each day a new file of `daily` random bytes
/// and an edit) and two of bob's.
fn history(dir: &Path, days: u64, daily: usize) -> Place {
    let repo = Place::folder(&dir.join("source-repo"));
    repo.init(CHUNKS);
    let home = dir.join("alice");
    make_rich_tree(&home);
    let bob = dir.join("bob");
    fs::create_dir(&bob).unwrap();
    fs::write(bob.join("notes"), random_bytes(20_000, 5000)).unwrap();
    for day in 0..days {
        fs::write(
            home.join(format!("day-{day}")),
            random_bytes(daily, 100 + day),
        )
        .unwrap();
        fs::write(home.join("small.txt"), format!("edited on day {day}\n")).unwrap();
        back_up(&repo, "alice", &home, day);
        if day < 2 {
            back_up(&repo, "bob", &bob, day);
        }
    }
    repo
}

fn back_up(repo: &Place, account: &str, home: &Path, day: u64) {
    let time = format!("2026-10-{:02} 02:00:00", day + 1);
    repo.ok(&[
        "backup",
        "--account",
        account,
        "--time",
        &time,
        home.to_str().unwrap(),
    ]);
}

/// Every snapshot of `from` is in `to` and restores from it exactly as it
/// does from `from`.
fn assert_same_snapshots(from: &Place, to: &Place, scratch: &Path) {
    let ids = from.snapshot_ids();
    assert_eq!(to.snapshot_ids(), ids);
    for id in &ids {
        let (a, b) = (
            scratch.join(format!("a-{id}")),
            scratch.join(format!("b-{id}")),
        );
        for (place, target) in [(from, &a), (to, &b)] {
            place.ok(&["restore", id, "--target", target.to_str().unwrap()]);
        }
        assert_same_tree(&a, &b);
        fs::remove_dir_all(&a).unwrap();
        fs::remove_dir_all(&b).unwrap();
    }
}

fn count(summary: &Value, field: &str) -> u64 {
    summary[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field}: {summary}"))
}

#[test]
fn copy_local_to_local_restores_every_snapshot_and_a_rerun_sends_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let source = history(tmp.path(), 4, 100_000);
    let to = Place::folder(&tmp.path().join("offsite"));
    to.init(CHUNKS);

    let first = copy(&source, &to, &[]);
    assert_eq!(count(&first, "snapshots_copied"), 6, "{first}");
    assert!(count(&first, "packs_written") > 3, "{first}");
    assert_same_snapshots(&source, &to, tmp.path());
    to.check_clean();

    let again = copy(&source, &to, &[]);
    assert_eq!(count(&again, "snapshots_copied"), 0, "{again}");
    assert_eq!(count(&again, "snapshots_skipped"), 6, "{again}");
    assert_eq!(count(&again, "blobs_copied"), 0, "{again}");
    assert_eq!(count(&again, "packs_written"), 0, "{again}");

    // A mostly unchanged day: only its new chunks (and the trees above
    // them) travel.
    let home = tmp.path().join("alice");
    fs::write(home.join("day-9"), random_bytes(30_000, 9)).unwrap();
    back_up(&source, "alice", &home, 9);
    let day = copy(&source, &to, &[]);
    assert_eq!(count(&day, "snapshots_copied"), 1, "{day}");
    assert!(
        count(&day, "bytes_copied") < 30_000 + 20_000,
        "more than the new file and its trees: {day}"
    );
    assert!(count(&day, "blobs_skipped") > 0, "{day}");
    assert_same_snapshots(&source, &to, tmp.path());

    // The human summary says the same.
    let out = succeeded(&["copy"], copy_command(&source, &to, &[]).output().unwrap());
    assert!(out.starts_with("copied 0 snapshots from "), "{out}");
    assert!(out.contains("(7 there already)"), "{out}");
}

#[test]
fn copy_account_limits_it_to_those_accounts() {
    let tmp = tempfile::tempdir().unwrap();
    let source = history(tmp.path(), 2, 10_000);
    let to = Place::folder(&tmp.path().join("offsite"));
    to.init(CHUNKS);
    let summary = copy(&source, &to, &["--account", "bob"]);
    assert_eq!(count(&summary, "snapshots_copied"), 2, "{summary}");
    let copied: Vec<Value> = serde_json::from_str(&to.ok(&["snapshots", "--json"])).unwrap();
    assert!(copied.iter().all(|s| s["account"] == "bob"), "{copied:?}");
    // alice's come with the next copy, and bob's are not sent again.
    let rest = copy(&source, &to, &["--account", "alice", "--account", "bob"]);
    assert_eq!(count(&rest, "snapshots_copied"), 2, "{rest}");
    assert_eq!(count(&rest, "snapshots_skipped"), 2, "{rest}");
    assert_same_snapshots(&source, &to, tmp.path());
}

#[test]
fn copy_refuses_other_chunk_sizes_itself_and_a_missing_destination_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let source = history(tmp.path(), 1, 1_000);
    let stderr = |out: &Output| String::from_utf8_lossy(&out.stderr).into_owned();

    let other = Place::folder(&tmp.path().join("other"));
    other.init("2KiB/8KiB/32KiB");
    let out = copy_command(&source, &other, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let why = stderr(&out);
    for part in [
        source.location.as_str(),
        &other.location,
        CHUNKS,
        "2KiB/8KiB/32KiB",
    ] {
        assert!(why.contains(part), "{part} not in: {why}");
    }
    assert!(other.snapshot_ids().is_empty());

    let out = copy_command(&source, &source, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the same repository"),
        "{}",
        stderr(&out)
    );

    let missing = Place::folder(&tmp.path().join("missing"));
    let out = copy_command(&source, &missing, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("init --chunk-sizes {CHUNKS}")),
        "{}",
        stderr(&out)
    );
    assert!(!tmp.path().join("missing").exists());
}

/// SIGKILL a copy into `to` at points spread over the first part of a full
/// copy, each run resuming the last; after every kill the destination
/// checks clean (reading every blob its snapshots need), and a last run
/// finishes the job, sending less than a full copy.
fn killed_copies_resume(source: &Place, to: &Place, probe: &Place, scratch: &Path) {
    let started = Instant::now();
    let full = copy(source, probe, &[]);
    let full_time = started.elapsed();
    eprintln!(
        "a full copy: {full_time:?}, {} blobs, {} bytes",
        full["blobs_copied"], full["bytes_copied"]
    );

    let mut killed_mid_way = 0;
    let total = source.snapshot_ids().len();
    for step in 1..=6u32 {
        let delay = full_time.mul_f64(step as f64 / 14.0);
        let mut child = copy_command(source, to, &[])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            killed_mid_way += 1;
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        to.check_clean();
        let ids = to.snapshot_ids();
        eprintln!("killed after {delay:?}: {} of {total} snapshots", ids.len());
        assert!(ids.iter().all(|id| source.snapshot_ids().contains(id)));
    }
    assert!(
        killed_mid_way >= 3,
        "only {killed_mid_way} kills hit a copy"
    );

    let last = copy(source, to, &[]);
    assert!(
        count(&last, "bytes_copied") < count(&full, "bytes_copied"),
        "the rerun sent everything again: {last} vs {full}"
    );
    assert_same_snapshots(source, to, scratch);
    to.check_clean();
}

#[test]
fn sigkill_during_copy_then_rerun_restores_every_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let source = history(tmp.path(), 12, 400_000);
    let to = Place::folder(&tmp.path().join("offsite"));
    to.init(CHUNKS);
    let probe = Place::folder(&tmp.path().join("probe"));
    probe.init(CHUNKS);
    killed_copies_resume(&source, &to, &probe, tmp.path());
}

#[test]
fn copy_local_to_s3_to_local_restores_every_snapshot_and_keeps_dedup() {
    let Some(server) = seaweedfs("copy_local_to_s3_to_local") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let source = history(tmp.path(), 4, 100_000);
    let offsite = Place::s3(server, "copy");
    offsite.init(CHUNKS);
    let back = Place::folder(&tmp.path().join("back"));
    back.init(CHUNKS);

    let up = copy(&source, &offsite, &[]);
    assert_eq!(count(&up, "snapshots_copied"), 6, "{up}");
    let down = copy(&offsite, &back, &[]);
    assert_eq!(count(&down, "snapshots_copied"), 6, "{down}");
    assert_eq!(count(&down, "bytes_copied"), count(&up, "bytes_copied"));
    assert_same_snapshots(&source, &back, tmp.path());
    offsite.check_clean();

    // The next night: a mostly unchanged day moves only its new chunks,
    // both ways.
    let home = tmp.path().join("alice");
    fs::write(home.join("day-9"), random_bytes(30_000, 9)).unwrap();
    back_up(&source, "alice", &home, 9);
    for (from, to) in [(&source, &offsite), (&offsite, &back)] {
        let night = copy(from, to, &[]);
        assert_eq!(count(&night, "snapshots_copied"), 1, "{night}");
        assert!(count(&night, "bytes_copied") < 50_000, "{night}");
    }
    assert_same_snapshots(&source, &back, tmp.path());
    let again = copy(&offsite, &back, &[]);
    assert_eq!(count(&again, "snapshots_copied"), 0, "{again}");
    assert_eq!(count(&again, "blobs_copied"), 0, "{again}");
}

#[test]
fn sigkill_during_copy_to_s3_then_rerun_restores_every_snapshot() {
    let Some(server) = seaweedfs("sigkill_during_copy_to_s3") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let source = history(tmp.path(), 8, 300_000);
    let to = Place::s3(server, "copy-killed");
    to.init(CHUNKS);
    let probe = Place::s3(server, "copy-probe");
    probe.init(CHUNKS);
    killed_copies_resume(&source, &to, &probe, tmp.path());
}

#[test]
fn copy_from_a_store_that_is_down_is_exit_6() {
    let tmp = tempfile::tempdir().unwrap();
    let to = Place::folder(&tmp.path().join("to"));
    to.init(CHUNKS);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = Place {
        location: format!("s3:http://127.0.0.1:{port}/bucket/x"),
        env: vec![
            ("AWS_ACCESS_KEY_ID", "k".into()),
            ("AWS_SECRET_ACCESS_KEY", "s".into()),
            ("SNAPFS_S3_RETRY", "0".into()),
            ("SNAPFS_NO_CACHE", "1".into()),
        ],
    };
    let out = copy_command(&down, &to, &[]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
