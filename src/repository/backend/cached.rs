//! A local disk cache in front of a remote backend (`--cache-dir`): what a
//! repository on object storage would otherwise fetch again at every
//! start and every read.
//!
//! - **Whole files** of the kinds named by the hash of their bytes (index
//!   files, snapshot records) are kept as they are, and used only when
//!   their bytes still hash to their name: a torn or tampered copy is
//!   fetched again. A restart lists the index folder in the store and
//!   reads nothing else of it.
//! - **Ranges of packs** (the chunks and trees a mount or restore reads)
//!   are kept one file per range, with the BLAKE3 hash of the bytes in
//!   front, and evicted least recently used first beyond a byte budget.
//!   Packs are never modified, so a range once read is valid for as long
//!   as its pack exists; a pack written or removed through this backend
//!   drops its ranges.
//! - Everything else (listings, the config, locks, writes) goes to the
//!   store: a listing must see other hosts' new files.
//!
//! The cache holds repository data in clear: its folders are 0700, files
//! 0600, as the repository's own. Two processes may share a folder; each
//! counts only what it wrote and read, so together they may exceed the
//! budget until the next start counts the folder again.

use std::fs;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use lru::LruCache;

use super::{Backend, CreateIfAbsent, FileType};
use crate::error::{Error, IoContext, Result};
use crate::id::Id;

/// Bytes of the hash in front of a cached range.
const HASH_LEN: usize = 32;

pub struct CachedBackend {
    remote: Arc<dyn Backend>,
    dir: PathBuf,
    budget: u64,
    ranges: Mutex<Ranges>,
}

/// The cached ranges, least recently used first, and their bytes on disk.
struct Ranges {
    files: LruCache<PathBuf, u64>,
    bytes: u64,
}

impl CachedBackend {
    /// A cache of `remote` in `dir` (made 0700 when missing), holding at
    /// most `budget` bytes of pack ranges.
    pub fn new(remote: Arc<dyn Backend>, dir: &Path, budget: u64) -> Result<CachedBackend> {
        super::local::create_private_dir(dir)?;
        let ranges = Ranges::count(&dir.join("ranges"))?;
        tracing::debug!(
            "cache {}: {} ranges, {} bytes",
            dir.display(),
            ranges.files.len(),
            ranges.bytes
        );
        let cache = CachedBackend {
            remote,
            dir: dir.to_path_buf(),
            budget,
            ranges: Mutex::new(ranges),
        };
        cache.evict();
        Ok(cache)
    }

    /// Where a whole file of `kind` is kept, if that kind is.
    fn whole_path(&self, kind: FileType, name: &str) -> Option<PathBuf> {
        let folder = match kind {
            FileType::Index => "index",
            FileType::Snapshot => "snapshots",
            _ => return None,
        };
        safe_name(name).then(|| self.dir.join(folder).join(name))
    }

    fn range_folder(&self, pack: &str) -> Option<PathBuf> {
        (safe_name(pack) && !pack.contains('/')).then(|| self.dir.join("ranges").join(pack))
    }

    /// The cached copy of a whole file, if it still hashes to its name.
    fn read_whole(&self, path: &Path, name: &str) -> Option<Vec<u8>> {
        let bytes = fs::read(path).ok()?;
        if names_its_bytes(name, &bytes) {
            return Some(bytes);
        }
        tracing::warn!(
            "cache: {} does not match its name; fetching it again",
            path.display()
        );
        let _ = fs::remove_file(path);
        None
    }

    fn keep_whole(&self, path: &Path, name: &str, bytes: &[u8]) {
        if names_its_bytes(name, bytes) {
            if let Err(e) = store(path, bytes) {
                tracing::debug!("cache: not keeping {}: {e}", path.display());
            }
        }
    }

    /// A cached range read into `buf` (its allocation reused), and where
    /// its bytes are in it, if its hash holds; promoted in the LRU.
    fn read_range_cached(&self, path: &Path, buf: &mut Vec<u8>) -> Option<Range<usize>> {
        buf.clear();
        io::Read::read_to_end(&mut fs::File::open(path).ok()?, buf).ok()?;
        let intact =
            buf.len() >= HASH_LEN && blake3::hash(&buf[HASH_LEN..]).as_bytes() == &buf[..HASH_LEN];
        if !intact {
            tracing::warn!("cache: {} is damaged; fetching it again", path.display());
            self.forget_range(path);
            return None;
        }
        lock(&self.ranges).files.get(path);
        Some(HASH_LEN..buf.len())
    }

    fn keep_range(&self, path: &Path, data: &[u8]) {
        let mut file = Vec::with_capacity(HASH_LEN + data.len());
        file.extend_from_slice(blake3::hash(data).as_bytes());
        file.extend_from_slice(data);
        if let Err(e) = store(path, &file) {
            tracing::debug!("cache: not keeping {}: {e}", path.display());
            return;
        }
        {
            let mut ranges = lock(&self.ranges);
            if let Some(old) = ranges.files.put(path.to_path_buf(), file.len() as u64) {
                ranges.bytes -= old;
            }
            ranges.bytes += file.len() as u64;
        }
        self.evict();
    }

    fn forget_range(&self, path: &Path) {
        let _ = fs::remove_file(path);
        let mut ranges = lock(&self.ranges);
        if let Some(size) = ranges.files.pop(path) {
            ranges.bytes -= size;
        }
    }

    /// Remove least recently used ranges until within the budget.
    fn evict(&self) {
        loop {
            let victim = {
                let mut ranges = lock(&self.ranges);
                if ranges.bytes <= self.budget {
                    return;
                }
                let Some((path, size)) = ranges.files.pop_lru() else {
                    return;
                };
                ranges.bytes -= size;
                path
            };
            let _ = fs::remove_file(&victim);
        }
    }

    /// What a write or removal of `name` makes stale.
    fn drop_cached(&self, kind: FileType, name: &str) {
        if let Some(path) = self.whole_path(kind, name) {
            let _ = fs::remove_file(path);
        }
        if kind != FileType::Pack {
            return;
        }
        let Some(folder) = self.range_folder(name) else {
            return;
        };
        let cached: Vec<PathBuf> = lock(&self.ranges)
            .files
            .iter()
            .filter(|(path, _)| path.starts_with(&folder))
            .map(|(path, _)| path.clone())
            .collect();
        for path in cached {
            self.forget_range(&path);
        }
        let _ = fs::remove_dir(&folder);
    }
}

impl Ranges {
    /// The ranges already in `dir`, oldest (by modification) first.
    fn count(dir: &Path) -> Result<Ranges> {
        let mut found = Vec::new();
        let packs = match fs::read_dir(dir) {
            Ok(packs) => packs,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Ranges {
                    files: LruCache::unbounded(),
                    bytes: 0,
                })
            }
            Err(e) => return Err(Error::io(dir, e)),
        };
        for pack in packs.flatten() {
            let Ok(entries) = fs::read_dir(pack.path()) else {
                continue;
            };
            for entry in entries.flatten() {
                if let Ok(meta) = entry.metadata() {
                    let name = entry.file_name();
                    if meta.is_file() && !name.to_string_lossy().starts_with('.') {
                        found.push((meta.modified().ok(), entry.path(), meta.len()));
                    }
                }
            }
        }
        found.sort();
        let mut ranges = Ranges {
            files: LruCache::unbounded(),
            bytes: 0,
        };
        for (_, path, size) in found {
            ranges.bytes += size;
            ranges.files.put(path, size);
        }
        Ok(ranges)
    }
}

impl Backend for CachedBackend {
    fn location(&self) -> String {
        self.remote.location()
    }

    fn create(&self) -> Result<()> {
        self.remote.create()
    }

    fn occupant(&self) -> Result<Option<String>> {
        self.remote.occupant()
    }

    fn write(&self, kind: FileType, name: &str, data: &[u8]) -> Result<()> {
        self.drop_cached(kind, name);
        self.remote.write(kind, name, data)?;
        // A backup's own index file: the next start need not fetch it.
        if let Some(path) = self.whole_path(kind, name) {
            self.keep_whole(&path, name, data);
        }
        Ok(())
    }

    fn write_new(&self, kind: FileType, name: &str, data: &[u8]) -> Result<bool> {
        self.remote.write_new(kind, name, data)
    }

    fn create_if_absent(&self) -> Result<CreateIfAbsent> {
        self.remote.create_if_absent()
    }

    fn read(&self, kind: FileType, name: &str) -> Result<Vec<u8>> {
        let Some(path) = self.whole_path(kind, name) else {
            return self.remote.read(kind, name);
        };
        if let Some(bytes) = self.read_whole(&path, name) {
            return Ok(bytes);
        }
        let bytes = self.remote.read(kind, name)?;
        self.keep_whole(&path, name, &bytes);
        Ok(bytes)
    }

    fn read_range_within(
        &self,
        kind: FileType,
        name: &str,
        offset: u64,
        length: u64,
        buf: &mut Vec<u8>,
    ) -> Result<Range<usize>> {
        let folder = (kind == FileType::Pack)
            .then(|| self.range_folder(name))
            .flatten();
        let Some(folder) = folder else {
            return self
                .remote
                .read_range_within(kind, name, offset, length, buf);
        };
        let path = folder.join(format!("{offset}-{length}"));
        if let Some(range) = self.read_range_cached(&path, buf) {
            if range.len() as u64 == length {
                return Ok(range);
            }
            self.forget_range(&path);
        }
        let range = self
            .remote
            .read_range_within(kind, name, offset, length, buf)?;
        self.keep_range(&path, &buf[range.clone()]);
        Ok(range)
    }

    fn size(&self, kind: FileType, name: &str) -> Result<u64> {
        self.remote.size(kind, name)
    }

    fn list(&self, kind: FileType) -> Result<Vec<(String, u64)>> {
        self.remote.list(kind)
    }

    fn list_folder(&self, kind: FileType, folder: &str) -> Result<Vec<(String, u64)>> {
        self.remote.list_folder(kind, folder)
    }

    fn list_folders(&self, kind: FileType) -> Result<Vec<String>> {
        self.remote.list_folders(kind)
    }

    fn remove(&self, kind: FileType, name: &str) -> Result<()> {
        self.remote.remove(kind, name)?;
        self.drop_cached(kind, name);
        Ok(())
    }

    fn rename(&self, kind: FileType, from: &str, to: &str) -> Result<()> {
        self.remote.rename(kind, from, to)?;
        self.drop_cached(kind, from);
        self.drop_cached(kind, to);
        Ok(())
    }

    fn exists(&self, kind: FileType, name: &str) -> Result<bool> {
        self.remote.exists(kind, name)
    }

    fn remove_temporary(&self) -> Result<u64> {
        self.remote.remove_temporary()
    }

    fn exposure(&self) -> Option<String> {
        self.remote.exposure()
    }
}

/// Whether `name`'s file part is the hash of `bytes` (index files and
/// snapshot records are named so).
fn names_its_bytes(name: &str, bytes: &[u8]) -> bool {
    Id::from_hex(super::file_of(name)).is_ok_and(|id| id == Id::hash(bytes))
}

/// A name that stays inside its cache folder: plain parts, at most one
/// folder deep (snapshot records), none empty or starting with a dot.
fn safe_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    parts.len() <= 2 && parts.iter().all(|p| !p.is_empty() && !p.starts_with('.'))
}

/// Write a cache file: whole or absent (a temporary file renamed), not
/// synced: a copy lost in a crash is fetched again, a torn one fails its
/// hash.
fn store(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().expect("cache files are in folders");
    super::local::create_private_dir(dir)?;
    let temp = dir.join(format!(
        ".tmp-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    use std::os::unix::fs::OpenOptionsExt;
    let written = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut f| io::Write::write_all(&mut f, bytes));
    let result = written.and_then(|()| fs::rename(&temp, path)).at(path);
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
