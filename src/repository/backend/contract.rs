//! The contract every backend keeps, as one test suite each backend's
//! tests call: atomic put, create-if-absent, ranged get, listing (also one
//! folder deep), rename, delete of a missing object.
//!
//! Public (hidden from the docs) because the S3 backend's tests are
//! integration tests: they need a server that the test binary starts.
//! Panics on the first broken promise, naming it.

use super::{Backend, FileType};
use crate::error::Error;

/// The contract every backend must keep. `backend` must be at a new, empty
/// location; it is left holding a few files.
pub fn backend_contract(backend: &dyn Backend) {
    assert_eq!(backend.occupant().unwrap(), None, "a new location is empty");
    backend.create().unwrap();
    assert_eq!(
        backend.occupant().unwrap(),
        None,
        "create leaves nothing foreign"
    );
    let name = "ab".to_string() + &"0".repeat(62);
    backend
        .write(FileType::Pack, &name, b"hello world")
        .unwrap();
    backend.write(FileType::Config, "config", b"c").unwrap();
    assert!(
        backend.occupant().unwrap().is_some(),
        "a config is there now"
    );
    assert_eq!(
        backend.list(FileType::Config).unwrap(),
        [("config".into(), 1)]
    );
    backend.remove(FileType::Config, "config").unwrap();
    assert_eq!(backend.read(FileType::Pack, &name).unwrap(), b"hello world");
    assert_eq!(
        backend.read_range(FileType::Pack, &name, 6, 5).unwrap(),
        b"world"
    );
    assert!(matches!(
        backend.read_range(FileType::Pack, &name, 6, 50),
        Err(Error::Corrupt { .. })
    ));
    assert!(matches!(
        backend.read_range(FileType::Pack, &name, 20, 5),
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(backend.size(FileType::Pack, &name).unwrap(), 11);
    let upto = |offset, length| backend.read_range_upto(FileType::Pack, &name, offset, length);
    assert_eq!(upto(6, 50).unwrap(), b"world", "short at the end");
    assert_eq!(upto(0, 11).unwrap(), b"hello world");
    assert!(upto(11, 5).unwrap().is_empty(), "at the end");
    assert!(upto(20, 5).unwrap().is_empty(), "past the end");
    assert!(matches!(
        backend.read_range_upto(FileType::Pack, "nope", 0, 5),
        Err(Error::NotFound(_))
    ));
    assert_eq!(
        backend.list(FileType::Pack).unwrap(),
        vec![(name.clone(), 11)]
    );
    ranges(backend);
    // Replacing is atomic too.
    backend.write(FileType::Snapshot, "s1", b"one").unwrap();
    backend.write(FileType::Snapshot, "s1", b"two").unwrap();
    assert_eq!(backend.read(FileType::Snapshot, "s1").unwrap(), b"two");
    assert!(matches!(
        backend.read(FileType::Index, "nope"),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        backend.size(FileType::Index, "nope"),
        Err(Error::NotFound(_))
    ));
    create_if_absent(backend);
    folders(backend);
    backend.remove(FileType::Pack, &name).unwrap();
    backend.remove(FileType::Pack, &name).unwrap();
    assert!(backend.list(FileType::Pack).unwrap().is_empty());
    assert!(!backend.exists(FileType::Pack, &name).unwrap());
}

/// Ranges within a buffer, small and large (past the page cache for the
/// local backend), at odd offsets; missing files and short files are told
/// apart.
fn ranges(backend: &dyn Backend) {
    let name = "ab".to_string() + &"0".repeat(62);
    let big_name = "cd".to_string() + &"0".repeat(62);
    let big: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    backend.write(FileType::Pack, &big_name, &big).unwrap();
    let mut buf = Vec::new();
    for (offset, length) in [(3, 10), (5_000, 300_001), (0, 700_000), (699_990, 10)] {
        let range = backend
            .read_range_within(FileType::Pack, &big_name, offset, length, &mut buf)
            .unwrap();
        let want = &big[offset as usize..(offset + length) as usize];
        assert_eq!(&buf[range], want, "{offset}+{length}");
    }
    assert!(matches!(
        backend.read_range_within(FileType::Pack, &big_name, 600_000, 200_000, &mut buf),
        Err(Error::Corrupt { .. })
    ));
    assert!(matches!(
        backend.read_range_within(
            FileType::Pack,
            &name.replace('0', "1"),
            0,
            200_000,
            &mut buf
        ),
        Err(Error::NotFound(_))
    ));
    backend.remove(FileType::Pack, &big_name).unwrap();
}

/// `write_new` creates once and never replaces.
fn create_if_absent(backend: &dyn Backend) {
    let lock = "ef".repeat(32);
    assert!(backend.write_new(FileType::Lock, &lock, b"first").unwrap());
    assert!(!backend.write_new(FileType::Lock, &lock, b"second").unwrap());
    assert_eq!(backend.read(FileType::Lock, &lock).unwrap(), b"first");
    assert_eq!(backend.list(FileType::Lock).unwrap(), [(lock.clone(), 5)]);
    // A lock's holder refreshes it in place.
    backend.write(FileType::Lock, &lock, b"refreshed").unwrap();
    assert_eq!(backend.read(FileType::Lock, &lock).unwrap(), b"refreshed");
    backend.remove(FileType::Lock, &lock).unwrap();
    assert!(backend.write_new(FileType::Lock, &lock, b"again").unwrap());
    backend.remove(FileType::Lock, &lock).unwrap();
    assert!(backend
        .write_new(FileType::Snapshot, "alice/n1", b"x")
        .unwrap());
    assert!(!backend
        .write_new(FileType::Snapshot, "alice/n1", b"x")
        .unwrap());
    backend.remove(FileType::Snapshot, "alice/n1").unwrap();
    backend.create_if_absent().unwrap();
}

/// Snapshot files one folder deep (account folders, escaped names
/// included), listed all together or one folder at a time, and moved.
fn folders(backend: &dyn Backend) {
    let odd = "%C3%A9t%C3%A9~x.y";
    backend
        .write(FileType::Snapshot, "alice/a1", b"22")
        .unwrap();
    backend
        .write(FileType::Snapshot, &format!("{odd}/o1"), b"4444")
        .unwrap();
    let mut all = backend.list(FileType::Snapshot).unwrap();
    all.sort();
    let named = |n: &str, len| (n.to_string(), len);
    assert_eq!(
        all,
        [
            named(&format!("{odd}/o1"), 4),
            named("alice/a1", 2),
            named("s1", 3)
        ]
    );
    let folder = |f| backend.list_folder(FileType::Snapshot, f).unwrap();
    assert_eq!(folder("alice"), [named("alice/a1", 2)]);
    assert_eq!(folder(odd), [named(&format!("{odd}/o1"), 4)]);
    assert_eq!(folder(""), [named("s1", 3)]);
    assert!(folder("carol").is_empty());
    assert!(folder("ali").is_empty(), "a folder is not a name prefix");
    assert!(folder("../index").is_empty());
    assert_eq!(backend.read(FileType::Snapshot, "alice/a1").unwrap(), b"22");
    let mut folders = backend.list_folders(FileType::Snapshot).unwrap();
    folders.sort();
    assert_eq!(
        folders,
        [odd, "alice"],
        "folders, not the files beside them"
    );
    assert!(backend.list_folders(FileType::Index).unwrap().is_empty());

    backend
        .rename(FileType::Snapshot, "s1", "carol/s1")
        .unwrap();
    assert!(folder("").is_empty());
    assert_eq!(folder("carol"), [named("carol/s1", 3)]);
    let err = backend.rename(FileType::Snapshot, "gone", "carol/gone");
    assert!(matches!(err, Err(Error::NotFound(_))), "{err:?}");
    for file in ["alice/a1", "carol/s1", &format!("{odd}/o1")] {
        backend.remove(FileType::Snapshot, file).unwrap();
    }
    assert!(backend.list(FileType::Snapshot).unwrap().is_empty());
}

/// Of `racers` threads creating one lock at once, exactly one wins, and the
/// lock holds its bytes; `rounds` times over.
pub fn one_creator_wins(backend: &dyn Backend, rounds: usize) {
    const RACERS: u8 = 6;
    for round in 0..rounds {
        let name = format!("{round:064x}");
        let barrier = std::sync::Barrier::new(RACERS.into());
        let wins: Vec<bool> = std::thread::scope(|s| {
            let racers: Vec<_> = (0..RACERS)
                .map(|n| {
                    let (barrier, name) = (&barrier, &name);
                    s.spawn(move || {
                        barrier.wait();
                        backend.write_new(FileType::Lock, name, &[n]).unwrap()
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let winners: Vec<usize> = (0..wins.len()).filter(|&i| wins[i]).collect();
        assert_eq!(winners.len(), 1, "round {round}: {wins:?}");
        assert_eq!(
            backend.read(FileType::Lock, &name).unwrap(),
            [winners[0] as u8]
        );
        backend.remove(FileType::Lock, &name).unwrap();
    }
}
