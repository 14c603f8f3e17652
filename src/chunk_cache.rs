//! A cache of decompressed, verified chunks, bounded in bytes.
//!
//! The `lru` crate bounds entries, not bytes, so the cache is created
//! unbounded and we evict from the cold end until the byte budget fits.
//! Concurrent misses for one chunk share one fetch: the first reader fetches,
//! the others wait on its result instead of reading and decompressing the
//! same chunk again (eight `cat`s of one file would otherwise do 8x the work).
//!
//! The budget covers chunks being fetched as well as cached ones: a miss
//! makes room before it fetches, and hands the buffer of a chunk it evicted
//! to the fetch to fill. A large file streaming through a full cache then
//! reuses the same memory instead of mapping and faulting in a fresh
//! megabyte per chunk (that cost the mount more system time than reading
//! and decompressing the data).
//!
//! Small chunks (small files) have a share of their own, at most an eighth
//! of the budget: they live on the malloc heap, where the tree cache's
//! many small allocations land between them and keep pages from being given
//! back once the chunks are evicted (measured: a cache filled by `tar` over
//! 100k small files left 70-80 MiB of freed heap that `malloc_trim` could
//! not return). The kernel's page cache keeps a small file's pages anyway;
//! this cache mostly saves re-reading the same file in another snapshot.
//!
//! An idle cache gives its memory back (`release_if_idle`): a server runs
//! one mount per account, mostly idle, and each would otherwise keep the
//! budget it once filled for as long as it runs.

use lru::LruCache;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::id::Id;

/// A decompressed chunk, shared by the cache and its readers.
pub type Chunk = Arc<Vec<u8>>;

pub struct ChunkCache {
    budget: usize,
    small_budget: usize,
    state: Mutex<State>,
    /// When the cache was made, and milliseconds from then to its last use.
    created: Instant,
    last_used_ms: AtomicU64,
}

struct State {
    /// Chunks of at least SMALL_CHUNK bytes, each its own mapping.
    large: LruCache<Id, Chunk>,
    /// Smaller chunks, from the heap, at most `small_budget` bytes.
    small: LruCache<Id, Chunk>,
    /// Capacity of the cached chunks' buffers (what they hold in memory).
    bytes: usize,
    small_bytes: usize,
    /// Promised lengths of the chunks being fetched.
    fetching: usize,
    inflight: HashMap<Id, Arc<Inflight>>,
    /// Bytes of small chunks evicted since memory was last given back.
    small_evicted: usize,
}

/// Chunks below this size come from the malloc heap, larger ones from their
/// own mappings (the mount fixes glibc's mmap threshold at 128 KiB). Only
/// the latter are worth handing on for reuse.
const SMALL_CHUNK: usize = 128 * 1024;

/// Give freed heap memory back after evicting this much in small chunks.
///
/// Why: a cache full of small files' chunks (tar over many small files)
/// grows the heap to the budget; evicting them for big chunks, which are
/// separate mappings, frees heap memory that glibc keeps, so the process
/// held the budget twice (measured: 570 MiB with a 256 MiB cache).
/// `malloc_trim` returns those pages; it walks the heap, so not too often.
const TRIM_AFTER: usize = 8 << 20;

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
            small_budget: budget_bytes / 8,
            state: Mutex::new(State {
                large: LruCache::unbounded(),
                small: LruCache::unbounded(),
                bytes: 0,
                small_bytes: 0,
                fetching: 0,
                inflight: HashMap::new(),
                small_evicted: 0,
            }),
            created: Instant::now(),
            last_used_ms: AtomicU64::new(0),
        }
    }

    /// Forget every cached chunk and give the memory back if nothing has
    /// been asked of the cache for `idle`; returns the bytes forgotten.
    /// Fetches in flight keep their share of the budget and are cached as
    /// usual when they finish.
    pub fn release_if_idle(&self, idle: Duration) -> usize {
        let since = self
            .millis()
            .saturating_sub(self.last_used_ms.load(Ordering::Relaxed));
        if u128::from(since) < idle.as_millis() {
            return 0;
        }
        let forgotten: Vec<Chunk> = {
            let mut s = self.state();
            let mut chunks: Vec<Chunk> = Vec::with_capacity(s.large.len() + s.small.len());
            while let Some((_, chunk)) = s.large.pop_lru().or_else(|| s.small.pop_lru()) {
                s.forget(&chunk);
                chunks.push(chunk);
            }
            s.small_evicted = 0;
            chunks
        };
        let bytes = forgotten.iter().map(|c| c.capacity()).sum();
        drop(forgotten);
        if bytes > 0 {
            release_freed_memory();
        }
        bytes
    }

    fn millis(&self) -> u64 {
        self.created.elapsed().as_millis() as u64
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stats(&self) -> CacheStats {
        let s = self.state();
        CacheStats {
            bytes: s.bytes,
            entries: s.large.len() + s.small.len(),
        }
    }

    /// A cached chunk without fetching.
    pub fn peek(&self, id: &Id) -> Option<Chunk> {
        self.state().lookup(id)
    }

    /// The chunk `id` of `len` bytes, from the cache or from `fetch`, which
    /// runs at most once at a time per id and fills the (empty) buffer it is
    /// given. Errors are not cached: the next read retries.
    pub fn get(
        &self,
        id: &Id,
        len: usize,
        fetch: impl FnOnce(Vec<u8>) -> Result<Vec<u8>>,
    ) -> Result<Chunk> {
        self.last_used_ms.store(self.millis(), Ordering::Relaxed);
        // Chunks leave the cache's books here, and memory once the lock is
        // released: unmapping a megabyte under it would stall every reader.
        let mut evicted = Vec::new();
        // Too big to cache: fetched, handed over, not kept.
        let reserve = if len > self.budget { 0 } else { len };
        let (inflight, buffer) = {
            let mut s = self.state();
            if let Some(chunk) = s.lookup(id) {
                return Ok(chunk);
            }
            if let Some(f) = s.inflight.get(id) {
                let f = f.clone();
                drop(s);
                return wait_for(&f, id);
            }
            let f = Arc::new(Inflight::default());
            s.inflight.insert(*id, f.clone());
            s.fetching += reserve;
            let buffer = self.make_room(&mut s, len, &mut evicted);
            (f, buffer)
        };
        drop(evicted);
        // A recycled buffer is resized to the chunk here, outside the lock;
        // a larger one gives back its tail, a smaller one grows (glibc moves
        // mapped pages with mremap: neither copies nor faults them in again).
        let mut buffer = buffer;
        if buffer.capacity() > len {
            buffer.shrink_to(len);
        } else {
            buffer.reserve_exact(len);
        }
        let fetched = fetch(buffer).map(Arc::new);
        let mut evicted = Vec::new();
        let trim = {
            let mut s = self.state();
            s.inflight.remove(id);
            s.fetching -= reserve;
            if let Ok(chunk) = &fetched {
                self.insert_locked(&mut s, *id, chunk.clone(), &mut evicted);
            }
            let trim = s.small_evicted >= TRIM_AFTER;
            if trim {
                s.small_evicted = 0;
            }
            trim
        };
        drop(evicted);
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

    /// Evict until the chunks being fetched fit beside the cached ones, and
    /// return the buffer of an evicted chunk that no reader holds any more,
    /// emptied, for the fetch to fill.
    fn make_room(&self, s: &mut State, len: usize, evicted: &mut Vec<Chunk>) -> Vec<u8> {
        let mut reusable = None;
        while s.bytes + s.fetching > self.budget {
            let Some(chunk) = self.evict_one(s) else {
                break;
            };
            if reusable.is_some() || !worth_reusing(chunk.capacity(), len) {
                evicted.push(chunk);
                continue;
            }
            match Arc::try_unwrap(chunk) {
                Ok(buffer) => reusable = Some(buffer),
                Err(shared) => evicted.push(shared),
            }
        }
        let mut buffer = reusable.unwrap_or_default();
        buffer.clear();
        buffer
    }

    fn insert_locked(&self, s: &mut State, id: Id, chunk: Chunk, evicted: &mut Vec<Chunk>) {
        let size = chunk.capacity();
        if size > self.budget {
            return; // would evict everything and still not fit
        }
        s.bytes += size;
        let old = if size < SMALL_CHUNK {
            s.small_bytes += size;
            s.small.put(id, chunk)
        } else {
            s.large.put(id, chunk)
        };
        if let Some(old) = old {
            s.forget(&old);
            evicted.push(old);
        }
        while s.bytes + s.fetching > self.budget || s.small_bytes > self.small_budget {
            match self.evict_one(s) {
                Some(chunk) => evicted.push(chunk),
                None => break,
            }
        }
    }

    /// The least recently used small chunk while small ones are over their
    /// share, else the least recently used large one.
    fn evict_one(&self, s: &mut State) -> Option<Chunk> {
        let (_, chunk) = if s.small_bytes > self.small_budget || s.large.is_empty() {
            s.small.pop_lru().or_else(|| s.large.pop_lru())?
        } else {
            s.large.pop_lru()?
        };
        s.forget(&chunk);
        if chunk.capacity() < SMALL_CHUNK {
            s.small_evicted += chunk.capacity();
        }
        Some(chunk)
    }
}

impl State {
    fn lookup(&mut self, id: &Id) -> Option<Chunk> {
        self.large.get(id).or_else(|| self.small.get(id)).cloned()
    }

    /// Take an evicted or replaced chunk off the books.
    fn forget(&mut self, chunk: &Chunk) {
        self.bytes -= chunk.capacity();
        if chunk.capacity() < SMALL_CHUNK {
            self.small_bytes -= chunk.capacity();
        }
    }
}

/// Mapped buffers are worth reusing for chunks that need a mapping too,
/// whatever their sizes: resizing one keeps its pages.
fn worth_reusing(capacity: usize, len: usize) -> bool {
    len >= SMALL_CHUNK && capacity >= SMALL_CHUNK
}

fn wait_for(inflight: &Inflight, id: &Id) -> Result<Chunk> {
    let mut result = inflight.result.lock().unwrap_or_else(|e| e.into_inner());
    while result.is_none() {
        result = inflight
            .ready
            .wait(result)
            .unwrap_or_else(|e| e.into_inner());
    }
    match result.as_ref().expect("set before notify") {
        Ok(chunk) => Ok(chunk.clone()),
        Err(message) => Err(Error::corrupt(format!("data blob {id}"), message.clone())),
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
        // Small chunks get an eighth of the budget: 100 bytes here.
        let cache = ChunkCache::new(800);
        for n in 0..10u8 {
            cache.get(&Id::hash(&[n]), 30, |_| Ok(vec![n; 30])).unwrap();
        }
        let stats = cache.stats();
        assert!(stats.bytes <= 100, "{stats:?}");
        assert_eq!(stats.entries, 3);
        // The most recent survive.
        assert!(cache.peek(&Id::hash(&[9])).is_some());
        assert!(cache.peek(&Id::hash(&[0])).is_none());
    }

    #[test]
    fn small_chunks_keep_to_their_share_and_large_ones_fill_the_rest() {
        let cache = ChunkCache::new(8 * MIB);
        for n in 0..100 {
            fetch(&cache, n, 64 << 10); // 6.4 MiB of small chunks
        }
        assert_eq!(cache.stats().bytes, MIB, "an eighth of the budget");
        for n in 100..107 {
            fetch(&cache, n, MIB);
        }
        assert_eq!(cache.stats().bytes, 8 * MIB);
        assert_eq!(cache.stats().entries, 16 + 7);
        // Another large chunk evicts the oldest large one, not the small.
        fetch(&cache, 107, MIB);
        assert!(cache.peek(&Id::hash(&100u32.to_le_bytes())).is_none());
        assert!(cache.peek(&Id::hash(&99u32.to_le_bytes())).is_some());
    }

    #[test]
    fn oversized_chunks_pass_through_uncached() {
        let cache = ChunkCache::new(10);
        assert_eq!(
            cache
                .get(&Id::hash(b"x"), 50, |_| Ok(vec![1; 50]))
                .unwrap()
                .len(),
            50
        );
        assert_eq!(cache.stats().entries, 0);
    }

    #[test]
    fn an_idle_cache_gives_its_memory_back() {
        let cache = ChunkCache::new(8 * MIB);
        fetch(&cache, 1, MIB);
        fetch(&cache, 2, 1000);
        assert_eq!(
            cache.release_if_idle(Duration::from_secs(3600)),
            0,
            "just used"
        );
        assert_eq!(cache.stats().entries, 2);
        let freed = cache.release_if_idle(Duration::ZERO);
        assert!(freed >= MIB + 1000, "{freed}");
        assert_eq!(cache.stats(), CacheStats::default());

        // Released while a fetch is in flight: that one is still counted,
        // and cached when it lands.
        let id = Id::hash(b"in flight");
        let chunk = cache
            .get(&id, MIB, |mut buffer| {
                assert_eq!(cache.release_if_idle(Duration::ZERO), 0, "nothing cached");
                buffer.resize(MIB, 3);
                Ok(buffer)
            })
            .unwrap();
        assert_eq!(cache.stats().bytes, chunk.capacity());
        assert!(cache.peek(&id).is_some());
        fetch(&cache, 3, MIB);
        assert_eq!(cache.stats().entries, 2);
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
                        .get(&Id::hash(b"shared"), 1000, |_| {
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
            .get(&id, 1, |_| Err(Error::corrupt("data blob", "flipped")))
            .is_err());
        assert!(cache.get(&id, 1, |_| Ok(vec![1])).is_ok());
    }

    const MIB: usize = 1 << 20;

    /// Fetch chunk `n` of `len` bytes; returns the capacity of the buffer
    /// the cache handed to the fetch.
    fn fetch(cache: &ChunkCache, n: u32, len: usize) -> (Chunk, usize) {
        let mut given = 0;
        let chunk = cache
            .get(&Id::hash(&n.to_le_bytes()), len, |mut buffer| {
                assert!(buffer.is_empty());
                given = buffer.capacity();
                buffer.resize(len, n as u8);
                Ok(buffer)
            })
            .unwrap();
        (chunk, given)
    }

    #[test]
    fn a_full_cache_hands_evicted_buffers_to_the_next_fetch() {
        let cache = ChunkCache::new(3 * MIB);
        let mut addresses = Vec::new();
        for n in 0..3 {
            addresses.push(fetch(&cache, n, MIB).0.as_ptr() as usize);
        }
        // Full: the least recent chunk makes room, and its buffer is reused.
        let (chunk, _) = fetch(&cache, 3, MIB);
        assert_eq!(chunk.as_ptr() as usize, addresses[0]);
        assert!(cache.peek(&Id::hash(&0u32.to_le_bytes())).is_none());
        assert_eq!(cache.stats().entries, 3);
        assert!(cache.stats().bytes <= 3 * MIB);
    }

    #[test]
    fn buffers_still_being_read_are_not_reused() {
        let cache = ChunkCache::new(2 * MIB);
        let (held, _) = fetch(&cache, 0, MIB);
        fetch(&cache, 1, MIB);
        let (chunk, _) = fetch(&cache, 2, MIB);
        assert_ne!(chunk.as_ptr(), held.as_ptr(), "chunk 0 is still read");
        assert!(
            held.iter().all(|&b| b == 0),
            "the reader's bytes are intact"
        );
    }

    #[test]
    fn recycled_buffers_fit_the_new_chunk() {
        let cache = ChunkCache::new(4 * MIB);
        fetch(&cache, 0, 4 * MIB);
        assert_eq!(fetch(&cache, 1, MIB).1, MIB, "the tail is given back");
        fetch(&cache, 2, 3 * MIB);
        let (chunk, given) = fetch(&cache, 3, 2 * MIB);
        assert_eq!(given, 2 * MIB, "grown from 1 MiB");
        assert_eq!(chunk.capacity(), 2 * MIB);
        assert!(cache.stats().bytes <= 4 * MIB);
        // Small chunks live on the heap: their buffers are not recycled.
        let cache = ChunkCache::new(MIB);
        fetch(&cache, 0, 1000);
        assert_eq!(fetch(&cache, 1, MIB).1, MIB, "a new buffer, reserved");
    }

    #[test]
    fn chunks_being_fetched_count_against_the_budget() {
        let cache = Arc::new(ChunkCache::new(2 * MIB));
        fetch(&cache, 0, MIB);
        fetch(&cache, 1, MIB);
        let (release, released) = std::sync::mpsc::channel::<()>();
        let slow = {
            let cache = cache.clone();
            std::thread::spawn(move || {
                cache
                    .get(&Id::hash(b"slow"), MIB, |mut buffer| {
                        released.recv().unwrap();
                        buffer.resize(MIB, 9);
                        Ok(buffer)
                    })
                    .unwrap();
            })
        };
        // While the slow fetch runs, one cached chunk has made room for it.
        while cache.stats().entries != 1 {
            std::thread::yield_now();
        }
        assert_eq!(cache.stats().bytes, MIB);
        release.send(()).unwrap();
        slow.join().unwrap();
        assert!(cache.stats().bytes <= 2 * MIB);
    }
}
