use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::repository::backend::contract::backend_contract;
use crate::repository::backend::local::LocalBackend;

/// A store that counts the reads it serves, and can be taken away.
struct Counting {
    inner: LocalBackend,
    reads: AtomicUsize,
    gone: std::sync::atomic::AtomicBool,
}

impl Counting {
    fn new(root: &Path) -> Arc<Counting> {
        Arc::new(Counting {
            inner: LocalBackend::new(root),
            reads: AtomicUsize::new(0),
            gone: false.into(),
        })
    }

    fn served(&self) -> Result<()> {
        if self.gone.load(Ordering::Relaxed) {
            return Err(Error::Unavailable("the store is down".into()));
        }
        self.reads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl Backend for Counting {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> Result<()> {
        self.inner.create()
    }
    fn occupant(&self) -> Result<Option<String>> {
        self.inner.occupant()
    }
    fn write(&self, kind: FileType, name: &str, data: &[u8]) -> Result<()> {
        self.inner.write(kind, name, data)
    }
    fn write_new(&self, kind: FileType, name: &str, data: &[u8]) -> Result<bool> {
        self.inner.write_new(kind, name, data)
    }
    fn read(&self, kind: FileType, name: &str) -> Result<Vec<u8>> {
        self.served()?;
        self.inner.read(kind, name)
    }
    fn read_range_within(
        &self,
        kind: FileType,
        name: &str,
        offset: u64,
        length: u64,
        buf: &mut Vec<u8>,
    ) -> Result<Range<usize>> {
        self.served()?;
        self.inner
            .read_range_within(kind, name, offset, length, buf)
    }
    fn size(&self, kind: FileType, name: &str) -> Result<u64> {
        self.inner.size(kind, name)
    }
    fn list(&self, kind: FileType) -> Result<Vec<(String, u64)>> {
        self.inner.list(kind)
    }
    fn list_folder(&self, kind: FileType, folder: &str) -> Result<Vec<(String, u64)>> {
        self.inner.list_folder(kind, folder)
    }
    fn list_folders(&self, kind: FileType) -> Result<Vec<String>> {
        self.inner.list_folders(kind)
    }
    fn remove(&self, kind: FileType, name: &str) -> Result<()> {
        self.inner.remove(kind, name)
    }
    fn rename(&self, kind: FileType, from: &str, to: &str) -> Result<()> {
        self.inner.rename(kind, from, to)
    }
    fn exists(&self, kind: FileType, name: &str) -> Result<bool> {
        self.inner.exists(kind, name)
    }
    fn remove_temporary(&self) -> Result<u64> {
        self.inner.remove_temporary()
    }
}

#[test]
fn keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let remote = Arc::new(LocalBackend::new(dir.path().join("store")));
    let cached = CachedBackend::new(remote, &dir.path().join("cache"), 1 << 20).unwrap();
    backend_contract(&cached);
}

#[test]
fn a_warm_cache_answers_without_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Counting::new(&dir.path().join("store"));
    store.create().unwrap();
    let record = b"a snapshot record".to_vec();
    let record_name = format!("alice/{}", Id::hash(&record));
    store
        .write(FileType::Snapshot, &record_name, &record)
        .unwrap();
    let index = b"an index file".to_vec();
    let index_name = Id::hash(&index).to_hex();
    store.write(FileType::Index, &index_name, &index).unwrap();
    let pack = "ab".to_string() + &"1".repeat(62);
    store.write(FileType::Pack, &pack, b"0123456789").unwrap();
    let not_a_hash = "alice/not-its-hash";
    store.write(FileType::Snapshot, not_a_hash, b"x").unwrap();

    let cache = dir.path().join("cache");
    let cached = CachedBackend::new(store.clone(), &cache, 1 << 20).unwrap();
    let read_all = |c: &CachedBackend| {
        assert_eq!(c.read(FileType::Snapshot, &record_name).unwrap(), record);
        assert_eq!(c.read(FileType::Index, &index_name).unwrap(), index);
        assert_eq!(c.read_range(FileType::Pack, &pack, 2, 5).unwrap(), b"23456");
    };
    read_all(&cached);
    assert_eq!(store.reads.load(Ordering::Relaxed), 3);
    read_all(&cached);
    assert_eq!(store.reads.load(Ordering::Relaxed), 3, "all from the cache");

    // A restart, with the store down: still answered, from the disk.
    store.gone.store(true, Ordering::Relaxed);
    let restarted = CachedBackend::new(store.clone(), &cache, 1 << 20).unwrap();
    read_all(&restarted);
    // What was never read, or cannot be checked, needs the store.
    // (The rest of a block that was read is there: the block came whole.)
    assert_eq!(
        restarted.read_range(FileType::Pack, &pack, 0, 2).unwrap(),
        b"01"
    );
    let other = "ab".to_string() + &"9".repeat(62);
    assert!(restarted.read_range(FileType::Pack, &other, 0, 2).is_err());
    assert!(restarted.read(FileType::Snapshot, not_a_hash).is_err());
    // Cached files are private.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&cache), 0o700);
    assert_eq!(mode(&cache.join("index").join(&index_name)), 0o600);
}

#[test]
fn damaged_copies_are_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = Counting::new(&dir.path().join("store"));
    store.create().unwrap();
    let index = b"an index file".to_vec();
    let index_name = Id::hash(&index).to_hex();
    store.write(FileType::Index, &index_name, &index).unwrap();
    let pack = "cd".to_string() + &"2".repeat(62);
    store.write(FileType::Pack, &pack, b"0123456789").unwrap();
    let cache = dir.path().join("cache");
    let cached = CachedBackend::new(store.clone(), &cache, 1 << 20).unwrap();
    cached.read(FileType::Index, &index_name).unwrap();
    cached.read_range(FileType::Pack, &pack, 0, 4).unwrap();

    fs::write(cache.join("index").join(&index_name), b"tampered").unwrap();
    let range = cache.join("blocks").join(&pack).join("0");
    let mut bytes = fs::read(&range).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    fs::write(&range, bytes).unwrap();
    let before = store.reads.load(Ordering::Relaxed);
    // A restart: nothing in memory, the damaged copies on disk.
    let cached = CachedBackend::new(store.clone(), &cache, 1 << 20).unwrap();
    assert_eq!(cached.read(FileType::Index, &index_name).unwrap(), index);
    assert_eq!(
        cached.read_range(FileType::Pack, &pack, 0, 4).unwrap(),
        b"0123"
    );
    assert_eq!(store.reads.load(Ordering::Relaxed), before + 2);
}

#[test]
fn blocks_stay_within_the_budget_least_recently_used_out_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = Counting::new(&dir.path().join("store"));
    store.create().unwrap();
    // Four packs of 100 bytes: one block each.
    let packs: Vec<String> = (0..4)
        .map(|n| format!("{n:02}") + &"3".repeat(62))
        .collect();
    for pack in &packs {
        store.write(FileType::Pack, pack, &[7u8; 100]).unwrap();
    }
    let cache = dir.path().join("cache");
    // Room for three blocks of 100 bytes (plus their hashes).
    let cached = CachedBackend::new(store.clone(), &cache, 3 * 132).unwrap();
    for pack in &packs[..3] {
        cached.read_range(FileType::Pack, pack, 10, 50).unwrap();
    }
    cached
        .read_range(FileType::Pack, &packs[0], 0, 100)
        .unwrap(); // used again
    cached.read_range(FileType::Pack, &packs[3], 0, 1).unwrap();
    let kept = |pack: &str| cache.join("blocks").join(pack).join("0").exists();
    let kept: Vec<bool> = packs.iter().map(|p| kept(p)).collect();
    assert_eq!(kept, [true, false, true, true]);
    // A smaller budget at the next start evicts the oldest.
    drop(cached);
    let smaller = CachedBackend::new(store.clone(), &cache, 132).unwrap();
    assert_eq!(lock(&smaller.blocks).files.len(), 1);
    // A pack removed through the cache takes its blocks along.
    smaller.remove(FileType::Pack, &packs[3]).unwrap();
    assert!(!cache.join("blocks").join(&packs[3]).exists());
    assert_eq!(lock(&smaller.blocks).bytes, 0);
}

#[test]
fn neighbours_come_along_and_a_run_of_blocks_is_one_request() {
    let dir = tempfile::tempdir().unwrap();
    let store = Counting::new(&dir.path().join("store"));
    store.create().unwrap();
    let pack = "aa".to_string() + &"4".repeat(62);
    let bytes: Vec<u8> = (0..(5 << 19)).map(|i: u32| (i % 251) as u8).collect(); // 2.5 MiB
    store.write(FileType::Pack, &pack, &bytes).unwrap();
    let cached = CachedBackend::new(store.clone(), &dir.path().join("cache"), 1 << 30).unwrap();
    let read = |offset: usize, len: usize| {
        let got = cached
            .read_range(FileType::Pack, &pack, offset as u64, len as u64)
            .unwrap();
        assert_eq!(got, &bytes[offset..offset + len], "{offset}+{len}");
    };
    // Two small chunks of one block: one request.
    read(100, 200);
    read(5000, 300);
    assert_eq!(store.reads.load(Ordering::Relaxed), 1);
    // Across blocks 1 and 2 (the last, short): one more request for both.
    read((1 << 20) - 10, (1 << 20) + 20);
    assert_eq!(store.reads.load(Ordering::Relaxed), 2);
    read(bytes.len() - 7, 7);
    assert_eq!(store.reads.load(Ordering::Relaxed), 2);
    // Past the pack's end: an error naming it, as the store's own.
    let err = cached.read_range(FileType::Pack, &pack, bytes.len() as u64 - 3, 10);
    assert!(matches!(err, Err(Error::Corrupt { .. })), "{err:?}");
    let err = cached.read_range(FileType::Pack, &pack, 10 << 20, 10);
    assert!(matches!(err, Err(Error::Corrupt { .. })), "{err:?}");
}

#[test]
fn a_repository_opened_again_reads_no_index_file_from_the_store() {
    use crate::repository::Repository;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let repo = Repository::init(&root, crate::chunker::ChunkerParams::default(), None).unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), vec![5u8; 300_000]).unwrap();
    let opts = crate::backup::BackupOptions {
        paths: vec![src],
        account: "alice".into(),
        hostname: "h".into(),
        time: None,
        excludes: vec![],
        one_file_system: false,
        tags: vec![],
        progress: false,
        lock_wait: std::time::Duration::from_secs(10),
    };
    let snapshot = crate::backup::run(&repo, &opts).unwrap().snapshot;
    drop(repo);

    let store = Counting::new(&root);
    let cache = dir.path().join("cache");
    let open = || {
        let cached = CachedBackend::new(store.clone(), &cache, 1 << 30).unwrap();
        Repository::open_backend(Arc::new(cached)).unwrap()
    };
    let first = open();
    first.load_blob(&snapshot.tree).unwrap();
    let after_first = store.reads.load(Ordering::Relaxed);
    let second = open();
    second.load_blob(&snapshot.tree).unwrap();
    // The config only: index files and the tree came from the disk.
    assert_eq!(store.reads.load(Ordering::Relaxed), after_first + 1);
}

#[test]
fn concurrent_readers_of_one_block_fetch_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Counting::new(&dir.path().join("store"));
    store.create().unwrap();
    let pack = "bb".to_string() + &"5".repeat(62);
    let bytes: Vec<u8> = (0..(4u32 << 20)).map(|i| (i % 253) as u8).collect();
    store.write(FileType::Pack, &pack, &bytes).unwrap();
    let cached = CachedBackend::new(store.clone(), &dir.path().join("cache"), 1 << 30).unwrap();
    std::thread::scope(|scope| {
        for t in 0..8u64 {
            let (cached, pack, bytes) = (&cached, &pack, &bytes);
            scope.spawn(move || {
                for n in 0..4u64 {
                    let offset = ((n << 20) + t * 1000) as usize;
                    let got = cached
                        .read_range(FileType::Pack, pack, offset as u64, 5000)
                        .unwrap();
                    assert_eq!(got, &bytes[offset..offset + 5000]);
                }
            });
        }
    });
    let reads = store.reads.load(Ordering::Relaxed);
    assert!((1..=4).contains(&reads), "{reads} requests for 4 blocks");
}
