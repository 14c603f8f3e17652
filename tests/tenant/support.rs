//! What every tenant test needs.

use std::path::Path;

/// Whether a kernel mount can run here; panics instead of skipping when
/// `SNAPFS_REQUIRE_FUSE=1`.
pub fn fuse_available(test: &str) -> bool {
    let missing: Vec<&str> = ["/dev/fuse", "/usr/bin/fusermount3"]
        .into_iter()
        .filter(|path| !Path::new(path).exists())
        .collect();
    let root = unsafe { libc::geteuid() } == 0;
    if missing.is_empty() && root {
        return true;
    }
    let why = format!(
        "{test}: needs root, /dev/fuse and fusermount3; missing: {missing:?}, root: {root}"
    );
    if std::env::var("SNAPFS_REQUIRE_FUSE").as_deref() == Ok("1") {
        panic!("{why} (SNAPFS_REQUIRE_FUSE=1)");
    }
    eprintln!("skipping {why}");
    false
}

/// A real unprivileged user for the length of a test, removed on drop
/// (and first, should a killed run have left it behind).
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl User {
    pub fn create(name: &str) -> User {
        let _ = std::process::Command::new("userdel").arg(name).output();
        let out = std::process::Command::new("useradd")
            .args([
                "-M",
                "-d",
                "/nonexistent",
                "-s",
                "/usr/sbin/nologin",
                "-U",
                name,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "useradd {name}: {out:?}");
        let id = |flag: &str| -> u32 {
            let out = std::process::Command::new("id")
                .arg(flag)
                .arg(name)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        User {
            name: name.to_string(),
            uid: id("-u"),
            gid: id("-g"),
        }
    }

    /// A command that runs as this user (and only its own group).
    pub fn command(&self, program: &str) -> std::process::Command {
        use std::os::unix::process::CommandExt;
        let mut command = std::process::Command::new(program);
        // As root, std also drops the supplementary groups (setgroups(0)).
        command.uid(self.uid).gid(self.gid);
        command
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = std::process::Command::new("userdel")
            .arg(&self.name)
            .output();
    }
}
