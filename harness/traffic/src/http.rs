//! The lean HTTP/1.1 exchange the generator runs per request.
//!
//! The request is the same bytes every time, so it is serialised once
//! ([`Target::request_bytes`]). The response is parsed with `httparse` into a
//! buffer owned by the request's exchange and its body only counted, never
//! kept.
//! Doing the framing here (instead of through a general client) keeps the
//! per-request cost to the syscalls and lets every failure be classified by
//! the exact stage it happened in: connect, write, response head, body.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::{ErrorKind, Load};

/// The largest response head accepted; beyond it the response is garbage.
const MAX_HEAD: usize = 64 * 1024;
/// Read size for the response head: one read holds a typical head.
const HEAD_CHUNK: usize = 1024;
/// Read size while skipping a body.
const BODY_CHUNK: usize = 16 * 1024;

/// Where in the exchange a request was when it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Waiting for a pool slot (keep-alive) or dialing.
    Connect,
    /// Writing the request.
    Write,
    /// Waiting for / reading the response head.
    Head,
    /// Reading the response body.
    Body,
}

impl Stage {
    fn describe(self) -> &'static str {
        match self {
            Stage::Connect => "dial tcp",
            Stage::Write => "write request",
            Stage::Head => "read response head",
            Stage::Body => "read response body",
        }
    }
}

/// Why a request failed, small and `Copy` so results never allocate; the
/// human message is built only the first time a distinct failure shows up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Failure {
    pub kind: ErrorKind,
    pub stage: Stage,
    pub detail: Detail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Detail {
    /// An OS error (errno when known, else the io::ErrorKind's debug index).
    Io(Option<i32>, IoKind),
    /// The peer closed the connection before the response was complete.
    Eof {
        got_bytes: bool,
    },
    /// The response head did not parse.
    Parse(ParseError),
    HeadTooLarge,
    BadContentLength,
    BadChunk,
    /// The one timeout (connect + headers + body) ran out.
    Timeout,
    /// The attack was cancelled while this request was in flight.
    Cancelled,
    /// The request was due but never sent (in-flight bound, end of attack).
    NotSent,
    /// More redirects than the attack follows (Go's client's message).
    TooManyRedirects(u32),
    /// A redirect whose `Location` the generator cannot follow (https, not
    /// a URL).
    BadLocation,
}

/// `io::ErrorKind` is not `Hash`+stable-ordered in a way worth relying on;
/// keep the few that matter plus "other".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoKind {
    Refused,
    Reset,
    Aborted,
    BrokenPipe,
    TimedOut,
    AddrNotAvailable,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError(httparse::Error);

impl std::hash::Hash for ParseError {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // httparse's errors are field-less variants.
        std::mem::discriminant(&self.0).hash(state);
    }
}

impl Failure {
    pub fn new(kind: ErrorKind, stage: Stage, detail: Detail) -> Self {
        Self {
            kind,
            stage,
            detail,
        }
    }

    pub fn io(stage: Stage, e: &io::Error) -> Self {
        let (kind, io_kind) = match e.kind() {
            io::ErrorKind::ConnectionRefused => (ErrorKind::Refused, IoKind::Refused),
            io::ErrorKind::ConnectionReset => (ErrorKind::Reset, IoKind::Reset),
            io::ErrorKind::ConnectionAborted => (ErrorKind::Reset, IoKind::Aborted),
            io::ErrorKind::BrokenPipe => (ErrorKind::Reset, IoKind::BrokenPipe),
            io::ErrorKind::TimedOut if stage == Stage::Connect => {
                (ErrorKind::ConnectTimeout, IoKind::TimedOut)
            }
            io::ErrorKind::TimedOut => (ErrorKind::ResponseTimeout, IoKind::TimedOut),
            io::ErrorKind::AddrNotAvailable => (ErrorKind::OtherIo, IoKind::AddrNotAvailable),
            _ => (ErrorKind::OtherIo, IoKind::Other),
        };
        Self::new(kind, stage, Detail::Io(e.raw_os_error(), io_kind))
    }

    pub fn timeout(stage: Stage) -> Self {
        let kind = if stage == Stage::Connect {
            ErrorKind::ConnectTimeout
        } else {
            ErrorKind::ResponseTimeout
        };
        Self::new(kind, stage, Detail::Timeout)
    }

    fn eof(stage: Stage, got_bytes: bool) -> Self {
        Self::new(ErrorKind::Closed, stage, Detail::Eof { got_bytes })
    }

    fn bad(stage: Stage, detail: Detail) -> Self {
        Self::new(ErrorKind::BadResponse, stage, detail)
    }

    /// A reused keep-alive connection that the server had already closed:
    /// nothing was answered, so the request may go again on a fresh one.
    pub fn is_stale_connection(&self) -> bool {
        matches!(self.stage, Stage::Write | Stage::Head)
            && matches!(
                self.detail,
                Detail::Eof { got_bytes: false }
                    | Detail::Io(_, IoKind::Reset | IoKind::BrokenPipe | IoKind::Aborted)
            )
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stage = self.stage.describe();
        match self.detail {
            Detail::Io(Some(errno), _) => {
                write!(f, "{stage}: {}", io::Error::from_raw_os_error(errno))
            }
            Detail::Io(None, kind) => write!(f, "{stage}: {kind:?}"),
            Detail::Eof { got_bytes: false } => {
                write!(f, "{stage}: connection closed before any response (EOF)")
            }
            Detail::Eof { got_bytes: true } => {
                write!(
                    f,
                    "{stage}: connection closed mid-response (unexpected EOF)"
                )
            }
            Detail::Parse(ParseError(e)) => write!(f, "{stage}: malformed HTTP response: {e}"),
            Detail::HeadTooLarge => {
                write!(f, "{stage}: response head larger than {MAX_HEAD} bytes")
            }
            Detail::BadContentLength => write!(f, "{stage}: invalid Content-Length"),
            Detail::BadChunk => write!(f, "{stage}: malformed chunked encoding"),
            Detail::Timeout => write!(f, "{stage}: timeout exceeded"),
            Detail::Cancelled => write!(f, "attack cancelled while in flight"),
            Detail::NotSent => write!(
                f,
                "not sent: the generator could not keep up (in-flight bound or end of attack)"
            ),
            Detail::TooManyRedirects(n) => write!(f, "stopped after {n} redirects"),
            Detail::BadLocation => {
                write!(f, "redirect to a location the generator cannot follow")
            }
        }
    }
}

/// A complete response. Header values of interest are ranges into the
/// buffer the exchange read into, so no copies are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Body bytes (after de-chunking), vegeta's `bytes_in`.
    pub body: u64,
    /// The connection may carry another request.
    pub reusable: bool,
    pub node: Option<Range<usize>>,
    pub pod: Option<Range<usize>>,
    /// The `Location` header of a redirect (301, 302, 303, 307, 308).
    pub location: Option<Range<usize>>,
}

impl Response {
    /// The status is a redirect a client follows, and it says where to.
    pub fn redirect(&self) -> Option<Range<usize>> {
        matches!(self.status, 301 | 302 | 303 | 307 | 308)
            .then(|| self.location.clone())
            .flatten()
    }
}

/// Where requests go: the address dialed and the Host header sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// `host:port` (port defaulted), what is resolved and dialed.
    pub authority: String,
    /// The Host header value (as written in the URL).
    pub host_header: String,
}

/// A URL the generator cannot send to; each message says what to write.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    #[error("`{url}` is not a URL ({source}): write e.g. http://127.0.0.1:8080/")]
    Malformed {
        url: String,
        #[source]
        source: http::uri::InvalidUri,
    },
    #[error("`{url}`: https is not supported by the generator; target the plain-HTTP port")]
    Https { url: String },
    #[error("`{url}` needs a scheme: write http://{url}")]
    NoScheme { url: String },
    #[error("`{url}` has no host: write e.g. http://127.0.0.1:8080/")]
    NoHost { url: String },
}

impl Target {
    /// Parses an `http://` URL into where it points and its path and query
    /// (`/` when it has none), which is part of the [`Load`].
    pub fn parse(url: &str) -> Result<(Self, String), UrlError> {
        let uri: http::Uri = url.parse().map_err(|source| UrlError::Malformed {
            url: url.to_string(),
            source,
        })?;
        let url = || url.to_string();
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(UrlError::Https { url: url() }),
            _ => return Err(UrlError::NoScheme { url: url() }),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| UrlError::NoHost { url: url() })?;
        let host = authority.host();
        let port = authority.port_u16().unwrap_or(80);
        let host_for_dial = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let path = match uri.path_and_query().map(|p| p.as_str()) {
            None | Some("") => "/".to_string(),
            Some(p) if p.starts_with('?') => format!("/{p}"),
            Some(p) => p.to_string(),
        };
        let target = Self {
            authority: format!("{host_for_dial}:{port}"),
            host_header: authority.as_str().to_string(),
        };
        Ok((target, path))
    }

    /// A resolved address: dialed as it is, and named in the Host header.
    pub fn from_addr(addr: SocketAddr) -> Self {
        Self {
            authority: addr.to_string(),
            host_header: addr.to_string(),
        }
    }

    /// `http://host/path`, as reports name the target.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.host_header)
    }

    /// The request as it goes on the wire, built once per attack.
    pub fn request_bytes(&self, load: &Load) -> Vec<u8> {
        let Load {
            method,
            path,
            headers,
            body,
            keep_alive,
            ..
        } = load;
        let mut out = Vec::with_capacity(256 + body.len());
        let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
        out.extend_from_slice(method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        if !has("host") {
            push_header(&mut out, "Host", &self.host_header);
        }
        if !has("user-agent") {
            push_header(
                &mut out,
                "User-Agent",
                concat!("zdt/", env!("CARGO_PKG_VERSION")),
            );
        }
        for (k, v) in headers {
            if k.eq_ignore_ascii_case("connection") || k.eq_ignore_ascii_case("content-length") {
                continue;
            }
            push_header(&mut out, k, v);
        }
        if !body.is_empty()
            || matches!(
                *method,
                http::Method::POST | http::Method::PUT | http::Method::PATCH
            )
        {
            push_header(&mut out, "Content-Length", &body.len().to_string());
        }
        if !keep_alive {
            push_header(&mut out, "Connection", "close");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        out
    }
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The address `host:port` resolves to: its first IPv4 one, else the
/// first.
pub async fn resolve(authority: &str) -> io::Result<SocketAddr> {
    first_ipv4(tokio::net::lookup_host(authority).await?)
        .ok_or_else(|| io::Error::other("no address"))
}

/// The first IPv4 address of `addrs`, else the first.
pub(crate) fn first_ipv4(addrs: impl Iterator<Item = SocketAddr>) -> Option<SocketAddr> {
    let mut first = None;
    for a in addrs {
        if a.is_ipv4() {
            return Some(a);
        }
        first = first.or(Some(a));
    }
    first
}

/// One response, read as its bytes arrive: the caller makes room
/// ([`ResponseReader::room`]), appends what one read returned to `buf` and
/// hands over the count ([`ResponseReader::read`]) until the response is
/// complete. The head stays at the start of `buf`; body bytes are counted
/// and dropped. Synchronous, so the attack loop drives it for every
/// connection it polls without a task per request.
#[derive(Debug)]
pub(crate) struct ResponseReader {
    head_only: bool,
    /// Where the next head begins (interim 1xx heads are skipped).
    start: usize,
    /// Set once the final head is parsed.
    body: Option<Body>,
}

#[derive(Debug)]
struct Body {
    head: Head,
    left: BodyLeft,
}

#[derive(Debug)]
enum BodyLeft {
    Length { have: u64, want: u64 },
    Chunked(Chunked),
    UntilClose(u64),
}

impl ResponseReader {
    pub fn new(head_only: bool) -> Self {
        Self {
            head_only,
            start: 0,
            body: None,
        }
    }

    /// Where the response stands, for a failure's message.
    pub fn stage(&self) -> Stage {
        if self.body.is_some() {
            Stage::Body
        } else {
            Stage::Head
        }
    }

    /// Room in `buf` for the next read; body bytes read before are dropped.
    pub fn room(&self, buf: &mut Vec<u8>) {
        match &self.body {
            None => {
                if buf.capacity() - buf.len() < HEAD_CHUNK / 2 {
                    buf.reserve(HEAD_CHUNK);
                }
            }
            Some(b) => {
                buf.truncate(b.head.len);
                if buf.capacity() - b.head.len < BODY_CHUNK {
                    buf.reserve(BODY_CHUNK);
                }
            }
        }
    }

    /// `n` bytes were appended to `buf` after [`ResponseReader::room`] (0:
    /// the peer closed): the response once it is complete.
    pub fn read(&mut self, buf: &mut Vec<u8>, n: usize) -> Result<Option<Response>, Failure> {
        let Some(mut body) = self.body.take() else {
            if n == 0 {
                return Err(Failure::eof(Stage::Head, !buf.is_empty()));
            }
            return self.head(buf);
        };
        let head_end = body.head.len;
        if n == 0 {
            return match body.left {
                BodyLeft::UntilClose(have) => Ok(Some(done(buf, body.head, have))),
                _ => Err(Failure::eof(Stage::Body, true)),
            };
        }
        match &mut body.left {
            BodyLeft::Length { have, want } => {
                *have += n as u64;
                if *have >= *want {
                    let want = *want;
                    body.head.reusable &= *have == want;
                    return Ok(Some(done(buf, body.head, want)));
                }
            }
            BodyLeft::Chunked(decoder) => match decoder.feed(&buf[head_end..head_end + n]) {
                Err(()) => return Err(Failure::bad(Stage::Body, Detail::BadChunk)),
                Ok(Fed { done: true, extra }) => {
                    body.head.reusable &= !extra;
                    let data = decoder.data;
                    return Ok(Some(done(buf, body.head, data)));
                }
                Ok(_) => {}
            },
            BodyLeft::UntilClose(have) => *have += n as u64,
        }
        self.body = Some(body);
        Ok(None)
    }

    /// Parses what `buf` holds of the head; moves on to the body once the
    /// final head is complete.
    fn head(&mut self, buf: &mut Vec<u8>) -> Result<Option<Response>, Failure> {
        let mut head = loop {
            if buf.len() <= self.start {
                return Ok(None);
            }
            match parse_head(&buf[self.start..], self.head_only) {
                Err(d) => return Err(Failure::bad(Stage::Head, d)),
                Ok(Some(h)) if h.interim => self.start += h.len,
                Ok(Some(h)) => break h.offset(self.start),
                Ok(None) if buf.len() - self.start > MAX_HEAD => {
                    return Err(Failure::bad(Stage::Head, Detail::HeadTooLarge))
                }
                Ok(None) => return Ok(None),
            }
        };
        let head_end = head.len;
        let have = (buf.len() - head_end) as u64;
        let left = match head.framing {
            Framing::Empty => {
                head.reusable &= have == 0;
                return Ok(Some(done(buf, head, 0)));
            }
            Framing::Length(want) if have >= want => {
                head.reusable &= have == want;
                return Ok(Some(done(buf, head, want)));
            }
            Framing::Length(want) => BodyLeft::Length { have, want },
            Framing::Chunked => {
                let mut decoder = Chunked::default();
                match decoder.feed(&buf[head_end..]) {
                    Err(()) => return Err(Failure::bad(Stage::Body, Detail::BadChunk)),
                    Ok(Fed { done: true, extra }) => {
                        head.reusable &= !extra;
                        let data = decoder.data;
                        return Ok(Some(done(buf, head, data)));
                    }
                    Ok(_) => BodyLeft::Chunked(decoder),
                }
            }
            Framing::UntilClose => {
                head.reusable = false;
                BodyLeft::UntilClose(have)
            }
        };
        self.body = Some(Body { head, left });
        Ok(None)
    }
}

/// The complete response; `buf` keeps only the head.
fn done(buf: &mut Vec<u8>, head: Head, body: u64) -> Response {
    buf.truncate(head.len);
    Response {
        status: head.status,
        body,
        reusable: head.reusable,
        node: head.node,
        pod: head.pod,
        location: head.location,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    len: usize,
    status: u16,
    interim: bool,
    framing: Framing,
    reusable: bool,
    node: Option<Range<usize>>,
    pod: Option<Range<usize>>,
    location: Option<Range<usize>>,
}

impl Head {
    fn offset(mut self, by: usize) -> Self {
        self.len += by;
        let shift = |r: Range<usize>| r.start + by..r.end + by;
        self.node = self.node.map(shift);
        self.pod = self.pod.map(shift);
        self.location = self.location.map(shift);
        self
    }
}

/// Parse one response head at the start of `bytes`; `None` if incomplete.
fn parse_head(bytes: &[u8], head_only: bool) -> Result<Option<Head>, Detail> {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Detail::Parse(ParseError(e))),
    };
    let status = response.code.unwrap_or(0);
    let version = response.version.unwrap_or(1);
    let base = bytes.as_ptr() as usize;
    let range_of = |v: &[u8]| {
        let start = v.as_ptr() as usize - base;
        start..start + v.len()
    };
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut close = version == 0;
    let mut node = None;
    let mut pod = None;
    let mut location = None;
    for h in response.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let v = parse_length(h.value).ok_or(Detail::BadContentLength)?;
            if length.is_some_and(|l| l != v) {
                return Err(Detail::BadContentLength);
            }
            length = Some(v);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = contains_token(h.value, b"chunked");
        } else if name.eq_ignore_ascii_case(b"connection") {
            if contains_token(h.value, b"close") {
                close = true;
            } else if contains_token(h.value, b"keep-alive") {
                close = false;
            }
        } else if name.eq_ignore_ascii_case(b"x-node") {
            node = Some(range_of(h.value));
        } else if name.eq_ignore_ascii_case(b"x-pod") {
            pod = Some(range_of(h.value));
        } else if name.eq_ignore_ascii_case(b"location") {
            location = Some(range_of(h.value));
        }
    }
    let interim = (100..200).contains(&status) && status != 101;
    let framing = if head_only || interim || status == 204 || status == 304 {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok(Some(Head {
        len,
        status,
        interim,
        framing,
        reusable: !close,
        node,
        pod,
        location,
    }))
}

fn parse_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

fn contains_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// A chunked-body framing decoder that counts data bytes and keeps none.
#[derive(Debug, Default)]
struct Chunked {
    state: ChunkState,
    size: u64,
    digits: u8,
    /// Data bytes seen so far.
    data: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    FinalLf,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fed {
    done: bool,
    /// Bytes followed the end of the body (pipelining we never asked for).
    extra: bool,
}

impl Chunked {
    fn feed(&mut self, mut bytes: &[u8]) -> Result<Fed, ()> {
        use ChunkState::*;
        while let Some((&b, rest)) = bytes.split_first() {
            match self.state {
                Done => break,
                Data => {
                    let take = (self.size.min(bytes.len() as u64)) as usize;
                    self.data += take as u64;
                    self.size -= take as u64;
                    bytes = &bytes[take..];
                    if self.size == 0 {
                        self.state = DataCr;
                    }
                    continue;
                }
                Size => match (b as char).to_digit(16) {
                    Some(d) => {
                        self.digits += 1;
                        if self.digits > 15 {
                            return Err(());
                        }
                        self.size = self.size * 16 + u64::from(d);
                    }
                    None if self.digits == 0 => return Err(()),
                    None if b == b'\r' => self.state = SizeLf,
                    None if b == b';' || b == b' ' || b == b'\t' => self.state = Extension,
                    None => return Err(()),
                },
                Extension => {
                    if b == b'\r' {
                        self.state = SizeLf;
                    }
                }
                SizeLf => {
                    if b != b'\n' {
                        return Err(());
                    }
                    self.digits = 0;
                    self.state = if self.size == 0 { TrailerStart } else { Data };
                }
                DataCr => self.state = if b == b'\r' { DataLf } else { return Err(()) },
                DataLf => self.state = if b == b'\n' { Size } else { return Err(()) },
                TrailerStart => self.state = if b == b'\r' { FinalLf } else { Trailer },
                Trailer => {
                    if b == b'\r' {
                        self.state = TrailerLf;
                    }
                }
                TrailerLf => {
                    self.state = if b == b'\n' {
                        TrailerStart
                    } else {
                        return Err(());
                    }
                }
                FinalLf => self.state = if b == b'\n' { Done } else { return Err(()) },
            }
            bytes = rest;
        }
        Ok(Fed {
            done: self.state == Done,
            extra: self.state == Done && !bytes.is_empty(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read one response from a canned server reply delivered in `parts`,
    /// one read each, then the server's close.
    fn run(parts: &[&[u8]], head_only: bool) -> (Result<Response, Failure>, Vec<u8>) {
        let mut reader = ResponseReader::new(head_only);
        let mut buf = Vec::new();
        for part in parts.iter().copied().chain([&b""[..]]) {
            reader.room(&mut buf);
            buf.extend_from_slice(part);
            match reader.read(&mut buf, part.len()) {
                Ok(None) => assert!(!part.is_empty(), "incomplete after the close"),
                r => return (r.map(|r| r.expect("complete")), buf),
            }
        }
        unreachable!("the close ends every response")
    }

    #[test]
    fn content_length_body_is_counted_and_backend_headers_found() {
        let (r, buf) = run(
            &[b"HTTP/1.1 200 OK\r\nX-Node: worker2\r\nx-pod: nginx-1\r\nContent-Length: 10\r\n\r\n01234", b"56789"],
            false,
        );
        let r = r.unwrap();
        assert_eq!((r.status, r.body, r.reusable), (200, 10, true));
        assert_eq!(&buf[r.node.clone().unwrap()], b"worker2");
        assert_eq!(&buf[r.pod.clone().unwrap()], b"nginx-1");
    }

    #[test]
    fn chunked_body_split_anywhere() {
        let whole: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n";
        for cut in [1, 40, 60, 70, 75, 80, whole.len() - 1] {
            let (r, _) = run(&[&whole[..cut], &whole[cut..]], false);
            let r = r.unwrap();
            assert_eq!(
                (r.status, r.body, r.reusable),
                (503, 15, true),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn interim_heads_are_skipped() {
        let (r, _) = run(
            &[b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"],
            false,
        );
        assert_eq!(r.unwrap().status, 204);
    }

    #[test]
    fn close_delimited_body_and_connection_close() {
        let (r, _) = run(
            &[b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc", b"def"],
            false,
        );
        let r = r.unwrap();
        assert_eq!((r.status, r.body, r.reusable), (200, 6, false));
        let (r, _) = run(&[b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"], false);
        assert!(!r.unwrap().reusable, "HTTP/1.0 without keep-alive closes");
    }

    #[test]
    fn head_request_has_no_body() {
        let (r, _) = run(&[b"HTTP/1.1 200 OK\r\nContent-Length: 612\r\n\r\n"], true);
        assert_eq!(r.unwrap().body, 0);
    }

    #[test]
    fn failures_are_classified_by_stage() {
        let (r, _) = run(&[b"garbage\r\n\r\n"], false);
        let f = r.unwrap_err();
        assert_eq!((f.kind, f.stage), (ErrorKind::BadResponse, Stage::Head));

        let (r, _) = run(
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"],
            false,
        );
        let f = r.unwrap_err();
        assert_eq!((f.kind, f.stage), (ErrorKind::Closed, Stage::Body));
        assert_eq!(f.detail, Detail::Eof { got_bytes: true });

        let (r, _) = run(&[], false);
        let f = r.unwrap_err();
        assert_eq!(f.detail, Detail::Eof { got_bytes: false });
        assert!(f.is_stale_connection());

        let (r, _) = run(
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"],
            false,
        );
        assert_eq!(r.unwrap_err().detail, Detail::BadContentLength);

        let (r, _) = run(
            &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
            false,
        );
        assert_eq!(r.unwrap_err().detail, Detail::BadChunk);

        let (r, _) = run(
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabEXTRA"],
            false,
        );
        assert!(
            !r.unwrap().reusable,
            "bytes after the body poison the connection"
        );
    }

    #[test]
    fn request_bytes_are_built_once_and_right() {
        let (t, path) = Target::parse("http://127.0.0.1:8080/healthz?x=1").unwrap();
        assert_eq!(t.authority, "127.0.0.1:8080");
        let mut load = Load::new("1/s".parse().unwrap(), zdt_core::units::Dur::from_secs(1));
        load.method = http::Method::POST;
        load.path = path;
        load.headers = vec![
            ("X-Test".into(), "1".into()),
            ("Connection".into(), "keep-alive".into()),
        ];
        load.body = b"body".to_vec();
        let r = String::from_utf8(t.request_bytes(&load)).unwrap();
        assert!(
            r.starts_with("POST /healthz?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"),
            "{r}"
        );
        assert!(r.contains("X-Test: 1\r\n"));
        assert!(r.contains("Content-Length: 4\r\n"));
        assert!(r.contains("Connection: close\r\n"));
        assert!(!r.contains("keep-alive"));
        assert!(r.ends_with("\r\n\r\nbody"));
        let (t, path) = Target::parse("http://localhost").unwrap();
        assert_eq!((t.authority.as_str(), path.as_str()), ("localhost:80", "/"));
        let (_, path) = Target::parse("http://localhost?q=1").unwrap();
        assert_eq!(path, "/?q=1");
        assert!(Target::parse("https://x/")
            .unwrap_err()
            .to_string()
            .contains("https"));
        assert!(Target::parse("127.0.0.1:80").is_err());
        let t = Target::from_addr("[::1]:8080".parse().unwrap());
        assert_eq!(
            (t.authority.as_str(), t.url("/a").as_str()),
            ("[::1]:8080", "http://[::1]:8080/a")
        );
    }
}
