//! A throwaway OpenSSH server for tests: `sshd` on 127.0.0.1 on a free
//! port, with its own configuration, host key and client key in a temp
//! folder, key logins only, `internal-sftp`, and optionally users chrooted
//! into their homes for SFTP only, as hosting platforms configure them.
//!
//! Include it from a test binary's root (`tests/mount.rs` uses
//! `#[path = "sshd/mod.rs"]`):
//!
//! ```text
//! #[path = "../sshd/mod.rs"]
//! mod sshd;
//! ```
//!
//! then, in a test (as root; skip unless `sshd::available(name)`):
//!
//! ```text
//! let tmp = sshd::shared_tempdir();            // the users read their keys here
//! let mut sshd = Sshd::start(&tmp.path().join("ssh"));
//! let uid = sshd.add_user("snapfs-t1");        // made now, removed on drop
//! sshd.allow(&alice.name);                     // a user made elsewhere
//! sshd.chroot(&alice.name);                    // SFTP only, chrooted into %h
//! let out = sshd.sftp("snapfs-t1", "ls -1 /srv\nget -r /srv/x /tmp/y\n");
//! let out = sshd.ssh(&bob.name, "ls ~/admin/backup");
//! ```
//!
//! A chrooted user's home and every folder above it must be root's and
//! writable by nobody else, or sshd refuses the login ("bad ownership or
//! modes for chroot directory"): make such homes in [`chroot_tempdir`],
//! not under /tmp (world-writable).
//!
//! The server dies with the thread that started it (`PR_SET_PDEATHSIG`),
//! so a test killed mid-way leaves no sshd behind; users and the chroot
//! group are removed on drop, and one left by a killed run is removed
//! before it is made again.

// Each test binary uses a part of this.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const TOOLS: [&str; 6] = [
    "/usr/sbin/sshd",
    "/usr/bin/sftp",
    "/usr/bin/ssh",
    "/usr/bin/ssh-keygen",
    "/usr/sbin/useradd",
    "/usr/sbin/groupadd",
];

/// Whether the tools are here (and we are root, to run sshd and add
/// users). Otherwise the test skips with a message, unless
/// `SNAPFS_REQUIRE_FUSE=1` (CI), which makes it a failure.
pub fn available(test: &str) -> bool {
    let missing: Vec<_> = TOOLS.iter().filter(|t| !Path::new(t).exists()).collect();
    let root = unsafe { libc::geteuid() } == 0;
    if missing.is_empty() && root {
        return true;
    }
    let why =
        format!("{test}: needs root and {missing:?} (openssh-server, openssh-client, passwd)");
    if std::env::var("SNAPFS_REQUIRE_FUSE").as_deref() == Ok("1") {
        panic!("{why}");
    }
    eprintln!("skipping {why}; root: {root}");
    false
}

/// A temp folder others may traverse (0755): users read their keys in it.
pub fn shared_tempdir() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    tmp
}

/// A temp folder whose every parent is root's and writable by no one
/// else, as a chroot needs: under /run, not /tmp.
pub fn chroot_tempdir() -> tempfile::TempDir {
    let tmp = tempfile::Builder::new()
        .prefix("snapfs-chroot.")
        .tempdir_in("/run")
        .unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    tmp
}

pub struct Sshd {
    dir: PathBuf,
    port: u16,
    child: Child,
    /// Users made by `add_user`, removed on drop.
    users: Vec<String>,
    /// Members are chrooted into their homes, SFTP only.
    chroot_group: String,
}

impl Sshd {
    /// Start a server whose files live in `dir` (made; it must be
    /// readable by the test users, see [`shared_tempdir`]).
    pub fn start(dir: &Path) -> Sshd {
        std::fs::create_dir_all(dir.join("keys")).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap(); // privilege separation
        for key in ["host_key", "id"] {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.join(key)));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // One group per server: tests run in parallel, each with its own.
        let chroot_group = format!("snapfs-chroot-{port}");
        run(Command::new("groupadd").args(["-f", &chroot_group]));
        // Match blocks last: they run to the end of the file.
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/keys/%u\nUsePAM no\nStrictModes no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin no\n\
             Subsystem sftp internal-sftp\n\
             Match Group {chroot_group}\n    ChrootDirectory %h\n    ForceCommand internal-sftp\n\
             \x20   AllowTcpForwarding no\n    X11Forwarding no\n",
            d = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), config).unwrap();
        let mut command = Command::new("/usr/sbin/sshd");
        command
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap());
        // SAFETY: prctl is async-signal-safe. The server dies with this
        // thread, even when the test process is killed without unwinding.
        unsafe {
            command.pre_exec(|| {
                match libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                }
            });
        }
        let child = command.spawn().unwrap();
        let sshd = Sshd {
            dir: dir.to_path_buf(),
            port,
            child,
            users: Vec::new(),
            chroot_group,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not start: {}",
                sshd.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        sshd
    }

    /// What sshd said (`-e`: its log on stderr), for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    /// A new user without a home that may log in with our key, removed on
    /// drop; returns its uid.
    pub fn add_user(&mut self, name: &str) -> u32 {
        let _ = Command::new("userdel").arg(name).output(); // left over by a killed run
        run(Command::new("useradd").args(["-M", "-d", "/nonexistent", "-s", "/bin/sh", name]));
        self.users.push(name.to_string());
        self.allow(name);
        let out = run(Command::new("id").arg("-u").arg(name));
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }

    /// Let an existing user log in with our key. Its password becomes "*"
    /// (none, but not locked: sshd refuses locked accounts, and useradd
    /// makes them locked).
    pub fn allow(&self, name: &str) {
        run(Command::new("usermod").args(["-p", "*", name]));
        std::fs::copy(self.dir.join("id.pub"), self.dir.join("keys").join(name)).unwrap();
    }

    /// From now on, `name` gets SFTP only, chrooted into its home (which
    /// must then be root's, see [`chroot_tempdir`]).
    pub fn chroot(&self, name: &str) {
        run(Command::new("usermod").args(["-a", "-G", &self.chroot_group, name]));
    }

    /// Run an sftp batch as `user` (`-b`: a failing command fails it).
    pub fn sftp(&self, user: &str, batch: &str) -> Output {
        let file = self.dir.join(format!("batch-{user}"));
        std::fs::write(&file, batch).unwrap();
        let mut command = Command::new("sftp");
        command.arg("-b").arg(&file).args(self.client_options("-P"));
        command.arg(format!("{user}@127.0.0.1")).output().unwrap()
    }

    /// Run a shell command as `user` over SSH.
    pub fn ssh(&self, user: &str, shell_command: &str) -> Output {
        let mut command = Command::new("ssh");
        command.args(self.client_options("-p"));
        command
            .arg(format!("{user}@127.0.0.1"))
            .arg("--")
            .arg(shell_command)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn client_options(&self, port_flag: &str) -> Vec<String> {
        let id = self.dir.join("id").display().to_string();
        [
            "-i",
            &id,
            port_flag,
            &self.port.to_string(),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
        ]
        .map(String::from)
        .to_vec()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for user in &self.users {
            let _ = Command::new("userdel").arg(user).output();
        }
        let _ = Command::new("groupdel").arg(&self.chroot_group).output();
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
