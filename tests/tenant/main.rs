//! The hostile-tenant suite: snapfs runs as root over trees that other
//! users own and change while it works. Each test plays a tenant with a
//! real unprivileged user (made with `useradd`, removed at the end), most
//! with a racer process running as that user (see `support`), against a
//! real kernel, and checks that root never read, wrote, mounted or showed
//! anything outside the tenant's own.
//!
//! Its own binary because it needs root, `useradd` and FUSE. Without them
//! the tests skip with a message, unless `SNAPFS_REQUIRE_FUSE=1` (CI),
//! which turns that into a failure.
//!
//! - `backup_race`: 20 backups of a home whose folder and file are swapped
//!   with symlinks to a root-only folder in a tight loop
//!   (`renameat2(RENAME_EXCHANGE)`): no snapshot holds a byte of it.
//! - `restore_race`: the tenant swaps folders of a restore target for
//!   symlinks to a root-owned folder while root restores into it 20 times;
//!   the root-owned folder stays byte-for-byte as it was.
//! - `run_accounts`: `snapfs run` selects real users by uid range: each
//!   with a home gets a snapshot of its own, one without is skipped; each
//!   user reads their own database dump through the mount, never another's.
//! - `day_folders`: the day folders of 0700 and 0711 homes keep every other
//!   user out of the mount.
//! - `mount_links`: links planted at `~/admin` and `~/admin/backup` never
//!   move a mount or an unmount; a killed mount is cleared and mounted
//!   again by the unit's commands.
//! - `binds`: a mount's folders bound into real users' homes
//!   (`mount::bind`), used over a real sshd (`tests/sshd`): each user reads
//!   their own over SSH and SFTP, chrooted SFTP too, and not another's; a
//!   planted link is refused; a killed daemon's binds are cleared.
//! - `host_mount`: `mount --per-account --bind-homes` as the unit runs it:
//!   every home bound, a new account's within seconds, a SIGKILLed daemon
//!   restarted by the same command with nothing stale, a stop unbinds all.

mod backup_race;
mod binds;
mod day_folders;
mod host_mount;
mod mount_links;
mod restore_race;
mod run_accounts;
#[path = "../servers/mod.rs"]
mod servers;
#[path = "../sshd/mod.rs"]
mod sshd;
mod support;
