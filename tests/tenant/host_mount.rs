//! The whole host's mount as the packaged unit runs it:
//! `snapfs mount --per-account --bind-homes TEMPLATE`, one process binding
//! every account's folder into its home, with real users over a real sshd.
//! A new account's first backup shows in its home without a restart; a
//! SIGKILLed daemon leaves an error (not an empty folder) until the unit's
//! restart, which clears what it left and binds again; a stop takes every
//! bind away.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use snapfs::mount::mountpoint;

use crate::sshd::{self, chroot_tempdir, shared_tempdir, Sshd};
use crate::support::{daemon_pid, fuse_available, run, TenantUser as User, Unmount, SNAPFS};

const DAY: &str = "2026-11-24";

struct Host {
    base: tempfile::TempDir,
    tmp: tempfile::TempDir,
    sshd: Sshd,
    _unmount: Unmount,
}

impl Host {
    fn repo(&self) -> PathBuf {
        self.tmp.path().join("repo")
    }

    fn mnt(&self) -> PathBuf {
        self.tmp.path().join("mnt")
    }

    fn template(&self) -> String {
        format!(
            "{}/home/{{account}}/admin/backup",
            self.base.path().display()
        )
    }

    fn target(&self, user: &User) -> PathBuf {
        self.base
            .path()
            .join("home")
            .join(&user.name)
            .join("admin/backup")
    }

    /// A home for `user` (0700, theirs) and a backup of a site of theirs.
    fn add(&self, user: &User) {
        let site = self.tmp.path().join("sites").join(&user.name);
        std::fs::create_dir_all(site.join("www")).unwrap();
        std::fs::write(site.join("www/index.html"), &user.name).unwrap();
        user.give(&site);
        let home = self.base.path().join("home").join(&user.name);
        std::fs::create_dir_all(&home).unwrap();
        user.give(&home);
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
        run(Command::new("usermod").arg("-d").arg(&home).arg(&user.name));
        run(Command::new(SNAPFS)
            .arg("--repo")
            .arg(self.repo())
            .args(["backup", "--account", &user.name, "--time"])
            .arg(format!("{DAY}T02:00:00Z"))
            .arg(&site));
        self.sshd.allow(&user.name);
    }

    /// What the packaged unit runs (as a daemon here, to be killed).
    fn start(&self) {
        run(Command::new(SNAPFS)
            .arg("--repo")
            .arg(self.repo())
            .args(["mount", "--daemon", "--utc", "--mkdir", "--per-account"])
            .arg("--bind-homes")
            .arg(self.template())
            .arg(self.mnt()));
    }

    fn snapfs_mounts_below(&self, dir: &Path) -> Vec<PathBuf> {
        mountpoint::mountinfo()
            .unwrap()
            .into_iter()
            .filter(|m| m.fstype == mountpoint::FSTYPE && m.mount_point.starts_with(dir))
            .map(|m| m.mount_point)
            .collect()
    }
}

/// Wait until `user` reads their page through their home, over SSH.
fn wait_for_page(host: &Host, user: &User) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = host
            .sshd
            .ssh(&user.name, "cat ~/admin/backup/latest/www/index.html");
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout), user.name);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}'s backups never showed in their home: {}",
            user.name,
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn refused(what: &str, out: Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("Permission denied"),
        "{what}: {stderr}"
    );
}

#[test]
fn one_daemon_binds_every_home_new_ones_too_and_comes_back_after_a_kill() {
    let test = "one_daemon_binds_every_home_new_ones_too_and_comes_back_after_a_kill";
    if !fuse_available(test) || !sshd::available(test) {
        return;
    }
    let alice = User::create("snapfs-thm-alice");
    let bob = User::create("snapfs-thm-bob");
    let carol = User::create("snapfs-thm-carol");
    let (base, tmp) = (chroot_tempdir(), shared_tempdir());
    let host = Host {
        sshd: Sshd::start(&tmp.path().join("ssh")),
        _unmount: Unmount(tmp.path().join("mnt")),
        base,
        tmp,
    };
    host.add(&alice);
    host.add(&bob);
    host.start();
    for user in [&alice, &bob] {
        wait_for_page(&host, user);
    }
    // Alice sees her days, and nothing of bob's from anywhere.
    let ls = host.sshd.ssh(&alice.name, "ls ~/admin/backup");
    assert_eq!(
        String::from_utf8_lossy(&ls.stdout),
        format!("{DAY}\nlatest\n")
    );
    let bobs = [
        host.target(&bob).join("latest/www/index.html"),
        host.mnt().join(&bob.name).join(DAY).join("www/index.html"),
    ];
    for path in &bobs {
        let cat = format!("cat {}", path.display());
        refused(&cat, host.sshd.ssh(&alice.name, &cat));
    }
    let ls_mnt = format!("ls {}/{}", host.mnt().display(), bob.name);
    refused(&ls_mnt, host.sshd.ssh(&alice.name, &ls_mnt));

    // Carol's first backup, while the daemon runs: in her home within
    // seconds, no restart.
    host.add(&carol);
    wait_for_page(&host, &carol);

    // SIGKILL: an error in the homes, not an empty folder.
    let pid = daemon_pid(&host.mnt());
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(host.mnt()).is_ok() {
        assert!(Instant::now() < deadline, "the mount still answers");
        std::thread::sleep(Duration::from_millis(50));
    }
    let err = std::fs::read_dir(host.target(&alice)).unwrap_err();
    assert!(
        matches!(
            err.raw_os_error(),
            Some(libc::ENOTCONN | libc::ECONNABORTED)
        ),
        "{err}"
    );
    // The unit's restart: the same command, which clears what was left.
    host.start();
    for user in [&alice, &bob, &carol] {
        wait_for_page(&host, user);
    }
    let mut mounts = host.snapfs_mounts_below(host.base.path());
    mounts.sort();
    let mut want: Vec<PathBuf> = [&alice, &bob, &carol]
        .into_iter()
        .map(|u| host.target(u))
        .collect();
    want.sort();
    assert_eq!(mounts, want, "one bind per home, nothing stale");
    assert_eq!(host.snapfs_mounts_below(host.tmp.path()), [host.mnt()]);

    // A stop takes every bind away, then the mount.
    let pid = daemon_pid(&host.mnt());
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !host.snapfs_mounts_below(host.base.path()).is_empty()
        || !host.snapfs_mounts_below(host.tmp.path()).is_empty()
    {
        assert!(Instant::now() < deadline, "binds left after a stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(std::fs::read_dir(host.target(&alice)).unwrap().count(), 0);
}
