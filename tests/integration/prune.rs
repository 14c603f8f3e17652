//! Thirty rolling days: forget + prune keep exactly what the policy says,
//! give the space back, and survive SIGKILL and concurrent backups.

use crate::support::*;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A home directory that changes every day: a new file, an edited file, a
/// deleted file, and content that stays.
struct History {
    t: TestRepo,
    source: PathBuf,
    /// A copy of the source as it was at each day's backup.
    copies: PathBuf,
}

fn day_time(day: u32) -> String {
    let date =
        chrono::NaiveDate::from_ymd_opt(2026, 10, 1).unwrap() + chrono::Duration::days(day as i64);
    format!("{date} 02:00:00")
}

impl History {
    fn new() -> History {
        let t = TestRepo::new();
        let source = t.path("home");
        let copies = t.path("copies");
        fs::create_dir_all(source.join("www")).unwrap();
        fs::create_dir_all(&copies).unwrap();
        fs::write(source.join("www/stable.bin"), random_bytes(60_000, 1)).unwrap();
        History { t, source, copies }
    }

    fn change(&self, day: u32) {
        let d = day as u64;
        fs::write(
            self.source.join(format!("www/day-{day}.bin")),
            random_bytes(20_000, 1000 + d),
        )
        .unwrap();
        fs::write(
            self.source.join("www/edited.bin"),
            random_bytes(15_000, 5000 + d),
        )
        .unwrap();
        let _ = fs::remove_file(
            self.source
                .join(format!("www/day-{}.bin", day.saturating_sub(3))),
        );
    }

    fn backup_day(&self, day: u32) -> String {
        self.change(day);
        let id = self.t.backup(&self.source, &day_time(day));
        let copy = self.copies.join(&id);
        let out = Command::new("cp")
            .arg("-a")
            .arg(&self.source)
            .arg(&copy)
            .output()
            .unwrap();
        assert!(out.status.success());
        id
    }

    fn assert_all_restore(&self, t: &TestRepo) {
        for snap in t.snapshots() {
            let id = snap["id"].as_str().unwrap();
            let restored = t.restore(id);
            assert_same_content(&self.copies.join(id), &restored);
            fs::remove_dir_all(restored).unwrap();
        }
    }
}

fn assert_same_content(want: &Path, got: &Path) {
    let a: Vec<_> = walk(want)
        .iter()
        .map(|p| p.strip_prefix(want).unwrap().to_path_buf())
        .collect();
    let b: Vec<_> = walk(got)
        .iter()
        .map(|p| p.strip_prefix(got).unwrap().to_path_buf())
        .collect();
    assert_eq!(a, b);
    for rel in a {
        if want.join(&rel).is_file() {
            assert!(
                fs::read(want.join(&rel)).unwrap() == fs::read(got.join(&rel)).unwrap(),
                "{}",
                rel.display()
            );
        }
    }
}

fn json(t: &TestRepo, args: &[&str]) -> Value {
    serde_json::from_str(&t.ok(args)).unwrap()
}

#[test]
fn thirty_rolling_days() {
    let h = History::new();
    let ids: Vec<String> = (0..36).map(|day| h.backup_day(day)).collect();
    let size_before = h.t.repo_size();

    let groups = json(&h.t, &["forget", "--json", "--keep-within", "30d"]);
    let group = &groups[0];
    assert_eq!(group["keep"].as_array().unwrap().len(), 30);
    assert_eq!(group["remove"].as_array().unwrap().len(), 6);
    assert_eq!(group["remove"][0]["id"], ids[0].as_str());

    let report = json(&h.t, &["prune", "--json"]);
    assert!(report["packs_deleted"].as_u64().unwrap() > 0, "{report}");
    assert!(report["bytes_freed"].as_u64().unwrap() > 0);
    assert!(h.t.repo_size() < size_before);
    // Nothing left that the policy would delete or repack.
    let again = json(&h.t, &["prune", "--dry-run", "--json"]);
    assert_eq!(again["packs_deleted"], 0, "{again}");
    assert_eq!(again["packs_repacked"], 0, "{again}");
    assert_eq!(h.t.run(&["check", "--read-data"]).status.code(), Some(0));
    h.assert_all_restore(&h.t);

    // Close to a fresh repository holding only the kept days.
    let fresh = TestRepo::new();
    for snap in h.t.snapshots() {
        let id = snap["id"].as_str().unwrap();
        let time = snap["time"]
            .as_str()
            .unwrap()
            .replace('T', " ")
            .replace("+00:00", "");
        let copy = h.copies.join(id);
        fresh.ok(&[
            "backup",
            "--account",
            "alice",
            "--time",
            &time,
            copy.to_str().unwrap(),
        ]);
    }
    let (pruned, fresh_size) = (h.t.repo_size(), fresh.repo_size());
    assert!(
        pruned * 100 <= fresh_size * 115,
        "pruned repository {pruned} bytes, fresh {fresh_size}"
    );
}

#[test]
fn forget_without_policy_uses_the_configured_thirty_days() {
    let h = History::new();
    for day in 0..33 {
        h.backup_day(day);
    }
    let groups = json(&h.t, &["forget", "--json", "--dry-run"]);
    assert_eq!(groups[0]["keep"].as_array().unwrap().len(), 30);
    assert_eq!(h.t.snapshots().len(), 33, "dry run removes nothing");
}

/// Spawn snapfs, SIGKILL it after `delay`; returns whether it was still running.
fn kill_after(repo: &Path, args: &[&str], delay: Duration) -> bool {
    let mut child = Command::new(BIN)
        .args(args)
        .env("SNAPFS_REPO", repo)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    running
}

#[test]
fn sigkill_during_forget_and_prune() {
    let h = History::new();
    for day in 0..36 {
        h.backup_day(day);
    }
    let template = h.t.path("template");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(&h.t.repo)
        .arg(&template)
        .status()
        .unwrap()
        .success());

    // Time a full forget + prune on a copy to spread the kill points.
    let probe = h.t.path("probe");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(&template)
        .arg(&probe)
        .status()
        .unwrap()
        .success());
    let started = Instant::now();
    assert!(snapfs(&probe, &["forget", "--keep-within", "30d"])
        .status
        .success());
    let forget_time = started.elapsed();
    let started = Instant::now();
    assert!(snapfs(&probe, &["prune", "--max-unused", "0%"])
        .status
        .success());
    let prune_time = started.elapsed();

    let mut hits = 0;
    for step in 0..10u32 {
        fs::remove_dir_all(&h.t.repo).unwrap();
        assert!(Command::new("cp")
            .arg("-a")
            .arg(&template)
            .arg(&h.t.repo)
            .status()
            .unwrap()
            .success());
        let (args, time): (&[&str], Duration) = if step < 3 {
            (&["forget", "--keep-within", "30d"], forget_time)
        } else {
            assert!(h
                .t
                .run(&["forget", "--keep-within", "30d"])
                .status
                .success());
            (&["prune", "--max-unused", "0%"], prune_time)
        };
        let delay = time.mul_f64((step % 7) as f64 / 7.0) + Duration::from_millis(2);
        if kill_after(&h.t.repo, args, delay) {
            hits += 1;
        }
        let check = h.t.run(&["check", "--read-data"]);
        assert_eq!(
            check.status.code(),
            Some(0),
            "step {step}: {}",
            String::from_utf8_lossy(&check.stdout)
        );
        h.assert_all_restore(&h.t);
        // Running it again finishes the job (and clears the dead prune's lock).
        h.t.ok(&["forget", "--keep-within", "30d"]);
        h.t.ok(&["prune", "--max-unused", "0%", "--lock-wait", "10s"]);
        let again = json(
            &h.t,
            &["prune", "--dry-run", "--json", "--max-unused", "0%"],
        );
        assert_eq!(again["packs_deleted"], 0, "step {step}: {again}");
        assert_eq!(h.t.snapshots().len(), 30);
        h.assert_all_restore(&h.t);
    }
    assert!(hits >= 3, "only {hits} kills hit a running process");
}

#[test]
fn backup_and_prune_at_the_same_time() {
    let h = History::new();
    for day in 0..32 {
        h.backup_day(day);
    }
    for round in 0..5u32 {
        let day = 32 + round;
        h.change(day);
        let repo = h.t.repo.clone();
        let pruner = std::thread::spawn(move || {
            let forget = snapfs(&repo, &["forget", "--keep-within", "30d"]);
            let prune = snapfs(&repo, &["prune", "--max-unused", "0%", "--lock-wait", "1m"]);
            (forget, prune)
        });
        let id = h.t.backup(&h.source, &day_time(day));
        let (forget, prune) = pruner.join().unwrap();
        assert!(
            forget.status.success(),
            "{}",
            String::from_utf8_lossy(&forget.stderr)
        );
        assert!(
            prune.status.success(),
            "{}",
            String::from_utf8_lossy(&prune.stderr)
        );
        assert!(Command::new("cp")
            .arg("-a")
            .arg(&h.source)
            .arg(h.copies.join(&id))
            .status()
            .unwrap()
            .success());
        assert_eq!(
            h.t.run(&["check", "--read-data"]).status.code(),
            Some(0),
            "round {round}"
        );
        h.assert_all_restore(&h.t);
    }
}

#[test]
fn a_lock_held_by_a_live_process_makes_prune_wait_then_fail_with_exit_code_5() {
    let h = History::new();
    h.backup_day(0);
    // A shared lock of a live process (this test) from "another backup".
    let backend: std::sync::Arc<dyn snapfs::repository::backend::Backend> =
        std::sync::Arc::new(snapfs::repository::backend::LocalBackend::new(&h.t.repo));
    let lock = snapfs::repository::lock::Lock::acquire(
        backend,
        snapfs::repository::lock::LockKind::Shared,
        "backup of test",
        Duration::ZERO,
    )
    .unwrap();
    let out = h.t.run(&["prune", "--lock-wait", "1s"]);
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("backup of test"));
    drop(lock);
    h.t.ok(&["prune", "--lock-wait", "1s"]);
    assert!(h.t.ok(&["unlock"]).contains("0 locks removed"));
}

/// Regression: a pack whose blobs are all live repacks into a byte-identical
/// pack with the same id, which prune then deleted as "the old pack".
#[test]
fn regression_repacked_pack_with_the_same_id_is_not_deleted() {
    let h = History::new();
    for day in 0..3 {
        h.backup_day(day);
    }
    for _ in 0..3 {
        h.t.ok(&["prune", "--max-unused", "0%"]);
        assert_eq!(h.t.run(&["check", "--read-data"]).status.code(), Some(0));
    }
    h.assert_all_restore(&h.t);
}
