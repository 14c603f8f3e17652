//! Making one bind, by descriptors only.
//!
//! With the mount API of Linux 5.12 (`open_tree`, `mount_setattr`,
//! `move_mount`), the bind is made detached, made read-only, nosuid,
//! nodev, noexec and private there, and only then attached to the target:
//! it is never visible with other settings. `mount_setattr` is not in
//! rustix 1.1, so it is a raw syscall here.
//!
//! The fallback, for older kernels (RHEL 8's 4.18 has none of the three),
//! is `mount(2)`: `MS_BIND` from `/proc/self/fd/S` onto `/proc/self/fd/T`,
//! then `MS_REMOUNT|MS_BIND|MS_RDONLY|...` and `MS_PRIVATE` on the bind,
//! reached by its name in the folder already open. For that moment the
//! bind has the flags of the mount it copies (our FUSE mount: ro, nosuid,
//! nodev, not noexec), and is shared with it when that mount is shared.
//! Both ways are tested on this kernel; the fallback is taken when the
//! kernel answers ENOSYS.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::mount::{
    MountAttrFlags, MountFlags, MountPropagationFlags, MoveMountFlags, OpenTreeFlags, UnmountFlags,
};

use crate::error::{Error, Result};
use crate::mount::mountpoint::mount_id;

/// Which mount API to make a bind with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Api {
    /// The new one when the kernel has it, else `mount(2)`.
    Best,
    /// `mount(2)` only: for the tests of the fallback.
    #[cfg_attr(not(test), allow(dead_code))]
    Legacy,
}

/// A bind just made.
pub(super) struct Attached {
    pub id: u64,
    /// Made with `mount(2)`, the fallback.
    pub legacy: bool,
    /// A descriptor of the bind's root: it names exactly this mount,
    /// wherever it is now.
    handle: OwnedFd,
}

impl Attached {
    /// Take the bind away again (a check after attaching failed). Through
    /// the descriptor's magic link, which the kernel resolves to this
    /// mount's root: no path a tenant could have changed. Lazily: our own
    /// handle keeps it busy.
    pub fn detach(self) {
        let path = format!("/proc/self/fd/{}", self.handle.as_raw_fd());
        if let Err(e) = rustix::mount::unmount(&path, UnmountFlags::DETACH) {
            tracing::warn!("could not take back a bind (mount {}): {e}", self.id);
        }
    }
}

const LOCKED_DOWN: MountAttrFlags = MountAttrFlags::MOUNT_ATTR_RDONLY
    .union(MountAttrFlags::MOUNT_ATTR_NOSUID)
    .union(MountAttrFlags::MOUNT_ATTR_NODEV)
    .union(MountAttrFlags::MOUNT_ATTR_NOEXEC);

/// Bind `source` onto the folder `target`. `reopen` opens the target's
/// name again from its folder, which (after the bind) reaches the bind's
/// root; `shown` names the target in messages.
pub(super) fn attach(
    source: BorrowedFd,
    target: BorrowedFd,
    reopen: impl Fn() -> Result<OwnedFd>,
    shown: &std::path::Path,
    api: Api,
) -> Result<Attached> {
    let err = |what: &str, e: Errno| {
        Error::io(
            shown,
            std::io::Error::other(format!("{what}: {}", std::io::Error::from(e))),
        )
    };
    if api == Api::Best {
        match attach_new_api(source, target) {
            Ok(attached) => return Ok(attached),
            Err((_, Errno::NOSYS)) => {
                tracing::debug!("no open_tree/mount_setattr: binding with mount(2)")
            }
            Err((what, e)) => return Err(err(what, e)),
        }
    }
    attach_legacy(source, target, reopen).map_err(|(what, e)| match e {
        Fallback::Errno(e) => err(what, e),
        Fallback::Error(e) => e,
    })
}

fn attach_new_api(
    source: BorrowedFd,
    target: BorrowedFd,
) -> std::result::Result<Attached, (&'static str, Errno)> {
    // Not AT_RECURSIVE: only this mount, nothing mounted below the folder.
    let tree = rustix::mount::open_tree(
        source,
        "",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH,
    )
    .map_err(|e| ("open_tree", e))?;
    mount_setattr(tree.as_fd(), LOCKED_DOWN, MountPropagationFlags::PRIVATE)
        .map_err(|e| ("mount_setattr", e))?;
    // Onto the folder opened without links (T_EMPTY_PATH: the descriptor
    // itself, no name looked up).
    rustix::mount::move_mount(
        &tree,
        "",
        target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| ("move_mount", e))?;
    let id = mount_id(tree.as_fd()).map_err(|_| ("mnt_id", Errno::NOENT))?;
    Ok(Attached {
        id,
        legacy: false,
        handle: tree,
    })
}

enum Fallback {
    Errno(Errno),
    Error(Error),
}

fn attach_legacy(
    source: BorrowedFd,
    target: BorrowedFd,
    reopen: impl Fn() -> Result<OwnedFd>,
) -> std::result::Result<Attached, (&'static str, Fallback)> {
    let magic = |fd: BorrowedFd| format!("/proc/self/fd/{}", fd.as_raw_fd());
    let before = mount_id(target).map_err(|e| ("mnt_id", Fallback::Error(e)))?;
    rustix::mount::mount_bind(magic(source), magic(target))
        .map_err(|e| ("mount --bind", Fallback::Errno(e)))?;
    // The magic link of `target` stays on the folder below the bind; its
    // name, looked up again in the folder held open, reaches the bind (a
    // mount point cannot be renamed away meanwhile: EBUSY).
    let handle = reopen().map_err(|e| ("reopen", Fallback::Error(e)))?;
    let id = mount_id(handle.as_fd()).map_err(|e| ("mnt_id", Fallback::Error(e)))?;
    if id == before {
        return Err((
            "reopen",
            Fallback::Error(Error::Invalid(
                "the bind is not where it was made; it may be left behind".into(),
            )),
        ));
    }
    let attached = Attached {
        id,
        legacy: true,
        handle,
    };
    let path = magic(attached.handle.as_fd());
    let flags = MountFlags::BIND
        | MountFlags::RDONLY
        | MountFlags::NOSUID
        | MountFlags::NODEV
        | MountFlags::NOEXEC;
    let locked = rustix::mount::mount_remount(&path, flags, "")
        .map_err(|e| ("remount read-only", e))
        .and_then(|()| {
            rustix::mount::mount_change(&path, MountPropagationFlags::PRIVATE)
                .map_err(|e| ("make private", e))
        });
    match locked {
        Ok(()) => Ok(attached),
        Err((what, e)) => {
            attached.detach();
            Err((what, Fallback::Errno(e)))
        }
    }
}

/// `struct mount_attr` of linux/mount.h (`MOUNT_ATTR_SIZE_VER0`).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH, ...)`: set `attrs` and the
/// propagation type on the mount `fd` is the root of.
fn mount_setattr(
    fd: BorrowedFd,
    attrs: MountAttrFlags,
    propagation: MountPropagationFlags,
) -> rustix::io::Result<()> {
    let attr = MountAttr {
        attr_set: u64::from(attrs.bits()),
        attr_clr: 0,
        propagation: u64::from(propagation.bits()),
        userns_fd: 0,
    };
    // SAFETY: the path is a valid C string, `attr` lives across the call
    // and its size is passed; the kernel only reads them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    match r {
        0 => Ok(()),
        _ => Err(Errno::from_raw_os_error(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        )),
    }
}
