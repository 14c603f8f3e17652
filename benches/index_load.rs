//! How long opening a repository takes with a large index, and how much
//! memory the index needs per chunk.
//!
//! `cargo bench --bench index_load` (CHUNKS=5000000 to change the size).
//! Prints medians of 5 runs. The baseline in the same run is reading the
//! same index files' bytes from disk without decoding them.

use snapfs::chunker::ChunkerParams;
use snapfs::id::Id;
use snapfs::repository::backend::FileType;
use snapfs::repository::index::{IndexFile, IndexPack};
use snapfs::repository::pack::{BlobKind, Compression, PackBlob};
use snapfs::repository::Repository;
use std::time::Instant;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    // `cargo test --all-targets` runs bench binaries too, without `--bench`:
    // a debug-build benchmark would only slow the test run down.
    if !std::env::args().any(|a| a == "--bench") {
        println!("index_load: run with `cargo bench --bench index_load`");
        return;
    }
    let chunks: u64 = std::env::var("CHUNKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(dir.path(), ChunkerParams::default(), None).unwrap();
    // 16 MiB packs of ~1 MiB chunks hold ~16 chunks each; index files are
    // written every 64 packs by the packer, about 1000 chunks per file.
    let per_pack = 16;
    let per_file = 64 * per_pack;
    let mut n = 0u64;
    while n < chunks {
        let mut file = IndexFile::default();
        while n < chunks && (file.packs.len() as u64) * per_pack < per_file {
            let pack = Id::hash(&(n, "pack").0.to_le_bytes());
            let blobs = (0..per_pack.min(chunks - n))
                .map(|i| PackBlob {
                    id: Id::hash(&(n + i).to_le_bytes()),
                    kind: BlobKind::Data,
                    compression: Compression::Zstd,
                    offset: 12 + i as u32 * 1_000_000,
                    length: 900_000,
                    raw_length: 1_048_576,
                })
                .collect::<Vec<_>>();
            n += blobs.len() as u64;
            file.packs.push(IndexPack { id: pack, blobs });
        }
        repo.write_index_file(&file).unwrap();
    }
    drop(repo);
    let files = snapfs::repository::backend::LocalBackend::new(dir.path());
    use snapfs::repository::backend::Backend;
    let names = files.list(FileType::Index).unwrap();

    let mut raw = Vec::new();
    let mut load = Vec::new();
    let mut per_chunk = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let mut bytes = 0;
        for (name, _) in &names {
            bytes += files.read(FileType::Index, name).unwrap().len();
        }
        raw.push(t.elapsed().as_secs_f64());
        std::hint::black_box(bytes);

        let before = rss_kib();
        let t = Instant::now();
        let repo = Repository::open(dir.path()).unwrap();
        load.push(t.elapsed().as_secs_f64());
        per_chunk.push((rss_kib().saturating_sub(before)) as f64 * 1024.0 / chunks as f64);
        assert_eq!(repo.index().len() as u64, chunks);
        drop(repo);
    }
    let (raw, load) = (median(raw), median(load));
    println!("index of {chunks} chunks in {} files", names.len());
    println!("  read files only (baseline): {:.3} s", raw);
    println!(
        "  open repository (decode + sort): {:.3} s  ({:.1}x baseline)",
        load,
        load / raw
    );
    println!(
        "  resident memory per chunk: {:.0} bytes (median of 5)",
        median(per_chunk)
    );
}
