//! The part of SPDY/3.1 that Kubernetes' streaming subresources use
//! (kubectl's `port-forward` speaks it to the API server, which relays it to
//! the kubelet): frames, and the header blocks compressed with zlib and the
//! protocol's fixed dictionary. No flow control: the Go client that kubectl
//! uses (moby/spdystream) neither sends nor honours window updates.

use std::io;
use std::sync::OnceLock;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt};

const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;

/// RST_STREAM status: the stream was refused.
pub const RST_REFUSED: u32 = 3;

/// A frame as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream: u32,
        fin: bool,
        data: Bytes,
    },
    SynStream {
        stream: u32,
        headers: Vec<(String, String)>,
    },
    RstStream {
        stream: u32,
    },
    Ping {
        id: u32,
    },
    GoAway,
    /// SETTINGS, HEADERS, WINDOW_UPDATE, SYN_REPLY from a client: nothing
    /// the server has to act on.
    Other,
}

/// The SPDY/3 header dictionary: length-prefixed header names and values,
/// then a run of text common in HTTP headers (the spec's fixed bytes).
fn dictionary() -> &'static [u8] {
    static DICT: OnceLock<Vec<u8>> = OnceLock::new();
    DICT.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options", "head", "post", "put", "delete", "trace", "accept",
            "accept-charset", "accept-encoding", "accept-language", "accept-ranges",
            "age", "allow", "authorization", "cache-control", "connection",
            "content-base", "content-encoding", "content-language", "content-length",
            "content-location", "content-md5", "content-range", "content-type", "date",
            "etag", "expect", "expires", "from", "host", "if-match", "if-modified-since",
            "if-none-match", "if-range", "if-unmodified-since", "last-modified",
            "location", "max-forwards", "pragma", "proxy-authenticate",
            "proxy-authorization", "range", "referer", "retry-after", "server", "te",
            "trailer", "transfer-encoding", "upgrade", "user-agent", "vary", "via",
            "warning", "www-authenticate", "method", "get", "status", "200 OK",
            "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin",
        ];
        const TAIL: &str = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
            "203 Non-Authoritative Information204 No Content301 Moved Permanently",
            "400 Bad Request401 Unauthorized403 Forbidden404 Not Found",
            "500 Internal Server Error501 Not Implemented503 Service Unavailable",
            "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
            "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
            "chunked,text/html,image/png,image/jpg,image/gif,application/xml,",
            "application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
            "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
        );
        let mut d = Vec::with_capacity(1423);
        for w in WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(TAIL.as_bytes());
        d
    })
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Reads frames, inflating header blocks with the session's one zlib
/// stream (SPDY compresses all of a direction's headers as one stream).
pub struct FrameReader<R> {
    io: R,
    inflate: Decompress,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(io: R) -> Self {
        Self {
            io,
            inflate: Decompress::new(true),
        }
    }

    /// The next frame; None at a clean end of the connection.
    pub async fn next(&mut self) -> io::Result<Option<Frame>> {
        let mut head = [0u8; 8];
        match self.io.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let flags = head[4];
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        let mut payload = vec![0u8; len];
        self.io.read_exact(&mut payload).await?;
        if head[0] & 0x80 == 0 {
            return Ok(Some(Frame::Data {
                stream: be32(&head) & 0x7fff_ffff,
                fin: flags & FLAG_FIN != 0,
                data: Bytes::from(payload),
            }));
        }
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != VERSION {
            return Err(invalid(format!(
                "SPDY version {version} is not supported (only 3)"
            )));
        }
        let short = |need: usize| {
            if payload.len() < need {
                Err(invalid("a SPDY control frame shorter than its type needs"))
            } else {
                Ok(())
            }
        };
        Ok(Some(match u16::from_be_bytes([head[2], head[3]]) {
            SYN_STREAM => {
                short(10)?;
                let raw = self.inflate_block(&payload[10..])?;
                Frame::SynStream {
                    stream: be32(&payload) & 0x7fff_ffff,
                    headers: parse_headers(&raw)?,
                }
            }
            // Replies and HEADERS carry header blocks too: inflate them to
            // keep the shared zlib stream in step.
            SYN_REPLY | 8 => {
                short(4)?;
                self.inflate_block(&payload[4..])?;
                Frame::Other
            }
            RST_STREAM => {
                short(8)?;
                Frame::RstStream {
                    stream: be32(&payload) & 0x7fff_ffff,
                }
            }
            PING => {
                short(4)?;
                Frame::Ping { id: be32(&payload) }
            }
            GOAWAY => Frame::GoAway,
            _ => Frame::Other,
        }))
    }

    fn inflate_block(&mut self, input: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(input.len() * 4 + 256);
        let mut pos = 0;
        // Bounded: each round consumes input or grows the output.
        for _ in 0..10_000 {
            let before = self.inflate.total_in();
            if out.capacity() - out.len() < 256 {
                out.reserve(4096);
            }
            match self
                .inflate
                .decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync)
            {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(dictionary())
                        .map_err(|e| invalid(format!("SPDY header dictionary: {e}")))?;
                }
                Err(e) => return Err(invalid(format!("SPDY header block: {e}"))),
            }
            pos += (self.inflate.total_in() - before) as usize;
            if pos >= input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            if out.len() > 1 << 20 {
                break;
            }
        }
        Err(invalid("a SPDY header block larger than 1 MiB"))
    }
}

fn parse_headers(raw: &[u8]) -> io::Result<Vec<(String, String)>> {
    let mut pos = 0;
    let mut take = |n: usize| -> io::Result<&[u8]> {
        let s = raw
            .get(pos..pos + n)
            .ok_or_else(|| invalid("a truncated SPDY header block"))?;
        pos += n;
        Ok(s)
    };
    let count = be32(take(4)?);
    let mut headers = Vec::new();
    for _ in 0..count {
        let n = be32(take(4)?) as usize;
        let name = String::from_utf8_lossy(take(n)?).to_ascii_lowercase();
        let n = be32(take(4)?) as usize;
        let value = String::from_utf8_lossy(take(n)?).into_owned();
        for v in value.split('\0') {
            headers.push((name.clone(), v.to_owned()));
        }
    }
    Ok(headers)
}

/// Builds frames to send, deflating header blocks with the session's
/// outgoing zlib stream.
pub struct FrameWriter {
    deflate: Compress,
}

impl Default for FrameWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameWriter {
    pub fn new() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate
            .set_dictionary(dictionary())
            .expect("a fresh deflate stream takes a dictionary");
        Self { deflate }
    }

    fn control(ty: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(8 + payload.len());
        f.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
        f.extend_from_slice(&ty.to_be_bytes());
        f.push(flags);
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        f.extend_from_slice(payload);
        f
    }

    /// SYN_REPLY with no headers: the stream is accepted.
    pub fn syn_reply(&mut self, stream: u32) -> Vec<u8> {
        let block = self.deflate_block(&0u32.to_be_bytes());
        let mut payload = stream.to_be_bytes().to_vec();
        payload.extend_from_slice(&block);
        Self::control(SYN_REPLY, 0, &payload)
    }

    pub fn rst_stream(stream: u32, status: u32) -> Vec<u8> {
        let mut payload = stream.to_be_bytes().to_vec();
        payload.extend_from_slice(&status.to_be_bytes());
        Self::control(RST_STREAM, 0, &payload)
    }

    pub fn ping(id: u32) -> Vec<u8> {
        Self::control(PING, 0, &id.to_be_bytes())
    }

    pub fn data(stream: u32, fin: bool, data: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(8 + data.len());
        f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        f.push(if fin { FLAG_FIN } else { 0 });
        f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        f.extend_from_slice(data);
        f
    }

    fn deflate_block(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len() + 64);
        let mut pos = 0;
        for _ in 0..1_000 {
            let before = self.deflate.total_in();
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            // A deflate stream never fails on valid state and a Vec output.
            let _ = self
                .deflate
                .compress_vec(&input[pos..], &mut out, FlushCompress::Sync);
            pos += (self.deflate.total_in() - before) as usize;
            if pos >= input.len() && out.len() < out.capacity() {
                break;
            }
        }
        out
    }

    /// Headers as a client sends them (tests play kubectl with this).
    #[cfg(test)]
    pub fn syn_stream(&mut self, stream: u32, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = (headers.len() as u32).to_be_bytes().to_vec();
        for (k, v) in headers {
            raw.extend_from_slice(&(k.len() as u32).to_be_bytes());
            raw.extend_from_slice(k.as_bytes());
            raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        let block = self.deflate_block(&raw);
        let mut payload = stream.to_be_bytes().to_vec();
        payload.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        payload.extend_from_slice(&block);
        Self::control(SYN_STREAM, 0, &payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_the_specs() {
        // Its size and Adler-32 as zlib streams that use it announce it.
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        let (mut a, mut b) = (1u32, 0u32);
        for &x in d {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!(format!("{:08x}", (b << 16) | a), "e3c6a7c2");
    }

    #[tokio::test]
    async fn headers_round_trip_through_the_shared_zlib_streams() {
        let mut w = FrameWriter::new();
        let mut bytes = w.syn_stream(1, &[("streamType", "error"), ("port", "80")]);
        bytes.extend(w.syn_stream(3, &[("streamtype", "data"), ("port", "80")]));
        bytes.extend(FrameWriter::data(3, true, b"hi"));
        let mut r = FrameReader::new(&bytes[..]);
        let Some(Frame::SynStream {
            stream, headers, ..
        }) = r.next().await.unwrap()
        else {
            panic!()
        };
        assert_eq!(stream, 1);
        assert_eq!(headers[0], ("streamtype".into(), "error".into()));
        let Some(Frame::SynStream {
            stream, headers, ..
        }) = r.next().await.unwrap()
        else {
            panic!()
        };
        assert_eq!((stream, headers[1].1.as_str()), (3, "80"));
        assert_eq!(
            r.next().await.unwrap(),
            Some(Frame::Data {
                stream: 3,
                fin: true,
                data: Bytes::from_static(b"hi")
            })
        );
        assert_eq!(r.next().await.unwrap(), None);
    }
}
