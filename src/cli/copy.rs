//! `snapfs copy`: two repositories in, what was sent out (or JSON), a bar
//! over the snapshots on a terminal, and exit code 4 when damage in the
//! source kept a snapshot back.

use super::args::{CopyArgs, Global};
use super::{cached, exit, warn_if_exposed};
use crate::copy::{self, CopyOptions};
use crate::display::human_size;
use crate::error::Error;
use crate::progress::Progress;
use crate::repository::Repository;

pub(super) fn run(g: &Global, args: CopyArgs) -> anyhow::Result<u8> {
    let (from_location, to_location) = (cached(g, args.from), cached(g, args.to));
    let args = CopyArgs {
        from: from_location,
        to: to_location,
        ..args
    };
    let from = Repository::open(&args.from)?;
    // Not made here: the destination's chunk sizes must be the source's,
    // and where it lives (which bucket, which disk) is the operator's call.
    if !Repository::exists(&args.to)? {
        return Err(Error::NotFound(format!(
            "no snapfs repository at {} (create one with `snapfs --repo {} init \
             --chunk-sizes {}`, the chunk sizes of {})",
            args.to,
            args.to,
            copy::chunk_sizes(&from.config().chunker),
            args.from
        ))
        .into());
    }
    // copy::copy reads its index under the lock.
    let to = Repository::open_without_index(&args.to)?;
    warn_if_exposed(&to);
    let opts = CopyOptions {
        accounts: args.account,
        lock_wait: args.lock_wait,
    };
    let progress = Progress::steps(!g.json);
    let result = copy::copy(&from, &to, &opts, &progress);
    progress.finish();
    let s = result?;
    if g.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        for failed in &s.snapshots_failed {
            println!("not copied: {}: {}", failed.snapshot, failed.error);
        }
        println!(
            "copied {} snapshots from {} to {} ({} there already): {} blobs, {} ({} stored) \
             in {} packs; {} blobs there already; {:.1}s{}",
            s.snapshots_copied,
            s.from,
            s.to,
            s.snapshots_skipped,
            s.blobs_copied,
            human_size(s.bytes_copied),
            human_size(s.bytes_stored),
            s.packs_written,
            s.blobs_skipped,
            s.duration_ms as f64 / 1000.0,
            if s.is_ok() {
                String::new()
            } else {
                format!(
                    "; {} snapshots NOT copied: damaged in the source (see `snapfs check`)",
                    s.snapshots_failed.len()
                )
            }
        );
    }
    Ok(if s.is_ok() { exit::OK } else { exit::DAMAGED })
}
