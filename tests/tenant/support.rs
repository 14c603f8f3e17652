//! What every hostile-tenant test needs: a real unprivileged user, and a
//! racer process that runs as that user while root works on its files.
//!
//! A racer is an `#[ignore]`d test of this binary. [`spawn_as`] copies the
//! binary to a folder the user can reach and runs just that test as the
//! user, with [`RACER_ENV`] set; run any other way (`cargo test --
//! --ignored`), a racer returns at once. [`Racer::stop`] asks it to finish
//! and returns what it printed.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const SNAPFS: &str = env!("CARGO_BIN_EXE_snapfs");

/// Set in a racer's environment: "you are the racer".
pub const RACER_ENV: &str = "SNAPFS_TENANT_RACER";
/// The file whose appearance tells a racer to stop.
const STOP_ENV: &str = "SNAPFS_TENANT_RACER_STOP";
/// A racer that nobody stops (its test was killed) gives up after this.
const RACER_MAX: Duration = Duration::from_secs(600);

/// Whether these tests can run here: as root, with `useradd`. Otherwise
/// they skip with a message, unless `SNAPFS_REQUIRE_FUSE=1` (CI), which
/// makes that a failure (the variable is shared with the kernel-mount
/// tests: it means "the privileged tests must run").
pub fn can_run(test: &str) -> bool {
    let root = rustix::process::geteuid().is_root();
    let useradd = Path::new("/usr/sbin/useradd").exists();
    if root && useradd {
        return true;
    }
    let why = format!("{test}: needs root and useradd; root: {root}, useradd: {useradd}");
    if std::env::var("SNAPFS_REQUIRE_FUSE").as_deref() == Ok("1") {
        panic!("{why} (SNAPFS_REQUIRE_FUSE=1)");
    }
    eprintln!("skipping {why}");
    false
}

/// `can_run`, and a kernel mount too: /dev/fuse and fusermount3.
pub fn fuse_available(test: &str) -> bool {
    let missing: Vec<&str> = ["/dev/fuse", "/usr/bin/fusermount3"]
        .into_iter()
        .filter(|path| !Path::new(path).exists())
        .collect();
    if missing.is_empty() {
        return can_run(test);
    }
    let why = format!("{test}: needs /dev/fuse and fusermount3; missing: {missing:?}");
    if std::env::var("SNAPFS_REQUIRE_FUSE").as_deref() == Ok("1") {
        panic!("{why} (SNAPFS_REQUIRE_FUSE=1)");
    }
    eprintln!("skipping {why}");
    false
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A real, unprivileged user; removed again when dropped.
pub struct TenantUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl TenantUser {
    /// A fresh user `name` with its own group and no home (the test makes
    /// one where it wants it). A user of that name left over by a killed
    /// run is removed first.
    pub fn create(name: &str) -> TenantUser {
        let _ = Command::new("userdel").arg(name).output();
        run(Command::new("useradd").args(["-M", "-U", "-s", "/bin/sh", name]));
        let id = |flag: &str| -> u32 {
            let out = run(Command::new("id").arg(flag).arg(name));
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        TenantUser {
            name: name.to_string(),
            uid: id("-u"),
            gid: id("-g"),
        }
    }

    /// A command that runs as this user (std also drops the supplementary
    /// groups when root sets a uid).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(program);
        command.uid(self.uid).gid(self.gid);
        command
    }

    /// Give `path` and everything below it to this user (symlinks
    /// themselves, not their targets).
    pub fn give(&self, path: &Path) {
        let own = |p: &Path| std::os::unix::fs::lchown(p, Some(self.uid), Some(self.gid)).unwrap();
        own(path);
        if std::fs::symlink_metadata(path).unwrap().is_dir() {
            for entry in std::fs::read_dir(path).unwrap() {
                self.give(&entry.unwrap().path());
            }
        }
    }
}

impl Drop for TenantUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}

/// A temp folder others may traverse (0755): a tenant's home can live in it.
pub fn shared_tempdir() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    tmp
}

/// A racer process running as a tenant.
pub struct Racer {
    child: Option<Child>,
    stop_file: PathBuf,
    /// Holds the copy of the test binary and the stop file.
    _dir: tempfile::TempDir,
}

/// Start the racer test `racer` (its full name, `module::function`) of this
/// binary as `user`, with `env` added to its environment.
pub fn spawn_as(user: &TenantUser, racer: &str, env: &[(&str, &OsStr)]) -> Racer {
    // The binary lives under target/, which the user may not be able to
    // reach: copy it into a folder that it can.
    let dir = shared_tempdir();
    let exe = dir.path().join("tenant-tests");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let stop_file = dir.path().join("stop");
    let mut cmd = Command::new(&exe);
    cmd.args([
        racer,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .current_dir(dir.path())
    .env(RACER_ENV, "1")
    .env(STOP_ENV, &stop_file)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    // std drops the supplementary groups too when root sets a uid.
    .uid(user.uid)
    .gid(user.gid);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    Racer {
        child: Some(child),
        stop_file,
        _dir: dir,
    }
}

impl Racer {
    /// Whether it is still racing (it exits early only when it failed).
    pub fn is_running(&mut self) -> bool {
        let child = self.child.as_mut().expect("not stopped");
        child.try_wait().unwrap().is_none()
    }

    /// Ask it to finish; returns the rounds it ran (see [`race`]) and its
    /// output. It is killed if it has not finished after 10 s.
    pub fn stop(self) -> (Option<u64>, Output) {
        let out = self.stop_output();
        let said = String::from_utf8_lossy(&out.stdout);
        let rounds = said
            .split("racer: ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok());
        (rounds, out)
    }

    fn stop_output(mut self) -> Output {
        std::fs::write(&self.stop_file, b"").unwrap();
        let mut child = self.child.take().expect("stopped once");
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait_with_output().unwrap()
    }
}

impl Drop for Racer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// In a racer: the value of its variable `name`, or `None` when this is not
/// a racer run (the test then returns at once).
pub fn racer_env(name: &str) -> Option<PathBuf> {
    std::env::var_os(RACER_ENV)?;
    Some(PathBuf::from(
        std::env::var_os(name).unwrap_or_else(|| panic!("racer started without {name}")),
    ))
}

/// In a racer: call `round` as fast as it goes until told to stop (or the
/// test that started it is gone), then print how many rounds ran.
pub fn race(mut round: impl FnMut()) {
    let stop_file = PathBuf::from(std::env::var_os(STOP_ENV).expect("started by spawn_as"));
    let parent = rustix::process::getppid();
    let started = Instant::now();
    let mut rounds: u64 = 0;
    loop {
        round();
        rounds += 1;
        // Checking costs a syscall or two: not every round.
        if rounds.is_multiple_of(1024)
            && (stop_file.exists()
                || rustix::process::getppid() != parent
                || started.elapsed() > RACER_MAX)
        {
            break;
        }
    }
    println!("racer: {rounds} rounds");
}

/// A snapfs mount for the length of a test, unmounted (lazily) on drop.
pub struct Unmount(pub PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new(SNAPFS)
            .args(["unmount", "--lazy"])
            .arg(&self.0)
            .output();
    }
}

/// The pid of the snapfs process serving `mountpoint` (from /proc).
pub fn daemon_pid(mountpoint: &Path) -> i32 {
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        if args.first().is_some_and(|a| a.ends_with(b"snapfs"))
            && args.contains(&mountpoint.as_os_str().as_encoded_bytes())
        {
            return pid;
        }
    }
    panic!("no snapfs process serves {}", mountpoint.display());
}
