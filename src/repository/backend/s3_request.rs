//! One request to an S3 server: signed, sent, retried, and its failure
//! told in words that name the object and the server's answer.
//!
//! Signing is rusty-s3's (AWS Signature V4, as presigned URLs, so the
//! signed part is the URL alone and any HTTP client can send it); sending
//! is ureq's, blocking, from whichever of our threads asks: backups write
//! packs from several threads and a mount reads from one per kernel
//! request, so there is no async runtime to feed. Why these two and not an
//! S3 SDK: docs/S3.md.
//!
//! Every request has timeouts (connecting, each read and write on the
//! socket, the whole exchange). A transient failure — no connection, a
//! reset, a timeout, 5xx, 429, S3's `SlowDown` and `RequestTimeout` — is
//! retried with exponential backoff until `retry_for` has passed; the first
//! retry says so on stderr, so that a hung-looking command explains itself.

use std::io::Read;
use std::time::{Duration, Instant};

use rusty_s3::{Bucket, Credentials, S3Action};

use crate::error::{Error, Result};

/// A presigned URL is used at once; this only bounds a clock skew.
const SIGNATURE_VALID: Duration = Duration::from_secs(15 * 60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// No byte for this long on an open connection: the server is gone.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// One whole exchange, the largest pack included (64 MiB at 120 KiB/s).
const CALL_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// Error bodies are short XML; a proxy's HTML page is cut here.
const ERROR_BODY_MAX: u64 = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verb {
    Get,
    Head,
    Put,
    Delete,
    List,
    HeadBucket,
}

impl Verb {
    fn name(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Head => "HEAD",
            Verb::Put => "PUT",
            Verb::Delete => "DELETE",
            Verb::List => "LIST",
            Verb::HeadBucket => "HEAD bucket",
        }
    }
}

pub(super) struct Request<'a> {
    pub verb: Verb,
    /// The object's whole key (empty for bucket-level requests).
    pub key: &'a str,
    /// Signed, and sent (`range`, `if-none-match`).
    pub headers: Vec<(&'static str, String)>,
    /// ListObjectsV2's parameters.
    pub query: Vec<(&'static str, String)>,
    pub body: &'a [u8],
}

impl<'a> Request<'a> {
    pub fn new(verb: Verb, key: &'a str) -> Request<'a> {
        Request {
            verb,
            key,
            headers: Vec::new(),
            query: Vec::new(),
            body: &[],
        }
    }
}

/// The server's final answer (after retries), whatever its status.
pub(super) struct Answer {
    pub status: u16,
    /// Tries it took: a conditional PUT refused after a retry may have
    /// been refused because our own first try got through.
    pub attempts: u32,
    pub content_length: Option<u64>,
    /// S3's error `Code` and `Message`, for statuses other than 2xx.
    pub code: String,
    pub message: String,
}

impl Answer {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

pub(super) struct Client {
    agent: ureq::Agent,
    bucket: Bucket,
    credentials: Credentials,
    /// `s3:http://host:port/bucket[/prefix]`, for messages.
    place: String,
    /// The prefix's part of every key (`a/b/`, or empty), which messages
    /// leave out since `place` shows it.
    prefix: String,
    endpoint: String,
    retry_for: Duration,
}

/// Why one try failed: worth another, or not.
enum Failure {
    Transient(String),
    Fatal(String),
}

impl Client {
    pub fn new(
        endpoint: &str,
        bucket: &str,
        region: String,
        credentials: Credentials,
        place: String,
        prefix: String,
        retry_for: Duration,
    ) -> Result<Client> {
        let url = endpoint
            .parse::<url::Url>()
            .map_err(|e| Error::Invalid(format!("{place}: endpoint {endpoint}: {e}")))?;
        let bucket = Bucket::new(url, rusty_s3::UrlStyle::Path, bucket.to_string(), region)
            .map_err(|e| Error::Invalid(format!("{place}: {e}")))?;
        let agent = ureq::Agent::config_builder()
            // Statuses are answers to map (404 is NotFound, 412 a refused
            // create), not errors of the transport.
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_per_read(Some(IDLE_TIMEOUT))
            .timeout_per_write(Some(IDLE_TIMEOUT))
            .timeout_per_call(Some(CALL_TIMEOUT))
            // Every reader thread of a mount keeps its connection.
            .max_idle_connections_per_host(64)
            .user_agent(format!("snapfs/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Ok(Client {
            agent,
            bucket,
            credentials,
            place,
            prefix,
            endpoint: endpoint.to_string(),
            retry_for,
        })
    }

    pub fn place(&self) -> &str {
        &self.place
    }

    /// Send `request` until it gets an answer that is not transient; a
    /// 2xx answer's body (GET, LIST) replaces `body`'s contents. `Err`
    /// only when no answer came (after retrying for `retry_for`).
    pub fn send(&self, request: &Request, body: &mut Vec<u8>) -> Result<Answer> {
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let mut attempts = 1;
        loop {
            let why = match self.try_once(request, body) {
                Ok(mut answer) if !transient(&answer) => {
                    answer.attempts = attempts;
                    return Ok(answer);
                }
                Ok(answer) => describe(&answer),
                Err(Failure::Transient(why)) => why,
                Err(Failure::Fatal(why)) => {
                    return Err(Error::Unavailable(format!("{}: {why}", self.what(request))))
                }
            };
            let waited = started.elapsed();
            if waited + backoff > self.retry_for {
                return Err(Error::Unavailable(format!(
                    "{}: {why} (after {attempts} tries over {:.1} s)",
                    self.what(request),
                    waited.as_secs_f64()
                )));
            }
            if attempts == 1 {
                tracing::warn!(
                    "{}: {why}; retrying for up to {} s",
                    self.what(request),
                    self.retry_for.as_secs()
                );
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
            attempts += 1;
        }
    }

    /// `GET data/ab/abcd… at s3:http://host/bucket`: what a message is about.
    fn what(&self, request: &Request) -> String {
        match request.verb {
            Verb::HeadBucket => format!("{}: bucket {}", self.place, self.bucket.name()),
            verb => {
                // A listing names what it lists: its `prefix` parameter.
                let listed = request.query.iter().find(|(n, _)| *n == "prefix");
                let key = listed.map_or(request.key, |(_, v)| v.as_str());
                let name = key.strip_prefix(&self.prefix).unwrap_or(key);
                let name = if name.is_empty() { "/" } else { name };
                format!("{} {name} at {}", verb.name(), self.place)
            }
        }
    }

    /// The error for a final answer that is not a success: 404 is
    /// `NotFound` (callers rely on it, as on a missing local file), except
    /// for a missing bucket; everything else means the store would not do
    /// it, and says what the server said.
    pub fn failure(&self, request: &Request, answer: &Answer) -> Error {
        match (answer.status, answer.code.as_str()) {
            (404, "NoSuchBucket") => self.no_bucket(),
            (404, _) => Error::NotFound(format!("{} is missing", self.what(request))),
            (403, _) | (401, _) => Error::Unavailable(format!(
                "{}: the server refused access: {} (check AWS_ACCESS_KEY_ID, \
                 AWS_SECRET_ACCESS_KEY and the bucket's policy)",
                self.what(request),
                describe(answer)
            )),
            _ => Error::Unavailable(format!("{}: {}", self.what(request), describe(answer))),
        }
    }

    pub fn no_bucket(&self) -> Error {
        Error::Unavailable(format!(
            "bucket {} does not exist at {} (snapfs does not create buckets: \
             create it with the store's tools, with the policy you want)",
            self.bucket.name(),
            self.endpoint
        ))
    }

    fn try_once(&self, request: &Request, body: &mut Vec<u8>) -> Result<Answer, Failure> {
        let url = self.sign(request);
        let url = url.as_str();
        let mut response = match request.verb {
            Verb::Get | Verb::List => self.agent.get(url).headers(&request.headers).call(),
            Verb::Head | Verb::HeadBucket => self.agent.head(url).headers(&request.headers).call(),
            Verb::Delete => self.agent.delete(url).headers(&request.headers).call(),
            Verb::Put => self
                .agent
                .put(url)
                .headers(&request.headers)
                .send(request.body),
        }
        .map_err(classify)?;
        let status = response.status().as_u16();
        let content_length = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let mut answer = Answer {
            status,
            attempts: 0,
            content_length,
            code: String::new(),
            message: String::new(),
        };
        let mut reader = response.body_mut().as_reader();
        if answer.ok() {
            if matches!(request.verb, Verb::Get | Verb::List) {
                body.clear();
                // Exactly: a doubling Vec would map memory the blob never uses.
                body.reserve_exact(content_length.unwrap_or(0) as usize);
                reader
                    .read_to_end(body)
                    .map_err(|e| Failure::Transient(format!("reading the answer: {e}")))?;
            }
        } else if request.verb != Verb::Head && request.verb != Verb::HeadBucket {
            let mut text = String::new();
            // A body cut short still tells the status; its text is a bonus.
            let _ = reader.take(ERROR_BODY_MAX).read_to_string(&mut text);
            answer.code = xml_field(&text, "Code");
            answer.message = xml_field(&text, "Message");
            if answer.code.is_empty() && answer.message.is_empty() {
                answer.message = text.trim().chars().take(200).collect();
            }
        }
        Ok(answer)
    }

    fn sign(&self, request: &Request) -> url::Url {
        fn signed<'a>(mut action: impl S3Action<'a>, request: &'a Request) -> url::Url {
            for (name, value) in &request.headers {
                action.headers_mut().insert(*name, value.as_str());
            }
            for (name, value) in &request.query {
                action.query_mut().insert(*name, value.as_str());
            }
            action.sign(SIGNATURE_VALID)
        }
        let (bucket, creds, key) = (&self.bucket, Some(&self.credentials), request.key);
        match request.verb {
            Verb::Get => signed(bucket.get_object(creds, key), request),
            Verb::Head => signed(bucket.head_object(creds, key), request),
            Verb::Put => signed(bucket.put_object(creds, key), request),
            Verb::Delete => signed(bucket.delete_object(creds, key), request),
            Verb::List => signed(bucket.list_objects_v2(creds), request),
            Verb::HeadBucket => signed(bucket.head_bucket(creds), request),
        }
    }
}

/// Add headers to a ureq request builder.
trait Headers: Sized {
    fn headers(self, headers: &[(&'static str, String)]) -> Self;
}

impl<B> Headers for ureq::RequestBuilder<B> {
    fn headers(mut self, headers: &[(&'static str, String)]) -> Self {
        for (name, value) in headers {
            self = self.header(*name, value);
        }
        self
    }
}

/// Whether an answer is worth asking again: the server is overloaded,
/// restarting, or timed out waiting for our bytes.
fn transient(answer: &Answer) -> bool {
    matches!(answer.status, 408 | 429 | 500 | 502 | 503 | 504)
        || matches!(
            answer.code.as_str(),
            "SlowDown" | "RequestTimeout" | "InternalError" | "ServiceUnavailable"
        )
}

/// A transport error: everything on the way (connecting, DNS, resets,
/// timeouts, a garbled answer) may pass; a TLS certificate refused or a URL
/// that cannot be sent will not.
fn classify(e: ureq::Error) -> Failure {
    use ureq::Error as E;
    match e {
        E::Tls(_) | E::Rustls(_) | E::Pem(_) | E::BadUri(_) | E::Http(_) | E::TlsRequired => {
            Failure::Fatal(e.to_string())
        }
        E::HostNotFound => Failure::Transient("host not found".into()),
        other => Failure::Transient(other.to_string()),
    }
}

/// `403 SignatureDoesNotMatch: The request signature we calculated…`
fn describe(answer: &Answer) -> String {
    let (status, code, message) = (answer.status, &answer.code, &answer.message);
    match (code.is_empty(), message.is_empty()) {
        (false, false) => format!("{status} {code}: {message}"),
        (false, true) => format!("{status} {code}"),
        (true, false) => format!("{status} {message}"),
        (true, true) => format!("{status}"),
    }
}

/// The text of the first `<name>` element: S3's error bodies are flat
/// and small; a real XML parser buys nothing here.
pub(super) fn xml_field(xml: &str, name: &str) -> String {
    let open = format!("<{name}>");
    let Some(start) = xml.find(&open).map(|i| i + open.len()) else {
        return String::new();
    };
    let end = xml[start..].find("</").map_or(xml.len(), |i| start + i);
    xml[start..end]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_read_for_code_and_message() {
        let xml = "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code>\
                   <Message>The key &amp; more</Message></Error>";
        assert_eq!(xml_field(xml, "Code"), "NoSuchKey");
        assert_eq!(xml_field(xml, "Message"), "The key & more");
        assert_eq!(xml_field(xml, "Resource"), "");
        let answer = Answer {
            status: 403,
            attempts: 1,
            content_length: None,
            code: "SignatureDoesNotMatch".into(),
            message: "no".into(),
        };
        assert_eq!(describe(&answer), "403 SignatureDoesNotMatch: no");
    }

    #[test]
    fn overload_and_timeouts_are_transient_refusals_are_not() {
        let answer = |status, code: &str| Answer {
            status,
            attempts: 1,
            content_length: None,
            code: code.into(),
            message: String::new(),
        };
        assert!(transient(&answer(503, "SlowDown")));
        assert!(transient(&answer(500, "")));
        assert!(transient(&answer(429, "")));
        assert!(transient(&answer(400, "RequestTimeout")));
        assert!(!transient(&answer(403, "AccessDenied")));
        assert!(!transient(&answer(404, "NoSuchKey")));
        assert!(!transient(&answer(412, "PreconditionFailed")));
    }

    /// A server that answers each connection with the next of `answers`
    /// (raw HTTP, `Connection: close`) and then closes it; how many
    /// connections it took.
    fn scripted_server(answers: Vec<&'static str>) -> (String, std::thread::JoinHandle<usize>) {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            for answer in &answers {
                let (mut socket, _) = listener.accept().unwrap();
                // The request, up to its blank line (GETs have no body).
                let mut request = Vec::new();
                let mut byte = [0];
                while !request.ends_with(b"\r\n\r\n") {
                    socket.read_exact(&mut byte).unwrap();
                    request.push(byte[0]);
                }
                socket.write_all(answer.as_bytes()).unwrap();
            }
            answers.len()
        });
        (endpoint, server)
    }

    fn client(endpoint: &str) -> Client {
        Client::new(
            endpoint,
            "bucket",
            "us-east-1".into(),
            Credentials::new("key", "secret"),
            format!("s3:{endpoint}/bucket"),
            String::new(),
            Duration::from_secs(5),
        )
        .unwrap()
    }

    /// What a gateway sends when the volume server behind it dies: a 500
    /// before any byte, or a 200 whose body stops short (the connection
    /// closes). Both are asked again; the short body is never taken for
    /// the object.
    #[test]
    fn a_body_cut_short_and_a_500_are_retried() {
        let (endpoint, server) = scripted_server(vec![
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 10\r\n\r\nabc",
            "HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 10\r\n\r\n0123456789",
        ]);
        let mut body = Vec::new();
        let answer = client(&endpoint)
            .send(&Request::new(Verb::Get, "data/ab/abcd"), &mut body)
            .unwrap();
        assert_eq!((answer.status, answer.attempts), (200, 3));
        assert_eq!(body, b"0123456789");
        assert_eq!(server.join().unwrap(), 3);
    }
}
