//! Every record decoder must reject garbage with an error, never panic, and
//! anything it accepts must encode back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapfs::repository::config::Config;
use snapfs::repository::index::IndexFile;
use snapfs::snapshot::{Snapshot, Tree};
use snapfs::Id;

fuzz_target!(|data: &[u8]| {
    if let Ok(tree) = Tree::decode(&Id::default(), data) {
        assert_eq!(tree.encode(), data);
    }
    if let Ok(snapshot) = Snapshot::decode("fuzz", data) {
        assert_eq!(snapshot.encode(), data);
    }
    if let Ok(index) = IndexFile::decode("fuzz", data) {
        assert_eq!(index.encode(), data);
    }
    if let Ok(config) = Config::decode(data) {
        assert_eq!(config.encode(), data);
    }
});
