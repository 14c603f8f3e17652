//! tests/fixtures/format-v1 was written by format version 1 and is never
//! regenerated: if this test fails, a change broke old repositories.

use crate::support::*;
use std::fs;
use std::path::Path;

#[test]
fn format_v1_repository_stays_readable() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-v1");
    // Work on a copy: reading must not need to write, but be safe.
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    copy_dir(&fixture.join("repository"), &repo);
    let json = |args: &[&str]| -> serde_json::Value {
        serde_json::from_str(&snapfs_ok(&repo, args)).unwrap()
    };
    let snaps = json(&["snapshots", "--json"]);
    assert_eq!(snaps.as_array().unwrap().len(), 2);
    assert_eq!(snaps[0]["account"], "fixture");
    snapfs_ok(&repo, &["check", "--read-data"]);
    for (snapshot, expected) in [("2026-11-23", "source-day1"), ("2026-11-24", "source-day2")] {
        let target = dir.path().join(snapshot);
        snapfs_ok(
            &repo,
            &["restore", snapshot, "--target", target.to_str().unwrap()],
        );
        let want = fixture.join(expected);
        for path in walk(&want) {
            let rel = path.strip_prefix(&want).unwrap();
            let got = target.join(rel);
            if path.is_file() {
                assert_eq!(
                    fs::read(&path).unwrap(),
                    fs::read(&got).unwrap(),
                    "{}",
                    rel.display()
                );
            }
        }
    }

    // A backup into it keeps layout 1 (the snapshot file directly in
    // snapshots/, no account folder) and is the account's newest.
    let before = fs::read_dir(repo.join("snapshots")).unwrap().count();
    let source = fixture.join("source-day2");
    snapfs_ok(
        &repo,
        &[
            "backup",
            "--account",
            "fixture",
            "--time",
            "2026-11-25T00:00:00Z",
            source.to_str().unwrap(),
        ],
    );
    let files: Vec<_> = fs::read_dir(repo.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    assert_eq!(files.len(), before + 1);
    assert!(files.iter().all(|e| e.file_type().unwrap().is_file()));
    let snaps = json(&["snapshots", "--account", "fixture", "--json"]);
    assert_eq!(snaps.as_array().unwrap().len(), 3);
    assert_eq!(snaps[2]["time"], "2026-11-25T00:00:00+00:00");
    snapfs_ok(&repo, &["check"]);

    // `migrate` moves the three into the account's folder (layout 2).
    let report = json(&["migrate", "--json"]);
    assert_eq!(report["moved"], 3);
    assert_eq!(report["layout_after"], 2);
    assert_eq!(
        fs::read_dir(repo.join("snapshots/fixture"))
            .unwrap()
            .count(),
        3
    );
    assert_eq!(
        json(&["snapshots", "--account", "fixture", "--json"]),
        snaps
    );
    snapfs_ok(&repo, &["check"]);
    let target = dir.path().join("after-migrate");
    snapfs_ok(
        &repo,
        &[
            "restore",
            "2026-11-23",
            "--target",
            target.to_str().unwrap(),
        ],
    );
    assert_eq!(
        walk(&target).len(),
        walk(&fixture.join("source-day1")).len()
    );
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            fs::copy(entry.path(), &dest).unwrap();
        }
    }
}
