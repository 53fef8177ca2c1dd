//! [`H2Connection`]: HTTP/2 with prior knowledge (h2c) written and read frame by frame, for
//! the shapes a client library refuses to produce (a header block that never ends, streams
//! reset as soon as they are opened, a header list over the size the server advertised) and
//! for reading exactly what the server answers (its SETTINGS, `RST_STREAM`, `GOAWAY`).
//!
//! Header blocks are HPACK literals without Huffman coding or indexing ([`header_block`]), so
//! every block is independent of the ones before it.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types (RFC 9113 §6).
pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags.
pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
}

/// Error codes (RFC 9113 §7).
pub mod code {
    pub const NO_ERROR: u32 = 0x0;
    pub const PROTOCOL_ERROR: u32 = 0x1;
    pub const CANCEL: u32 = 0x8;
    pub const COMPRESSION_ERROR: u32 = 0x9;
    pub const REFUSED_STREAM: u32 = 0x7;
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;
}

/// `SETTINGS_MAX_CONCURRENT_STREAMS`.
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
/// `SETTINGS_MAX_HEADER_LIST_SIZE`.
pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// One frame as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The settings of a SETTINGS frame, in order.
    pub fn settings(&self) -> Vec<(u16, u32)> {
        self.payload
            .chunks_exact(6)
            .map(|s| (u16::from_be_bytes([s[0], s[1]]), u32::from_be_bytes([s[2], s[3], s[4], s[5]])))
            .collect()
    }

    /// The error code of a `RST_STREAM` (first four payload bytes) or a `GOAWAY` (bytes 4..8).
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            kind::RST_STREAM => 0,
            kind::GOAWAY => 4,
            _ => return None,
        };
        let bytes = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// A `GOAWAY`'s debug data.
    pub fn debug_data(&self) -> String {
        match self.kind {
            kind::GOAWAY => String::from_utf8_lossy(self.payload.get(8..).unwrap_or_default()).into_owned(),
            _ => String::new(),
        }
    }
}

/// What the server did with the connection, read to its end.
#[derive(Debug, Default)]
pub struct Ending {
    /// Every frame read, in order.
    pub frames: Vec<Frame>,
}

impl Ending {
    /// The first `GOAWAY`, if the server sent one.
    pub fn goaway(&self) -> Option<&Frame> {
        self.frames.iter().find(|f| f.kind == kind::GOAWAY)
    }

    /// Frames of this kind on this stream.
    pub fn on_stream(&self, stream: u32, of_kind: u8) -> Vec<&Frame> {
        self.frames.iter().filter(|f| f.stream == stream && f.kind == of_kind).collect()
    }
}

/// A plain TCP connection speaking HTTP/2 by hand.
#[derive(Debug)]
pub struct H2Connection {
    stream: TcpStream,
    buffered: Vec<u8>,
    /// The server's first SETTINGS frame.
    pub server_settings: Vec<(u16, u32)>,
}

impl H2Connection {
    /// Connects, sends the preface and an empty SETTINGS, and reads the server's SETTINGS
    /// (acknowledging it).
    pub async fn open(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let mut connection = Self { stream, buffered: Vec::new(), server_settings: Vec::new() };
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(kind::SETTINGS, 0, 0, &[]));
        connection.write(&hello).await;
        let settings = connection.read_frame().await.expect("the server's SETTINGS");
        assert_eq!(settings.kind, kind::SETTINGS, "the server's first frame: {settings:?}");
        connection.server_settings = settings.settings();
        connection.write(&frame(kind::SETTINGS, flag::ACK, 0, &[])).await;
        connection
    }

    /// The server's value of `setting`, if it sent one.
    pub fn server_setting(&self, setting: u16) -> Option<u32> {
        self.server_settings.iter().find(|(id, _)| *id == setting).map(|(_, value)| *value)
    }

    /// Writes bytes as they are (frames built with [`frame`]).
    pub async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Writes bytes as they are; false when the server has closed or reset the connection.
    pub async fn try_write(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    /// The next frame; `None` once the server has closed the connection (or reset it).
    pub async fn read_frame(&mut self) -> Option<Frame> {
        loop {
            if self.buffered.len() >= 9 {
                let length =
                    u32::from_be_bytes([0, self.buffered[0], self.buffered[1], self.buffered[2]]) as usize;
                if self.buffered.len() >= 9 + length {
                    let head: Vec<u8> = self.buffered.drain(..9).collect();
                    let payload = self.buffered.drain(..length).collect();
                    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
                    return Some(Frame { kind: head[3], flags: head[4], stream, payload });
                }
            }
            let mut chunk = [0u8; 16384];
            match crate::within("an HTTP/2 frame", self.stream.read(&mut chunk)).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buffered.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads frames until `done` holds for one (returned with those before it); panics if the
    /// connection closes first.
    pub async fn read_until(&mut self, what: &str, mut done: impl FnMut(&Frame) -> bool) -> Vec<Frame> {
        let mut frames = Vec::new();
        loop {
            let frame = self.read_frame().await.unwrap_or_else(|| panic!("closed before {what}: {frames:?}"));
            let last = done(&frame);
            frames.push(frame);
            if last {
                return frames;
            }
        }
    }

    /// Reads every frame until the server closes the connection (answering its PINGs would
    /// not change that: nothing is written).
    pub async fn read_to_close(mut self) -> Ending {
        let mut ending = Ending::default();
        while let Some(frame) = self.read_frame().await {
            ending.frames.push(frame);
        }
        ending
    }
}

/// One frame's bytes.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).expect("a frame's length");
    assert!(length < 1 << 24, "a frame's length fits in 24 bits");
    let mut bytes = Vec::with_capacity(9 + payload.len());
    bytes.extend_from_slice(&length.to_be_bytes()[1..]);
    bytes.push(kind);
    bytes.push(flags);
    bytes.extend_from_slice(&stream.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// `RST_STREAM` of `stream` with `code`.
pub fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
    frame(kind::RST_STREAM, 0, stream, &code.to_be_bytes())
}

/// A `HEADERS` frame opening `stream` with a whole `GET path` (END_HEADERS, END_STREAM).
pub fn get(stream: u32, path: &str) -> Vec<u8> {
    frame(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, stream, &header_block(path, &[]))
}

/// The HPACK block of `GET path` on `http://x` with `extra` fields: literals without
/// indexing and without Huffman coding.
pub fn header_block(path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", path)]
        .into_iter()
        .chain(extra.iter().copied())
    {
        literal(&mut block, name, value);
    }
    block
}

/// One literal header field without indexing, new name (RFC 7541 §6.2.2).
pub fn literal(block: &mut Vec<u8>, name: &str, value: &str) {
    block.push(0x00);
    string(block, name.as_bytes());
    string(block, value.as_bytes());
}

/// A string literal, not Huffman coded: its length as a 7-bit-prefix integer, then the bytes.
fn string(block: &mut Vec<u8>, bytes: &[u8]) {
    let mut length = bytes.len();
    if length < 127 {
        block.push(length as u8);
    } else {
        block.push(127);
        length -= 127;
        while length >= 128 {
            block.push((length % 128) as u8 | 0x80);
            length /= 128;
        }
        block.push(length as u8);
    }
    block.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_string_literal_uses_the_integer_continuation() {
        // RFC 7541 §C.1.2: 1337 with a 5-bit prefix is 31, 154, 10; with 7 bits: 127, 186, 9.
        let mut block = Vec::new();
        string(&mut block, &[b'a'; 1337]);
        assert_eq!(&block[..3], &[127, 186, 9]);
        assert_eq!(block.len(), 3 + 1337);
    }

    #[test]
    fn a_frame_head_holds_length_kind_flags_and_stream() {
        let bytes = frame(kind::HEADERS, flag::END_HEADERS, 3, b"abc");
        assert_eq!(&bytes[..9], &[0, 0, 3, 1, 4, 0, 0, 0, 3]);
    }
}
