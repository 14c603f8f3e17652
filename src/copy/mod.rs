//! `snapfs copy`: the snapshots of one repository that another lacks, with
//! only the blobs it lacks: the nightly trip of a host's local repository
//! to the off-site one.
//!
//! Snapshots go oldest first, one at a time, in the write order every
//! writer keeps (docs/FORMAT.md, invariants 4 and 5): walk the snapshot's
//! trees in the source, read each blob the destination lacks (decompressed
//! and verified against its id by `load_blob`), hand it to the
//! destination's packer, flush (packs, then the index file that lists
//! them), and only then write the snapshot record, only if absent. A copy
//! killed at any point leaves at worst packs that no snapshot references
//! yet, as a killed backup does; a rerun sends what is still missing.
//!
//! Blobs go through the destination's packer, not pack by pack: the
//! destination deduplicates them against everything it holds (what its own
//! backups stored, what an earlier copy brought), recompresses them at its
//! own level and fills packs of its own size. That is why both must cut
//! chunks alike (checked first): a chunk id means the same content in
//! both, and the copied history keeps deduplicating with the destination's
//! next backups.
//!
//! Locks: the destination's shared lock, as a backup takes it (a prune of
//! the destination waits; the index is read again under the lock). The
//! source is only read and takes none, like `restore`: a prune there moves
//! blobs, which `load_blob` finds again.

use crossbeam_channel::{bounded, Receiver, Sender};
use serde::Serialize;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::chunker::ChunkerParams;
use crate::display::human_size;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::progress::Progress;
use crate::repository::backend::FileType;
use crate::repository::lock::{Lock, LockKind};
use crate::repository::{Kind, Packer, Repository};
use crate::snapshot::{self, SnapshotEntry, Tree};

pub struct CopyOptions {
    /// Only these accounts' snapshots; empty: every account's.
    pub accounts: Vec<String>,
    /// How long to wait for a prune of the destination before giving up.
    pub lock_wait: Duration,
}

/// What a copy did, for people and for `--json`.
#[derive(Debug, Default, Serialize)]
pub struct CopySummary {
    pub from: String,
    pub to: String,
    /// Snapshots written to the destination by this run.
    pub snapshots_copied: u64,
    /// Snapshots of the source the destination had already.
    pub snapshots_skipped: u64,
    /// Snapshots not copied because the source's copy of them, or of a
    /// blob they need, is damaged (exit code 4); the others were copied.
    pub snapshots_failed: Vec<FailedSnapshot>,
    /// Blobs (chunks and trees) stored in the destination.
    pub blobs_copied: u64,
    /// Blobs the copied snapshots need that the destination had already.
    pub blobs_skipped: u64,
    /// Uncompressed bytes of the blobs copied.
    pub bytes_copied: u64,
    /// The same, as stored in the destination (compressed).
    pub bytes_stored: u64,
    pub packs_written: u64,
    pub duration_ms: u64,
    pub copied: Vec<CopiedSnapshot>,
}

#[derive(Debug, Serialize)]
pub struct CopiedSnapshot {
    pub id: String,
    pub account: String,
    pub time: String,
}

#[derive(Debug, Serialize)]
pub struct FailedSnapshot {
    /// The snapshot's id, or its file's name when the record is unreadable.
    pub snapshot: String,
    pub error: String,
}

impl CopySummary {
    pub fn is_ok(&self) -> bool {
        self.snapshots_failed.is_empty()
    }
}

/// Why a snapshot could not be copied. Damage in the source costs only the
/// snapshots that need the damaged object: a nightly copy that stopped at
/// the first damaged snapshot would never send another. Anything else (the
/// destination failing, a server down) stops the copy: the next snapshot
/// would meet it too.
enum Failure {
    Damaged(Error),
    Fatal(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Fatal(e)
    }
}

/// An error reading the source: damage is the snapshot's, the rest fatal.
fn source(e: Error) -> Failure {
    match e {
        Error::Corrupt { .. } => Failure::Damaged(e),
        other => Failure::Fatal(other),
    }
}

/// Copy the snapshots of `from` that `to` lacks. `to` may be opened
/// without its index: it is read under the lock.
pub fn copy(
    from: &Repository,
    to: &Repository,
    opts: &CopyOptions,
    progress: &Progress,
) -> Result<CopySummary> {
    let started = Instant::now();
    same_chunker(from, to)?;
    let lock = to.lock(
        LockKind::Shared,
        &format!("copy from {}", from.location()),
        opts.lock_wait,
    )?;
    if same_repository(from, to, &lock)? {
        return Err(Error::Invalid(format!(
            "{} and {} are the same repository: nothing to copy",
            from.location(),
            to.location()
        )));
    }
    // Under the lock, as a backup does: an index read before it may list
    // blobs that a prune deleted meanwhile, and skipping those would write
    // snapshots with holes.
    to.reload_index()?;

    let mut summary = CopySummary {
        from: from.location(),
        to: to.location(),
        ..CopySummary::default()
    };
    let (entries, damaged) = source_snapshots(from, &opts.accounts)?;
    let present = present_snapshots(to, &opts.accounts)?;
    for (name, e) in damaged {
        // A damaged file in the source whose record the destination holds
        // was copied while it was whole: nothing is lost.
        if snapshot::id_of_file(&name).is_some_and(|id| present.contains(&id)) {
            summary.snapshots_skipped += 1;
            continue;
        }
        progress.println(&format!("snapfs: warning: not copied: {e}"));
        summary.snapshots_failed.push(FailedSnapshot {
            snapshot: name,
            error: e.to_string(),
        });
    }
    let (missing, there): (Vec<SnapshotEntry>, Vec<SnapshotEntry>) =
        entries.into_iter().partition(|e| !present.contains(&e.id));
    summary.snapshots_skipped += there.len() as u64;
    progress.set_length(missing.len() as u64);

    let packer = to.packer();
    let mut copier = Copier {
        from,
        to,
        packer: &packer,
        done_trees: HashSet::new(),
        done_blobs: HashSet::new(),
        blobs_skipped: 0,
        walked: Walked::default(),
        label: String::new(),
        progress,
    };
    for entry in &missing {
        match copier.snapshot(entry) {
            Ok(record) => {
                // Durable and indexed before the record that needs them.
                packer.flush()?;
                if let Some(e) = lock.refresh_error() {
                    return Err(Error::Locked(format!(
                        "lost the lock of {} while copying: {e}",
                        to.location()
                    )));
                }
                snapshot::save_encoded(to, &entry.snapshot.account, &record)?;
                copier.commit();
                summary.snapshots_copied += 1;
                summary.copied.push(CopiedSnapshot {
                    id: entry.id.to_hex(),
                    account: entry.snapshot.account.clone(),
                    time: entry.snapshot.taken_at().to_rfc3339(),
                });
            }
            Err(Failure::Damaged(e)) => {
                copier.forget();
                progress.println(&format!(
                    "snapfs: warning: snapshot {} of {} not copied: {e}",
                    entry.id.short(),
                    entry.snapshot.account
                ));
                summary.snapshots_failed.push(FailedSnapshot {
                    snapshot: entry.id.to_hex(),
                    error: e.to_string(),
                });
            }
            Err(Failure::Fatal(e)) => return Err(e),
        }
        progress.step();
    }
    // Blobs of a damaged last snapshot may still be in the open pack:
    // stored whole, they save the next run sending them again.
    let stats = packer.flush()?;
    summary.blobs_copied = stats.blobs_added;
    summary.blobs_skipped = copier.blobs_skipped;
    summary.bytes_copied = stats.bytes_added;
    summary.bytes_stored = stats.bytes_stored;
    summary.packs_written = stats.packs_written;
    summary.duration_ms = started.elapsed().as_millis() as u64;
    Ok(summary)
}

/// Refuse repositories that cut chunks differently: the same file would be
/// different chunks in each, and what is copied would never deduplicate
/// with what the destination's own backups store.
fn same_chunker(from: &Repository, to: &Repository) -> Result<()> {
    let (a, b) = (from.config().chunker, to.config().chunker);
    if a == b {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "{} cuts chunks of {} (min/avg/max) and {} of {}: a chunk id would not name the \
         same content in both; copy into a repository made with \
         `snapfs init --chunk-sizes {}`",
        from.location(),
        chunk_sizes(&a),
        to.location(),
        chunk_sizes(&b),
        chunk_sizes(&a)
    )))
}

/// `512KiB/1MiB/8MiB`, as `init --chunk-sizes` takes it.
pub fn chunk_sizes(p: &ChunkerParams) -> String {
    let one = |n: u32| match n {
        n if n % (1 << 20) == 0 => format!("{}MiB", n >> 20),
        n if n % (1 << 10) == 0 => format!("{}KiB", n >> 10),
        n => n.to_string(),
    };
    format!(
        "{}/{}/{}",
        one(p.min_size),
        one(p.avg_size),
        one(p.max_size)
    )
}

/// Whether `from` is `to` itself, reached by the same or another name (a
/// symlink, a bind mount, another spelling of a URL). Two stores with the
/// same config id are one repository only if the lock just written to
/// `to` shows up in `from`; a copy of a repository's files made with
/// rsync or rclone has the same id and is a repository of its own, which
/// copy serves like any other.
fn same_repository(from: &Repository, to: &Repository, lock: &Lock) -> Result<bool> {
    if from.config().id != to.config().id {
        return Ok(false);
    }
    Ok(from
        .list_files(FileType::Lock)?
        .iter()
        .any(|(name, _)| name == lock.name()))
}

/// The source's snapshots of the accounts asked for (all when none),
/// oldest first, and its damaged snapshot files.
fn source_snapshots(
    from: &Repository,
    accounts: &[String],
) -> Result<(Vec<SnapshotEntry>, Vec<snapshot::DamagedSnapshot>)> {
    if accounts.is_empty() {
        return snapshot::list(from, None);
    }
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    let mut seen = HashSet::new();
    for account in accounts {
        let (g, b) = snapshot::list(from, Some(account))?;
        // An account given twice, or layout 1's shared folder, lists a
        // snapshot once per account.
        good.extend(g.into_iter().filter(|e| seen.insert(e.id)));
        bad.extend(b.into_iter().filter(|(name, _)| seen_name(&mut seen, name)));
    }
    good.sort_by_key(|e| (e.snapshot.time, e.id));
    Ok((good, bad))
}

fn seen_name(seen: &mut HashSet<Id>, name: &str) -> bool {
    snapshot::id_of_file(name).is_none_or(|id| seen.insert(id))
}

fn present_snapshots(to: &Repository, accounts: &[String]) -> Result<HashSet<Id>> {
    if accounts.is_empty() {
        return Ok(snapshot::ids(to, None)?.into_iter().collect());
    }
    let mut present = HashSet::new();
    for account in accounts {
        present.extend(snapshot::ids(to, Some(account))?);
    }
    Ok(present)
}

/// Blob readers at once: the source may be a server a round trip away,
/// where one blob at a time would wait on latency, not on the two cores.
const MIN_WORKERS: usize = 4;

struct Copier<'a> {
    from: &'a Repository,
    to: &'a Repository,
    packer: &'a Packer<'a>,
    /// Trees of snapshots copied by this run: their whole subtree is in the
    /// destination, durable and indexed, so later snapshots skip them.
    ///
    /// Why not skip every tree the destination's index lists? Its blobs
    /// may not all be there: a killed backup can leave a tree in an indexed
    /// pack while a chunk of it was still in the open one, and prune keeps
    /// an unreferenced tree in a pack it does not repack while deleting
    /// its chunks' pack. Each tree is visited once per run instead.
    done_trees: HashSet<Id>,
    /// Data blobs of copied snapshots: stored, or found there, already.
    done_blobs: HashSet<Id>,
    blobs_skipped: u64,
    /// The snapshot being copied, and its name on the bar.
    walked: Walked,
    label: String,
    progress: &'a Progress,
}

/// The trees and blobs of the snapshot being copied; `done_*` once it is.
#[derive(Default)]
struct Walked {
    trees: HashSet<Id>,
    blobs: HashSet<Id>,
    skipped: u64,
}

impl Copier<'_> {
    /// Send the blobs of `entry` that the destination lacks to its packer;
    /// returns the record's bytes, to be written once they are durable.
    fn snapshot(&mut self, entry: &SnapshotEntry) -> Result<Vec<u8>, Failure> {
        self.label = format!(
            "{} {}",
            entry.snapshot.account,
            entry.snapshot.taken_at().format("%Y-%m-%d %H:%M")
        );
        self.progress.message(self.label.clone());
        self.walked = Walked::default();
        let record = snapshot::load_encoded(self.from, entry).map_err(source)?;
        let workers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .max(MIN_WORKERS);
        let (jobs, queue) = bounded::<Id>(workers * 4);
        let failed: Mutex<Option<Failure>> = Mutex::new(None);
        let stop = AtomicBool::new(false);
        let walk = std::thread::scope(|scope| {
            for _ in 0..workers {
                let (queue, failed, stop) = (queue.clone(), &failed, &stop);
                let (from, packer) = (self.from, self.packer);
                scope.spawn(move || copy_blobs(from, packer, queue, failed, stop));
            }
            drop(queue);
            let walk = self.walk(entry.snapshot.tree, &jobs, &stop);
            drop(jobs);
            walk
        });
        // A worker's failure first: the walk only stopped because of it.
        if let Some(failure) = failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
            return Err(failure);
        }
        walk?;
        Ok(record)
    }

    /// The snapshot just walked is durable in the destination: its trees
    /// and blobs need not be looked at again this run.
    fn commit(&mut self) {
        let walked = std::mem::take(&mut self.walked);
        self.blobs_skipped += walked.skipped;
        self.done_trees.extend(walked.trees);
        self.done_blobs.extend(walked.blobs);
    }

    /// The snapshot just walked was not copied: a blob it needs may be
    /// among those it could not read, so nothing of it counts as done.
    fn forget(&mut self) {
        self.walked = Walked::default();
    }

    /// Every tree below `root` (those of snapshots copied this run aside):
    /// data blobs the destination lacks go to the workers, trees it lacks
    /// to its packer from here, since the walk has just read them.
    fn walk(&mut self, root: Id, jobs: &Sender<Id>, stop: &AtomicBool) -> Result<(), Failure> {
        let mut stack = vec![root];
        while let Some(id) = stack.pop() {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            if self.done_trees.contains(&id) || !self.walked.trees.insert(id) {
                continue;
            }
            let raw = self.from.load_blob(&id).map_err(source)?;
            let tree = Tree::decode(&id, &raw).map_err(source)?;
            for node in &tree.nodes {
                // Whatever a node references is copied, whatever its kind
                // says: a reader of the copy must find all of it.
                stack.extend(node.subtree);
                for chunk in &node.content {
                    if self.done_blobs.contains(chunk) || !self.walked.blobs.insert(*chunk) {
                        continue;
                    }
                    if self.to.has_blob(chunk) {
                        self.walked.skipped += 1;
                    } else if jobs.send(*chunk).is_err() {
                        return Ok(()); // every worker gone: one failed
                    }
                }
            }
            if self.to.has_blob(&id) {
                self.walked.skipped += 1;
            } else {
                self.packer.add(Kind::Tree, &raw)?;
            }
            let stats = self.packer.stats();
            self.progress.message(format!(
                "{}: {} blobs, {} stored so far",
                self.label,
                stats.blobs_added,
                human_size(stats.bytes_stored)
            ));
        }
        Ok(())
    }
}

/// A worker: read each blob from the source (verified), store it through
/// the destination's packer. The first failure stops the others.
fn copy_blobs(
    from: &Repository,
    packer: &Packer,
    queue: Receiver<Id>,
    failed: &Mutex<Option<Failure>>,
    stop: &AtomicBool,
) {
    for id in queue {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let copied = from
            .load_blob(&id)
            .map_err(source)
            .and_then(|raw| Ok(packer.add(Kind::Data, &raw)?));
        if let Err(failure) = copied {
            stop.store(true, Ordering::Relaxed);
            failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(failure);
            return;
        }
    }
}

#[cfg(test)]
mod tests;
