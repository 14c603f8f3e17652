//! The packer: takes blobs from any number of threads, deduplicates them,
//! fills packs and writes them, then writes the index files that list them.
//!
//! The lock is held only to append to the open pack; compressing happens
//! before it and the pack write after it, so worker threads overlap. A packer
//! whose write failed (a full disk, say) refuses all further blobs: the
//! caller must not believe later blobs were stored.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::backend::FileType;
use crate::repository::index::{IndexFile, IndexPack};
use crate::repository::pack::{self, BlobKind, PackBuilder};
use crate::repository::Repository;

/// Write an index file at least every this many packs, so that a long backup
/// that is interrupted leaves most of its packs indexed.
const PACKS_PER_INDEX_FILE: usize = 64;

pub struct Packer<'r> {
    repo: &'r Repository,
    /// Store blobs even when the index has them (repacking).
    ignore_index: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    open: PackBuilder,
    /// Blobs in the open pack or in a pack being written: not yet in the
    /// repository's index, but must not be stored again.
    pending: HashSet<Id>,
    /// Durable packs that no index file lists yet.
    unindexed: Vec<IndexPack>,
    /// Every pack this packer wrote.
    written: Vec<Id>,
    failed: Option<String>,
    stats: PackerStats,
}

/// What this packer added to the repository.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PackerStats {
    pub blobs_added: u64,
    /// Uncompressed bytes of new blobs.
    pub bytes_added: u64,
    /// Bytes of new blobs as stored (after compression).
    pub bytes_stored: u64,
    pub packs_written: u64,
}

impl<'r> Packer<'r> {
    pub(super) fn new(repo: &'r Repository, ignore_index: bool) -> Packer<'r> {
        Packer {
            repo,
            ignore_index,
            state: Mutex::new(State::default()),
        }
    }

    fn indexed(&self, id: &Id) -> bool {
        !self.ignore_index && self.repo.has_blob(id)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn known(&self, id: &Id) -> bool {
        self.indexed(id) || self.state().pending.contains(id)
    }

    /// Store a blob unless the repository has it. Returns its id and the
    /// number of uncompressed bytes it added (0 for a duplicate).
    pub fn add(&self, kind: BlobKind, raw: &[u8]) -> Result<(Id, u64)> {
        let id = Id::hash(raw);
        if self.known(&id) {
            self.check_failed()?;
            return Ok((id, 0));
        }
        let (compression, stored) = pack::encode_blob(raw, self.repo.config().zstd_level);
        let full = {
            let mut state = self.state();
            if let Some(reason) = &state.failed {
                return Err(Error::Invalid(format!(
                    "packer stopped after an earlier error: {reason}"
                )));
            }
            // Another thread may have stored the same blob meanwhile.
            if self.indexed(&id) || !state.pending.insert(id) {
                return Ok((id, 0));
            }
            state
                .open
                .add(id, kind, compression, raw.len() as u32, &stored);
            state.stats.blobs_added += 1;
            state.stats.bytes_added += raw.len() as u64;
            state.stats.bytes_stored += stored.len() as u64;
            if state.open.len() >= self.repo.config().pack_size as usize {
                Some(std::mem::take(&mut state.open))
            } else {
                None
            }
        };
        if let Some(builder) = full {
            self.write_pack(builder)?;
        }
        Ok((id, raw.len() as u64))
    }

    fn check_failed(&self) -> Result<()> {
        match &self.state().failed {
            Some(reason) => Err(Error::Invalid(format!(
                "packer stopped after an earlier error: {reason}"
            ))),
            None => Ok(()),
        }
    }

    fn write_pack(&self, builder: PackBuilder) -> Result<()> {
        let result = builder.finish().and_then(|(id, bytes, blobs)| {
            self.repo
                .backend()
                .write(FileType::Pack, &id.to_hex(), &bytes)?;
            Ok((id, blobs))
        });
        let mut state = self.state();
        match result {
            Ok((id, blobs)) => {
                // Durable: make the blobs visible through the index, then
                // forget them as pending (in that order, so that no thread
                // sees them in neither place and stores them again).
                self.repo.index_mut().add_pack(id, &blobs);
                for b in &blobs {
                    state.pending.remove(&b.id);
                }
                state.stats.packs_written += 1;
                state.written.push(id);
                state.unindexed.push(IndexPack { id, blobs });
                if state.unindexed.len() >= PACKS_PER_INDEX_FILE {
                    let packs = std::mem::take(&mut state.unindexed);
                    drop(state);
                    return self.write_index(packs);
                }
                Ok(())
            }
            Err(e) => {
                state.failed = Some(e.to_string());
                Err(e)
            }
        }
    }

    fn write_index(&self, packs: Vec<IndexPack>) -> Result<()> {
        if packs.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.repo.write_index_file(&IndexFile { packs }) {
            self.state().failed = Some(e.to_string());
            return Err(e);
        }
        Ok(())
    }

    /// Seal the open pack, write it and index every pack written so far.
    /// When this returns, every blob added is durable and indexed.
    pub fn flush(&self) -> Result<PackerStats> {
        self.check_failed()?;
        let open = std::mem::take(&mut self.state().open);
        if !open.is_empty() {
            self.write_pack(open)?;
        }
        let packs = std::mem::take(&mut self.state().unindexed);
        self.write_index(packs)?;
        Ok(self.stats())
    }

    /// The ids of the packs written so far. A repacked pack can have the
    /// id of an existing one (same blobs, same order): callers deleting old
    /// packs must not delete these.
    pub fn written_packs(&self) -> Vec<Id> {
        self.state().written.clone()
    }

    pub fn stats(&self) -> PackerStats {
        self.state().stats
    }
}
