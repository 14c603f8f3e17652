//! A cache of decompressed, verified chunks, bounded in bytes.
//!
//! The `lru` crate bounds entries, not bytes, so the cache is created
//! unbounded and we evict from the cold end until the byte budget fits.
//! Concurrent misses for one chunk share one fetch: the first reader fetches,
//! the others wait on its result instead of reading and decompressing the
//! same chunk again (eight `cat`s of one file would otherwise do 8x the work).

use lru::LruCache;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};

use crate::error::{Error, Result};
use crate::id::Id;

type Chunk = Arc<Vec<u8>>;

pub struct ChunkCache {
    budget: usize,
    state: Mutex<State>,
}

struct State {
    lru: LruCache<Id, Chunk>,
    bytes: usize,
    inflight: HashMap<Id, Arc<Inflight>>,
    /// Bytes of small chunks evicted since memory was last given back.
    small_evicted: usize,
}

/// Chunks below this size come from the malloc heap, larger ones from their
/// own mappings (the mount fixes glibc's mmap threshold at 128 KiB).
const SMALL_CHUNK: usize = 128 * 1024;

/// Give freed heap memory back after evicting this much in small chunks.
///
/// Why: a cache full of small files' chunks (tar over many small files)
/// grows the heap to the budget; evicting them for big chunks, which are
/// separate mappings, frees heap memory that glibc keeps, so the process
/// held the budget twice (measured: 570 MiB with a 256 MiB cache).
/// `malloc_trim` returns those pages; it walks the heap, so not too often.
const TRIM_AFTER: usize = 32 << 20;

/// A fetch in progress; waiters block on `ready` until `result` is set.
#[derive(Default)]
struct Inflight {
    result: Mutex<Option<std::result::Result<Chunk, String>>>,
    ready: Condvar,
}

/// Counters for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub bytes: usize,
    pub entries: usize,
}

impl ChunkCache {
    pub fn new(budget_bytes: usize) -> ChunkCache {
        ChunkCache {
            budget: budget_bytes,
            state: Mutex::new(State {
                lru: LruCache::unbounded(),
                bytes: 0,
                inflight: HashMap::new(),
                small_evicted: 0,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stats(&self) -> CacheStats {
        let s = self.state();
        CacheStats {
            bytes: s.bytes,
            entries: s.lru.len(),
        }
    }

    /// A cached chunk without fetching.
    pub fn peek(&self, id: &Id) -> Option<Chunk> {
        self.state().lru.get(id).cloned()
    }

    /// The chunk `id`, from the cache or from `fetch`, which runs at most once
    /// at a time per id. Errors are not cached: the next read retries.
    pub fn get(&self, id: &Id, fetch: impl FnOnce() -> Result<Vec<u8>>) -> Result<Chunk> {
        let (inflight, leader) = {
            let mut s = self.state();
            if let Some(chunk) = s.lru.get(id) {
                return Ok(chunk.clone());
            }
            match s.inflight.get(id) {
                Some(f) => (f.clone(), false),
                None => {
                    let f = Arc::new(Inflight::default());
                    s.inflight.insert(*id, f.clone());
                    (f, true)
                }
            }
        };
        if !leader {
            let mut result = inflight.result.lock().unwrap_or_else(|e| e.into_inner());
            while result.is_none() {
                result = inflight
                    .ready
                    .wait(result)
                    .unwrap_or_else(|e| e.into_inner());
            }
            return match result.as_ref().expect("set before notify") {
                Ok(chunk) => Ok(chunk.clone()),
                Err(message) => Err(Error::corrupt(format!("data blob {id}"), message.clone())),
            };
        }
        let fetched = fetch().map(Arc::new);
        let trim = {
            let mut s = self.state();
            s.inflight.remove(id);
            if let Ok(chunk) = &fetched {
                self.insert_locked(&mut s, *id, chunk.clone());
            }
            let trim = s.small_evicted >= TRIM_AFTER;
            if trim {
                s.small_evicted = 0;
            }
            trim
        };
        if trim {
            release_freed_memory();
        }
        let shared = match &fetched {
            Ok(chunk) => Ok(chunk.clone()),
            Err(e) => Err(e.to_string()),
        };
        *inflight.result.lock().unwrap_or_else(|e| e.into_inner()) = Some(shared);
        inflight.ready.notify_all();
        fetched
    }

    fn insert_locked(&self, s: &mut State, id: Id, chunk: Chunk) {
        if chunk.len() > self.budget {
            return; // would evict everything and still not fit
        }
        s.bytes += chunk.len();
        if let Some(old) = s.lru.put(id, chunk) {
            s.bytes -= old.len();
        }
        while s.bytes > self.budget {
            match s.lru.pop_lru() {
                Some((_, evicted)) => {
                    s.bytes -= evicted.len();
                    if evicted.len() < SMALL_CHUNK {
                        s.small_evicted += evicted.len();
                    }
                }
                None => break,
            }
        }
    }
}

fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; no pointer is involved.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn evicts_by_bytes_not_entries() {
        let cache = ChunkCache::new(100);
        for n in 0..10u8 {
            cache.get(&Id::hash(&[n]), || Ok(vec![n; 30])).unwrap();
        }
        let stats = cache.stats();
        assert!(stats.bytes <= 100, "{stats:?}");
        assert_eq!(stats.entries, 3);
        // The most recent survive.
        assert!(cache.peek(&Id::hash(&[9])).is_some());
        assert!(cache.peek(&Id::hash(&[0])).is_none());
    }

    #[test]
    fn oversized_chunks_pass_through_uncached() {
        let cache = ChunkCache::new(10);
        assert_eq!(
            cache
                .get(&Id::hash(b"x"), || Ok(vec![1; 50]))
                .unwrap()
                .len(),
            50
        );
        assert_eq!(cache.stats().entries, 0);
    }

    #[test]
    fn concurrent_misses_share_one_fetch() {
        let cache = Arc::new(ChunkCache::new(1 << 20));
        let fetches = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let cache = cache.clone();
                let fetches = fetches.clone();
                std::thread::spawn(move || {
                    cache
                        .get(&Id::hash(b"shared"), || {
                            fetches.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(50));
                            Ok(vec![7; 1000])
                        })
                        .unwrap()
                        .len()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), 1000);
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn errors_are_not_cached() {
        let cache = ChunkCache::new(1000);
        let id = Id::hash(b"bad");
        assert!(cache
            .get(&id, || Err(Error::corrupt("data blob", "flipped")))
            .is_err());
        assert!(cache.get(&id, || Ok(vec![1])).is_ok());
    }
}
