//! Each account's folder of the mount, bound read-only into its home:
//! `--bind-homes '/home/{account}/admin/backup'`.
//!
//! One mount serves the whole host; every user finds their own backups at
//! `~/admin/backup/` over SSH and SFTP, chrooted SFTP included (a chroot
//! sees a bind inside the home, not a mount point elsewhere). The target
//! runs through folders the tenant owns and can swap for links at any
//! moment, so, as for a mount point ([`super::mountpoint`]):
//!
//! - The home is opened from `/` one name at a time without following a
//!   link ([`crate::nofollow`]), and no name on the way to the target is
//!   looked up in a FUSE mount ([`mountpoint::fuse_guard`]: a user can
//!   mount one over `~/admin` whose daemon never answers); a missing home
//!   is skipped ([`Bound::NoHome`]), never created. It must belong to the
//!   account's user or to root (a chrooted SFTP home is root's): a home of
//!   someone else's means the template or the account is wrong.
//! - Below the home, each folder is opened with `O_NOFOLLOW` from the one
//!   before; missing ones are made 0755 and given to the account's user,
//!   passed in as [`Owner`]. Not "like the parent" (`Missing::MakeLikeParent`):
//!   a chrooted home is root's, and its `admin/` would then be too.
//! - The target must be an empty folder, and not a mount point, unless the
//!   mount there is our bind of this same source (same file system and
//!   folder in mountinfo), which is left as it is ([`Bound::Already`]).
//!   Anything else is refused with its path; the caller goes on with the
//!   other accounts.
//! - The bind is made from the source's descriptor onto the target's
//!   (`attach`), read-only, nosuid, nodev, noexec and private, then the
//!   path is walked again from the home: it must lead to the new mount,
//!   whose mountinfo line must show those flags; otherwise the bind is
//!   taken back through its own descriptor.
//! - Unbinding, and the clean-up of binds left by a killed daemon, unmount
//!   only snapfs mounts, each reached from its folder opened without links
//!   ([`MountPoint::unmount`]); mountinfo only says where to look.
//!
//! **Namespaces.** A bind exists in the mount namespace it is made in.
//! The daemon must run in the host's (the one sshd and its sessions use):
//! no `PrivateTmp=`, `ProtectSystem=`, `ProtectHome=` or the like in its
//! unit. [`bind`] refuses to run when it can see that it is elsewhere.
//!
//! **Propagation.** Each bind is made `MS_PRIVATE`. A clone of our FUSE
//! mount would otherwise join its peer group (it is shared when its parent
//! is, as `/` is under systemd), and a mount made later inside one account's
//! folder of the main mount would then appear inside that account's bind in
//! every home, and the other way round. `MS_SLAVE` would keep the first
//! direction; we want neither, as nothing is ever mounted inside a backup.
//! Whether the bind itself shows up in other namespaces is decided by its
//! parent mount (the home's file system), not by the bind: under a shared
//! `/home` it propagates to the host's peers and slaves, as any mount made
//! there by the administrator would, and its unmount propagates the same
//! way, so no copy outlives it.
//!
//! **Who moves a bind.** `backup` cannot be renamed while it is a mount
//! point, but the user owns `~/admin` and can rename it, or move it to any
//! folder they may write in, bind and all. What they move shows only their
//! own backups, with the same owners and modes, so nothing is exposed that
//! they could not copy; [`clear`] finds moved binds by their file system.

mod attach;
mod template;
#[cfg(test)]
mod tests;

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::mount::mountpoint::{self, mount_id, MountInfo, MountPoint, Unmounted, FSTYPE};
use crate::nofollow::{self, Missing, SEARCH_FLAGS};
use attach::{attach, Api};
pub use template::{check_account, Template};

/// The account's user and group: the owner of the folders made below its
/// home.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// What [`bind`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Bound {
    /// Bound now; the id of the new mount.
    Made(u64),
    /// Our bind of this source was there already (a second call, or a
    /// daemon that binds again): left as it is.
    Already(u64),
    /// The home does not exist: nothing was bound or made.
    NoHome,
}

/// A folder to bind: an account's folder inside our mount, open.
#[derive(Debug)]
pub struct Source {
    fd: OwnedFd,
    origin: Origin,
}

/// How a bind of a source shows in mountinfo: the file system, and which
/// of its folders is mounted.
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    dev: String,
    root: PathBuf,
    fstype: String,
}

impl Origin {
    fn of_mount(info: &MountInfo) -> Origin {
        Origin {
            dev: info.dev.clone(),
            root: info.root.clone(),
            fstype: info.fstype.clone(),
        }
    }
}

impl Source {
    /// The folder `name` (the account's, with `--per-account`) of the
    /// snapfs mount whose root `mount_root` is. It is looked up in the
    /// mount, so the session must be serving. Refused unless it is a folder
    /// of a `fuse.snapfs` mount: nothing else is ever bound into homes.
    pub fn in_mount(mount_root: BorrowedFd, name: &str) -> Result<Source> {
        check_account(name)?;
        let fd = rustix::fs::openat(mount_root, name, SEARCH_FLAGS, Mode::empty())
            .map_err(|e| Error::io(name, e.into()))?;
        let source = Source::any_folder(fd)?;
        if source.origin.fstype != FSTYPE {
            return Err(Error::Invalid(format!(
                "{name} is on a {} mount, not on a snapfs one: not binding it",
                source.origin.fstype
            )));
        }
        Ok(source)
    }

    /// Any folder, opened: the mechanics, tested with plain folders.
    pub(crate) fn any_folder(fd: OwnedFd) -> Result<Source> {
        let id = mount_id(fd.as_fd())?;
        let table = mountpoint::mountinfo()?;
        let mount = table
            .iter()
            .find(|m| m.id == id)
            .ok_or_else(|| Error::Invalid(format!("mount {id} is not in mountinfo")))?;
        // Where in its file system the folder is: its path (the kernel's,
        // not one we resolve) below the mount point, under the mount's root.
        let magic = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let path = std::fs::read_link(&magic).map_err(|e| Error::io(&magic, e))?;
        let rest = path.strip_prefix(&mount.mount_point).map_err(|_| {
            Error::Invalid(format!(
                "{} is not below its mount point {}",
                path.display(),
                mount.mount_point.display()
            ))
        })?;
        let mut origin = Origin::of_mount(mount);
        if !rest.as_os_str().is_empty() {
            origin.root.push(rest);
        }
        Ok(Source { fd, origin })
    }
}

/// Bind `source` read-only at `template`'s place for `account`, making the
/// missing folders below the home for `owner`. See the module docs for
/// what is refused; a refusal is an error naming the path.
pub fn bind(source: &Source, template: &Template, account: &str, owner: Owner) -> Result<Bound> {
    bind_with(source, template, account, owner, Api::Best)
}

fn bind_with(
    source: &Source,
    template: &Template,
    account: &str,
    owner: Owner,
    api: Api,
) -> Result<Bound> {
    check_namespace()?;
    let home_path = template.home(account)?;
    let target_path = template.target(account)?;
    let guard = mountpoint::fuse_guard();
    let home = match nofollow::open_folder_guarded("home", &home_path, Missing::Refuse, &guard) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Bound::NoHome),
        other => other?,
    };
    let stat = rustix::fs::fstat(&home).map_err(|e| Error::io(&home_path, e.into()))?;
    if stat.st_uid != owner.uid && stat.st_uid != 0 {
        return Err(Error::Invalid(format!(
            "home {} belongs to uid {}, not to {account} (uid {}) or root: not binding there",
            home_path.display(),
            stat.st_uid,
            owner.uid
        )));
    }
    let target = Target::open(&home, &home_path, template.below(), Some(owner))?;
    let fd = target.open_name(Some(owner))?;
    if let Some(mounted) = target.mounted(fd.as_fd())? {
        let ours = Origin::of_mount(&mounted) == source.origin;
        return match (ours, locked_down(&mounted)) {
            (true, Ok(())) => Ok(Bound::Already(mounted.id)),
            (true, Err(missing)) => Err(Error::Invalid(format!(
                "{} holds a bind of this account's backups without {missing}: \
                 unbind it first",
                target_path.display()
            ))),
            (false, _) if mounted.fstype == FSTYPE => Err(Error::Invalid(format!(
                "{} holds another snapfs mount (one left by a killed daemon? \
                 the stale clean-up removes it): not binding over it",
                target_path.display()
            ))),
            (false, _) => Err(Error::Invalid(format!(
                "{} is a mount point of {} already: not binding over it",
                target_path.display(),
                mounted.fstype
            ))),
        };
    }
    target.check_empty_folder(fd.as_fd())?;
    let reopen = || target.open_name(None);
    let attached = attach(source.fd.as_fd(), fd.as_fd(), reopen, &target_path, api)?;
    // Walk the path again from the home: it must lead to the new mount
    // (and not, say, to a folder the tenant moved in meanwhile).
    let check = Target::open(&home, &home_path, template.below(), None)
        .and_then(|again| Ok((again.open_name(None)?, again)))
        .and_then(|(fd, again)| again.mounted(fd.as_fd()))
        .and_then(|mounted| match mounted {
            Some(m) if m.id == attached.id => locked_down(&m).map_err(|missing| {
                Error::Invalid(format!(
                    "the bind at {} came out without {missing}",
                    target_path.display()
                ))
            }),
            _ => Err(Error::Invalid(format!(
                "{} was moved while binding: took the bind back",
                target_path.display()
            ))),
        });
    match check {
        Ok(()) => {
            tracing::debug!(
                "bound {} (mount {}, with {})",
                target_path.display(),
                attached.id,
                if attached.legacy {
                    "mount(2)"
                } else {
                    "open_tree"
                }
            );
            Ok(Bound::Made(attached.id))
        }
        Err(e) => {
            attached.detach();
            Err(e)
        }
    }
}

/// Unmount the bind at `target`, reached without following links; only a
/// snapfs mount is unmounted ([`MountPoint::unmount`]). `lazy` detaches a
/// busy one (a user's shell in it). A missing home is nothing mounted.
pub fn unbind(target: &Path, lazy: bool) -> Result<Unmounted> {
    match MountPoint::resolve(target, false) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(Unmounted::NotMounted),
        place => place?.unmount(lazy),
    }
}

/// What [`clear`] did, place by place.
#[derive(Debug, Default)]
pub struct Cleared {
    pub unmounted: Vec<PathBuf>,
    pub failed: Vec<(PathBuf, Error)>,
}

/// Remove every snapfs mount at `mountpoint` and every snapfs bind at one
/// of `template`'s places or of the same file system as a mount at
/// `mountpoint` (a bind the user moved): at start, those a killed daemon
/// left ("Transport endpoint is not connected"), at a stop, our own. Binds
/// first, then the mount. Each place is found in mountinfo but unmounted
/// through [`MountPoint`]: resolved without following links, and only if
/// the mount there is snapfs'. A place that fails is reported and the
/// others are still done. A running mount of another process at these
/// places is removed too: they are this daemon's.
pub fn clear(mountpoint: &Path, template: &Template, lazy: bool) -> Result<Cleared> {
    let mountpoint = std::path::absolute(mountpoint).map_err(|e| Error::io(mountpoint, e))?;
    let table = mountpoint::mountinfo()?;
    let ours: Vec<&MountInfo> = table.iter().filter(|m| m.fstype == FSTYPE).collect();
    let main_devs: Vec<&str> = ours
        .iter()
        .filter(|m| m.mount_point == mountpoint)
        .map(|m| m.dev.as_str())
        .collect();
    let mut places: Vec<PathBuf> = ours
        .iter()
        .filter(|m| m.mount_point != mountpoint)
        .filter(|m| {
            template.account_of(&m.mount_point).is_some() || main_devs.contains(&m.dev.as_str())
        })
        .map(|m| m.mount_point.clone())
        .collect();
    places.sort();
    places.dedup();
    if !main_devs.is_empty() {
        places.push(mountpoint);
    }
    let mut cleared = Cleared::default();
    for place in places {
        match unbind(&place, lazy) {
            Ok(Unmounted::Unmounted(_)) => cleared.unmounted.push(place),
            Ok(Unmounted::NotMounted) => {}
            Err(e) => cleared.failed.push((place, e)),
        }
    }
    Ok(cleared)
}

/// The binds must be made where sshd's sessions look. Refused when this
/// process can see that its mount namespace is not init's; when it cannot
/// look (a container may hide init's), it goes on.
fn check_namespace() -> Result<()> {
    let ours = std::fs::read_link("/proc/self/ns/mnt");
    let init = std::fs::read_link("/proc/1/ns/mnt");
    match (ours, init) {
        (Ok(ours), Ok(init)) if ours != init => Err(Error::Invalid(format!(
            "snapfs runs in a mount namespace of its own ({}, init's is {}): binds made \
             here would be invisible to SSH sessions; run it without PrivateTmp=, \
             ProtectSystem=, ProtectHome= or other sandboxing (see snapfs-mount.service)",
            ours.display(),
            init.display()
        ))),
        _ => Ok(()),
    }
}

/// The mount's own options that every bind must have; what is missing.
fn locked_down(info: &MountInfo) -> std::result::Result<(), String> {
    let missing: Vec<&str> = ["ro", "nosuid", "nodev", "noexec"]
        .into_iter()
        .filter(|o| !info.has_option(o))
        .collect();
    match missing.is_empty() {
        true => Ok(()),
        false => Err(missing.join(", ")),
    }
}

/// The place of a bind: the folder holding it, open, and its name there.
struct Target {
    parent: OwnedFd,
    name: OsString,
    path: PathBuf,
}

impl Target {
    /// Open the folders from the home down to the target's folder, one at
    /// a time without following links and never looking a name up in a
    /// FUSE mount ([`mountpoint::fuse_guard`]: a user can mount one at
    /// `~/admin`); with `owner`, make missing ones.
    fn open(
        home: &OwnedFd,
        home_path: &Path,
        below: &Path,
        owner: Option<Owner>,
    ) -> Result<Target> {
        let mut names: Vec<&OsStr> = below.iter().collect();
        let name = names.pop().expect("a template goes on below the home");
        let mut path = home_path.to_path_buf();
        let guard = mountpoint::fuse_guard();
        guard(home.as_fd(), &path)?;
        let mut fd = rustix::fs::openat(home, ".", SEARCH_FLAGS, Mode::empty())
            .map_err(|e| Error::io(&path, e.into()))?;
        for folder in names {
            guard(fd.as_fd(), &path)?;
            let open = |fd: &OwnedFd| rustix::fs::openat(fd, folder, SEARCH_FLAGS, Mode::empty());
            let opened = match (open(&fd), owner) {
                (Err(Errno::NOENT), Some(o)) => {
                    nofollow::make_folder_owned(fd.as_fd(), folder, o.uid, o.gid)
                        .and_then(|()| open(&fd))
                }
                (other, _) => other,
            };
            path.push(folder);
            fd = match opened {
                Ok(next) => next,
                Err(Errno::NOTDIR | Errno::LOOP) => return Err(not_a_folder(&fd, folder, &path)),
                Err(e) => return Err(Error::io(&path, e.into())),
            };
        }
        guard(fd.as_fd(), &path)?;
        path.push(name);
        Ok(Target {
            parent: fd,
            name: name.to_os_string(),
            path,
        })
    }

    /// The target itself, `O_PATH` without following it; with `owner`,
    /// made when missing. When something is mounted there, the descriptor
    /// is on the root of the topmost mount.
    fn open_name(&self, owner: Option<Owner>) -> Result<OwnedFd> {
        let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let open = || rustix::fs::openat(&self.parent, &self.name, flags, Mode::empty());
        match (open(), owner) {
            (Err(Errno::NOENT), Some(o)) => {
                nofollow::make_folder_owned(self.parent.as_fd(), &self.name, o.uid, o.gid)
                    .and_then(|()| open())
            }
            (other, _) => other,
        }
        .map_err(|e| Error::io(&self.path, e.into()))
    }

    /// The mount at the target, if one is: by mount ids from fdinfo, so no
    /// request reaches a file system mounted there (a dead FUSE daemon's
    /// would fail it, a busy one would stall it).
    fn mounted(&self, fd: BorrowedFd) -> Result<Option<MountInfo>> {
        let id = mount_id(fd)?;
        if id == mount_id(self.parent.as_fd())? {
            return Ok(None);
        }
        let table = mountpoint::mountinfo()?;
        match table.into_iter().find(|m| m.id == id) {
            Some(info) => Ok(Some(info)),
            None => Err(Error::Invalid(format!(
                "{}: mount {id} is not in mountinfo",
                self.path.display()
            ))),
        }
    }

    /// A real folder, not a link or a file, and empty: a bind would hide
    /// what is in it, and the user would take that for lost.
    fn check_empty_folder(&self, fd: BorrowedFd) -> Result<()> {
        let stat = rustix::fs::fstat(fd).map_err(|e| Error::io(&self.path, e.into()))?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory => {}
            FileType::Symlink => return Err(not_a_folder(&self.parent, &self.name, &self.path)),
            other => {
                return Err(Error::Invalid(format!(
                    "{} is a {}, not a folder: not binding over it",
                    self.path.display(),
                    file_type_name(other)
                )))
            }
        }
        match mountpoint::is_empty(fd) {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::Invalid(format!(
                "{} is not empty: a bind would hide what is in it (move it away)",
                self.path.display()
            ))),
            Err(e) => Err(Error::io(&self.path, e.into())),
        }
    }
}

/// The refusal of a name on the way that is a link or a file.
fn not_a_folder(parent: &OwnedFd, name: &OsStr, path: &Path) -> Error {
    match rustix::fs::readlinkat(parent, name, Vec::new()) {
        Ok(to) => Error::Invalid(format!(
            "{} is a symbolic link (to {}): snapfs follows no links in a home \
             (a tenant could point one anywhere); not binding",
            path.display(),
            to.to_string_lossy()
        )),
        Err(_) => Error::Invalid(format!(
            "{} is not a folder: not binding there",
            path.display()
        )),
    }
}

fn file_type_name(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "file",
        FileType::Fifo => "fifo",
        FileType::Socket => "socket",
        FileType::CharacterDevice | FileType::BlockDevice => "device",
        _ => "special file",
    }
}
