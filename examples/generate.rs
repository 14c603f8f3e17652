//! Man pages and shell completions for the package, from the command-line
//! definition (`snapfs::cli::generate`):
//!
//!     cargo run --release --example generate -- man DIR
//!     cargo run --release --example generate -- completions DIR
//!
//! An example rather than a `snapfs` command, so it is neither installed
//! nor completed; `packaging/build-deb.sh` runs it.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [what, dir] if what == "man" => snapfs::cli::generate::man_pages(&PathBuf::from(dir)),
        [what, dir] if what == "completions" => {
            snapfs::cli::generate::completions(&PathBuf::from(dir))
        }
        _ => {
            eprintln!("usage: generate man|completions DIR");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("generate: {e}");
            ExitCode::FAILURE
        }
    }
}
