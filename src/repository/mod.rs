//! The repository: content-addressed blobs in pack files, an index of where
//! each blob is, and opaque snapshot records. This layer knows nothing of
//! files, trees or snapshots' meaning; `crate::snapshot` builds those on top.
//!
//! Write order (docs/FORMAT.md, "Never lose data"): packs, then the index
//! files that list them, then the snapshot that references them. Each write
//! is atomic and durable before the next begins, so a crash at any point
//! leaves at worst packs that nothing references yet.

pub mod backend;
pub mod config;

pub mod encoding;
mod files;
mod golden;
pub mod index;
pub mod location;
pub mod lock;
pub mod pack;
pub mod packer;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};

use crate::buffer_pool::BufferPool;
use crate::chunker::ChunkerParams;
use crate::error::{Error, Result};
use crate::id::Id;
use backend::{Backend, CreateIfAbsent, FileType};
use config::Config;
use index::{BlobLocation, Index, IndexFile};
pub use location::Location;
use pack::{Compression, PackBlob, FOOTER_LEN};

/// Compressed-read buffers kept: about as many as reads decompress at once.
const READ_BUFFERS: usize = 4;

pub use packer::Packer;

/// A repository file that could not be loaded, kept for `check`.
#[derive(Debug, Clone)]
pub struct LoadProblem {
    pub object: String,
    pub message: String,
}

pub struct Repository {
    backend: Arc<dyn Backend>,
    config: Config,
    index: RwLock<Index>,
    /// Problems met while loading the index: reported by `check`, warned
    /// about by everything else, fatal to nothing.
    index_problems: Vec<LoadProblem>,
    /// When a blob is missing from the index we read the headers of packs
    /// that no index lists (an interrupted backup, a lost index file) once.
    rescanned: Mutex<bool>,
    /// Names of the index files already in `index`.
    loaded_index_files: Mutex<HashSet<String>>,
    /// Held while a reader reloads the index after a prune moved blobs.
    reloading: Mutex<()>,
    /// Compressed blobs on their way to being decompressed.
    read_buffers: BufferPool,
}

impl Repository {
    /// Create a new, empty repository at `location` (a path converts).
    pub fn init(
        location: impl Into<Location>,
        chunker: ChunkerParams,
        pack_size: Option<u32>,
    ) -> Result<Repository> {
        // Validate everything before creating anything: a failed init must
        // not leave a half-made folder that the next init refuses.
        chunker.validate()?;
        let mut config = Config::new(chunker);
        if let Some(size) = pack_size {
            // Blob offsets are u32: a pack must stay far below 4 GiB even
            // with a maximum-size chunk appended past the target.
            if !(4096..=1 << 30).contains(&size) {
                return Err(Error::Invalid(format!(
                    "pack size {size} must be between 4 KiB and 1 GiB"
                )));
            }
            config.pack_size = size;
        }
        let backend = backend::open(&location.into())?;
        let taken = || {
            Error::Invalid(format!(
                "{} already holds a snapfs repository",
                backend.location()
            ))
        };
        if backend.exists(FileType::Config, "config")? {
            return Err(taken());
        }
        if let Some(what) = backend.occupant()? {
            return Err(Error::Invalid(format!(
                "{} is not empty ({what} is there): a new repository needs an empty \
                 or new folder, bucket or prefix",
                backend.location()
            )));
        }
        backend.create()?;
        // Found out now, before the config is written, so that init says
        // what the store guarantees (docs/S3.md).
        if let CreateIfAbsent::CheckThenWrite(why) = backend.create_if_absent()? {
            tracing::warn!(
                "{}: {why}: two processes creating the same lock, snapshot or config \
                 at the same moment could both succeed (docs/S3.md)",
                backend.location()
            );
        }
        // The config is written last: until it exists the location is not
        // a repository, and an interrupted init can simply be run again.
        // Only if absent: of two inits racing, one wins, the other fails.
        if !backend.write_new(FileType::Config, "config", &config.encode())? {
            return Err(taken());
        }
        Self::open_backend(backend)
    }

    /// Open the repository at `location` (a path converts) and load its
    /// index.
    pub fn open(location: impl Into<Location>) -> Result<Repository> {
        Self::open_backend(backend::open(&location.into())?)
    }

    /// Open without reading the index, for commands that read it under a
    /// lock anyway (backup, prune): loading it twice would double the
    /// memory peak on large repositories.
    pub fn open_without_index(location: impl Into<Location>) -> Result<Repository> {
        Self::open_config(backend::open(&location.into())?)
    }

    /// Whether there is a repository at `location`: an error only when the
    /// store cannot tell (down, refusing our credentials).
    pub fn exists(location: impl Into<Location>) -> Result<bool> {
        backend::open(&location.into())?.exists(FileType::Config, "config")
    }

    pub fn open_backend(backend: Arc<dyn Backend>) -> Result<Repository> {
        let mut repo = Self::open_config(backend)?;
        repo.load_index()?;
        Ok(repo)
    }

    fn open_config(backend: Arc<dyn Backend>) -> Result<Repository> {
        let bytes = match backend.read(FileType::Config, "config") {
            Ok(b) => b,
            Err(Error::NotFound(_)) => {
                return Err(Error::NotFound(format!(
                    "no snapfs repository at {} (create one with `snapfs init`)",
                    backend.location()
                )))
            }
            Err(e) => return Err(e),
        };
        let config = Config::decode(&bytes)?;
        let repo = Repository {
            backend,
            config,
            index: RwLock::new(Index::new()),
            index_problems: Vec::new(),
            rescanned: Mutex::new(false),
            loaded_index_files: Mutex::new(HashSet::new()),
            reloading: Mutex::new(()),
            read_buffers: BufferPool::new(READ_BUFFERS, 4 << 20),
        };
        Ok(repo)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The store below. Commands use the calls of each kind of file
    /// (`files.rs`) and of blobs; this is for the repository's own parts
    /// and for tests that damage a store on purpose.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn location(&self) -> String {
        self.backend.location()
    }

    pub fn index_problems(&self) -> &[LoadProblem] {
        &self.index_problems
    }

    fn load_index(&mut self) -> Result<()> {
        self.index_problems = self.reload_index()?;
        Ok(())
    }

    /// Rebuild the in-memory index from the index files there are now (at
    /// open, and after a prune replaced them: repacked blobs have moved).
    /// A damaged index file is skipped with a warning and returned: its
    /// packs are found again by `rescan_unindexed_packs` when needed.
    pub fn reload_index(&self) -> Result<Vec<LoadProblem>> {
        let files = self.backend.list(FileType::Index)?;
        let mut index = Index::with_capacity_for(&files);
        let mut loaded = HashSet::new();
        let mut problems = Vec::new();
        for (name, _) in files {
            match self.read_index_file(&name) {
                Ok(file) => {
                    index.extend_unsorted(file);
                    loaded.insert(name);
                }
                // Replaced by a prune while we listed: its successor is listed too.
                Err(Error::NotFound(_)) => {}
                Err(e) => {
                    tracing::warn!("skipping index {name}: {e}");
                    problems.push(LoadProblem {
                        object: format!("index {name}"),
                        message: e.to_string(),
                    });
                }
            }
        }
        index.sort();
        *self.index_mut() = index;
        *self
            .loaded_index_files
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = loaded;
        Ok(problems)
    }

    /// Load index files written since this repository was opened (by
    /// backups running meanwhile), for long-lived readers such as a mount.
    /// Returns how many were added; damaged ones are skipped with a warning.
    pub fn refresh_index(&self) -> Result<usize> {
        let names = self.backend.list(FileType::Index)?;
        let mut added = 0;
        for (name, _) in names {
            if self
                .loaded_index_files
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&name)
            {
                continue;
            }
            match self.read_index_file(&name) {
                Ok(file) => {
                    let mut index = self.index_mut();
                    for pack in &file.packs {
                        index.add_pack(pack.id, &pack.blobs);
                    }
                    drop(index);
                    added += 1;
                }
                // Replaced by a prune while we listed: its packs are in the
                // new index files, which the next refresh reads.
                Err(Error::NotFound(_)) => {}
                Err(e) => tracing::warn!("skipping index {name}: {e}"),
            }
            self.loaded_index_files
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name);
        }
        // Packs may have appeared too: allow one more rescan on a miss.
        *self.rescanned.lock().unwrap_or_else(|e| e.into_inner()) = false;
        Ok(added)
    }

    pub fn read_index_file(&self, name: &str) -> Result<IndexFile> {
        let bytes = self.read_verified(FileType::Index, name)?;
        IndexFile::decode(name, &bytes)
    }

    /// Read a content-addressed file and check that its name is its hash.
    pub fn read_verified(&self, kind: FileType, name: &str) -> Result<Vec<u8>> {
        let bytes = self.backend.read(kind, name)?;
        // In a folder (snapshots of layout 2), the file's own name is the hash.
        if Id::hash(&bytes).to_hex() != backend::file_of(name) {
            return Err(Error::corrupt(
                format!("{} {name}", kind.describe()),
                "content does not match its name (hash)",
            ));
        }
        Ok(bytes)
    }

    /// Write a content-addressed file; returns its id.
    pub fn write_verified(&self, kind: FileType, bytes: &[u8]) -> Result<Id> {
        let id = Id::hash(bytes);
        self.backend.write(kind, &id.to_hex(), bytes)?;
        Ok(id)
    }

    pub fn write_index_file(&self, file: &IndexFile) -> Result<Id> {
        self.write_verified(FileType::Index, &file.encode())
    }

    pub fn index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn index_mut(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn has_blob(&self, id: &Id) -> bool {
        self.index().contains(id)
    }

    /// Where a blob is, rescanning unindexed packs once if it is not listed.
    pub fn locate(&self, id: &Id) -> Result<BlobLocation> {
        if let Some(loc) = self.index().lookup(id) {
            return Ok(loc);
        }
        self.rescan_unindexed_packs()?;
        self.index()
            .lookup(id)
            .ok_or_else(|| Error::corrupt(format!("blob {id}"), "is missing from the repository"))
    }

    /// The uncompressed size of a blob, from the index alone.
    pub fn blob_size(&self, id: &Id) -> Result<u64> {
        Ok(self.locate(id)?.blob.raw_length as u64)
    }

    /// Read a blob, decompress it and verify its hash. A blob whose pack is
    /// gone is looked up again in a reloaded index once: prune may have
    /// repacked it while this process was running.
    pub fn load_blob(&self, id: &Id) -> Result<Vec<u8>> {
        self.load_blob_into(id, Vec::new())
    }

    /// `load_blob` into a recycled buffer: a mount hands back the buffers of
    /// evicted chunks, so reading a large file does not map and fault in
    /// fresh memory for every chunk.
    pub fn load_blob_into(&self, id: &Id, mut out: Vec<u8>) -> Result<Vec<u8>> {
        let loc = self.locate(id)?;
        match self.load_from(&loc, &mut out) {
            Err(Error::NotFound(_)) => {
                // One thread reloads; the others wait, then see no change.
                let _one = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
                if self.index_changed() {
                    self.reload_index()?;
                }
                let loc = self.locate(id)?;
                self.load_from(&loc, &mut out).map_err(|e| match e {
                    Error::NotFound(_) => Error::corrupt(
                        format!("{} blob {id}", pack::kind_name(loc.blob.kind)),
                        format!("its pack {} is missing", loc.pack),
                    ),
                    other => other,
                })?;
            }
            other => other?,
        }
        Ok(out)
    }

    /// Whether the index files differ from the ones loaded: then a prune
    /// has replaced them and reloading may find a moved blob. When they do
    /// not, the pack is really gone, and reloading (on every read of a
    /// damaged file) would only cost time.
    fn index_changed(&self) -> bool {
        let Ok(files) = self.backend.list(FileType::Index) else {
            return false;
        };
        let loaded = self
            .loaded_index_files
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        files.len() != loaded.len() || files.iter().any(|(name, _)| !loaded.contains(name))
    }

    /// The blob at `loc` into `out`; `NotFound` when its pack file is gone.
    fn load_from(&self, loc: &BlobLocation, out: &mut Vec<u8>) -> Result<()> {
        let pack_name = loc.pack.to_hex();
        let (offset, length) = (loc.blob.offset as u64, loc.blob.length as u64);
        let annotate = |e| annotate_pack(e, &loc.pack);
        let mut stored = self.read_buffers.take(length as usize);
        let decoded = self
            .backend
            .read_range_within(FileType::Pack, &pack_name, offset, length, &mut stored)
            .and_then(|range| {
                let stored = &stored[range];
                match loc.blob.compression {
                    Compression::None => {
                        out.clear();
                        out.reserve_exact(stored.len());
                        out.extend_from_slice(stored);
                        Ok(())
                    }
                    Compression::Zstd => {
                        pack::decompress_into(&loc.blob, stored, out).map_err(annotate)
                    }
                }
            });
        self.read_buffers.give(stored);
        decoded?;
        pack::verify_blob(&loc.blob, out).map_err(annotate)
    }

    /// Read a pack's header (from its footer) without reading its data.
    pub fn read_pack_header(&self, pack: &Id) -> Result<Vec<PackBlob>> {
        let name = pack.to_hex();
        let size = self.backend.size(FileType::Pack, &name)?;
        if size < (pack::LEAD_LEN + FOOTER_LEN) as u64 {
            return Err(Error::corrupt(
                format!("pack {name}"),
                format!("truncated to {size} bytes"),
            ));
        }
        let footer = self.backend.read_range(
            FileType::Pack,
            &name,
            size - FOOTER_LEN as u64,
            FOOTER_LEN as u64,
        )?;
        let (header_len, hash) = pack::parse_footer(&name, &footer, size)?;
        let header_offset = size - FOOTER_LEN as u64 - header_len as u64;
        let header =
            self.backend
                .read_range(FileType::Pack, &name, header_offset, header_len as u64)?;
        pack::parse_header(&name, &header, &hash, size)
    }

    /// Never rescan: `check` wants to see exactly what the index says.
    pub fn disable_rescan(&self) {
        *self.rescanned.lock().unwrap_or_else(|e| e.into_inner()) = true;
    }

    /// Add the packs that no index file lists to the in-memory index. Runs
    /// at most once per process: it lists every pack.
    pub fn rescan_unindexed_packs(&self) -> Result<usize> {
        let mut done = self.rescanned.lock().unwrap_or_else(|e| e.into_inner());
        if *done {
            return Ok(0);
        }
        *done = true;
        let mut added = 0;
        for (name, _) in self.backend.list(FileType::Pack)? {
            let Ok(id) = Id::from_hex(&name) else {
                continue;
            };
            if self.index().contains_pack(&id) {
                continue;
            }
            match self.read_pack_header(&id) {
                Ok(blobs) => {
                    added += 1;
                    self.index_mut().add_pack(id, &blobs);
                }
                Err(e) => tracing::warn!("skipping pack {name}: {e}"),
            }
        }
        Ok(added)
    }

    /// Start writing blobs; `Packer::flush` makes them durable and indexed.
    pub fn packer(&self) -> Packer<'_> {
        Packer::new(self, false)
    }

    /// A packer that stores every blob it is given, even those the index
    /// already lists: prune uses it to move live blobs out of packs it is
    /// about to delete.
    pub fn repacker(&self) -> Packer<'_> {
        Packer::new(self, true)
    }

    pub fn list_files(&self, kind: FileType) -> Result<Vec<(String, u64)>> {
        self.backend.list(kind)
    }
}

fn annotate_pack(e: Error, pack: &Id) -> Error {
    match e {
        Error::Corrupt { object, reason } => Error::Corrupt {
            object,
            reason: format!("{reason} (in pack {pack})"),
        },
        other => other,
    }
}

/// Kinds of blob, re-exported for callers above this layer.
pub use pack::BlobKind as Kind;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::chunker::tests::small_params;
    use pack::BlobKind;

    /// Rewrite the config of the repository at `path` with another layout
    /// version (to test layout 1, which `init` no longer creates).
    pub fn set_layout(path: &std::path::Path, layout: u32) {
        let mut config = Repository::open_without_index(path)
            .unwrap()
            .config()
            .clone();
        config.layout = layout;
        backend::LocalBackend::new(path)
            .write(FileType::Config, "config", &config.encode())
            .unwrap();
    }

    #[test]
    fn blobs_survive_a_reopen_and_deduplicate() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path(), small_params(), Some(8192)).unwrap();
        let packer = repo.packer();
        let blob = |i: u64| crate::chunker::tests::pseudo_random(1000, i);
        let mut ids = Vec::new();
        for i in 0..50 {
            ids.push(packer.add(BlobKind::Data, &blob(i)).unwrap().0);
        }
        let (_, added) = packer.add(BlobKind::Data, &blob(3)).unwrap();
        assert_eq!(added, 0, "a known blob is not stored twice");
        packer.flush().unwrap();
        drop(packer);

        let repo = Repository::open(dir.path()).unwrap();
        assert!(
            repo.list_files(FileType::Pack).unwrap().len() > 1,
            "several packs"
        );
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(repo.load_blob(id).unwrap(), blob(i as u64));
        }
    }

    #[test]
    fn unindexed_packs_are_found_by_rescan() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path(), small_params(), None).unwrap();
        let packer = repo.packer();
        let (id, _) = packer.add(BlobKind::Data, b"orphan").unwrap();
        packer.flush().unwrap();
        drop(packer);
        for (name, _) in repo.list_files(FileType::Index).unwrap() {
            repo.backend().remove(FileType::Index, &name).unwrap();
        }
        let repo = Repository::open(dir.path()).unwrap();
        assert_eq!(repo.load_blob(&id).unwrap(), b"orphan");
    }

    #[test]
    fn refresh_sees_blobs_written_by_another_process() {
        let dir = tempfile::tempdir().unwrap();
        let reader = Repository::init(dir.path(), small_params(), None).unwrap();
        let writer = Repository::open(dir.path()).unwrap();
        let packer = writer.packer();
        let (id, _) = packer.add(BlobKind::Data, b"new").unwrap();
        packer.flush().unwrap();
        assert!(!reader.has_blob(&id));
        assert_eq!(reader.refresh_index().unwrap(), 1);
        assert_eq!(reader.load_blob(&id).unwrap(), b"new");
        assert_eq!(reader.refresh_index().unwrap(), 0);
    }

    #[test]
    fn unknown_config_version_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        Repository::init(dir.path(), small_params(), None).unwrap();
        let path = dir.path().join("config");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[8] = 7;
        std::fs::write(&path, bytes).unwrap();
        let err = Repository::open(dir.path()).err().unwrap();
        assert!(matches!(err, Error::Unsupported(_)), "{err}");
        assert!(err.to_string().contains("version 7"));
    }
}
