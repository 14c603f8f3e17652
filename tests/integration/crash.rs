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
