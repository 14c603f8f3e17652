//! Each command: call the library, print what it did (or JSON), return the
//! exit code.

use anyhow::Context;
use chrono::{DateTime, Local, NaiveDateTime, TimeZone};
use serde_json::json;
use std::path::PathBuf;

use super::args::{BackupArgs, ForgetArgs, Global, InitArgs, MountArgs};
use super::{exit, open, repo_location, warn_if_exposed};
use crate::chunker::ChunkerParams;
use crate::display::{escape_name, human_size, parse_size};
use crate::id::Id;
use crate::repository::backend::CreateIfAbsent;
use crate::repository::{Location, Repository};
use crate::snapshot::{self, Snapshot, SnapshotEntry, Timestamp};
use crate::{backup, check, forget, ls, migrate, mount, prune, restore};

pub(super) fn run_migrate(g: &Global, lock_wait: std::time::Duration) -> anyhow::Result<u8> {
    let repo = Repository::open_without_index(repo_location(g))?;
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

pub(super) fn run_mount(g: &Global, args: MountArgs) -> anyhow::Result<u8> {
    let location = repo_location(g);
    let cache_bytes = parse_size(&args.cache_size).map_err(anyhow::Error::msg)?;
    let top = match (args.account, args.per_account) {
        (Some(account), _) => mount::view::Top::Account(account),
        (None, true) => mount::view::Top::Accounts,
        (None, false) => mount::view::Top::Auto,
    };
    let bind_homes = match &args.bind_homes {
        Some(text) => Some(mount::bind::Template::parse(text)?),
        None => None,
    };
    let opts = mount::MountOptions {
        mountpoint: args.mountpoint,
        // Account folders are their users' alone: only the kernel's
        // permission checks, which allow_other brings, keep it so.
        allow_other: args.allow_other || args.per_account,
        mkdir: args.mkdir,
        threads: 8,
        bind_homes,
        view: mount::view::Options {
            top,
            utc: args.utc,
            cache_bytes: usize::try_from(cache_bytes)?,
            // A store a round trip away: more chunks in flight ahead of a
            // sequential reader, as the latency, not the disk, bounds it.
            prefetch_threads: if location.local_path().is_some() {
                3
            } else {
                8
            },
            ..Default::default()
        },
    };
    if args.daemon {
        mount::daemon(&location, &opts)?;
        return Ok(exit::OK);
    }
    let mounted = mount::mount(&location, &opts)?;
    eprintln!(
        "snapfs: mounted {location} at {}; stop with Ctrl-C or `snapfs unmount {}`",
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

pub(super) fn init(g: &Global, args: InitArgs) -> anyhow::Result<u8> {
    let location = repo_location(g);
    let chunker = match &args.chunk_sizes {
        Some(t) => parse_chunk_sizes(t)?,
        None => ChunkerParams::default(),
    };
    let pack_size = match &args.pack_size {
        Some(t) => Some(u32::try_from(parse_size(t).map_err(anyhow::Error::msg)?)?),
        None => None,
    };
    let repo = Repository::init(&location, chunker, pack_size)?;
    warn_if_exposed(&repo);
    // Known since init probed it (S3), so this asks nothing more.
    let create_if_absent = match repo.create_if_absent()? {
        CreateIfAbsent::Atomic => None,
        CreateIfAbsent::CheckThenWrite(why) => Some(why),
    };
    if g.json {
        println!(
            "{}",
            json!({
                "repository": repo.location(),
                "id": repo.config().id.to_hex(),
                "conditional_writes": create_if_absent.is_none(),
            })
        );
    } else {
        println!(
            "created snapfs repository {} at {}",
            repo.config().id.short(),
            repo.location()
        );
        if matches!(location, Location::S3(_)) {
            match &create_if_absent {
                None => println!("conditional writes (If-None-Match): honoured by the server"),
                Some(why) => println!(
                    "conditional writes (If-None-Match): NOT honoured: {why}; \
                     see docs/S3.md for what holds"
                ),
            }
        }
    }
    Ok(exit::OK)
}

pub(super) fn parse_time(text: &str) -> anyhow::Result<(Timestamp, i32)> {
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

pub(super) fn run_backup(g: &Global, args: BackupArgs) -> anyhow::Result<u8> {
    // Sources first: `backup /typo` must fail before it creates a repository.
    let sources = backup::Sources::open(&args.paths)?;
    let location = repo_location(g);
    let repo = if Repository::exists(&location)? {
        // backup::run reads the index under its lock.
        Repository::open_without_index(&location)?
    } else {
        eprintln!("snapfs: no repository at {location} yet; creating one");
        Repository::init(&location, ChunkerParams::default(), None)?
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
        "sources": s.sources.iter().map(|x| json!({
            "kind": x.kind.folder(),
            "name": String::from_utf8_lossy(&x.name),
            "unreadable": x.unreadable,
            "failure": x.failure,
        })).collect::<Vec<_>>(),
    })
}

pub(super) fn snapshots(g: &Global, account: Option<String>) -> anyhow::Result<u8> {
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

pub(super) fn run_ls(
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

pub(super) fn run_restore(
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

pub(super) fn run_check(g: &Global, read_data: bool) -> anyhow::Result<u8> {
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

pub(super) fn run_forget(g: &Global, args: ForgetArgs) -> anyhow::Result<u8> {
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

pub(super) fn run_prune(
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
    let repo = Repository::open_without_index(repo_location(g))?;
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

pub(super) fn run_unmount(
    g: &Global,
    mountpoint: &std::path::Path,
    lazy: bool,
) -> anyhow::Result<u8> {
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

pub(super) fn run_unlock(g: &Global, all: bool) -> anyhow::Result<u8> {
    let repo = open(g)?;
    warn_if_exposed(&repo);
    let removed = repo.unlock(all)?;
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
