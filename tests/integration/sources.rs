//! Source trouble: unreadable files make a partial snapshot (exit code 3)
//! with a warning naming each path, and the rest is still backed up; a
//! source path that does not exist is an error before anything is created.

use crate::support::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

#[test]
fn unreadable_files_give_a_partial_snapshot() {
    let t = TestRepo::new();
    let source = t.path("src");
    fs::create_dir_all(source.join("locked-dir")).unwrap();
    fs::write(source.join("readable"), b"fine").unwrap();
    fs::write(source.join("secret"), b"no").unwrap();
    fs::write(source.join("locked-dir/inside"), b"no").unwrap();
    fs::set_permissions(source.join("secret"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(source.join("locked-dir"), fs::Permissions::from_mode(0o000)).unwrap();

    let mut cmd = if is_root() {
        // Root reads everything: drop to nobody, who owns the repository.
        chown_tree(&t.repo, 65534);
        chown_tree(&source, 65534);
        fs::set_permissions(t.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN]);
        c
    } else {
        Command::new(BIN)
    };
    let out = cmd
        .args(["backup", "--account", "alice", source.to_str().unwrap()])
        .env("SNAPFS_REPO", &t.repo)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("secret"), "{stderr}");
    assert!(stderr.contains("locked-dir"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("PARTIAL"));
    let listing = t.ok(&["ls", "latest"]);
    assert!(listing.contains("readable"), "{listing}");
    let restored = t.restore("latest");
    assert_eq!(fs::read(restored.join("readable")).unwrap(), b"fine");
}

fn chown_tree(path: &std::path::Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
    for p in walk(path) {
        std::os::unix::fs::lchown(&p, Some(uid), Some(uid)).unwrap();
    }
}

/// A full disk under the repository: a clear error naming the file, a
/// non-zero exit, and the earlier snapshot still restores.
#[test]
fn full_disk_is_a_clear_error_and_harms_nothing() {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    fs::create_dir(&mnt).unwrap();
    let _guard = Tmpfs::mount(&mnt, "2m");
    let repo = mnt.join("repo");
    let source = dir.path().join("src");
    fs::create_dir(&source).unwrap();
    fs::write(source.join("small"), b"fits").unwrap();
    let first = snapfs(&repo, &["backup", source.to_str().unwrap()]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    fs::write(source.join("big"), random_bytes(4 << 20, 3)).unwrap();
    let out = snapfs(&repo, &["backup", source.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(
        stderr.contains(repo.to_str().unwrap()),
        "names the file: {stderr}"
    );
    let snaps = snapfs(&repo, &["snapshots", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&snaps.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let target = dir.path().join("out");
    let out = snapfs(
        &repo,
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    assert!(out.status.success());
    assert_eq!(fs::read(target.join("small")).unwrap(), b"fits");
}

/// `backup /typo` with a fresh `--repo`: exit code 1, a message naming the
/// path, and no repository left behind (it is created only once the
/// sources are open).
#[test]
fn a_missing_source_path_creates_no_repository() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let real = dir.path().join("real");
    fs::create_dir(&real).unwrap();
    for args in [
        vec!["backup", "/does/not/exist"],
        vec!["backup", real.to_str().unwrap(), "/does/not/exist"],
    ] {
        let out = snapfs(&repo, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("/does/not/exist"), "{stderr}");
        assert!(!repo.exists(), "{args:?} created {}", repo.display());
    }
}

/// A source path through a link (a tenant's, below their home) is refused
/// with the real path to give; a symlink as the last name is stored as a
/// symlink, never followed.
#[test]
fn a_source_path_through_a_link_is_refused_with_the_real_path() {
    let t = TestRepo::new();
    let real = t.path("real");
    fs::create_dir_all(real.join("www")).unwrap();
    fs::write(real.join("www/index.html"), b"x").unwrap();
    std::os::unix::fs::symlink(&real, t.path("link")).unwrap();
    let through = t.path("link/www");
    let out = t.run(&["backup", through.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let want = real.canonicalize().unwrap().join("www");
    assert!(
        stderr.contains("goes through a symbolic link")
            && stderr.contains(&format!("the real path is {}", want.display())),
        "{stderr}"
    );
    assert!(t.snapshots().is_empty());
    // The link itself as the source: stored as what it is.
    let out = t.ok(&["backup", "--json", t.path("link").to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let listing = t.ok(&["ls", "-l", v["id"].as_str().unwrap()]);
    assert!(listing.contains("link -> "), "{listing}");
}

/// `--one-file-system` compares the device of each folder's descriptor
/// with the source's: a file system mounted inside is kept as an empty
/// folder; without the flag its contents are backed up.
#[test]
fn one_file_system_keeps_mount_points_empty() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let t = TestRepo::new();
    let source = t.path("src");
    let mnt = source.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    fs::write(source.join("here"), b"same fs").unwrap();
    let _guard = Tmpfs::mount(&mnt, "1m");
    fs::write(mnt.join("there"), b"other fs").unwrap();
    let src = source.to_str().unwrap();
    t.ok(&["backup", "--time", "2026-11-23", "-x", src]);
    assert_eq!(t.ok(&["ls", "-R", "latest"]), "here\nmnt\n");
    t.ok(&["backup", "--time", "2026-11-24", src]);
    assert_eq!(t.ok(&["ls", "-R", "latest"]), "here\nmnt\nmnt/there\n");
}
