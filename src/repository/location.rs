//! Where a repository is: a local folder, or a bucket (and a prefix in it)
//! on an S3 server. `--repo`, `SNAPFS_REPO` and the host configuration's
//! `repository` are parsed here and nowhere else.
//!
//! The S3 form is restic's: `s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]`.
//! Unlike restic, the scheme is required (restic assumes https): a
//! repository on a plain-http test server and one behind TLS must not be
//! one forgotten word apart. Credentials never appear in a location: they
//! come from the environment ([`super::backend::s3`]), so that they stay
//! out of `ps`, shell histories and unit files.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The forms a location may take, for messages.
pub const FORMS: &str = "a folder, or s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    S3(S3Location),
}

/// A bucket, and a prefix in it, on an S3 server addressed path-style
/// (`http://host:port/bucket/key`): the style every S3 server answers,
/// where virtual-hosted names need DNS for each bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Location {
    /// `http://host[:port]` or `https://host[:port]`, no trailing slash.
    pub endpoint: String,
    pub bucket: String,
    /// Empty, or folders without leading or trailing slash (`a/b`).
    pub prefix: String,
    /// Where to keep what is read from it on local disk, if anywhere: not
    /// part of the location, how it is reached ([`Location::with_cache`]).
    pub cache: Option<DiskCache>,
    /// Credentials to use when the environment has none (the host
    /// configuration's `[s3]`): not part of the location either.
    pub credentials: Option<S3Credentials>,
}

/// An S3 key pair and region from the host configuration. Never printed:
/// its `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: Option<String>,
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"(hidden)")
            .field("region", &self.region)
            .finish()
    }
}

/// A local disk cache of a remote repository (`--cache-dir`,
/// [`crate::repository::backend::cached`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskCache {
    /// The folder of every repository's cache; each gets a folder in it.
    pub dir: PathBuf,
    /// Bytes of pack ranges to keep, per repository.
    pub budget: u64,
}

impl Location {
    /// Parse a location given as text.
    pub fn parse(text: &str) -> Result<Location> {
        Self::parse_os(OsStr::new(text))
    }

    /// Parse a location from the command line or the environment: any
    /// path (also one that is not UTF-8) unless it starts with `s3:`.
    pub fn parse_os(text: &OsStr) -> Result<Location> {
        let bytes = text.as_bytes();
        if let Some(rest) = bytes.strip_prefix(b"s3:") {
            let rest = std::str::from_utf8(rest)
                .map_err(|_| malformed(text, "an S3 location must be UTF-8"))?;
            return S3Location::parse(rest)
                .map(Location::S3)
                .map_err(|why| malformed(text, &why));
        }
        // `http://...` without `s3:` would otherwise become a folder named
        // `http:` in the working folder: never what was meant.
        if let Some(scheme_end) = find(bytes, b"://") {
            if bytes[..scheme_end].iter().all(u8::is_ascii_alphanumeric) {
                return Err(malformed(
                    text,
                    "unknown kind of location (an S3 one starts with `s3:`; \
                     a folder whose name has `://` in it: ./NAME)",
                ));
            }
        }
        if bytes.is_empty() {
            return Err(malformed(text, "empty"));
        }
        Ok(Location::Local(PathBuf::from(text)))
    }

    /// This location, read through a disk cache when remote (a folder is
    /// read directly).
    pub fn with_cache(self, cache: Option<DiskCache>) -> Location {
        match self {
            Location::S3(s3) => Location::S3(S3Location { cache, ..s3 }),
            local => local,
        }
    }

    /// This location with credentials for when the environment has none
    /// (a folder needs none).
    pub fn with_credentials(self, credentials: Option<S3Credentials>) -> Location {
        match self {
            Location::S3(s3) => Location::S3(S3Location { credentials, ..s3 }),
            local => local,
        }
    }

    pub fn local_path(&self) -> Option<&Path> {
        match self {
            Location::Local(path) => Some(path),
            Location::S3(_) => None,
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn malformed(text: &OsStr, why: &str) -> Error {
    Error::Invalid(format!(
        "repository location {:?}: {why}; expected {FORMS}",
        text.to_string_lossy()
    ))
}

impl S3Location {
    /// `http(s)://HOST[:PORT]/BUCKET[/PREFIX]` (what follows `s3:`).
    fn parse(text: &str) -> std::result::Result<S3Location, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or("no scheme: write s3:https://HOST/BUCKET (or s3:http://...)")?;
        if scheme != "http" && scheme != "https" {
            return Err(format!("scheme {scheme:?}: only http and https"));
        }
        if rest.contains(['?', '#']) {
            return Err("a query or fragment (`?`, `#`) has no meaning here".into());
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.contains('@') {
            return Err(
                "credentials do not go in the location: set AWS_ACCESS_KEY_ID \
                 and AWS_SECRET_ACCESS_KEY"
                    .into(),
            );
        }
        check_authority(authority)?;
        let path = path.trim_end_matches('/');
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        check_bucket(bucket)?;
        if prefix
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
            && !prefix.is_empty()
        {
            return Err(format!(
                "prefix {prefix:?}: empty, `.` and `..` parts are not allowed"
            ));
        }
        Ok(S3Location {
            endpoint: format!("{scheme}://{authority}"),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            cache: None,
            credentials: None,
        })
    }

    /// The key of `name` under the prefix.
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }
}

/// `HOST[:PORT]`, HOST a name, an IPv4 address or a bracketed IPv6 one.
fn check_authority(authority: &str) -> std::result::Result<(), String> {
    let port = match authority.strip_prefix('[') {
        Some(v6) => {
            let (addr, after) = v6.split_once(']').ok_or("unclosed `[` in the host")?;
            addr.parse::<std::net::Ipv6Addr>()
                .map_err(|_| format!("{addr:?} is not an IPv6 address"))?;
            match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or("junk after `]`")?),
            }
        }
        None => {
            let (host, port) = match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            };
            let name_byte = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'-';
            if host.is_empty() || !host.bytes().all(name_byte) {
                return Err(format!("no valid host in {authority:?}"));
            }
            port
        }
    };
    match port.map(str::parse::<u16>) {
        None | Some(Ok(1..)) => Ok(()),
        Some(_) => Err(format!(
            "port {:?} is not a number from 1 to 65535",
            port.unwrap_or_default()
        )),
    }
}

/// S3's rules for bucket names: 3 to 63 lowercase letters, digits, `.`
/// and `-`, starting and ending with a letter or digit.
fn check_bucket(bucket: &str) -> std::result::Result<(), String> {
    if bucket.is_empty() {
        return Err("no bucket: write s3:http(s)://HOST[:PORT]/BUCKET".into());
    }
    let edge_ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && edge_ok(bucket.bytes().next())
        && edge_ok(bucket.bytes().last());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bucket {bucket:?}: a bucket name is 3 to 63 lowercase letters, digits, \
             `.` and `-`, starting and ending with a letter or digit"
        ))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(path) => write!(f, "{}", path.display()),
            Location::S3(s3) => write!(f, "{s3}"),
        }
    }
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3:{}/{}", self.endpoint, self.bucket)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

// Paths convert as they are: callers that hold a path (tests, the mount)
// keep writing `Repository::open(path)`. Borrowed only: with `PathBuf`
// too, clippy would ask every `open(&path_buf)` to give its path away.
impl From<&Path> for Location {
    fn from(path: &Path) -> Location {
        Location::Local(path.to_path_buf())
    }
}

impl From<&PathBuf> for Location {
    fn from(path: &PathBuf) -> Location {
        Location::Local(path.clone())
    }
}

impl From<&Location> for Location {
    fn from(location: &Location) -> Location {
        location.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(endpoint: &str, bucket: &str, prefix: &str) -> Location {
        Location::S3(S3Location {
            endpoint: endpoint.into(),
            bucket: bucket.into(),
            prefix: prefix.into(),
            cache: None,
            credentials: None,
        })
    }

    #[test]
    fn the_forms_parse() {
        let cases = [
            (
                "s3:http://127.0.0.1:8333/b-1",
                s3("http://127.0.0.1:8333", "b-1", ""),
            ),
            (
                "s3:https://s3.example.org/bkt/",
                s3("https://s3.example.org", "bkt", ""),
            ),
            ("s3:https://h/bkt/a/b/", s3("https://h", "bkt", "a/b")),
            (
                "s3:http://[::1]:9000/my.bucket/x",
                s3("http://[::1]:9000", "my.bucket", "x"),
            ),
            (
                "/var/lib/snapfs/repository",
                Location::Local("/var/lib/snapfs/repository".into()),
            ),
            ("repo", Location::Local("repo".into())),
            ("./s3:odd", Location::Local("./s3:odd".into())),
            ("./http://x", Location::Local("./http://x".into())),
        ];
        for (text, want) in cases {
            assert_eq!(Location::parse(text).unwrap(), want, "{text}");
        }
        let round = "s3:https://h:1/bkt/a/b";
        assert_eq!(Location::parse(round).unwrap().to_string(), round);
    }

    #[test]
    fn a_path_that_is_not_utf8_is_a_folder() {
        let name = OsStr::from_bytes(b"/tmp/\xff");
        assert_eq!(
            Location::parse_os(name).unwrap(),
            Location::Local(PathBuf::from(name))
        );
    }

    #[test]
    fn malformed_locations_say_what_is_wrong() {
        let cases = [
            ("s3:127.0.0.1:8333/b", "no scheme"),
            ("s3:ftp://h/bkt", "only http and https"),
            ("s3:http://h", "no bucket"),
            ("s3:http://h/", "no bucket"),
            ("s3:http:///bkt", "no valid host"),
            ("s3:http://h:port/bkt", "port"),
            ("s3:http://h:0/bkt", "port"),
            ("s3:http://key:secret@h/bkt", "AWS_ACCESS_KEY_ID"),
            ("s3:http://h/Bucket", "bucket \"Bucket\""),
            ("s3:http://h/ab", "3 to 63"),
            ("s3:http://h/-ab", "starting and ending"),
            ("s3:http://h/bkt/a//b", "prefix"),
            ("s3:http://h/bkt/../x", "prefix"),
            ("s3:http://h/bkt?x=1", "query"),
            ("s3:http://[::1/bkt", "unclosed"),
            ("http://h/bkt", "starts with `s3:`"),
            ("", "empty"),
        ];
        for (text, want) in cases {
            let err = Location::parse(text).unwrap_err();
            assert!(matches!(err, Error::Invalid(_)), "{text}: {err:?}");
            let msg = err.to_string();
            assert!(msg.contains(want), "{text}: {msg}");
            assert!(msg.contains(FORMS), "{text}: {msg}");
        }
    }

    #[test]
    fn keys_sit_under_the_prefix() {
        let Location::S3(bare) = Location::parse("s3:http://h/bkt").unwrap() else {
            unreachable!()
        };
        assert_eq!(bare.key("config"), "config");
        let Location::S3(deep) = Location::parse("s3:http://h/bkt/a/b").unwrap() else {
            unreachable!()
        };
        assert_eq!(deep.key("data/ab/x"), "a/b/data/ab/x");
    }
}
