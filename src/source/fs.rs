//! A file system tree, read through descriptors.
//!
//! The rules every function here keeps (why: see [`crate::source`]):
//!
//! 1. A source path comes from the operator and is resolved once, without
//!    following any link: its folder one name at a time
//!    ([`crate::nofollow`]; a link on the way is refused with the real path
//!    to give instead, as for a restore target or a mount point: below
//!    `/home/alice` every folder is the tenant's), its last name with
//!    `O_NOFOLLOW` (a symlink source is stored as a symlink).
//! 2. Below a source, every entry is opened relative to its parent's
//!    descriptor by one name (`openat`) with `O_NOFOLLOW`: a symlink is
//!    stored as a symlink and never followed. No path is ever opened; paths
//!    exist only as labels in messages, so depth is limited by descriptors
//!    (one per level, see [`raise_fd_limit`]), not by `PATH_MAX`.
//! 3. `fstatat(AT_SYMLINK_NOFOLLOW)` decides how to open an entry; the
//!    metadata stored is the `fstat` of the descriptor that was opened. An
//!    entry whose type or (device, inode) differs between the two was
//!    replaced in between: [`OpenError::Changed`], and the caller skips it.
//!    Retrying was rejected: a tenant who swaps in a loop could keep a
//!    backup retrying forever.
//! 4. Only regular files are read. They are opened with `O_NONBLOCK`, so a
//!    fifo swapped in after the `fstatat` cannot block the open, and with
//!    `O_NOATIME` where allowed (owner or root), so a backup leaves access
//!    times alone. Symlinks are read through an `O_PATH` descriptor, which
//!    cannot follow them; fifos, sockets and devices are never opened:
//!    their metadata is the `fstatat`'s.

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::OnceLock;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, SeekFrom, Stat};
use rustix::io::Errno;

use crate::error::Error;
use crate::metadata;
use crate::nofollow::{self, Missing};
use crate::snapshot::Xattr;

/// The warning for an entry that [`OpenError::Changed`] skipped.
pub const CHANGED: &str = "changed while being backed up; skipped";

/// `O_NONBLOCK` on directories too: harmless, and one flag set to reason about.
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::CLOEXEC);
const FILE_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::NOCTTY)
    .union(OFlags::CLOEXEC);

#[derive(Debug)]
pub enum OpenError {
    /// The entry was replaced between the `fstatat` that chose how to open
    /// it and the `fstat` of what was opened (or a symlink now stands where
    /// a file or folder was). Never followed; skip it.
    Changed,
    /// It could not be looked at (`stat` is `None`: vanished, no
    /// permission) or, once looked at, not opened or read. (Boxed: a
    /// `Stat` is 144 bytes, and every `Ok` would carry room for it.)
    Io {
        stat: Option<Box<Stat>>,
        error: io::Error,
    },
    /// A source path that goes through a link: refused, with what to give
    /// instead.
    Refused(String),
}

impl OpenError {
    fn io(stat: Option<&Stat>, error: impl Into<io::Error>) -> OpenError {
        OpenError::Io {
            stat: stat.map(|s| Box::new(*s)),
            error: error.into(),
        }
    }
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Changed => f.write_str(CHANGED),
            OpenError::Io { error, .. } => error.fmt(f),
            OpenError::Refused(why) => f.write_str(why),
        }
    }
}

/// One entry, opened (or, for the kinds that are never opened, looked at).
pub enum Opened {
    Dir(SourceDir),
    File(SourceFile),
    Symlink {
        stat: Stat,
        target: Vec<u8>,
        xattrs: io::Result<Vec<Xattr>>,
    },
    /// A fifo, socket or device node.
    Special {
        stat: Stat,
        xattrs: io::Result<Vec<Xattr>>,
    },
}

/// A directory held open: its entries are reached through it alone.
pub struct SourceDir {
    file: File,
    stat: Stat,
}

/// A regular file held open for reading.
pub struct SourceFile {
    file: File,
    stat: Stat,
}

/// A directory's entry names, sorted by bytes, and the error that cut the
/// listing short, if one did (the names read before it are kept).
pub struct Listing {
    pub names: Vec<Vec<u8>>,
    pub error: Option<io::Error>,
}

/// Open a source path named by the operator, following no link on it (a
/// symlink source is stored as a symlink).
pub fn open_path(path: &Path) -> Result<Opened, OpenError> {
    let refused = |e: Error| match e {
        Error::Io { source, .. } => OpenError::io(None, source),
        // A link on the way: the message says which and what to give.
        other => OpenError::Refused(other.to_string()),
    };
    if path.file_name().is_none() {
        // `/`, or a path ending in `..`: a folder by definition.
        let fd = nofollow::open_folder("backup source", path, Missing::Refuse, DIR_FLAGS)
            .map_err(refused)?;
        return SourceDir::from_fd(fd).map(Opened::Dir);
    }
    // The folder holding it only to pass through: search permission, not
    // read, is what it needs (homes are often 0711).
    let (parent, name) =
        nofollow::open_parent("backup source", path, Missing::Refuse).map_err(refused)?;
    SourceDir::from_fd(parent)?.open_entry(name.as_bytes())
}

impl SourceDir {
    fn from_fd(fd: std::os::fd::OwnedFd) -> Result<SourceDir, OpenError> {
        let file = File::from(fd);
        let stat = rustix::fs::fstat(&file).map_err(|e| OpenError::io(None, e))?;
        Ok(SourceDir { file, stat })
    }
}

/// Let a walk hold one descriptor per level of a deep tree: the soft limit
/// (often 1024) up to the hard one. snapfs uses no `select`, the one API
/// that breaks above 1024.
pub fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(maximum)) = (limit.current, limit.maximum) {
        if current < maximum {
            limit.current = Some(maximum);
            if let Err(e) = setrlimit(Resource::Nofile, limit) {
                tracing::debug!("cannot raise the open file limit to {maximum}: {e}");
            }
        }
    }
}

fn same_object(seen: &Stat, opened: &Stat) -> bool {
    FileType::from_raw_mode(seen.st_mode) == FileType::from_raw_mode(opened.st_mode)
        && seen.st_dev == opened.st_dev
        && seen.st_ino == opened.st_ino
}

impl SourceDir {
    /// The `fstat` of this directory's descriptor.
    pub fn stat(&self) -> &Stat {
        &self.stat
    }

    pub fn xattrs(&self) -> io::Result<Vec<Xattr>> {
        metadata::read_xattrs_of(&self.file)
    }

    pub fn entries(&self) -> Listing {
        let mut listing = Listing {
            names: Vec::new(),
            error: None,
        };
        // `Dir::read_from` lists a fresh descriptor of ".", opened relative
        // to ours: `.` cannot be swapped, and our descriptor's offset stays
        // untouched.
        match rustix::fs::Dir::read_from(&self.file) {
            Ok(dir) => {
                for entry in dir {
                    match entry {
                        Ok(entry) => {
                            let name = entry.file_name().to_bytes();
                            if name != b"." && name != b".." {
                                listing.names.push(name.to_vec());
                            }
                        }
                        Err(e) => {
                            listing.error = Some(e.into());
                            break;
                        }
                    }
                }
            }
            Err(e) => listing.error = Some(e.into()),
        }
        listing.names.sort_unstable();
        listing
    }

    /// Look at `name` without following it, then open it as what it is.
    pub fn open_entry(&self, name: &[u8]) -> Result<Opened, OpenError> {
        let seen = self.stat_at(name).map_err(|e| OpenError::io(None, e))?;
        match FileType::from_raw_mode(seen.st_mode) {
            FileType::Directory => self.open_dir(name, &seen).map(Opened::Dir),
            FileType::RegularFile => self.open_file(name, &seen).map(Opened::File),
            FileType::Symlink => {
                let (target, stat) = self.read_link(name, &seen)?;
                Ok(Opened::Symlink {
                    target,
                    xattrs: self.entry_xattrs(name),
                    stat,
                })
            }
            _ => Ok(Opened::Special {
                xattrs: self.entry_xattrs(name),
                stat: seen,
            }),
        }
    }

    /// `fstatat` of `name` in this folder, not following a link: what is
    /// at that name now, looked at without opening it.
    pub fn stat_entry(&self, name: &[u8]) -> io::Result<Stat> {
        self.stat_at(name)
    }

    fn stat_at(&self, name: &[u8]) -> io::Result<Stat> {
        Ok(rustix::fs::statat(
            &self.file,
            name,
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }

    /// Open `name` with `flags`, without `O_NOATIME` where it is refused
    /// (EPERM: neither the owner nor root).
    fn open_at(&self, name: &[u8], flags: OFlags) -> Result<File, Errno> {
        let fd = match rustix::fs::openat(&self.file, name, flags | OFlags::NOATIME, Mode::empty())
        {
            Err(Errno::PERM) => rustix::fs::openat(&self.file, name, flags, Mode::empty()),
            other => other,
        }?;
        Ok(File::from(fd))
    }

    fn open_dir(&self, name: &[u8], seen: &Stat) -> Result<SourceDir, OpenError> {
        let file = match self.open_at(name, DIR_FLAGS) {
            Ok(f) => f,
            // ELOOP: a symlink now; ENOTDIR: not a folder any more.
            Err(Errno::LOOP | Errno::NOTDIR) => return Err(OpenError::Changed),
            Err(e) => return Err(OpenError::io(Some(seen), e)),
        };
        let stat = rustix::fs::fstat(&file).map_err(|e| OpenError::io(Some(seen), e))?;
        if !same_object(seen, &stat) {
            return Err(OpenError::Changed);
        }
        Ok(SourceDir { file, stat })
    }

    fn open_file(&self, name: &[u8], seen: &Stat) -> Result<SourceFile, OpenError> {
        let file = match self.open_at(name, FILE_FLAGS) {
            Ok(f) => f,
            // ELOOP: a symlink now; ENXIO: a socket or a device without a
            // driver now. A fifo opens (O_NONBLOCK) and fails the check below.
            Err(Errno::LOOP | Errno::NXIO) => return Err(OpenError::Changed),
            Err(e) => return Err(OpenError::io(Some(seen), e)),
        };
        let stat = rustix::fs::fstat(&file).map_err(|e| OpenError::io(Some(seen), e))?;
        if !same_object(seen, &stat) {
            return Err(OpenError::Changed);
        }
        Ok(SourceFile { file, stat })
    }

    /// A symlink's target and the `fstat` of that same symlink. The link is
    /// pinned with an `O_PATH | O_NOFOLLOW` descriptor (which never follows
    /// and never opens what it points to) and read through it, so target
    /// and metadata cannot come from two links swapped in turn. Comparing
    /// the target's length with the `fstatat`'s size was rejected: some
    /// file systems (encrypted ones) do not report that length.
    fn read_link(&self, name: &[u8], seen: &Stat) -> Result<(Vec<u8>, Stat), OpenError> {
        let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.file, name, flags, Mode::empty())
            .map_err(|e| OpenError::io(Some(seen), e))?;
        let stat = rustix::fs::fstat(&fd).map_err(|e| OpenError::io(Some(seen), e))?;
        if !same_object(seen, &stat) {
            return Err(OpenError::Changed);
        }
        match rustix::fs::readlinkat(&fd, "", Vec::new()) {
            Ok(target) => Ok((target.into_bytes(), stat)),
            Err(e) => Err(OpenError::io(Some(seen), e)),
        }
    }

    /// Extended attributes of an entry that is never opened (symlink, fifo,
    /// socket, device): `O_PATH` descriptors have no `fgetxattr`, and
    /// opening a device can have effects. `llistxattr`/`lgetxattr` on
    /// `/proc/self/fd/<this dir>/<name>` reach the entry from this
    /// directory's descriptor and do not follow it. If the name was swapped
    /// meanwhile, these are the attributes of whatever the tenant's folder
    /// holds under that name now, never of anything outside it.
    pub fn entry_xattrs(&self, name: &[u8]) -> io::Result<Vec<Xattr>> {
        if !proc_fd_available() {
            // Without /proc (a bare chroot) these attributes are not
            // reachable without a path; symlinks and special files rarely
            // carry any but an SELinux label, which a relabel restores.
            return Ok(Vec::new());
        }
        let mut path = format!("/proc/self/fd/{}/", self.file.as_raw_fd()).into_bytes();
        path.extend_from_slice(name);
        metadata::read_xattrs(Path::new(OsStr::from_bytes(&path)))
    }

    /// <https://bford.info/cachedir/>: a folder that says it holds only a
    /// cache. The tag is read like any entry: no symlink, a regular file.
    pub fn has_cachedir_tag(&self) -> bool {
        const SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";
        let Ok(mut file) = self.open_at(b"CACHEDIR.TAG", FILE_FLAGS) else {
            return false;
        };
        let is_file = rustix::fs::fstat(&file)
            .is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::RegularFile);
        let mut buf = [0u8; SIGNATURE.len()];
        is_file && file.read_exact(&mut buf).is_ok() && buf == SIGNATURE
    }
}

fn proc_fd_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| Path::new("/proc/self/fd").is_dir())
}

impl SourceFile {
    /// The `fstat` of the descriptor, taken when it was opened.
    pub fn stat(&self) -> &Stat {
        &self.stat
    }

    /// A fresh `fstat`, to tell whether the file changed while it was read.
    pub fn restat(&self) -> io::Result<Stat> {
        Ok(rustix::fs::fstat(&self.file)?)
    }

    pub fn xattrs(&self) -> io::Result<Vec<Xattr>> {
        metadata::read_xattrs_of(&self.file)
    }

    /// The first `size` bytes as data extents and holes. Holes shorter than
    /// `min_hole` are returned inside the data around them (read as zeros):
    /// skipping every 4 KiB hole of a fragmented file would cut it into
    /// tiny chunks, and reading a short hole costs little.
    pub fn extents(&self, size: u64, min_hole: u64) -> Extents<'_> {
        Extents {
            file: &self.file,
            pos: 0,
            size,
            min_hole: min_hole.max(1),
            dense: false,
        }
    }

    /// A reader of bytes `start..end` (positioned reads: the descriptor's
    /// offset does not matter).
    pub fn range(&self, start: u64, end: u64) -> RangeReader<'_> {
        RangeReader {
            file: &self.file,
            pos: start,
            end,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extent {
    Data { start: u64, end: u64 },
    Hole { start: u64, end: u64 },
}

/// See [`SourceFile::extents`]. Where `SEEK_DATA` is not supported, or the
/// answers stop making sense (the file changes under us), the rest of the
/// file is one data extent: reading zeros is slow, never wrong.
pub struct Extents<'a> {
    file: &'a File,
    pos: u64,
    size: u64,
    min_hole: u64,
    dense: bool,
}

impl Extents<'_> {
    /// The first offset at or after `from` that holds data (`size`: none).
    fn data_from(&mut self, from: u64) -> u64 {
        if self.dense {
            return from;
        }
        match rustix::fs::seek(self.file, SeekFrom::Data(from)) {
            Ok(at) => at.clamp(from, self.size),
            Err(Errno::NXIO) => self.size,
            Err(_) => {
                self.dense = true;
                from
            }
        }
    }

    /// The first offset at or after `from` in a hole (`size`: none before).
    fn hole_from(&mut self, from: u64) -> u64 {
        if self.dense {
            return self.size;
        }
        match rustix::fs::seek(self.file, SeekFrom::Hole(from)) {
            Ok(at) => at.clamp(from, self.size),
            Err(_) => {
                self.dense = true;
                self.size
            }
        }
    }
}

impl Iterator for Extents<'_> {
    type Item = Extent;

    fn next(&mut self) -> Option<Extent> {
        let start = self.pos;
        if start >= self.size {
            return None;
        }
        let data = self.data_from(start);
        if data - start >= self.min_hole {
            self.pos = data;
            return Some(Extent::Hole { start, end: data });
        }
        // Data from `start` up to the next hole long enough to skip.
        let mut end = data;
        while end < self.size {
            let hole = self.hole_from(end);
            if hole >= self.size {
                end = self.size;
                break;
            }
            let next = self.data_from(hole);
            if next - hole >= self.min_hole {
                end = hole;
                break;
            }
            if next <= end {
                // "A hole here" and "data here" at once: it is changing.
                self.dense = true;
                end = self.size;
                break;
            }
            end = next;
        }
        self.pos = end;
        Some(Extent::Data { start, end })
    }
}

pub struct RangeReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = usize::try_from(self.end - self.pos).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

// In their own file: this one stays about the rules, the tests are long.
#[cfg(test)]
mod tests;
