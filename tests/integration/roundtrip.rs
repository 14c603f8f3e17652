use crate::support::*;
use std::fs;

#[test]
fn every_node_type_and_odd_names_round_trip() {
    let t = TestRepo::new();
    let source = t.path("source");
    make_rich_tree(&source);
    t.backup(&source, "2026-11-24 02:00:00");
    let restored = t.restore("latest");
    assert_same_tree(&source, &restored);
    // Holes stay holes.
    assert!(allocated_bytes(&restored.join("sparse")) < 256 * 1024);
    assert_eq!(t.run(&["check", "--read-data"]).status.code(), Some(0));
}

#[test]
fn several_paths_appear_under_their_base_names() {
    let t = TestRepo::new();
    fs::create_dir_all(t.path("a/www")).unwrap();
    fs::create_dir_all(t.path("b/mail")).unwrap();
    fs::write(t.path("a/www/index.html"), b"<html>").unwrap();
    fs::write(t.path("b/mail/inbox"), b"mail").unwrap();
    t.ok(&[
        "backup",
        "--time",
        "2026-11-24 02:00:00",
        t.path("a/www").to_str().unwrap(),
        t.path("b/mail").to_str().unwrap(),
    ]);
    let listing = t.ok(&["ls", "latest"]);
    assert_eq!(listing, "mail\nwww\n");
    let restored = t.restore("latest");
    assert_eq!(
        fs::read(restored.join("www/index.html")).unwrap(),
        b"<html>"
    );
}

#[test]
fn selectors_ls_and_partial_restore() {
    let t = TestRepo::new();
    let source = t.path("home");
    fs::create_dir_all(source.join("www/img")).unwrap();
    fs::write(source.join("www/index.html"), b"v1").unwrap();
    let first = t.backup(&source, "2026-11-23 02:00:00");
    fs::write(source.join("www/index.html"), b"v2").unwrap();
    let second = t.backup(&source, "2026-11-24 02:00:00");

    let snaps = t.snapshots();
    assert_eq!(snaps.len(), 2);
    assert_eq!(snaps[0]["id"], first.as_str());
    assert_eq!(snaps[0]["account"], "alice");
    assert_eq!(snaps[0]["time"], "2026-11-23T02:00:00+00:00");
    assert_eq!(snaps[1]["parent"], first.as_str());

    // By date, by prefix, latest.
    let by_date = t.restore("2026-11-23:www");
    assert_eq!(fs::read(by_date.join("index.html")).unwrap(), b"v1");
    let by_prefix = t.restore(&format!("{}:/www/index.html", &second[..10]));
    assert_eq!(fs::read(by_prefix.join("index.html")).unwrap(), b"v2");
    let long = t.ok(&["ls", "latest", "www", "--long"]);
    assert!(long.contains("www/index.html"), "{long}");
    assert!(long.starts_with('d') || long.contains("\n-rw"), "{long}");
    let json: serde_json::Value =
        serde_json::from_str(&t.ok(&["ls", "latest", "-R", "--json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 3);

    // Clear errors for bad selectors, no panics.
    for bad in ["2026-01-01", "ffffffffff", "nonsense!", "latest:/missing"] {
        let out = t.run(&["restore", bad, "--target", t.path("x").to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("snapfs: "), "{bad}: {err}");
    }
}

#[test]
fn odd_names_are_escaped_in_listings() {
    let t = TestRepo::new();
    let source = t.path("src");
    fs::create_dir_all(&source).unwrap();
    fs::write(source.join("a\nb"), b"").unwrap();
    t.backup(&source, "2026-11-24 02:00:00");
    assert_eq!(t.ok(&["ls", "latest"]), "a\\nb\n");
}

#[test]
fn missing_repository_and_bad_usage_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let out = snapfs(&dir.path().join("none"), &["snapshots"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no snapfs repository"));
    let out = snapfs(&dir.path().join("none"), &["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn init_refuses_a_folder_that_holds_something_else() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("precious"), b"data").unwrap();
    let out = snapfs(dir.path(), &["init"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn backup_creates_the_repository_when_missing() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("src")).unwrap();
    fs::write(dir.path().join("src/f"), b"x").unwrap();
    let repo = dir.path().join("new-repo");
    let out = snapfs(&repo, &["backup", dir.path().join("src").to_str().unwrap()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("creating one"));
    assert!(repo.join("config").is_file());
}

#[test]
fn excludes_cachedir_tags_and_snapfs_mounts_are_skipped() {
    let t = TestRepo::new();
    let source = t.path("src");
    fs::create_dir_all(source.join("cache")).unwrap();
    fs::create_dir_all(source.join("logs")).unwrap();
    fs::write(
        source.join("cache/CACHEDIR.TAG"),
        "Signature: 8a477f597d28d172789f06886806bc55\n",
    )
    .unwrap();
    fs::write(source.join("cache/big"), b"cached").unwrap();
    fs::write(source.join("logs/app.log"), b"log").unwrap();
    fs::write(source.join("keep.txt"), b"keep").unwrap();
    t.ok(&["backup", "--exclude", "*.log", source.to_str().unwrap()]);
    let listing = t.ok(&["ls", "latest", "-R"]);
    assert_eq!(listing, "cache\nkeep.txt\nlogs\n");
}
