//! [`RawConnection`]: HTTP/1.1 written and read byte by byte, for what a well-behaved client
//! library hides (hop-by-hop request headers, `Expect: 100-continue`, interim responses, how a
//! response ends); [`accept_queue`]: what the kernel holds for a listener that its server has
//! not taken.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A plain TCP connection speaking HTTP/1.1 by hand.
#[derive(Debug)]
pub struct RawConnection {
    stream: TcpStream,
    buffered: Vec<u8>,
}

/// A response head as read off the wire.
#[derive(Debug, Clone)]
pub struct RawHead {
    pub status: u16,
    /// Header names lower-cased, in wire order.
    pub headers: Vec<(String, String)>,
}

impl RawHead {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// True when the header is present.
    pub fn has(&self, name: &str) -> bool {
        self.header(name).is_some()
    }
}

impl RawConnection {
    /// Connects to `addr`.
    pub async fn open(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Self { stream, buffered: Vec::new() }
    }

    /// Writes bytes as they are.
    pub async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Writes bytes as they are; false when the peer has closed or reset the connection
    /// (a server that stopped reading a request it refused).
    pub async fn try_write(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    /// Reads one response head (status line and headers).
    pub async fn read_head(&mut self) -> RawHead {
        let end = loop {
            if let Some(at) = self.buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            let mut chunk = [0u8; 8192];
            let n = crate::within("a response head", self.stream.read(&mut chunk)).await.expect("read");
            assert!(n > 0, "the connection closed before a response head: {:?}", self.text());
            self.buffered.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&self.buffered[..end]).into_owned();
        self.buffered.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        RawHead { status, headers }
    }

    /// Reads exactly `n` body bytes.
    pub async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buffered.len() < n {
            let mut chunk = [0u8; 8192];
            let read = crate::within("body bytes", self.stream.read(&mut chunk)).await.expect("read");
            assert!(read > 0, "the connection closed after {} of {n} bytes", self.buffered.len());
            self.buffered.extend_from_slice(&chunk[..read]);
        }
        self.buffered.drain(..n).collect()
    }

    /// Reads until the peer closes the connection (or resets it); everything read.
    pub async fn read_to_close(&mut self) -> Vec<u8> {
        let mut chunk = [0u8; 8192];
        loop {
            match crate::within("the connection to close", self.stream.read(&mut chunk)).await {
                Ok(0) | Err(_) => return std::mem::take(&mut self.buffered),
                Ok(n) => self.buffered.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffered).into_owned()
    }
}

/// Connections to the listener at `addr` that the kernel has established and queued but the
/// server has not accepted yet (Linux, from `/proc/net/tcp`: a listening socket's `rx_queue`
/// is its accept queue). Panics when no IPv4 listener is at `addr`.
pub fn accept_queue(addr: SocketAddr) -> usize {
    let SocketAddr::V4(addr) = addr else { panic!("{addr}: only IPv4 listeners are looked up") };
    // The kernel prints the address as the in-memory (network order) word, in hex.
    let local = format!("{:08X}:{:04X}", u32::from_ne_bytes(addr.ip().octets()), addr.port());
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp (Linux)");
    table
        .lines()
        .skip(1)
        .find_map(|line| {
            // sl, local_address, rem_address, st (0A: LISTEN), tx_queue:rx_queue, …
            let mut fields = line.split_whitespace().skip(1);
            let (address, _remote, state, queues) =
                (fields.next()?, fields.next()?, fields.next()?, fields.next()?);
            if address != local || state != "0A" {
                return None;
            }
            usize::from_str_radix(queues.split_once(':')?.1, 16).ok()
        })
        .unwrap_or_else(|| panic!("no listener at {addr} in /proc/net/tcp"))
}
