//! Binds of a real snapfs mount into real users' homes
//! (`snapfs::mount::bind`), used over real OpenSSH on 127.0.0.1: each user
//! reads their own backups at `~/admin/backup` over SSH and SFTP, chrooted
//! SFTP included, cannot write there, and cannot read another's. A killed
//! daemon leaves stale binds that `clear` removes, moved ones included.
//!
//! The mount is `--per-account`: the folder bound is the account's
//! (0500, its user's), holding `latest` and one folder per day.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use snapfs::mount::bind::{self, Bound, Owner, Source, Template};
use snapfs::mount::mountpoint::{self, Unmounted};
use snapfs::nofollow::{self, Missing, SEARCH_FLAGS};

use crate::sshd::{self, chroot_tempdir, shared_tempdir, Sshd};
use crate::support::{daemon_pid, fuse_available, run, TenantUser as User, Unmount, SNAPFS};

const ALICE_DAY: &str = "2026-11-24";
const BOB_DAY: &str = "2026-11-23";

/// Two users with homes in a root-owned folder (alice's root's, as a
/// chroot needs; bob's his own, 0700), a backup of each one's site, the
/// repository mounted with `--allow-other`, and an sshd that chroots
/// alice.
struct Host {
    alice: User,
    bob: User,
    /// Homes; under /run, root's all the way up.
    base: tempfile::TempDir,
    /// Repository, sites, mount, sshd files.
    tmp: tempfile::TempDir,
    template: Template,
    sshd: Sshd,
    _unmount: Unmount,
}

impl Host {
    fn new(prefix: &str) -> Host {
        let alice = User::create(&format!("{prefix}-alice"));
        let bob = User::create(&format!("{prefix}-bob"));
        let (base, tmp) = (chroot_tempdir(), shared_tempdir());
        let repo = tmp.path().join("repo");
        for (user, day) in [(&alice, ALICE_DAY), (&bob, BOB_DAY)] {
            let site = tmp.path().join("sites").join(&user.name);
            std::fs::create_dir_all(site.join("www/img")).unwrap();
            std::fs::write(site.join("www/index.html"), &user.name).unwrap();
            std::fs::write(site.join("www/img/logo.bin"), vec![user.uid as u8; 300_000]).unwrap();
            user.give(&site);
            std::fs::set_permissions(&site, std::fs::Permissions::from_mode(0o700)).unwrap();
            run(Command::new(SNAPFS)
                .arg("--repo")
                .arg(&repo)
                .args(["backup", "--account", &user.name, "--time"])
                .arg(format!("{day}T02:00:00Z"))
                .arg(&site));
            let home = base.path().join("home").join(&user.name);
            std::fs::create_dir_all(&home).unwrap();
            run(Command::new("usermod").arg("-d").arg(&home).arg(&user.name));
        }
        let bob_home = base.path().join("home").join(&bob.name);
        bob.give(&bob_home);
        std::fs::set_permissions(&bob_home, std::fs::Permissions::from_mode(0o700)).unwrap();
        let template = format!("{}/home/{{account}}/admin/backup", base.path().display());
        let mut host = Host {
            sshd: Sshd::start(&tmp.path().join("ssh")),
            _unmount: Unmount(tmp.path().join("mnt")),
            template: Template::parse(&template).unwrap(),
            alice,
            bob,
            base,
            tmp,
        };
        host.mount();
        for user in [&host.alice, &host.bob] {
            host.sshd.allow(&user.name);
        }
        host.sshd.chroot(&host.alice.name);
        host
    }

    fn mnt(&self) -> PathBuf {
        self.tmp.path().join("mnt")
    }

    fn mount(&mut self) {
        std::fs::create_dir_all(self.mnt()).unwrap();
        run(Command::new(SNAPFS)
            .arg("--repo")
            .arg(self.tmp.path().join("repo"))
            .args(["mount", "--daemon", "--per-account", "--utc"])
            .arg(self.mnt()));
    }

    fn site(&self, user: &User) -> PathBuf {
        self.tmp.path().join("sites").join(&user.name)
    }

    fn target(&self, user: &User) -> PathBuf {
        self.template.target(&user.name).unwrap()
    }

    /// Bind `user`'s folder of the mount at their `~/admin/backup`.
    fn bind(&self, user: &User) -> snapfs::error::Result<Bound> {
        let root: OwnedFd =
            nofollow::open_folder("mount", &self.mnt(), Missing::Refuse, SEARCH_FLAGS)?;
        let source = Source::in_mount(root.as_fd(), &user.name)?;
        let owner = Owner {
            uid: user.uid,
            gid: user.gid,
        };
        bind::bind(&source, &self.template, &user.name, owner)
    }

    /// The snapfs mounts whose mount point is below `dir`.
    fn snapfs_mounts_below(&self, dir: &Path) -> Vec<mountpoint::MountInfo> {
        let table = mountpoint::mountinfo().unwrap();
        table
            .into_iter()
            .filter(|m| m.fstype == mountpoint::FSTYPE && m.mount_point.starts_with(dir))
            .collect()
    }

    fn clear(&self) -> bind::Cleared {
        bind::clear(&self.mnt(), &self.template, true).unwrap()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = bind::clear(&self.mnt(), &self.template, true);
    }
}

fn ok(what: &str, out: Output, sshd: &Sshd) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}\nsshd: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        sshd.log()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn refused(what: &str, out: Output, why: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains(why),
        "{what}: {stderr}"
    );
}

fn diff_r(a: &Path, b: &Path) {
    let out = Command::new("diff")
        .arg("-r")
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn each_user_reads_their_own_bind_over_ssh_and_sftp_and_nobody_elses() {
    let test = "each_user_reads_their_own_bind_over_ssh_and_sftp_and_nobody_elses";
    if !fuse_available(test) || !sshd::available(test) {
        return;
    }
    let host = Host::new("snapfs-tb1");
    let (alice, bob) = (&host.alice, &host.bob);
    let Bound::Made(alice_id) = host.bind(alice).unwrap() else {
        panic!("alice's bind not made")
    };
    assert!(matches!(host.bind(bob).unwrap(), Bound::Made(_)));
    assert_eq!(host.bind(alice).unwrap(), Bound::Already(alice_id));
    // admin/ was made for alice, in her root-owned (chroot) home.
    let admin = host.target(alice).parent().unwrap().to_path_buf();
    let meta = std::fs::symlink_metadata(&admin).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), alice.uid);
    for m in host.snapfs_mounts_below(host.base.path()) {
        for option in ["ro", "nosuid", "nodev", "noexec"] {
            assert!(m.has_option(option), "{m:?}");
        }
    }
    // Nothing but a snapfs mount is a source.
    let tmp_fd = nofollow::open_folder("tmp", host.tmp.path(), Missing::Refuse, SEARCH_FLAGS);
    let err = Source::in_mount(tmp_fd.unwrap().as_fd(), "sites")
        .unwrap_err()
        .to_string();
    assert!(err.contains("not on a snapfs one"), "{err}");

    // Alice, chrooted: her home is `/`, her backups at /admin/backup.
    let got = host.tmp.path().join("got-alice");
    std::fs::create_dir_all(&got).unwrap();
    let said = ok(
        "alice's sftp",
        host.sshd.sftp(
            &alice.name,
            &format!(
                "ls -1 /\nls -1 /admin/backup\nget -r /admin/backup/{ALICE_DAY} {}\n",
                got.display()
            ),
        ),
        &host.sshd,
    );
    assert!(
        said.contains("/admin\n") && !said.contains("/etc"),
        "chrooted: {said}"
    );
    assert!(
        said.contains(&format!("/admin/backup/{ALICE_DAY}\n")),
        "{said}"
    );
    assert!(said.contains("/admin/backup/latest\n"), "{said}");
    assert!(!said.contains(BOB_DAY), "only her own days: {said}");
    diff_r(&host.site(alice), &got.join(ALICE_DAY));
    std::fs::write(host.tmp.path().join("upload"), b"x").unwrap();
    let put = format!(
        "put {} /admin/backup/latest/www/x\n",
        host.tmp.path().join("upload").display()
    );
    // EROFS: OpenSSH's SFTP has no code for it and says "Failure".
    refused("alice's put", host.sshd.sftp(&alice.name, &put), "Failure");
    assert!(!host.target(alice).join("latest/www/x").exists());
    // Chrooted: no shell.
    let shell = host.sshd.ssh(&alice.name, "cat /etc/passwd");
    assert!(
        !String::from_utf8_lossy(&shell.stdout).contains("root:"),
        "{shell:?}"
    );

    // Bob, over SSH: his own backups, read-only; alice's refused.
    let said = ok(
        "bob's ssh",
        host.sshd
            .ssh(&bob.name, "cat ~/admin/backup/latest/www/index.html"),
        &host.sshd,
    );
    assert_eq!(said, bob.name);
    refused(
        "bob's touch",
        host.sshd
            .ssh(&bob.name, "touch ~/admin/backup/latest/www/new"),
        "Read-only file system",
    );
    let theirs = host.target(alice).display().to_string();
    for command in [
        format!("ls {theirs}"),
        format!("cat {theirs}/latest/www/index.html"),
        format!("ls {}/{}", host.mnt().display(), alice.name),
        format!(
            "cat {}/{}/{ALICE_DAY}/www/index.html",
            host.mnt().display(),
            alice.name
        ),
    ] {
        refused(
            &command,
            host.sshd.ssh(&bob.name, &command),
            "Permission denied",
        );
    }
    // And over SFTP (not chrooted, so alice's home is on his path). sftp
    // globs the name first, says "not found" when it may not look, and
    // carries on (exit 0).
    let get = format!(
        "get {theirs}/{ALICE_DAY}/www/index.html {}\n",
        host.tmp.path().display()
    );
    let out = host.sshd.sftp(&bob.name, &get);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not found"), "bob's get: {stderr}");
    assert!(!host.tmp.path().join("index.html").exists());
    let ls = format!("ls {theirs}\n");
    refused(
        "bob's ls",
        host.sshd.sftp(&bob.name, &ls),
        "Permission denied",
    );

    // A link planted at alice's backup folder, to bob's: refused both
    // ways, and bob's bind is untouched.
    let backup = host.target(alice);
    assert_eq!(
        bind::unbind(&backup, false).unwrap(),
        Unmounted::Unmounted(1)
    );
    let bobs = host.target(bob);
    let swap = alice
        .command("sh")
        .arg("-c")
        .arg(format!(
            "rmdir {0} && ln -s {1} {0}",
            backup.display(),
            bobs.display()
        ))
        .output()
        .unwrap();
    assert!(swap.status.success(), "{swap:?}");
    let err = host.bind(alice).unwrap_err().to_string();
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(bind::unbind(&backup, true).unwrap(), Unmounted::NotMounted);
    let said = ok(
        "bob's ssh",
        host.sshd
            .ssh(&bob.name, "cat ~/admin/backup/latest/www/index.html"),
        &host.sshd,
    );
    assert_eq!(said, bob.name, "bob's bind is still there");
    assert_eq!(
        host.snapfs_mounts_below(host.base.path()).len(),
        1,
        "bob's only"
    );
}

#[test]
fn binds_left_by_a_killed_daemon_are_cleared_moved_ones_too_and_made_again() {
    let test = "binds_left_by_a_killed_daemon_are_cleared_moved_ones_too_and_made_again";
    if !fuse_available(test) || !sshd::available(test) {
        return;
    }
    let mut host = Host::new("snapfs-tb2");
    for user in [&host.alice, &host.bob] {
        assert!(matches!(host.bind(user).unwrap(), Bound::Made(_)));
    }
    // Bob moves his bind away with his admin folder (he owns both).
    let bob_admin = host.target(&host.bob).parent().unwrap().to_path_buf();
    let moved = bob_admin.with_file_name("admin-moved");
    let mv = host
        .bob
        .command("mv")
        .arg(&bob_admin)
        .arg(&moved)
        .output()
        .unwrap();
    assert!(mv.status.success(), "{mv:?}");

    unsafe { libc::kill(daemon_pid(&host.mnt()), libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(host.mnt()).is_ok() {
        assert!(
            Instant::now() < deadline,
            "mount still answers after SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // What a user sees meanwhile: an error, not an empty folder. The
    // kernel says ENOTCONN, or ECONNABORTED when the connection was torn
    // down while a request of ours was still in flight.
    let err = std::fs::read_dir(host.target(&host.alice)).unwrap_err();
    assert!(
        matches!(
            err.raw_os_error(),
            Some(libc::ENOTCONN | libc::ECONNABORTED)
        ),
        "{err}"
    );

    let cleared = host.clear();
    assert!(cleared.failed.is_empty(), "{:?}", cleared.failed);
    let mut want = vec![
        host.target(&host.alice),
        moved.join("backup"),
        host.mnt().canonicalize().unwrap(),
    ];
    want.sort();
    let mut got = cleared.unmounted.clone();
    got.sort();
    assert_eq!(got, want);
    assert!(host.snapfs_mounts_below(Path::new("/")).iter().all(|m| {
        !m.mount_point.starts_with(host.base.path()) && !m.mount_point.starts_with(host.tmp.path())
    }));
    assert_eq!(
        std::fs::read_dir(host.target(&host.alice)).unwrap().count(),
        0
    );

    // The restart: mount, bind again (bob's place is made anew).
    host.mount();
    for user in [&host.alice, &host.bob] {
        assert!(matches!(host.bind(user).unwrap(), Bound::Made(_)));
    }
    let page = std::fs::read(host.target(&host.alice).join("latest/www/index.html")).unwrap();
    assert_eq!(page, host.alice.name.as_bytes());
    // And at a stop, clear takes away live binds and the mount alike.
    let cleared = host.clear();
    assert_eq!(cleared.unmounted.len(), 3, "{cleared:?}");
    assert!(host.snapfs_mounts_below(host.base.path()).is_empty());
}

/// A FUSE mount over alice's `~/admin` whose daemon never answers. On a
/// host where /dev/fuse is 0666 (Debian's), alice can make one herself
/// with fusermount3; here root plays her: a snapfs mount of the same
/// repository bound over the folder, its daemon stopped.
struct Planted {
    pid: i32,
    at: PathBuf,
    _mount: Unmount,
}

impl Planted {
    fn new(host: &Host, at: &Path) -> Planted {
        let mnt = host.tmp.path().join("planted");
        std::fs::create_dir_all(&mnt).unwrap();
        run(Command::new(SNAPFS)
            .arg("--repo")
            .arg(host.tmp.path().join("repo"))
            .args(["mount", "--daemon", "--allow-other"])
            .arg(&mnt));
        let planted = Planted {
            pid: daemon_pid(&mnt),
            at: at.to_path_buf(),
            _mount: Unmount(mnt.clone()),
        };
        rustix::mount::mount_bind(&mnt, at).unwrap();
        unsafe { libc::kill(planted.pid, libc::SIGSTOP) };
        planted
    }

    /// `f`'s result, or a failure if it waits on the stopped daemon (which
    /// is then let go, so that `f` ends).
    fn promptly<T: Send>(&self, what: &str, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::channel();
            scope.spawn(move || tx.send(f()));
            rx.recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| {
                    unsafe { libc::kill(self.pid, libc::SIGCONT) };
                    panic!("{what} waited for the FUSE daemon planted at ~/admin")
                })
        })
    }
}

impl Drop for Planted {
    fn drop(&mut self) {
        unsafe { libc::kill(self.pid, libc::SIGCONT) };
        // Test clean-up, by path: the folder is ours.
        let _ = rustix::mount::unmount(&self.at, rustix::mount::UnmountFlags::DETACH);
    }
}

#[test]
fn a_fuse_mount_planted_on_the_way_is_never_entered() {
    let test = "a_fuse_mount_planted_on_the_way_is_never_entered";
    if !fuse_available(test) || !sshd::available(test) {
        return;
    }
    let host = Host::new("snapfs-tb3");
    for user in [&host.alice, &host.bob] {
        assert!(matches!(host.bind(user).unwrap(), Bound::Made(_)));
    }
    let alice_target = host.target(&host.alice);
    let planted = Planted::new(&host, alice_target.parent().unwrap());

    let err = planted.promptly("bind", || host.bind(&host.alice).unwrap_err().to_string());
    assert!(err.contains("FUSE"), "{err}");
    let err = planted.promptly("unbind", || {
        bind::unbind(&alice_target, true).unwrap_err().to_string()
    });
    assert!(err.contains("FUSE"), "{err}");
    // The other binds and the mount are cleared; alice's is named.
    let cleared = planted.promptly("clear", || host.clear());
    let failed: Vec<&PathBuf> = cleared.failed.iter().map(|(p, _)| p).collect();
    assert_eq!(failed, [&alice_target], "{cleared:?}");
    assert_eq!(cleared.unmounted.len(), 2, "{cleared:?}");

    // Once the planted mount is gone, alice's bind is cleared too.
    drop(planted);
    let cleared = host.clear();
    assert_eq!(cleared.unmounted, [alice_target], "{cleared:?}");
    assert!(host.snapfs_mounts_below(host.base.path()).is_empty());
}

/// Not a check: how long binding and clearing take with many homes.
/// `N=1000 cargo test --release --test tenant -- --ignored --nocapture
/// binds::measure`.
#[test]
#[ignore]
fn measure_binding_and_clearing_many_homes() {
    if !fuse_available("measure") {
        return;
    }
    let n: usize = std::env::var("N").map_or(200, |v| v.parse().unwrap());
    let host = Host::new("snapfs-tb4");
    let homes = host.base.path().join("home");
    let names: Vec<String> = (0..n).map(|i| format!("u{i}")).collect();
    for name in &names {
        std::fs::create_dir_all(homes.join(name)).unwrap();
    }
    let root = nofollow::open_folder("mount", &host.mnt(), Missing::Refuse, SEARCH_FLAGS).unwrap();
    let source = Source::in_mount(root.as_fd(), &host.alice.name).unwrap();
    let owner = Owner { uid: 0, gid: 0 };
    let started = Instant::now();
    for name in &names {
        assert!(matches!(
            bind::bind(&source, &host.template, name, owner).unwrap(),
            Bound::Made(_)
        ));
    }
    let made = started.elapsed();
    let started = Instant::now();
    for name in &names {
        assert!(matches!(
            bind::bind(&source, &host.template, name, owner).unwrap(),
            Bound::Already(_)
        ));
    }
    let again = started.elapsed();
    unsafe { libc::kill(daemon_pid(&host.mnt()), libc::SIGKILL) };
    while std::fs::read_dir(host.mnt()).is_ok() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    let cleared = host.clear();
    let clear = started.elapsed();
    assert_eq!(cleared.unmounted.len(), n + 1, "{:?}", cleared.failed);
    eprintln!("{n} homes: bound in {made:?}, bound again (already) in {again:?}, stale binds and mount cleared in {clear:?}");
}
