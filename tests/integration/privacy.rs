//! The repository is private: whatever the umask, no file or folder of
//! it is readable by other users, and writers warn about one that is.

use crate::support::*;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

/// `snapfs` under a permissive umask, as a careless cron job would run it.
fn snapfs_umask(repo: &Path, umask: libc::mode_t, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_snapfs"));
    command.args(args).env("SNAPFS_REPO", repo).env("TZ", "UTC");
    // SAFETY: umask is async-signal-safe and touches nothing else.
    unsafe {
        command.pre_exec(move || {
            libc::umask(umask);
            Ok(())
        });
    }
    command.output().unwrap()
}

#[test]
fn a_repository_made_under_umask_000_is_readable_by_nobody_else() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("nested/repo");
    let source = dir.path().join("home");
    make_rich_tree(&source);
    for args in [
        &["backup", "--account", "alice", source.to_str().unwrap()][..],
        &["backup", "--account", "alice", source.to_str().unwrap()],
        &["forget", "--keep-last", "1"],
        &["prune"],
    ] {
        let out = snapfs_umask(&repo, 0, args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("open to other users"), "{stderr}");
    }
    let mut seen = 0;
    for path in walk(&repo).into_iter().chain([repo.clone()]) {
        let mode = std::fs::symlink_metadata(&path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{} is {:o}", path.display(), mode & 0o7777);
        seen += 1;
    }
    assert!(seen > 260, "only {seen} entries checked");
}

#[test]
fn writers_warn_about_a_repository_others_can_read() {
    let t = TestRepo::new();
    let source = t.path("home");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::set_permissions(&t.repo, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = t.run(&["backup", source.to_str().unwrap()]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("open to other users") && stderr.contains("0755"),
        "{stderr}"
    );
    // Readers say nothing: the warning is for whoever can fix it.
    let out = t.run(&["snapshots"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("open to other users"));
}
