//! A repository in a local folder: atomic writes by rename, private modes,
//! large ranges read past the page cache (`direct_read`, beside it).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::direct_read::{self, DirectRead};
use super::{folder_of, truncated, Backend, FileType};
use crate::error::{Error, IoContext, Result};

/// Ranges at least this long are read past the page cache: a chunk of a
/// large file (chunks average 1 MiB), not the small chunks of small files.
const DIRECT_READ_MIN: u64 = 128 * 1024;

/// A repository in a local folder (or anything mounted like one).
///
/// Layout: `config`, `data/<2 hex digits>/<pack id>`, `index/<id>`,
/// `snapshots/<account folder>/<id>` (`snapshots/<id>` in layout 1),
/// `locks/<id>`. Packs are fanned out into 256 folders so that no folder
/// grows past a few hundred entries per terabyte.
pub struct LocalBackend {
    root: PathBuf,
    /// Set when the file system refused a direct read: buffered from then on.
    no_direct_reads: AtomicBool,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl LocalBackend {
    pub fn new(root: impl Into<PathBuf>) -> LocalBackend {
        LocalBackend {
            root: root.into(),
            no_direct_reads: AtomicBool::new(false),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, kind: FileType) -> PathBuf {
        match kind {
            FileType::Config => self.root.clone(),
            FileType::Pack => self.root.join("data"),
            FileType::Index => self.root.join("index"),
            FileType::Snapshot => self.root.join("snapshots"),
            FileType::Lock => self.root.join("locks"),
        }
    }

    fn path(&self, kind: FileType, name: &str) -> PathBuf {
        match kind {
            FileType::Pack => {
                let fan = name.get(..2).unwrap_or("00");
                self.dir(kind).join(fan).join(name)
            }
            _ => self.dir(kind).join(name),
        }
    }

    fn open(&self, kind: FileType, name: &str) -> Result<(File, PathBuf)> {
        let path = self.path(kind, name);
        match File::open(&path) {
            Ok(f) => Ok((f, path)),
            Err(e) => Err(open_error(kind, name, &path, e)),
        }
    }

    /// Exactly `length` bytes at `offset` into `out` (replacing its
    /// contents), through the page cache.
    fn read_buffered(
        &self,
        kind: FileType,
        name: &str,
        offset: u64,
        length: u64,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let (file, path) = self.open(kind, name)?;
        out.clear();
        // Exactly: Vec's doubling would map memory the blob never uses.
        out.reserve_exact(length as usize);
        out.resize(length as usize, 0);
        match file.read_exact_at(out, offset) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Err(truncated(kind, name, offset, length))
            }
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    /// The complete files in `dir`, named `prefix` + their name.
    fn list_dir(dir: &Path, prefix: &str, out: &mut Vec<(String, u64)>) -> Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(dir, e)),
        };
        for entry in entries {
            let entry = entry.at(dir)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            // Temporary files of writes in progress (or interrupted) start with
            // a dot; they are not part of the repository until renamed.
            if name.starts_with('.') {
                continue;
            }
            // The type comes with the listing on most file systems; only
            // files need the stat for their size.
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            // Removed between readdir and stat (forget, prune, a released
            // lock): not part of the listing.
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(entry.path(), e)),
            };
            if meta.is_file() {
                out.push((format!("{prefix}{name}"), meta.len()));
            }
        }
        Ok(())
    }

    /// Create `dir` if it is missing, durably: its entry in its parent must
    /// last as long as the file about to be put in it.
    fn make_folder(&self, dir: &Path) -> Result<()> {
        if dir.exists() {
            return Ok(());
        }
        create_private_dir(dir)?;
        match dir.parent() {
            Some(parent) => sync_dir(parent),
            None => Ok(()),
        }
    }

    /// The sub-folders of `dir` (packs' fan-out, snapshots' accounts).
    fn folders(dir: &Path) -> Result<Vec<String>> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.at(dir)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with('.') && entry.file_type().at(entry.path())?.is_dir() {
                out.push(name.to_string());
            }
        }
        Ok(out)
    }
}

fn open_error(kind: FileType, name: &str, path: &Path, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        Error::NotFound(format!(
            "{} {name} is missing ({})",
            kind.describe(),
            path.display()
        ))
    } else {
        Error::io(path, e)
    }
}

/// Folders of a repository are 0700 and its files 0600, whatever the
/// umask: it holds every account's data in clear, and a repository put
/// anywhere but the packaged /var/lib/snapfs must not be readable by every
/// local user. (A umask can only take bits away from these.)
const PRIVATE_DIR_MODE: u32 = 0o700;
const PRIVATE_FILE_MODE: u32 = 0o600;

/// `create_dir_all` with every folder it creates private.
pub(super) fn create_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
        .at(dir)
}

/// Write `data` to `path` atomically and durably: a temporary file in the same
/// folder, fsync, rename over the final name, fsync the folder. After a crash
/// the final name holds either nothing (or its old content) or all of `data`.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    write_atomic_mode(path, data, PRIVATE_FILE_MODE)
}

/// `write_atomic` of a file with permission bits `mode` (less the umask):
/// files outside a repository, such as a run's metrics, that others read.
pub fn write_atomic_mode(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    write_durably(path, data, mode, true).map(|_| ())
}

/// Steps 1-5 of "Atomic writes" in docs/FORMAT.md. With `replace` false the
/// last step refuses to replace an existing `path`: `Ok(false)`, and
/// nothing written.
fn write_durably(path: &Path, data: &[u8], mode: u32, replace: bool) -> Result<bool> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let temp = dir.join(format!(
        ".tmp-{}-{}-{}",
        file_name,
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)
            .at(&temp)?;
        file.write_all(data).at(&temp)?;
        file.sync_all().at(&temp)?;
        drop(file);
        if replace {
            fs::rename(&temp, path).at(path)?;
        } else if !rename_new(&temp, path).at(path)? {
            return Ok(false);
        }
        sync_dir(dir)?;
        Ok(true)
    })();
    if !matches!(result, Ok(true)) {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Rename `from` to `to` unless `to` exists (`Ok(false)`). The kernel
/// decides (renameat2 `RENAME_NOREPLACE`), so two racing creators cannot
/// both win; where the file system lacks that flag (NFS before 4.x
/// servers, some FUSE ones) a hard link does the same, and only where
/// neither works is it a look followed by a rename.
fn rename_new(from: &Path, to: &Path) -> io::Result<bool> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    let refused = |e: &io::Error| e.kind() == io::ErrorKind::AlreadyExists;
    let unsupported = |e: &io::Error| {
        matches!(
            e.raw_os_error(),
            Some(libc::EINVAL | libc::ENOSYS | libc::EPERM | libc::EOPNOTSUPP)
        )
    };
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE).map_err(io::Error::from) {
        Ok(()) => return Ok(true),
        Err(e) if refused(&e) => return Ok(false),
        Err(e) if !unsupported(&e) => return Err(e),
        Err(_) => {}
    }
    match fs::hard_link(from, to) {
        // The temporary name goes when the caller cleans up.
        Ok(()) => return fs::remove_file(from).map(|()| true),
        Err(e) if refused(&e) => return Ok(false),
        Err(e) if !unsupported(&e) => return Err(e),
        Err(_) => {}
    }
    if to.symlink_metadata().is_ok() {
        return Ok(false);
    }
    fs::rename(from, to).map(|()| true)
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn create(&self) -> Result<()> {
        create_private_dir(&self.root)?;
        for kind in [
            FileType::Pack,
            FileType::Index,
            FileType::Snapshot,
            FileType::Lock,
        ] {
            create_private_dir(&self.dir(kind))?;
        }
        let data = self.dir(FileType::Pack);
        for fan in 0..=255u8 {
            create_private_dir(&data.join(format!("{fan:02x}")))?;
        }
        for dir in [data, self.root.clone()] {
            sync_dir(&dir)?;
        }
        Ok(())
    }

    fn occupant(&self) -> Result<Option<String>> {
        // Anything but the folders an interrupted init leaves behind.
        let ours = ["data", "index", "snapshots", "locks"];
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            // Not a folder, or not ours to read: init says so when it
            // tries to create it.
            Err(_) => return Ok(None),
        };
        Ok(entries
            .flatten()
            .find(|e| !ours.iter().any(|o| e.file_name() == *o))
            .map(|e| e.path().display().to_string()))
    }

    fn write(&self, kind: FileType, name: &str, data: &[u8]) -> Result<()> {
        let path = self.path(kind, name);
        self.make_folder(path.parent().unwrap_or(Path::new(".")))?;
        write_atomic(&path, data)
    }

    fn write_new(&self, kind: FileType, name: &str, data: &[u8]) -> Result<bool> {
        let path = self.path(kind, name);
        self.make_folder(path.parent().unwrap_or(Path::new(".")))?;
        write_durably(&path, data, PRIVATE_FILE_MODE, false)
    }

    fn read(&self, kind: FileType, name: &str) -> Result<Vec<u8>> {
        let (mut file, path) = self.open(kind, name)?;
        let mut out = Vec::new();
        file.read_to_end(&mut out).at(&path)?;
        Ok(out)
    }

    fn read_range_within(
        &self,
        kind: FileType,
        name: &str,
        offset: u64,
        length: u64,
        buf: &mut Vec<u8>,
    ) -> Result<Range<usize>> {
        if length >= DIRECT_READ_MIN && !self.no_direct_reads.load(Ordering::Relaxed) {
            let path = self.path(kind, name);
            match direct_read::read(&path, offset, length, buf) {
                Ok(DirectRead::Read(range)) => return Ok(range),
                Ok(DirectRead::Short) => return Err(truncated(kind, name, offset, length)),
                Ok(DirectRead::Unsupported) => {
                    tracing::debug!("{}: no direct reads, buffered", path.display());
                    self.no_direct_reads.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(open_error(kind, name, &path, e)),
            }
        }
        self.read_buffered(kind, name, offset, length, buf)?;
        Ok(0..buf.len())
    }

    fn size(&self, kind: FileType, name: &str) -> Result<u64> {
        let (mut file, path) = self.open(kind, name)?;
        file.seek(SeekFrom::End(0)).at(&path)
    }

    fn list(&self, kind: FileType) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        match kind {
            FileType::Config => {
                if self.path(kind, "config").exists() {
                    out.push(("config".to_string(), self.size(kind, "config")?));
                }
            }
            FileType::Pack => {
                let data = self.dir(kind);
                for fan in Self::folders(&data)? {
                    Self::list_dir(&data.join(fan), "", &mut out)?;
                }
            }
            FileType::Snapshot => {
                let dir = self.dir(kind);
                Self::list_dir(&dir, "", &mut out)?;
                for folder in Self::folders(&dir)? {
                    Self::list_dir(&dir.join(&folder), &format!("{folder}/"), &mut out)?;
                }
            }
            _ => Self::list_dir(&self.dir(kind), "", &mut out)?,
        }
        Ok(out)
    }

    fn list_folder(&self, kind: FileType, folder: &str) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        match (kind, folder) {
            // Not a folder this backend makes: nothing in it.
            (_, f) if f.contains('/') || f.starts_with('.') => {}
            (FileType::Snapshot, "") => Self::list_dir(&self.dir(kind), "", &mut out)?,
            (FileType::Snapshot, folder) => Self::list_dir(
                &self.dir(kind).join(folder),
                &format!("{folder}/"),
                &mut out,
            )?,
            _ => {
                out = self.list(kind)?;
                out.retain(|(name, _)| folder_of(name) == folder);
            }
        }
        Ok(out)
    }

    fn list_folders(&self, kind: FileType) -> Result<Vec<String>> {
        match kind {
            FileType::Snapshot => Self::folders(&self.dir(kind)),
            _ => Ok(Vec::new()),
        }
    }

    fn remove(&self, kind: FileType, name: &str) -> Result<()> {
        let path = self.path(kind, name);
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(path.parent().unwrap_or(Path::new("."))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    fn rename(&self, kind: FileType, from: &str, to: &str) -> Result<()> {
        let (from_path, to_path) = (self.path(kind, from), self.path(kind, to));
        let to_dir = to_path.parent().unwrap_or(Path::new("."));
        self.make_folder(to_dir)?;
        fs::rename(&from_path, &to_path).map_err(|e| open_error(kind, from, &from_path, e))?;
        sync_dir(to_dir)?;
        sync_dir(from_path.parent().unwrap_or(Path::new(".")))
    }

    fn exists(&self, kind: FileType, name: &str) -> Result<bool> {
        Ok(self.path(kind, name).exists())
    }

    fn exposure(&self) -> Option<String> {
        // The root and the folders right below it: a repository made by
        // snapfs 0.2 or by hand under umask 022 shows there.
        let mut open = Vec::new();
        let top = [
            self.root.clone(),
            self.root.join("config"),
            self.dir(FileType::Pack),
            self.dir(FileType::Index),
            self.dir(FileType::Snapshot),
        ];
        for path in top {
            if let Ok(meta) = fs::metadata(&path) {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    open.push(format!("{} is {mode:04o}", path.display()));
                }
            }
        }
        (!open.is_empty()).then(|| {
            format!(
                "the repository is open to other users ({}); it holds every account's data: \
                 chmod -R go-rwx {}",
                open.join(", "),
                self.root.display()
            )
        })
    }

    fn remove_temporary(&self) -> Result<u64> {
        // Not locks/: processes waiting for the lock keep writing there.
        let snapshots = self.dir(FileType::Snapshot);
        let mut dirs = vec![
            self.root.clone(),
            self.dir(FileType::Index),
            snapshots.clone(),
        ];
        for folder in Self::folders(&snapshots)? {
            dirs.push(snapshots.join(folder));
        }
        if let Ok(fans) = fs::read_dir(self.dir(FileType::Pack)) {
            dirs.extend(fans.flatten().map(|f| f.path()));
        }
        let mut removed = 0;
        for dir in dirs {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_name().as_bytes().starts_with(b".tmp-") {
                    match fs::remove_file(entry.path()) {
                        Ok(()) => removed += 1,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(Error::io(entry.path(), e)),
                    }
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::super::contract::{backend_contract, one_creator_wins};
    use super::*;

    #[test]
    fn local_backend_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        backend_contract(&LocalBackend::new(dir.path().join("repo")));
    }

    #[test]
    fn write_new_leaves_no_temporary_file_behind() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path());
        backend.create().unwrap();
        assert!(backend.write_new(FileType::Index, "i", b"1").unwrap());
        assert!(!backend.write_new(FileType::Index, "i", b"2").unwrap());
        let names: Vec<_> = fs::read_dir(dir.path().join("index"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["i"]);
        assert_eq!(backend.remove_temporary().unwrap(), 0);
    }

    #[test]
    fn of_racing_creators_exactly_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path());
        backend.create().unwrap();
        one_creator_wins(&backend, 20);
    }

    #[test]
    fn files_removed_while_listing_are_left_out() {
        // A concurrent forget or prune removes files between our readdir and
        // stat. Churn hundreds of files (plain writes, no fsync, to be fast)
        // while listing, so the window is hit many times per run.
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path());
        backend.create().unwrap();
        backend.write(FileType::Snapshot, "keep", b"1").unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let churn = {
            let (snapshots, stop) = (dir.path().join("snapshots"), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for n in 0..300 {
                        fs::write(snapshots.join(format!("c{n}")), b"x").unwrap();
                    }
                    for n in 0..300 {
                        fs::remove_file(snapshots.join(format!("c{n}"))).unwrap();
                    }
                }
            })
        };
        for _ in 0..300 {
            let names = backend.list(FileType::Snapshot).unwrap();
            assert!(names.iter().any(|(n, _)| n == "keep"));
        }
        stop.store(true, Ordering::Relaxed);
        churn.join().unwrap();
    }

    #[test]
    fn snapshot_files_may_sit_in_folders() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path());
        backend.create().unwrap();
        backend.write(FileType::Snapshot, "flat", b"1").unwrap();
        backend
            .write(FileType::Snapshot, "alice/a1", b"22")
            .unwrap();
        backend.write(FileType::Snapshot, "bob/b1", b"333").unwrap();
        fs::write(dir.path().join("snapshots/alice/.tmp-a2-1-1"), b"").unwrap();
        let mut all = backend.list(FileType::Snapshot).unwrap();
        all.sort();
        let named = |n: &str, len| (n.to_string(), len);
        assert_eq!(
            all,
            [named("alice/a1", 2), named("bob/b1", 3), named("flat", 1)]
        );
        let folder = |f| backend.list_folder(FileType::Snapshot, f).unwrap();
        assert_eq!(folder("alice"), [named("alice/a1", 2)]);
        assert_eq!(folder(""), [named("flat", 1)]);
        assert!(folder("carol").is_empty());
        assert!(folder("../index").is_empty());
        assert!(folder(".").is_empty());
        assert_eq!(backend.read(FileType::Snapshot, "bob/b1").unwrap(), b"333");
        backend.remove(FileType::Snapshot, "bob/b1").unwrap();
        assert!(folder("bob").is_empty());
        assert_eq!(backend.remove_temporary().unwrap(), 1, "in a folder too");
        assert_eq!(folder("alice"), [named("alice/a1", 2)]);

        backend
            .rename(FileType::Snapshot, "flat", "carol/flat")
            .unwrap();
        assert!(folder("").is_empty());
        assert_eq!(folder("carol"), [named("carol/flat", 1)]);
        let err = backend.rename(FileType::Snapshot, "gone", "carol/gone");
        assert!(matches!(err, Err(Error::NotFound(_))), "{err:?}");
    }

    #[test]
    fn list_ignores_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path());
        backend.create().unwrap();
        fs::write(dir.path().join("index/.tmp-x-1-1"), b"partial").unwrap();
        assert!(backend.list(FileType::Index).unwrap().is_empty());
    }
}
