//! The command line: parse arguments (`args`), call the module of the
//! same name (`commands`), print the result for people (or as JSON), and
//! choose the exit code (here).

mod args;
mod commands;
mod copy;
pub mod generate;
mod run;

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::display::{human_size, parse_size};
use crate::error::Error;
use crate::repository::location::DiskCache;
use crate::repository::{Location, Repository};
use args::{Cli, Command, Global};
use commands::*;

/// Exit codes, documented in the README.
pub mod exit {
    pub const OK: u8 = 0;
    pub const ERROR: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const PARTIAL: u8 = 3;
    pub const DAMAGED: u8 = 4;
    pub const LOCKED: u8 = 5;
    /// A server the command needs did not answer or refused it (the S3
    /// store down, credentials refused, no such bucket): nothing is wrong
    /// with the repository; fix the host or wait, and run it again.
    pub const UNAVAILABLE: u8 = 6;
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
                Some(Error::Unavailable(_)) => exit::UNAVAILABLE,
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

/// `--repo`, then `SNAPFS_REPO` (clap reads both), then the default;
/// with the disk cache when remote.
fn repo_location(global: &Global) -> Location {
    let location = match &global.repo {
        Some(location) => location.clone(),
        None => Location::Local(default_repo_path()),
    };
    cached(global, location)
}

/// `location` read through the disk cache of `--cache-dir` (a remote one;
/// a folder is read directly), unless `--no-cache`.
fn cached(global: &Global, location: Location) -> Location {
    if global.no_cache {
        return location;
    }
    let budget = match parse_size(&global.disk_cache_size) {
        Ok(budget) => budget,
        Err(e) => {
            eprintln!("snapfs: --disk-cache-size: {e}; reading without the disk cache");
            return location;
        }
    };
    let dir = global.cache_dir.clone().unwrap_or_else(default_cache_dir);
    location.with_cache(Some(DiskCache { dir, budget }))
}

fn default_cache_dir() -> PathBuf {
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/cache/snapfs");
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("snapfs")
}

fn default_repo_path() -> PathBuf {
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
    if let Some(why) = repo.exposure() {
        eprintln!("snapfs: warning: {why}");
    }
}

fn open(global: &Global) -> anyhow::Result<Repository> {
    Ok(Repository::open(repo_location(global))?)
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    let g = &cli.global;
    match cli.command {
        Command::Init(args) => init(g, args),
        Command::Backup(args) => run_backup(g, args),
        Command::Run(args) => run::run(g, args),
        Command::Copy(args) => copy::run(g, *args),
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
