//! Issue 9: root backs up a tenant's home while the tenant swaps a folder
//! of it with a symlink to a folder only root may read, and a file with a
//! symlink to a file there (`renameat2(RENAME_EXCHANGE)` in a tight loop).
//! A walk by path follows the symlink now and then and stores the secret in
//! the tenant's backup; the walk by descriptors must never.

use crate::support::*;
use rustix::fs::{Mode, OFlags, RenameFlags, CWD};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const BACKUPS: usize = 20;

/// Random bytes and a string that appear nowhere but in the secret file.
fn secret_bytes() -> (Vec<u8>, Vec<u8>) {
    let mut random = vec![0u8; 64 * 1024];
    let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut random);
    let marker = format!("SNAPFS-TENANT-MARKER-{}", blake3::hash(seed.as_bytes())).into_bytes();
    (random, marker)
}

/// The tenant's home: a site worth a few milliseconds of backup, and the
/// two symlinks the racer swaps in.
fn make_home(home: &Path, secret_dir: &Path) {
    fs::create_dir_all(home.join("site/img")).unwrap();
    fs::create_dir_all(home.join("www")).unwrap();
    for i in 0..200 {
        let body = format!("<html>page {i}</html>\n").repeat(50);
        fs::write(home.join(format!("site/page-{i:03}.html")), body).unwrap();
    }
    fs::write(home.join("site/img/logo.png"), vec![7u8; 100_000]).unwrap();
    fs::write(home.join("www/index.html"), b"<html>home</html>").unwrap();
    symlink(secret_dir, home.join("alt")).unwrap();
    symlink(secret_dir.join("shadow"), home.join("www/alt-index")).unwrap();
}

#[test]
#[ignore = "a racer: run as the tenant by backups_never_follow_a_swapped_symlink"]
fn racer() {
    let Some(home) = racer_env("SNAPFS_RACE_HOME") else {
        return;
    };
    let dir = |p: &Path| {
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        rustix::fs::openat(CWD, p, flags, Mode::empty()).unwrap()
    };
    let (home_fd, www_fd) = (dir(&home), dir(&home.join("www")));
    race(|| {
        let _ = rustix::fs::renameat_with(&home_fd, "site", &home_fd, "alt", RenameFlags::EXCHANGE);
        let _ = rustix::fs::renameat_with(
            &www_fd,
            "index.html",
            &www_fd,
            "alt-index",
            RenameFlags::EXCHANGE,
        );
    });
}

/// Every regular file under `root`, without following symlinks.
fn files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                out.push(path);
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn backups_never_follow_a_swapped_symlink() {
    if !can_run("backups_never_follow_a_swapped_symlink") {
        return;
    }
    let tenant = TenantUser::create("snapfs-race-b");
    let tmp = shared_tempdir();
    // Outside the home, readable by root only.
    let secret_dir = tmp.path().join("secret");
    fs::create_dir(&secret_dir).unwrap();
    fs::set_permissions(&secret_dir, fs::Permissions::from_mode(0o700)).unwrap();
    let (random, marker) = secret_bytes();
    let mut secret = random.clone();
    secret.extend_from_slice(&marker);
    fs::write(secret_dir.join("shadow"), &secret).unwrap();
    fs::set_permissions(secret_dir.join("shadow"), fs::Permissions::from_mode(0o600)).unwrap();
    let home = tmp.path().join("home");
    make_home(&home, &secret_dir);
    tenant.give(&home);
    let repo = tmp.path().join("repo");

    let mut racer = spawn_as(
        &tenant,
        "backup_race::racer",
        &[("SNAPFS_RACE_HOME", home.as_os_str())],
    );
    // Racing once `site` has been seen both ways.
    let (mut dir_seen, mut link_seen) = (false, false);
    while !(dir_seen && link_seen) {
        assert!(racer.is_running(), "the racer died: {:?}", racer.stop());
        match fs::symlink_metadata(home.join("site")) {
            Ok(m) if m.is_dir() => dir_seen = true,
            Ok(m) if m.is_symlink() => link_seen = true,
            _ => {}
        }
    }
    let mut ids = Vec::new();
    let mut changed_warnings = 0;
    for i in 0..BACKUPS {
        let out = Command::new(SNAPFS)
            .arg("--repo")
            .arg(&repo)
            .args(["backup", "--json", "--account", &tenant.name])
            .arg(&home)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // 3: partial, an entry changed while it was backed up.
        assert!(
            matches!(out.status.code(), Some(0 | 3)),
            "backup {i}: {stderr}"
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for w in v["warnings"].as_array().unwrap() {
            let w = w.as_str().unwrap();
            assert!(w.starts_with(home.to_str().unwrap()), "{w}");
            if w.contains("changed while being backed up") {
                changed_warnings += 1;
            }
        }
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    let (rounds, racer_output) = racer.stop();
    let rounds = rounds.unwrap_or_else(|| panic!("the racer failed: {racer_output:?}"));

    // Where `site` was a folder, a symlink, or skipped as changed, by
    // snapshot; and no byte of the secret anywhere.
    let (mut as_dir, mut as_link, mut skipped) = (0, 0, 0);
    for id in &ids {
        let listing = Command::new(SNAPFS)
            .arg("--repo")
            .arg(&repo)
            .args(["ls", "-l", id])
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&listing.stdout);
        // "drwxr-xr-x ... site" or "lrwxrwxrwx ... site -> /tmp/.../secret"
        let site = listing
            .lines()
            .find(|l| l.ends_with(" site") || l.contains(" site -> "));
        match site {
            Some(l) if l.starts_with('d') => as_dir += 1,
            Some(l) if l.starts_with('l') => as_link += 1,
            Some(l) => panic!("site is neither a folder nor a symlink: {l}"),
            None => skipped += 1,
        }
        let target = tmp.path().join(format!("restore-{id}"));
        run(Command::new(SNAPFS)
            .arg("--repo")
            .arg(&repo)
            .args(["restore", id, "--target"])
            .arg(&target));
        for file in files(&target) {
            let bytes = fs::read(&file).unwrap();
            assert!(
                !contains(&bytes, &marker) && !contains(&bytes, &random[..64]),
                "snapshot {id} holds the secret in {}",
                file.display()
            );
            assert_ne!(file.file_name().unwrap(), "shadow", "{}", file.display());
        }
        fs::remove_dir_all(&target).unwrap();
    }
    eprintln!(
        "{BACKUPS} backups: site a folder in {as_dir}, a symlink in {as_link}, skipped in \
         {skipped}; {changed_warnings} entries skipped as changed; {rounds} racer rounds \
         (2 swaps each)"
    );
    // Not vacuous: the backups met the swapped symlink.
    assert!(
        as_link > 0 || changed_warnings > 0,
        "no backup saw the swap in {rounds} rounds"
    );
}
