//! The server side of RFC 6455 WebSockets, as far as Kubernetes' streaming
//! subresources use them: the handshake, binary messages (fragmented or
//! not), ping/pong and close. Client frames are masked, ours are not.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

pub const BINARY: u8 = 2;
pub const CLOSE: u8 = 8;
const PING: u8 = 9;
pub const PONG: u8 = 10;

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{}{GUID}", key.trim()).as_bytes(),
    );
    base64(digest.as_ref())
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One unmasked frame from the server.
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 10);
    f.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= usize::from(u16::MAX) => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

/// What a client sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    Binary(Vec<u8>),
    /// Answer with a pong carrying the same bytes.
    Ping(Vec<u8>),
    Close,
}

/// Reads whole messages (continuation frames joined, pongs dropped).
pub struct MessageReader<R> {
    io: R,
    /// A fragmented message so far (a ping may come between fragments).
    partial: Vec<u8>,
}

/// Messages above this are refused (the client's streams send far less).
const MAX_MESSAGE: u64 = 16 << 20;

impl<R: AsyncRead + Unpin> MessageReader<R> {
    pub fn new(io: R) -> Self {
        Self {
            io,
            partial: Vec::new(),
        }
    }

    pub async fn next(&mut self) -> io::Result<Message> {
        loop {
            let mut head = [0u8; 2];
            if let Err(e) = self.io.read_exact(&mut head).await {
                return match e.kind() {
                    io::ErrorKind::UnexpectedEof => Ok(Message::Close),
                    _ => Err(e),
                };
            }
            let fin = head[0] & 0x80 != 0;
            let opcode = head[0] & 0x0f;
            let len = match head[1] & 0x7f {
                126 => u64::from(self.io.read_u16().await?),
                127 => self.io.read_u64().await?,
                n => u64::from(n),
            };
            if len > MAX_MESSAGE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a WebSocket frame larger than 16 MiB",
                ));
            }
            let mut mask = [0u8; 4];
            if head[1] & 0x80 != 0 {
                self.io.read_exact(&mut mask).await?;
            }
            let mut payload = vec![0u8; len as usize];
            self.io.read_exact(&mut payload).await?;
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
            match opcode {
                CLOSE => return Ok(Message::Close),
                PING => return Ok(Message::Ping(payload)),
                PONG => continue,
                _ => {
                    self.partial.extend_from_slice(&payload);
                    if fin {
                        return Ok(Message::Binary(std::mem::take(&mut self.partial)));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_is_the_rfcs_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
    }

    #[tokio::test]
    async fn masked_and_fragmented_client_frames_read_as_one_message() {
        let mask = [1u8, 2, 3, 4];
        let masked = |opcode: u8, fin: bool, data: &[u8]| {
            let mut f = vec![if fin { 0x80 } else { 0 } | opcode, 0x80 | data.len() as u8];
            f.extend_from_slice(&mask);
            f.extend(data.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
            f
        };
        let mut bytes = masked(BINARY, false, b"hel");
        bytes.extend(masked(PING, true, b"p"));
        bytes.extend(masked(0, true, b"lo"));
        bytes.extend(frame(CLOSE, &[]));
        let mut r = MessageReader::new(&bytes[..]);
        assert_eq!(r.next().await.unwrap(), Message::Ping(b"p".to_vec()));
        assert_eq!(r.next().await.unwrap(), Message::Binary(b"hello".to_vec()));
        assert_eq!(r.next().await.unwrap(), Message::Close);
    }
}
