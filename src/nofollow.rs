//! Paths that run through folders a tenant owns, opened one folder at a
//! time without following a link.
//!
//! An operator types `/home/alice/www` as a restore target or
//! `/home/alice/admin/backup` as a mount point; the tenant owns every
//! folder below `/home/alice` and can put a link at any of them, pointing
//! anywhere, at any moment. So such a path is opened from `/` (or the
//! working folder) one name at a time, each with `O_NOFOLLOW |
//! O_DIRECTORY` relative to the folder opened before it, and a link
//! anywhere on it is refused with its name, where it leads and the real
//! path to type instead: a link there is either a mistake or a trap, and in
//! both cases the operator should see where it leads first. What comes
//! back is a descriptor, which later calls use instead of the path.
//!
//! Rejected: `openat2(RESOLVE_NO_SYMLINKS)` in one call. Linux 5.6 added
//! it, and the 4.18 kernel of RHEL 8 (and of many hosting servers) does not
//! have it; one name at a time gives the same guarantee on every kernel.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{self as rfs, Gid, Mode, OFlags, Uid, CWD};
use rustix::io::Errno;

use crate::error::{Error, Result};

/// A folder only passed through: search permission is enough, as in a
/// path lookup (a user may restore under a 0711 folder).
pub const SEARCH_FLAGS: OFlags = OFlags::PATH
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// A folder to read or write in.
pub const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// What to do about folders of the path that do not exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// An error naming the path.
    Refuse,
    /// Make them as `mkdir -p` would: 0777 less the umask, ours.
    Make,
    /// Make them 0755, each owned like the folder it is made in (a home's
    /// `admin/` belongs to the home's user).
    MakeLikeParent,
}

/// Open the folder `path` (the last one for reading with `DIR_FLAGS`, or
/// only to pass through with `SEARCH_FLAGS`), refusing a link anywhere on
/// it. `what` names the path in messages ("restore target").
pub fn open_folder(what: &str, path: &Path, missing: Missing, last: OFlags) -> Result<OwnedFd> {
    walk(what, path, Path::new(""), missing, last, &no_guard)
}

/// A check of each folder before a name is looked up in it (given the
/// folder and its path), for callers that must not look names up in some
/// file systems (`mount::mountpoint::refuse_fuse`).
pub type Guard<'g> = &'g dyn Fn(BorrowedFd, &Path) -> Result<()>;

fn no_guard(_: BorrowedFd, _: &Path) -> Result<()> {
    Ok(())
}

/// `open_folder`, with `guard` passing every folder on the way before a
/// name is looked up in it, and the folder opened last too (the caller
/// looks names up in it).
pub fn open_folder_guarded(
    what: &str,
    path: &Path,
    missing: Missing,
    guard: Guard,
) -> Result<OwnedFd> {
    let fd = walk(what, path, Path::new(""), missing, SEARCH_FLAGS, guard)?;
    guard(fd.as_fd(), path)?;
    Ok(fd)
}

/// Open the folder that holds `path`'s last name (to pass through), and
/// return that name: for callers that treat the last name on its own (a
/// mount point, a backup source, which may be a link to store as one).
/// Messages name the whole path.
pub fn open_parent<'a>(
    what: &str,
    path: &'a Path,
    missing: Missing,
) -> Result<(OwnedFd, &'a OsStr)> {
    open_parent_guarded(what, path, missing, &no_guard)
}

/// `open_parent`, with `guard` passing every folder on the way, the one
/// returned included, before a name is looked up in it.
pub fn open_parent_guarded<'a>(
    what: &str,
    path: &'a Path,
    missing: Missing,
    guard: Guard,
) -> Result<(OwnedFd, &'a OsStr)> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => {
            let fd = walk(what, parent, Path::new(name), missing, SEARCH_FLAGS, guard)?;
            guard(fd.as_fd(), parent)?;
            Ok((fd, name))
        }
        _ => Err(Error::Invalid(format!(
            "{what} {} has no last name (/ or ..)",
            path.display()
        ))),
    }
}

/// `open_folder` of `path`, in messages a folder on the way to
/// `path/beyond`.
fn walk(
    what: &str,
    path: &Path,
    beyond: &Path,
    missing: Missing,
    last: OFlags,
    guard: Guard,
) -> Result<OwnedFd> {
    let components: Vec<Component> = path.components().collect();
    let steps: Vec<(usize, &OsStr)> = components
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match c {
            Component::ParentDir => Some((i, OsStr::new(".."))),
            Component::Normal(name) => Some((i, *name)),
            _ => None,
        })
        .collect();
    let flags = |is_last: bool| if is_last { last } else { SEARCH_FLAGS };
    let (start, mut walked) = if path.is_absolute() {
        ("/", PathBuf::from("/"))
    } else {
        (".", PathBuf::new())
    };
    let mut fd = rfs::openat(CWD, start, flags(steps.is_empty()), Mode::empty())
        .map_err(|e| Error::io(start, e.into()))?;
    for (k, &(i, name)) in steps.iter().enumerate() {
        let flags = flags(k + 1 == steps.len());
        guard(fd.as_fd(), &walked)?;
        walked.push(name);
        let opened = match rfs::openat(&fd, name, flags, Mode::empty()) {
            Err(Errno::NOENT) if missing != Missing::Refuse => {
                make_folder(fd.as_fd(), name, missing)
                    .and_then(|()| rfs::openat(&fd, name, flags, Mode::empty()))
            }
            other => other,
        };
        fd = match opened {
            Ok(next) => next,
            Err(e @ (Errno::LOOP | Errno::NOTDIR)) => {
                let mut rest: PathBuf = components[i + 1..].iter().collect();
                rest.push(beyond);
                return Err(not_a_folder(what, &fd, name, &walked, &rest, e));
            }
            Err(e) => return Err(Error::io(&walked, e.into())),
        };
    }
    Ok(fd)
}

/// Make folder `name` in `parent`; one made meanwhile by someone else is
/// fine (the caller opens it without following links either way).
pub fn make_folder(parent: BorrowedFd, name: &OsStr, missing: Missing) -> rustix::io::Result<()> {
    if missing == Missing::MakeLikeParent {
        let owner = rfs::fstat(parent)?;
        return make_folder_owned(parent, name, owner.st_uid, owner.st_gid);
    }
    match rfs::mkdirat(parent, name, Mode::from_raw_mode(0o777)) {
        Ok(()) | Err(Errno::EXIST) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Make folder `name` in `parent`, 0755 (less the umask), and give it to
/// `uid:gid`. One that exists already is left as it is, owner included.
pub fn make_folder_owned(
    parent: BorrowedFd,
    name: &OsStr,
    uid: u32,
    gid: u32,
) -> rustix::io::Result<()> {
    match rfs::mkdirat(parent, name, Mode::from_raw_mode(0o755)) {
        Ok(()) => {}
        Err(Errno::EXIST) => return Ok(()),
        Err(e) => return Err(e),
    }
    // Opened without following: a link raced into its place fails here.
    let made = rfs::openat(parent, name, DIR_FLAGS, Mode::empty())?;
    // Only a folder of ours: the tenant who owns `parent` may have swapped
    // in, meanwhile, a folder of someone else's that they can move, and
    // chown would hand it to them.
    let stat = rfs::fstat(&made)?;
    if stat.st_uid != rustix::process::geteuid().as_raw() {
        return Ok(());
    }
    match rfs::fchown(&made, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))) {
        // Not root: the folder is ours, which is all we may make it.
        Err(Errno::PERM) => Ok(()),
        other => other,
    }
}

/// The refusal of a path component that is not a real folder.
fn not_a_folder(
    what: &str,
    parent: &OwnedFd,
    name: &OsStr,
    walked: &Path,
    rest: &Path,
    e: Errno,
) -> Error {
    match rfs::readlinkat(parent, name, Vec::new()) {
        Ok(link) => {
            // For the message only: where the link leads now.
            let whole = |p: &Path| match rest.as_os_str().is_empty() {
                true => p.to_path_buf(),
                false => p.join(rest),
            };
            let real = std::fs::canonicalize(walked)
                .map(|r| format!("; the real path is {}", whole(&r).display()))
                .unwrap_or_default();
            Error::Invalid(format!(
                "{what} {} goes through a symbolic link: {} -> {}; snapfs follows no links \
                 on it (a tenant could point one anywhere){real}",
                whole(walked).display(),
                walked.display(),
                Path::new(OsStr::from_bytes(link.as_bytes())).display(),
            ))
        }
        Err(_) => Error::io(walked, io::Error::from(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_link_anywhere_is_refused_with_the_real_path() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir_all(real.join("a/b")).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        for missing in [Missing::Refuse, Missing::Make, Missing::MakeLikeParent] {
            let err = open_folder("target", &dir.path().join("link/a/b"), missing, DIR_FLAGS)
                .unwrap_err()
                .to_string();
            assert!(err.contains("goes through a symbolic link"), "{err}");
            let want = real.canonicalize().unwrap().join("a/b");
            assert!(
                err.contains(&format!("the real path is {}", want.display())),
                "{err}"
            );
        }
        open_folder("target", &real.join("a/b"), Missing::Refuse, DIR_FLAGS).unwrap();
    }

    #[test]
    fn missing_folders_are_made_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x/y/z");
        let err = open_folder("target", &path, Missing::Refuse, DIR_FLAGS).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        open_folder("target", &path, Missing::MakeLikeParent, SEARCH_FLAGS).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(path.is_dir());
    }
}
