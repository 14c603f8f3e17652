//! Shared helpers: a repository in a temp dir, the real binary, tree
//! generators and a comparison of restored trees with their sources.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_snapfs");

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// A repository with small chunks and packs, so kilobytes of test data
/// exercise multi-chunk files and multi-pack repositories.
pub struct TestRepo {
    pub dir: tempfile::TempDir,
    pub repo: PathBuf,
}

impl TestRepo {
    pub fn new() -> TestRepo {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        snapfs_ok(
            &repo,
            &[
                "init",
                "--chunk-sizes",
                "1KiB/4KiB/16KiB",
                "--pack-size",
                "64KiB",
            ],
        );
        TestRepo { dir, repo }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn run(&self, args: &[&str]) -> Output {
        snapfs(&self.repo, args)
    }

    /// Run and insist on exit code 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        snapfs_ok(&self.repo, args)
    }

    pub fn backup(&self, source: &Path, time: &str) -> String {
        let out = self.ok(&[
            "backup",
            "--json",
            "--account",
            "alice",
            "--time",
            time,
            source.to_str().unwrap(),
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    pub fn snapshots(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ok(&["snapshots", "--json"])).unwrap()
    }

    /// Restore a snapshot into a new folder and return it.
    pub fn restore(&self, snapshot: &str) -> PathBuf {
        let target = self.path(&format!("restore-{snapshot}-{}", rand_suffix()));
        self.ok(&["restore", snapshot, "--target", target.to_str().unwrap()]);
        target
    }

    pub fn pack_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for fan in fs::read_dir(self.repo.join("data")).unwrap() {
            for f in fs::read_dir(fan.unwrap().path()).unwrap() {
                let p = f.unwrap().path();
                if !p.file_name().unwrap().to_string_lossy().starts_with('.') {
                    out.push(p);
                }
            }
        }
        out.sort();
        out
    }

    pub fn repo_size(&self) -> u64 {
        dir_size(&self.repo)
    }
}

pub fn snapfs(repo: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("SNAPFS_REPO", repo)
        .env("TZ", "UTC")
        .output()
        .unwrap()
}

/// `snapfs` that must exit 0; returns stdout.
pub fn snapfs_ok(repo: &Path, args: &[&str]) -> String {
    let out = snapfs(repo, args);
    assert!(
        out.status.success(),
        "snapfs {args:?} failed ({:?}):\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

pub fn dir_size(path: &Path) -> u64 {
    let mut total = 0;
    for entry in walk(path) {
        let meta = fs::symlink_metadata(&entry).unwrap();
        if meta.is_file() {
            total += meta.len();
        }
    }
    total
}

/// Every path under `root` (not including it), sorted.
pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Deterministic incompressible bytes (BLAKE3 in XOF mode: fast even in
/// debug builds).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// A tree with every node type, odd names, and files of every shape.
pub fn make_rich_tree(root: &Path) {
    fs::create_dir_all(root.join("dir/nested/deeper")).unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    fs::write(root.join("small.txt"), b"hello snapfs\n").unwrap();
    fs::write(root.join("dir/multi-chunk.bin"), random_bytes(200_000, 1)).unwrap();
    fs::write(
        root.join("dir/nested/deeper/compressible.txt"),
        "line of text\n".repeat(5000),
    )
    .unwrap();
    // Odd names: not UTF-8, a newline, 255 bytes, spaces and a colon.
    fs::write(
        root.join(OsStr::from_bytes(b"latin1-\xe9t\xe9")),
        b"not utf-8",
    )
    .unwrap();
    fs::write(root.join("new\nline"), b"newline in name").unwrap();
    fs::write(root.join("x".repeat(255)), b"long name").unwrap();
    fs::write(root.join("with space: colon"), b"spaces").unwrap();
    // Sparse file: 1 MiB hole, some data, 1 MiB hole at the end.
    let sparse = fs::File::create(root.join("sparse")).unwrap();
    use std::os::unix::fs::FileExt;
    sparse.write_all_at(b"data in the middle", 1 << 20).unwrap();
    sparse.set_len(2 << 20).unwrap();
    // Links.
    std::os::unix::fs::symlink("small.txt", root.join("link-to-small")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();
    std::os::unix::fs::symlink(OsStr::from_bytes(b"odd\xfftarget"), root.join("odd-link")).unwrap();
    fs::write(root.join("dir/hard-a"), b"hard linked content").unwrap();
    fs::hard_link(root.join("dir/hard-a"), root.join("dir/nested/hard-b")).unwrap();
    // Special files.
    mkfifo(&root.join("fifo"));
    let _ = std::os::unix::net::UnixListener::bind(root.join("socket")).unwrap();
    if is_root() {
        mknod(&root.join("chardev"), libc::S_IFCHR, libc::makedev(1, 3));
        mknod(&root.join("blockdev"), libc::S_IFBLK, libc::makedev(7, 0));
    }
    // Modes and xattrs.
    fs::set_permissions(root.join("small.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::write(root.join("setuid"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(root.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    let _ = xattr::set(root.join("small.txt"), "user.snapfs", b"attribute value");
    let _ = xattr::set(root.join("dir"), "user.on-dir", b"");
    if is_root() {
        std::os::unix::fs::lchown(root.join("dir/nested"), Some(1234), Some(5678)).unwrap();
    }
    // A fixed, odd mtime with nanoseconds.
    set_mtime(&root.join("small.txt"), 1_600_000_000, 123_456_789);
}

pub fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

pub fn mknod(path: &Path, kind: libc::mode_t, dev: libc::dev_t) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mknod(c.as_ptr(), kind | 0o600, dev) }, 0);
}

pub fn set_mtime(path: &Path, secs: i64, nanos: i64) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let times = [
        libc::timespec {
            tv_sec: secs,
            tv_nsec: nanos,
        },
        libc::timespec {
            tv_sec: secs,
            tv_nsec: nanos,
        },
    ];
    assert_eq!(
        unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        },
        0
    );
}

/// What must survive a round trip, per relative path.
#[derive(Debug, PartialEq, Eq)]
pub struct Observed {
    kind: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    nlink: u64,
    rdev: u64,
    content: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// The relative path of the first path with the same inode, for hard links.
    hard_link_group: Option<PathBuf>,
}

/// Describe a tree; directories' mtimes are included, so restore must set
/// them after filling the directory.
pub fn observe(root: &Path) -> BTreeMap<PathBuf, Observed> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, PathBuf> = BTreeMap::new();
    for path in walk(root) {
        let rel = path.strip_prefix(root).unwrap().to_path_buf();
        let meta = fs::symlink_metadata(&path).unwrap();
        let ft = meta.mode() & libc::S_IFMT;
        let hard_link_group = (ft == libc::S_IFREG && meta.nlink() > 1)
            .then(|| inodes.entry(meta.ino()).or_insert(rel.clone()).clone());
        let xattrs = xattr::list(&path)
            .map(|names| {
                names
                    .map(|n| {
                        (
                            n.as_bytes().to_vec(),
                            xattr::get(&path, &n).unwrap().unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.insert(
            rel,
            Observed {
                kind: ft,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                size: if ft == libc::S_IFDIR { 0 } else { meta.size() },
                mtime: (meta.mtime(), meta.mtime_nsec()),
                nlink: if ft == libc::S_IFDIR { 0 } else { meta.nlink() },
                rdev: meta.rdev(),
                content: (ft == libc::S_IFREG).then(|| fs::read(&path).unwrap()),
                link: (ft == libc::S_IFLNK).then(|| {
                    fs::read_link(&path)
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec()
                }),
                xattrs,
                hard_link_group,
            },
        );
    }
    out
}

pub fn assert_same_tree(source: &Path, restored: &Path) {
    let a = observe(source);
    let b = observe(restored);
    let names_a: Vec<_> = a.keys().collect();
    let names_b: Vec<_> = b.keys().collect();
    assert_eq!(names_a, names_b, "different entries");
    for (path, want) in &a {
        let got = &b[path];
        // Symlink modes are always 0777 and their mtimes are restored via
        // utimensat(AT_SYMLINK_NOFOLLOW); both must match.
        assert_eq!(want, got, "{} differs", path.display());
    }
}

pub fn allocated_bytes(path: &Path) -> u64 {
    fs::metadata(path).unwrap().blocks() * 512
}

/// A small tmpfs mounted for a test (root only), unmounted on drop.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(at: &Path, size: &str) -> Tmpfs {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs at {}", at.display());
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
