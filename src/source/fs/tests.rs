//! The walker's rules, each with the replacement a tenant would make
//! between the `fstatat` and the open.

use super::*;
use rustix::fs::CWD;
use std::fs;
use std::os::unix::fs::symlink;
use std::time::Duration;

fn open_dir(path: &Path) -> SourceDir {
    match open_path(path) {
        Ok(Opened::Dir(d)) => d,
        _ => panic!("{} is not a folder", path.display()),
    }
}

fn mkfifo(path: &Path) {
    rustix::fs::mknodat(CWD, path, FileType::Fifo, Mode::from_raw_mode(0o644), 0).unwrap();
}

/// A folder outside the tree with something no tenant may read.
fn secret() -> (tempfile::TempDir, std::path::PathBuf) {
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("shadow"), b"root:secret").unwrap();
    let path = outside.path().to_path_buf();
    (outside, path)
}

#[test]
fn a_folder_replaced_by_a_file_between_stat_and_open_is_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("x")).unwrap();
    let dir = open_dir(tmp.path());
    let seen = dir.stat_at(b"x").unwrap();
    fs::remove_dir(tmp.path().join("x")).unwrap();
    fs::write(tmp.path().join("x"), b"now a file").unwrap();
    assert!(matches!(dir.open_dir(b"x", &seen), Err(OpenError::Changed)));
}

#[test]
fn a_file_replaced_by_another_file_is_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("x"), b"first").unwrap();
    let dir = open_dir(tmp.path());
    let seen = dir.stat_at(b"x").unwrap();
    // Same type, another inode (the new one is created before the old one
    // goes, so the inode number cannot be reused).
    fs::write(tmp.path().join("y"), b"second").unwrap();
    fs::rename(tmp.path().join("y"), tmp.path().join("x")).unwrap();
    assert!(matches!(
        dir.open_file(b"x", &seen),
        Err(OpenError::Changed)
    ));
}

#[test]
fn a_symlink_swapped_in_is_never_followed() {
    let (_outside, secret) = secret();
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("site")).unwrap();
    fs::write(tmp.path().join("page"), b"hello").unwrap();
    let dir = open_dir(tmp.path());
    let dir_seen = dir.stat_at(b"site").unwrap();
    let file_seen = dir.stat_at(b"page").unwrap();
    // What `renameat2(RENAME_EXCHANGE)` with a prepared symlink does.
    fs::remove_dir(tmp.path().join("site")).unwrap();
    symlink(&secret, tmp.path().join("site")).unwrap();
    fs::remove_file(tmp.path().join("page")).unwrap();
    symlink(secret.join("shadow"), tmp.path().join("page")).unwrap();
    assert!(matches!(
        dir.open_dir(b"site", &dir_seen),
        Err(OpenError::Changed)
    ));
    assert!(matches!(
        dir.open_file(b"page", &file_seen),
        Err(OpenError::Changed)
    ));
    // Looked at afresh, they are symlinks, stored as such.
    match dir.open_entry(b"site") {
        Ok(Opened::Symlink { target, stat, .. }) => {
            assert_eq!(target, secret.as_os_str().as_bytes());
            assert_eq!(FileType::from_raw_mode(stat.st_mode), FileType::Symlink);
        }
        _ => panic!("site should be a symlink"),
    }
    // A source named by a path whose last component is a symlink is a
    // symlink too, even when it points to a folder.
    assert!(matches!(
        open_path(&tmp.path().join("site")),
        Ok(Opened::Symlink { .. })
    ));
}

#[test]
fn a_symlink_replaced_by_another_is_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    symlink("first", tmp.path().join("l")).unwrap();
    let dir = open_dir(tmp.path());
    let seen = dir.stat_at(b"l").unwrap();
    let (target, stat) = dir.read_link(b"l", &seen).unwrap();
    assert_eq!(
        (target.as_slice(), stat.st_ino),
        (&b"first"[..], seen.st_ino)
    );
    // Renamed over it: a new inode (removing first could reuse the number).
    symlink("other", tmp.path().join("m")).unwrap();
    fs::rename(tmp.path().join("m"), tmp.path().join("l")).unwrap();
    assert!(matches!(
        dir.read_link(b"l", &seen),
        Err(OpenError::Changed)
    ));
    fs::create_dir(tmp.path().join("d")).unwrap();
    fs::remove_file(tmp.path().join("l")).unwrap();
    fs::rename(tmp.path().join("d"), tmp.path().join("l")).unwrap();
    assert!(matches!(
        dir.read_link(b"l", &seen),
        Err(OpenError::Changed)
    ));
}

/// Run `f` on another thread; fail instead of hanging the test run.
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(f()));
    rx.recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("{what} hung"))
}

#[test]
fn a_fifo_swapped_in_for_a_file_does_not_hang_the_open() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("x"), b"a file").unwrap();
    let dir = open_dir(tmp.path());
    let seen = dir.stat_at(b"x").unwrap();
    fs::remove_file(tmp.path().join("x")).unwrap();
    mkfifo(&tmp.path().join("x"));
    let changed = within("opening a fifo", move || {
        matches!(dir.open_file(b"x", &seen), Err(OpenError::Changed))
    });
    assert!(changed);
}

#[test]
fn fifos_and_sockets_are_looked_at_not_opened() {
    let tmp = tempfile::tempdir().unwrap();
    mkfifo(&tmp.path().join("fifo"));
    mkfifo(&tmp.path().join("CACHEDIR.TAG"));
    let _socket = std::os::unix::net::UnixListener::bind(tmp.path().join("socket")).unwrap();
    let dir = open_dir(tmp.path());
    let (fifo, socket, tagged) = within("looking at a fifo", move || {
        (
            dir.open_entry(b"fifo"),
            dir.open_entry(b"socket"),
            dir.has_cachedir_tag(),
        )
    });
    let kind = |o: Result<Opened, OpenError>| match o {
        Ok(Opened::Special { stat, .. }) => FileType::from_raw_mode(stat.st_mode),
        _ => panic!("not a special file"),
    };
    assert_eq!(kind(fifo), FileType::Fifo);
    assert_eq!(kind(socket), FileType::Socket);
    assert!(!tagged, "a fifo is not a cache tag");
}

#[test]
fn cachedir_tag_needs_the_signature_in_a_regular_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = open_dir(tmp.path());
    assert!(!dir.has_cachedir_tag());
    fs::write(tmp.path().join("CACHEDIR.TAG"), "not it").unwrap();
    assert!(!dir.has_cachedir_tag());
    fs::write(
        tmp.path().join("CACHEDIR.TAG"),
        "Signature: 8a477f597d28d172789f06886806bc55\n",
    )
    .unwrap();
    assert!(dir.has_cachedir_tag());
    // A tag that is a symlink to a real tag elsewhere does not count.
    let other = tempfile::tempdir().unwrap();
    fs::rename(
        tmp.path().join("CACHEDIR.TAG"),
        other.path().join("CACHEDIR.TAG"),
    )
    .unwrap();
    symlink(
        other.path().join("CACHEDIR.TAG"),
        tmp.path().join("CACHEDIR.TAG"),
    )
    .unwrap();
    assert!(!dir.has_cachedir_tag());
}

#[test]
fn a_missing_source_is_not_found() {
    let tmp = tempfile::tempdir().unwrap();
    for path in [tmp.path().join("nope"), tmp.path().join("nope/deeper")] {
        match open_path(&path) {
            Err(OpenError::Io { stat: None, error }) => {
                assert_eq!(error.kind(), io::ErrorKind::NotFound, "{}", path.display())
            }
            _ => panic!("{} opened", path.display()),
        }
    }
}

/// 1,000 levels: 10 KB of path, well past PATH_MAX (4,096), so the tree is
/// built and walked through descriptors only.
#[test]
fn a_tree_deeper_than_path_max_is_walked_to_the_bottom() {
    const LEVELS: usize = 1000;
    let tmp = tempfile::tempdir().unwrap();
    let mut fd = rustix::fs::openat(CWD, tmp.path(), DIR_FLAGS, Mode::empty()).unwrap();
    for level in 0..LEVELS {
        let name = format!("level-{level:03}");
        rustix::fs::mkdirat(&fd, name.as_str(), Mode::from_raw_mode(0o755)).unwrap();
        fd = rustix::fs::openat(&fd, name.as_str(), DIR_FLAGS, Mode::empty()).unwrap();
    }
    let leaf = rustix::fs::openat(
        &fd,
        "leaf",
        OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .unwrap();
    File::from(leaf).write_all_at(b"at the bottom", 0).unwrap();
    drop(fd);

    raise_fd_limit();
    // Hold every level open, as the backup's walk does.
    let mut path = vec![open_dir(tmp.path())];
    loop {
        let top = path.last().unwrap();
        let names = top.entries();
        assert!(names.error.is_none());
        match names.names.as_slice() {
            [name] if name.starts_with(b"level-") => match top.open_entry(name) {
                Ok(Opened::Dir(d)) => path.push(d),
                _ => panic!("level {} did not open as a folder", path.len()),
            },
            [leaf] if leaf == b"leaf" => {
                let Ok(Opened::File(file)) = top.open_entry(leaf) else {
                    panic!("the leaf did not open as a file");
                };
                let mut content = Vec::new();
                file.range(0, 100).read_to_end(&mut content).unwrap();
                assert_eq!(content, b"at the bottom");
                break;
            }
            other => panic!("unexpected entries {other:?}"),
        }
    }
    assert_eq!(path.len(), LEVELS + 1);
}

const K: u64 = 1024;

/// Data at 0..4K and 1M..1M+4K of a 3 MiB file; everything else is hole.
fn sparse_file(dir: &Path) -> SourceFile {
    let f = File::create(dir.join("sparse")).unwrap();
    f.write_all_at(&[1; 4096], 0).unwrap();
    f.write_all_at(&[2; 4096], 1024 * K).unwrap();
    f.set_len(3 * 1024 * K).unwrap();
    drop(f);
    match open_dir(dir).open_entry(b"sparse") {
        Ok(Opened::File(f)) => f,
        _ => panic!("not a file"),
    }
}

fn supports_holes(file: &SourceFile) -> bool {
    // A file system without SEEK_HOLE reports one hole, at the end.
    rustix::fs::seek(&file.file, SeekFrom::Hole(0)).is_ok_and(|at| at < 3 * 1024 * K)
}

#[test]
fn extents_skip_long_holes_and_read_short_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let file = sparse_file(tmp.path());
    let size = 3 * 1024 * K;
    let all: Vec<Extent> = file.extents(size, 64 * K).collect();
    // Whatever the file system's block size, the extents tile the file.
    let mut at = 0;
    for e in &all {
        let (Extent::Data { start, end } | Extent::Hole { start, end }) = *e;
        assert_eq!(start, at, "{all:?}");
        assert!(end > start, "{all:?}");
        at = end;
    }
    assert_eq!(at, size);
    if !supports_holes(&file) {
        eprintln!("this file system reports no holes; checked the tiling only");
        return;
    }
    let data: Vec<(u64, u64)> = all
        .iter()
        .filter_map(|e| match *e {
            Extent::Data { start, end } => Some((start, end)),
            Extent::Hole { .. } => None,
        })
        .collect();
    assert_eq!(data.len(), 2, "{all:?}");
    assert!(
        data[0].0 == 0 && data[0].1 >= 4 * K && data[0].1 < 64 * K,
        "{all:?}"
    );
    assert!(data[1].0 <= 1024 * K && data[1].1 >= 1028 * K, "{all:?}");
    assert!(data[1].1 < 1024 * K + 64 * K, "{all:?}");
    assert!(matches!(all.last(), Some(Extent::Hole { end, .. }) if *end == size));

    // Holes shorter than `min_hole` are read with the data around them.
    let merged: Vec<Extent> = file.extents(size, 4 * 1024 * K).collect();
    assert_eq!(
        merged,
        vec![Extent::Data {
            start: 0,
            end: size
        }]
    );
    // A size smaller than the file (it grew since the fstat) bounds them.
    let head: Vec<Extent> = file.extents(512 * K, 64 * K).collect();
    assert!(matches!(head.last(), Some(Extent::Hole { end, .. }) if *end == 512 * K));
}

#[test]
fn a_range_reads_its_bytes_only() {
    let tmp = tempfile::tempdir().unwrap();
    let file = sparse_file(tmp.path());
    let mut bytes = Vec::new();
    file.range(4090, 4100).read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes, [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]);
    // Past the end of the file: a short read, which the backup notices.
    bytes.clear();
    file.range(3 * 1024 * K - 2, 3 * 1024 * K + 5)
        .read_to_end(&mut bytes)
        .unwrap();
    assert_eq!(bytes.len(), 2);
}

#[test]
fn xattrs_come_from_the_descriptor_and_symlinks_keep_their_own() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("f"), b"x").unwrap();
    if xattr::set(tmp.path().join("f"), "user.k", b"v").is_err() {
        eprintln!("no user xattrs on this file system; skipped");
        return;
    }
    symlink("f", tmp.path().join("l")).unwrap();
    let dir = open_dir(tmp.path());
    let Ok(Opened::File(file)) = dir.open_entry(b"f") else {
        panic!("f is a file")
    };
    let got = file.xattrs().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].name.as_slice(), got[0].value.as_slice()),
        (&b"user.k"[..], &b"v"[..])
    );
    // The symlink's own attributes (none: user.* is not allowed on
    // symlinks), not those of the file it points to.
    let Ok(Opened::Symlink { xattrs, .. }) = dir.open_entry(b"l") else {
        panic!("l is a symlink")
    };
    assert_eq!(xattrs.unwrap(), vec![]);
}
