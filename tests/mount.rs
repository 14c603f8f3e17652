//! `snapfs mount` through a real kernel mount: the binary mounts with
//! `--daemon`, the tests use the mount with ordinary tools and syscalls.
//!
//! A separate test binary from `tests/integration/` because these need root,
//! /dev/fuse and `fusermount3` (and, for SFTP, OpenSSH's `sshd` and
//! `useradd`). Without them the tests skip with a message, unless
//! `SNAPFS_REQUIRE_FUSE=1`, which turns a missing FUSE into a failure (CI).
//!
//! - every snapshot against its source: `diff -r` and metadata
//! - writes are EROFS
//! - a backup made while mounted appears, `latest` follows
//! - 8 parallel readers of one multi-chunk file
//! - a flipped byte in a pack: EIO for that file only
//! - SFTP: list and `get -r`; `--allow-other` enforces owners and modes,
//!   and an ACL that refuses a user what the mode allows
//! - a backup skips a snapfs mount inside the home it backs up
//! - files stay readable while prune repacks; forgotten days vanish
//! - S3 (SeaweedFS): a repository mounts; on a cluster of three volume
//!   servers, a read outlives one of them killed under it

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "servers/mod.rs"]
mod servers;
#[path = "sshd/mod.rs"]
mod sshd;

use sshd::{shared_tempdir, Sshd};

const SNAPFS: &str = env!("CARGO_BIN_EXE_snapfs");

/// Whether a kernel mount can run here; panics instead of skipping when
/// `SNAPFS_REQUIRE_FUSE=1`.
fn fuse_available(test: &str) -> bool {
    let missing: Vec<&str> = [
        ("/dev/fuse", "/dev/fuse"),
        ("/usr/bin/fusermount3", "fusermount3"),
    ]
    .into_iter()
    .filter(|(path, _)| !Path::new(path).exists())
    .map(|(_, name)| name)
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

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn snapfs(repo: &Path) -> Command {
    let mut cmd = Command::new(SNAPFS);
    cmd.arg("--repo").arg(repo).env("SNAPFS_LOG", "warn");
    cmd
}

/// A repository with small chunks, so a few hundred KiB span many chunks.
fn init_repo(repo: &Path) {
    run(snapfs(repo).args([
        "init",
        "--chunk-sizes",
        "16KiB/64KiB/256KiB",
        "--pack-size",
        "1MiB",
    ]));
}

fn backup(repo: &Path, src: &Path, time: &str) {
    run(snapfs(repo)
        .arg("backup")
        .arg(src)
        .args(["--account", "alice", "--time", time]));
}

/// A mounted repository, unmounted on drop (lazily, so a failing test that
/// still holds a file open does not leave the mount behind).
struct Mounted {
    dir: PathBuf,
}

impl Mounted {
    fn new(repo: &Path, dir: &Path, extra: &[&str]) -> Mounted {
        std::fs::create_dir_all(dir).unwrap();
        run(snapfs(repo)
            .arg("mount")
            .args(["--daemon", "--utc"])
            .args(extra)
            .arg(dir));
        let mounted = Mounted {
            dir: dir.canonicalize().unwrap(),
        };
        assert_eq!(
            fstype(&mounted.dir).as_deref(),
            Some("fuse.snapfs"),
            "backup skips it by this type"
        );
        mounted
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(&self.dir)
            .status();
    }
}

fn fstype(mountpoint: &Path) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-")?;
        (Path::new(fields[4]) == mountpoint).then(|| fields[sep + 1].to_string())
    })
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Every kind of entry backup keeps, with odd owners, modes and times.
fn make_tree(root: &Path, seed: u64) {
    let d = |p: &str| std::fs::create_dir_all(root.join(p)).unwrap();
    let w = |p: &str, data: &[u8]| std::fs::write(root.join(p), data).unwrap();
    d("docs/deep/deeper");
    d("empty-dir");
    w("big.bin", &pseudo_random(700_000, seed));
    w("empty", b"");
    w("docs/a.txt", format!("hello {seed}\n").as_bytes());
    w("docs/deep/deeper/b.txt", b"deep");
    w("name with spaces & ünïcode", b"x");
    std::fs::hard_link(root.join("docs/a.txt"), root.join("hard-link")).unwrap();
    std::os::unix::fs::symlink("docs/a.txt", root.join("link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    unsafe {
        assert_eq!(libc::mkfifo(c(&root.join("fifo")).as_ptr(), 0o640), 0);
        assert_eq!(
            libc::mknod(
                c(&root.join("null-dev")).as_ptr(),
                libc::S_IFCHR | 0o600,
                libc::makedev(1, 3)
            ),
            0
        );
        assert_eq!(
            libc::chown(c(&root.join("docs/a.txt")).as_ptr(), 1234, 5678),
            0
        );
        assert_eq!(libc::lchown(c(&root.join("link")).as_ptr(), 4321, 8765), 0);
    }
    drop(std::os::unix::net::UnixListener::bind(root.join("socket")).unwrap());
    let mode = |p: &str, m: u32| {
        std::fs::set_permissions(
            root.join(p),
            std::os::unix::fs::PermissionsExt::from_mode(m),
        )
        .unwrap()
    };
    mode("docs/deep", 0o750);
    mode("empty", 0o4755);
    mode("big.bin", 0o600);
    let _ = xattr::set(root.join("docs/a.txt"), "user.comment", b"kept");
    let _ = xattr::set(root.join("empty-dir"), "user.empty", b"");
    // Times with nanoseconds, set last (chown and xattrs change ctime only).
    let t = std::fs::FileTimes::new()
        .set_modified(std::time::UNIX_EPOCH + Duration::new(1_600_000_000, 123_456_789));
    std::fs::File::open(root.join("docs/deep/deeper/b.txt"))
        .unwrap()
        .set_times(t)
        .unwrap();
}

/// Compare `mounted` with `src` entry by entry: type, mode, owner, size,
/// mtime (ns), link count, symlink target, device number, xattrs, and that
/// hard links share an inode in the mount exactly when they do in the source.
fn compare_metadata(src: &Path, mounted: &Path) {
    let mut src_inodes: HashMap<u64, PathBuf> = HashMap::new();
    let mut checked = 0;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let (s, m) = (src.join(&rel), mounted.join(&rel));
        let (sm, mm) = (
            std::fs::symlink_metadata(&s).unwrap(),
            std::fs::symlink_metadata(&m).unwrap(),
        );
        let what = rel.display();
        assert_eq!(sm.file_type(), mm.file_type(), "{what}: type");
        if !rel.as_os_str().is_empty() {
            // The snapshot root is synthetic; everything below is the source.
            assert_eq!(sm.mode(), mm.mode(), "{what}: mode");
            assert_eq!((sm.uid(), sm.gid()), (mm.uid(), mm.gid()), "{what}: owner");
            assert_eq!(
                (sm.mtime(), sm.mtime_nsec()),
                (mm.mtime(), mm.mtime_nsec()),
                "{what}: mtime"
            );
            assert_eq!(sm.nlink(), mm.nlink(), "{what}: nlink");
        }
        if !sm.is_dir() {
            assert_eq!(sm.len(), mm.len(), "{what}: size");
            assert_eq!(
                mm.blocks(),
                mm.len().div_ceil(512) * u64::from(sm.is_file()),
                "{what}: blocks"
            );
        }
        if sm.file_type().is_char_device() || sm.file_type().is_block_device() {
            assert_eq!(sm.rdev(), mm.rdev(), "{what}: rdev");
        }
        if sm.is_symlink() {
            assert_eq!(
                std::fs::read_link(&s).unwrap(),
                std::fs::read_link(&m).unwrap(),
                "{what}: target"
            );
        } else {
            let names = |p: &Path| {
                let mut v: Vec<_> = xattr::list(p)
                    .unwrap()
                    .filter(|n| n.to_string_lossy().starts_with("user."))
                    .collect();
                v.sort();
                v
            };
            assert_eq!(names(&s), names(&m), "{what}: xattr names");
            for name in names(&s) {
                assert_eq!(
                    xattr::get(&s, &name).unwrap(),
                    xattr::get(&m, &name).unwrap(),
                    "{what}: xattr {name:?}"
                );
            }
        }
        if !sm.is_dir() && sm.nlink() > 1 {
            if let Some(first) = src_inodes.get(&sm.ino()) {
                let fm = std::fs::symlink_metadata(mounted.join(first)).unwrap();
                assert_eq!(
                    fm.ino(),
                    mm.ino(),
                    "{what} and {} are hard links",
                    first.display()
                );
            }
            src_inodes.insert(sm.ino(), rel.clone());
        }
        if sm.is_dir() {
            for entry in std::fs::read_dir(&s).unwrap() {
                stack.push(rel.join(entry.unwrap().file_name()));
            }
            let mut a: Vec<_> = std::fs::read_dir(&s)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            let mut b: Vec<_> = std::fs::read_dir(&m)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            a.sort();
            b.sort();
            assert_eq!(a, b, "{what}: entries");
        }
        checked += 1;
    }
    assert!(checked > 10, "walked {checked} entries");
}

/// `diff -r`, allowing only its notes about special files of equal type.
fn diff_r(a: &Path, b: &Path) {
    let out = Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        let special = ["fifo", "socket", "character special file"]
            .iter()
            .any(|t| {
                line.starts_with("File ")
                    && line.contains(&format!("is a {t} while file"))
                    && line.ends_with(&format!("is a {t}"))
            });
        assert!(special, "diff -r {} {}: {line}", a.display(), b.display());
    }
    assert!(
        matches!(out.status.code(), Some(0 | 1)) && out.stderr.is_empty(),
        "diff failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_snapshot_matches_its_source_and_is_read_only() {
    if !fuse_available("every_snapshot_matches_its_source_and_is_read_only") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (repo, one, two) = (
        tmp.path().join("repo"),
        tmp.path().join("one"),
        tmp.path().join("two"),
    );
    init_repo(&repo);
    make_tree(&one, 1);
    make_tree(&two, 2);
    std::fs::write(two.join("only-in-two"), b"2").unwrap();
    backup(&repo, &one, "2025-03-01T08:00:00Z");
    backup(&repo, &two, "2025-03-01T20:15:30Z");
    let m = Mounted::new(&repo, &tmp.path().join("mnt"), &[]);

    let mut top: Vec<String> = std::fs::read_dir(&m.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    assert_eq!(top, ["2025-03-01", "2025-03-01_201530", "latest"]);
    assert_eq!(
        std::fs::read_link(m.path("latest")).unwrap(),
        Path::new("2025-03-01_201530")
    );
    for (name, src) in [("2025-03-01", &one), ("2025-03-01_201530", &two)] {
        diff_r(src, &m.path(name));
        compare_metadata(src, &m.path(name));
    }
    diff_r(&two, &m.path("latest/"));

    // du counts the data, not zero.
    let du = run(Command::new("du")
        .arg("-s")
        .arg("-k")
        .arg(m.path("latest/big.bin")));
    let kib: u64 = String::from_utf8_lossy(&du.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((680..=700).contains(&kib), "du says {kib} KiB");

    // Read-only, whatever the tool.
    let touch = Command::new("touch")
        .arg(m.path("latest/docs/a.txt"))
        .output()
        .unwrap();
    assert!(!touch.status.success());
    assert!(
        String::from_utf8_lossy(&touch.stderr).contains("Read-only file system"),
        "{touch:?}"
    );
    for result in [
        std::fs::write(m.path("latest/new-file"), b"x"),
        std::fs::OpenOptions::new()
            .append(true)
            .open(m.path("latest/docs/a.txt"))
            .map(drop),
        std::fs::create_dir(m.path("latest/new-dir")),
        std::fs::remove_file(m.path("latest/empty")),
        std::fs::rename(m.path("latest/empty"), m.path("latest/empty2")),
        xattr::set(m.path("latest/empty"), "user.x", b"y"),
    ] {
        assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::EROFS));
    }
    assert_eq!(
        std::fs::read_dir(m.path("nope"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::ENOENT)
    );
}

#[test]
fn a_backup_made_while_mounted_appears_and_latest_moves() {
    if !fuse_available("a_backup_made_while_mounted_appears_and_latest_moves") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (repo, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    init_repo(&repo);
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"first").unwrap();
    backup(&repo, &src, "2025-04-01T10:00:00Z");
    // As on a hosting server: the mount shows one account's backups.
    let m = Mounted::new(&repo, &tmp.path().join("mnt"), &["--account", "alice"]);
    assert_eq!(std::fs::read(m.path("latest/f")).unwrap(), b"first");

    // Another account's newer backup does not show up, and `latest` stays.
    run(snapfs(&repo).arg("backup").arg(&src).args([
        "--account",
        "bob",
        "--time",
        "2025-04-03T10:00:00Z",
    ]));
    std::fs::write(src.join("f"), b"second, new chunks").unwrap();
    std::fs::write(src.join("g"), pseudo_random(200_000, 9)).unwrap();
    backup(&repo, &src, "2025-04-02T10:00:00Z");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_link(m.path("latest")).ok().as_deref() != Some(Path::new("2025-04-02")) {
        assert!(
            Instant::now() < deadline,
            "the new snapshot did not appear within 10 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        std::fs::read(m.path("2025-04-02/f")).unwrap(),
        b"second, new chunks"
    );
    assert_eq!(
        std::fs::read(m.path("latest/g")).unwrap(),
        pseudo_random(200_000, 9)
    );
    assert_eq!(std::fs::read(m.path("2025-04-01/f")).unwrap(), b"first");
    let mut days: Vec<String> = std::fs::read_dir(&m.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    days.sort();
    assert_eq!(days, ["2025-04-01", "2025-04-02", "latest"], "not bob's");
}

#[test]
fn eight_parallel_readers_of_a_multi_chunk_file() {
    if !fuse_available("eight_parallel_readers_of_a_multi_chunk_file") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (repo, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    init_repo(&repo);
    std::fs::create_dir_all(&src).unwrap();
    let data = pseudo_random(8 << 20, 42);
    std::fs::write(src.join("big"), &data).unwrap();
    for i in 0..8 {
        std::fs::write(src.join(format!("other-{i}")), pseudo_random(1 << 20, i)).unwrap();
    }
    backup(&repo, &src, "2025-05-01T10:00:00Z");
    let m = Mounted::new(&repo, &tmp.path().join("mnt"), &["--cache-size", "4MiB"]);
    let want = blake3::hash(&data);
    let threads: Vec<_> = (0..8u64)
        .map(|i| {
            let (big, other) = (m.path("latest/big"), m.path(&format!("latest/other-{i}")));
            std::thread::spawn(move || {
                use std::io::{Read, Seek, SeekFrom};
                // Each starts at a different place, reads to the end with its
                // own buffer size, then reads the head.
                let mut f = std::fs::File::open(&big).unwrap();
                let start = (i << 20) as usize;
                let mut got = vec![0u8; 8 << 20];
                f.seek(SeekFrom::Start(start as u64)).unwrap();
                let mut pos = start;
                let step = 4096 * (i as usize + 1);
                while pos < got.len() {
                    let end = (pos + step).min(got.len());
                    let n = f.read(&mut got[pos..end]).unwrap();
                    assert!(n > 0, "early end of file at {pos}");
                    pos += n;
                }
                f.seek(SeekFrom::Start(0)).unwrap();
                f.read_exact(&mut got[..start]).unwrap();
                (
                    blake3::hash(&got),
                    std::fs::read(other).unwrap() == pseudo_random(1 << 20, i),
                )
            })
        })
        .collect();
    for t in threads {
        let (hash, other_ok) = t.join().unwrap();
        assert_eq!(hash, want);
        assert!(other_ok);
    }
}

#[test]
fn a_flipped_byte_in_a_pack_is_eio_for_that_file_only() {
    if !fuse_available("a_flipped_byte_in_a_pack_is_eio_for_that_file_only") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (repo_path, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    init_repo(&repo_path);
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("victim"), pseudo_random(300_000, 5)).unwrap();
    std::fs::write(src.join("bystander"), pseudo_random(300_000, 6)).unwrap();
    backup(&repo_path, &src, "2025-06-01T10:00:00Z");

    let repo = snapfs::repository::Repository::open(&repo_path).unwrap();
    let entry = snapfs::snapshot::list(&repo, None)
        .unwrap()
        .0
        .pop()
        .unwrap();
    let node = snapfs::snapshot::resolve(&repo, &entry.snapshot.tree, b"victim").unwrap();
    let loc = repo.locate(&node.content[node.content.len() / 2]).unwrap();
    let hex = loc.pack.to_hex();
    let pack = repo_path.join("data").join(&hex[..2]).join(&hex);
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[loc.blob.offset as usize + loc.blob.length as usize / 2] ^= 1;
    std::fs::write(&pack, bytes).unwrap();

    let m = Mounted::new(&repo_path, &tmp.path().join("mnt"), &[]);
    let err = std::fs::read(m.path("latest/victim")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    // Again (not cached as an answer), and everything else keeps working.
    assert_eq!(
        std::fs::read(m.path("latest/victim"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EIO)
    );
    assert_eq!(
        std::fs::read(m.path("latest/bystander")).unwrap(),
        pseudo_random(300_000, 6)
    );
    assert_eq!(
        std::fs::metadata(m.path("latest/victim")).unwrap().len(),
        300_000
    );
    assert_eq!(std::fs::read_dir(m.path("latest")).unwrap().count(), 2);
}

// ---- SFTP, as the product is used ----

fn sftp_available(test: &str) -> bool {
    fuse_available(test) && sshd::available(test)
}

#[test]
fn sftp_lists_the_mount_and_gets_a_snapshot() {
    if !sftp_available("sftp_lists_the_mount_and_gets_a_snapshot") {
        return;
    }
    let tmp = shared_tempdir();
    let (repo, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    init_repo(&repo);
    std::fs::create_dir_all(src.join("site/img")).unwrap();
    std::fs::write(src.join("site/index.html"), b"<h1>hi</h1>").unwrap();
    std::fs::write(src.join("site/img/logo.bin"), pseudo_random(500_000, 3)).unwrap();
    std::fs::write(src.join("notes.txt"), b"notes").unwrap();
    backup(&repo, &src, "2025-07-01T10:00:00Z");
    let m = Mounted::new(&repo, &tmp.path().join("mnt"), &["--allow-other"]);

    let mut sshd = Sshd::start(&tmp.path().join("ssh"));
    sshd.add_user("snapfs-t1");
    let got = tmp.path().join("got");
    std::fs::create_dir_all(&got).unwrap();
    let out = sshd.sftp(
        "snapfs-t1",
        &format!(
            "ls -1 {mnt}\ncd {mnt}\nget -r 2025-07-01 {got}\n",
            mnt = m.dir.display(),
            got = got.display()
        ),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sftp: {stdout}\n{}\nsshd: {}",
        String::from_utf8_lossy(&out.stderr),
        sshd.log()
    );
    assert!(
        stdout.contains("2025-07-01") && stdout.contains("latest"),
        "{stdout}"
    );
    let diff = Command::new("diff")
        .arg("-r")
        .arg(&src)
        .arg(got.join("2025-07-01"))
        .output()
        .unwrap();
    assert!(
        diff.status.success(),
        "{}",
        String::from_utf8_lossy(&diff.stdout)
    );
}

#[test]
fn allow_other_enforces_the_snapshot_owners_and_modes() {
    if !sftp_available("allow_other_enforces_the_snapshot_owners_and_modes") {
        return;
    }
    let tmp = shared_tempdir();
    let mut sshd = Sshd::start(&tmp.path().join("ssh"));
    let a = sshd.add_user("snapfs-t2a");
    let b = sshd.add_user("snapfs-t2b");
    let (repo, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    init_repo(&repo);
    std::fs::create_dir_all(&src).unwrap();
    for (name, uid, mode) in [
        ("mine", a, 0o600),
        ("theirs", b, 0o600),
        ("public", b, 0o644),
        ("public_but_not_for_a", b, 0o644),
    ] {
        let path = src.join(name);
        std::fs::write(&path, format!("secret of {name}")).unwrap();
        std::os::unix::fs::chown(&path, Some(uid), Some(uid)).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .unwrap();
    }
    // setfacl -m u:snapfs-t2a:--- public_but_not_for_a
    let refuse_a = acl_xattr(&[
        (ACL_USER_OBJ, 6, u32::MAX),
        (ACL_USER, 0, a),
        (ACL_GROUP_OBJ, 4, u32::MAX),
        (ACL_MASK, 4, u32::MAX),
        (ACL_OTHER, 4, u32::MAX),
    ]);
    xattr::set(
        src.join("public_but_not_for_a"),
        "system.posix_acl_access",
        &refuse_a,
    )
    .expect("the temp folder takes POSIX ACLs");
    backup(&repo, &src, "2025-08-01T10:00:00Z");
    let m = Mounted::new(&repo, &tmp.path().join("mnt"), &["--allow-other"]);
    let got = tmp.path().join("got");
    std::fs::create_dir_all(&got).unwrap();
    let shown_mode = |name: &str| {
        std::fs::metadata(m.path(&format!("latest/{name}")))
            .unwrap()
            .mode()
            & 0o7777
    };
    assert_eq!(shown_mode("public"), 0o644);
    assert_eq!(
        shown_mode("public_but_not_for_a"),
        0o600,
        "narrowed by its ACL"
    );

    let mine = sshd.sftp(
        "snapfs-t2a",
        &format!(
            "get {} {}\n",
            m.path("latest/mine").display(),
            got.display()
        ),
    );
    assert!(
        mine.status.success(),
        "{}\nsshd: {}",
        String::from_utf8_lossy(&mine.stderr),
        sshd.log()
    );
    assert_eq!(std::fs::read(got.join("mine")).unwrap(), b"secret of mine");

    let theirs = sshd.sftp(
        "snapfs-t2a",
        &format!(
            "get {} {}\n",
            m.path("latest/theirs").display(),
            got.display()
        ),
    );
    assert!(!theirs.status.success());
    let stderr = String::from_utf8_lossy(&theirs.stderr);
    assert!(stderr.contains("Permission denied"), "{stderr}");
    assert!(!got.join("theirs").exists());

    let public = sshd.sftp(
        "snapfs-t2a",
        &format!(
            "get {} {}\nget {} {}\n",
            m.path("latest/public").display(),
            got.display(),
            m.path("latest/public_but_not_for_a").display(),
            got.display()
        ),
    );
    assert!(!public.status.success(), "the ACL refuses the second file");
    let stderr = String::from_utf8_lossy(&public.stderr);
    assert!(stderr.contains("Permission denied"), "{stderr}");
    assert_eq!(
        std::fs::read(got.join("public")).unwrap(),
        b"secret of public"
    );
    assert!(!got.join("public_but_not_for_a").exists());
}

// POSIX ACL tags and the xattr form of an ACL (`posix_acl_xattr_entry`).
const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;

fn acl_xattr(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut out = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

#[test]
fn sigterm_unmounts_and_exits() {
    if !fuse_available("sigterm_unmounts_and_exits") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (repo, src, mnt) = (
        tmp.path().join("repo"),
        tmp.path().join("src"),
        tmp.path().join("mnt"),
    );
    init_repo(&repo);
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    backup(&repo, &src, "2025-09-01T10:00:00Z");
    std::fs::create_dir_all(&mnt).unwrap();
    let mnt = mnt.canonicalize().unwrap();
    // In the foreground, as systemd would run it.
    let mut child = snapfs(&repo)
        .arg("mount")
        .arg(&mnt)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = Mounted { dir: mnt.clone() };
    let deadline = Instant::now() + Duration::from_secs(10);
    while fstype(&mnt).is_none() {
        assert!(Instant::now() < deadline, "not mounted within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(std::fs::read(mnt.join("latest/f")).unwrap(), b"x");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert_eq!(fstype(&mnt), None, "unmounted");
}

#[test]
fn a_backup_of_a_home_skips_the_snapfs_mount_inside_it() {
    if !fuse_available("a_backup_of_a_home_skips_the_snapfs_mount_inside_it") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (repo, home) = (tmp.path().join("repo"), tmp.path().join("home"));
    init_repo(&repo);
    std::fs::create_dir_all(home.join("admin/backup")).unwrap();
    std::fs::write(home.join("index.html"), b"<html>").unwrap();
    backup(&repo, &home, "2025-04-01T02:00:00Z");
    // The user's own backups, mounted inside their home, as in production.
    let _m = Mounted::new(&repo, &home.join("admin/backup"), &[]);
    backup(&repo, &home, "2025-04-02T02:00:00Z");
    let listing = run(snapfs(&repo).args(["ls", "latest", "-R"])).stdout;
    assert_eq!(
        String::from_utf8_lossy(&listing),
        "admin\nadmin/backup\nindex.html\n",
        "the mount point is kept, empty; nothing below it is backed up"
    );
}

#[test]
fn files_stay_readable_while_prune_repacks_and_forgotten_days_vanish() {
    if !fuse_available("files_stay_readable_while_prune_repacks_and_forgotten_days_vanish") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (repo, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    init_repo(&repo);
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("kept"), pseudo_random(600_000, 1)).unwrap();
    for (day, seed) in [(1, 10), (2, 20), (3, 30)] {
        std::fs::write(src.join("daily"), pseudo_random(300_000, seed)).unwrap();
        backup(&repo, &src, &format!("2025-04-0{day}T02:00:00Z"));
    }
    let m = Mounted::new(&repo, &tmp.path().join("mnt"), &[]);
    assert_eq!(
        std::fs::read(m.path("latest/daily")).unwrap(),
        pseudo_random(300_000, 30)
    );
    // Forget the first two days; repack everything, so every pack the mount
    // knows of is deleted and the kept data lives in new packs.
    run(snapfs(&repo).args(["forget", "--keep-last", "1"]));
    run(snapfs(&repo).args(["prune", "--max-unused", "0%"]));
    // Not read before: the kernel's page cache cannot answer for it.
    assert_eq!(
        std::fs::read(m.path("2025-04-03/kept")).unwrap(),
        pseudo_random(600_000, 1)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while m.path("2025-04-01").exists() {
        assert!(
            Instant::now() < deadline,
            "a forgotten day is still shown after 10 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(m.path("2025-04-03").is_dir());
}

/// `snapfs ARGS` on the S3 repository at `location`, with the server's
/// environment; panics on failure.
fn s3_snapfs<'a, K, V>(
    location: &'a str,
    env: impl IntoIterator<Item = (K, V)>,
) -> impl Fn(&[&str]) -> Output + 'a
where
    K: AsRef<std::ffi::OsStr> + 'a,
    V: AsRef<std::ffi::OsStr> + 'a,
{
    let env: Vec<(K, V)> = env.into_iter().collect();
    move |args| {
        run(Command::new(SNAPFS)
            .args(args)
            .env("SNAPFS_REPO", location)
            .env("SNAPFS_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (k, v))))
    }
}

/// `mount --daemon --utc --per-account` at `mnt` (made), unmounted on drop.
fn mount_per_account(snapfs: impl Fn(&[&str]) -> Output, mnt: &Path) -> Mounted {
    std::fs::create_dir_all(mnt).unwrap();
    snapfs(&[
        "mount",
        "--daemon",
        "--utc",
        "--per-account",
        mnt.to_str().unwrap(),
    ]);
    Mounted {
        dir: mnt.canonicalize().unwrap(),
    }
}

/// A repository on S3 (a throwaway SeaweedFS) mounts like a folder's:
/// days, `latest`, file bytes; a backup made meanwhile shows up.
#[test]
fn an_s3_repository_mounts_and_shows_new_backups() {
    let test = "an_s3_repository_mounts_and_shows_new_backups";
    if !fuse_available(test) {
        return;
    }
    let Some(server) = servers::seaweedfs(test) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let location = server.location(&format!("mount-{}", std::process::id()));
    let s3 = s3_snapfs(&location, server.env());
    s3(&[
        "init",
        "--chunk-sizes",
        "16KiB/64KiB/256KiB",
        "--pack-size",
        "1MiB",
    ]);
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("www")).unwrap();
    let big = pseudo_random(700_000, 5);
    std::fs::write(src.join("www/big"), &big).unwrap();
    let src_arg = src.to_str().unwrap();
    s3(&[
        "backup",
        "--account",
        "alice",
        "--time",
        "2026-11-23T02:00:00Z",
        src_arg,
    ]);
    let mnt = tmp.path().join("mnt");
    let _mounted = mount_per_account(&s3, &mnt);
    assert_eq!(
        std::fs::read(mnt.join("alice/2026-11-23/www/big")).unwrap(),
        big
    );
    s3(&[
        "backup",
        "--account",
        "bob",
        "--time",
        "2026-11-24T02:00:00Z",
        src_arg,
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !mnt.join("bob/latest").exists() {
        assert!(Instant::now() < deadline, "bob's backup never showed");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(std::fs::read(mnt.join("bob/latest/www/big")).unwrap(), big);
    // What it read is on local disk now, private: a restart fetches no
    // index file and no chunk it read before (unit-tested in
    // backend::cached).
    let caches: Vec<PathBuf> = std::fs::read_dir(server.cache_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        caches
            .iter()
            .any(|c| c.join("index").is_dir() && c.join("blocks").is_dir()),
        "{caches:?}"
    );
    let mode = std::fs::metadata(&caches[0]).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

/// A mount of a repository on a SeaweedFS cluster (three volume servers,
/// two copies of every object) keeps reading a large file while one of
/// the volume servers is killed (SIGKILL) a third of the way through: the
/// read finishes and its bytes are the file's.
#[test]
fn a_mount_read_outlives_a_volume_server_killed_under_it() {
    let test = "a_mount_read_outlives_a_volume_server_killed_under_it";
    if !fuse_available(test) {
        return;
    }
    let Some(mut cluster) = servers::seaweedfs_cluster(test) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let location = cluster.location("mount");
    let s3 = s3_snapfs(&location, cluster.env());
    s3(&[
        "init",
        "--chunk-sizes",
        "64KiB/256KiB/1MiB",
        "--pack-size",
        "1MiB",
    ]);
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("www")).unwrap();
    // 96 MiB that neither deduplicates nor compresses: about 100 packs.
    let mut big = vec![0; 96 << 20];
    blake3::Hasher::new()
        .update(b"big")
        .finalize_xof()
        .fill(&mut big);
    std::fs::write(src.join("www/big"), &big).unwrap();
    s3(&["backup", "--account", "alice", src.to_str().unwrap()]);
    let mnt = tmp.path().join("mnt");
    let _mounted = mount_per_account(&s3, &mnt);

    use std::io::Read;
    let mut file = std::fs::File::open(mnt.join("alice/latest/www/big")).unwrap();
    let mut read = Vec::with_capacity(big.len());
    let mut piece = vec![0; 1 << 20];
    let started = Instant::now();
    let mut killed_after = None;
    loop {
        let n = file.read(&mut piece).unwrap();
        if n == 0 {
            break;
        }
        read.extend_from_slice(&piece[..n]);
        if killed_after.is_none() && read.len() >= big.len() / 3 {
            cluster.kill_volume_server(1);
            killed_after = Some(started.elapsed());
        }
    }
    eprintln!(
        "read of {} MiB through the mount: {:.1} s, volume server 1 killed after {:.1} s",
        big.len() >> 20,
        started.elapsed().as_secs_f64(),
        killed_after.expect("killed").as_secs_f64()
    );
    assert_eq!(read.len(), big.len());
    let differs = read.iter().zip(&big).position(|(a, b)| a != b);
    assert_eq!(differs, None, "first byte that differs");
}
