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

use crate::support::*;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FOLDERS: usize = 8;
const FILES_PER_FOLDER: usize = 40;
const RESTORES: usize = 20;
/// The name of the root-owned file, also in every restored folder.
const SECRET: &str = "secret";

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
    let tenant = TenantUser::create("snapfs-race-r");
    // Others may traverse it: the tenant reaches its home.
    let tmp = shared_tempdir();
    let path = |name: &str| tmp.path().join(name);

    // Root's folder outside the home, and what it must still be at the end.
    let root_dir = path("root-owned");
    std::fs::create_dir(&root_dir).unwrap();
    std::fs::write(root_dir.join(SECRET), b"root's own, not the tenant's\n").unwrap();
    std::fs::set_permissions(
        root_dir.join(SECRET),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
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
    tenant.give(&source);
    let repo = path("repo");
    let out = snapfs(&repo, &["init"]);
    assert!(out.status.success(), "{out:?}");
    let out = snapfs(&repo, &["backup", source.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");

    // The tenant's home and the target in it.
    let www = path("home/www");
    std::fs::create_dir_all(&www).unwrap();
    tenant.give(&path("home"));
    let racer = spawn_as(
        &tenant,
        "restore_race::racer",
        &[
            ("SNAPFS_RACER_TARGET", www.as_os_str()),
            ("SNAPFS_RACER_LINK_TO", root_dir.as_os_str()),
        ],
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

    let (rounds, racer) = racer.stop();
    assert!(rounds.is_some(), "the racer failed: {racer:?}");
    let said = String::from_utf8_lossy(&racer.stdout);
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
#[ignore = "a racer: run as the tenant by a_racing_tenant_cannot_make_restore_write_outside_its_target"]
fn racer() {
    let Some(target) = racer_env("SNAPFS_RACER_TARGET") else {
        return;
    };
    let link_to = racer_env("SNAPFS_RACER_LINK_TO").unwrap();
    use rustix::fs::{renameat_with, RenameFlags, CWD};

    // A symlink beside each folder, to exchange with it atomically.
    for i in 0..FOLDERS {
        let _ = symlink(&link_to, target.join(format!(".link{i}")));
    }
    let (mut exchanges, mut replaced) = (0u64, 0u64);
    let mut round = 0usize;
    race(|| {
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
    });
    let uid = unsafe { libc::geteuid() };
    println!("swaps: uid={uid} exchanges={exchanges} replaced={replaced}");
}
