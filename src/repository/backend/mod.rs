//! Where repository files live. The repository above this layer sees named,
//! immutable files of a few types; it never sees paths.
//!
//! Every backend keeps one contract (checked by [`contract`] for each
//! implementation): `write` is atomic — a reader sees the whole file or
//! nothing, also after a crash — and durable when it returns; `write_new`
//! also refuses to replace a file that exists; `read_range` returns exactly
//! the bytes asked for or an error; `list` never shows a file that is still
//! being written; `remove` of a missing file succeeds.
//!
//! [`local`] is a folder on a local (or mounted) file system, [`s3`] a
//! bucket on an S3 server; a backend stores and lists opaque names only:
//! which file is what is the repository's business.

pub mod cached;
mod direct_read;
pub mod local;
pub mod s3;
mod s3_request;

use std::ops::Range;
use std::sync::Arc;

use super::location::{DiskCache, Location, S3Location};
use crate::error::{Error, Result};
use crate::id::Id;
pub use local::{sync_dir, write_atomic, write_atomic_mode, LocalBackend};
pub use s3::S3Backend;

/// The backend for a location (an S3 one takes its credentials from the
/// environment here: a missing one is an error naming the variable).
pub fn open(location: &Location) -> Result<Arc<dyn Backend>> {
    Ok(match location {
        Location::Local(path) => Arc::new(LocalBackend::new(path)),
        Location::S3(s3) => {
            let remote: Arc<dyn Backend> = Arc::new(S3Backend::from_env(s3.clone())?);
            match &s3.cache {
                Some(cache) => with_cache(remote, s3, cache),
                None => remote,
            }
        }
    })
}

/// `remote` behind its disk cache: a folder of `cache.dir` named by a hash
/// of the location. A cache that cannot be set up is warned about and
/// done without: it must never stop a backup.
fn with_cache(remote: Arc<dyn Backend>, s3: &S3Location, cache: &DiskCache) -> Arc<dyn Backend> {
    let place = format!("{}/{}/{}", s3.endpoint, s3.bucket, s3.prefix);
    let dir = cache.dir.join(&Id::hash(place.as_bytes()).to_hex()[..32]);
    match cached::CachedBackend::new(remote.clone(), &dir, cache.budget) {
        Ok(cached) => Arc::new(cached),
        Err(e) => {
            tracing::warn!("no disk cache for {}: {e}", remote.location());
            remote
        }
    }
}

/// The kinds of repository files, each in its own folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileType {
    Config,
    Pack,
    Index,
    Snapshot,
    Lock,
}

impl FileType {
    pub fn describe(self) -> &'static str {
        match self {
            FileType::Config => "config",
            FileType::Pack => "pack",
            FileType::Index => "index",
            FileType::Snapshot => "snapshot",
            FileType::Lock => "lock",
        }
    }
}

/// How a backend keeps `write_new`'s "only if absent".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreateIfAbsent {
    /// The store itself refuses the second of two creators (a rename that
    /// does not replace; S3's `If-None-Match: *`).
    Atomic,
    /// The store does not refuse: `write_new` looks first, then writes, and
    /// two creators within one round trip may both write. Why, for people.
    CheckThenWrite(String),
}

pub trait Backend: Send + Sync {
    /// Where the repository is, for messages.
    fn location(&self) -> String;
    /// Create the folder structure of an empty repository.
    fn create(&self) -> Result<()>;
    /// Something already at the location that no repository put there (an
    /// interrupted `create` leaves only what it makes), named for `init`'s
    /// refusal; `None` when the location is new or empty.
    fn occupant(&self) -> Result<Option<String>>;
    /// Atomically create or replace `name`, durable when this returns.
    fn write(&self, kind: FileType, name: &str, data: &[u8]) -> Result<()>;
    /// `write`, but only if no file `name` exists: `Ok(false)`, and nothing
    /// written, when one does. For the files whose creators may race: the
    /// config (two `init`s), locks, snapshot records.
    fn write_new(&self, kind: FileType, name: &str, data: &[u8]) -> Result<bool>;
    /// How `write_new` keeps its promise here; S3 servers differ, so the S3
    /// backend finds out by trying (once per process).
    fn create_if_absent(&self) -> Result<CreateIfAbsent> {
        Ok(CreateIfAbsent::Atomic)
    }
    fn read(&self, kind: FileType, name: &str) -> Result<Vec<u8>>;
    /// Exactly `length` bytes at `offset`; a short file is an error.
    fn read_range(&self, kind: FileType, name: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        let range = self.read_range_within(kind, name, offset, length, &mut buf)?;
        buf.truncate(range.end);
        buf.drain(..range.start);
        Ok(buf)
    }
    /// `length` bytes at `offset` somewhere in `buf` (whose contents are
    /// replaced, its allocation reused: the mount reads every chunk this
    /// way); returns where. A short file is an error. A backend may read
    /// more around the bytes: the local one reads large ranges as whole
    /// disk blocks, past the page cache (see `direct_read`).
    fn read_range_within(
        &self,
        kind: FileType,
        name: &str,
        offset: u64,
        length: u64,
        buf: &mut Vec<u8>,
    ) -> Result<Range<usize>>;
    /// Up to `length` bytes at `offset`: fewer where the file ends first,
    /// none at or past its end. For reads of whole blocks of a pack
    /// (`cached`), where only the store knows where the pack ends.
    fn read_range_upto(
        &self,
        kind: FileType,
        name: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>> {
        let end = (offset + length).min(self.size(kind, name)?);
        if end <= offset {
            return Ok(Vec::new());
        }
        self.read_range(kind, name, offset, end - offset)
    }
    fn size(&self, kind: FileType, name: &str) -> Result<u64>;
    /// Names and sizes of the complete files of one kind, in no given order.
    /// Snapshot files may sit one folder deep; their names are then
    /// `folder/file`.
    fn list(&self, kind: FileType) -> Result<Vec<(String, u64)>>;
    /// The files of `list` in one folder (`""`: those in no folder), named
    /// as `list` names them, without listing the others: a mount of one
    /// account lists its folder every few seconds.
    fn list_folder(&self, kind: FileType, folder: &str) -> Result<Vec<(String, u64)>>;
    /// The folders of `kind` (snapshots: one per account), without their
    /// files: a mount of every account lists these every few seconds and
    /// an account's files only when that account is looked at.
    fn list_folders(&self, kind: FileType) -> Result<Vec<String>>;
    /// Remove a file; a file that is already gone is not an error.
    fn remove(&self, kind: FileType, name: &str) -> Result<()>;
    /// Move file `from` to `to` (another folder, say), replacing `to`;
    /// durable when this returns. Atomic where the store can rename (a
    /// folder); elsewhere a copy, then a delete (only `migrate` moves files,
    /// and it tolerates both copies existing after a crash).
    fn rename(&self, kind: FileType, from: &str, to: &str) -> Result<()>;
    fn exists(&self, kind: FileType, name: &str) -> Result<bool>;
    /// Remove temporary files left by interrupted writes; only safe while
    /// no other process writes (prune holds the exclusive lock). Returns
    /// how many were removed.
    fn remove_temporary(&self) -> Result<u64>;
    /// Why other users could read the repository, if they could: it holds
    /// every account's data in clear.
    fn exposure(&self) -> Option<String> {
        None
    }
}

/// The error of a range read that a file ends inside: damage, as every
/// backend reports it.
pub(crate) fn truncated(kind: FileType, name: &str, offset: u64, length: u64) -> Error {
    Error::corrupt(
        format!("{} {name}", kind.describe()),
        format!("truncated: {length} bytes at offset {offset} are past its end"),
    )
}

/// The folder part of a file name as `Backend::list` gives it (`""` for a
/// file in no folder).
pub fn folder_of(name: &str) -> &str {
    name.rsplit_once('/').map_or("", |(folder, _)| folder)
}

/// The file part of a name as `Backend::list` gives it.
pub fn file_of(name: &str) -> &str {
    name.rsplit_once('/').map_or(name, |(_, file)| file)
}

// Compiled in, not only under `cfg(test)`: the S3 backend's contract test
// is an integration test (it needs a server), and those see only the
// library's public items.
#[doc(hidden)]
pub mod contract;
