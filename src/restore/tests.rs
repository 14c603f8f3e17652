//! Restore into folders that already hold things, some of them planted: a
//! snapshot built by hand (no backup), restored with `run`.

use super::*;
use std::fs;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};

use crate::chunker::tests::small_params;
use crate::repository::packer::Packer;
use crate::repository::Kind;
use crate::snapshot::{Timestamp, Tree};

fn is_root() -> bool {
    (unsafe { libc::geteuid() }) == 0
}

/// An owner restore may set: someone else as root, ourselves otherwise.
fn owner() -> (u32, u32) {
    if is_root() {
        (1234, 5678)
    } else {
        unsafe { (libc::geteuid(), libc::getegid()) }
    }
}

fn base(name: &str, kind: NodeKind, mode: u32) -> Node {
    let (uid, gid) = owner();
    Node {
        name: name.as_bytes().to_vec(),
        kind,
        mode,
        uid,
        gid,
        mtime: Timestamp {
            secs: 1_600_000_000,
            nanos: 42,
        },
        links: 1,
        ..Node::default()
    }
}

fn file(packer: &Packer, name: &str, content: &[u8]) -> Node {
    let (id, _) = packer.add(Kind::Data, content).unwrap();
    Node {
        size: content.len() as u64,
        content: vec![id],
        ..base(name, NodeKind::File, 0o640)
    }
}

fn dir(packer: &Packer, name: &str, mut nodes: Vec<Node>) -> Node {
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let (id, _) = packer.add(Kind::Tree, &Tree { nodes }.encode()).unwrap();
    Node {
        subtree: Some(id),
        ..base(name, NodeKind::Dir, 0o750)
    }
}

/// A repository holding one snapshot tree made of `nodes`; returns the
/// repository and the root tree's id.
fn snapshot(tmp: &Path, build: impl FnOnce(&Packer) -> Vec<Node>) -> (Repository, Id) {
    let repo = Repository::init(&tmp.join("repo"), small_params(), None).unwrap();
    let packer = repo.packer();
    let root = dir(&packer, "", build(&packer));
    packer.flush().unwrap();
    drop(packer);
    (repo, root.subtree.unwrap())
}

fn restore(repo: &Repository, root: &Id, target: &Path) -> RestoreOutcome {
    run(repo, root, b"", target, None).unwrap()
}

/// Everything an attacker could have changed about a path outside the
/// target.
fn fingerprint(path: &Path) -> (Vec<u8>, u32, u32, i64, i64, Vec<PathBuf>) {
    let meta = fs::symlink_metadata(path).unwrap();
    let (content, listing) = if meta.is_dir() {
        let mut names: Vec<_> = fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        (Vec::new(), names)
    } else {
        (fs::read(path).unwrap(), Vec::new())
    };
    let times = (meta.mtime(), meta.mtime_nsec());
    (content, meta.mode(), meta.uid(), times.0, times.1, listing)
}

#[test]
fn a_symlink_where_a_folder_goes_is_replaced_and_nothing_written_through_it() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("f"), b"root's own").unwrap();
    let (before_dir, before_file) = (fingerprint(&outside), fingerprint(&outside.join("f")));
    let (repo, root) = snapshot(tmp.path(), |p| {
        vec![dir(
            p,
            "sub",
            vec![file(p, "f", b"restored"), file(p, "new", b"n")],
        )]
    });
    let target = tmp.path().join("t");
    fs::create_dir(&target).unwrap();
    symlink(&outside, target.join("sub")).unwrap();

    let outcome = restore(&repo, &root, &target);
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_eq!(fingerprint(&outside), before_dir);
    assert_eq!(fingerprint(&outside.join("f")), before_file);
    let sub = fs::symlink_metadata(target.join("sub")).unwrap();
    assert!(sub.is_dir());
    assert_eq!((sub.mode() & 0o7777, sub.uid()), (0o750, owner().0));
    assert_eq!(fs::read(target.join("sub/f")).unwrap(), b"restored");
}

#[test]
fn a_symlink_where_a_file_goes_is_unlinked_and_its_target_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::write(&outside, b"root's own").unwrap();
    let before = fingerprint(&outside);
    let (repo, root) = snapshot(tmp.path(), |p| vec![file(p, "f", b"restored")]);
    let target = tmp.path().join("t");
    fs::create_dir(&target).unwrap();
    symlink(&outside, target.join("f")).unwrap();

    let outcome = restore(&repo, &root, &target);
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_eq!(fingerprint(&outside), before);
    let f = fs::symlink_metadata(target.join("f")).unwrap();
    assert!(f.is_file());
    assert_eq!(
        (f.mode() & 0o7777, f.uid(), f.gid()),
        (0o640, owner().0, owner().1)
    );
    assert_eq!((f.mtime(), f.mtime_nsec()), (1_600_000_000, 42));
    assert_eq!(fs::read(target.join("f")).unwrap(), b"restored");
}

#[test]
fn a_full_folder_where_a_file_goes_is_a_reported_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, root) = snapshot(tmp.path(), |p| {
        vec![file(p, "f", b"restored"), file(p, "g", b"also")]
    });
    let target = tmp.path().join("t");
    fs::create_dir_all(target.join("f")).unwrap();
    fs::write(target.join("f/keep"), b"tenant's").unwrap();
    fs::create_dir_all(target.join("g")).unwrap();

    let outcome = restore(&repo, &root, &target);
    assert_eq!(outcome.errors.len(), 1, "{:?}", outcome.errors);
    let line = &outcome.errors[0];
    assert!(
        line.starts_with(&format!("{}:", target.join("f").display())),
        "{line}"
    );
    assert!(line.contains("not empty"), "{line}");
    assert_eq!(fs::read(target.join("f/keep")).unwrap(), b"tenant's");
    // An empty folder in the way is simply replaced.
    assert_eq!(fs::read(target.join("g")).unwrap(), b"also");
}

#[test]
fn an_existing_folder_is_reused_and_keeps_what_the_snapshot_lacks() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, root) = snapshot(tmp.path(), |p| {
        vec![dir(p, "sub", vec![file(p, "f", b"restored")])]
    });
    let target = tmp.path().join("t");
    fs::create_dir_all(target.join("sub")).unwrap();
    fs::write(target.join("sub/f"), b"old").unwrap();
    fs::write(target.join("sub/other"), b"kept").unwrap();
    let inode = fs::metadata(target.join("sub")).unwrap().ino();

    let outcome = restore(&repo, &root, &target);
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_eq!(fs::metadata(target.join("sub")).unwrap().ino(), inode);
    assert_eq!(fs::read(target.join("sub/f")).unwrap(), b"restored");
    assert_eq!(fs::read(target.join("sub/other")).unwrap(), b"kept");
}

#[test]
fn hard_links_are_restored_as_links() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, root) = snapshot(tmp.path(), |p| {
        let linked = |name: &str| Node {
            links: 2,
            device: 9,
            inode: 77,
            ..file(p, name, b"one inode")
        };
        vec![linked("a"), dir(p, "sub", vec![linked("b")])]
    });
    let target = tmp.path().join("t");
    let outcome = restore(&repo, &root, &target);
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_eq!(outcome.files, 2);
    let (a, b) = (
        fs::metadata(target.join("a")).unwrap(),
        fs::metadata(target.join("sub/b")).unwrap(),
    );
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
    assert_eq!(a.mode() & 0o7777, 0o640);
}

#[test]
fn symlinks_and_special_files_replace_what_is_there() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::write(&outside, b"root's own").unwrap();
    let before = fingerprint(&outside);
    let (repo, root) = snapshot(tmp.path(), |_| {
        let mut nodes = vec![
            Node {
                link_target: b"somewhere/else".to_vec(),
                ..base("link", NodeKind::Symlink, 0o777)
            },
            base("fifo", NodeKind::Fifo, 0o620),
            base("socket", NodeKind::Socket, 0o755),
        ];
        if is_root() {
            nodes.push(Node {
                rdev: libc::makedev(1, 3),
                ..base("null", NodeKind::CharDevice, 0o666)
            });
        }
        nodes
    });
    let target = tmp.path().join("t");
    fs::create_dir(&target).unwrap();
    for name in ["link", "fifo", "socket", "null"] {
        symlink(&outside, target.join(name)).unwrap();
    }

    let outcome = restore(&repo, &root, &target);
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_eq!(fingerprint(&outside), before);
    let meta = |name: &str| fs::symlink_metadata(target.join(name)).unwrap();
    assert_eq!(
        fs::read_link(target.join("link")).unwrap(),
        Path::new("somewhere/else")
    );
    let fifo = meta("fifo");
    assert!(fifo.file_type().is_fifo());
    assert!(meta("socket").file_type().is_socket());
    assert_eq!(meta("socket").mode() & 0o7777, 0o755);
    for m in [meta("link"), fifo.clone()] {
        assert_eq!(
            (m.mtime(), m.mtime_nsec(), m.uid()),
            (1_600_000_000, 42, owner().0)
        );
    }
    assert_eq!(fifo.mode() & 0o7777, 0o620);
    if is_root() {
        let null = meta("null");
        assert!(null.file_type().is_char_device());
        assert_eq!(null.rdev(), libc::makedev(1, 3));
    } else {
        assert!(fs::symlink_metadata(target.join("null")).is_ok());
    }
}

#[test]
fn repeated_zero_chunks_are_read_once_and_stay_holes() {
    const CHUNK: usize = 64 * 1024;
    const REPEATS: usize = 4096; // 256 MiB of zeros per file
    let tmp = tempfile::tempdir().unwrap();
    let (repo, root) = snapshot(tmp.path(), |p| {
        let (zeros, _) = p.add(Kind::Data, &vec![0u8; CHUNK]).unwrap();
        let (data, _) = p.add(Kind::Data, b"data in the middle").unwrap();
        let mut content = vec![zeros; REPEATS];
        content.push(data);
        content.extend(vec![zeros; REPEATS]);
        let sparse = |name: &str, content: Vec<Id>| Node {
            content,
            ..base(name, NodeKind::File, 0o600)
        };
        vec![sparse("a", content), sparse("b", vec![zeros; REPEATS])]
    });
    let target = tmp.path().join("t");
    let outcome = restore(&repo, &root, &target);
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_eq!(outcome.chunks_read, 2, "the chunk of zeros is read once");

    let a = fs::File::open(target.join("a")).unwrap();
    let length = (2 * REPEATS * CHUNK + 18) as u64;
    assert_eq!(a.metadata().unwrap().len(), length);
    assert!(
        a.metadata().unwrap().blocks() * 512 <= 64 * 1024,
        "holes stay holes"
    );
    let mut middle = [1u8; 20];
    a.read_exact_at(&mut middle, (REPEATS * CHUNK - 1) as u64)
        .unwrap();
    assert_eq!(&middle, b"\0data in the middle\0");
    let b = fs::metadata(target.join("b")).unwrap();
    assert_eq!(b.len(), (REPEATS * CHUNK) as u64);
    assert_eq!(b.blocks(), 0);
}

/// The case the zero-chunk memory is for: a backup that stores a 1 TiB
/// sparse file as 131,072 chunks of 8 MiB zeros. Ignored: it makes a
/// 1 TiB (sparse) file; run with `cargo test --lib -- --ignored tebibyte`.
#[test]
#[ignore]
fn a_tebibyte_of_zero_chunks_restores_in_seconds() {
    const CHUNK: usize = 8 << 20;
    const COUNT: usize = 131_072;
    let tmp = tempfile::tempdir().unwrap();
    let (repo, root) = snapshot(tmp.path(), |p| {
        let (zeros, _) = p.add(Kind::Data, &vec![0u8; CHUNK]).unwrap();
        vec![Node {
            content: vec![zeros; COUNT],
            ..base("huge", NodeKind::File, 0o600)
        }]
    });
    let started = std::time::Instant::now();
    let outcome = restore(&repo, &root, &tmp.path().join("t"));
    let took = started.elapsed();
    eprintln!("1 TiB of zero chunks restored in {took:?}");
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    let meta = fs::metadata(tmp.path().join("t/huge")).unwrap();
    assert_eq!(meta.len(), (CHUNK * COUNT) as u64);
    assert_eq!(meta.blocks(), 0);
    assert!(took < std::time::Duration::from_secs(30), "{took:?}");
}

#[test]
fn the_target_gets_the_restored_folders_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, root) = snapshot(tmp.path(), |p| {
        vec![dir(p, "sub", vec![file(p, "f", b"x")])]
    });
    let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;

    let sub = tmp.path().join("sub-restore");
    run(&repo, &root, b"/sub", &sub, None).unwrap();
    assert_eq!(mode(&sub), 0o750);
    assert_eq!(fs::read(sub.join("f")).unwrap(), b"x");

    // The root: its metadata when given, the target's own otherwise.
    let whole = tmp.path().join("whole");
    fs::create_dir(&whole).unwrap();
    fs::set_permissions(&whole, fs::Permissions::from_mode(0o711)).unwrap();
    run(&repo, &root, b"", &whole, None).unwrap();
    assert_eq!(mode(&whole), 0o711);
    let own = base("", NodeKind::Dir, 0o701);
    run(&repo, &root, b"/", &whole, Some(&own)).unwrap();
    assert_eq!(mode(&whole), 0o701);
    let meta = fs::metadata(&whole).unwrap();
    assert_eq!((meta.mtime(), meta.mtime_nsec()), (1_600_000_000, 42));
}

#[test]
fn a_target_through_a_symlink_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, root) = snapshot(tmp.path(), |p| vec![file(p, "f", b"x")]);
    fs::create_dir(tmp.path().join("real")).unwrap();
    symlink("real", tmp.path().join("link")).unwrap();
    let err = run(&repo, &root, b"", &tmp.path().join("link/t"), None).unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_eq!(fs::read_dir(tmp.path().join("real")).unwrap().count(), 0);
}

#[test]
fn zero_blocks_become_holes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sparse");
    let file = File::create(&path).unwrap();
    let mut data = vec![0u8; 1 << 20];
    data[10] = 1;
    write_sparse(&file, &data, 0).unwrap();
    file.set_len(data.len() as u64).unwrap();
    assert_eq!(fs::read(&path).unwrap(), data);
    let blocks = fs::metadata(&path).unwrap().blocks();
    assert!(blocks * 512 < 64 * 1024, "{blocks} blocks allocated");
}
