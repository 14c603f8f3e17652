//! Errors, grouped by what the caller has to do about them.
//!
//! The library returns these typed errors with the object or path they concern;
//! `main` prints the chain and maps the kind to a documented exit code, and the
//! FUSE adapter maps `Corrupt` to `EIO` and `NotFound` to `ENOENT`.

use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing by that name: a snapshot selector, a path inside a snapshot,
    /// a repository that was never initialised.
    #[error("{0}")]
    NotFound(String),

    /// Repository bytes that fail their checksum or do not decode. `object`
    /// names the file or blob, so the user knows what to restore or prune.
    #[error("{object} is damaged: {reason}")]
    Corrupt { object: String, reason: String },

    /// Well-formed, but written by a format this build does not read.
    #[error("{0}")]
    Unsupported(String),

    /// Another process holds a lock that this operation needs.
    #[error("{0}")]
    Locked(String),

    /// A user mistake that the command line could not catch (ambiguous id
    /// prefix, a target that exists, ...).
    #[error("{0}")]
    Invalid(String),

    /// A server or tool the host needs does not answer or is not
    /// installed: a database server that is down, a wrong socket, a dump
    /// tool missing. Nothing is wrong with the repository; fix the host and
    /// run again. The message names the server or the package.
    #[error("{0}")]
    Unavailable(String),

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn corrupt(object: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            object: object.into(),
            reason: reason.into(),
        }
    }

    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// What is wrong, without the object's name: for messages that already
    /// name the object.
    pub fn reason(&self) -> String {
        match self {
            Error::Corrupt { reason, .. } => reason.clone(),
            other => other.to_string(),
        }
    }

    /// The raw OS error for I/O failures, for callers that distinguish
    /// "disk full" from "permission denied".
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Attach a path to a `std::io::Result`, the one conversion every module needs.
pub trait IoContext<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
