//! Shapes a walk by path could not back up: a tree deeper than PATH_MAX
//! (ENAMETOOLONG below ~450 levels), and sparse files whose holes it read
//! byte by byte (1 TiB: two hours).

use crate::support::*;
use rustix::fs::{Mode, OFlags, CWD};
use std::fs::{self, File};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

const LEVELS: usize = 1000;
const LEAF: &[u8] = b"the bottom of a 1,000-level tree";

fn level(i: usize) -> String {
    format!("level-{i:03}")
}

fn open_dir(at: &OwnedFd, name: &str) -> OwnedFd {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::openat(at, name, flags, Mode::empty()).unwrap()
}

/// `root/level-000/.../level-999/leaf`: 10 KB of path, so it is built
/// through descriptors.
fn make_deep_tree(root: &Path) {
    fs::create_dir(root).unwrap();
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut dir = rustix::fs::openat(CWD, root, flags, Mode::empty()).unwrap();
    for i in 0..LEVELS {
        rustix::fs::mkdirat(&dir, level(i).as_str(), Mode::from_raw_mode(0o755)).unwrap();
        dir = open_dir(&dir, &level(i));
    }
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC;
    let leaf = rustix::fs::openat(&dir, "leaf", flags, Mode::from_raw_mode(0o644)).unwrap();
    File::from(leaf).write_all_at(LEAF, 0).unwrap();
}

/// Walk down a restored deep tree through descriptors: every level is
/// there, alone, and the leaf holds its bytes.
fn assert_deep_tree(root: &Path) {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut dir = rustix::fs::openat(CWD, root, flags, Mode::empty()).unwrap();
    for i in 0..LEVELS {
        dir = open_dir(&dir, &level(i));
    }
    let leaf = rustix::fs::openat(&dir, "leaf", OFlags::RDONLY, Mode::empty()).unwrap();
    let mut buf = vec![0; 100];
    let n = File::from(leaf).read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[..n], LEAF);
}

fn deep_path() -> String {
    (0..LEVELS).map(level).collect::<Vec<_>>().join("/")
}

#[test]
fn a_tree_1000_levels_deep_backs_up_completely() {
    let t = TestRepo::new();
    let source = t.path("deep");
    make_deep_tree(&source);
    // Exit code 0: no entry was skipped.
    t.backup(&source, "2026-11-24 02:00:00");
    let bottom = deep_path();
    assert_eq!(t.ok(&["ls", "latest", &bottom]), format!("{bottom}/leaf\n"));
    // The leaf alone restores into a short path with the restore of today.
    let target = t.path("leaf");
    t.ok(&[
        "restore",
        &format!("latest:{bottom}/leaf"),
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(fs::read(target.join("leaf")).unwrap(), LEAF);
}

#[test]
fn a_tree_1000_levels_deep_restores() {
    let t = TestRepo::new();
    let source = t.path("deep");
    make_deep_tree(&source);
    t.backup(&source, "2026-11-24 02:00:00");
    let restored = t.restore("latest");
    assert_deep_tree(&restored);
}

/// A file of `size` bytes with `data` written at each of `offsets`.
fn make_sparse(path: &Path, size: u64, offsets: &[u64], data: &[u8]) {
    let f = File::create(path).unwrap();
    for &at in offsets {
        f.write_all_at(data, at).unwrap();
    }
    f.set_len(size).unwrap();
}

fn backup_json(t: &TestRepo, source: &Path) -> serde_json::Value {
    let out = t.ok(&["backup", "--json", source.to_str().unwrap()]);
    serde_json::from_str(&out).unwrap()
}

#[test]
fn a_sparse_file_round_trips_and_stays_sparse() {
    let t = TestRepo::new();
    let source = t.path("src");
    fs::create_dir(&source).unwrap();
    let data = random_bytes(100_000, 5);
    let size = 96 << 20;
    let file = source.join("sparse");
    make_sparse(&file, size, &[0, 7 << 20, 50 << 20, size - 100_000], &data);
    let sparse_here = allocated_bytes(&file) < size / 2;

    let v = backup_json(&t, &source);
    let summary = &v["summary"];
    assert_eq!(summary["bytes_total"], size);
    if sparse_here {
        // The data (block-rounded) and holes shorter than a chunk, no more.
        let read = summary["bytes_read"].as_u64().unwrap();
        assert!(read < 1 << 20, "read {read} bytes of {size}");
    }

    let restored = t.restore("latest");
    let got = restored.join("sparse");
    assert_eq!(fs::metadata(&got).unwrap().len(), size);
    assert!(fs::read(&got).unwrap() == fs::read(&file).unwrap());
    assert!(
        allocated_bytes(&got) < 4 << 20,
        "{} bytes allocated",
        allocated_bytes(&got)
    );
    assert_eq!(t.run(&["check", "--read-data"]).status.code(), Some(0));
}

/// 1 TiB with 1 MiB of data, in a repository with the default chunk sizes
/// (8 MiB zero chunks: 131,072 ids in the content list of one file).
#[test]
fn a_terabyte_sparse_file_backs_up_and_restores_without_reading_its_holes() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let source = dir.path().join("src");
    fs::create_dir(&source).unwrap();
    let file = source.join("disk.img");
    let tib = 1u64 << 40;
    let data = random_bytes(256 * 1024, 9);
    let offsets = [0, 3 << 30, 700 << 30, tib - (256 << 10)];
    if File::create(&file).and_then(|f| f.set_len(tib)).is_err() {
        eprintln!("skipped: this file system does not hold a 1 TiB file");
        return;
    }
    make_sparse(&file, tib, &offsets, &data);
    if allocated_bytes(&file) > 64 << 20 {
        eprintln!("skipped: this file system does not keep holes");
        return;
    }
    let started = std::time::Instant::now();
    let out = snapfs_ok(&repo, &["backup", "--json", source.to_str().unwrap()]);
    let took = started.elapsed();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["summary"]["bytes_total"], tib);
    let read = v["summary"]["bytes_read"].as_u64().unwrap();
    assert!(read <= 4 << 20, "read {read} bytes");
    eprintln!("1 TiB sparse file backed up in {took:?} (debug build), {read} bytes read");
    let listing = snapfs_ok(&repo, &["ls", "-l", "latest"]);
    assert!(listing.contains(&tib.to_string()), "{listing}");
    // Unchanged: the next backup copies the 131,072 ids without reading.
    let out = snapfs_ok(&repo, &["backup", "--json", source.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["summary"]["files_unchanged"], 1);

    // Restored with its holes: the same size, the data where it was, and
    // next to nothing allocated.
    let target = dir.path().join("restored");
    let started = std::time::Instant::now();
    snapfs_ok(
        &repo,
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    eprintln!("and restored in {:?} (debug build)", started.elapsed());
    let got = target.join("disk.img");
    assert_eq!(fs::metadata(&got).unwrap().len(), tib);
    assert!(
        allocated_bytes(&got) < 64 << 20,
        "{} bytes allocated",
        allocated_bytes(&got)
    );
    let file = File::open(&got).unwrap();
    for offset in offsets {
        let mut back = vec![0u8; data.len()];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut back, offset).unwrap();
        assert!(back == data, "data at {offset}");
    }
    let mut hole = vec![1u8; 4096];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut hole, 500 << 30).unwrap();
    assert!(hole.iter().all(|&b| b == 0));
}
