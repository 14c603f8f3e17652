//! The mechanics of binds with plain folders as sources (root only: they
//! mount). The public path, from a real snapfs mount and over SSH, is in
//! `tests/tenant/binds.rs`.

use super::*;
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

const OWNER: Owner = Owner {
    uid: 4242,
    gid: 4243,
};

fn can_mount(test: &str) -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        eprintln!("skipping {test}: binding needs root");
    }
    root
}

/// Homes `alice` (ours, as the test runs as root) and `bob` in a temp
/// folder, an account folder of plain files to bind, a root-only folder,
/// and every mount below the temp folder taken away at the end.
struct Host {
    dir: tempfile::TempDir,
    template: Template,
}

impl Host {
    fn new() -> Host {
        let dir = tempfile::tempdir().unwrap();
        for home in [
            "homes/alice",
            "homes/bob/admin/backup",
            "data/alice",
            "private",
        ] {
            std::fs::create_dir_all(dir.path().join(home)).unwrap();
        }
        std::fs::write(dir.path().join("data/alice/page.html"), b"alice's").unwrap();
        std::fs::write(dir.path().join("private/secret"), b"root only").unwrap();
        std::fs::set_permissions(
            dir.path().join("private"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        let text = format!("{}/homes/{{account}}/admin/backup", dir.path().display());
        Host {
            template: Template::parse(&text).unwrap(),
            dir,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn source(&self, rel: &str) -> Source {
        let fd = nofollow::open_folder("source", &self.path(rel), Missing::Refuse, SEARCH_FLAGS);
        Source::any_folder(fd.unwrap()).unwrap()
    }

    /// The mounts whose mount point is below the temp folder.
    fn mounts(&self) -> Vec<MountInfo> {
        let root = self.dir.path().canonicalize().unwrap();
        let table = mountpoint::mountinfo().unwrap();
        table
            .into_iter()
            .filter(|m| m.mount_point.starts_with(&root))
            .collect()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Deepest first; test clean-up only, by path (no tenant here).
        let mut mounts = self.mounts();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.mount_point.as_os_str().len()));
        for m in mounts {
            let _ = rustix::mount::unmount(&m.mount_point, UnmountFlags::DETACH);
        }
    }
}

fn mount_tmpfs(at: &Path) {
    std::fs::create_dir_all(at).unwrap();
    rustix::mount::mount("tmpfs", at, "tmpfs", MountFlags::empty(), None).unwrap();
}

#[test]
fn a_bind_is_read_only_private_owned_right_and_made_once() {
    if !can_mount("a_bind_is_read_only_private_owned_right_and_made_once") {
        return;
    }
    for api in [Api::Best, Api::Legacy] {
        let host = Host::new();
        let source = host.source("data/alice");
        let bound = bind_with(&source, &host.template, "alice", OWNER, api).unwrap();
        let Bound::Made(id) = bound else {
            panic!("{api:?}: {bound:?}")
        };
        // The folders below the home were made for the account's user.
        for rel in ["homes/alice/admin", "homes/alice/admin/backup"] {
            let meta = std::fs::symlink_metadata(host.path(rel)).unwrap();
            assert!(meta.is_dir());
            if !host
                .mounts()
                .iter()
                .any(|m| m.mount_point == host.path(rel))
            {
                assert_eq!((meta.uid(), meta.gid()), (OWNER.uid, OWNER.gid), "{rel}");
            }
        }
        let target = host.path("homes/alice/admin/backup");
        let info = host.mounts().into_iter().find(|m| m.id == id).unwrap();
        assert_eq!(info.mount_point, target.canonicalize().unwrap());
        assert_eq!(locked_down(&info), Ok(()), "{api:?}: {info:?}");
        assert!(
            !info.tags.iter().any(|t| t.starts_with("shared:")),
            "{api:?}: {info:?}"
        );
        assert_eq!(std::fs::read(target.join("page.html")).unwrap(), b"alice's");
        let write = std::fs::write(target.join("new"), b"x").unwrap_err();
        assert_eq!(write.raw_os_error(), Some(libc::EROFS), "{api:?}");

        // Again: left as it is.
        let again = bind_with(&source, &host.template, "alice", OWNER, api).unwrap();
        assert_eq!(again, Bound::Already(id), "{api:?}");
        assert_eq!(host.mounts().len(), 1, "{api:?}");
        // Another source there: refused, not stacked.
        std::fs::create_dir_all(host.path("data/other")).unwrap();
        let other = host.source("data/other");
        let err = bind_with(&other, &host.template, "alice", OWNER, api).unwrap_err();
        assert!(err.to_string().contains("mount point of"), "{err}");
        assert_eq!(host.mounts().len(), 1, "{api:?}");

        // unbind takes away snapfs mounts only: a plain bind stays.
        let err = unbind(&target, true).unwrap_err().to_string();
        assert!(err.contains("not of snapfs"), "{err}");
        assert_eq!(host.mounts().len(), 1, "{api:?}");
    }
}

#[test]
fn a_shared_source_still_gives_a_private_bind() {
    if !can_mount("a_shared_source_still_gives_a_private_bind") {
        return;
    }
    for api in [Api::Best, Api::Legacy] {
        let host = Host::new();
        let shared = host.path("shared");
        mount_tmpfs(&shared);
        rustix::mount::mount_change(&shared, MountPropagationFlags::SHARED).unwrap();
        std::fs::create_dir(shared.join("alice")).unwrap();
        let source = host.source("shared/alice");
        let Bound::Made(id) = bind_with(&source, &host.template, "alice", OWNER, api).unwrap()
        else {
            panic!("not made")
        };
        let mounts = host.mounts();
        let tags = |id: u64| &mounts.iter().find(|m| m.id == id).unwrap().tags;
        assert!(
            tags(mount_id(source.fd.as_fd()).unwrap())
                .iter()
                .any(|t| t.starts_with("shared:")),
            "the source is shared"
        );
        assert!(
            !tags(id).iter().any(|t| t.starts_with("shared:")),
            "{api:?}: {:?}",
            tags(id)
        );
        assert_eq!(
            mounts.iter().find(|m| m.id == id).unwrap().root,
            Path::new("/alice")
        );
    }
}

#[test]
fn a_missing_home_is_skipped_and_not_made() {
    if !can_mount("a_missing_home_is_skipped_and_not_made") {
        return;
    }
    let host = Host::new();
    let source = host.source("data/alice");
    assert_eq!(
        bind(&source, &host.template, "carol", OWNER).unwrap(),
        Bound::NoHome
    );
    assert!(!host.path("homes/carol").exists());
    assert!(host.mounts().is_empty());
}

#[test]
fn links_files_and_full_folders_at_the_target_are_refused() {
    if !can_mount("links_files_and_full_folders_at_the_target_are_refused") {
        return;
    }
    let host = Host::new();
    let source = host.source("data/alice");
    let (admin, backup) = (
        host.path("homes/alice/admin"),
        host.path("homes/alice/admin/backup"),
    );
    let refused = |what: &str, want: &str| {
        let err = bind(&source, &host.template, "alice", OWNER)
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{what}: {err}");
        assert!(host.mounts().is_empty(), "{what}: {:?}", host.mounts());
    };
    // ~/admin -> bob's admin (which has an empty backup folder), or -> a
    // root-only folder.
    std::os::unix::fs::symlink(host.path("homes/bob/admin"), &admin).unwrap();
    refused("~/admin -> bob's", "symbolic link");
    std::fs::remove_file(&admin).unwrap();
    std::os::unix::fs::symlink(host.path("private"), &admin).unwrap();
    refused("~/admin -> private", "symbolic link");
    std::fs::remove_file(&admin).unwrap();

    // ~/admin/backup -> bob's backup, or -> the root-only folder.
    std::fs::create_dir(&admin).unwrap();
    std::os::unix::fs::symlink(host.path("homes/bob/admin/backup"), &backup).unwrap();
    refused("~/admin/backup -> bob's", "symbolic link");
    std::fs::remove_file(&backup).unwrap();
    std::os::unix::fs::symlink(host.path("private"), &backup).unwrap();
    refused("~/admin/backup -> private", "symbolic link");
    std::fs::remove_file(&backup).unwrap();

    // A file, and a folder with something in it (named in the message).
    std::fs::write(&backup, b"x").unwrap();
    refused("a file", "is a file, not a folder");
    std::fs::remove_file(&backup).unwrap();
    std::fs::create_dir(&backup).unwrap();
    std::fs::write(backup.join("mine"), b"keep").unwrap();
    refused("not empty", &format!("{} is not empty", backup.display()));
    assert_eq!(std::fs::read(backup.join("mine")).unwrap(), b"keep");

    // A file on the way.
    std::fs::remove_dir_all(&admin).unwrap();
    std::fs::write(&admin, b"x").unwrap();
    refused("~/admin a file", "is not a folder");
    assert_eq!(
        std::fs::read(host.path("private/secret")).unwrap(),
        b"root only"
    );
}

#[test]
fn a_home_of_someone_else_or_a_mount_at_the_target_is_refused() {
    if !can_mount("a_home_of_someone_else_or_a_mount_at_the_target_is_refused") {
        return;
    }
    let host = Host::new();
    let source = host.source("data/alice");
    let home = host.path("homes/alice");
    std::os::unix::fs::chown(&home, Some(5000), Some(5000)).unwrap();
    let err = bind(&source, &host.template, "alice", OWNER)
        .unwrap_err()
        .to_string();
    assert!(err.contains("belongs to uid 5000"), "{err}");
    assert!(!home.join("admin").exists(), "nothing made");
    // The user's own home, or root's (a chrooted one), are fine.
    std::os::unix::fs::chown(&home, Some(OWNER.uid), Some(OWNER.gid)).unwrap();

    let backup = host.path("homes/alice/admin/backup");
    mount_tmpfs(&backup);
    let err = bind(&source, &host.template, "alice", OWNER)
        .unwrap_err()
        .to_string();
    assert!(err.contains("is a mount point of tmpfs already"), "{err}");
    assert_eq!(host.mounts().len(), 1, "only the tmpfs");
}

#[test]
fn this_kernel_binds_with_the_new_api_and_a_bind_is_taken_back_by_its_descriptor() {
    if !can_mount("this_kernel_binds_with_the_new_api") {
        return;
    }
    let host = Host::new();
    let source = host.source("data/alice");
    let target = host.path("homes/bob/admin/backup");
    let open = || nofollow::open_folder("target", &target, Missing::Refuse, SEARCH_FLAGS);
    for api in [Api::Best, Api::Legacy] {
        let attached = attach(
            source.fd.as_fd(),
            open().unwrap().as_fd(),
            open,
            &target,
            api,
        )
        .unwrap();
        // open_tree 5.2, mount_setattr 5.12: every kernel we test on has both.
        assert_eq!(attached.legacy, api == Api::Legacy);
        assert_eq!(host.mounts().len(), 1);
        attached.detach();
        assert!(host.mounts().is_empty(), "{api:?}");
    }
}
