//! A repository kilometres away: the same operations on a local repository
//! and on an S3 one (a throwaway SeaweedFS) reached through a proxy that
//! adds DELAY_MS of round-trip time (netem is not available everywhere;
//! the proxy delays every piece of data by half of it each way, without
//! limiting the rate).
//!
//! `sudo cargo bench --bench s3_remote` (root: FUSE mounts, page cache
//! dropped). Defaults: DELAY_MS=5, SIZE_MB=256 (one file of random bytes),
//! FILES=2000 small files in 40 folders, RUNS=3 (medians). Prints, each
//! against the local repository in the same run:
//!
//! - backup of the tree, and an unchanged re-backup;
//! - a mount (`--per-account`): time to a listed folder, `find` and
//!   `ls -lR` of a snapshot, a cold sequential read of the large file, and
//!   `tar` of the snapshot; cold (empty disk cache, page cache dropped) and
//!   after a restart (disk cache kept, page cache dropped).

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/servers/mod.rs"]
mod servers;

use common::{drop_caches, env, median};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SNAPFS: &str = env!("CARGO_BIN_EXE_snapfs");
const ACCOUNT: &str = "alice";

/// A TCP proxy to `upstream` on 127.0.0.1, adding `one_way` to every
/// piece of data in each direction. Returns its port.
fn delaying_proxy(upstream: SocketAddr, one_way: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(upstream) else {
                continue;
            };
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            pump(
                client.try_clone().unwrap(),
                server.try_clone().unwrap(),
                one_way,
            );
            pump(server, client, one_way);
        }
    });
    port
}

/// Copy `from` to `to`, each piece of data `delay` after it arrived: a
/// reader stamps and queues, a writer waits for the stamp.
fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0; 256 << 10];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            if tx
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
            {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for (due, data) in rx {
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            if to.write_all(&data).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

/// A repository and how to reach it.
struct Repo {
    label: &'static str,
    location: String,
    env: Vec<(&'static str, String)>,
}

impl Repo {
    fn snapfs(&self, cache: &Path) -> Command {
        let mut cmd = Command::new(SNAPFS);
        cmd.env("SNAPFS_REPO", &self.location)
            .env("SNAPFS_CACHE_DIR", cache)
            .env("SNAPFS_LOG", "warn")
            .envs(self.env.iter().cloned());
        cmd
    }

    fn timed(&self, cache: &Path, args: &[&str]) -> f64 {
        let started = Instant::now();
        let out = self.snapfs(cache).args(args).output().unwrap();
        assert!(out.status.success(), "{} {args:?}: {out:?}", self.label);
        started.elapsed().as_secs_f64()
    }
}

fn make_tree(dir: &Path, size_mb: u64, files: u64) {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut random = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 32) as u8
            })
            .collect()
    };
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("big"), random((size_mb << 20) as usize)).unwrap();
    for n in 0..files {
        let folder = dir.join(format!("site/d{:02}", n % 40));
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(
            folder.join(format!("f{n}.html")),
            random(4096 + (n as usize % 12) * 1024),
        )
        .unwrap();
    }
}

/// The mount figures of one repository: (listed, find, ls -lR, read MB/s, tar).
fn mount_figures(repo: &Repo, cache: &Path, mnt: &Path, size_mb: u64) -> [f64; 5] {
    let mount = || {
        std::fs::create_dir_all(mnt).unwrap();
        drop_caches();
        let started = Instant::now();
        let out = repo
            .snapfs(cache)
            .args(["mount", "--daemon", "--utc", "--per-account"])
            .arg(mnt)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let n = std::fs::read_dir(mnt.join(ACCOUNT)).unwrap().count();
        assert!(n >= 2);
        started.elapsed().as_secs_f64()
    };
    let unmount = || {
        let _ = Command::new(SNAPFS)
            .args(["unmount", "--lazy"])
            .arg(mnt)
            .output();
    };
    let day = mnt.join(ACCOUNT).join("latest/");
    let shell = |script: &str| -> f64 {
        let started = Instant::now();
        let status = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .arg(&day)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "{script}");
        started.elapsed().as_secs_f64()
    };
    let listed = mount();
    let find = shell("find \"$1\" | wc -l");
    unmount();
    mount();
    let ls = shell("ls -lR \"$1\"");
    unmount();
    mount();
    let read = shell("cat \"$1/big\"");
    unmount();
    mount();
    let tar = shell("tar cf - -C \"$1\" . | cat");
    unmount();
    [listed, find, ls, size_mb as f64 / read * 1.048_576, tar]
}

/// MB/s of GETting every pack of `location` whole, four at a time: what
/// the store (and the proxy) can serve on this machine, the ceiling of a
/// cold read through the mount.
fn store_rate(server: &servers::Seaweed, location: &str) -> f64 {
    use snapfs::repository::backend::{Backend, FileType};
    let backend = server.backend_at(location);
    let packs: Vec<String> = backend
        .list(FileType::Pack)
        .unwrap()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let started = Instant::now();
    let bytes: usize = std::thread::scope(|scope| {
        let readers: Vec<_> = packs
            .chunks(packs.len().div_ceil(4))
            .map(|share| {
                let backend = &backend;
                scope.spawn(move || {
                    share
                        .iter()
                        .map(|p| backend.read(FileType::Pack, p).unwrap().len())
                        .sum::<usize>()
                })
            })
            .collect();
        readers.into_iter().map(|r| r.join().unwrap()).sum()
    });
    bytes as f64 / 1e6 / started.elapsed().as_secs_f64()
}

/// Seconds to upload every pack and index file of the local repository
/// at `local` as they are, four at a time, to `location`: what a file
/// copier (rclone) does, the baseline of `snapfs copy`.
fn raw_upload(server: &servers::Seaweed, local: &Path, location: &str) -> f64 {
    use snapfs::repository::backend::{Backend, FileType, LocalBackend};
    let from = LocalBackend::new(local);
    let to = server.backend_at(location);
    let mut files = Vec::new();
    for kind in [FileType::Pack, FileType::Index, FileType::Snapshot] {
        files.extend(
            from.list(kind)
                .unwrap()
                .into_iter()
                .map(|(name, _)| (kind, name)),
        );
    }
    let started = Instant::now();
    std::thread::scope(|scope| {
        for share in files.chunks(files.len().div_ceil(4)) {
            let (from, to) = (&from, &to);
            scope.spawn(move || {
                for (kind, name) in share {
                    to.write(*kind, name, &from.read(*kind, name).unwrap())
                        .unwrap();
                }
            });
        }
    });
    started.elapsed().as_secs_f64()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("s3_remote: run with `sudo cargo bench --bench s3_remote`");
        return;
    }
    let (delay_ms, size_mb, files, runs) = (
        env("DELAY_MS", 5),
        env("SIZE_MB", 256),
        env("FILES", 2000),
        env("RUNS", 3),
    );
    let server = servers::Seaweed::start().expect("weed (tests/run.sh installs it)");
    let upstream: SocketAddr = server
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let port = delaying_proxy(upstream, Duration::from_micros(delay_ms * 500));
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let src = dir.path().join("src");
    make_tree(&src, size_mb, files);
    let src_arg = src.to_str().unwrap();
    println!(
        "s3_remote: {size_mb} MiB file + {files} small files; S3 through {delay_ms} ms of \
         round trip; medians of {runs}"
    );

    let mut rows: Vec<(String, Vec<f64>, Vec<f64>)> = Vec::new();
    let mut rates = Vec::new();
    let mut copies = Vec::new();
    let mut record = |name: &str, local: f64, s3: f64| match rows.iter_mut().find(|r| r.0 == name) {
        Some(row) => {
            row.1.push(local);
            row.2.push(s3);
        }
        None => rows.push((name.to_string(), vec![local], vec![s3])),
    };
    for run in 0..runs {
        let local = Repo {
            label: "local",
            location: dir
                .path()
                .join(format!("local-{run}"))
                .display()
                .to_string(),
            env: Vec::new(),
        };
        let remote = Repo {
            label: "s3",
            location: format!(
                "s3:http://127.0.0.1:{port}/snapfs-test/bench-{}-{run}",
                std::process::id()
            ),
            env: server.env(),
        };
        let cache = dir.path().join(format!("cache-{run}"));
        let backup = ["backup", "--account", ACCOUNT, src_arg];
        let first = (local.timed(&cache, &backup), remote.timed(&cache, &backup));
        record("backup", first.0, first.1);
        let again = (local.timed(&cache, &backup), remote.timed(&cache, &backup));
        record("unchanged re-backup", again.0, again.1);
        rates.push(store_rate(&server, &remote.location));
        // The local repository's two snapshots, copied off-site.
        let copy_to = format!("{}-copy", remote.location);
        remote.timed(&cache, &["--repo", &copy_to, "init"]);
        let copy = remote.timed(
            &cache,
            &["copy", "--from", &local.location, "--to", &copy_to],
        );
        let raw = raw_upload(
            &server,
            Path::new(&local.location),
            &format!("{}-raw", remote.location),
        );
        copies.push((copy, raw));
        // Cold: the backups filled no read cache, but say so: a fresh one.
        let cold = dir.path().join(format!("cold-{run}"));
        let mnt = dir.path().join("mnt");
        let l = mount_figures(&local, &cold, &mnt, size_mb);
        let s = mount_figures(&remote, &cold, &mnt, size_mb);
        let restarted = mount_figures(&remote, &cold, &mnt, size_mb);
        for (i, name) in [
            "mount to a listed folder",
            "find",
            "ls -lR",
            "cold read MB/s",
            "tar",
        ]
        .iter()
        .enumerate()
        {
            record(&format!("{name} (cold)"), l[i], s[i]);
            record(&format!("{name} (after a restart)"), l[i], restarted[i]);
        }
    }
    println!(
        "  the store's own rate (every pack GET whole, 4 at a time): {:.0} MB/s",
        median(rates)
    );
    let (copy, raw): (Vec<f64>, Vec<f64>) = copies.into_iter().unzip();
    let (copy, raw) = (median(copy), median(raw));
    println!(
        "  copy of the local repository to S3: snapfs copy {copy:.3} s, its files uploaded \
         as they are (4 at a time) {raw:.3} s ({:.2}x)",
        copy / raw
    );
    for (name, local, s3) in rows {
        let (l, s) = (median(local), median(s3));
        let unit = if name.contains("MB/s") { "" } else { " s" };
        println!(
            "  {name}: local {l:.3}{unit}, S3 {s:.3}{unit} ({:.2}x)",
            s / l
        );
    }
}
