//! `snapfs backup`: walk source paths, store new content, write a snapshot.
//!
//! Data flow: the walker (the calling thread) reads directories and files in
//! name order through [`crate::source::fs`] (descriptors only: it runs as
//! root over trees that their owners change meanwhile) and cuts files into
//! chunks; each chunk goes through a bounded queue to worker threads that
//! hash, compress and pack it (`pipeline`); the walker keeps one result
//! slot per chunk and, at the end of each directory, collects the chunk ids
//! in order and stores the directory's tree. Memory is bounded by the queue
//! (a few chunks per worker) plus the trees on the walk's path.
//!
//! The walk is a loop over an explicit stack of open directories, not a
//! recursion: a tree of any depth costs one descriptor and one frame per
//! level, never the thread's stack.
//!
//! Files whose size, mtime, ctime and inode match the parent snapshot's node
//! are not read at all: their chunk list is copied from the parent. Holes of
//! sparse files are not read either (`SEEK_DATA`/`SEEK_HOLE`); they are
//! stored as zero chunks.

mod account;
mod pipeline;
mod walk;

use crossbeam_channel::bounded;
use globset::{Glob, GlobSet, GlobSetBuilder};
use std::collections::HashSet;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Instant;

use crate::error::{Error, IoContext, Result};
use crate::id::Id;
use crate::progress::Progress;
use crate::repository::lock::{Lock, LockKind};
use crate::repository::Repository;
use crate::snapshot::{self, Node, Snapshot, SnapshotEntry, Timestamp};
use crate::source::fs::{self as source, OpenError, Opened};
pub use account::AccountSources;
use pipeline::ChunkJob;
use walk::Walker;

pub struct BackupOptions {
    pub paths: Vec<PathBuf>,
    pub account: String,
    pub hostname: String,
    /// When the snapshot is dated: (UTC time, offset of the local clock).
    pub time: Option<(Timestamp, i32)>,
    pub excludes: Vec<String>,
    pub one_file_system: bool,
    pub tags: Vec<String>,
    pub progress: bool,
    /// How long to wait for a running prune before giving up.
    pub lock_wait: std::time::Duration,
}

pub struct BackupOutcome {
    pub id: Id,
    pub snapshot: Snapshot,
    /// The backed-up folder's own metadata (owner, mode, times, xattrs),
    /// from the `fstat` of its descriptor, when the backup has one source
    /// and it is a folder (whose contents are the snapshot's root): name
    /// empty, kind `Dir`, no subtree. `None` for other backups, whose root
    /// is a synthetic folder.
    pub root: Option<Node>,
    /// One line per entry that could not be read; non-empty means partial.
    pub warnings: Vec<String>,
}

/// The source paths, opened. Open them before creating anything: a typo
/// must not leave a new repository behind.
pub struct Sources {
    list: Vec<Source>,
}

/// One source: where it is, what it is called in the snapshot root, and
/// what was opened there.
struct Source {
    path: PathBuf,
    name: Vec<u8>,
    entry: Opened,
}

impl Sources {
    /// Resolve and open each path (its last component is not followed).
    /// A path that does not exist or cannot be read is an error naming it.
    pub fn open(paths: &[PathBuf]) -> Result<Sources> {
        if paths.is_empty() {
            return Err(Error::Invalid(
                "nothing to back up: give at least one path".into(),
            ));
        }
        let mut list = Vec::new();
        let mut names = HashSet::new();
        for path in paths {
            let abs = std::path::absolute(path).at(path)?;
            let name = abs
                .file_name()
                .map_or(b"root".to_vec(), |n| n.as_bytes().to_vec());
            if paths.len() > 1 && !names.insert(name.clone()) {
                return Err(Error::Invalid(format!(
                    "two paths are both called {} in the snapshot root; back them up separately",
                    String::from_utf8_lossy(&name)
                )));
            }
            let entry = source::open_path(&abs).map_err(|e| match e {
                OpenError::Io { error, .. } if error.kind() == io::ErrorKind::NotFound => {
                    Error::NotFound(format!("backup source {} does not exist", abs.display()))
                }
                OpenError::Io { error, .. } => Error::io(&abs, error),
                OpenError::Refused(why) => Error::Invalid(why),
                OpenError::Changed => Error::Invalid(format!(
                    "backup source {} changed while it was opened",
                    abs.display()
                )),
            })?;
            list.push(Source {
                path: abs,
                name,
                entry,
            });
        }
        // Trees are sorted by name; so are the sources that become the root's
        // entries (and the recorded paths, so the parent is found in any order).
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Sources { list })
    }
}

pub fn run(repo: &Repository, opts: &BackupOptions) -> Result<BackupOutcome> {
    run_sources(repo, opts, Sources::open(&opts.paths)?)
}

/// [`run`] with the sources already opened (`opts.paths` is not read).
pub fn run_sources(
    repo: &Repository,
    opts: &BackupOptions,
    sources: Sources,
) -> Result<BackupOutcome> {
    // The shared lock keeps prune out until the snapshot is written. The
    // index is read again under the lock: one loaded before it may list
    // blobs that a prune deleted meanwhile, and deduplicating against those
    // would produce a snapshot with holes.
    let lock = repo.lock(
        LockKind::Shared,
        &format!("backup of {}", opts.account),
        opts.lock_wait,
    )?;
    repo.reload_index()?;
    store(repo, opts, Layout::Plain(sources), &lock)
}

/// A hosting account's snapshot (`snapfs run`), under a lock the caller
/// holds and with the index it reloaded under that lock: a run of many
/// accounts takes both once.
pub fn run_account(
    repo: &Repository,
    opts: &BackupOptions,
    sources: AccountSources,
    lock: &Lock,
) -> Result<BackupOutcome> {
    store(repo, opts, Layout::Account(sources), lock)
}

/// What becomes the snapshot's root.
enum Layout {
    /// `snapfs backup PATH...`: one folder's contents, or each path under
    /// its base name.
    Plain(Sources),
    /// `snapfs run`: `files/`, `mails/`, `postgresql/`, `mysql/`.
    Account(AccountSources),
}

impl Layout {
    /// The recorded source paths, by which the parent is found.
    fn paths(&self) -> Vec<Vec<u8>> {
        match self {
            Layout::Plain(sources) => sources
                .list
                .iter()
                .map(|s| s.path.as_os_str().as_bytes().to_vec())
                .collect(),
            Layout::Account(sources) => sources.paths(),
        }
    }
}

/// Walk, store and save the snapshot; `lock` is held by the caller.
fn store(
    repo: &Repository,
    opts: &BackupOptions,
    layout: Layout,
    lock: &Lock,
) -> Result<BackupOutcome> {
    let started = Instant::now();
    source::raise_fd_limit();
    let (time, utc_offset) = opts.time.unwrap_or_else(now);
    let paths = layout.paths();
    let is_account = matches!(layout, Layout::Account(_));
    let parent = find_parent(repo, &opts.account, &paths, is_account)?;
    let parent_root = parent
        .as_ref()
        .and_then(|p| snapshot::load_tree(repo, &p.snapshot.tree).ok());

    let excludes = build_excludes(&opts.excludes)?;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let packer = repo.packer();
    let (jobs_tx, jobs_rx) = bounded::<ChunkJob>(workers * 2);
    let progress = Progress::new(opts.progress);

    let walked = std::thread::scope(|scope| {
        for _ in 0..workers {
            let jobs = jobs_rx.clone();
            let packer = &packer;
            scope.spawn(move || pipeline::worker(jobs, packer));
        }
        drop(jobs_rx);
        let mut walker = Walker::new(
            repo,
            &packer,
            jobs_tx,
            excludes,
            opts.one_file_system,
            &progress,
        );
        let root = match layout {
            Layout::Plain(sources) => walker
                .backup_root(sources.list, parent_root)
                .map(|(tree, root)| (tree, root, Vec::new())),
            Layout::Account(sources) => {
                walker.backup_account(&opts.account, sources, parent_root, time)
            }
        };
        let (summary, warnings) = walker.finish();
        root.map(|root| (root, summary, warnings))
    });
    progress.finish();
    let ((tree, root, statuses), mut summary, warnings) = walked?;

    let stats = packer.flush()?;
    summary.bytes_added = stats.bytes_added;
    summary.bytes_stored = stats.bytes_stored;
    summary.errors = warnings.len() as u64;
    summary.duration_ms = started.elapsed().as_millis() as u64;
    let snapshot = Snapshot {
        time,
        utc_offset,
        hostname: opts.hostname.clone(),
        account: opts.account.clone(),
        paths,
        tags: opts.tags.clone(),
        tree,
        parent: parent.map(|p| p.id),
        summary,
        root: root.clone(),
        sources: statuses,
        version: snapshot::SNAPSHOT_VERSION,
    };
    if let Some(e) = lock.refresh_error() {
        return Err(Error::Locked(format!(
            "lost the repository lock while backing up: {e}"
        )));
    }
    let id = snapshot::save(repo, &snapshot)?;
    Ok(BackupOutcome {
        id,
        snapshot,
        root,
        warnings,
    })
}

pub(super) fn now() -> (Timestamp, i32) {
    let local = chrono::Local::now();
    let utc = local.to_utc();
    (
        Timestamp {
            secs: utc.timestamp(),
            nanos: utc.timestamp_subsec_nanos(),
        },
        local.offset().local_minus_utc(),
    )
}

/// The newest snapshot of the same account and source paths, and of the
/// same layout (a run's root holds `files/`, a plain backup's the home's
/// own entries: one is no parent for the other).
fn find_parent(
    repo: &Repository,
    account: &str,
    paths: &[Vec<u8>],
    is_account: bool,
) -> Result<Option<SnapshotEntry>> {
    let snapshots = snapshot::list_warn(repo, Some(account))?;
    Ok(snapshots.into_iter().rev().find(|e| {
        e.snapshot.account == account
            && e.snapshot.paths == paths
            && e.snapshot.sources.is_empty() != is_account
    }))
}

fn build_excludes(patterns: &[String]) -> Result<GlobSet> {
    let mut builder = GlobSetBuilder::new();
    for p in patterns {
        let glob = Glob::new(p)
            .map_err(|e| Error::Invalid(format!("bad --exclude pattern {p:?}: {e}")))?;
        builder.add(glob);
    }
    builder
        .build()
        .map_err(|e| Error::Invalid(format!("bad --exclude patterns: {e}")))
}

#[cfg(test)]
mod tests;
