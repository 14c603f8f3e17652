//! `snapfs prune`: delete data that no snapshot needs any more.
//!
//! Protocol (docs/FORMAT.md, "Deleting data"):
//! 1. Take the exclusive lock: no backup runs while prune decides what is
//!    garbage (backups hold a shared lock from before they read the index
//!    until their snapshot is written).
//! 2. Reload the index; add packs that no index lists (left by interrupted
//!    backups) from their headers.
//! 3. Mark every blob reachable from a snapshot, in a bitmap with one bit
//!    per index entry (5 M chunks: 625 KB).
//! 4. Plan: packs without a live blob are deleted; packs whose unused share
//!    exceeds `--max-unused` are repacked; the rest stay.
//! 5. Copy the live blobs of packs to repack into new packs (verified by
//!    their hash as they are read), flush them and their index.
//! 6. Write new index files listing every pack that stays, then delete the
//!    old index files, then delete the packs that go.
//!
//! Each step only adds files or removes files nothing refers to any more, so
//! SIGKILL at any point leaves a repository where every remaining snapshot
//! reads; what is left over (packs no index lists) the next prune removes.
//! A tree that cannot be read aborts the prune before anything is deleted:
//! what lies below it cannot be known to be garbage.

use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::backend::FileType;
use crate::repository::index::{IndexFile, IndexPack};
use crate::repository::lock::LockKind;
use crate::repository::pack::{self, BlobKind, PackBlob};
use crate::repository::Repository;
use crate::snapshot::{self, NodeKind};

/// Blobs per index file written by prune: big enough that millions of
/// chunks need few files, small enough to load one file in milliseconds.
const BLOBS_PER_INDEX_FILE: usize = 100_000;

pub struct PruneOptions {
    /// Repack a pack when more than this fraction of it is unused.
    pub max_unused: f64,
    pub dry_run: bool,
    pub lock_wait: Duration,
}

#[derive(Debug, Default, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub snapshots: usize,
    pub blobs_live: u64,
    pub blobs_unused: u64,
    /// Blobs that snapshots need but the repository does not have.
    pub blobs_missing: u64,
    pub packs_before: usize,
    pub packs_deleted: usize,
    pub packs_repacked: usize,
    pub bytes_before: u64,
    /// Bytes of live blobs written into new packs, as stored (compressed),
    /// like `bytes_freed`; for --dry-run: their stored size in the old packs.
    pub bytes_repacked: u64,
    /// What the repository's packs shrank by (for --dry-run: would shrink by).
    pub bytes_freed: u64,
    pub index_files_replaced: usize,
    pub temporary_files_removed: u64,
}

#[derive(Default)]
struct PackUse {
    size: u64,
    live_bytes: u64,
    live_blobs: u64,
    dead_blobs: u64,
}

impl PackUse {
    /// Bytes that repacking would free: the file minus its live blobs and
    /// the framing every pack needs (lead, footer, and at most
    /// `HEADER_BYTES_PER_BLOB` of header per blob, an overestimate). A pack
    /// of nothing but live blobs is therefore never "unused", even at
    /// `--max-unused 0%`.
    fn unused_bytes(&self) -> u64 {
        let framing = (pack::LEAD_LEN + pack::FOOTER_LEN) as u64
            + HEADER_BYTES_PER_BLOB * (self.live_blobs + self.dead_blobs);
        self.size.saturating_sub(self.live_bytes + framing)
    }
}

/// An upper bound of one blob's entry in a pack header: 32-byte id, two
/// enum bytes and three u32 varints of at most 5 bytes.
const HEADER_BYTES_PER_BLOB: u64 = 32 + 2 + 15;

pub fn run(repo: &Repository, opts: &PruneOptions) -> Result<PruneReport> {
    // A dry run only reads: a shared lock keeps a prune from changing the
    // repository under it without stopping backups.
    let kind = if opts.dry_run {
        LockKind::Shared
    } else {
        LockKind::Exclusive
    };
    let lock = repo.lock(kind, "prune", opts.lock_wait)?;
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        ..PruneReport::default()
    };
    repo.reload_index()?;
    let pack_sizes: HashMap<Id, u64> = repo
        .list_files(FileType::Pack)?
        .into_iter()
        .filter_map(|(name, size)| Some((Id::from_hex(&name).ok()?, size)))
        .collect();
    report.packs_before = pack_sizes.len();
    report.bytes_before = pack_sizes.values().sum();
    let unindexed = index_unindexed_packs(repo, &pack_sizes);

    let (live, snapshots) = mark_live(repo, &mut report)?;
    report.snapshots = snapshots;
    let usage = pack_usage(repo, &live, &pack_sizes, &mut report);

    let mut delete: HashSet<Id> = HashSet::new();
    let mut repack: HashSet<Id> = HashSet::new();
    for (pack, u) in &usage {
        let on_disk = pack_sizes.contains_key(pack);
        if u.live_blobs == 0 {
            delete.insert(*pack);
            report.bytes_freed += u.size;
        } else if on_disk && u.size > 0 && u.unused_bytes() as f64 / u.size as f64 > opts.max_unused
        {
            repack.insert(*pack);
            report.bytes_freed += u.unused_bytes();
            report.bytes_repacked += u.live_bytes;
        }
    }
    report.packs_deleted = delete.iter().filter(|p| pack_sizes.contains_key(p)).count();
    report.packs_repacked = repack.len();
    if opts.dry_run || (delete.is_empty() && repack.is_empty() && unindexed.is_empty()) {
        return Ok(report);
    }

    let (bytes_repacked, new_packs) = repack_live_blobs(repo, &live, &repack)?;
    report.bytes_repacked = bytes_repacked;
    // A repacked pack may come out byte-identical to the old one (all its
    // blobs live, same order), and so have the same id: never delete a pack
    // that was just written.
    let gone: HashSet<Id> = delete
        .union(&repack)
        .filter(|p| !new_packs.contains(p))
        .copied()
        .collect();
    // Deleting is only safe while we still hold the lock.
    if let Some(e) = lock.refresh_error() {
        return Err(Error::Locked(format!(
            "lost the prune lock before deleting anything: {e}"
        )));
    }
    report.index_files_replaced = rewrite_index(repo, &gone, &unindexed)?;
    for pack in &gone {
        repo.remove_pack(pack)?;
    }
    // Cleaning up is a courtesy: the prune itself is done.
    match repo.remove_temporary() {
        Ok(n) => report.temporary_files_removed = n,
        Err(e) => tracing::warn!("could not remove temporary files: {e}"),
    }
    let after: u64 = repo
        .list_files(FileType::Pack)?
        .iter()
        .map(|(_, s)| s)
        .sum();
    report.bytes_freed = report.bytes_before.saturating_sub(after);
    Ok(report)
}

/// Add packs that no index file lists to the in-memory index, so that their
/// blobs count as live where snapshots need them; returns their headers.
fn index_unindexed_packs(
    repo: &Repository,
    packs: &HashMap<Id, u64>,
) -> HashMap<Id, Vec<PackBlob>> {
    let mut found = HashMap::new();
    for pack in packs.keys() {
        if repo.index().contains_pack(pack) {
            continue;
        }
        match repo.read_pack_header(pack) {
            Ok(blobs) => {
                repo.index_mut().add_pack(*pack, &blobs);
                found.insert(*pack, blobs);
            }
            // Left alone: `check` reports it, and without a header nothing
            // in it can be found anyway.
            Err(e) => tracing::warn!("leaving unreadable pack {pack}: {e}"),
        }
    }
    repo.index_mut().sort();
    found
}

/// One bit per index position: set when a snapshot needs that blob.
struct LiveSet {
    bits: Vec<u64>,
}

impl LiveSet {
    fn new(len: usize) -> LiveSet {
        LiveSet {
            bits: vec![0; len.div_ceil(64)],
        }
    }

    /// Set the bit; returns whether it was already set.
    fn insert(&mut self, pos: usize) -> bool {
        let (word, bit) = (pos / 64, 1u64 << (pos % 64));
        let was = self.bits[word] & bit != 0;
        self.bits[word] |= bit;
        was
    }

    fn contains(&self, pos: usize) -> bool {
        self.bits[pos / 64] & (1u64 << (pos % 64)) != 0
    }
}

fn mark_live(repo: &Repository, report: &mut PruneReport) -> Result<(LiveSet, usize)> {
    let (snapshots, damaged) = snapshot::list(repo, None)?;
    if let Some((name, e)) = damaged.first() {
        // A snapshot we cannot read may need anything: deleting is unsafe.
        return Err(Error::corrupt(
            format!("snapshot {name}"),
            format!("cannot be read ({e}); prune refuses to guess what it needs. Run `snapfs check`, then remove it with `snapfs forget` or by hand"),
        ));
    }
    let mut live = LiveSet::new(repo.index().sorted_len());
    let mut trees: Vec<(Id, Id)> = snapshots.iter().map(|s| (s.snapshot.tree, s.id)).collect();
    while let Some((tree_id, snapshot_id)) = trees.pop() {
        let Some(pos) = repo.index().position(&tree_id) else {
            return Err(Error::corrupt(
                format!("tree {tree_id}"),
                format!(
                    "is missing but snapshot {} needs it; prune stops before deleting anything",
                    snapshot_id.short()
                ),
            ));
        };
        if live.insert(pos) {
            continue; // shared subtree, already walked
        }
        let tree = snapshot::load_tree(repo, &tree_id)?;
        for node in &tree.nodes {
            match node.kind {
                NodeKind::Dir => trees.extend(node.subtree.map(|s| (s, snapshot_id))),
                NodeKind::File => {
                    let index = repo.index();
                    for chunk in &node.content {
                        match index.position(chunk) {
                            Some(p) => {
                                live.insert(p);
                            }
                            None => report.blobs_missing += 1,
                        }
                    }
                }
                _ => {}
            }
        }
    }
    if report.blobs_missing > 0 {
        tracing::warn!(
            "{} chunks that snapshots need are missing; run `snapfs check`",
            report.blobs_missing
        );
    }
    Ok((live, snapshots.len()))
}

fn pack_usage(
    repo: &Repository,
    live: &LiveSet,
    sizes: &HashMap<Id, u64>,
    report: &mut PruneReport,
) -> HashMap<Id, PackUse> {
    let index = repo.index();
    let mut usage: HashMap<Id, PackUse> = HashMap::new();
    for pos in 0..index.sorted_len() {
        let loc = index.at(pos);
        let u = usage.entry(loc.pack).or_insert_with(|| PackUse {
            size: sizes.get(&loc.pack).copied().unwrap_or(0),
            ..PackUse::default()
        });
        if live.contains(pos) {
            u.live_bytes += loc.blob.length as u64;
            u.live_blobs += 1;
            report.blobs_live += 1;
        } else {
            u.dead_blobs += 1;
            report.blobs_unused += 1;
        }
    }
    // Packs on disk whose every blob is indexed elsewhere (duplicates left by
    // concurrent backups) have no index entries at all: unused. Packs whose
    // header could not be read are not in the index and are left alone.
    for (pack, size) in sizes.iter().filter(|(p, _)| index.contains_pack(p)) {
        usage.entry(*pack).or_insert_with(|| PackUse {
            size: *size,
            ..PackUse::default()
        });
    }
    usage
}

/// Copy the live blobs of `packs` into new packs; returns the bytes written
/// (as stored: what the disk holds, not the uncompressed size) and the packs
/// written.
fn repack_live_blobs(
    repo: &Repository,
    live: &LiveSet,
    packs: &HashSet<Id>,
) -> Result<(u64, HashSet<Id>)> {
    if packs.is_empty() {
        return Ok((0, HashSet::new()));
    }
    // Index positions (4 bytes each), not ids: with millions of chunks to
    // move this list would otherwise rival the index itself.
    let moving: Vec<u32> = {
        let index = repo.index();
        (0..index.sorted_len())
            .filter(|&pos| live.contains(pos) && packs.contains(&index.at(pos).pack))
            .map(|pos| pos as u32)
            .collect()
    };
    let packer = repo.repacker();
    for pos in moving {
        // A short-lived guard: the packer takes the index lock to write.
        let (id, kind): (Id, BlobKind) = {
            let loc = repo.index().at(pos as usize);
            (loc.blob.id, loc.blob.kind)
        };
        // load_blob verifies the hash: a damaged blob stops the prune here,
        // before its pack (the only copy) is deleted.
        let data = repo.load_blob(&id)?;
        packer.add(kind, &data)?;
    }
    let copied = packer.flush()?.bytes_stored;
    Ok((copied, packer.written_packs().into_iter().collect()))
}

/// Replace all index files by new ones that list every pack except `gone`.
/// Returns how many old index files were removed.
fn rewrite_index(
    repo: &Repository,
    gone: &HashSet<Id>,
    unindexed: &HashMap<Id, Vec<PackBlob>>,
) -> Result<usize> {
    let old: Vec<String> = repo
        .list_files(FileType::Index)?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let mut written: HashSet<String> = HashSet::new();
    let mut seen: HashSet<Id> = HashSet::new();
    let mut out = IndexFile::default();
    let mut blobs_in_out = 0;
    let mut emit = |pack: IndexPack, out: &mut IndexFile, blobs_in_out: &mut usize| -> Result<()> {
        if gone.contains(&pack.id) || !seen.insert(pack.id) {
            return Ok(());
        }
        *blobs_in_out += pack.blobs.len();
        out.packs.push(pack);
        if *blobs_in_out >= BLOBS_PER_INDEX_FILE {
            written.insert(repo.write_index_file(&std::mem::take(out))?.to_hex());
            *blobs_in_out = 0;
        }
        Ok(())
    };
    for name in &old {
        match repo.read_index_file(name) {
            Ok(file) => {
                for pack in file.packs {
                    emit(pack, &mut out, &mut blobs_in_out)?;
                }
            }
            // Its packs were found by their headers (index_unindexed_packs).
            Err(e) => tracing::warn!("replacing damaged index {name}: {e}"),
        }
    }
    for (id, blobs) in unindexed {
        emit(
            IndexPack {
                id: *id,
                blobs: blobs.clone(),
            },
            &mut out,
            &mut blobs_in_out,
        )?;
    }
    if !out.packs.is_empty() {
        written.insert(repo.write_index_file(&out)?.to_hex());
    }
    let mut removed = 0;
    for name in old.iter().filter(|n| !written.contains(*n)) {
        repo.remove_index_file(name)?;
        removed += 1;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_set_bits() {
        let mut s = LiveSet::new(130);
        assert!(!s.insert(129));
        assert!(s.insert(129));
        assert!(s.contains(129) && !s.contains(128) && !s.contains(0));
    }
}
