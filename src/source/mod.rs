//! What a backup reads: the entries and byte streams that become a
//! snapshot's trees and chunks.
//!
//! A file system tree ([`fs`]: homes, maildirs) and database dumps
//! ([`dump`]: a tool's output streamed in as one file; [`databases`]:
//! which of a server's databases are an account's, and their dump
//! commands). A source
//! knows nothing of repositories or chunks: [`crate::backup`] turns what a
//! source yields into trees and stores them.
//!
//! # Why descriptors
//!
//! `snapfs backup` runs as root over homes that belong to other people, who
//! can change their trees while the backup reads them. A walk by path
//! (`read_dir`, `lstat(path)`, `open(path)`) resolves every path again at
//! each step, so a tenant who swaps a folder of their home for a symlink to
//! `/etc` (`renameat2(RENAME_EXCHANGE)` in a loop) wins the race now and
//! then, and root copies `/etc/shadow` into the tenant's backup. [`fs`]
//! reaches every entry from its parent's descriptor by one name, never
//! follows a symlink, and stores the metadata of the descriptor it read.

pub mod databases;
pub mod dump;
pub mod fs;
