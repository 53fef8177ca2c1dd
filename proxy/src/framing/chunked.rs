//! Follows a chunked request body (RFC 9112 §7.1) byte by byte through its framing and in
//! strides through its data, to find where it ends, so that the next request head on the
//! connection is checked from its true first byte. The data itself is only counted.

/// Where a chunked body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// Reading a chunk size; `digits` so far, `size` their value.
    Size { size: u64, digits: u8 },
    /// After the size: whitespace or a chunk extension, up to the CR.
    Extension { size: u64 },
    /// The size line's CR was read; its LF is due.
    SizeLf { size: u64 },
    /// Chunk data still to come.
    Data { left: u64 },
    /// The data's CR is due.
    DataCr,
    /// The data's LF is due.
    DataLf,
    /// After the last chunk: at the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// A trailer line's CR was read; `empty` when the line was empty (the body's end).
    TrailerLf { empty: bool },
    /// The body ended.
    Done,
}

/// The chunked framing is broken: the body's end cannot be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadChunk;

/// Sizes above this many hex digits (2^60) are refused: no body is that long, and the value
/// must not overflow.
const MAX_SIZE_DIGITS: u8 = 15;

impl Chunked {
    /// The start of a chunked body.
    pub fn new() -> Self {
        Self::Size { size: 0, digits: 0 }
    }

    /// Reads from `bytes` until the body ends or the bytes run out; how many were read.
    pub fn advance(&mut self, bytes: &[u8]) -> Result<usize, BadChunk> {
        let mut at = 0;
        while at < bytes.len() {
            if let Self::Data { left } = *self {
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len() - at);
                at += take;
                let left = left - take as u64;
                *self = if left == 0 { Self::DataCr } else { Self::Data { left } };
                continue;
            }
            if *self == Self::Done {
                break;
            }
            *self = self.step(bytes[at])?;
            at += 1;
        }
        Ok(at)
    }

    /// True once the body's last byte was read.
    pub fn is_done(&self) -> bool {
        *self == Self::Done
    }

    fn step(self, b: u8) -> Result<Self, BadChunk> {
        Ok(match (self, b) {
            (Self::Size { size, digits }, _) if b.is_ascii_hexdigit() => {
                if digits == MAX_SIZE_DIGITS {
                    return Err(BadChunk);
                }
                let digit = u64::from(char::from(b).to_digit(16).ok_or(BadChunk)?);
                Self::Size { size: size << 4 | digit, digits: digits + 1 }
            }
            (Self::Size { digits: 0, .. }, _) => return Err(BadChunk),
            (Self::Size { size, .. }, b'\r') | (Self::Extension { size }, b'\r') => Self::SizeLf { size },
            (Self::Size { size, .. }, b';' | b' ' | b'\t') => Self::Extension { size },
            // Extension bytes: anything visible, spaces and tabs; no other controls.
            (Self::Extension { size }, _) if b == b'\t' || (b >= 0x20 && b != 0x7f) => {
                Self::Extension { size }
            }
            (Self::SizeLf { size: 0 }, b'\n') => Self::TrailerStart,
            (Self::SizeLf { size }, b'\n') => Self::Data { left: size },
            (Self::DataCr, b'\r') => Self::DataLf,
            (Self::DataLf, b'\n') => Self::Size { size: 0, digits: 0 },
            (Self::TrailerStart, b'\r') => Self::TrailerLf { empty: true },
            (Self::TrailerStart | Self::Trailer, _) if b == b'\t' || (b >= 0x20 && b != 0x7f) => {
                Self::Trailer
            }
            (Self::Trailer, b'\r') => Self::TrailerLf { empty: false },
            (Self::TrailerLf { empty: true }, b'\n') => Self::Done,
            (Self::TrailerLf { empty: false }, b'\n') => Self::TrailerStart,
            _ => return Err(BadChunk),
        })
    }
}

impl Default for Chunked {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` in pieces of `piece` bytes; how many bytes the body took.
    fn read(body: &[u8], piece: usize) -> Result<Option<usize>, BadChunk> {
        let mut chunked = Chunked::new();
        let mut at = 0;
        for part in body.chunks(piece) {
            let took = chunked.advance(part)?;
            at += took;
            if chunked.is_done() {
                return Ok(Some(at));
            }
            assert_eq!(took, part.len());
        }
        Ok(None)
    }

    #[test]
    fn a_body_ends_after_its_last_chunk_and_trailers() {
        let body =
            b"5\r\nhello\r\n1a;name=\"v\"\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Sum: 1\r\n\r\nGET /next";
        let end = body.len() - b"GET /next".len();
        for piece in [1, 2, 3, 7, body.len()] {
            assert_eq!(read(body, piece), Ok(Some(end)), "in pieces of {piece}");
        }
        assert_eq!(read(b"0\r\n\r\n", 1), Ok(Some(5)));
        assert_eq!(read(b"5\r\nhel", 2), Ok(None));
    }

    #[test]
    fn broken_framing_is_refused() {
        for body in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhelloX\r\n",
            b"0\r\n\n",
            b"0\r\nA: b\n\r\n",
            b"1000000000000000\r\n",
            b"5;\x00\r\n",
        ] {
            assert_eq!(read(body, 1), Err(BadChunk), "{:?}", String::from_utf8_lossy(body));
        }
    }
}
