//! The command line: parse arguments, call the module of the same name,
//! print the result for people (or as JSON), and choose the exit code.

use anyhow::Context;
use chrono::{DateTime, Local, NaiveDateTime, TimeZone};
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::chunker::ChunkerParams;
use crate::display::{escape_name, human_size, parse_size};
use crate::error::Error;
use crate::id::Id;
use crate::repository::Repository;
use crate::snapshot::{self, Snapshot, SnapshotEntry, Timestamp};
use crate::{backup, check, forget, ls, migrate, mount, prune, restore};

/// Exit codes, documented in the README.
pub mod exit {
    pub const OK: u8 = 0;
    pub const ERROR: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const PARTIAL: u8 = 3;
    pub const DAMAGED: u8 = 4;
    pub const LOCKED: u8 = 5;
}

#[derive(Parser)]
#[command(
    name = "snapfs",
    version,
    about = "Deduplicating daily backups, browsable as dated read-only folders"
)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// Repository folder [default: /var/lib/snapfs/repository as root,
    /// ~/.local/share/snapfs/repository otherwise]
    #[arg(long, global = true, env = "SNAPFS_REPO")]
    repo: Option<PathBuf>,
    /// Print results as JSON for scripts.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Create an empty repository.
    Init(InitArgs),
    /// Back up paths into a new snapshot (creates the repository if needed).
    Backup(BackupArgs),
    /// List snapshots, oldest first.
    Snapshots {
        /// Only this account's snapshots.
        #[arg(long)]
        account: Option<String>,
    },
    /// List the files of a snapshot.
    Ls {
        /// Snapshot id or prefix, `latest`, or a date YYYY-MM-DD.
        snapshot: String,
        /// Path inside the snapshot.
        path: Option<PathBuf>,
        /// Long listing: mode, links, owner, group, size, time.
        #[arg(short, long)]
        long: bool,
        /// List subdirectories too.
        #[arg(short = 'R', long)]
        recursive: bool,
        #[arg(long)]
        account: Option<String>,
    },
    /// Restore a snapshot, or a path in it, into a folder.
    Restore {
        /// SNAPSHOT or SNAPSHOT:PATH
        snapshot: String,
        #[arg(long, short)]
        target: PathBuf,
        #[arg(long)]
        account: Option<String>,
    },
    /// Remove snapshots that a retention policy does not keep (data stays
    /// until prune). Without options: the repository's policy (30 days).
    Forget(ForgetArgs),
    /// Delete data that no snapshot needs and repack half-empty packs.
    Prune {
        /// Repack packs with more than this share unused, e.g. 5%.
        #[arg(long, default_value = "5%")]
        max_unused: String,
        /// Show what would be deleted without deleting.
        #[arg(long)]
        dry_run: bool,
        /// How long to wait for running backups, e.g. 30m.
        #[arg(long, default_value = "2h", value_parser = parse_wait)]
        lock_wait: std::time::Duration,
    },
    /// Move a repository made by snapfs 0.1 to layout 2 (snapshot files
    /// in a folder per account); safe to interrupt and run again.
    Migrate {
        /// How long to wait for running backups, e.g. 30m.
        #[arg(long, default_value = "2h", value_parser = parse_wait)]
        lock_wait: std::time::Duration,
    },
    /// Remove stale locks (of dead processes); --all removes every lock.
    Unlock {
        #[arg(long)]
        all: bool,
    },
    /// Show the snapshots as dated, read-only folders until unmounted.
    Mount(MountArgs),
    /// Unmount a snapfs mount (and stale ones stacked under it), reached
    /// without following links; nothing mounted there is not an error.
    #[command(alias = "umount")]
    Unmount {
        mountpoint: PathBuf,
        /// Detach a busy mount now; the kernel finishes when it is left.
        #[arg(long, short = 'z')]
        lazy: bool,
    },
    /// Check the repository's integrity.
    Check {
        /// Also read all data and verify every chunk's hash.
        #[arg(long)]
        read_data: bool,
    },
}

#[derive(Args)]
struct ForgetArgs {
    /// Remove exactly these snapshots (ids or id prefixes, `latest`, dates)
    /// instead of applying a policy.
    #[arg(conflicts_with_all = ["keep_within", "keep_last", "keep_daily", "keep_weekly", "keep_monthly", "all"])]
    snapshots: Vec<String>,
    /// Only this account's snapshots.
    #[arg(long)]
    account: Option<String>,
    /// Remove every snapshot of the account given with --account (one that
    /// left the platform).
    #[arg(long, requires = "account", conflicts_with_all = ["keep_within", "keep_last", "keep_daily", "keep_weekly", "keep_monthly"])]
    all: bool,
    /// Keep snapshots younger than this relative to the newest (30d, 12h).
    #[arg(long, value_parser = crate::retention::parse_duration)]
    keep_within: Option<chrono::Duration>,
    #[arg(long)]
    keep_last: Option<u32>,
    #[arg(long)]
    keep_daily: Option<u32>,
    #[arg(long)]
    keep_weekly: Option<u32>,
    #[arg(long)]
    keep_monthly: Option<u32>,
    /// Show what would be removed without removing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args)]
struct InitArgs {
    /// Chunk size bounds, e.g. 512KiB/1MiB/8MiB (the default).
    #[arg(long, value_name = "MIN/AVG/MAX")]
    chunk_sizes: Option<String>,
    /// Target pack size [default: 16MiB].
    #[arg(long)]
    pack_size: Option<String>,
}

#[derive(Args)]
struct BackupArgs {
    /// What to back up. One folder: its contents become the snapshot root.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// The hosting account the snapshot belongs to [default: current user].
    #[arg(long)]
    account: Option<String>,
    /// Date the snapshot, local time "YYYY-MM-DD HH:MM:SS" or RFC 3339.
    #[arg(long)]
    time: Option<String>,
    /// Skip paths matching this glob (full path or base name); repeatable.
    #[arg(long, short)]
    exclude: Vec<String>,
    /// Do not cross file system boundaries.
    #[arg(long, short = 'x')]
    one_file_system: bool,
    /// Label the snapshot; repeatable.
    #[arg(long)]
    tag: Vec<String>,
    /// Hostname to record [default: this host's name].
    #[arg(long)]
    host: Option<String>,
    /// How long to wait for a running prune, e.g. 30m.
    #[arg(long, default_value = "2h", value_parser = parse_wait)]
    lock_wait: std::time::Duration,
}

fn parse_wait(text: &str) -> Result<std::time::Duration, String> {
    if text == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let d = crate::retention::parse_duration(text)?;
    d.to_std().map_err(|e| e.to_string())
}

#[derive(Args)]
struct MountArgs {
    /// An empty folder to mount on.
    mountpoint: PathBuf,
    /// Only this account's snapshots.
    #[arg(long)]
    account: Option<String>,
    /// Memory for decompressed chunks.
    #[arg(long, default_value = "256MiB")]
    cache_size: String,
    /// Name the folders by UTC date instead of the local one.
    #[arg(long)]
    utc: bool,
    /// Let every user in; the kernel enforces the snapshots' owners and modes.
    #[arg(long)]
    allow_other: bool,
    /// Return once mounted and serve in the background.
    #[arg(long)]
    daemon: bool,
    /// Create the mount point and missing folders on its way, each owned
    /// like the folder it is made in.
    #[arg(long)]
    mkdir: bool,
}

pub fn main() -> ExitCode {
    // Die quietly on a closed pipe (`snapfs ls latest | head`) like other
    // Unix tools, instead of panicking in println!.
    // SAFETY: setting a signal disposition before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    crate::logging::init();
    let result = run(cli);
    log_peak_memory();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("snapfs: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            let code = match e.downcast_ref::<Error>() {
                Some(Error::Locked(_)) => exit::LOCKED,
                Some(Error::Corrupt { .. }) => exit::DAMAGED,
                _ => exit::ERROR,
            };
            ExitCode::from(code)
        }
    }
}

/// Peak resident memory, for operators sizing machines (SNAPFS_LOG=debug)
/// and for the benchmarks.
fn log_peak_memory() {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(line) = status.lines().find(|l| l.starts_with("VmHWM:")) {
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        tracing::debug!("peak RSS {}", human_size(kib * 1024));
    }
}

/// `--repo`, then `SNAPFS_REPO` (clap reads it), then the default.
fn repo_path(global: &Global) -> PathBuf {
    if let Some(p) = &global.repo {
        return p.clone();
    }
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/snapfs/repository");
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    data.join("snapfs/repository")
}

/// Commands that write say so when other users can read the repository.
fn warn_if_exposed(repo: &Repository) {
    if let Some(why) = repo.backend().exposure() {
        eprintln!("snapfs: warning: {why}");
    }
}

fn open(global: &Global) -> anyhow::Result<Repository> {
    Ok(Repository::open(&repo_path(global))?)
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    let g = &cli.global;
    match cli.command {
        Command::Init(args) => init(g, args),
        Command::Backup(args) => run_backup(g, args),
        Command::Snapshots { account } => snapshots(g, account),
        Command::Ls {
            snapshot,
            path,
            long,
            recursive,
            account,
        } => run_ls(g, &snapshot, path, long, recursive, account.as_deref()),
        Command::Restore {
            snapshot,
            target,
            account,
        } => run_restore(g, &snapshot, &target, account.as_deref()),
        Command::Mount(args) => run_mount(g, args),
        Command::Check { read_data } => run_check(g, read_data),
        Command::Forget(args) => run_forget(g, args),
        Command::Prune {
            max_unused,
            dry_run,
            lock_wait,
        } => run_prune(g, &max_unused, dry_run, lock_wait),
        Command::Migrate { lock_wait } => run_migrate(g, lock_wait),
        Command::Unlock { all } => run_unlock(g, all),
        Command::Unmount { mountpoint, lazy } => run_unmount(g, &mountpoint, lazy),
    }
}

fn run_migrate(g: &Global, lock_wait: std::time::Duration) -> anyhow::Result<u8> {
    let repo = Repository::open_without_index(&repo_path(g))?;
    warn_if_exposed(&repo);
    let report = migrate::run(&repo, lock_wait)?;
    if g.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let layout = if report.layout_before == report.layout_after {
            format!("already layout {}", report.layout_after)
        } else {
            format!("layout {} -> {}", report.layout_before, report.layout_after)
        };
        println!(
            "{layout}: {} snapshot files moved into account folders",
            report.moved
        );
        for name in &report.left_unreadable {
            println!("left in place, not a readable snapshot: {name} (see `snapfs check`)");
        }
    }
    Ok(exit::OK)
}

fn run_mount(g: &Global, args: MountArgs) -> anyhow::Result<u8> {
    let cache_bytes = parse_size(&args.cache_size).map_err(anyhow::Error::msg)?;
    let opts = mount::MountOptions {
        mountpoint: args.mountpoint,
        allow_other: args.allow_other,
        mkdir: args.mkdir,
        threads: 8,
        view: mount::snapshot_fs::Options {
            account: args.account,
            utc: args.utc,
            cache_bytes: usize::try_from(cache_bytes)?,
            ..Default::default()
        },
    };
    let repo = repo_path(g);
    if args.daemon {
        mount::daemon(&repo, &opts)?;
        return Ok(exit::OK);
    }
    let mounted = mount::mount(&repo, &opts)?;
    eprintln!(
        "snapfs: mounted {} at {}; stop with Ctrl-C or `fusermount3 -u {}`",
        repo.display(),
        mounted.mountpoint().display(),
        mounted.mountpoint().display()
    );
    mounted.serve()?;
    Ok(exit::OK)
}

fn parse_chunk_sizes(text: &str) -> anyhow::Result<ChunkerParams> {
    let parts: Vec<&str> = text.split('/').collect();
    let [min, avg, max] = parts.as_slice() else {
        anyhow::bail!("--chunk-sizes wants MIN/AVG/MAX, got {text:?}");
    };
    let size = |s: &str| -> anyhow::Result<u32> {
        Ok(u32::try_from(parse_size(s).map_err(anyhow::Error::msg)?)?)
    };
    Ok(ChunkerParams {
        min_size: size(min)?,
        avg_size: size(avg)?,
        max_size: size(max)?,
    })
}

fn init(g: &Global, args: InitArgs) -> anyhow::Result<u8> {
    let path = repo_path(g);
    let chunker = match &args.chunk_sizes {
        Some(t) => parse_chunk_sizes(t)?,
        None => ChunkerParams::default(),
    };
    let pack_size = match &args.pack_size {
        Some(t) => Some(u32::try_from(parse_size(t).map_err(anyhow::Error::msg)?)?),
        None => None,
    };
    let repo = Repository::init(&path, chunker, pack_size)?;
    warn_if_exposed(&repo);
    if g.json {
        println!(
            "{}",
            json!({"repository": repo.location(), "id": repo.config().id.to_hex()})
        );
    } else {
        println!(
            "created snapfs repository {} at {}",
            repo.config().id.short(),
            repo.location()
        );
    }
    Ok(exit::OK)
}

fn parse_time(text: &str) -> anyhow::Result<(Timestamp, i32)> {
    let local = if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        t
    } else {
        let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
            .or_else(|_| {
                NaiveDateTime::parse_from_str(&format!("{text} 00:00:00"), "%Y-%m-%d %H:%M:%S")
            })
            .with_context(|| {
                format!("--time {text:?}: expected \"YYYY-MM-DD HH:MM:SS\" or RFC 3339")
            })?;
        Local
            .from_local_datetime(&naive)
            .earliest()
            .with_context(|| format!("--time {text:?} does not exist in the local time zone"))?
            .fixed_offset()
    };
    let utc = local.to_utc();
    Ok((
        Timestamp {
            secs: utc.timestamp(),
            nanos: utc.timestamp_subsec_nanos(),
        },
        local.offset().local_minus_utc(),
    ))
}

fn run_backup(g: &Global, args: BackupArgs) -> anyhow::Result<u8> {
    // Sources first: `backup /typo` must fail before it creates a repository.
    let sources = backup::Sources::open(&args.paths)?;
    let path = repo_path(g);
    let repo = if Repository::exists(&path) {
        // backup::run reads the index under its lock.
        Repository::open_without_index(&path)?
    } else {
        eprintln!(
            "snapfs: no repository at {} yet; creating one",
            path.display()
        );
        Repository::init(&path, ChunkerParams::default(), None)?
    };
    warn_if_exposed(&repo);
    let opts = backup::BackupOptions {
        paths: args.paths,
        account: args.account.unwrap_or_else(crate::metadata::current_user),
        hostname: args.host.unwrap_or_else(crate::metadata::hostname),
        time: args.time.as_deref().map(parse_time).transpose()?,
        excludes: args.exclude,
        one_file_system: args.one_file_system,
        tags: args.tag,
        progress: !g.json,
        lock_wait: args.lock_wait,
    };
    let outcome = backup::run_sources(&repo, &opts, sources)?;
    if g.json {
        let mut value = snapshot_json(&outcome.id, &outcome.snapshot);
        value["warnings"] = json!(outcome.warnings);
        println!("{value}");
    } else {
        let s = &outcome.snapshot.summary;
        println!(
            "snapshot {} saved: {} files ({} unchanged), {} dirs, {} read, {} added ({} stored), {:.1}s{}",
            outcome.id.short(),
            s.files,
            s.files_unchanged,
            s.dirs,
            human_size(s.bytes_read),
            human_size(s.bytes_added),
            human_size(s.bytes_stored),
            s.duration_ms as f64 / 1000.0,
            if outcome.warnings.is_empty() {
                String::new()
            } else {
                format!("; PARTIAL: {} entries could not be read", outcome.warnings.len())
            }
        );
    }
    Ok(if outcome.warnings.is_empty() {
        exit::OK
    } else {
        exit::PARTIAL
    })
}

pub fn snapshot_json(id: &Id, s: &Snapshot) -> serde_json::Value {
    json!({
        "id": id.to_hex(),
        "short_id": id.short(),
        "time": s.taken_at().to_rfc3339(),
        "account": s.account,
        "hostname": s.hostname,
        "paths": s.paths_lossy(),
        "tags": s.tags,
        "tree": s.tree.to_hex(),
        "parent": s.parent.map(|p| p.to_hex()),
        "summary": {
            "files": s.summary.files,
            "dirs": s.summary.dirs,
            "files_read": s.summary.files_read,
            "files_unchanged": s.summary.files_unchanged,
            "bytes_read": s.summary.bytes_read,
            "bytes_total": s.summary.bytes_total,
            "bytes_added": s.summary.bytes_added,
            "bytes_stored": s.summary.bytes_stored,
            "errors": s.summary.errors,
            "duration_ms": s.summary.duration_ms,
        },
    })
}

fn snapshots(g: &Global, account: Option<String>) -> anyhow::Result<u8> {
    let repo = open(g)?;
    let entries: Vec<SnapshotEntry> = snapshot::list_warn(&repo, account.as_deref())?;
    if g.json {
        let list: Vec<_> = entries
            .iter()
            .map(|e| snapshot_json(&e.id, &e.snapshot))
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(exit::OK);
    }
    println!(
        "{:<8}  {:<25}  {:<12}  {:<12}  {:>10}  paths",
        "id", "time", "account", "host", "size"
    );
    for e in &entries {
        let s = &e.snapshot;
        println!(
            "{:<8}  {:<25}  {:<12}  {:<12}  {:>10}  {}",
            e.id.short(),
            s.taken_at().format("%Y-%m-%d %H:%M:%S %:z"),
            s.account,
            s.hostname,
            human_size(s.summary.bytes_total),
            s.paths_lossy().join(" ")
        );
    }
    println!("{} snapshots", entries.len());
    Ok(exit::OK)
}

fn select(
    repo: &Repository,
    selector: &str,
    account: Option<&str>,
) -> anyhow::Result<SnapshotEntry> {
    let entries = snapshot::list_warn(repo, account)?;
    Ok(snapshot::select(&entries, selector, account)?)
}

fn run_ls(
    g: &Global,
    selector: &str,
    path: Option<PathBuf>,
    long: bool,
    recursive: bool,
    account: Option<&str>,
) -> anyhow::Result<u8> {
    use std::os::unix::ffi::OsStrExt;
    let repo = open(g)?;
    let entry = select(&repo, selector, account)?;
    let path = path
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .unwrap_or_default();
    let listed = ls::list(&repo, &entry.snapshot, &path, recursive)?;
    if g.json {
        let items: Vec<_> = listed.iter().map(|(p, n)| ls::to_listed(p, n)).collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
    } else {
        for (p, node) in &listed {
            if long {
                println!("{}", ls::long_line(p, node));
            } else {
                println!("{}", escape_name(p));
            }
        }
    }
    Ok(exit::OK)
}

fn run_restore(
    g: &Global,
    spec: &str,
    target: &std::path::Path,
    account: Option<&str>,
) -> anyhow::Result<u8> {
    let (selector, path) = spec.split_once(':').unwrap_or((spec, ""));
    let repo = open(g)?;
    let entry = select(&repo, selector, account)?;
    let root = entry.snapshot.root.as_ref();
    let outcome = restore::run(&repo, &entry.snapshot.tree, path.as_bytes(), target, root)?;
    if g.json {
        println!(
            "{}",
            json!({"snapshot": entry.id.to_hex(), "target": target, "files": outcome.files,
                   "dirs": outcome.dirs, "bytes": outcome.bytes, "errors": outcome.errors})
        );
    } else {
        println!(
            "restored snapshot {} to {}: {} files, {} dirs, {}{}",
            entry.id.short(),
            target.display(),
            outcome.files,
            outcome.dirs,
            human_size(outcome.bytes),
            if outcome.errors.is_empty() {
                String::new()
            } else {
                format!("; {} entries FAILED", outcome.errors.len())
            }
        );
    }
    Ok(if outcome.errors.is_empty() {
        exit::OK
    } else {
        exit::DAMAGED
    })
}

fn run_check(g: &Global, read_data: bool) -> anyhow::Result<u8> {
    let repo = open(g)?;
    let report = check::run(&repo, read_data)?;
    if g.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for d in &report.damage {
            println!("damaged: {} {}", d.object, d.problem);
            for a in &d.affected {
                println!("  needed by {a}");
            }
            if d.affected_total > d.affected.len() {
                println!("  ... and {} more", d.affected_total - d.affected.len());
            }
        }
        for p in &report.unreferenced_packs {
            println!(
                "pack {p} is not in any index; `snapfs prune` indexes what snapshots need of it \
                 and removes the rest"
            );
        }
        for f in &report.misplaced_snapshots {
            println!(
                "snapshot file {f} is not in its account's folder (`snapfs migrate` moves it)"
            );
        }
        println!(
            "checked {} snapshots, {} trees, {} packs{}: {}",
            report.snapshots,
            report.trees,
            report.packs,
            if read_data {
                format!(", {} blobs read", report.blobs_read)
            } else {
                String::new()
            },
            if report.is_ok() {
                "no errors".to_string()
            } else {
                format!("{} problems", report.damage.len())
            }
        );
    }
    Ok(if report.is_ok() {
        exit::OK
    } else {
        exit::DAMAGED
    })
}

fn run_forget(g: &Global, args: ForgetArgs) -> anyhow::Result<u8> {
    let repo = open(g)?;
    warn_if_exposed(&repo);
    let by_policy = !args.all && args.snapshots.is_empty();
    let what = if args.all {
        forget::Selection::All
    } else if !args.snapshots.is_empty() {
        forget::Selection::Snapshots(args.snapshots)
    } else {
        forget::Selection::Policy(crate::retention::Policy {
            keep_within: args.keep_within,
            keep_last: args.keep_last,
            keep_daily: args.keep_daily,
            keep_weekly: args.keep_weekly,
            keep_monthly: args.keep_monthly,
        })
    };
    let opts = forget::ForgetOptions {
        account: args.account,
        what,
        dry_run: args.dry_run,
    };
    let groups = forget::run(&repo, &opts)?;
    if g.json {
        println!("{}", serde_json::to_string_pretty(&groups)?);
        return Ok(exit::OK);
    }
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for group in &groups {
        if !by_policy && group.remove.is_empty() {
            continue;
        }
        println!("account {} paths {}:", group.account, group.paths.join(" "));
        for k in group.keep.iter().filter(|_| by_policy) {
            let reasons: Vec<String> = k
                .reasons
                .iter()
                .map(|r| format!("{r:?}").to_lowercase())
                .collect();
            println!(
                "  keep   {} {}  ({})",
                &k.id[..8],
                k.time,
                reasons.join(", ")
            );
        }
        for r in &group.remove {
            println!("  {verb} {} {}", &r.id[..8], r.time);
        }
    }
    let removed: usize = groups.iter().map(|g| g.remove.len()).sum();
    let kept: usize = groups.iter().map(|g| g.keep.len()).sum();
    println!(
        "{kept} snapshots kept, {removed} {verb}{}",
        if removed > 0 && !args.dry_run {
            "; run `snapfs prune` to free their space"
        } else {
            ""
        }
    );
    Ok(exit::OK)
}

fn run_prune(
    g: &Global,
    max_unused: &str,
    dry_run: bool,
    lock_wait: std::time::Duration,
) -> anyhow::Result<u8> {
    let fraction = max_unused
        .trim()
        .strip_suffix('%')
        .unwrap_or(max_unused)
        .parse::<f64>()
        .ok()
        .filter(|p| (0.0..=100.0).contains(p))
        .with_context(|| format!("--max-unused {max_unused:?}: expected a percentage like 5%"))?
        / 100.0;
    // prune::run reads the index under its lock.
    let repo = Repository::open_without_index(&repo_path(g))?;
    warn_if_exposed(&repo);
    let report = prune::run(
        &repo,
        &prune::PruneOptions {
            max_unused: fraction,
            dry_run,
            lock_wait,
        },
    )?;
    if g.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{}{} of {} packs deleted, {} repacked ({} of live data copied, on disk); {} blobs live, {} unused; {} {}",
            if dry_run { "dry run: " } else { "" },
            report.packs_deleted,
            report.packs_before,
            report.packs_repacked,
            human_size(report.bytes_repacked),
            report.blobs_live,
            report.blobs_unused,
            human_size(report.bytes_freed),
            if dry_run { "would be freed" } else { "freed" },
        );
        if report.blobs_missing > 0 {
            println!(
                "warning: {} chunks that snapshots need are missing; run `snapfs check`",
                report.blobs_missing
            );
        }
    }
    Ok(exit::OK)
}

fn run_unmount(g: &Global, mountpoint: &std::path::Path, lazy: bool) -> anyhow::Result<u8> {
    use mount::mountpoint::{MountPoint, Unmounted};
    // A folder that does not exist holds no mount: a unit's clean-up
    // before the first start must not fail on it.
    let unmounted = match MountPoint::resolve(mountpoint, false) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => 0,
        place => match place?.unmount(lazy)? {
            Unmounted::NotMounted => 0,
            Unmounted::Unmounted(n) => n,
        },
    };
    if g.json {
        println!("{}", json!({ "unmounted": unmounted }));
    } else if unmounted == 0 {
        println!("nothing mounted at {}", mountpoint.display());
    } else {
        println!("unmounted {}", mountpoint.display());
    }
    Ok(exit::OK)
}

fn run_unlock(g: &Global, all: bool) -> anyhow::Result<u8> {
    let repo = open(g)?;
    warn_if_exposed(&repo);
    let removed = crate::repository::lock::unlock(&**repo.backend(), all)?;
    if g.json {
        println!("{}", json!({ "removed": removed }));
    } else {
        for r in &removed {
            println!("removed lock {r}");
        }
        println!("{} locks removed", removed.len());
    }
    Ok(exit::OK)
}
