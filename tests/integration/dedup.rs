use crate::support::*;
use std::fs;

fn summary(json: &str) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(json).unwrap()["summary"].clone()
}

#[test]
fn unchanged_rebackup_reads_nothing_and_adds_under_one_percent() {
    let t = TestRepo::new();
    let source = t.path("src");
    for d in 0..10 {
        fs::create_dir_all(source.join(format!("d{d}"))).unwrap();
        for f in 0..30 {
            fs::write(
                source.join(format!("d{d}/f{f}")),
                random_bytes(3000 + f * 100, d * 100 + f as u64),
            )
            .unwrap();
        }
    }
    let total = dir_size(&source);
    let src = source.to_str().unwrap();
    let first = summary(&t.ok(&["backup", "--json", src]));
    assert_eq!(first["files"], 300);
    let before = t.repo_size();
    let second = summary(&t.ok(&["backup", "--json", src]));
    assert_eq!(second["files_unchanged"], 300);
    assert_eq!(second["bytes_read"], 0, "no file content read");
    let added = t.repo_size() - before;
    assert!(
        added * 100 < total,
        "re-backup added {added} bytes for a {total}-byte tree"
    );
}

#[test]
fn one_byte_insert_in_a_large_file_adds_a_few_chunks() {
    // Default chunk sizes (1 MiB average) on a 100 MiB file.
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let source = dir.path().join("src");
    fs::create_dir(&source).unwrap();
    let mut data = random_bytes(100 << 20, 9);
    fs::write(source.join("big"), &data).unwrap();
    let out = snapfs(&repo, &["backup", "--json", source.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    data.insert(37 << 20, b'!');
    fs::write(source.join("big"), &data).unwrap();
    let out = snapfs(&repo, &["backup", "--json", source.to_str().unwrap()]);
    let added = summary(&String::from_utf8_lossy(&out.stdout))["bytes_added"]
        .as_u64()
        .unwrap();
    // One or two chunks around the edit (max 8 MiB each) plus trees.
    assert!(added < 17 << 20, "added {added} bytes for a 1-byte insert");
    assert!(added > 0);
    let out = snapfs(
        &repo,
        &[
            "restore",
            "latest",
            "--target",
            dir.path().join("out").to_str().unwrap(),
        ],
    );
    assert!(out.status.success());
    assert!(fs::read(dir.path().join("out/big")).unwrap() == data);
}

#[test]
fn changed_files_are_reread_unchanged_are_not() {
    let t = TestRepo::new();
    let source = t.path("src");
    fs::create_dir(&source).unwrap();
    fs::write(source.join("a"), b"one").unwrap();
    fs::write(source.join("b"), b"two").unwrap();
    t.ok(&["backup", source.to_str().unwrap()]);
    fs::write(source.join("b"), b"TWO!").unwrap();
    let s = summary(&t.ok(&["backup", "--json", source.to_str().unwrap()]));
    assert_eq!(s["files_unchanged"], 1);
    assert_eq!(s["files_read"], 1);
    let restored = t.restore("latest");
    assert_eq!(fs::read(restored.join("b")).unwrap(), b"TWO!");
}
