//! Repository locks: backups hold a shared lock, prune an exclusive one.
//!
//! A lock is a small file in `locks/`. To take one, a process writes its
//! lock file first and then lists the others; if it finds a conflicting live
//! lock it removes its own and waits. Because every writer writes before it
//! looks, two conflicting processes can never both proceed: the later of the
//! two looks after the earlier has written. (Both may back off at once; the
//! random wait makes that rare.)
//!
//! Holders rewrite their lock every `REFRESH` so that a lock from another
//! host counts as stale only after `STALE_AFTER` without a refresh. A lock
//! of this host whose process is gone is stale at once. Stale locks are
//! removed with a message; `snapfs unlock` removes them on request.
//!
//! Readers (ls, restore, mount, check) take no lock.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::backend::{Backend, FileType};
use crate::repository::encoding;

pub const LOCK_MAGIC: &[u8; 8] = b"SNAPFSLK";
/// How often a holder rewrites its lock.
pub const REFRESH: Duration = Duration::from_secs(5 * 60);
/// A lock of another host not refreshed for this long is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockKind {
    Shared,
    Exclusive,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    pub kind: LockKind,
    pub hostname: String,
    pub pid: u32,
    /// Unix seconds of the last refresh.
    pub refreshed: i64,
    /// What holds it, for messages ("backup of alice", "prune").
    pub purpose: String,
}

impl LockRecord {
    pub fn encode(&self) -> Vec<u8> {
        encoding::encode(LOCK_MAGIC, self)
    }

    pub fn decode(name: &str, bytes: &[u8]) -> Result<LockRecord> {
        encoding::decode(LOCK_MAGIC, &format!("lock {name}"), bytes)
    }

    /// Why this lock no longer protects anything, if it does not.
    pub fn stale_reason(&self, this_host: &str, now: i64) -> Option<String> {
        if self.hostname == this_host && !process_alive(self.pid) {
            return Some(format!("process {} on {} is gone", self.pid, self.hostname));
        }
        let age = now.saturating_sub(self.refreshed);
        (age > STALE_AFTER.as_secs() as i64).then(|| {
            format!(
                "not refreshed for {} minutes (holder {} on {})",
                age / 60,
                self.pid,
                self.hostname
            )
        })
    }

    fn describe(&self) -> String {
        format!("{} (pid {} on {})", self.purpose, self.pid, self.hostname)
    }
}

fn process_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A held lock; released (its file removed) on drop.
pub struct Lock {
    backend: Arc<dyn Backend>,
    name: String,
    stop: Arc<AtomicBool>,
    refresher: Option<std::thread::JoinHandle<()>>,
    refresh_error: Arc<Mutex<Option<String>>>,
}

impl Lock {
    /// Take a lock, waiting up to `wait` for conflicting holders to finish.
    pub fn acquire(
        backend: Arc<dyn Backend>,
        kind: LockKind,
        purpose: &str,
        wait: Duration,
    ) -> Result<Lock> {
        let hostname = crate::metadata::hostname();
        let record = LockRecord {
            kind,
            hostname: hostname.clone(),
            pid: std::process::id(),
            refreshed: unix_now(),
            purpose: purpose.to_string(),
        };
        let name = Id::hash(format!("{record:?} {:?}", SystemTime::now()).as_bytes()).to_hex();
        let deadline = Instant::now() + wait;
        let mut told = false;
        loop {
            let record = LockRecord {
                refreshed: unix_now(),
                ..record.clone()
            };
            // Only if absent: the name is this process's own (a hash of
            // its record and the time), so another file under it would be
            // a collision to refuse, never a lock to overwrite.
            if !backend.write_new(FileType::Lock, &name, &record.encode())? {
                return Err(Error::Locked(format!(
                    "lock {name} exists already in {}: a name collision; try again",
                    backend.location()
                )));
            }
            let conflicts = conflicting_locks(&*backend, &name, kind, &hostname)?;
            if conflicts.is_empty() {
                return Ok(Lock::hold(backend, name, record));
            }
            backend.remove(FileType::Lock, &name)?;
            let holders: Vec<String> = conflicts.iter().map(|r| r.describe()).collect();
            if Instant::now() >= deadline {
                return Err(Error::Locked(format!(
                    "repository {} is locked by {}",
                    backend.location(),
                    holders.join(", ")
                )));
            }
            if !told {
                tracing::warn!("waiting for {} to finish", holders.join(", "));
                told = true;
            }
            std::thread::sleep(jitter(
                Duration::from_millis(200),
                Duration::from_millis(800),
            ));
        }
    }

    fn hold(backend: Arc<dyn Backend>, name: String, record: LockRecord) -> Lock {
        let stop = Arc::new(AtomicBool::new(false));
        let refresh_error = Arc::new(Mutex::new(None));
        let refresher = {
            let (backend, name, stop, refresh_error) = (
                backend.clone(),
                name.clone(),
                stop.clone(),
                refresh_error.clone(),
            );
            std::thread::spawn(move || {
                let mut last = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                    if last.elapsed() < REFRESH {
                        continue;
                    }
                    last = Instant::now();
                    let fresh = LockRecord {
                        refreshed: unix_now(),
                        ..record.clone()
                    };
                    if let Err(e) = backend.write(FileType::Lock, &name, &fresh.encode()) {
                        *refresh_error.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some(e.to_string());
                    }
                }
            })
        };
        Lock {
            backend,
            name,
            stop,
            refresher: Some(refresher),
            refresh_error,
        }
    }

    /// The lock file's name in `locks/`: `copy` looks for it in the other
    /// repository to tell whether both are one.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// An error from refreshing the lock, if any: the holder may have lost it.
    pub fn refresh_error(&self) -> Option<String> {
        self.refresh_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        if let Err(e) = self.backend.remove(FileType::Lock, &self.name) {
            tracing::warn!("could not remove lock {}: {e}", self.name);
        }
    }
}

fn jitter(min: Duration, max: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos()) as u64;
    let span = (max - min).as_millis() as u64;
    min + Duration::from_millis(nanos % span.max(1))
}

/// Live locks that conflict with taking `kind`; stale ones are removed.
fn conflicting_locks(
    backend: &dyn Backend,
    own: &str,
    kind: LockKind,
    hostname: &str,
) -> Result<Vec<LockRecord>> {
    let mut out = Vec::new();
    for (other, file) in list(backend)? {
        if other == own {
            continue;
        }
        let record = match file {
            LockFile::Held(record) => record,
            // A newer snapfs's lock: it may mean anything, so respect it
            // as exclusive.
            LockFile::Newer(why) => {
                out.push(LockRecord {
                    kind: LockKind::Exclusive,
                    hostname: "?".into(),
                    pid: 0,
                    refreshed: 0,
                    purpose: format!(
                        "lock {other} of a newer snapfs ({why}; if none runs, `snapfs unlock --all` removes it)"
                    ),
                });
                continue;
            }
            // Locks are written whole (write, fsync, rename), so a damaged
            // one was never any process's lock: waiting for it would hold
            // a night's backups for the whole --lock-wait for nothing.
            LockFile::Damaged(why) => {
                tracing::warn!(
                    "ignoring damaged lock file {other} ({why}); `snapfs unlock` removes it"
                );
                continue;
            }
        };
        if let Some(reason) = record.stale_reason(hostname, unix_now()) {
            eprintln!("snapfs: removing stale lock {other}: {reason}");
            backend.remove(FileType::Lock, &other)?;
            continue;
        }
        if kind == LockKind::Exclusive || record.kind == LockKind::Exclusive {
            out.push(record);
        }
    }
    Ok(out)
}

/// What a lock file holds.
pub enum LockFile {
    Held(LockRecord),
    /// A format version this snapfs does not know: a newer snapfs's lock.
    Newer(String),
    /// Unreadable or not a lock record. A lock being written is never
    /// visible half-done, so this was never a live lock.
    Damaged(String),
}

/// Every lock file and what it holds.
pub fn list(backend: &dyn Backend) -> Result<Vec<(String, LockFile)>> {
    let mut out = Vec::new();
    for (name, _) in backend.list(FileType::Lock)? {
        let file = match backend.read(FileType::Lock, &name) {
            Ok(bytes) => match LockRecord::decode(&name, &bytes) {
                Ok(record) => LockFile::Held(record),
                Err(Error::Unsupported(why)) => LockFile::Newer(why),
                Err(e) => LockFile::Damaged(e.reason()),
            },
            // Released while we listed.
            Err(Error::NotFound(_)) => continue,
            Err(e) => LockFile::Damaged(e.to_string()),
        };
        out.push((name, file));
    }
    Ok(out)
}

/// `snapfs unlock`: remove stale locks (all locks with `all`). Returns the
/// descriptions of the removed locks.
pub fn unlock(backend: &dyn Backend, all: bool) -> Result<Vec<String>> {
    let hostname = crate::metadata::hostname();
    let mut removed = Vec::new();
    for (name, file) in list(backend)? {
        let reason = match &file {
            LockFile::Damaged(why) => Some(format!("damaged lock file ({why})")),
            LockFile::Newer(why) if all => Some(format!("lock of a newer snapfs ({why}) (forced)")),
            LockFile::Newer(_) => None,
            LockFile::Held(r) if all => Some(format!("{} (forced)", r.describe())),
            LockFile::Held(r) => r.stale_reason(&hostname, unix_now()),
        };
        if let Some(reason) = reason {
            backend.remove(FileType::Lock, &name)?;
            removed.push(format!("{name}: {reason}"));
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::backend::LocalBackend;

    fn backend() -> (tempfile::TempDir, Arc<dyn Backend>) {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path());
        b.create().unwrap();
        (dir, Arc::new(b))
    }

    #[test]
    fn shared_locks_coexist_exclusive_waits_then_times_out() {
        let (_d, b) = backend();
        let one = Lock::acquire(b.clone(), LockKind::Shared, "backup a", Duration::ZERO).unwrap();
        let two = Lock::acquire(b.clone(), LockKind::Shared, "backup b", Duration::ZERO).unwrap();
        let err = Lock::acquire(
            b.clone(),
            LockKind::Exclusive,
            "prune",
            Duration::from_millis(300),
        )
        .err()
        .unwrap();
        assert!(matches!(err, Error::Locked(_)), "{err}");
        assert!(err.to_string().contains("backup a") || err.to_string().contains("backup b"));
        drop(one);
        drop(two);
        let ex = Lock::acquire(b.clone(), LockKind::Exclusive, "prune", Duration::ZERO).unwrap();
        assert!(Lock::acquire(b.clone(), LockKind::Shared, "backup", Duration::ZERO).is_err());
        drop(ex);
        assert!(
            b.list(FileType::Lock).unwrap().is_empty(),
            "released locks are removed"
        );
    }

    #[test]
    fn stale_locks_are_cleared() {
        let (_d, b) = backend();
        let host = crate::metadata::hostname();
        // A dead process on this host.
        let dead = LockRecord {
            kind: LockKind::Exclusive,
            hostname: host,
            pid: 999_999_999,
            refreshed: unix_now(),
            purpose: "prune".into(),
        };
        b.write(FileType::Lock, "dead", &dead.encode()).unwrap();
        // Another host, not refreshed for an hour.
        let old = LockRecord {
            hostname: "elsewhere".into(),
            pid: 1,
            refreshed: unix_now() - 3600,
            ..dead.clone()
        };
        b.write(FileType::Lock, "old", &old.encode()).unwrap();
        // Another host, fresh: not stale.
        let fresh = LockRecord {
            hostname: "elsewhere".into(),
            pid: 1,
            kind: LockKind::Shared,
            ..dead.clone()
        };
        b.write(FileType::Lock, "fresh", &fresh.encode()).unwrap();
        let shared = Lock::acquire(b.clone(), LockKind::Shared, "backup", Duration::ZERO).unwrap();
        let names: Vec<String> = b
            .list(FileType::Lock)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert!(!names.contains(&"dead".to_string()) && !names.contains(&"old".to_string()));
        assert!(names.contains(&"fresh".to_string()));
        drop(shared);
        assert_eq!(unlock(&*b, false).unwrap().len(), 0);
        assert_eq!(unlock(&*b, true).unwrap().len(), 1);
    }

    #[test]
    fn a_newer_snapfss_lock_blocks_until_unlocked() {
        let (_d, b) = backend();
        b.write(FileType::Lock, "future", b"SNAPFSLK\x09\x00\x00\x00newer")
            .unwrap();
        let err = Lock::acquire(b.clone(), LockKind::Shared, "backup", Duration::ZERO)
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("lock future of a newer snapfs"),
            "{err}"
        );
        assert!(err.to_string().contains("unlock --all"), "{err}");
        assert_eq!(unlock(&*b, false).unwrap().len(), 0);
        assert_eq!(unlock(&*b, true).unwrap().len(), 1);
        Lock::acquire(b.clone(), LockKind::Shared, "backup", Duration::ZERO).unwrap();
    }

    #[test]
    fn a_damaged_lock_holds_nobody_and_unlock_removes_it() {
        let (_d, b) = backend();
        for (name, bytes) in [
            ("garbage", &b"\x00\x00 not a lock at all"[..]),
            (
                "truncated",
                &LockRecord {
                    kind: LockKind::Exclusive,
                    hostname: "h".into(),
                    pid: 1,
                    refreshed: unix_now(),
                    purpose: "prune".into(),
                }
                .encode()[..14],
            ),
        ] {
            b.write(FileType::Lock, name, bytes).unwrap();
        }
        let started = Instant::now();
        let ex = Lock::acquire(
            b.clone(),
            LockKind::Exclusive,
            "prune",
            Duration::from_secs(60),
        )
        .unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(ex);
        let removed = unlock(&*b, false).unwrap();
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert!(removed.iter().all(|r| r.contains("damaged lock file")));
    }
}
