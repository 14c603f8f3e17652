//! SIGKILL a running backup at many points; afterwards the repository must
//! check clean (unreferenced packs allowed) and every earlier snapshot must
//! restore bit-identically.

use crate::support::*;
use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn sigkill_during_backup_keeps_earlier_snapshots() {
    let t = TestRepo::new();
    let source = t.path("src");
    fs::create_dir_all(&source).unwrap();
    fs::write(source.join("first"), random_bytes(300_000, 1)).unwrap();
    t.backup(&source, "2026-11-20 02:00:00");
    let first_tree = observe(&source);

    // Enough new data that a backup takes a while, in many packs.
    for i in 0..40 {
        fs::write(
            source.join(format!("new-{i}")),
            random_bytes(400_000, 100 + i),
        )
        .unwrap();
    }
    // Time a complete run to spread the kill points over it.
    let probe = TestRepo::new();
    let started = Instant::now();
    probe.backup(&source, "2026-11-21 02:00:00");
    let full = started.elapsed();

    let mut killed_mid_way = 0;
    for step in 0..12u32 {
        let delay = full.mul_f64(step as f64 / 12.0) + Duration::from_millis(1);
        let mut child = Command::new(BIN)
            .args([
                "backup",
                "--time",
                "2026-11-22 02:00:00",
                source.to_str().unwrap(),
            ])
            .env("SNAPFS_REPO", &t.repo)
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

        let check = t.run(&["check", "--read-data"]);
        assert_eq!(
            check.status.code(),
            Some(0),
            "check after kill {step} at {delay:?}:\n{}",
            String::from_utf8_lossy(&check.stdout)
        );
        // Every snapshot (the first, and any that completed) restores.
        for snap in t.snapshots() {
            let restored = t.restore(snap["id"].as_str().unwrap());
            if snap["time"] == "2026-11-20T02:00:00+00:00" {
                let got = observe(&restored);
                assert_eq!(
                    got.keys().collect::<Vec<_>>(),
                    first_tree.keys().collect::<Vec<_>>()
                );
                assert_eq!(
                    fs::read(restored.join("first")).unwrap(),
                    fs::read(source.join("first")).unwrap()
                );
            }
            fs::remove_dir_all(restored).unwrap();
        }
    }
    assert!(
        killed_mid_way >= 3,
        "only {killed_mid_way} kills hit a running backup"
    );
    // A final, uninterrupted backup completes and restores.
    t.backup(&source, "2026-11-23 02:00:00");
    let restored = t.restore("latest");
    assert_same_tree(&source, &restored);
}

/// SIGKILL `migrate` part-way through a thousand snapshot files, several
/// times: after each kill every snapshot is listed exactly once and the
/// repository checks clean; a last run finishes the move.
#[test]
fn sigkill_during_migrate_loses_no_snapshot() {
    use snapfs::repository::backend::{Backend, FileType, LocalBackend};
    use snapfs::repository::Repository;
    use snapfs::snapshot::{self, Snapshot};

    let t = TestRepo::new();
    let source = t.path("src");
    fs::create_dir_all(&source).unwrap();
    fs::write(source.join("file"), random_bytes(100_000, 7)).unwrap();
    t.backup(&source, "2026-11-20 02:00:00");

    // Back to layout 1, as snapfs 0.1 made it, with many accounts' files.
    let repo = Repository::open(&t.repo).unwrap();
    let mut config = repo.config().clone();
    config.layout = 1;
    LocalBackend::new(&t.repo)
        .write(FileType::Config, "config", &config.encode())
        .unwrap();
    let repo = Repository::open(&t.repo).unwrap();
    let first: Snapshot = snapshot::list(&repo, None).unwrap().0[0].snapshot.clone();
    fs::remove_dir_all(t.repo.join("snapshots")).unwrap();
    fs::create_dir(t.repo.join("snapshots")).unwrap();
    let total = 1000;
    for n in 0..total {
        let mut s = first.clone();
        s.account = format!("account{}", n % 100);
        s.time.secs += n as i64;
        snapshot::save(&repo, &s).unwrap();
    }
    let in_no_folder = || {
        fs::read_dir(t.repo.join("snapshots"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_type().unwrap().is_file())
            .count()
    };
    assert_eq!(in_no_folder(), total);

    let mut killed_mid_way = 0;
    for delay_ms in [30, 60, 120, 240] {
        let mut child = Command::new(BIN)
            .arg("migrate")
            .env("SNAPFS_REPO", &t.repo)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let left = in_no_folder();
        if left > 0 && left < total {
            killed_mid_way += 1;
        }
        // A killed migrate leaves its lock behind, like a killed prune.
        t.ok(&["unlock", "--all"]);
        assert_eq!(t.snapshots().len(), total, "after a kill at {delay_ms} ms");
        let check = t.run(&["check"]);
        assert_eq!(
            check.status.code(),
            Some(0),
            "check after a kill at {delay_ms} ms:\n{}",
            String::from_utf8_lossy(&check.stdout)
        );
    }
    assert!(killed_mid_way >= 1, "no kill hit a running migrate");
    t.ok(&["migrate"]);
    assert_eq!(in_no_folder(), 0);
    assert_eq!(t.snapshots().len(), total);
    let restored = t.restore("latest");
    assert_eq!(
        fs::read(restored.join("file")).unwrap(),
        fs::read(source.join("file")).unwrap()
    );
}
