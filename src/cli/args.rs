//! What the command line accepts: every command, its options and their
//! documentation (`--help`, the README's command reference follows it).

use clap::builder::{OsStringValueParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

use crate::repository::Location;

/// `--repo` as a location: any path (UTF-8 or not), or `s3:...`; a
/// malformed one is a usage error, found before anything runs.
fn location_parser() -> impl TypedValueParser<Value = Location> {
    OsStringValueParser::new().try_map(|text| Location::parse_os(&text))
}

#[derive(Parser)]
#[command(
    name = "snapfs",
    version,
    about = "Deduplicating daily backups, browsable as dated read-only folders"
)]
pub(super) struct Cli {
    #[command(flatten)]
    pub(super) global: Global,
    #[command(subcommand)]
    pub(super) command: Command,
}

#[derive(Args)]
pub(super) struct Global {
    /// Repository: a folder, or s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]
    /// with credentials in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY
    /// [default: /var/lib/snapfs/repository as root,
    /// ~/.local/share/snapfs/repository otherwise]
    #[arg(long, global = true, env = "SNAPFS_REPO", value_parser = location_parser())]
    pub(super) repo: Option<Location>,
    /// Print results as JSON for scripts.
    #[arg(long, global = true)]
    pub(super) json: bool,
    /// Keep what is read from a remote (S3) repository on local disk here:
    /// index files, snapshot records and the chunks read, verified by hash
    /// [default: /var/cache/snapfs as root, ~/.cache/snapfs otherwise]
    #[arg(long, global = true, env = "SNAPFS_CACHE_DIR", value_name = "DIR")]
    pub(super) cache_dir: Option<PathBuf>,
    /// Read a remote repository without the disk cache.
    #[arg(
        long,
        global = true,
        env = "SNAPFS_NO_CACHE",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub(super) no_cache: bool,
    /// Disk space for chunks in the cache, per repository (index files and
    /// records come on top).
    #[arg(
        long,
        global = true,
        env = "SNAPFS_DISK_CACHE_SIZE",
        default_value = "4GiB"
    )]
    pub(super) disk_cache_size: String,
}

#[derive(Subcommand)]
pub(super) enum Command {
    /// Create an empty repository.
    Init(InitArgs),
    /// Back up paths into a new snapshot (creates the repository if needed).
    Backup(BackupArgs),
    /// Back up every account of this host (files, databases, mail), each
    /// into one snapshot, as the host configuration says.
    Run(RunArgs),
    /// Copy the snapshots that one repository lacks from another, with
    /// only the chunks it lacks, verified on the way: a host's local
    /// repository to the off-site one. A killed copy, run again, sends
    /// what is still missing.
    Copy(Box<CopyArgs>),
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
        /// Choose the snapshot among this account's only.
        #[arg(long)]
        account: Option<String>,
    },
    /// Restore a snapshot, or a path in it, into a folder.
    Restore {
        /// SNAPSHOT or SNAPSHOT:PATH
        snapshot: String,
        /// The folder to restore into (created if missing).
        #[arg(long, short)]
        target: PathBuf,
        /// Choose the snapshot among this account's only.
        #[arg(long)]
        account: Option<String>,
    },
    /// Remove snapshots: those a retention policy does not keep (without
    /// options: the repository's, 30 days), the ones named, or with --all
    /// an account's. Data stays until prune; nothing that keeps no
    /// snapshot runs.
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
        /// Remove every lock, also those of running processes.
        #[arg(long)]
        all: bool,
    },
    /// Show the snapshots as dated, read-only folders until unmounted.
    Mount(MountArgs),
    /// Unmount a snapfs mount (and stale ones stacked under it), reached
    /// without following links; nothing mounted there is not an error.
    #[command(alias = "umount")]
    Unmount {
        /// Where the snapfs mount is.
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
pub(super) struct ForgetArgs {
    /// Remove exactly these snapshots (ids or id prefixes, `latest`, dates)
    /// instead of applying a policy.
    #[arg(conflicts_with_all = ["keep_within", "keep_last", "keep_daily", "keep_weekly", "keep_monthly", "all"])]
    pub(super) snapshots: Vec<String>,
    /// Only this account's snapshots.
    #[arg(long)]
    pub(super) account: Option<String>,
    /// Remove every snapshot of the account given with --account (one that
    /// left the platform).
    #[arg(long, requires = "account", conflicts_with_all = ["keep_within", "keep_last", "keep_daily", "keep_weekly", "keep_monthly"])]
    pub(super) all: bool,
    /// Keep snapshots younger than this relative to the newest (30d, 12h).
    #[arg(long, value_parser = crate::retention::parse_duration)]
    pub(super) keep_within: Option<chrono::Duration>,
    /// Keep the newest N snapshots.
    #[arg(long, value_name = "N")]
    pub(super) keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N days that have one.
    #[arg(long, value_name = "N")]
    pub(super) keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N weeks that have one.
    #[arg(long, value_name = "N")]
    pub(super) keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months that have one.
    #[arg(long, value_name = "N")]
    pub(super) keep_monthly: Option<u32>,
    /// Show what would be removed without removing.
    #[arg(long)]
    pub(super) dry_run: bool,
}

#[derive(Args)]
pub(super) struct CopyArgs {
    /// The repository to copy from: a folder, or
    /// s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX] (`--repo` is not used).
    #[arg(long, value_name = "REPO", value_parser = location_parser())]
    pub(super) from: Location,
    /// The repository to copy into: one that exists, made with the same
    /// --chunk-sizes as the other (the error says which).
    #[arg(long, value_name = "REPO", value_parser = location_parser())]
    pub(super) to: Location,
    /// Only this account's snapshots (repeatable) [default: every account's].
    #[arg(long, value_name = "NAME")]
    pub(super) account: Vec<String>,
    /// How long to wait for a prune of the destination, e.g. 30m.
    #[arg(long, default_value = "2h", value_parser = parse_wait)]
    pub(super) lock_wait: std::time::Duration,
}

#[derive(Args)]
pub(super) struct InitArgs {
    /// Chunk size bounds, e.g. 512KiB/1MiB/8MiB (the default).
    #[arg(long, value_name = "MIN/AVG/MAX")]
    pub(super) chunk_sizes: Option<String>,
    /// Target pack size [default: 16MiB].
    #[arg(long)]
    pub(super) pack_size: Option<String>,
}

#[derive(Args)]
pub(super) struct BackupArgs {
    /// What to back up. One folder: its contents become the snapshot root.
    #[arg(required = true)]
    pub(super) paths: Vec<PathBuf>,
    /// The hosting account the snapshot belongs to [default: current user].
    #[arg(long)]
    pub(super) account: Option<String>,
    /// Date the snapshot, local time "YYYY-MM-DD HH:MM:SS" or RFC 3339.
    #[arg(long)]
    pub(super) time: Option<String>,
    /// Skip paths matching this glob (full path or base name); repeatable.
    #[arg(long, short)]
    pub(super) exclude: Vec<String>,
    /// Do not cross file system boundaries.
    #[arg(long, short = 'x')]
    pub(super) one_file_system: bool,
    /// Label the snapshot; repeatable.
    #[arg(long)]
    pub(super) tag: Vec<String>,
    /// Hostname to record [default: this host's name].
    #[arg(long)]
    pub(super) host: Option<String>,
    /// How long to wait for a running prune, e.g. 30m.
    #[arg(long, default_value = "2h", value_parser = parse_wait)]
    pub(super) lock_wait: std::time::Duration,
}

fn parse_wait(text: &str) -> Result<std::time::Duration, String> {
    if text == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let d = crate::retention::parse_duration(text)?;
    d.to_std().map_err(|e| e.to_string())
}

#[derive(Args)]
pub(super) struct RunArgs {
    /// The host configuration [default: /etc/snapfs/snapfs.toml]; it names
    /// the repository (`--repo` is not used).
    #[arg(long, env = "SNAPFS_CONFIG", value_name = "FILE")]
    pub(super) config: Option<PathBuf>,
    /// Only this account (repeatable), whatever the configuration selects.
    #[arg(long, value_name = "NAME")]
    pub(super) account: Vec<String>,
    /// Date the snapshots, local time "YYYY-MM-DD HH:MM:SS" or RFC 3339
    /// [default: each account's start].
    #[arg(long)]
    pub(super) time: Option<String>,
    /// Accounts backed up at the same time [default: the number of cores].
    #[arg(long, value_name = "N")]
    pub(super) jobs: Option<usize>,
    /// How long to wait for a running prune, e.g. 30m.
    #[arg(long, default_value = "2h", value_parser = parse_wait)]
    pub(super) lock_wait: std::time::Duration,
}

#[derive(Args)]
pub(super) struct MountArgs {
    /// An empty folder to mount on.
    pub(super) mountpoint: PathBuf,
    /// Only this account's snapshots, at the top level.
    #[arg(long, conflicts_with = "per_account")]
    pub(super) account: Option<String>,
    /// A folder per account at the top level, its user's alone (mode 0500,
    /// owned by the user of the account's name); implies --allow-other.
    /// Without this or --account, account folders show whenever the
    /// repository holds several accounts.
    #[arg(long)]
    pub(super) per_account: bool,
    /// Bind each account's folder read-only into its home at this path,
    /// `{account}` standing for the account's name (for example
    /// '/home/{account}/admin/backup'), for every account with a home,
    /// new ones within seconds; clears what a killed mount left first,
    /// and takes the binds away at a stop.
    #[arg(long, value_name = "TEMPLATE", requires = "per_account")]
    pub(super) bind_homes: Option<String>,
    /// Memory for decompressed chunks.
    #[arg(long, default_value = "256MiB")]
    pub(super) cache_size: String,
    /// Name the folders by UTC date instead of the local one.
    #[arg(long)]
    pub(super) utc: bool,
    /// Let every user in; the kernel enforces the snapshots' owners and modes.
    #[arg(long)]
    pub(super) allow_other: bool,
    /// Return once mounted and serve in the background.
    #[arg(long)]
    pub(super) daemon: bool,
    /// Create the mount point and missing folders on its way, each owned
    /// like the folder it is made in.
    #[arg(long)]
    pub(super) mkdir: bool,
}
