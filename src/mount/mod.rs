//! `snapfs mount`: the repository as dated, read-only folders.
//!
//! [`snapshot_fs`] defines what the file system looks like, in plain Rust;
//! [`fuse`] translates kernel requests into calls on it. This module mounts,
//! serves until the file system is unmounted or the process is told to stop
//! (SIGINT, SIGTERM, SIGHUP), and then unmounts.
//!
//! No `auto_unmount`: if the process dies, the mount point must fail with
//! "transport endpoint is not connected" rather than turn into an empty
//! folder, which an rsync or a cleanup script would read as "everything was
//! deleted" (Borg's `vfs.py` makes the same point).

pub mod acl;
pub mod fuse;
pub mod snapshot_fs;

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use fuser::{MountOption, Session, SessionACL};

use crate::error::{Error, IoContext, Result};
use crate::repository::Repository;
use fuse::FuseAdapter;
use snapshot_fs::SnapshotFs;

#[derive(Clone, Debug)]
pub struct MountOptions {
    pub mountpoint: PathBuf,
    /// `allow_other,default_permissions`: every user may look, and the kernel
    /// enforces the snapshot's owners and modes.
    pub allow_other: bool,
    /// Threads serving kernel requests: readers of different files must not
    /// wait for each other.
    pub threads: usize,
    pub view: snapshot_fs::Options,
}

/// A mounted, not yet served file system.
pub struct Mounted {
    session: Session<FuseAdapter>,
    mountpoint: PathBuf,
}

/// Mount the repository at `opts.mountpoint`. The kernel knows the file
/// system when this returns; requests queue until [`Mounted::serve`].
pub fn mount(repo_path: &Path, opts: &MountOptions) -> Result<Mounted> {
    // Signals are taken by one thread with sigwait (see `serve`); block them
    // before any thread (prefetchers, workers) starts, so all inherit it.
    block_stop_signals();
    limit_malloc_fragmentation();
    let mountpoint = opts.mountpoint.canonicalize().at(&opts.mountpoint)?;
    if !mountpoint.is_dir() {
        return Err(Error::Invalid(format!(
            "{} is not a folder",
            mountpoint.display()
        )));
    }
    let repo = Repository::open(repo_path)?;
    let fs = SnapshotFs::new(repo, opts.view.clone())?;
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName("snapfs".into()),
        // `Subtype` is only handed to fusermount; the mount(2) that fuser
        // tries first as root would drop it. As a kernel option it reaches
        // both, and mountinfo shows `fuse.snapfs`, which backup skips.
        MountOption::CUSTOM("subtype=snapfs".into()),
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if opts.allow_other {
        config.mount_options.push(MountOption::DefaultPermissions);
        config.acl = SessionACL::All;
    }
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;
    let session = Session::new(FuseAdapter::new(fs), &mountpoint, &config).at(&mountpoint)?;
    raise_readahead(&mountpoint);
    Ok(Mounted {
        session,
        mountpoint,
    })
}

impl Mounted {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Serve requests until the file system is unmounted, or a stop signal
    /// arrives, which unmounts it.
    pub fn serve(mut self) -> Result<()> {
        let mut unmounter = self.session.unmount_callable();
        let mountpoint = self.mountpoint.clone();
        let spawned = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let signal = wait_for_stop_signal();
                tracing::info!("signal {signal}: unmounting {}", mountpoint.display());
                if let Err(e) = unmounter.unmount() {
                    // Busy (a shell sits in it): detach now, the kernel finishes
                    // when the last user leaves.
                    tracing::warn!(
                        "unmounting {}: {e}; detaching it lazily",
                        mountpoint.display()
                    );
                    lazy_unmount(&mountpoint);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("no signal thread, stop with fusermount3 -u: {e}");
        }
        let mountpoint = self.mountpoint.clone();
        self.session.run().at(mountpoint)
    }
}

/// Fork, mount in the child, and return in the parent once the mount is
/// ready (or failed, with the child's error). The child serves until
/// unmounted, with its standard streams on /dev/null and its warnings in
/// syslog.
pub fn daemon(repo_path: &Path, opts: &MountOptions) -> Result<()> {
    // The child changes to / so it does not hold the caller's folder busy.
    let repo_path = repo_path
        .canonicalize()
        .unwrap_or_else(|_| repo_path.to_path_buf());
    let mut opts = opts.clone();
    opts.mountpoint = opts.mountpoint.canonicalize().at(&opts.mountpoint)?;
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
            let code = match mount(&repo_path, &opts) {
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
                        Error::Invalid(_) | Error::Io { .. } => 'I',
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
    // Not stat(2): nothing serves the mount yet, a GETATTR would hang.
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let target = mountpoint.as_os_str().as_bytes();
    let Some(dev) = mountinfo.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        // Field 5 is the mount point (octal-escaped); our paths rarely need it.
        (fields.get(4)?.as_bytes() == target).then(|| fields[2].to_string())
    }) else {
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

fn lazy_unmount(mountpoint: &Path) {
    let Ok(path) = std::ffi::CString::new(mountpoint.as_os_str().as_bytes()) else {
        return;
    };
    if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } == 0 {
        return;
    }
    // Not root: the setuid helper may do it.
    let _ = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg("--")
        .arg(mountpoint)
        .status();
}
