//! File metadata, both ways: from the file system into a tree `Node`
//! (backup: [`node_from_stat`] of the descriptor it read) and from a `Node`
//! back onto the file system (restore).

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::error::{Error, Result};
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

fn cpath(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Invalid(format!("{} contains a NUL byte", path.display())))
}

fn check(rc: libc::c_int, path: &Path) -> Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::io(path, std::io::Error::last_os_error()))
    }
}

/// Restore ownership (when allowed), mode, extended attributes and times of
/// `path` from `node`, in that order: chown clears setuid bits and writing
/// xattrs may touch times, so times come last.
pub fn apply(path: &Path, node: &Node, restore_owner: bool) -> Result<()> {
    let c = cpath(path)?;
    if restore_owner {
        // SAFETY: `c` is a valid NUL-terminated path.
        check(
            unsafe { libc::lchown(c.as_ptr(), node.uid, node.gid) },
            path,
        )?;
    }
    if node.kind != NodeKind::Symlink {
        // SAFETY: as above.
        check(
            unsafe { libc::chmod(c.as_ptr(), node.mode as libc::mode_t) },
            path,
        )?;
    }
    for x in &node.xattrs {
        let name = OsStr::from_bytes(&x.name);
        if let Err(e) = xattr::set(path, name, &x.value) {
            // Restoring to a file system without xattrs (or without the
            // trusted.* namespace as non-root) loses them, with a warning.
            tracing::warn!(
                "{}: cannot set xattr {}: {e}",
                path.display(),
                name.to_string_lossy()
            );
        }
    }
    let times = [timespec(node.atime), timespec(node.mtime)];
    // SAFETY: `times` has the two entries utimensat expects.
    check(
        unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        },
        path,
    )
}

fn timespec(t: Timestamp) -> libc::timespec {
    libc::timespec {
        tv_sec: t.secs as libc::time_t,
        tv_nsec: t.nanos as libc::c_long,
    }
}

/// Create a fifo, socket or device node.
pub fn make_special(path: &Path, node: &Node) -> Result<()> {
    let c = cpath(path)?;
    let mode = node.kind.mode_bits() | (node.mode & 0o7777);
    // SAFETY: `c` is a valid path; mknod does not keep the pointer.
    check(
        unsafe { libc::mknod(c.as_ptr(), mode as libc::mode_t, node.rdev as libc::dev_t) },
        path,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
        apply(&path, &node, false).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o640);
        assert_eq!(
            (meta.mtime(), meta.mtime_nsec()),
            (1_600_000_000, 123_456_789)
        );
    }
}
