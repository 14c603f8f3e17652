//! Hostile tenants: snapfs runs as root over trees that other users own and
//! change while it works. Each test creates a real unprivileged user, runs
//! a racer process as that user (see `support`), and checks that root
//! never read or wrote anything outside the tenant's tree.
//!
//! Its own binary because it needs root (`useradd`, a racer with the
//! tenant's uid). Without root the tests skip with a message, unless
//! `SNAPFS_REQUIRE_FUSE=1` (CI), which turns that into a failure.
//!
//! - `backup_race`: 20 backups of a home whose folder and file are swapped
//!   with symlinks to a root-only folder in a tight loop
//!   (`renameat2(RENAME_EXCHANGE)`): no snapshot holds a byte of it.

mod backup_race;
mod support;
