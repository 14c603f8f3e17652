//! The support request of every day: restore a tenant's folder into the
//! tenant's home, as root, while the tenant changes it.
//!
//! The tenant (a real user) owns `home/www`, the restore target, and a
//! racer process running as that user swaps its sub-folders for symlinks
//! to a root-owned folder outside the home, in a tight loop, three ways:
//! `renameat2(RENAME_EXCHANGE)` of a folder with a prepared symlink,
//! removing a folder (restore's new, still empty one) and putting a
//! symlink in its place, and the same for a file inside a folder. Root
//! meanwhile restores a snapshot whose folders hold a file named like the
//! root-owned file, 20 times. A restore that followed one link would put
//! the tenant's content, owned by the tenant, into the root-owned folder.

use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const SNAPFS: &str = env!("CARGO_BIN_EXE_snapfs");
const USER: &str = "snapfs-racer";
const FOLDERS: usize = 8;
const FILES_PER_FOLDER: usize = 40;
const RESTORES: usize = 20;
/// The name of the root-owned file, also in every restored folder.
const SECRET: &str = "secret";

/// Whether this test can run here; panics instead of skipping under
/// `SNAPFS_REQUIRE_FUSE=1`.
fn can_run(test: &str) -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    let tools = ["/usr/sbin/useradd", "/usr/sbin/userdel"];
    let missing: Vec<_> = tools.iter().filter(|t| !Path::new(t).exists()).collect();
    if root && missing.is_empty() {
        return true;
    }
    let why = format!("{test}: needs root and useradd; root: {root}, missing: {missing:?}");
    if std::env::var("SNAPFS_REQUIRE_FUSE").as_deref() == Ok("1") {
        panic!("{why} (SNAPFS_REQUIRE_FUSE=1)");
    }
    eprintln!("skipping {why}");
    false
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A real unprivileged user with its own group; removed on drop, after the
/// racer (userdel refuses a user with running processes).
struct Tenant {
    uid: u32,
    gid: u32,
    racer: Option<Child>,
}

impl Tenant {
    fn add() -> Tenant {
        // Left over by a killed run.
        let _ = Command::new("userdel").arg(USER).output();
        let _ = Command::new("groupdel").arg(USER).output();
        run(Command::new("useradd")
            .args(["-M", "-U", "-d", "/nonexistent"])
            .args(["-s", "/usr/sbin/nologin", USER]));
        let id = |flag: &str| -> u32 {
            let out = run(Command::new("id").arg(flag).arg(USER));
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        Tenant {
            uid: id("-u"),
            gid: id("-g"),
            racer: None,
        }
    }
}

impl Drop for Tenant {
    fn drop(&mut self) {
        if let Some(child) = &mut self.racer {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("userdel").arg(USER).output();
        let _ = Command::new("groupdel").arg(USER).output();
    }
}

/// All an attacker could change about a path: content, mode, owner,
/// mtime, and a folder's entries.
#[derive(Debug, PartialEq, Eq)]
struct Fingerprint {
    content: Vec<u8>,
    mode: u32,
    owner: (u32, u32),
    mtime: (i64, i64),
    entries: Vec<PathBuf>,
}

fn fingerprint(path: &Path) -> Fingerprint {
    let meta = std::fs::symlink_metadata(path).unwrap();
    let mut entries = Vec::new();
    let mut content = Vec::new();
    if meta.is_dir() {
        entries = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
    } else {
        content = std::fs::read(path).unwrap();
    }
    Fingerprint {
        content,
        mode: meta.mode(),
        owner: (meta.uid(), meta.gid()),
        mtime: (meta.mtime(), meta.mtime_nsec()),
        entries,
    }
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
    if std::fs::symlink_metadata(path).unwrap().is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_tree(&entry.unwrap().path(), uid, gid);
        }
    }
}

fn snapfs(repo: &Path, args: &[&str]) -> Output {
    Command::new(SNAPFS)
        .args(args)
        .env("SNAPFS_REPO", repo)
        .env("TZ", "UTC")
        .output()
        .unwrap()
}

#[test]
fn a_racing_tenant_cannot_make_restore_write_outside_its_target() {
    if !can_run("a_racing_tenant_cannot_make_restore_write_outside_its_target") {
        return;
    }
    let mut tenant = Tenant::add();
    // Others may traverse it: the tenant reaches its home and the racer.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let path = |name: &str| tmp.path().join(name);

    // Root's folder outside the home, and what it must still be at the end.
    let root_dir = path("root-owned");
    std::fs::create_dir(&root_dir).unwrap();
    std::fs::write(root_dir.join(SECRET), b"root's own, not the tenant's\n").unwrap();
    std::fs::set_permissions(root_dir.join(SECRET), PermissionsExt::from_mode(0o644)).unwrap();
    let before = (fingerprint(&root_dir), fingerprint(&root_dir.join(SECRET)));

    // The tenant's backed-up folder: files named like root's, the tenant's.
    let source = path("source");
    for i in 0..FOLDERS {
        let folder = source.join(format!("d{i}"));
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join(SECRET), format!("tenant's content {i}\n")).unwrap();
        for f in 0..FILES_PER_FOLDER {
            std::fs::write(folder.join(format!("f{f:02}")), format!("{i}/{f}")).unwrap();
        }
    }
    chown_tree(&source, tenant.uid, tenant.gid);
    let repo = path("repo");
    let out = snapfs(&repo, &["init"]);
    assert!(out.status.success(), "{out:?}");
    let out = snapfs(&repo, &["backup", source.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");

    // The tenant's home and the target in it.
    let www = path("home/www");
    std::fs::create_dir_all(&www).unwrap();
    chown_tree(&path("home"), tenant.uid, tenant.gid);

    // The racer: this test binary, run as the tenant (a copy it can read).
    let bin = path("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::copy(std::env::current_exe().unwrap(), bin.join("tenant")).unwrap();
    std::fs::set_permissions(bin.join("tenant"), PermissionsExt::from_mode(0o755)).unwrap();
    let stop = path("stop");
    tenant.racer = Some(
        Command::new(bin.join("tenant"))
            .args(["--exact", "restore_race::racer", "--ignored", "--nocapture"])
            .env("SNAPFS_RACER_TARGET", &www)
            .env("SNAPFS_RACER_LINK_TO", &root_dir)
            .env("SNAPFS_RACER_STOP", &stop)
            .current_dir("/")
            .uid(tenant.uid)
            .gid(tenant.gid)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );

    let mut failed_entries = 0;
    let mut failed_restores = 0;
    for _ in 0..RESTORES {
        let out = snapfs(
            &repo,
            &["restore", "latest", "--target", www.to_str().unwrap()],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        match out.status.code() {
            Some(0) => {}
            // Entries the racer made fail, reported.
            Some(4) => {
                // What the racer made fail, when one wants to see it.
                if std::env::var("SNAPFS_RACE_VERBOSE").is_ok() {
                    eprint!("{}", String::from_utf8_lossy(&out.stderr));
                }
                failed_restores += 1;
                failed_entries += stdout
                    .rsplit_once("; ")
                    .and_then(|(_, tail)| tail.split(' ').next()?.parse::<u64>().ok())
                    .unwrap_or_else(|| panic!("no count of failed entries: {stdout}"));
            }
            _ => panic!(
                "restore failed: {out:?}\n{}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    std::fs::write(&stop, b"").unwrap();
    let racer = tenant.racer.take().unwrap().wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&racer.stdout);
    assert!(racer.status.success(), "racer: {racer:?}");
    let count = |key: &str| -> u64 {
        let field = said
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("racer said no {key}: {said}"));
        field.parse().unwrap()
    };
    assert_eq!(
        count("uid"),
        u64::from(tenant.uid),
        "the racer ran as the tenant"
    );
    let (exchanges, replaced) = (count("exchanges"), count("replaced"));
    eprintln!(
        "racer: {exchanges} exchanges, {replaced} replacements by symlinks; \
         {failed_restores} of {RESTORES} restores reported {failed_entries} failed entries"
    );

    let after = (fingerprint(&root_dir), fingerprint(&root_dir.join(SECRET)));
    assert_eq!(after, before, "restore wrote outside its target");
    // Not vacuous: the tenant did swap folders for links while root restored.
    assert!(exchanges + replaced > 0, "the racer never swapped anything");

    // Without the racer, a last restore puts everything back.
    let out = snapfs(
        &repo,
        &["restore", "latest", "--target", www.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    for i in 0..FOLDERS {
        let folder = www.join(format!("d{i}"));
        assert!(std::fs::symlink_metadata(&folder).unwrap().is_dir());
        let content = std::fs::read(folder.join(SECRET)).unwrap();
        assert_eq!(content, format!("tenant's content {i}\n").as_bytes());
    }
}

/// The racer, run by the test above as the tenant; does nothing when run
/// any other way.
#[test]
#[ignore]
fn racer() {
    let Ok(target) = std::env::var("SNAPFS_RACER_TARGET") else {
        return;
    };
    let target = PathBuf::from(target);
    let link_to = PathBuf::from(std::env::var("SNAPFS_RACER_LINK_TO").unwrap());
    let stop = PathBuf::from(std::env::var("SNAPFS_RACER_STOP").unwrap());
    use rustix::fs::{renameat_with, RenameFlags, CWD};

    // A symlink beside each folder, to exchange with it atomically.
    for i in 0..FOLDERS {
        let _ = symlink(&link_to, target.join(format!(".link{i}")));
    }
    let (mut exchanges, mut replaced) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut round = 0usize;
    while !stop.exists() && Instant::now() < deadline {
        round += 1;
        let i = round % FOLDERS;
        let folder = target.join(format!("d{i}"));
        match round / FOLDERS % 3 {
            // Atomic: the folder and the symlink trade places.
            0 => {
                let link = target.join(format!(".link{i}"));
                if renameat_with(CWD, &folder, CWD, &link, RenameFlags::EXCHANGE).is_ok() {
                    exchanges += 1;
                }
            }
            // Plain: remove restore's new folder while it is still empty,
            // put a symlink in its place.
            1 => {
                if std::fs::remove_dir(&folder).is_ok() && symlink(&link_to, &folder).is_ok() {
                    replaced += 1;
                }
            }
            // A file in a folder the tenant can write, swapped the same way.
            _ => {
                let file = folder.join(SECRET);
                let is_file = std::fs::symlink_metadata(&file).is_ok_and(|m| m.is_file());
                if is_file
                    && std::fs::remove_file(&file).is_ok()
                    && symlink(link_to.join(SECRET), &file).is_ok()
                {
                    replaced += 1;
                }
            }
        }
    }
    let uid = unsafe { libc::geteuid() };
    println!("racer: uid={uid} exchanges={exchanges} replaced={replaced}");
}
