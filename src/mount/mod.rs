//! `snapfs mount`: the repository as dated, read-only folders, one
//! account's or a folder per account.
//!
//! [`view`] defines what the file system looks like, in plain Rust;
//! [`fuse`] translates kernel requests into calls on it; [`homes`] binds
//! each account's folder into its home ([`bind`]). This module mounts,
//! serves until the file system is unmounted or the process is told to stop
//! (SIGINT, SIGTERM, SIGHUP), and then unmounts.
//!
//! No `auto_unmount`: if the process dies, the mount point must fail with
//! "transport endpoint is not connected" rather than turn into an empty
//! folder, which an rsync or a cleanup script would read as "everything was
//! deleted" (Borg's `vfs.py` makes the same point).
//!
//! As root, the mount point is resolved once without following links and
//! mounted on by descriptor, and unmounted the same way
//! ([`mountpoint`]): it runs through folders a tenant owns. A user
//! mounting their own repository goes through `fusermount3`, which does
//! the same checks with its setuid rights.

pub mod acl;
pub mod bind;
pub mod fuse;
pub mod homes;
pub mod mountpoint;
pub mod view;

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::{MountOption, Session, SessionACL, SessionUnmounter};

use crate::error::{Error, IoContext, Result};
use crate::repository::location::Location;
use crate::repository::Repository;
use fuse::FuseAdapter;
use homes::Homes;
use mountpoint::MountPoint;
use view::SnapshotFs;

#[derive(Clone, Debug)]
pub struct MountOptions {
    pub mountpoint: PathBuf,
    /// `allow_other,default_permissions`: every user may look, and the kernel
    /// enforces the snapshot's owners and modes.
    pub allow_other: bool,
    /// Threads serving kernel requests: readers of different files must not
    /// wait for each other.
    pub threads: usize,
    /// Create the mount point and the folders on the way when missing
    /// (owned like the folder each is made in).
    pub mkdir: bool,
    /// Bind each account's folder into its home here (`--bind-homes`,
    /// with `--per-account`).
    pub bind_homes: Option<bind::Template>,
    pub view: view::Options,
}

/// A mounted, not yet served file system.
pub struct Mounted {
    session: Session<FuseAdapter>,
    mountpoint: PathBuf,
    unmounter: Unmounter,
    homes: Option<Arc<Homes>>,
}

/// Who unmounts at a stop signal.
enum Unmounter {
    /// Root: by descriptor, never through a link ([`mountpoint`]).
    Ours(Arc<MountPoint>),
    /// A user's mount: fuser, through fusermount3.
    Fuser(SessionUnmounter),
}

/// Mount the repository at `opts.mountpoint`. The kernel knows the file
/// system when this returns; requests queue until [`Mounted::serve`].
pub fn mount(location: &Location, opts: &MountOptions) -> Result<Mounted> {
    // Signals are taken by one thread with sigwait (see `serve`); block them
    // before any thread (prefetchers, workers) starts, so all inherit it.
    block_stop_signals();
    limit_malloc_fragmentation();
    // What a killed daemon left goes first: its mount is where ours goes.
    let homes = match &opts.bind_homes {
        Some(template) => Some(Homes::prepare(&opts.mountpoint, template.clone())?),
        None => None,
    };
    let place = MountPoint::resolve(&opts.mountpoint, opts.mkdir)?;
    let target = place.open_target(opts.mkdir)?;
    let repo = Repository::open(absolute(location)?)?;
    let adapter = FuseAdapter::new(SnapshotFs::new(repo, opts.view.clone())?);
    let mut config = fuser::Config::default();
    config.acl = if opts.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;
    let mountpoint = place.path().to_path_buf();
    let (session, unmounter) = if rustix::process::geteuid().is_root() {
        let device = mount_by_descriptor(&target, opts.allow_other).at(&mountpoint)?;
        let session = Session::from_fd(adapter, device, config.acl, config).at(&mountpoint)?;
        (session, Unmounter::Ours(Arc::new(place)))
    } else {
        drop(target);
        config.mount_options = fusermount_options(opts.allow_other);
        let mut session = Session::new(adapter, &mountpoint, &config).at(&mountpoint)?;
        let unmounter = Unmounter::Fuser(session.unmount_callable());
        (session, unmounter)
    };
    if let Unmounter::Ours(place) = &unmounter {
        raise_readahead_of(place);
    }
    Ok(Mounted {
        session,
        mountpoint,
        unmounter,
        homes,
    })
}

/// mount(2) on the descriptor of the folder found without links: the
/// kernel resolves `/proc/self/fd/N` to exactly that folder, wherever
/// links in its path point meanwhile. Returns the /dev/fuse descriptor.
fn mount_by_descriptor(target: &OwnedFd, allow_other: bool) -> std::io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    use rustix::mount::MountFlags;
    let device = rustix::fs::open("/dev/fuse", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())?;
    // rootmode: only its type bits matter (a folder). default_permissions
    // with allow_other: the kernel enforces the snapshot's owners and modes.
    let mut data = format!(
        "fd={},rootmode=40000,user_id={},group_id={}",
        device.as_raw_fd(),
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw()
    );
    if allow_other {
        data.push_str(",allow_other,default_permissions");
    }
    let data = std::ffi::CString::new(data).expect("no NUL in mount options");
    rustix::mount::mount(
        "snapfs",
        format!("/proc/self/fd/{}", target.as_fd().as_raw_fd()),
        // "fuse.snapfs": mountinfo shows it, and backup skips such mounts.
        mountpoint::FSTYPE,
        MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV,
        Some(data.as_c_str()),
    )?;
    Ok(device)
}

fn fusermount_options(allow_other: bool) -> Vec<MountOption> {
    let mut options = vec![
        MountOption::RO,
        MountOption::FSName("snapfs".into()),
        // `Subtype` is only handed to fusermount; as a kernel option it
        // reaches both paths, and mountinfo shows `fuse.snapfs`.
        MountOption::CUSTOM("subtype=snapfs".into()),
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if allow_other {
        options.push(MountOption::DefaultPermissions);
    }
    options
}

impl Mounted {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Serve requests until the file system is unmounted, or a stop signal
    /// arrives, which unmounts it.
    pub fn serve(self) -> Result<()> {
        let Mounted {
            session,
            mountpoint,
            unmounter,
            homes,
        } = self;
        if let Some(homes) = &homes {
            let homes = homes.clone();
            let spawned = std::thread::Builder::new()
                .name("homes".into())
                .spawn(move || homes.run());
            if let Err(e) = spawned {
                tracing::warn!("no thread binding homes: {e}");
            }
        }
        let shown = mountpoint.clone();
        let spawned = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let signal = wait_for_stop_signal();
                tracing::info!("signal {signal}: unmounting {}", shown.display());
                if let Some(homes) = homes {
                    stop_binding(&homes);
                }
                unmount_at_stop(unmounter, &shown);
            });
        if let Err(e) = spawned {
            tracing::warn!("no signal thread, stop with snapfs unmount: {e}");
        }
        session.run().at(mountpoint)
    }
}

/// Take the binds away (and with them the mount: [`bind::clear`] ends with
/// it); a busy one is detached, the kernel finishes when its last user
/// leaves.
fn stop_binding(homes: &Homes) {
    match homes.stop(true) {
        Ok(cleared) => {
            for (place, e) in cleared.failed {
                tracing::warn!("could not unmount {}: {e}", place.display());
            }
        }
        Err(e) => tracing::warn!("taking the binds away: {e}"),
    }
}

/// Unmount; busy (a shell sits in it): detach now, the kernel finishes
/// when the last user leaves.
fn unmount_at_stop(unmounter: Unmounter, shown: &Path) {
    let result = match unmounter {
        Unmounter::Ours(place) => place
            .unmount(false)
            .or_else(|e| {
                tracing::warn!("unmounting {}: {e}; detaching it lazily", shown.display());
                place.unmount(true)
            })
            .map(drop),
        Unmounter::Fuser(mut fuser) => fuser
            .unmount()
            .or_else(|e| {
                tracing::warn!("unmounting {}: {e}; detaching it lazily", shown.display());
                std::process::Command::new("fusermount3")
                    .args(["-u", "-z", "--"])
                    .arg(shown)
                    .status()
                    .map(drop)
            })
            .map_err(|e| Error::io(shown, e)),
    };
    if let Err(e) = result {
        tracing::warn!("could not unmount {}: {e}", shown.display());
    }
}

/// Fork, mount in the child, and return in the parent once the mount is
/// ready (or failed, with the child's error). The child serves until
/// unmounted, with its standard streams on /dev/null and its warnings in
/// syslog.
pub fn daemon(location: &Location, opts: &MountOptions) -> Result<()> {
    // The child changes to / so it does not hold the caller's folder busy:
    // absolute paths, made so without following any link (the mount point
    // is resolved without links in the child).
    let location = absolute(location)?;
    let mut opts = opts.clone();
    opts.mountpoint = std::path::absolute(&opts.mountpoint).at(&opts.mountpoint)?;
    let mut fds = [0; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::io("pipe", std::io::Error::last_os_error()));
    }
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // Forking is safe here: the process has one thread until mount() runs.
    match unsafe { libc::fork() } {
        -1 => Err(Error::io("fork", std::io::Error::last_os_error())),
        0 => {
            drop(read_end);
            unsafe { libc::setsid() };
            let mut status = std::fs::File::from(write_end);
            let code = match mount(&location, &opts) {
                Ok(mounted) => {
                    let _ = status.write_all(b"ok");
                    drop(status);
                    detach_stdio();
                    crate::logging::switch_to_syslog();
                    match mounted.serve() {
                        Ok(()) => 0,
                        Err(_) => 1,
                    }
                }
                Err(e) => {
                    let kind = match e {
                        Error::NotFound(_) => 'N',
                        Error::Corrupt { .. } => 'C',
                        Error::Unsupported(_) => 'U',
                        Error::Locked(_) => 'L',
                        Error::Invalid(_) | Error::Unavailable(_) | Error::Io { .. } => 'I',
                    };
                    let _ = status.write_all(format!("{kind}{e}").as_bytes());
                    1
                }
            };
            std::process::exit(code);
        }
        _child => {
            drop(write_end);
            let mut message = String::new();
            std::fs::File::from(read_end)
                .read_to_string(&mut message)
                .at("pipe")?;
            // The child's error, of the same kind (exit codes depend on it).
            let mut chars = message.chars();
            let (kind, text) = (chars.next(), chars.as_str().to_string());
            match (message.as_str(), kind) {
                ("ok", _) => Ok(()),
                (_, None) => Err(Error::Invalid(format!(
                    "the mount process for {} died",
                    opts.mountpoint.display()
                ))),
                (_, Some('N')) => Err(Error::NotFound(text)),
                (_, Some('C')) => Err(Error::corrupt("the repository", text)),
                (_, Some('U')) => Err(Error::Unsupported(text)),
                (_, Some('L')) => Err(Error::Locked(text)),
                (_, Some(_)) => Err(Error::Invalid(text)),
            }
        }
    }
}

/// A folder's location by its absolute path: nothing depends on the
/// working folder once mounted (a daemon changes to `/`).
fn absolute(location: &Location) -> Result<Location> {
    Ok(match location {
        Location::Local(path) => Location::Local(std::path::absolute(path).at(path)?),
        other => other.clone(),
    })
}

fn detach_stdio() {
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
            if null > 2 {
                libc::close(null);
            }
        }
        libc::chdir(c"/".as_ptr());
    }
}

/// Chunks are megabyte buffers allocated and freed by many threads. glibc
/// raises its mmap threshold after the first such free and then serves them
/// from per-thread arenas, which fragment and hold on to freed memory (we
/// measured over 100 MiB beyond the chunk cache). A fixed threshold keeps
/// every chunk in its own mapping, returned to the system when evicted.
fn limit_malloc_fragmentation() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

/// The kernel reads ahead only 128 KiB on a FUSE mount by default: one
/// request at a time for a sequential reader. Several MiB in flight let
/// the worker threads and prefetchers overlap fetching, decompressing and
/// verifying chunks (cold reads measured 260 → 410 MB/s). Root only; a
/// user mount keeps the default. Public for `benches/fuse_passthrough.rs`,
/// which must be measured on the same settings.
pub fn raise_readahead(mountpoint: &Path) {
    if let Ok(place) = MountPoint::resolve(mountpoint, false) {
        raise_readahead_of(&place);
    }
}

fn raise_readahead_of(place: &MountPoint) {
    // By the mount's id, not stat(2): nothing serves the mount yet, a
    // GETATTR would hang.
    let Ok(Some((dev, _))) = place.mount_id().and_then(mountpoint::mountinfo_of) else {
        return;
    };
    let path = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    if let Err(e) = std::fs::write(&path, "4096") {
        tracing::debug!("{path}: {e}");
    }
}

fn stop_signals() -> libc::sigset_t {
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

fn block_stop_signals() {
    let set = stop_signals();
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

fn wait_for_stop_signal() -> i32 {
    let set = stop_signals();
    let mut signal = 0;
    loop {
        if unsafe { libc::sigwait(&set, &mut signal) } == 0 {
            return signal;
        }
    }
}
