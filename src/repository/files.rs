//! The repository's files other than blobs, each kind with its own calls:
//! snapshot records by account folder, locks, and the removals that
//! forget, prune and migrate make. Commands and the mount go through
//! these, not through the backend, so that what a file of each kind is
//! called, and how it may be written, is decided here and below only.

use std::time::Duration;

use super::backend::{CreateIfAbsent, FileType};
use super::config::Config;
use super::lock::{self, Lock, LockKind};
use super::Repository;
use crate::error::Result;
use crate::id::Id;

impl Repository {
    /// Take the repository's lock, `kind`, for `purpose` (shown to whoever
    /// waits for it), waiting at most `wait`.
    pub fn lock(&self, kind: LockKind, purpose: &str, wait: Duration) -> Result<Lock> {
        Lock::acquire(self.backend.clone(), kind, purpose, wait)
    }

    /// Remove the stale locks of this host (`all`: every lock); their
    /// names.
    pub fn unlock(&self, all: bool) -> Result<Vec<String>> {
        lock::unlock(&*self.backend, all)
    }

    /// The snapshot files, every one (`alice/<id>`, or `<id>` in no
    /// folder), with their sizes.
    pub fn snapshot_files(&self) -> Result<Vec<(String, u64)>> {
        self.backend.list(FileType::Snapshot)
    }

    /// The snapshot files of one folder (`""`: those in no folder).
    pub fn snapshot_files_in(&self, folder: &str) -> Result<Vec<(String, u64)>> {
        self.backend.list_folder(FileType::Snapshot, folder)
    }

    /// The folders of snapshot files: one per account (layout 2).
    pub fn snapshot_folders(&self) -> Result<Vec<String>> {
        self.backend.list_folders(FileType::Snapshot)
    }

    /// Create snapshot file `file` unless one is there (`Ok(false)`): a
    /// record is named by its hash, so one already there holds these very
    /// bytes.
    pub fn write_snapshot_file(&self, file: &str, bytes: &[u8]) -> Result<bool> {
        self.backend.write_new(FileType::Snapshot, file, bytes)
    }

    pub fn remove_snapshot_file(&self, file: &str) -> Result<()> {
        self.backend.remove(FileType::Snapshot, file)
    }

    /// Move a snapshot file into another folder (`migrate`).
    pub fn move_snapshot_file(&self, from: &str, to: &str) -> Result<()> {
        self.backend.rename(FileType::Snapshot, from, to)
    }

    /// A pack, whole (`check --read-data`).
    pub fn read_pack(&self, pack: &Id) -> Result<Vec<u8>> {
        self.backend.read(FileType::Pack, &pack.to_hex())
    }

    pub fn remove_pack(&self, pack: &Id) -> Result<()> {
        self.backend.remove(FileType::Pack, &pack.to_hex())
    }

    pub fn remove_index_file(&self, name: &str) -> Result<()> {
        self.backend.remove(FileType::Index, name)
    }

    /// Remove what interrupted writes left; only under the exclusive lock.
    pub fn remove_temporary(&self) -> Result<u64> {
        self.backend.remove_temporary()
    }

    /// Replace the config (`migrate` raising the layout).
    pub fn write_config(&self, config: &Config) -> Result<()> {
        self.backend
            .write(FileType::Config, "config", &config.encode())
    }

    /// Why other users could read the repository, if they could.
    pub fn exposure(&self) -> Option<String> {
        self.backend.exposure()
    }

    /// How creating a file only if absent holds on this store.
    pub fn create_if_absent(&self) -> Result<CreateIfAbsent> {
        self.backend.create_if_absent()
    }
}
