//! End-to-end tests of the `snapfs` binary against real repositories.
//!
//! One test binary (faster to link than one per file):
//! - `roundtrip`:  every node type, odd names, sparse and multi-chunk files,
//!   metadata; `ls`, `snapshots` and selectors.
//! - `dedup`:      re-backups and small edits add almost nothing.
//! - `copy`:       copies between repositories (folders, S3 and back)
//!   restore every snapshot as the source does; a second copy sends only
//!   new chunks; a copy killed at any point and rerun checks clean.
//! - `crash`:      SIGKILL during backup never harms earlier snapshots, and
//!   during migrate never loses one.
//! - `corruption`: damaged repositories give clear errors, never panics,
//!   and undamaged snapshots keep working.
//! - `concurrent`: backups running at the same time lose nothing.
//! - `sources`:    unreadable and vanishing source files; a missing source
//!   path creates nothing.
//! - `dumps`:      database dumps against throwaway PostgreSQL and MariaDB
//!   servers (`tests/servers`): whose databases, reloads, failures.
//! - `deep_and_sparse`: a tree 1,000 levels deep; sparse files up to 1 TiB
//!   back up without reading their holes and restore sparse.
//! - `fixture`:    a repository written by format v1 stays readable.
//! - `forget`:     refusals of policies that keep nothing; named snapshots
//!   and a departed account's `--all`.
//! - `privacy`:    repository files 0600 and folders 0700 whatever the umask.
//! - `run`:        every account of a host from one configuration: files/
//!   and mails/, one failure costing only itself, a quiet second night.
//! - `run_databases`: `snapfs run` with real servers: exactly each account's
//!   dumps, loaded back to the same rows; a failed dump costs only itself.
//! - `prune`:      thirty rolling days: forget, prune, kills, concurrency.
//! - `s3`:         repositories on a real SeaweedFS (`tests/servers`): the
//!   backend contract, create-if-absent races, every command, a store that
//!   is down, refuses us, lacks the bucket or is killed mid-backup.
//! - `s3_cluster`: a SeaweedFS cluster of three volume servers keeping two
//!   copies: a backup and a restore outlive a volume server killed under
//!   them, bytes identical.
//! - `restore_target`: restore into folders that already hold things (a
//!   symlink where a folder or file goes, a full folder), a target path
//!   through a symlink, repeated zero chunks.

mod concurrent;
mod copy;
mod corruption;
mod crash;
mod dedup;
mod deep_and_sparse;
mod dumps;
mod fixture;
mod forget;
mod privacy;
mod prune;
mod restore_target;
mod roundtrip;
mod run;
mod run_databases;
mod s3;
mod s3_cluster;
#[path = "../servers/mod.rs"]
mod servers;
mod sources;
mod support;
