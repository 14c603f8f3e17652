use super::walk::parse_snapfs_devices;
use super::*;
use crate::chunker::tests::{pseudo_random, small_params};
use crate::chunker::{Chunker, ZeroChunkIds};
use crate::snapshot::{NodeKind, Tree};
use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;

fn options(paths: &[&Path]) -> BackupOptions {
    BackupOptions {
        paths: paths.iter().map(|p| p.to_path_buf()).collect(),
        account: "alice".into(),
        hostname: "h".into(),
        time: None,
        excludes: vec![],
        one_file_system: false,
        tags: vec![],
        progress: false,
        lock_wait: std::time::Duration::from_secs(10),
    }
}

fn repo(dir: &Path) -> Repository {
    Repository::init(&dir.join("repo"), small_params(), Some(64 * 1024)).unwrap()
}

fn file_node(repo: &Repository, outcome: &BackupOutcome, name: &[u8]) -> Node {
    let root = snapshot::load_tree(repo, &outcome.snapshot.tree).unwrap();
    root.find(name).unwrap().clone()
}

#[test]
fn snapfs_devices_from_mountinfo() {
    let text = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
36 22 0:52 / /home/a\\040b/admin/backup rw,nosuid,nodev - fuse.snapfs snapfs rw,user_id=0
37 22 0:53 / /mnt/other rw - fuse.sshfs x rw
38 22 259:1048577 / /srv rw - fuse.snapfs snapfs rw
";
    let devices = parse_snapfs_devices(text);
    assert_eq!(
        devices,
        HashSet::from([
            rustix::fs::makedev(0, 52),
            rustix::fs::makedev(259, 1048577)
        ])
    );
}

#[test]
fn one_folder_gives_its_own_metadata_as_the_root_node() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("home");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o710)).unwrap();
    let xattr_set = xattr::set(&src, "user.root", b"r").is_ok();
    let repo = repo(tmp.path());
    let outcome = run(&repo, &options(&[&src])).unwrap();
    let root = outcome.root.expect("one folder: its metadata");
    let meta = fs::metadata(&src).unwrap();
    assert_eq!(root.name, b"");
    assert_eq!(root.kind, NodeKind::Dir);
    assert_eq!(root.subtree, None);
    assert_eq!(root.mode, 0o710);
    assert_eq!((root.uid, root.inode), (meta.uid(), meta.ino()));
    assert_eq!(
        (root.mtime.secs, root.mtime.nanos as i64),
        (meta.mtime(), meta.mtime_nsec())
    );
    if xattr_set {
        assert_eq!(root.xattrs.len(), 1);
        assert_eq!(root.xattrs[0].value, b"r");
    }
    // Several sources, or a file: the root is synthetic, no metadata.
    let other = tmp.path().join("other");
    fs::create_dir(&other).unwrap();
    assert!(run(&repo, &options(&[&src, &other]))
        .unwrap()
        .root
        .is_none());
    assert!(run(&repo, &options(&[&src.join("f")]))
        .unwrap()
        .root
        .is_none());
}

#[test]
fn a_missing_source_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("typo");
    let Err(e) = Sources::open(std::slice::from_ref(&missing)) else {
        panic!("opened a missing path")
    };
    assert!(matches!(e, Error::NotFound(_)), "{e}");
    assert!(e.to_string().contains(missing.to_str().unwrap()), "{e}");
}

/// The concatenation of a file node's chunks.
fn content(repo: &Repository, node: &Node) -> Vec<u8> {
    let mut out = Vec::new();
    for id in &node.content {
        out.extend(repo.load_blob(id).unwrap());
    }
    out
}

#[test]
fn holes_are_zero_chunks_and_are_not_read() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    // 64 MiB with 3 x 20 KB of data; the chunks are at most 16 KiB.
    let size = 64u64 << 20;
    let f = File::create(src.join("sparse")).unwrap();
    let mut want = vec![0u8; size as usize];
    for (i, at) in [0u64, 10 << 20, 40 << 20].into_iter().enumerate() {
        let data = pseudo_random(20_000, i as u64 + 1);
        f.write_all_at(&data, at).unwrap();
        want[at as usize..at as usize + data.len()].copy_from_slice(&data);
    }
    f.set_len(size).unwrap();
    drop(f);
    let repo = repo(tmp.path());
    let outcome = run(&repo, &options(&[&src])).unwrap();
    assert!(outcome.warnings.is_empty(), "{:?}", outcome.warnings);
    let node = file_node(&repo, &outcome, b"sparse");
    assert_eq!(node.size, size);
    assert_eq!(content(&repo, &node), want);
    let s = &outcome.snapshot.summary;
    assert_eq!(s.bytes_total, size);
    if s.bytes_read < size {
        // Data blocks, plus holes shorter than a chunk read with them.
        assert!(s.bytes_read < 200_000, "read {} bytes", s.bytes_read);
        let mut zeros = ZeroChunkIds::default();
        let max = small_params().max_size as usize;
        let full = node
            .content
            .iter()
            .filter(|id| zeros.is_zero(id, max))
            .count();
        assert!(full > 3000, "{full} zero chunks of {}", node.content.len());
        // Stored once, not once per use (the rest is the tree: 4,096 ids).
        assert!(s.bytes_added < 1_000_000, "{} bytes added", s.bytes_added);
    } else {
        eprintln!("this file system reports no holes; checked the content only");
    }

    // Unchanged next time: the chunk list is copied, nothing is read.
    let again = run(&repo, &options(&[&src])).unwrap();
    assert_eq!(again.snapshot.summary.files_unchanged, 1);
    assert_eq!(again.snapshot.summary.bytes_read, 0);
    assert_eq!(file_node(&repo, &again, b"sparse").content, node.content);
}

#[test]
fn a_dense_file_is_chunked_as_before() {
    // No holes: one data extent, so the cut points (and deduplication
    // against backups made before holes were skipped) do not move.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    let data = pseudo_random(200_000, 42);
    fs::write(src.join("dense"), &data).unwrap();
    let repo = repo(tmp.path());
    let outcome = run(&repo, &options(&[&src])).unwrap();
    let node = file_node(&repo, &outcome, b"dense");
    let mut chunker = Chunker::new(small_params());
    let mut chunks = chunker.chunks(&data[..]);
    let mut ids = Vec::new();
    while let Some(c) = chunks.next_chunk().unwrap() {
        ids.push(Id::hash(c));
    }
    assert_eq!(node.content, ids);
}

#[test]
fn excludes_cachedir_tags_and_symlinks_to_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("cache")).unwrap();
    fs::create_dir_all(src.join("keep")).unwrap();
    fs::write(src.join("keep/a.log"), b"log").unwrap();
    fs::write(src.join("keep/a.txt"), b"txt").unwrap();
    fs::write(
        src.join("cache/CACHEDIR.TAG"),
        "Signature: 8a477f597d28d172789f06886806bc55",
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc", src.join("etc")).unwrap();
    let repo = repo(tmp.path());
    let mut opts = options(&[&src]);
    opts.excludes = vec!["*.log".into()];
    let outcome = run(&repo, &opts).unwrap();
    assert!(outcome.warnings.is_empty(), "{:?}", outcome.warnings);
    let root = snapshot::load_tree(&repo, &outcome.snapshot.tree).unwrap();
    let names = |t: &Tree| t.nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&root), [&b"cache"[..], b"etc", b"keep"]);
    let cache = snapshot::load_tree(&repo, &root.find(b"cache").unwrap().subtree.unwrap());
    assert!(cache.unwrap().nodes.is_empty());
    let etc = root.find(b"etc").unwrap();
    assert_eq!(
        (etc.kind, etc.link_target.as_slice()),
        (NodeKind::Symlink, &b"/etc"[..])
    );
    let keep = snapshot::load_tree(&repo, &root.find(b"keep").unwrap().subtree.unwrap());
    assert_eq!(names(&keep.unwrap()), [b"a.txt"]);
}

/// An unchanged file is taken from the parent without being opened: its
/// xattrs come along, and an xattr set since (which changes the ctime)
/// makes it changed, so the new value is read.
#[test]
fn an_unchanged_file_keeps_its_xattrs_and_a_new_xattr_is_seen() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("home");
    fs::create_dir(&src).unwrap();
    let file = src.join("f");
    fs::write(&file, b"content").unwrap();
    if xattr::set(&file, "user.tag", b"one").is_err() {
        eprintln!("skipped: no user xattrs here");
        return;
    }
    let repo = repo(tmp.path());
    let first = run(&repo, &options(&[&src])).unwrap();
    let second = run(&repo, &options(&[&src])).unwrap();
    assert_eq!(second.snapshot.summary.files_unchanged, 1);
    assert_eq!(
        file_node(&repo, &second, b"f"),
        file_node(&repo, &first, b"f")
    );
    assert_eq!(file_node(&repo, &second, b"f").xattrs[0].value, b"one");

    xattr::set(&file, "user.tag", b"two").unwrap();
    let third = run(&repo, &options(&[&src])).unwrap();
    assert_eq!(third.snapshot.summary.files_unchanged, 0);
    assert_eq!(file_node(&repo, &third, b"f").xattrs[0].value, b"two");
}
