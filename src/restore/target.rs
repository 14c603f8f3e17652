//! The restore target as descriptors: how restore reaches, replaces and
//! creates entries without ever following a link a tenant planted.
//!
//! Restore runs as root inside folders their owners can write while it
//! runs. A path is a promise only at the moment it is looked up: between
//! `is_dir()` and `open()` a tenant can swap a folder for a symlink to
//! `/etc`. So every call here works on one name inside a directory that
//! restore already holds open (`openat(dirfd, name, O_NOFOLLOW ...)`), and
//! replaces what is in the way by removing that entry itself (`unlinkat`),
//! never by writing through it. What a racer can still do is make a call
//! fail (the entry is then reported) or rename a folder restore holds to
//! another place it could already write to (restore keeps writing into the
//! folder it holds, which is then the tenant's own business).
//!
//! Rejected: `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, for the
//! kernels without it (see [`crate::nofollow`]). Names from a tree can
//! hold neither `/` nor `..` (`Tree::decode` refuses them), so opening one
//! component at a time with `O_NOFOLLOW` gives the same guarantee.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, CWD};
use rustix::io::Errno;

use crate::error::Result;
use crate::metadata::proc_path;

// Every directory restore holds is the directory itself, never what a
// symlink of that name points to (`DIR_FLAGS`); folders it only passes
// through (a hard link's first path) need search permission only
// (`SEARCH_FLAGS`).
use crate::nofollow::{self, Missing, DIR_FLAGS, SEARCH_FLAGS};

/// New folders and files are private to root until their metadata is set
/// (last): a tenant cannot add entries to a folder, or open a file, while
/// restore is still filling it.
const PRIVATE_DIR: u32 = 0o700;
const PRIVATE_FILE: u32 = 0o600;

/// The (device, inode) of what `fd` refers to.
pub type FileId = (u64, u64);

/// Open the target folder, creating the missing components (as `mkdir -p`
/// would), and refuse a path that goes through a symlink
/// ([`crate::nofollow`]).
pub fn open_target(path: &Path) -> Result<OwnedFd> {
    nofollow::open_folder("restore target", path, Missing::Make, DIR_FLAGS)
}

/// Open the folder `name` in `dir`, to restore a folder there: an existing
/// real folder is reused, anything else (a symlink, a file) is removed and a
/// new folder made.
pub fn open_or_make_dir(dir: BorrowedFd, name: &[u8]) -> io::Result<OwnedFd> {
    match rfs::openat(dir, name, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => return Ok(fd),
        Err(Errno::NOENT) => {}
        // The entry itself goes, not what it points to.
        Err(Errno::LOOP | Errno::NOTDIR) => unlink_entry(dir, name)?,
        Err(e) => return Err(e.into()),
    }
    rfs::mkdirat(dir, name, Mode::from_raw_mode(PRIVATE_DIR))?;
    // A racer may swap the new folder for a symlink right now: O_NOFOLLOW
    // makes that a failed entry.
    Ok(rfs::openat(dir, name, DIR_FLAGS, Mode::empty())?)
}

/// Remove whatever is at `name` in `dir`, so that a file, symlink or
/// special file can be made there: a symlink is unlinked (its target is
/// untouched), an empty folder removed, a non-empty folder is an error
/// (restore does not delete a tenant's files it has no copy of).
pub fn make_room(dir: BorrowedFd, name: &[u8]) -> io::Result<()> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
            match rfs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
                Ok(()) | Err(Errno::NOENT) => Ok(()),
                Err(Errno::NOTEMPTY | Errno::EXIST) => Err(io::Error::other(
                    "a folder that is not empty is in the way (left as it is)",
                )),
                Err(e) => Err(e.into()),
            }
        }
        Ok(_) => unlink_entry(dir, name),
        Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn unlink_entry(dir: BorrowedFd, name: &[u8]) -> io::Result<()> {
    match rfs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Create a new, empty file: `O_EXCL` fails instead of opening anything a
/// racer put there after `make_room`, and `O_NOFOLLOW` refuses a symlink.
pub fn create_file(dir: BorrowedFd, name: &[u8]) -> io::Result<File> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rfs::openat(dir, name, flags, Mode::from_raw_mode(PRIVATE_FILE)) {
        Ok(fd) => Ok(File::from(fd)),
        // The name alone cannot be missing: the folder restore holds is.
        Err(Errno::NOENT) => Err(io::Error::new(
            io::ErrorKind::NotFound,
            "its folder was removed while restoring",
        )),
        Err(e) => Err(e.into()),
    }
}

/// An `O_PATH` descriptor of the symlink or special file restore just made
/// at `name`, checked to be of `kind` (and, for devices, `rdev`) with a
/// single link. That check is what makes setting metadata through it safe:
/// a racer may replace the new node, but whatever passes is a node of this
/// kind that no other folder links to, so changing it changes nothing
/// outside the target. (A hard link to a root-owned file would pass a kind
/// check alone.)
pub fn open_made(dir: BorrowedFd, name: &[u8], kind: FileType, rdev: u64) -> io::Result<OwnedFd> {
    let fd = rfs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rfs::fstat(&fd)?;
    let same_device =
        !matches!(kind, FileType::CharacterDevice | FileType::BlockDevice) || st.st_rdev == rdev;
    if FileType::from_raw_mode(st.st_mode) != kind || st.st_nlink != 1 || !same_device {
        return Err(io::Error::other(
            "replaced by something else while being restored",
        ));
    }
    Ok(fd)
}

pub fn file_id(fd: impl AsFd) -> io::Result<FileId> {
    let st = rfs::fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

/// Make `name` in `dir` another link to the file restore created at `rel`
/// (relative to `root`, the target) and recorded as `id`.
///
/// `rel` is walked from `root` one component at a time without following
/// links, and the file found must be the one restore made: a tenant who
/// swapped a folder on the way, or the file, gets a failed entry, not a
/// link to a file of their choice. The link is made to the descriptor
/// (through /proc/self/fd, which names the opened file itself), not to the
/// path, so nothing can change between the check and the link.
pub fn link_beneath(
    root: BorrowedFd,
    rel: &Path,
    id: FileId,
    dir: BorrowedFd,
    name: &[u8],
) -> io::Result<()> {
    let mut names: Vec<&OsStr> = Vec::new();
    for component in rel.components() {
        match component {
            Component::Normal(n) => names.push(n),
            // Restore builds `rel` from tree names; anything else is a bug.
            _ => return Err(io::Error::other("not a plain relative path")),
        }
    }
    let Some((last, folders)) = names.split_last() else {
        return Err(io::Error::other("empty path"));
    };
    let mut at: Option<OwnedFd> = None;
    for folder in folders {
        let from = at.as_ref().map_or(root, |fd| fd.as_fd());
        at = Some(rfs::openat(from, *folder, SEARCH_FLAGS, Mode::empty())?);
    }
    let from = at.as_ref().map_or(root, |fd| fd.as_fd());
    let file_flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let file = rfs::openat(from, *last, file_flags, Mode::empty())?;
    let st = rfs::fstat(&file)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile || (st.st_dev, st.st_ino) != id
    {
        return Err(io::Error::other(format!(
            "the first link, {}, was replaced while restoring",
            rel.display()
        )));
    }
    rfs::linkat(
        CWD,
        proc_path(file.as_fd()),
        dir,
        name,
        AtFlags::SYMLINK_FOLLOW,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::fs;
    use std::os::unix::fs::{symlink, MetadataExt};

    #[test]
    fn target_is_created_component_by_component() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("a/b/c");
        let fd = open_target(&target).unwrap();
        assert!(target.is_dir());
        assert_eq!(
            file_id(&fd).unwrap().1,
            fs::metadata(&target).unwrap().ino()
        );
        // An existing one is opened as it is, also through `..`.
        let again = open_target(&tmp.path().join("a/b/../b/c")).unwrap();
        assert_eq!(file_id(&again).unwrap(), file_id(&fd).unwrap());
    }

    #[test]
    fn target_through_a_symlink_is_refused_with_the_real_path() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        fs::create_dir(&real).unwrap();
        symlink(&real, tmp.path().join("link")).unwrap();
        let err = open_target(&tmp.path().join("link/restore")).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Invalid(_)), "{msg}");
        assert!(
            msg.contains(&format!("{} ->", tmp.path().join("link").display())),
            "{msg}"
        );
        let canonical = fs::canonicalize(&real).unwrap().join("restore");
        assert!(msg.contains(&canonical.display().to_string()), "{msg}");
        assert!(
            !real.join("restore").exists(),
            "nothing made behind the link"
        );
        // The last component counts too.
        assert!(open_target(&tmp.path().join("link")).is_err());
    }

    #[test]
    fn a_symlink_where_a_folder_goes_is_removed_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let dir = open_target(&tmp.path().join("t")).unwrap();
        symlink(&outside, tmp.path().join("t/sub")).unwrap();
        let sub = open_or_make_dir(dir.as_fd(), b"sub").unwrap();
        let meta = fs::symlink_metadata(tmp.path().join("t/sub")).unwrap();
        assert!(meta.is_dir());
        assert_eq!(file_id(&sub).unwrap().1, meta.ino());
        assert_ne!(meta.ino(), fs::metadata(&outside).unwrap().ino());
        // A real folder is reused, with what it holds.
        fs::write(tmp.path().join("t/sub/keep"), b"k").unwrap();
        let again = open_or_make_dir(dir.as_fd(), b"sub").unwrap();
        assert_eq!(file_id(&again).unwrap(), file_id(&sub).unwrap());
    }

    #[test]
    fn make_room_unlinks_links_and_keeps_full_folders() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::write(&outside, b"precious").unwrap();
        let dir = open_target(&tmp.path().join("t")).unwrap();
        symlink(&outside, tmp.path().join("t/link")).unwrap();
        make_room(dir.as_fd(), b"link").unwrap();
        assert!(fs::symlink_metadata(tmp.path().join("t/link")).is_err());
        assert_eq!(fs::read(&outside).unwrap(), b"precious");

        fs::create_dir_all(tmp.path().join("t/full")).unwrap();
        fs::write(tmp.path().join("t/full/x"), b"x").unwrap();
        let err = make_room(dir.as_fd(), b"full").unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
        assert!(tmp.path().join("t/full/x").exists());
        fs::create_dir(tmp.path().join("t/empty")).unwrap();
        make_room(dir.as_fd(), b"empty").unwrap();
        make_room(dir.as_fd(), b"missing").unwrap();
    }

    #[test]
    fn create_file_never_opens_an_existing_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::write(&outside, b"precious").unwrap();
        let dir = open_target(&tmp.path().join("t")).unwrap();
        symlink(&outside, tmp.path().join("t/f")).unwrap();
        assert!(create_file(dir.as_fd(), b"f").is_err());
        assert_eq!(fs::read(&outside).unwrap(), b"precious");
    }

    #[test]
    fn link_beneath_checks_the_first_link_is_still_ours() {
        let tmp = tempfile::tempdir().unwrap();
        let root = open_target(&tmp.path().join("t")).unwrap();
        let sub = open_or_make_dir(root.as_fd(), b"sub").unwrap();
        let file = create_file(sub.as_fd(), b"first").unwrap();
        let id = file_id(&file).unwrap();
        let rel = Path::new("sub/first");
        link_beneath(root.as_fd(), rel, id, root.as_fd(), b"second").unwrap();
        assert_eq!(
            fs::metadata(tmp.path().join("t/second")).unwrap().ino(),
            id.1
        );

        // Swapped for another file: refused.
        fs::remove_file(tmp.path().join("t/sub/first")).unwrap();
        fs::write(tmp.path().join("t/sub/first"), b"other").unwrap();
        assert!(link_beneath(root.as_fd(), rel, id, root.as_fd(), b"third").is_err());
        // A folder on the way swapped for a symlink to the real one: refused.
        fs::rename(tmp.path().join("t/sub"), tmp.path().join("t/real")).unwrap();
        symlink("real", tmp.path().join("t/sub")).unwrap();
        fs::remove_file(tmp.path().join("t/real/first")).unwrap();
        fs::hard_link(tmp.path().join("t/second"), tmp.path().join("t/real/first")).unwrap();
        assert!(link_beneath(root.as_fd(), rel, id, root.as_fd(), b"third").is_err());
        assert!(!tmp.path().join("t/third").exists());
    }

    #[test]
    fn open_made_refuses_a_node_linked_elsewhere() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = open_target(&tmp.path().join("t")).unwrap();
        symlink("x", tmp.path().join("t/l")).unwrap();
        open_made(dir.as_fd(), b"l", FileType::Symlink, 0).unwrap();
        assert!(open_made(dir.as_fd(), b"l", FileType::Fifo, 0).is_err());
        fs::hard_link(tmp.path().join("t/l"), tmp.path().join("t/l2")).unwrap();
        assert!(open_made(dir.as_fd(), b"l", FileType::Symlink, 0).is_err());
    }
}
