//! File metadata, both ways: from the file system into a tree `Node`
//! (backup: [`node_from_stat`] of the descriptor it read) and from a `Node`
//! back onto the file system (restore).

use std::collections::HashMap;
use std::ffi::{CStr, OsStr};
use std::fs::Metadata;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Gid, Mode, Timestamps, Uid, XattrFlags, CWD};

use crate::snapshot::{Node, NodeKind, Timestamp, Xattr};

pub fn kind_of(meta: &Metadata) -> NodeKind {
    let t = meta.file_type();
    if t.is_dir() {
        NodeKind::Dir
    } else if t.is_symlink() {
        NodeKind::Symlink
    } else if t.is_fifo() {
        NodeKind::Fifo
    } else if t.is_socket() {
        NodeKind::Socket
    } else if t.is_char_device() {
        NodeKind::CharDevice
    } else if t.is_block_device() {
        NodeKind::BlockDevice
    } else {
        NodeKind::File
    }
}

/// A node with the metadata of `meta` and no content yet.
pub fn node_from_metadata(name: &[u8], meta: &Metadata, names: &mut UserNames) -> Node {
    let kind = kind_of(meta);
    Node {
        name: name.to_vec(),
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        user: names.user(meta.uid()),
        group: names.group(meta.gid()),
        size: if kind == NodeKind::Dir {
            0
        } else {
            meta.size()
        },
        mtime: Timestamp {
            secs: meta.mtime(),
            nanos: meta.mtime_nsec() as u32,
        },
        ctime: Timestamp {
            secs: meta.ctime(),
            nanos: meta.ctime_nsec() as u32,
        },
        atime: Timestamp {
            secs: meta.atime(),
            nanos: meta.atime_nsec() as u32,
        },
        inode: meta.ino(),
        device: meta.dev(),
        links: meta.nlink(),
        rdev: match kind {
            NodeKind::CharDevice | NodeKind::BlockDevice => meta.rdev(),
            _ => 0,
        },
        ..Node::default()
    }
}

/// The node kind of an `st_mode`.
pub fn kind_of_mode(mode: u32) -> NodeKind {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => NodeKind::Dir,
        libc::S_IFLNK => NodeKind::Symlink,
        libc::S_IFIFO => NodeKind::Fifo,
        libc::S_IFSOCK => NodeKind::Socket,
        libc::S_IFCHR => NodeKind::CharDevice,
        libc::S_IFBLK => NodeKind::BlockDevice,
        _ => NodeKind::File,
    }
}

/// A node with the metadata of a `stat` (the backup's `fstat` of the
/// descriptor it read) and no content yet.
// The field widths of `struct stat` differ between architectures: casts
// that are no-ops on one are needed on another.
#[allow(clippy::unnecessary_cast)]
pub fn node_from_stat(name: &[u8], st: &rustix::fs::Stat, names: &mut UserNames) -> Node {
    let kind = kind_of_mode(st.st_mode as u32);
    Node {
        name: name.to_vec(),
        kind,
        mode: st.st_mode as u32 & 0o7777,
        uid: st.st_uid as u32,
        gid: st.st_gid as u32,
        user: names.user(st.st_uid as u32),
        group: names.group(st.st_gid as u32),
        size: if kind == NodeKind::Dir {
            0
        } else {
            st.st_size as u64
        },
        mtime: Timestamp {
            secs: st.st_mtime as i64,
            nanos: st.st_mtime_nsec as u32,
        },
        ctime: Timestamp {
            secs: st.st_ctime as i64,
            nanos: st.st_ctime_nsec as u32,
        },
        atime: Timestamp {
            secs: st.st_atime as i64,
            nanos: st.st_atime_nsec as u32,
        },
        inode: st.st_ino as u64,
        device: st.st_dev as u64,
        links: st.st_nlink as u64,
        rdev: match kind {
            NodeKind::CharDevice | NodeKind::BlockDevice => st.st_rdev as u64,
            _ => 0,
        },
        ..Node::default()
    }
}

/// Extended attributes of `path` itself (not a symlink's target), sorted by
/// name. File systems without xattr support yield none.
pub fn read_xattrs(path: &Path) -> std::io::Result<Vec<Xattr>> {
    collect_xattrs(xattr::list(path), |name| xattr::get(path, name))
}

/// Extended attributes of an open file or directory, as [`read_xattrs`].
pub fn read_xattrs_of(file: &std::fs::File) -> std::io::Result<Vec<Xattr>> {
    use xattr::FileExt;
    collect_xattrs(file.list_xattr(), |name| file.get_xattr(name))
}

fn collect_xattrs(
    names: std::io::Result<xattr::XAttrs>,
    get: impl Fn(&OsStr) -> std::io::Result<Option<Vec<u8>>>,
) -> std::io::Result<Vec<Xattr>> {
    let names = match names {
        Ok(names) => names,
        Err(e) if is_unsupported(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names {
        // An attribute removed between list and get is simply not there.
        if let Some(value) = get(&name)? {
            out.push(Xattr {
                name: name.as_bytes().to_vec(),
                value,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn is_unsupported(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENOSYS))
}

/// uid → user name and gid → group name lookups, cached: a backup asks for
/// the same few owners hundreds of thousands of times.
#[derive(Default)]
pub struct UserNames {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl UserNames {
    pub fn user(&mut self, uid: u32) -> String {
        self.users
            .entry(uid)
            .or_insert_with(|| lookup_user(uid).unwrap_or_default())
            .clone()
    }

    pub fn group(&mut self, gid: u32) -> String {
        self.groups
            .entry(gid)
            .or_insert_with(|| lookup_group(gid).unwrap_or_default())
            .clone()
    }
}

fn lookup_user(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 16384];
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the call; the name is copied out
    // before `buf` is dropped.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return None;
    }
    Some(
        unsafe { CStr::from_ptr(pwd.pw_name) }
            .to_string_lossy()
            .into_owned(),
    )
}

fn lookup_group(gid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 16384];
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut result = std::ptr::null_mut();
    // SAFETY: as in `lookup_user`.
    let rc = unsafe { libc::getgrgid_r(gid, &mut grp, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return None;
    }
    Some(
        unsafe { CStr::from_ptr(grp.gr_name) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// The name of the user running this process, for the default account.
pub fn current_user() -> String {
    lookup_user(unsafe { libc::geteuid() })
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".into())
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid and its length is passed.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// What restore sets a node's metadata through: a descriptor, never a
/// path a tenant could swap between two calls.
#[derive(Clone, Copy)]
pub enum Handle<'a> {
    /// A file or folder restore opened itself: `fchown`, `fchmod`,
    /// `fsetxattr`, `futimens` act on exactly that inode.
    Open(BorrowedFd<'a>),
    /// An `O_PATH | O_NOFOLLOW` descriptor of a symlink or special file
    /// (`restore::target::open_made`). The f-calls refuse such a
    /// descriptor, and opening a device or a fifo to get a better one could
    /// block or act on hardware; so the calls go through
    /// `/proc/self/fd/N`, which names the node itself (a symlink there is
    /// not followed further), and `fchownat(fd, "", AT_EMPTY_PATH)`.
    Path(BorrowedFd<'a>),
}

/// Restore ownership (when allowed), mode, extended attributes and times
/// of the node behind `handle`, in that order: chown clears setuid bits and
/// writing xattrs may touch times, so times come last. `shown` names the
/// entry in warnings.
pub fn apply(handle: Handle, node: &Node, restore_owner: bool, shown: &Path) -> io::Result<()> {
    if restore_owner {
        // -1 is chown's "leave as is": a snapshot cannot ask for it.
        let uid = (node.uid != u32::MAX).then(|| Uid::from_raw(node.uid));
        let gid = (node.gid != u32::MAX).then(|| Gid::from_raw(node.gid));
        match handle {
            Handle::Open(fd) => rfs::fchown(fd, uid, gid)?,
            Handle::Path(fd) => rfs::chownat(fd, "", uid, gid, AtFlags::EMPTY_PATH)?,
        }
    }
    // A symlink has no mode of its own (always 0777).
    if node.kind != NodeKind::Symlink {
        let mode = Mode::from_raw_mode(node.mode & 0o7777);
        match handle {
            Handle::Open(fd) => rfs::fchmod(fd, mode)?,
            Handle::Path(fd) => rfs::chmodat(CWD, proc_path(fd), mode, AtFlags::empty())?,
        }
    }
    for x in &node.xattrs {
        let set = match handle {
            Handle::Open(fd) => rfs::fsetxattr(fd, &x.name[..], &x.value, XattrFlags::empty()),
            Handle::Path(fd) => {
                rfs::setxattr(proc_path(fd), &x.name[..], &x.value, XattrFlags::empty())
            }
        };
        if let Err(e) = set {
            // Restoring to a file system without xattrs (or without the
            // trusted.* namespace as non-root, or user.* on a symlink or
            // a device, which Linux refuses) loses them, with a warning.
            tracing::warn!(
                "{}: cannot set xattr {}: {}",
                shown.display(),
                String::from_utf8_lossy(&x.name),
                io::Error::from(e)
            );
        }
    }
    let times = Timestamps {
        last_access: timespec(node.atime),
        last_modification: timespec(node.mtime),
    };
    match handle {
        Handle::Open(fd) => rfs::futimens(fd, &times)?,
        Handle::Path(fd) => rfs::utimensat(CWD, proc_path(fd), &times, AtFlags::empty())?,
    }
    Ok(())
}

fn timespec(t: Timestamp) -> rustix::fs::Timespec {
    rustix::fs::Timespec {
        tv_sec: t.secs,
        tv_nsec: t.nanos.into(),
    }
}

/// The /proc path of a descriptor: path calls on it reach the node the
/// descriptor holds without resolving any name again.
pub fn proc_path(fd: BorrowedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Create the fifo, socket or device node `node` as `name` in `dir`. The
/// mode is private until `apply` sets the node's own.
pub fn make_special(dir: BorrowedFd, name: &[u8], node: &Node) -> io::Result<()> {
    let kind = FileType::from_raw_mode(node.kind.mode_bits());
    rfs::mknodat(dir, name, kind, Mode::from_raw_mode(0o600), node.rdev)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn captures_file_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"12345").unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let node = node_from_metadata(b"f", &meta, &mut UserNames::default());
        assert_eq!(node.kind, NodeKind::File);
        assert_eq!(node.size, 5);
        assert_eq!(node.links, 1);
        assert_eq!(node.uid, meta.uid());
    }

    #[test]
    fn apply_through_an_o_path_handle_sets_the_node_itself() {
        use rustix::fs::OFlags;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("target"), b"x").unwrap();
        std::os::unix::fs::symlink("target", dir.path().join("link")).unwrap();
        let before = std::fs::metadata(dir.path().join("target")).unwrap();
        let fd = rfs::openat(
            CWD,
            dir.path().join("link"),
            OFlags::PATH | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .unwrap();
        let node = Node {
            kind: NodeKind::Symlink,
            mtime: Timestamp {
                secs: 1_500_000_000,
                nanos: 7,
            },
            ..Node::default()
        };
        apply(Handle::Path(fd.as_fd()), &node, false, dir.path()).unwrap();
        let link = std::fs::symlink_metadata(dir.path().join("link")).unwrap();
        assert_eq!((link.mtime(), link.mtime_nsec()), (1_500_000_000, 7));
        let after = std::fs::metadata(dir.path().join("target")).unwrap();
        assert_eq!(
            after.mtime(),
            before.mtime(),
            "the link's target is untouched"
        );
    }

    #[test]
    fn apply_restores_mode_and_nanosecond_times() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        let node = Node {
            mode: 0o640,
            mtime: Timestamp {
                secs: 1_600_000_000,
                nanos: 123_456_789,
            },
            atime: Timestamp {
                secs: 1_600_000_001,
                nanos: 5,
            },
            ..Node::default()
        };
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        apply(Handle::Open(file.as_fd()), &node, false, &path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o640);
        assert_eq!(
            (meta.mtime(), meta.mtime_nsec()),
            (1_600_000_000, 123_456_789)
        );
    }
}
