//! Prune on a synthetic repository of millions of chunks.
//!
//! `cargo bench --bench prune_synthetic` (CHUNKS=5000000 by default).
//! Builds a repository of tiny chunks in real packs with a real index and
//! one snapshot that needs half of them, then runs the release `snapfs`
//! binary: `snapshots` (open + index load: the baseline) and `prune`, and
//! prints wall time and peak RSS of each (medians of 3 for the baseline;
//! prune runs once because it changes the repository).

use snapfs::chunker::ChunkerParams;
use snapfs::repository::pack::BlobKind;
use snapfs::repository::Repository;
use snapfs::snapshot::{self, Node, NodeKind, Snapshot, Summary, Timestamp, Tree};
use std::process::Command;
use std::time::Instant;

const CHUNKS_PER_FILE: usize = 1000;
const FILES_PER_DIR: usize = 100;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("prune_synthetic: run with `cargo bench --bench prune_synthetic`");
        return;
    }
    let chunks: usize = std::env::var("CHUNKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000_000);
    let dir =
        tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into()))
            .unwrap();
    let path = dir.path().join("repo");
    let started = Instant::now();
    build(&path, chunks);
    println!(
        "built a repository of {chunks} chunks in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let bin = env!("CARGO_BIN_EXE_snapfs");
    let mut baseline = Vec::new();
    for _ in 0..3 {
        baseline.push(run(bin, &path, &["snapshots"]));
    }
    baseline.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    let (base, base_rss) = baseline[1];
    let (prune_time, prune_rss) = run(bin, &path, &["prune"]);
    let index_mib = 52.0 * chunks as f64 / (1 << 20) as f64;
    println!(
        "  open + load index (`snapshots`, baseline): {base:.2} s, peak RSS {base_rss:.0} MiB"
    );
    println!(
        "  prune: {prune_time:.2} s ({:.1}x baseline), peak RSS {prune_rss:.0} MiB ({:.1}x baseline; the index entries alone: {index_mib:.0} MiB)",
        prune_time / base,
        prune_rss / base_rss
    );
}

/// Wall time and peak RSS (MiB) of one run. The peak comes from the
/// process itself (SNAPFS_LOG=debug): rusage of children spawned from this
/// big process would report our own memory, which they share until exec.
fn run(bin: &str, repo: &std::path::Path, args: &[&str]) -> (f64, f64) {
    let started = Instant::now();
    let out = Command::new(bin)
        .args(args)
        .env("SNAPFS_REPO", repo)
        .env("SNAPFS_LOG", "snapfs=debug")
        .output()
        .unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let peak = stderr
        .lines()
        .find_map(|l| l.split("peak RSS ").nth(1))
        .map(parse_mib)
        .unwrap_or(f64::NAN);
    (elapsed, peak)
}

fn parse_mib(text: &str) -> f64 {
    let mut parts = text.split_whitespace();
    let value: f64 = parts
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    match parts.next() {
        Some("GiB") => value * 1024.0,
        Some("KiB") => value / 1024.0,
        Some("B") => value / (1 << 20) as f64,
        _ => value,
    }
}

fn build(path: &std::path::Path, chunks: usize) {
    let params = ChunkerParams {
        min_size: 1024,
        avg_size: 4096,
        max_size: 16384,
    };
    let repo = Repository::init(path, params, Some(4 << 20)).unwrap();
    let packer = repo.packer();
    let mut live_files = Vec::new();
    let mut content = Vec::with_capacity(CHUNKS_PER_FILE);
    for n in 0..chunks {
        // 32 distinct bytes per chunk: tiny, so the bench measures prune's
        // bookkeeping rather than the disk.
        let blob = blake3::hash(&(n as u64).to_le_bytes());
        let (id, _) = packer.add(BlobKind::Data, blob.as_bytes()).unwrap();
        // Every other run of 1000 chunks is needed by the snapshot.
        if (n / CHUNKS_PER_FILE).is_multiple_of(2) {
            content.push(id);
            if content.len() == CHUNKS_PER_FILE {
                live_files.push(std::mem::take(&mut content));
            }
        }
    }
    let mut dirs = Vec::new();
    for (d, files) in live_files.chunks(FILES_PER_DIR).enumerate() {
        let nodes = files
            .iter()
            .enumerate()
            .map(|(f, content)| Node {
                name: format!("file-{f:05}").into_bytes(),
                kind: NodeKind::File,
                mode: 0o644,
                size: 32 * content.len() as u64,
                content: content.clone(),
                ..Node::default()
            })
            .collect();
        let (id, _) = packer
            .add(BlobKind::Tree, &Tree { nodes }.encode())
            .unwrap();
        dirs.push(Node {
            name: format!("dir-{d:05}").into_bytes(),
            kind: NodeKind::Dir,
            mode: 0o755,
            subtree: Some(id),
            ..Node::default()
        });
    }
    let (root, _) = packer
        .add(BlobKind::Tree, &Tree { nodes: dirs }.encode())
        .unwrap();
    packer.flush().unwrap();
    drop(packer);
    let snapshot = Snapshot {
        time: Timestamp {
            secs: 1_764_000_000,
            nanos: 0,
        },
        utc_offset: 0,
        hostname: "bench".into(),
        account: "bench".into(),
        paths: vec![b"/bench".to_vec()],
        tags: vec![],
        tree: root,
        parent: None,
        summary: Summary::default(),
        root: None,
        sources: Vec::new(),
        version: snapfs::snapshot::SNAPSHOT_VERSION,
    };
    snapshot::save(&repo, &snapshot).unwrap();
}
