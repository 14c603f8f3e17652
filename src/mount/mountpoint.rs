//! Mount points that a tenant cannot redirect.
//!
//! A mount point such as `/home/alice/admin/backup` runs through folders
//! the tenant owns. Anything that resolves that path twice, or follows a
//! link on the way, can be made to act elsewhere: with `~/admin` a link to
//! `/home/bob/admin`, a restart of alice's mount unmounted bob's and showed
//! alice's backups in bob's home; with `~/admin/backup` a link to
//! `/opt/private`, the mount hid that folder (issue 9). So:
//!
//! - the path is resolved **once**, without following any link (its folder
//!   one name at a time, [`crate::nofollow`], then the last name with
//!   `O_NOFOLLOW`), and a path through a link is refused;
//! - the mount is made on the descriptor of the folder found that way
//!   (`mount(2)` on `/proc/self/fd/N`, which the kernel resolves to exactly
//!   that folder), not on its path;
//! - unmounting checks, on descriptors, that the name is a mount point of
//!   snapfs (its mount id differs from its folder's, and mountinfo says
//!   `fuse.snapfs`), then unmounts `/proc/self/fd/<folder>/<name>` with
//!   `UMOUNT_NOFOLLOW`: the folder is the one checked, and a mount point
//!   cannot be renamed or replaced while mounted (EBUSY), so the name is
//!   too. Nothing else is ever unmounted.
//!
//! Folders created for a mount point (`--mkdir`) are made one at a time
//! with `mkdirat` below the folder already open, and belong to the owner
//! of the folder they are made in (a home's `admin/` belongs to its user).

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::UnmountFlags;

use crate::error::{Error, Result};
use crate::nofollow::{self, Missing};

/// The file system type snapfs mounts show in mountinfo.
pub const FSTYPE: &str = "fuse.snapfs";

/// A mount point, resolved once: its folder, open, and its name there.
#[derive(Debug)]
pub struct MountPoint {
    /// As given (made absolute), for messages only: never opened again.
    path: PathBuf,
    parent: OwnedFd,
    name: Vec<u8>,
}

/// What `unmount` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Unmounted {
    /// Nothing was mounted there (or the name does not exist).
    NotMounted,
    /// This many snapfs mounts were unmounted (stacked stale ones count).
    Unmounted(usize),
}

impl MountPoint {
    /// Resolve `path`'s folder without following links; with `mkdir`,
    /// create the missing folders on the way (not the mount point itself).
    pub fn resolve(path: &Path, mkdir: bool) -> Result<MountPoint> {
        let path = std::path::absolute(path).map_err(|e| Error::io(path, e))?;
        let missing = if mkdir {
            Missing::MakeLikeParent
        } else {
            Missing::Refuse
        };
        let guard = fuse_guard();
        let (parent, name) = nofollow::open_parent_guarded("mount point", &path, missing, &guard)?;
        let name = name.to_os_string();
        Ok(MountPoint {
            name: name.as_bytes().to_vec(),
            parent,
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The mount point's name inside its open folder, as a path the kernel
    /// resolves through the descriptor (the magic link is followed, being
    /// no last component; the name is looked up in exactly that folder).
    fn via_parent(&self) -> PathBuf {
        let mut p = PathBuf::from(format!("/proc/self/fd/{}", self.parent.as_raw_fd()));
        p.push(OsStr::from_bytes(&self.name));
        p
    }

    /// The folder to mount on: a real, empty folder, not a link and not a
    /// mount point already. With `mkdir`, created when missing.
    pub fn open_target(&self, mkdir: bool) -> Result<OwnedFd> {
        let fd = match self.open_name() {
            Err(e) if e == Errno::NOENT && mkdir => {
                nofollow::make_folder(
                    self.parent.as_fd(),
                    OsStr::from_bytes(&self.name),
                    Missing::MakeLikeParent,
                )
                .map_err(|e| self.error(e))?;
                self.open_name()
            }
            other => other,
        }
        .map_err(|e| self.error(e))?;
        if mount_id(fd.as_fd())? != mount_id(self.parent.as_fd())? {
            return Err(Error::Invalid(format!(
                "{} is a mount point already (unmount it first: snapfs unmount {})",
                self.path.display(),
                self.path.display()
            )));
        }
        let stat = rustix::fs::fstat(&fd).map_err(|e| self.error(e))?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory => {}
            FileType::Symlink => {
                return Err(Error::Invalid(format!(
                    "{} is a symbolic link: refusing to mount where it points",
                    self.path.display()
                )))
            }
            _ => {
                return Err(Error::Invalid(format!(
                    "{} is not a folder",
                    self.path.display()
                )))
            }
        }
        if !is_empty(fd.as_fd()).map_err(|e| self.error(e))? {
            return Err(Error::Invalid(format!(
                "{} is not empty: a mount would hide what is in it",
                self.path.display()
            )));
        }
        Ok(fd)
    }

    fn open_name(&self) -> rustix::io::Result<OwnedFd> {
        rustix::fs::openat(
            &self.parent,
            OsStr::from_bytes(&self.name),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
    }

    /// The id of the mount at this name (its folder's, when none is).
    pub fn mount_id(&self) -> Result<u64> {
        let fd = self.open_name().map_err(|e| self.error(e))?;
        mount_id(fd.as_fd())
    }

    /// The snapfs mount at this name, if any: its type is checked, so that
    /// nothing but a snapfs mount is ever unmounted.
    fn mounted(&self) -> Result<Option<String>> {
        let fd = match self.open_name() {
            Ok(fd) => fd,
            Err(e) if e == Errno::NOENT => return Ok(None),
            Err(e) => return Err(self.error(e)),
        };
        let id = mount_id(fd.as_fd())?;
        if id == mount_id(self.parent.as_fd())? {
            return Ok(None);
        }
        Ok(Some(fstype_of(id)?.unwrap_or_default()))
    }

    /// Unmount every snapfs mount stacked at this name (a stale one left
    /// by a killed daemon first shows as "Transport endpoint is not
    /// connected"). `lazy` detaches a busy mount; without it a busy one
    /// is an error.
    pub fn unmount(&self, lazy: bool) -> Result<Unmounted> {
        let mut count = 0;
        // A few stacked mounts at most; the bound only stops a loop should
        // the kernel keep answering "mounted" for a name it did unmount.
        while count < 16 {
            match self.mounted()? {
                None => break,
                Some(fstype) if fstype == FSTYPE => {}
                Some(fstype) => {
                    return Err(Error::Invalid(format!(
                        "{} is a mount point of {}, not of snapfs: leaving it",
                        self.path.display(),
                        if fstype.is_empty() {
                            "unknown type"
                        } else {
                            &fstype
                        }
                    )))
                }
            }
            self.unmount_once(lazy)?;
            count += 1;
        }
        Ok(match count {
            0 => Unmounted::NotMounted,
            n => Unmounted::Unmounted(n),
        })
    }

    fn unmount_once(&self, lazy: bool) -> Result<()> {
        let mut flags = UnmountFlags::NOFOLLOW;
        if lazy {
            flags |= UnmountFlags::DETACH;
        }
        match rustix::mount::unmount(self.via_parent(), flags) {
            Ok(()) => Ok(()),
            Err(e) if e == Errno::BUSY => Err(Error::Invalid(format!(
                "{} is busy (a process works in it); --lazy detaches it now and \
                 the kernel finishes when the last user leaves",
                self.path.display()
            ))),
            // Not root: fusermount3 (setuid) unmounts our own mounts the
            // same way (UMOUNT_NOFOLLOW from the opened folder).
            Err(e) if e == Errno::PERM => fusermount_unmount(&self.path, lazy),
            Err(e) => Err(self.error(e)),
        }
    }

    fn error(&self, e: Errno) -> Error {
        Error::io(&self.path, std::io::Error::from(e))
    }
}

/// Whether the folder holds nothing but `.` and `..`.
pub(crate) fn is_empty(folder: BorrowedFd) -> rustix::io::Result<bool> {
    let fd = rustix::fs::openat(
        folder,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut dir = rustix::fs::Dir::read_from(&fd)?;
    while let Some(entry) = dir.read() {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The id of the mount a descriptor is on, from `/proc/self/fdinfo`: no
/// request reaches the file system (a dead FUSE daemon would fail a stat).
pub fn mount_id(fd: BorrowedFd) -> Result<u64> {
    let path = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
    let mut text = String::new();
    File::open(&path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| Error::io(&path, e))?;
    text.lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| Error::Invalid(format!("{path} has no mnt_id")))
}

/// A [`nofollow::Guard`] that refuses to look a name up in a folder of a
/// FUSE file system. Its daemon answers that lookup, and a user may mount
/// one over a folder they own (`fusermount3`, with /dev/fuse 0666 as
/// Debian has it) whose daemon never answers: root's lookup would wait
/// forever, and with it every other account's mount or bind. Only the
/// mount's id is read for each folder (no request reaches any file
/// system); mountinfo only when the walk enters another mount.
pub fn fuse_guard() -> impl Fn(BorrowedFd, &Path) -> Result<()> {
    // The root file system's mount, checked once per process: it is never
    // unmounted, so its id is never another's.
    static ROOT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let passed = std::cell::Cell::new(None);
    move |fd: BorrowedFd, path: &Path| {
        let id = mount_id(fd)?;
        if passed.get() == Some(id) || ROOT.get() == Some(&id) {
            return Ok(());
        }
        let fstype = fstype_of(id)?.unwrap_or_default();
        if fstype == "fuse" || fstype == "fuseblk" || fstype.starts_with("fuse.") {
            return Err(Error::Invalid(format!(
                "{} is on a {fstype} mount: snapfs looks no names up in a FUSE file system \
                 on its way (its daemon answers, and one a user mounted could keep root \
                 waiting forever)",
                path.display()
            )));
        }
        if path == Path::new("/") {
            let _ = ROOT.set(id);
        }
        passed.set(Some(id));
        Ok(())
    }
}

/// One line of `/proc/self/mountinfo` (proc(5)), its paths unescaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountInfo {
    pub id: u64,
    /// `major:minor` of the file system: every bind of one file system
    /// shows the same.
    pub dev: String,
    /// The folder of that file system mounted here: `/`, or deeper for a
    /// bind of a folder.
    pub root: PathBuf,
    pub mount_point: PathBuf,
    /// The mount's own options: `ro,nosuid,nodev,noexec,relatime`.
    pub options: String,
    /// The optional fields: `shared:N`, `master:N`, `propagate_from:N`.
    pub tags: Vec<String>,
    pub fstype: String,
}

impl MountInfo {
    /// Whether the mount's own options include `option` (`ro`, `nosuid`).
    pub fn has_option(&self, option: &str) -> bool {
        self.options.split(',').any(|o| o == option)
    }
}

/// The mount table of this process's mount namespace.
pub fn mountinfo() -> Result<Vec<MountInfo>> {
    // Bytes, not a String: a tenant may rename a folder above a bind to a
    // name that is not UTF-8, and one such line must not make every other
    // line unreadable.
    let text =
        std::fs::read("/proc/self/mountinfo").map_err(|e| Error::io("/proc/self/mountinfo", e))?;
    Ok(text
        .split(|&b| b == b'\n')
        .filter_map(parse_mountinfo_line)
        .collect())
}

fn parse_mountinfo_line(line: &[u8]) -> Option<MountInfo> {
    let sep = line.windows(3).position(|w| w == b" - ")?;
    let (left, right) = (&line[..sep], &line[sep + 3..]);
    let fields: Vec<&[u8]> = left.split(|&b| b == b' ').collect();
    if fields.len() < 6 {
        return None;
    }
    let text = |f: &[u8]| String::from_utf8_lossy(f).into_owned();
    Some(MountInfo {
        id: text(fields[0]).parse().ok()?,
        dev: text(fields[2]),
        root: unescape(fields[3]),
        mount_point: unescape(fields[4]),
        options: text(fields[5]),
        tags: fields[6..].iter().map(|t| text(t)).collect(),
        fstype: text(right.split(|&b| b == b' ').next()?),
    })
}

/// mountinfo writes space, tab, newline and backslash in paths as `\ooo`.
fn unescape(bytes: &[u8]) -> PathBuf {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push(d.iter().fold(0u8, |n, b| n.wrapping_mul(8) + (b - b'0')));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// The fields of the mountinfo line of mount `id`: (major:minor, fstype).
pub fn mountinfo_of(id: u64) -> Result<Option<(String, String)>> {
    Ok(mountinfo()?
        .into_iter()
        .find(|m| m.id == id)
        .map(|m| (m.dev, m.fstype)))
}

fn fstype_of(id: u64) -> Result<Option<String>> {
    Ok(mountinfo_of(id)?.map(|(_, fstype)| fstype))
}

fn fusermount_unmount(path: &Path, lazy: bool) -> Result<()> {
    let mut command = std::process::Command::new("fusermount3");
    command.arg("-u");
    if lazy {
        command.arg("-z");
    }
    let out = command
        .arg("--")
        .arg(path)
        .output()
        .map_err(|e| Error::io("fusermount3", e))?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "fusermount3 -u {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_on_the_way_or_at_the_end_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir_all(real.join("admin/backup")).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink(real.join("admin/backup"), real.join("admin/other")).unwrap();

        let err = MountPoint::resolve(&dir.path().join("link/admin/backup"), false).unwrap_err();
        assert!(
            err.to_string().contains("goes through a symbolic link"),
            "{err}"
        );
        let err = MountPoint::resolve(&dir.path().join("link/admin/backup"), true).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");

        let at_end = MountPoint::resolve(&real.join("admin/other"), false).unwrap();
        let err = at_end.open_target(false).unwrap_err();
        assert!(err.to_string().contains("is a symbolic link"), "{err}");

        let good = MountPoint::resolve(&real.join("admin/backup"), false).unwrap();
        good.open_target(false).unwrap();
        assert_eq!(good.unmount(false).unwrap(), Unmounted::NotMounted);
    }

    #[test]
    fn mkdir_makes_the_missing_folders_and_refuses_a_full_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("home/admin/backup");
        let mp = MountPoint::resolve(&path, true).unwrap();
        mp.open_target(true).unwrap();
        assert!(path.is_dir());
        std::fs::write(path.join("x"), b"x").unwrap();
        let err = mp.open_target(false).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
        // Missing without --mkdir: a clear error naming it.
        let err = MountPoint::resolve(&dir.path().join("none/x"), false).unwrap_err();
        assert!(err.to_string().contains("none"), "{err}");
    }

    #[test]
    fn mountinfo_lines_with_escaped_and_non_utf8_paths() {
        let line = b"36 35 0:45 /al\\040ice /home/a\\134b/\\377x/backup ro,nosuid,nodev \
                     shared:7 master:2 - fuse.snapfs snapfs ro,user_id=0";
        let m = parse_mountinfo_line(line).unwrap();
        assert_eq!(m.id, 36);
        assert_eq!(m.dev, "0:45");
        assert_eq!(m.root, Path::new("/al ice"));
        assert_eq!(
            m.mount_point.as_os_str().as_bytes(),
            b"/home/a\\b/\xffx/backup"
        );
        assert!(m.has_option("nosuid") && !m.has_option("noexec"));
        assert_eq!(m.tags, ["shared:7", "master:2"]);
        assert_eq!(m.fstype, "fuse.snapfs");
        // The whole table reads, and holds the root.
        assert!(mountinfo()
            .unwrap()
            .iter()
            .any(|m| m.mount_point == Path::new("/")));
    }

    #[test]
    fn only_snapfs_mounts_are_unmounted() {
        // /proc is a mount point of another type: never touched.
        let proc_mount = MountPoint::resolve(Path::new("/proc"), false).unwrap();
        let err = proc_mount.unmount(true).unwrap_err();
        assert!(err.to_string().contains("not of snapfs"), "{err}");
    }
}
