//! `mount --per-account --bind-homes TEMPLATE`: every account's folder of
//! the one host-wide mount, bound into its home, for as long as the mount
//! serves.
//!
//! Before mounting, binds and mounts left by a daemon that died are
//! cleared ([`bind::clear`]): users see "Transport endpoint is not
//! connected" in between, never an empty folder. Once serving, a thread
//! lists the mount's root every [`ROUND`] (through the kernel, as any
//! reader would: the view lists the repository's account folders) and
//! binds each account it has not bound yet, so an account's first backup
//! shows in its home within seconds, without a restart. Every `RECHECK` (a minute)
//! it binds every account again, which does nothing where its bind is in
//! place and repairs one an administrator took away. At a stop, binds go
//! first, then the mount.

use std::collections::HashSet;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};

use super::bind::{self, Bound, Owner, Source, Template};
use crate::error::{Error, Result};
use crate::host::accounts;
use crate::nofollow::{self, Missing, SEARCH_FLAGS};

/// How often new accounts are looked for.
pub const ROUND: Duration = Duration::from_secs(2);
/// How often every account is bound again (a no-op where in place).
const RECHECK: Duration = Duration::from_secs(60);

/// The binder of one mount's account folders.
pub struct Homes {
    mountpoint: PathBuf,
    template: Template,
    /// Held for a whole round of binding; `true` once stopping, after
    /// which nothing more is bound.
    stopping: Mutex<bool>,
    wake: Condvar,
}

impl Homes {
    /// Clear what a killed daemon left at `mountpoint` and in the homes;
    /// the binder of what will be mounted there.
    pub fn prepare(mountpoint: &Path, template: Template) -> Result<Arc<Homes>> {
        let mountpoint = std::path::absolute(mountpoint).map_err(|e| Error::io(mountpoint, e))?;
        let cleared = bind::clear(&mountpoint, &template, true)?;
        for place in &cleared.unmounted {
            tracing::info!("cleared a stale mount at {}", place.display());
        }
        for (place, e) in &cleared.failed {
            tracing::warn!(
                "could not clear the stale mount at {}: {e}",
                place.display()
            );
        }
        Ok(Arc::new(Homes {
            mountpoint,
            template,
            stopping: Mutex::new(false),
            wake: Condvar::new(),
        }))
    }

    /// Bind accounts until [`Homes::stop`]; on a thread of its own, while
    /// the mount serves (binding looks into the mount).
    pub fn run(&self) {
        // Accounts tried since the last recheck, whatever came of it: a
        // refusal is said once per recheck, not every round.
        let mut tried: HashSet<String> = HashSet::new();
        let mut rechecked = Instant::now();
        let mut stopping = lock(&self.stopping);
        while !*stopping {
            if rechecked.elapsed() >= RECHECK {
                tried.clear();
                rechecked = Instant::now();
            }
            if let Err(e) = self.round(&mut tried) {
                tracing::warn!("binding homes: {e}");
            }
            stopping = self
                .wake
                .wait_timeout(stopping, ROUND)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// One pass over the accounts of the mount not bound yet.
    fn round(&self, tried: &mut HashSet<String>) -> Result<()> {
        let root =
            nofollow::open_folder("the mount", &self.mountpoint, Missing::Refuse, SEARCH_FLAGS)?;
        for name in account_names(&root, &self.mountpoint)? {
            if !tried.contains(&name) {
                self.bind_one(&root, &name);
                tried.insert(name);
            }
        }
        Ok(())
    }

    fn bind_one(&self, root: &OwnedFd, name: &str) {
        let user = match accounts::lookup(name) {
            Ok(Some(user)) => user,
            Ok(None) => {
                tracing::debug!("account {name}: no user of that name, no home to bind into");
                return;
            }
            Err(e) => {
                tracing::warn!("account {name}: {e}");
                return;
            }
        };
        let owner = Owner {
            uid: user.uid,
            gid: user.gid,
        };
        let bound = Source::in_mount(root.as_fd(), name)
            .and_then(|source| bind::bind(&source, &self.template, name, owner));
        match bound {
            Ok(Bound::Made(_)) => {
                tracing::info!("account {name}: bound at {}", self.target(name))
            }
            Ok(Bound::Already(_)) => {}
            Ok(Bound::NoHome) => tracing::debug!("account {name}: no home, nothing bound"),
            Err(e) => tracing::warn!("account {name}: not bound: {e}"),
        }
    }

    fn target(&self, name: &str) -> String {
        self.template
            .target(name)
            .map_or_else(|_| name.to_string(), |p| p.display().to_string())
    }

    /// Bind nothing more (waiting for a round in progress), then take
    /// every bind and the mount away.
    pub fn stop(&self, lazy: bool) -> Result<bind::Cleared> {
        *lock(&self.stopping) = true;
        self.wake.notify_all();
        bind::clear(&self.mountpoint, &self.template, lazy)
    }
}

/// The names at the mount's root: the accounts, with `--per-account`.
fn account_names(root: &OwnedFd, mountpoint: &Path) -> Result<Vec<String>> {
    let dir = rustix::fs::openat(
        root,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io(mountpoint, e.into()))?;
    let mut names = Vec::new();
    let dir = rustix::fs::Dir::read_from(dir).map_err(|e| Error::io(mountpoint, e.into()))?;
    for entry in dir {
        let entry = entry.map_err(|e| Error::io(mountpoint, e.into()))?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        // An account whose name cannot be a file name shows escaped and
        // has no user of that spelling: nothing to bind.
        if let Ok(name) = std::str::from_utf8(name) {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
