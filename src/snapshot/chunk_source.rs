//! The chunks of snapshot files, as readers of many files at once want
//! them: decompressed and verified once into a bounded cache shared by
//! every reader, fetched ahead of sequential readers on background
//! threads, and the cache's memory given back when nobody reads.
//!
//! The mount reads through one of these for the whole host (every
//! account, every file); anything else that reads files of snapshots
//! concurrently (a restore of many files, say) can share the same parts.
//! Chunks come from the repository only, through `load_blob_into`, which
//! verifies each by its hash.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};

use crate::chunk_cache::{CacheStats, Chunk, ChunkCache};
use crate::error::Result;
use crate::id::Id;
use crate::repository::Repository;
use crate::snapshot::file_reader::FileReader;

/// How many chunks past a sequential read to fetch in the background.
const PREFETCH_AHEAD: usize = 8;

#[derive(Clone, Debug)]
pub struct ChunkSourceOptions {
    /// Budget of the decompressed chunk cache, in bytes.
    pub cache_bytes: usize,
    /// Background threads fetching the chunks after a sequential read; 0
    /// disables prefetching.
    pub prefetch_threads: usize,
    /// Give the cache's memory back after this long without reads (`None`:
    /// keep it).
    pub release_idle_after: Option<Duration>,
}

pub struct ChunkSource {
    repo: Arc<Repository>,
    cache: Arc<ChunkCache>,
    prefetch: Option<Sender<(Id, usize)>>,
}

impl ChunkSource {
    /// Starts the prefetch and idle-release threads; they end with it.
    pub fn new(repo: Arc<Repository>, opts: &ChunkSourceOptions) -> ChunkSource {
        let cache = Arc::new(ChunkCache::new(opts.cache_bytes));
        let prefetch = (opts.prefetch_threads > 0)
            .then(|| spawn_prefetchers(&repo, &cache, opts.prefetch_threads));
        if let Some(idle) = opts.release_idle_after {
            spawn_idle_release(&cache, idle);
        }
        ChunkSource {
            repo,
            cache,
            prefetch,
        }
    }

    /// Chunk `id` of `len` bytes (decompressed), from the cache or the
    /// repository.
    pub fn get(&self, id: &Id, len: usize) -> Result<Chunk> {
        self.cache
            .get(id, len, |buffer| self.repo.load_blob_into(id, buffer))
    }

    /// Queue the chunks of `reader`'s file after byte `end` that are not
    /// cached yet; dropped, not queued, when the threads are busy.
    pub fn prefetch_after(&self, reader: &FileReader, end: u64) {
        let Some(tx) = &self.prefetch else { return };
        let Some(first) = reader.chunk_index_at(end) else {
            return;
        };
        for i in first..(first + PREFETCH_AHEAD).min(reader.chunk_count()) {
            let (id, start, end) = reader.chunk(i);
            if self.cache.peek(&id).is_some() {
                continue;
            }
            match tx.try_send((id, (end - start) as usize)) {
                Ok(()) | Err(TrySendError::Full(_)) => {}
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }

    pub fn stats(&self) -> CacheStats {
        self.cache.stats()
    }
}

fn spawn_prefetchers(
    repo: &Arc<Repository>,
    cache: &Arc<ChunkCache>,
    threads: usize,
) -> Sender<(Id, usize)> {
    // Bounded: when readers outrun the prefetchers, dropping a prefetch is
    // better than queueing work whose reader has moved on.
    let (tx, rx) = crossbeam_channel::bounded::<(Id, usize)>(16);
    for n in 0..threads {
        let (repo, cache, rx) = (repo.clone(), cache.clone(), rx.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("prefetch-{n}"))
            .spawn(move || {
                for (id, len) in rx {
                    // Errors are the reader's to report, when it gets there.
                    let _ = cache.get(&id, len, |buffer| repo.load_blob_into(&id, buffer));
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("no prefetch thread: {e}");
        }
    }
    tx
}

/// A thread that empties the cache once it has been idle for `idle`,
/// checking a few times per period; it ends with the cache.
fn spawn_idle_release(cache: &Arc<ChunkCache>, idle: Duration) {
    let cache = Arc::downgrade(cache);
    let spawned = std::thread::Builder::new()
        .name("idle-release".into())
        .spawn(move || loop {
            std::thread::sleep(idle / 4);
            let Some(cache) = cache.upgrade() else {
                return;
            };
            let freed = cache.release_if_idle(idle);
            if freed > 0 {
                tracing::debug!("idle for {idle:?}: released {freed} bytes of cached chunks");
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("no idle-release thread: {e}");
    }
}
