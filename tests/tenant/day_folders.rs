//! A home that was private stays private in the mount: day folders show
//! the backed-up folder's own owner and mode, and with `--allow-other`
//! the kernel keeps every other user out.

use crate::support::{fuse_available, shared_tempdir, TenantUser as User, Unmount};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SNAPFS: &str = env!("CARGO_BIN_EXE_snapfs");

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "{out:?}");
    out
}

fn snapfs(repo: &Path) -> Command {
    let mut command = Command::new(SNAPFS);
    command.arg("--repo").arg(repo);
    command
}

/// A home owned by `user` with the given mode, holding one private file.
fn make_home(root: &Path, user: &User, mode: u32) -> PathBuf {
    let home = root.join(&user.name);
    std::fs::create_dir_all(home.join("www")).unwrap();
    std::fs::write(home.join("www/index.html"), &user.name).unwrap();
    std::fs::write(home.join("notes.txt"), b"private notes").unwrap();
    std::fs::set_permissions(home.join("notes.txt"), PermissionsExt::from_mode(0o600)).unwrap();
    for path in [
        &home,
        &home.join("www"),
        &home.join("www/index.html"),
        &home.join("notes.txt"),
    ] {
        std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).unwrap();
    }
    std::fs::set_permissions(&home, PermissionsExt::from_mode(mode)).unwrap();
    home
}

fn denied(out: &Output) -> bool {
    !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Permission denied")
}

#[test]
fn another_user_can_neither_list_nor_read_a_private_homes_days() {
    if !fuse_available("another_user_can_neither_list_nor_read_a_private_homes_days") {
        return;
    }
    let alice = User::create("snapfs-t-alice");
    let bob = User::create("snapfs-t-bob");
    let eve = User::create("snapfs-t-eve");
    let tmp = shared_tempdir();
    let repo = tmp.path().join("repo");
    let homes = tmp.path().join("homes");
    for (user, mode) in [(&alice, 0o700), (&bob, 0o711)] {
        let home = make_home(&homes, user, mode);
        ok(snapfs(&repo)
            .args([
                "backup",
                "--account",
                &user.name,
                "--time",
                "2026-11-24 02:00:00",
            ])
            .arg(&home)
            .output()
            .unwrap());
    }
    let mounts = tmp.path().join("mnt");
    let mut mounted = Vec::new();
    for user in [&alice, &bob] {
        let at = mounts.join(&user.name);
        ok(snapfs(&repo)
            .args([
                "mount",
                "--daemon",
                "--utc",
                "--allow-other",
                "--mkdir",
                "--account",
            ])
            .arg(&user.name)
            .arg(&at)
            .output()
            .unwrap());
        mounted.push(Unmount(at));
    }
    let day = |user: &User| mounts.join(&user.name).join("2026-11-24");

    // The day folders carry the homes' owners and modes.
    for (user, mode) in [(&alice, 0o700), (&bob, 0o711)] {
        let meta = std::fs::metadata(day(user)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, mode, "{}", user.name);
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), user.uid);
    }
    // Eve, and each tenant in the other's, can neither list nor read.
    for (reader, owner) in [(&eve, &alice), (&eve, &bob), (&bob, &alice), (&alice, &bob)] {
        let ls = reader.command("ls").arg(day(owner)).output().unwrap();
        assert!(
            denied(&ls),
            "{} listed {}'s day: {ls:?}",
            reader.name,
            owner.name
        );
        let cat = reader
            .command("cat")
            .arg(day(owner).join("notes.txt"))
            .output()
            .unwrap();
        assert!(
            denied(&cat),
            "{} read {}'s notes: {cat:?}",
            reader.name,
            owner.name
        );
    }
    // The 0700 home's files are out of reach even by name.
    let cat = eve
        .command("cat")
        .arg(day(&alice).join("www/index.html"))
        .output()
        .unwrap();
    assert!(denied(&cat), "{cat:?}");
    // Each owner reads their own.
    for user in [&alice, &bob] {
        let ls = ok(user.command("ls").arg(day(user)).output().unwrap());
        assert!(String::from_utf8_lossy(&ls.stdout).contains("notes.txt"));
        let cat = ok(user
            .command("cat")
            .arg(day(user).join("notes.txt"))
            .output()
            .unwrap());
        assert_eq!(cat.stdout, b"private notes");
    }
}
