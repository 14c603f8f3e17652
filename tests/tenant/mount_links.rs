//! Mount points that run through a tenant's folders: a link planted at
//! `~/admin` or `~/admin/backup` never moves a mount, or an unmount,
//! onto another home or a system folder.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const SNAPFS: &str = env!("CARGO_BIN_EXE_snapfs");

fn snapfs(repo: &Path, args: &[&str], path: &Path) -> Output {
    Command::new(SNAPFS)
        .arg("--repo")
        .arg(repo)
        .args(args)
        .arg(path)
        .output()
        .unwrap()
}

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "{out:?}");
    out
}

fn mounted_type(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines().rev().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        (Path::new(left.split(' ').nth(4)?) == path)
            .then(|| right.split(' ').next().unwrap().to_string())
    })
}

/// Two homes under a temp folder, a repository with one backup of each,
/// bob's backups mounted at his `admin/backup`, and a root-only folder.
struct Host {
    dir: tempfile::TempDir,
    repo: PathBuf,
}

impl Host {
    fn new() -> Host {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let repo = root.join("repo");
        for account in ["alice", "bob"] {
            let home = root.join("home").join(account);
            std::fs::create_dir_all(home.join("www")).unwrap();
            std::fs::write(home.join("www/index.html"), account).unwrap();
            ok(Command::new(SNAPFS)
                .arg("--repo")
                .arg(&repo)
                .args([
                    "backup",
                    "--account",
                    account,
                    "--time",
                    "2026-11-24 02:00:00",
                ])
                .arg(&home)
                .output()
                .unwrap());
        }
        let private = root.join("private");
        std::fs::create_dir_all(&private).unwrap();
        std::fs::write(private.join("secret"), b"root only").unwrap();
        let host = Host { dir, repo };
        host.mount_bob();
        host
    }

    /// Bob's backups at his `admin/backup`, as the unit mounts them.
    fn mount_bob(&self) {
        let bob = self.backup_dir("bob");
        ok(snapfs(
            &self.repo,
            &[
                "mount",
                "--daemon",
                "--allow-other",
                "--account",
                "bob",
                "--mkdir",
            ],
            &bob,
        ));
        assert_eq!(mounted_type(&bob).as_deref(), Some("fuse.snapfs"));
    }

    fn home(&self, account: &str) -> PathBuf {
        self.dir.path().join("home").join(account)
    }

    fn backup_dir(&self, account: &str) -> PathBuf {
        self.home(account).join("admin/backup")
    }

    fn private(&self) -> PathBuf {
        self.dir.path().join("private")
    }

    /// Bob's mount is still there and still shows bob's backups.
    fn assert_bob_untouched(&self) {
        let bob = self.backup_dir("bob");
        assert_eq!(mounted_type(&bob).as_deref(), Some("fuse.snapfs"));
        let page = std::fs::read(bob.join("latest/www/index.html")).unwrap();
        assert_eq!(page, b"bob");
    }

    fn assert_private_untouched(&self) {
        assert_eq!(mounted_type(&self.private()), None);
        let secret = std::fs::read(self.private().join("secret")).unwrap();
        assert_eq!(secret, b"root only");
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        for account in ["alice", "bob"] {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.backup_dir(account))
                .output();
        }
    }
}

#[test]
fn links_at_admin_or_backup_never_move_a_mount_or_an_unmount() {
    if !crate::support::fuse_available("links_at_admin_or_backup_never_move_a_mount_or_an_unmount")
    {
        return;
    }
    let host = Host::new();
    let alice_admin = host.home("alice").join("admin");
    let alice_backup = alice_admin.join("backup");
    let mount_alice = [
        "mount",
        "--daemon",
        "--allow-other",
        "--account",
        "alice",
        "--mkdir",
    ];

    // ~/admin -> bob's admin: refused both ways, bob's mount untouched.
    std::os::unix::fs::symlink(host.home("bob").join("admin"), &alice_admin).unwrap();
    for args in [&mount_alice[..], &["unmount"], &["unmount", "--lazy"]] {
        let out = snapfs(&host.repo, args, &alice_backup);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("symbolic link"), "{args:?}: {stderr}");
        host.assert_bob_untouched();
    }

    // ~/admin/backup -> a root-only folder: not mounted over, not
    // unmounted (nothing of ours is there).
    std::fs::remove_file(&alice_admin).unwrap();
    std::fs::create_dir(&alice_admin).unwrap();
    std::os::unix::fs::symlink(host.private(), &alice_backup).unwrap();
    let out = snapfs(&host.repo, &mount_alice, &alice_backup);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("symbolic link"));
    host.assert_private_untouched();
    let out = ok(snapfs(&host.repo, &["unmount"], &alice_backup));
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing mounted"));
    host.assert_private_untouched();

    // ~/admin/backup -> bob's mounted backups: unmounting alice's name
    // must not unmount bob's.
    std::fs::remove_file(&alice_backup).unwrap();
    std::os::unix::fs::symlink(host.backup_dir("bob"), &alice_backup).unwrap();
    let out = ok(snapfs(&host.repo, &["unmount", "--lazy"], &alice_backup));
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing mounted"));
    host.assert_bob_untouched();

    // Links gone: alice's own mount works and unmounts cleanly.
    std::fs::remove_file(&alice_backup).unwrap();
    ok(snapfs(&host.repo, &mount_alice, &alice_backup));
    assert_eq!(
        std::fs::read(alice_backup.join("latest/www/index.html")).unwrap(),
        b"alice"
    );
    ok(snapfs(&host.repo, &["unmount"], &alice_backup));
    assert_eq!(mounted_type(&alice_backup), None);
    host.assert_bob_untouched();
}

#[test]
fn a_killed_mount_is_cleared_and_mounted_again_by_the_units_commands() {
    if !crate::support::fuse_available("a_killed_mount_is_cleared_and_mounted_again") {
        return;
    }
    let host = Host::new();
    let bob = host.backup_dir("bob");
    // Kill bob's daemon: the mount point is left "not connected".
    let pid = crate::support::daemon_pid(&bob);
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(&bob).is_ok() {
        assert!(
            Instant::now() < deadline,
            "mount still answers after SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // What snapfs-mount@.service runs on its restart.
    ok(snapfs(&host.repo, &["unmount", "--lazy"], &bob));
    assert_eq!(mounted_type(&bob), None, "the stale mount is gone");
    host.mount_bob();
    host.assert_bob_untouched();
}
