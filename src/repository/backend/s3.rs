//! A repository in a bucket of an S3 server (`s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]`).
//!
//! Keys are the local folder's layout under the prefix: `config`,
//! `data/<2 hex digits>/<pack id>`, `index/<id>`, `snapshots/<account
//! folder>/<id>`, `locks/<id>`. This module maps kinds and names to keys
//! and nothing else: which file is what stays the repository's business.
//!
//! What object storage changes (docs/S3.md says it for operators):
//! - A PUT is whole or absent, so a write is one PUT: no temporary
//!   objects, nothing for `remove_temporary` to do.
//! - `write_new` is a PUT with `If-None-Match: *`, which a server that
//!   honours it refuses (412) when the key exists; it is preceded by a
//!   HEAD, which is all the protection there is on a server that ignores
//!   the header. [`Backend::create_if_absent`] finds out which kind of
//!   server this is by trying (`init` reports it); nothing is recorded in
//!   the repository, since the store can change under it.
//! - There is no rename: `rename` is a copy then a delete.
//! - Listing is ListObjectsV2, page by page; S3 has no folders, so the
//!   snapshots' account folders are key prefixes.
//!
//! Credentials come from the environment only (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` if set,
//! `AWS_DEFAULT_REGION` or `us-east-1`): never from the command line,
//! where `ps` would show them.

use std::ops::Range;
use std::sync::OnceLock;
use std::time::Duration;

use rusty_s3::actions::ListObjectsV2;
use rusty_s3::Credentials;

use super::s3_request::{Answer, Client, Request, Verb};
use super::{folder_of, truncated, Backend, CreateIfAbsent, FileType};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::location::S3Location;

/// How long a failing request is retried unless `SNAPFS_S3_RETRY` says
/// otherwise: a store restarting, or a link failing over, should not cost
/// a night's backup.
const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(60);

pub struct S3Backend {
    location: S3Location,
    client: Client,
    /// What `create_if_absent` found, once per process.
    conditional: OnceLock<CreateIfAbsent>,
    /// Keys a listing asks for per page (S3's most: 1000).
    page_size: usize,
}

impl S3Backend {
    /// The backend for `location` with the credentials of the environment.
    pub fn from_env(location: S3Location) -> Result<S3Backend> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let required = |name: &str| {
            var(name).ok_or_else(|| {
                Error::Invalid(format!(
                    "{name} is not set: an S3 repository ({location}) takes its credentials \
                     from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or, for snapfs run, \
                     from [s3] in the host configuration)"
                ))
            })
        };
        // The environment first; the host configuration's when it has none.
        let configured = location
            .credentials
            .as_ref()
            .filter(|_| var("AWS_ACCESS_KEY_ID").is_none());
        let (credentials, region) = match configured {
            Some(c) => (
                Credentials::new(c.access_key_id.clone(), c.secret_access_key.clone()),
                c.region.clone(),
            ),
            None => {
                let (key, secret) = (
                    required("AWS_ACCESS_KEY_ID")?,
                    required("AWS_SECRET_ACCESS_KEY")?,
                );
                let credentials = match var("AWS_SESSION_TOKEN") {
                    Some(token) => Credentials::new_with_token(key, secret, token),
                    None => Credentials::new(key, secret),
                };
                (credentials, var("AWS_DEFAULT_REGION"))
            }
        };
        let region = region.unwrap_or_else(|| "us-east-1".into());
        let retry_for = match var("SNAPFS_S3_RETRY") {
            None => DEFAULT_RETRY_FOR,
            Some(text) if text == "0" => Duration::ZERO,
            Some(text) => crate::retention::parse_duration(&text)
                .ok()
                .and_then(|d| d.to_std().ok())
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "SNAPFS_S3_RETRY={text:?}: expected a duration like 30s or 2m, or 0"
                    ))
                })?,
        };
        Self::new(location, credentials, region, retry_for)
    }

    pub fn new(
        location: S3Location,
        credentials: Credentials,
        region: String,
        retry_for: Duration,
    ) -> Result<S3Backend> {
        let client = Client::new(
            &location.endpoint,
            &location.bucket,
            region,
            credentials,
            location.to_string(),
            location.key(""),
            retry_for,
        )?;
        Ok(S3Backend {
            location,
            client,
            conditional: OnceLock::new(),
            page_size: 1000,
        })
    }

    /// Listings in pages of `keys`: tests page through a few dozen objects
    /// instead of writing thousands.
    #[doc(hidden)]
    pub fn with_page_size(mut self, keys: usize) -> S3Backend {
        self.page_size = keys;
        self
    }

    /// The folder of a kind, as a key prefix ending in `/` (`""` for the
    /// config, which sits at the top).
    fn folder(&self, kind: FileType) -> String {
        let folder = match kind {
            FileType::Config => "",
            FileType::Pack => "data/",
            FileType::Index => "index/",
            FileType::Snapshot => "snapshots/",
            FileType::Lock => "locks/",
        };
        self.location.key(folder)
    }

    fn key(&self, kind: FileType, name: &str) -> String {
        match kind {
            // Fanned out like the local folder's, though S3 does not need
            // it: the same layout lets a folder be copied into a bucket.
            FileType::Pack => {
                let fan = name.get(..2).unwrap_or("00");
                format!("{}{fan}/{name}", self.folder(kind))
            }
            _ => format!("{}{name}", self.folder(kind)),
        }
    }

    /// Send, and turn any answer but a success into its error.
    fn expect_ok(&self, request: &Request, body: &mut Vec<u8>) -> Result<Answer> {
        let answer = self.client.send(request, body)?;
        if answer.ok() {
            Ok(answer)
        } else {
            Err(self.client.failure(request, &answer))
        }
    }

    /// The object's size, or `None` when there is none.
    fn head(&self, key: &str) -> Result<Option<u64>> {
        let request = Request::new(Verb::Head, key);
        let answer = self.client.send(&request, &mut Vec::new())?;
        match answer.status {
            404 => Ok(None),
            _ if answer.ok() => Ok(Some(answer.content_length.unwrap_or(0))),
            _ => Err(self.client.failure(&request, &answer)),
        }
    }

    /// PUT `data` at `key`; with `only_new`, refused when the key exists
    /// and the server honours `If-None-Match`.
    fn put(&self, key: &str, data: &[u8], only_new: bool) -> Result<Put> {
        let mut request = Request::new(Verb::Put, key);
        request.body = data;
        if only_new {
            request.headers.push(("if-none-match", "*".into()));
        }
        let answer = self.client.send(&request, &mut Vec::new())?;
        match answer.status {
            412 if only_new => Ok(Put::Refused {
                retried: answer.attempts > 1,
            }),
            // A server that rejects the header instead of ignoring it: the
            // caller has looked already, which is all it can do there.
            501 if only_new => self.put(key, data, false),
            _ if answer.ok() => Ok(Put::Written),
            _ => Err(self.client.failure(&request, &answer)),
        }
    }

    /// The keys under `prefix` (ending in `/`, or empty) and their sizes,
    /// without `prefix`.
    fn list_keys(&self, prefix: &str, listing: Listing) -> Result<Vec<(String, u64)>> {
        Ok(self.list_level(prefix, listing)?.0)
    }

    /// The keys under `prefix` with their sizes, and (one level deep) the
    /// folders below it, all without `prefix` (folders without their `/`).
    fn list_level(&self, prefix: &str, listing: Listing) -> Result<(Keys, Vec<String>)> {
        let mut out = Vec::new();
        let mut folders = Vec::new();
        let mut token: Option<String> = None;
        let mut body = Vec::new();
        loop {
            let mut request = Request::new(Verb::List, "");
            request.query.push(("prefix", prefix.to_string()));
            let page_size = match listing {
                Listing::FirstPage => 8,
                _ => self.page_size,
            };
            request.query.push(("max-keys", page_size.to_string()));
            if listing == Listing::OneLevel {
                request.query.push(("delimiter", "/".into()));
            }
            if let Some(token) = &token {
                request.query.push(("continuation-token", token.clone()));
            }
            self.expect_ok(&request, &mut body)?;
            let text = String::from_utf8_lossy(&body);
            let page = ListObjectsV2::parse_response(&text).map_err(|e| {
                Error::Unavailable(format!(
                    "{}: listing {prefix:?}: the answer does not parse: {e}",
                    self.client.place()
                ))
            })?;
            for object in page.contents {
                if let Some(rest) = object.key.strip_prefix(prefix) {
                    out.push((rest.to_string(), object.size));
                }
            }
            for common in page.common_prefixes {
                let folder = common.prefix.strip_prefix(prefix);
                if let Some(folder) = folder.and_then(|f| f.strip_suffix('/')) {
                    folders.push(folder.to_string());
                }
            }
            match page.next_continuation_token {
                Some(next) if !next.is_empty() && listing != Listing::FirstPage => {
                    token = Some(next)
                }
                _ => return Ok((out, folders)),
            }
        }
    }

    /// What the object holds of `length` bytes at `offset` (a ranged GET),
    /// placed in `buf`, and where: short where the object ends, empty at
    /// or past its end.
    fn get_range(
        &self,
        kind: FileType,
        name: &str,
        offset: u64,
        length: u64,
        buf: &mut Vec<u8>,
    ) -> Result<Range<usize>> {
        let key = self.key(kind, name);
        let mut request = Request::new(Verb::Get, &key);
        let last = offset + length - 1;
        request
            .headers
            .push(("range", format!("bytes={offset}-{last}")));
        let answer = self.client.send(&request, buf)?;
        match answer.status {
            206 if buf.len() as u64 <= length => Ok(0..buf.len()),
            // A server that ignores Range sends the whole object.
            200 => {
                let start = (offset as usize).min(buf.len());
                Ok(start..((offset + length) as usize).min(buf.len()))
            }
            // The range starts at or past the end.
            416 => Ok(0..0),
            _ => Err(self.client.failure(&request, &answer)),
        }
    }
}

/// Keys (names below a prefix) and their sizes.
type Keys = Vec<(String, u64)>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Listing {
    /// Every key, at any depth.
    All,
    /// Only keys with no `/` after the prefix (S3's delimiter).
    OneLevel,
    /// Whatever the first short page holds.
    FirstPage,
}

enum Put {
    Written,
    /// The key exists (`If-None-Match: *`); `retried`: the refusal came
    /// after a try whose answer was lost.
    Refused {
        retried: bool,
    },
}

/// Names as `Backend::list` gives them: files, never `.`-names (as in the
/// local folder, they are no part of the repository), at most `depth`
/// folders deep.
fn names_within(keys: Vec<(String, u64)>, depth: usize) -> Vec<(String, u64)> {
    keys.into_iter()
        .filter(|(key, _)| {
            let parts: Vec<&str> = key.split('/').collect();
            parts.len() <= depth + 1 && parts.iter().all(|p| !p.is_empty() && !p.starts_with('.'))
        })
        .collect()
}

impl Backend for S3Backend {
    fn location(&self) -> String {
        self.location.to_string()
    }

    /// Nothing to create (S3 has no folders); the bucket must exist.
    fn create(&self) -> Result<()> {
        let request = Request::new(Verb::HeadBucket, "");
        let answer = self.client.send(&request, &mut Vec::new())?;
        match answer.status {
            404 => Err(self.client.no_bucket()),
            _ if answer.ok() => Ok(()),
            _ => Err(self.client.failure(&request, &answer)),
        }
    }

    fn occupant(&self) -> Result<Option<String>> {
        // One short page: a bucket of millions answers as fast as an empty
        // one. A probe object left by an interrupted init is ours.
        let top = self.location.key("");
        Ok(self
            .list_keys(&top, Listing::FirstPage)?
            .into_iter()
            .find(|(key, _)| !key.starts_with(".probe-"))
            .map(|(key, _)| format!("object {top}{key}")))
    }

    fn write(&self, kind: FileType, name: &str, data: &[u8]) -> Result<()> {
        self.put(&self.key(kind, name), data, false).map(|_| ())
    }

    fn write_new(&self, kind: FileType, name: &str, data: &[u8]) -> Result<bool> {
        let key = self.key(kind, name);
        // Where the server honours If-None-Match (known once `init` or
        // anyone in this process probed), the look first is redundant.
        if self.conditional.get() != Some(&CreateIfAbsent::Atomic) && self.head(&key)?.is_some() {
            return Ok(false);
        }
        match self.put(&key, data, true)? {
            Put::Written => Ok(true),
            Put::Refused { retried: false } => Ok(false),
            // Refused after a retry: by another creator, or because our
            // own first try got through and only its answer was lost. Our
            // bytes there mean the latter.
            Put::Refused { retried: true } => match self.read(kind, name) {
                Ok(there) => Ok(there == data),
                Err(Error::NotFound(_)) => Ok(false),
                Err(e) => Err(e),
            },
        }
    }

    fn create_if_absent(&self) -> Result<CreateIfAbsent> {
        if let Some(known) = self.conditional.get() {
            return Ok(known.clone());
        }
        let probe = Id::hash(
            format!("{} {:?}", std::process::id(), std::time::SystemTime::now()).as_bytes(),
        );
        let key = self.location.key(&format!(".probe-{}", probe.short()));
        let mut request = Request::new(Verb::Put, &key);
        request.headers.push(("if-none-match", "*".into()));
        request.body = b"snapfs: does this server honour If-None-Match? (safe to delete)";
        let first = self.client.send(&request, &mut Vec::new())?;
        if !first.ok() && first.status != 501 {
            return Err(self.client.failure(&request, &first));
        }
        let second = self.client.send(&request, &mut Vec::new())?;
        let found = match (first.status, second.status) {
            (_, 412) => CreateIfAbsent::Atomic,
            (501, _) | (_, 501) => CreateIfAbsent::CheckThenWrite(
                "the server refuses conditional PUTs (501 Not Implemented)".into(),
            ),
            (_, s) if (200..300).contains(&s) => CreateIfAbsent::CheckThenWrite(
                "the server ignores If-None-Match (a second conditional PUT replaced the first)"
                    .into(),
            ),
            _ => return Err(self.client.failure(&request, &second)),
        };
        self.remove_key(&key)?;
        Ok(self.conditional.get_or_init(|| found).clone())
    }

    fn read(&self, kind: FileType, name: &str) -> Result<Vec<u8>> {
        let key = self.key(kind, name);
        let mut body = Vec::new();
        self.expect_ok(&Request::new(Verb::Get, &key), &mut body)?;
        Ok(body)
    }

    fn read_range_within(
        &self,
        kind: FileType,
        name: &str,
        offset: u64,
        length: u64,
        buf: &mut Vec<u8>,
    ) -> Result<Range<usize>> {
        let key = self.key(kind, name);
        if length == 0 {
            // No range names zero bytes; the object must still be there.
            let size = self.head(&key)?.ok_or_else(|| {
                Error::NotFound(format!("{} {name} is missing ({key})", kind.describe()))
            })?;
            buf.clear();
            return match size >= offset {
                true => Ok(0..0),
                false => Err(truncated(kind, name, offset, length)),
            };
        }
        // Only the part asked for, which must be all of it: a short one
        // means the object ends inside the range.
        let range = self.get_range(kind, name, offset, length, buf)?;
        if range.len() as u64 != length {
            return Err(truncated(kind, name, offset, length));
        }
        Ok(range)
    }

    fn read_range_upto(
        &self,
        kind: FileType,
        name: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>> {
        if length == 0 {
            return Ok(Vec::new());
        }
        let mut buf = Vec::new();
        let range = self.get_range(kind, name, offset, length, &mut buf)?;
        buf.truncate(range.end);
        buf.drain(..range.start);
        Ok(buf)
    }

    fn size(&self, kind: FileType, name: &str) -> Result<u64> {
        let key = self.key(kind, name);
        self.head(&key)?.ok_or_else(|| {
            Error::NotFound(format!("{} {name} is missing ({key})", kind.describe()))
        })
    }

    fn list(&self, kind: FileType) -> Result<Vec<(String, u64)>> {
        let folder = self.folder(kind);
        Ok(match kind {
            FileType::Config => self
                .head(&self.key(kind, "config"))?
                .map(|size| ("config".to_string(), size))
                .into_iter()
                .collect(),
            // `data/ab/<id>`: the name is the part after the fan-out.
            FileType::Pack => names_within(self.list_keys(&folder, Listing::All)?, 1)
                .into_iter()
                .filter_map(|(key, size)| Some((key.split_once('/')?.1.to_string(), size)))
                .collect(),
            FileType::Snapshot => names_within(self.list_keys(&folder, Listing::All)?, 1),
            _ => names_within(self.list_keys(&folder, Listing::OneLevel)?, 0),
        })
    }

    fn list_folder(&self, kind: FileType, folder: &str) -> Result<Vec<(String, u64)>> {
        if folder.contains('/') || folder.starts_with('.') {
            // Not a folder this backend makes: nothing in it.
            return Ok(Vec::new());
        }
        if kind != FileType::Snapshot {
            let mut all = self.list(kind)?;
            all.retain(|(name, _)| folder_of(name) == folder);
            return Ok(all);
        }
        let prefix = match folder {
            "" => self.folder(kind),
            _ => format!("{}{folder}/", self.folder(kind)),
        };
        let named = |(file, size): (String, u64)| match folder {
            "" => (file, size),
            _ => (format!("{folder}/{file}"), size),
        };
        Ok(names_within(self.list_keys(&prefix, Listing::OneLevel)?, 0)
            .into_iter()
            .map(named)
            .collect())
    }

    fn list_folders(&self, kind: FileType) -> Result<Vec<String>> {
        if kind != FileType::Snapshot {
            return Ok(Vec::new());
        }
        let (_, mut folders) = self.list_level(&self.folder(kind), Listing::OneLevel)?;
        // As in the local folder: `.`-names are no part of the repository.
        folders.retain(|f| !f.is_empty() && !f.starts_with('.'));
        Ok(folders)
    }

    fn remove(&self, kind: FileType, name: &str) -> Result<()> {
        self.remove_key(&self.key(kind, name))
    }

    fn rename(&self, kind: FileType, from: &str, to: &str) -> Result<()> {
        let data = self.read(kind, from)?;
        self.write(kind, to, &data)?;
        self.remove(kind, from)
    }

    fn exists(&self, kind: FileType, name: &str) -> Result<bool> {
        Ok(self.head(&self.key(kind, name))?.is_some())
    }

    fn remove_temporary(&self) -> Result<u64> {
        // A PUT is whole or absent: nothing is ever half-written.
        Ok(0)
    }
}

impl S3Backend {
    fn remove_key(&self, key: &str) -> Result<()> {
        let request = Request::new(Verb::Delete, key);
        let answer = self.client.send(&request, &mut Vec::new())?;
        match answer.status {
            404 => Ok(()),
            _ if answer.ok() => Ok(()),
            _ => Err(self.client.failure(&request, &answer)),
        }
    }
}
