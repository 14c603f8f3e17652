//! The contract every backend keeps, as one test suite each backend's
//! tests call: atomic put, ranged get, list, delete of a missing object.

use super::{Backend, FileType};
use crate::error::Error;

/// The contract every backend must keep.
pub fn backend_contract(backend: &dyn Backend) {
    backend.create().unwrap();
    let name = "ab".to_string() + &"0".repeat(62);
    backend
        .write(FileType::Pack, &name, b"hello world")
        .unwrap();
    assert_eq!(backend.read(FileType::Pack, &name).unwrap(), b"hello world");
    assert_eq!(
        backend.read_range(FileType::Pack, &name, 6, 5).unwrap(),
        b"world"
    );
    assert!(matches!(
        backend.read_range(FileType::Pack, &name, 6, 50),
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(backend.size(FileType::Pack, &name).unwrap(), 11);
    assert_eq!(
        backend.list(FileType::Pack).unwrap(),
        vec![(name.clone(), 11)]
    );
    // Ranges within a buffer, small and large (past the page cache for
    // the local backend), at odd offsets; missing files and short
    // files are told apart.
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
    // Replacing is atomic too.
    backend.write(FileType::Snapshot, "s1", b"one").unwrap();
    backend.write(FileType::Snapshot, "s1", b"two").unwrap();
    assert_eq!(backend.read(FileType::Snapshot, "s1").unwrap(), b"two");
    assert!(matches!(
        backend.read(FileType::Index, "nope"),
        Err(Error::NotFound(_))
    ));
    backend.remove(FileType::Pack, &name).unwrap();
    backend.remove(FileType::Pack, &name).unwrap();
    assert!(backend.list(FileType::Pack).unwrap().is_empty());
    assert!(!backend.exists(FileType::Pack, &name).unwrap());
}
