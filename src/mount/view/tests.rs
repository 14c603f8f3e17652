use super::*;
use crate::backup::{self, BackupOptions};
use crate::chunker::tests::{pseudo_random, small_params};
use crate::repository::backend;
use crate::repository::backend::FileType;
use crate::snapshot::{self, Snapshot};
use chrono::TimeZone;
use std::path::Path;
use std::time::Instant;

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
        .unwrap()
        .timestamp()
}

fn backup_at(repo: &Repository, src: &Path, secs: i64) -> (Id, Snapshot) {
    let opts = BackupOptions {
        paths: vec![src.to_path_buf()],
        account: "alice".into(),
        hostname: "h".into(),
        time: Some((Timestamp { secs, nanos: 0 }, 0)),
        excludes: vec![],
        one_file_system: false,
        tags: vec![],
        progress: false,
        lock_wait: std::time::Duration::from_secs(10),
    };
    let outcome = backup::run(repo, &opts).unwrap();
    (outcome.id, outcome.snapshot)
}

fn options() -> Options {
    Options {
        utc: true,
        relist_every: Duration::ZERO,
        cache_bytes: 1 << 20,
        release_idle_after: None,
        ..Options::default()
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    big: Vec<u8>,
}

impl Fixture {
    fn src(&self) -> std::path::PathBuf {
        self.dir.path().join("src")
    }
    fn repo_path(&self) -> std::path::PathBuf {
        self.dir.path().join("repo")
    }
    fn open(&self) -> SnapshotFs {
        SnapshotFs::new(Repository::open(&self.repo_path()).unwrap(), options()).unwrap()
    }
}

/// A source tree with an empty file, a multi-chunk file, a small file,
/// a hard link, a symlink and a subfolder, backed up once.
fn fixture() -> (Fixture, Repository) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let big = pseudo_random(60_000, 7);
    std::fs::write(src.join("big"), &big).unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    std::fs::write(src.join("small.txt"), b"small").unwrap();
    std::fs::write(src.join("sub/inner"), b"inner").unwrap();
    std::fs::hard_link(src.join("small.txt"), src.join("sub/hard")).unwrap();
    std::os::unix::fs::symlink("../big", src.join("sub/link")).unwrap();
    let repo = Repository::init(&dir.path().join("repo"), small_params(), Some(8192)).unwrap();
    backup_at(&repo, &src, at(2025, 1, 2, 10, 0, 0));
    (Fixture { dir, big }, repo)
}

fn read_all(fs: &SnapshotFs, path: &str) -> Result<Vec<u8>> {
    let attr = fs.lookup_path(path)?;
    fs.open(attr.ino)?;
    fs.read_at(attr.ino, 0, attr.size as usize + 10)
}

fn names(fs: &SnapshotFs, ino: u64) -> Vec<String> {
    let mut out = Vec::new();
    fs.readdir(ino, 0, |e| {
        out.push(String::from_utf8(e.name).unwrap());
        false
    })
    .unwrap();
    out
}

#[test]
fn a_day_folder_shows_the_backed_up_folders_owner_and_mode() {
    let (fx, repo) = fixture();
    let src = fx.src();
    std::fs::set_permissions(&src, std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
    let as_root = unsafe { libc::geteuid() } == 0;
    if as_root {
        std::os::unix::fs::chown(&src, Some(4242), Some(4343)).unwrap();
    }
    backup_at(&repo, &src, at(2025, 1, 3, 10, 0, 0));
    let fs = fx.open();
    let day = fs.lookup_path("2025-01-03").unwrap();
    assert_eq!((day.kind, day.perm), (NodeKind::Dir, 0o711));
    let meta = std::fs::metadata(&src).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((day.uid, day.gid), (meta.uid(), meta.gid()));
    assert_eq!(day.mtime.secs, meta.mtime());
    if as_root {
        assert_eq!((day.uid, day.gid), (4242, 4343));
    }
    // A version-1 record (no root) shows as before: 0755, the mount's
    // owner, the snapshot's time.
    let (_, mut old) = backup_at(&repo, &src, at(2025, 1, 4, 10, 0, 0));
    old.root = None;
    old.version = 1;
    old.time.secs = at(2025, 1, 5, 10, 0, 0);
    snapshot::save(&repo, &old).unwrap();
    let fs = fx.open();
    let v1 = fs.lookup_path("2025-01-05").unwrap();
    assert_eq!((v1.perm, v1.mtime), (0o755, old.time));
}

#[test]
fn reads_past_the_end_of_empty_files_and_across_chunks() {
    let (fx, _repo) = fixture();
    let fs = fx.open();
    let attr = fs.lookup_path("2025-01-02/big").unwrap();
    assert_eq!(attr.size, 60_000);
    assert_eq!(attr.blocks, 60_000u64.div_ceil(512));
    let ino = attr.ino;
    let chunks = fs.open_file(ino).unwrap().reader.chunk_count();
    assert!(
        chunks >= 4,
        "small params cut 60 kB into several chunks, got {chunks}"
    );
    assert_eq!(fs.read_at(ino, 0, 100_000).unwrap(), fx.big);
    // Spans every chunk boundary in the middle of the file.
    assert_eq!(
        fs.read_at(ino, 10_000, 40_000).unwrap(),
        &fx.big[10_000..50_000]
    );
    assert_eq!(fs.read_at(ino, 59_990, 100).unwrap(), &fx.big[59_990..]);
    assert!(fs.read_at(ino, 60_000, 100).unwrap().is_empty());
    assert!(fs.read_at(ino, u64::MAX - 10, 100).unwrap().is_empty());
    let root = fs.lookup_path("2025-01-02").unwrap().ino;
    for not_a_file in [ROOT_INO, root, u64::MAX] {
        assert!(fs.read_at(not_a_file, 0, 10).is_err());
    }

    let empty = fs.lookup_path("2025-01-02/empty").unwrap();
    assert_eq!((empty.size, empty.blocks), (0, 0));
    assert!(read_all(&fs, "2025-01-02/empty").unwrap().is_empty());
    assert_eq!(read_all(&fs, "2025-01-02/sub/inner").unwrap(), b"inner");
}

#[test]
fn tree_metadata_links_and_stable_inodes() {
    let (fx, _repo) = fixture();
    let fs = fx.open();
    let root = fs.lookup_path("2025-01-02").unwrap();
    assert_eq!(root.kind, NodeKind::Dir);
    assert_eq!(
        names(&fs, root.ino),
        [".", "..", "big", "empty", "small.txt", "sub"]
    );
    let sub = fs.lookup_path("2025-01-02/sub").unwrap();
    assert_eq!(names(&fs, sub.ino), [".", "..", "hard", "inner", "link"]);

    let small = fs.lookup_path("2025-01-02/small.txt").unwrap();
    let hard = fs.lookup_path("2025-01-02/sub/hard").unwrap();
    assert_eq!(small.ino, hard.ino, "hard links share an inode");
    assert_eq!(small.nlink, 2);
    let meta = std::fs::metadata(fx.src().join("small.txt")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(small.perm, meta.mode() & 0o7777);
    assert_eq!((small.uid, small.gid), (meta.uid(), meta.gid()));
    assert_eq!(
        small.mtime,
        Timestamp {
            secs: meta.mtime(),
            nanos: meta.mtime_nsec() as u32
        }
    );

    let link = fs.lookup_path("2025-01-02/sub/link").unwrap();
    assert_eq!(link.kind, NodeKind::Symlink);
    assert_eq!(fs.readlink(link.ino).unwrap(), b"../big");
    assert_eq!(link.size, 6);

    // Stable: the same inode however it is reached, and readdir agrees.
    let inner = fs.lookup_path("2025-01-02/sub/inner").unwrap();
    assert_eq!(fs.lookup(sub.ino, b"inner").unwrap().ino, inner.ino);
    let mut listed = None;
    fs.readdir(sub.ino, 0, |e| {
        if e.name == b"inner" {
            listed = Some(e.ino);
        }
        false
    })
    .unwrap();
    assert_eq!(listed, Some(inner.ino));
    assert_eq!(fs.getattr(inner.ino).unwrap(), inner);
    assert!(matches!(
        fs.lookup(sub.ino, b"nope"),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        fs.lookup_path("1999-01-01"),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(fs.open(sub.ino), Err(Error::Invalid(_))));

    // Resuming a listing at an offset it handed out.
    let mut first_two = Vec::new();
    fs.readdir(sub.ino, 0, |e| {
        first_two.push(e.next);
        first_two.len() == 3
    })
    .unwrap();
    let mut rest = Vec::new();
    fs.readdir(sub.ino, first_two[2], |e| {
        rest.push(String::from_utf8(e.name).unwrap());
        false
    })
    .unwrap();
    assert_eq!(rest, ["inner", "link"]);
}

#[test]
fn inode_table_grows_per_directory_not_per_file() {
    let (fx, _repo) = fixture();
    let fs = fx.open();
    let root = fs.lookup_path("2025-01-02").unwrap();
    let walk = |fs: &SnapshotFs| {
        let mut inos = Vec::new();
        let mut dirs = vec![root.ino];
        while let Some(dir) = dirs.pop() {
            fs.readdir(dir, 2, |e| {
                if e.kind == NodeKind::Dir {
                    dirs.push(e.ino);
                }
                inos.push(e.ino);
                false
            })
            .unwrap();
        }
        inos.sort();
        inos
    };
    let first = walk(&fs);
    assert_eq!(walk(&fs), first, "numbers are stable");
    let mut unique = first.clone();
    unique.dedup();
    // big, empty, small.txt, sub, inner, link; `hard` is small.txt.
    assert_eq!(unique.len(), 6, "{first:?}");
    for ino in &unique {
        assert_eq!(fs.getattr(*ino).unwrap().ino, *ino);
    }
    // One record per directory listed: the snapshot root and `sub`.
    assert_eq!(read(&fs.inodes).ranges.len(), 2);
}

#[test]
fn xattrs_with_probes() {
    let (fx, repo) = fixture();
    let path = fx.src().join("small.txt");
    if xattr::set(&path, "user.snapfs", b"value").is_err() {
        eprintln!("skipping: the temp folder does not support user xattrs");
        return;
    }
    // Root on a host without SELinux may store a label; kept, not shown.
    let labelled = xattr::set(&path, "security.selinux", b"user_u:object_r:x_t:s0").is_ok();
    backup_at(&repo, &fx.src(), at(2025, 1, 3, 10, 0, 0));
    let fs = fx.open();
    let attr = fs.lookup_path("2025-01-03/small.txt").unwrap();
    assert_eq!(
        fs.getxattr(attr.ino, b"user.snapfs").unwrap().as_deref(),
        Some(&b"value"[..])
    );
    assert_eq!(fs.getxattr(attr.ino, b"user.none").unwrap(), None);
    assert_eq!(fs.listxattr(attr.ino).unwrap(), b"user.snapfs\0");
    assert_eq!(fs.listxattr(ROOT_INO).unwrap(), b"");
    // ls -l stops asking for labels once told they are not supported.
    assert!(matches!(
        fs.getxattr(attr.ino, NOT_PRESENTED_XATTR),
        Err(Error::Unsupported(_))
    ));
    if labelled {
        let Ok(Inode::Entry { tree, idx, .. }) = fs.inode(attr.ino) else {
            panic!("small.txt is an entry");
        };
        let (t, i) = fs.entry_node(&tree, idx).unwrap();
        assert!(
            t.nodes[i]
                .xattrs
                .iter()
                .any(|x| x.name == NOT_PRESENTED_XATTR),
            "the backup keeps the label for restore"
        );
    }
}

/// A file whose ACL refuses one user what its mode gives everyone:
/// the mount narrows the mode (the kernel checks modes only) and does
/// not present the ACL, which the backup keeps for restore.
#[test]
fn acls_narrow_the_modes_and_are_not_presented() {
    use crate::mount::acl::tests::acl_xattr;
    let (fx, repo) = fixture();
    let path = fx.src().join("small.txt");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    // user::rw- user:12345:--- group::r-- mask::r-- other::r--
    let refuse_one = acl_xattr(&[
        (0x01, 6, u32::MAX),
        (0x02, 0, 12345),
        (0x04, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 4, u32::MAX),
    ]);
    if let Err(e) = xattr::set(&path, "system.posix_acl_access", &refuse_one) {
        // Only a file system without ACLs excuses it (CI's ext4 has
        // them; the kernel-mount test covers ACLs there too).
        assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP), "{e}");
        eprintln!("skipping: the temp folder does not take POSIX ACLs: {e}");
        return;
    }
    backup_at(&repo, &fx.src(), at(2025, 1, 3, 10, 0, 0));
    let fs = fx.open();

    let attr = fs.lookup_path("2025-01-03/small.txt").unwrap();
    assert_eq!(
        attr.perm, 0o600,
        "nobody but the owner may rely on the mode"
    );
    assert!(matches!(
        fs.getxattr(attr.ino, b"system.posix_acl_access"),
        Err(Error::Unsupported(_))
    ));
    assert!(!fs
        .listxattr(attr.ino)
        .unwrap()
        .starts_with(b"system.posix_acl"));
    let Ok(Inode::Entry { tree, idx, .. }) = fs.inode(attr.ino) else {
        panic!("small.txt is an entry");
    };
    let (t, i) = fs.entry_node(&tree, idx).unwrap();
    assert_eq!(t.nodes[i].mode & 0o7777, 0o644, "the backup keeps the mode");
    assert!(
        t.nodes[i].xattrs.iter().any(|x| x.value == refuse_one),
        "and the ACL, for restore"
    );
    // Files without an ACL show their modes as they were.
    let other = fs.lookup_path("2025-01-03/sub/inner").unwrap();
    let meta = std::fs::metadata(fx.src().join("sub/inner")).unwrap();
    assert_eq!(
        other.perm,
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777
    );
}

#[test]
fn same_day_snapshots_latest_and_relisting() {
    let (fx, repo) = fixture();
    backup_at(&repo, &fx.src(), at(2025, 1, 2, 12, 30, 0));
    let fs = fx.open();
    let shown: Vec<String> = fs.snapshot_names().into_iter().map(|(n, _)| n).collect();
    assert_eq!(shown, ["2025-01-02", "2025-01-02_123000"]);
    assert!(shown.iter().all(|n| !n.contains(':')));
    assert_eq!(
        names(&fs, ROOT_INO),
        [".", "..", "latest", "2025-01-02", "2025-01-02_123000"]
    );
    let latest = fs.lookup(ROOT_INO, b"latest").unwrap();
    assert_eq!(latest.kind, NodeKind::Symlink);
    assert_eq!(fs.readlink(latest.ino).unwrap(), b"2025-01-02_123000");
    let old_ino = fs.lookup_path("2025-01-02").unwrap().ino;
    let old_latest = fs.lookup(ROOT_INO, b"latest").unwrap().ino;

    // A backup made while mounted shows up and `latest` follows; an
    // earlier snapshot of a day already shown never takes its name.
    let (new_id, _) = backup_at(&repo, &fx.src(), at(2025, 1, 2, 8, 0, 0));
    let (newest, _) = backup_at(&repo, &fx.src(), at(2025, 1, 4, 9, 0, 0));
    let shown: Vec<String> = fs.snapshot_names().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        shown,
        [
            "2025-01-02",
            "2025-01-02_080000",
            "2025-01-02_123000",
            "2025-01-04"
        ]
    );
    assert_eq!(
        fs.readlink(fs.lookup(ROOT_INO, b"latest").unwrap().ino)
            .unwrap(),
        b"2025-01-04"
    );
    assert_eq!(fs.lookup_path("2025-01-02").unwrap().ino, old_ino);
    // `latest` moved by becoming a new inode; the old one keeps its target.
    assert_ne!(fs.lookup(ROOT_INO, b"latest").unwrap().ino, old_latest);
    assert_eq!(fs.readlink(old_latest).unwrap(), b"2025-01-02_123000");
    assert_eq!(read_all(&fs, "2025-01-04/big").unwrap(), fx.big);

    // Forgotten snapshots vanish; their names are not given to others.
    for id in [new_id, newest] {
        let (entries, _) = snapshot::list(&repo, None).unwrap();
        let file = &entries.iter().find(|e| e.id == id).unwrap().file;
        std::fs::remove_file(fx.repo_path().join("snapshots").join(file)).unwrap();
    }
    let shown: Vec<String> = fs.snapshot_names().into_iter().map(|(n, _)| n).collect();
    assert_eq!(shown, ["2025-01-02", "2025-01-02_123000"]);
    assert!(matches!(
        fs.lookup_path("2025-01-04"),
        Err(Error::NotFound(_))
    ));
    assert_eq!(
        fs.readlink(fs.lookup(ROOT_INO, b"latest").unwrap().ino)
            .unwrap(),
        b"2025-01-02_123000"
    );
}

#[test]
fn two_snapshots_in_one_second() {
    let (fx, repo) = fixture();
    let t = at(2025, 1, 2, 10, 0, 0);
    backup_at(&repo, &fx.src(), t);
    backup_at(&repo, &fx.src(), t);
    let fs = fx.open();
    let shown: Vec<String> = fs.snapshot_names().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        shown,
        ["2025-01-02", "2025-01-02_100000", "2025-01-02_100000_2"]
    );
    let ids: HashSet<Id> = fs.snapshot_names().into_iter().map(|(_, id)| id).collect();
    assert_eq!(ids.len(), 3, "three snapshots, three names");
}

#[test]
fn account_filter_and_no_snapshots() {
    let (fx, _repo) = fixture();
    let repo = Repository::open(&fx.repo_path()).unwrap();
    let opts = Options {
        top: Top::Account("bob".into()),
        ..options()
    };
    let fs = SnapshotFs::new(repo, opts).unwrap();
    assert!(fs.snapshot_names().is_empty());
    assert_eq!(names(&fs, ROOT_INO), [".", ".."]);
    assert!(matches!(
        fs.lookup(ROOT_INO, b"latest"),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn an_accounts_mount_among_many_accounts() {
    // Layout 2 keeps bob's files in his folder: the others' are never
    // read. Layout 1 keeps all together: each is read once.
    for (layout, skipped_first, skipped_then) in [(2, 1, 1), (1, 302, 303)] {
        let (fx, _) = fixture();
        crate::repository::tests::set_layout(&fx.repo_path(), layout);
        let repo = Repository::open(&fx.repo_path()).unwrap();
        let (_, alice) = backup_at(&repo, &fx.src(), at(2025, 1, 2, 3, 0, 0));
        let save_as = |account: &str, day: u32| {
            let snapshot = Snapshot {
                account: account.into(),
                time: Timestamp {
                    secs: at(2025, 1, day, 3, 0, 0),
                    nanos: 0,
                },
                ..alice.clone()
            };
            snapshot::save(&repo, &snapshot).unwrap()
        };
        // Enough other accounts' files to be read on several threads.
        for n in 0..300 {
            save_as(&format!("user{n}"), 3);
        }
        let garbage = Id::hash(b"garbage").to_hex();
        std::fs::write(fx.repo_path().join("snapshots").join(&garbage), b"x").unwrap();
        save_as("bob", 3);

        let opts = Options {
            top: Top::Account("bob".into()),
            ..options()
        };
        let fs = SnapshotFs::new(Repository::open(&fx.repo_path()).unwrap(), opts).unwrap();
        let shown = |fs: &SnapshotFs| -> Vec<String> {
            fs.snapshot_names().into_iter().map(|(n, _)| n).collect()
        };
        let skipped = |fs: &SnapshotFs| read(&fs.snapshots).skipped.len();
        assert_eq!(shown(&fs), ["2025-01-03"], "layout {layout}");
        assert_eq!(skipped(&fs), skipped_first, "layout {layout}");

        // Relisting reads only what is new: bob's next backup (and in
        // layout 1 carol's).
        save_as("bob", 4);
        save_as("carol", 4);
        assert_eq!(shown(&fs), ["2025-01-03", "2025-01-04"]);
        assert_eq!(skipped(&fs), skipped_then, "layout {layout}");
        assert_eq!(read_all(&fs, "2025-01-04/big").unwrap(), fx.big);
    }
}

#[test]
fn a_mount_keeps_its_folders_while_the_repository_is_migrated() {
    for account in [None, Some("alice")] {
        let (fx, _) = fixture();
        crate::repository::tests::set_layout(&fx.repo_path(), 1);
        let repo = Repository::open(&fx.repo_path()).unwrap();
        // The fixture's first snapshot was saved in layout 2: move it
        // back out of its folder, as layout 1 keeps it.
        let (entries, _) = snapshot::list(&repo, None).unwrap();
        let file = &entries[0].file;
        repo.backend()
            .rename(FileType::Snapshot, file, backend::file_of(file))
            .unwrap();
        backup_at(&repo, &fx.src(), at(2025, 1, 3, 10, 0, 0));
        let opts = Options {
            top: account.map_or(Top::Auto, |a| Top::Account(a.into())),
            ..options()
        };
        let fs = SnapshotFs::new(Repository::open(&fx.repo_path()).unwrap(), opts).unwrap();
        let before = fs.snapshot_names();
        assert_eq!(before.len(), 2);
        let ino = fs.lookup_path("2025-01-03/big").unwrap().ino;

        let report = crate::migrate::run(&repo, Duration::ZERO).unwrap();
        assert_eq!(report.moved, 2);
        assert_eq!(fs.snapshot_names(), before, "same names, same snapshots");
        assert_eq!(fs.lookup_path("2025-01-03/big").unwrap().ino, ino);
        assert_eq!(read_all(&fs, "2025-01-03/big").unwrap(), fx.big);
    }
}

#[test]
fn an_idle_mount_gives_its_chunk_cache_back() {
    let (fx, _) = fixture();
    let opts = Options {
        release_idle_after: Some(Duration::from_millis(40)),
        ..options()
    };
    let fs = SnapshotFs::new(Repository::open(&fx.repo_path()).unwrap(), opts).unwrap();
    assert_eq!(read_all(&fs, "2025-01-02/big").unwrap(), fx.big);
    assert!(fs.chunk_cache_stats().bytes > 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs.chunk_cache_stats().bytes > 0 {
        assert!(Instant::now() < deadline, "still cached after 10 s idle");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(fs.chunk_cache_stats().entries, 0);
    // And it fills again when read.
    assert_eq!(read_all(&fs, "2025-01-02/big").unwrap(), fx.big);
}

#[test]
fn a_damaged_chunk_fails_its_reads_only() {
    let (fx, repo) = fixture();
    let tree = snapshot::list(&repo, None).unwrap().0[0].snapshot.tree;
    let node = snapshot::resolve(&repo, &tree, b"big").unwrap();
    let loc = repo.locate(&node.content[1]).unwrap();
    let hex = loc.pack.to_hex();
    let pack = fx.repo_path().join("data").join(&hex[..2]).join(&hex);
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[loc.blob.offset as usize + loc.blob.length as usize / 2] ^= 0x40;
    std::fs::write(&pack, bytes).unwrap();

    let fs = fx.open();
    let attr = fs.lookup_path("2025-01-02/big").unwrap();
    let err = fs.read_at(attr.ino, 0, 60_000).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    // The chunk before the damaged one still reads; so do other files,
    // and the same read fails the same way again (errors are not cached).
    let (_, _, first_end) = fs.open_file(attr.ino).unwrap().reader.chunk(0);
    assert_eq!(
        fs.read_at(attr.ino, 0, first_end as usize).unwrap(),
        &fx.big[..first_end as usize]
    );
    assert!(matches!(
        fs.read_at(attr.ino, 0, 60_000),
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(read_all(&fs, "2025-01-02/small.txt").unwrap(), b"small");
    assert_eq!(read_all(&fs, "2025-01-02/sub/inner").unwrap(), b"inner");
    assert_eq!(fs.path_of(attr.ino), "/2025-01-02/big");
}

mod accounts;
