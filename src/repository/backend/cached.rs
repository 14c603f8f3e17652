//! A local disk cache in front of a remote backend (`--cache-dir`): what a
//! repository on object storage would otherwise fetch again at every
//! start and every read.
//!
//! - **Whole files** of the kinds named by the hash of their bytes (index
//!   files, snapshot records) are kept as they are, and used only when
//!   their bytes still hash to their name: a torn or tampered copy is
//!   fetched again. A restart lists the index folder in the store and
//!   reads nothing else of it.
//! - **Packs, in blocks of 1 MiB**: a read of a chunk or a tree fetches
//!   the blocks it lies in (a run of missing ones in one request) and
//!   keeps each as a file with the BLAKE3 hash of its bytes in front,
//!   checked at every read; least recently used out first beyond a byte
//!   budget. Neighbours come along: the small files of one folder, written
//!   together, share blocks. Packs are never modified, so a block once read
//!   is valid for as long as its pack exists; a pack written or removed
//!   through this backend drops its blocks.
//! - Everything else (listings, the config, locks, writes) goes to the
//!   store: a listing must see other hosts' new files.
//!
//! The cache holds repository data in clear: its folders are 0700, files
//! 0600, as the repository's own. Two processes may share a folder; each
//! counts only what it wrote and read, so together they may exceed the
//! budget until the next start counts the folder again.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use lru::LruCache;

use super::{truncated, Backend, CreateIfAbsent, FileType};
use crate::error::{Error, IoContext, Result};
use crate::id::Id;
use crate::weighted_lru::WeightedLru;

/// Bytes of the hash in front of a cached block.
const HASH_LEN: usize = 32;
/// Packs are cached in blocks of this size, each fetched whole: a chunk of
/// a large file is about one block, and the chunks and trees of a folder
/// of small files, written together, share one. `tar` of 2,000 small files
/// through a remote mount took 2,000 round trips when the cache kept
/// exactly the ranges asked for; with blocks, about one per MiB of them.
const BLOCK: u64 = 1 << 20;
/// Memory for blocks read lately.
const HOT_BYTES: usize = 32 << 20;

pub struct CachedBackend {
    remote: Arc<dyn Backend>,
    dir: PathBuf,
    budget: u64,
    blocks: Mutex<Blocks>,
    /// Blocks read lately, verified: a folder of small files reads one
    /// block many times, and reading it from disk means hashing a whole
    /// MiB each time.
    hot: Mutex<WeightedLru<BlockKey, Arc<Vec<u8>>>>,
    /// Blocks being fetched, and the signal that some were.
    fetching: Mutex<HashSet<BlockKey>>,
    fetched: Condvar,
}

/// A pack and a block of it.
type BlockKey = (String, u64);

/// The cached blocks, least recently used first, and their bytes on disk.
struct Blocks {
    files: LruCache<PathBuf, u64>,
    bytes: u64,
}

impl CachedBackend {
    /// A cache of `remote` in `dir` (made 0700 when missing), holding at
    /// most `budget` bytes of pack blocks.
    pub fn new(remote: Arc<dyn Backend>, dir: &Path, budget: u64) -> Result<CachedBackend> {
        super::local::create_private_dir(dir)?;
        let blocks = Blocks::count(&dir.join("blocks"))?;
        tracing::debug!(
            "cache {}: {} blocks, {} bytes",
            dir.display(),
            blocks.files.len(),
            blocks.bytes
        );
        let cache = CachedBackend {
            remote,
            dir: dir.to_path_buf(),
            budget,
            blocks: Mutex::new(blocks),
            hot: Mutex::new(WeightedLru::new(HOT_BYTES)),
            fetching: Mutex::new(HashSet::new()),
            fetched: Condvar::new(),
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

    fn block_folder(&self, pack: &str) -> Option<PathBuf> {
        (safe_name(pack) && !pack.contains('/')).then(|| self.dir.join("blocks").join(pack))
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

    /// A cached block's bytes, if its hash holds; promoted in the LRU.
    fn read_block(&self, path: &Path) -> Option<Vec<u8>> {
        let mut bytes = fs::read(path).ok()?;
        let intact = bytes.len() >= HASH_LEN
            && blake3::hash(&bytes[HASH_LEN..]).as_bytes() == &bytes[..HASH_LEN];
        if !intact {
            tracing::warn!("cache: {} is damaged; fetching it again", path.display());
            self.forget_block(path);
            return None;
        }
        lock(&self.blocks).files.get(path);
        bytes.drain(..HASH_LEN);
        Some(bytes)
    }

    /// A block from memory or disk, if cached.
    fn cached_block(&self, name: &str, folder: &Path, block: u64) -> Option<Arc<Vec<u8>>> {
        let key = (name.to_string(), block);
        let path = folder.join(block.to_string());
        if let Some(data) = lock(&self.hot).get(&key) {
            // Used: the disk copy is too, for eviction.
            lock(&self.blocks).files.get(&path);
            return Some(data);
        }
        let data = Arc::new(self.read_block(&path)?);
        lock(&self.hot).put(key, data.clone(), data.len());
        Some(data)
    }

    /// Blocks `first..=last` of pack `name`, up to the pack's end: cached
    /// ones from memory or disk; missing ones fetched, each run in one
    /// request, and kept. A block another thread is fetching is waited
    /// for, not fetched twice (prefetchers of neighbouring chunks share
    /// blocks).
    fn blocks(
        &self,
        name: &str,
        folder: &Path,
        first: u64,
        last: u64,
    ) -> Result<Vec<Arc<Vec<u8>>>> {
        let mut blocks: Vec<Option<Arc<Vec<u8>>>> = vec![None; (last - first + 1) as usize];
        loop {
            for (i, slot) in blocks.iter_mut().enumerate() {
                if slot.is_none() {
                    *slot = self.cached_block(name, folder, first + i as u64);
                }
            }
            let missing: Vec<u64> = (first..=last)
                .filter(|b| blocks[(b - first) as usize].is_none())
                .collect();
            if missing.is_empty() {
                break;
            }
            let claimed: Vec<u64> = {
                let mut fetching = lock(&self.fetching);
                let free: Vec<u64> = missing
                    .into_iter()
                    .filter(|&b| !fetching.contains(&(name.to_string(), b)))
                    .collect();
                if free.is_empty() {
                    let wait = self.fetched.wait_timeout(fetching, Duration::from_secs(1));
                    drop(wait.unwrap_or_else(|e| e.into_inner()));
                    continue;
                }
                fetching.extend(free.iter().map(|&b| (name.to_string(), b)));
                free
            };
            let fetched = self.fetch(name, folder, &claimed);
            {
                let mut fetching = lock(&self.fetching);
                for &b in &claimed {
                    fetching.remove(&(name.to_string(), b));
                }
            }
            self.fetched.notify_all();
            let fetched = fetched?;
            let reached_end = fetched.len() < claimed.len();
            for (b, data) in fetched {
                blocks[(b - first) as usize] = Some(data);
            }
            if reached_end {
                break;
            }
        }
        // A block the pack does not reach stays missing: the caller finds
        // the range short.
        Ok(blocks.into_iter().map_while(|b| b).collect())
    }

    /// Fetch `claimed` blocks (ascending), a run of neighbours in one
    /// request; keep each on disk and in memory. Fewer come back when the
    /// pack ends first.
    fn fetch(
        &self,
        name: &str,
        folder: &Path,
        claimed: &[u64],
    ) -> Result<Vec<(u64, Arc<Vec<u8>>)>> {
        let mut out = Vec::with_capacity(claimed.len());
        let mut i = 0;
        while i < claimed.len() {
            let mut end = i;
            while end + 1 < claimed.len() && claimed[end + 1] == claimed[end] + 1 {
                end += 1;
            }
            let (b, count) = (claimed[i], (end - i + 1) as u64);
            let bytes =
                self.remote
                    .read_range_upto(FileType::Pack, name, b * BLOCK, count * BLOCK)?;
            for (n, data) in bytes.chunks(BLOCK as usize).enumerate() {
                let block = b + n as u64;
                self.keep_block(&folder.join(block.to_string()), data);
                let data = Arc::new(data.to_vec());
                lock(&self.hot).put((name.to_string(), block), data.clone(), data.len());
                out.push((block, data));
            }
            if (bytes.len() as u64) < count * BLOCK {
                break;
            }
            i = end + 1;
        }
        Ok(out)
    }

    fn keep_block(&self, path: &Path, data: &[u8]) {
        let mut file = Vec::with_capacity(HASH_LEN + data.len());
        file.extend_from_slice(blake3::hash(data).as_bytes());
        file.extend_from_slice(data);
        if let Err(e) = store(path, &file) {
            tracing::debug!("cache: not keeping {}: {e}", path.display());
            return;
        }
        {
            let mut blocks = lock(&self.blocks);
            if let Some(old) = blocks.files.put(path.to_path_buf(), file.len() as u64) {
                blocks.bytes -= old;
            }
            blocks.bytes += file.len() as u64;
        }
        self.evict();
    }

    fn forget_block(&self, path: &Path) {
        let _ = fs::remove_file(path);
        let mut blocks = lock(&self.blocks);
        if let Some(size) = blocks.files.pop(path) {
            blocks.bytes -= size;
        }
    }

    /// Remove least recently used blocks until within the budget.
    fn evict(&self) {
        loop {
            let victim = {
                let mut blocks = lock(&self.blocks);
                if blocks.bytes <= self.budget {
                    return;
                }
                let Some((path, size)) = blocks.files.pop_lru() else {
                    return;
                };
                blocks.bytes -= size;
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
        // Packs are named by their hash: a new one has no blocks here, and
        // a write must not cost a scan of every cached block.
        let Some(folder) = self.block_folder(name).filter(|f| f.exists()) else {
            return;
        };
        // Rare (prune, tests): forget every block in memory.
        *lock(&self.hot) = WeightedLru::new(HOT_BYTES);
        let cached: Vec<PathBuf> = lock(&self.blocks)
            .files
            .iter()
            .filter(|(path, _)| path.starts_with(&folder))
            .map(|(path, _)| path.clone())
            .collect();
        for path in cached {
            self.forget_block(&path);
        }
        let _ = fs::remove_dir(&folder);
    }
}

impl Blocks {
    /// The blocks already in `dir`, oldest (by modification) first.
    fn count(dir: &Path) -> Result<Blocks> {
        let mut found = Vec::new();
        let packs = match fs::read_dir(dir) {
            Ok(packs) => packs,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Blocks {
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
        let mut blocks = Blocks {
            files: LruCache::unbounded(),
            bytes: 0,
        };
        for (_, path, size) in found {
            blocks.bytes += size;
            blocks.files.put(path, size);
        }
        Ok(blocks)
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
        let folder = (kind == FileType::Pack && length > 0)
            .then(|| self.block_folder(name))
            .flatten();
        let Some(folder) = folder else {
            return self
                .remote
                .read_range_within(kind, name, offset, length, buf);
        };
        let (first, last) = (offset / BLOCK, (offset + length - 1) / BLOCK);
        buf.clear();
        for block in self.blocks(name, &folder, first, last)? {
            buf.extend_from_slice(&block);
        }
        let start = (offset - first * BLOCK) as usize;
        let end = start + length as usize;
        if buf.len() < end {
            return Err(truncated(kind, name, offset, length));
        }
        Ok(start..end)
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
