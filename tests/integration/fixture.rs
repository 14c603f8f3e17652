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
    let out = snapfs(&repo, &["snapshots", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snaps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 2);
    assert_eq!(snaps[0]["account"], "fixture");
    let out = snapfs(&repo, &["check", "--read-data"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for (snapshot, expected) in [("2026-11-23", "source-day1"), ("2026-11-24", "source-day2")] {
        let target = dir.path().join(snapshot);
        let out = snapfs(
            &repo,
            &["restore", snapshot, "--target", target.to_str().unwrap()],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
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
    let out = snapfs(
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
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files: Vec<_> = fs::read_dir(repo.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    assert_eq!(files.len(), before + 1);
    assert!(files.iter().all(|e| e.file_type().unwrap().is_file()));
    let out = snapfs(&repo, &["snapshots", "--account", "fixture", "--json"]);
    let snaps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 3);
    assert_eq!(snaps[2]["time"], "2026-11-25T00:00:00+00:00");
    assert_eq!(snapfs(&repo, &["check"]).status.code(), Some(0));

    // `migrate` moves the three into the account's folder (layout 2).
    let out = snapfs(&repo, &["migrate", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["moved"], 3);
    assert_eq!(report["layout_after"], 2);
    assert_eq!(
        fs::read_dir(repo.join("snapshots/fixture"))
            .unwrap()
            .count(),
        3
    );
    let out = snapfs(&repo, &["snapshots", "--account", "fixture", "--json"]);
    let after: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(after, snaps);
    assert_eq!(snapfs(&repo, &["check"]).status.code(), Some(0));
    let target = dir.path().join("after-migrate");
    let out = snapfs(
        &repo,
        &[
            "restore",
            "2026-11-23",
            "--target",
            target.to_str().unwrap(),
        ],
    );
    assert!(out.status.success());
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
