//! The connection against scripted endpoints: framing, strictness, reuse, uploads; proptest
//! over generated response framings; the same exchanges through hyper's client compared.

use std::collections::VecDeque;
use std::io;
use std::sync::Mutex;

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full, StreamBody};
use proptest::prelude::*;
use tokio::io::ReadBuf;

use super::*;

/// An endpoint played from a script: once the request has started, each read gets the next
/// piece (a read finds nothing in between, and waits once), then the connection ends; what
/// is written is kept.
#[derive(Debug, Default)]
struct Scripted {
    /// A read waiting for the request.
    reader: Option<std::task::Waker>,
    pieces: VecDeque<Vec<u8>>,
    written: Vec<u8>,
    /// The next read waits once first.
    wait: bool,
    /// After the pieces, reads wait instead of ending (the endpoint keeps the connection).
    keep_open: bool,
}

impl Scripted {
    fn new(pieces: impl IntoIterator<Item = Vec<u8>>) -> Self {
        Self { pieces: pieces.into_iter().collect(), ..Self::default() }
    }

    /// The response in one piece, the connection kept open after it.
    fn open(response: &str) -> Self {
        Self { keep_open: true, ..Self::new([response.as_bytes().to_vec()]) }
    }
}

impl AsyncRead for Scripted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.written.is_empty() {
            self.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if self.wait {
            self.wait = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let Some(mut piece) = self.pieces.pop_front() else {
            return if self.keep_open { Poll::Pending } else { Poll::Ready(Ok(())) };
        };
        let len = piece.len().min(buf.remaining());
        buf.put_slice(&piece[..len]);
        if len < piece.len() {
            self.pieces.push_front(piece.split_off(len));
        }
        self.wait = true;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Scripted {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.written.extend_from_slice(buf);
        if let Some(reader) = self.reader.take() {
            reader.wake();
        }
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Keeps the connections given back (over scripted endpoints, or pipes).
#[derive(Debug)]
struct Kept<S = Scripted>(Mutex<Vec<Connection<S>>>);

impl<S> Default for Kept<S> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

impl<S: std::fmt::Debug + Send> Pool<S> for Kept<S> {
    fn checkin(&self, connection: Connection<S>) {
        self.0.lock().unwrap().push(connection);
    }
}

impl<S> Kept<S> {
    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    fn take(&self) -> Connection<S> {
        self.0.lock().unwrap().pop().expect("a connection given back")
    }
}

/// What the client got from one exchange.
#[derive(Debug, PartialEq)]
struct Received {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Result<(Bytes, Option<HeaderMap>), String>,
}

fn parts(method: Method, target: &str) -> Parts {
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = target.parse().unwrap();
    request.headers_mut().insert(http::header::HOST, HeaderValue::from_static("origin"));
    request.into_parts().0
}

use http::HeaderValue;

async fn collect<B>(response: Response<B>) -> Received
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let status = response.status().as_u16();
    let headers =
        response.headers().iter().map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec())).collect();
    let body = match response.into_body().collect().await {
        Ok(collected) => {
            let trailers = collected.trailers().cloned();
            Ok((collected.to_bytes(), trailers))
        }
        Err(e) => Err(e.to_string()),
    };
    Received { status, headers, body }
}

/// One exchange of `method` on a connection over `io`: what was received (or the error
/// before a response), and the pool the connection may have gone back to.
async fn exchange(method: Method, io: Scripted) -> (Result<Received, Error>, Arc<Kept>) {
    let kept = Arc::new(Kept::default());
    let pool: Arc<dyn Pool<Scripted>> = kept.clone();
    let sent = Connection::new(io)
        .send(&parts(method, "/x"), Fields::default(), Full::new(Bytes::new()), Some(pool), 0, None)
        .await;
    match sent {
        Ok(response) => (Ok(collect(response).await), kept),
        Err(failure) => (Err(failure.error), kept),
    }
}

async fn get(response: &str) -> (Result<Received, Error>, Arc<Kept>) {
    exchange(Method::GET, Scripted::open(response)).await
}

fn body_of(received: &Result<Received, Error>) -> &[u8] {
    &received.as_ref().unwrap().body.as_ref().unwrap().0
}

#[tokio::test]
async fn a_length_framed_body_is_read_and_the_connection_kept() {
    let (received, kept) = get("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello").await;
    assert_eq!(body_of(&received), b"hello");
    let received = received.unwrap();
    assert_eq!(received.headers, [("content-length".into(), b"5".to_vec()), ("x-a".into(), b"1".to_vec())]);
    assert_eq!(kept.count(), 1);
    // An idle connection does not hold its pool (the pool holds it).
    assert_eq!(Arc::strong_count(&kept), 1);
    // The kept connection wrote exactly the request head.
    let connection = kept.take();
    assert_eq!(connection.kept.io.written, b"GET /x HTTP/1.1\r\nhost: origin\r\n\r\n");
}

#[tokio::test]
async fn a_chunked_body_is_read_with_its_trailers() {
    let (received, kept) = get(
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6 ;ext=\"1\"\r\n world\r\n0\r\nx-sum: 11\r\n\r\n",
    )
    .await;
    let (body, trailers) = received.unwrap().body.unwrap();
    assert_eq!(body, "hello world");
    assert_eq!(trailers.unwrap()["x-sum"], "11");
    assert_eq!(kept.count(), 1);
}

#[tokio::test]
async fn a_body_to_the_close_is_read_to_the_close_and_the_connection_not_kept() {
    let io = Scripted::new([b"HTTP/1.1 200 OK\r\n\r\nall of ".to_vec(), b"it".to_vec()]);
    let (received, kept) = exchange(Method::GET, io).await;
    assert_eq!(body_of(&received), b"all of it");
    assert_eq!(kept.count(), 0);
}

#[tokio::test]
async fn head_204_and_304_have_no_body_whatever_their_length_says() {
    let (received, kept) =
        exchange(Method::HEAD, Scripted::open("HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n")).await;
    assert_eq!(body_of(&received), b"");
    assert_eq!(kept.count(), 1);
    for status in ["204 No Content", "304 Not Modified"] {
        let (received, kept) = get(&format!("HTTP/1.1 {status}\r\ncontent-length: 3\r\n\r\n")).await;
        assert_eq!(body_of(&received), b"");
        assert_eq!(kept.count(), 1, "{status}");
    }
}

#[tokio::test]
async fn interim_answers_are_skipped() {
    let (received, _) =
        get("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await;
    assert_eq!(received.as_ref().unwrap().status, 200);
    assert_eq!(body_of(&received), b"ok");
}

#[tokio::test]
async fn connection_close_and_http_1_0_are_honoured() {
    let (received, kept) = get("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok").await;
    assert_eq!(body_of(&received), b"ok");
    assert_eq!(kept.count(), 0);
    let (received, kept) = get("HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
    assert_eq!(body_of(&received), b"ok");
    assert_eq!(kept.count(), 0);
}

#[tokio::test]
async fn bytes_past_the_framed_end_keep_the_connection_out_of_the_pool() {
    let (received, kept) = get("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA").await;
    assert_eq!(body_of(&received), b"ok");
    assert_eq!(kept.count(), 0);
}

#[tokio::test]
async fn invalid_heads_are_errors() {
    let long = format!("HTTP/1.1 200 OK\r\nx-long: {}\r\n\r\n", "a".repeat(MAX_HEAD));
    let many = format!("HTTP/1.1 200 OK\r\n{}\r\n", "x-a: 1\r\n".repeat(MAX_HEADERS + 1));
    let cases = [
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok",
        "HTTP/1.1 200 OK\r\ncontent-length: 2, 3\r\n\r\nok",
        "HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\nok",
        "HTTP/1.1 200 OK\r\ncontent-length: two\r\n\r\nok",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nok",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nx-folded: a\r\n b\r\ncontent-length: 2\r\n\r\nok",
        "HTTP/1.1 200 OK\r\nx-bad : a\r\ncontent-length: 2\r\n\r\nok",
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "NOT HTTP\r\n\r\n",
        &long,
        &many,
    ];
    for case in cases {
        let (received, kept) = get(case).await;
        assert!(matches!(received, Err(Error::Invalid(_))), "{case:.80}: {received:?}");
        assert_eq!(kept.count(), 0);
    }
    // Repeats of one length are one length.
    let (received, _) = get("HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2, 2\r\n\r\nok").await;
    assert_eq!(body_of(&received), b"ok");
}

#[tokio::test]
async fn invalid_chunks_and_short_bodies_end_the_body_with_an_error() {
    let chunked = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
    let cases = [
        format!("{chunked}zz\r\nhello\r\n0\r\n\r\n"),
        format!("{chunked}-5\r\nhello\r\n0\r\n\r\n"),
        format!("{chunked}5\nhello\r\n0\r\n\r\n"),
        format!("{chunked}5 x\r\nhello\r\n0\r\n\r\n"),
        format!("{chunked}5\r\nhelloXX0\r\n\r\n"),
        format!("{chunked}10000000000000000\r\n"),
        format!("{chunked}{}\r\n", "1".repeat(5000)),
        format!("{chunked}5\r\nhello\r\n0\r\nbad trailer\r\n\r\n"),
    ];
    for case in &cases {
        let (received, kept) = get(case).await;
        let received = received.unwrap();
        assert!(received.body.is_err(), "{case:.80}: {received:?}");
        assert_eq!(kept.count(), 0);
    }
    // Cut short by the close: a length, chunks, a head.
    for case in
        ["HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello".to_owned(), format!("{chunked}5\r\nhello\r\n")]
    {
        let (received, _) = exchange(Method::GET, Scripted::new([case.into_bytes()])).await;
        assert_eq!(received.unwrap().body.unwrap_err(), Error::Truncated.to_string());
    }
    let (received, _) = exchange(Method::GET, Scripted::new([b"HTTP/1.1 200 OK\r\n".to_vec()])).await;
    assert!(matches!(received, Err(Error::Truncated)));
}

#[tokio::test]
async fn a_reused_connection_closed_before_any_answer_gives_the_request_back() {
    let (_, kept) = get("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
    let mut connection = kept.take();
    // The endpoint closed it while it was idle.
    connection.kept.io.keep_open = false;
    let pool: Arc<dyn Pool<Scripted>> = kept.clone();
    let body = Full::new(Bytes::new());
    let failure = connection
        .send(&parts(Method::GET, "/y"), Fields::default(), body, Some(pool), 0, None)
        .await
        .unwrap_err();
    assert!(matches!(failure.error, Error::Closed));
    assert!(failure.unsent.is_some(), "the request can go out again");
    // Not a POST: the endpoint may have acted on it before closing.
    let (_, kept) = get("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
    let mut connection = kept.take();
    connection.kept.io.keep_open = false;
    let failure = connection
        .send(&parts(Method::POST, "/y"), Fields::default(), Full::new(Bytes::new()), None, 0, None)
        .await
        .unwrap_err();
    assert!(matches!(failure.error, Error::Closed) && failure.unsent.is_none());
    // A fresh connection that closes says so, without the request back.
    let failure = Connection::new(Scripted::new([]))
        .send(&parts(Method::GET, "/y"), Fields::default(), Full::new(Bytes::new()), None, 0, None)
        .await
        .unwrap_err();
    assert!(matches!(failure.error, Error::Closed) && failure.unsent.is_none());
}

/// A request body of `chunks`, streamed.
fn streamed(chunks: &[&'static str]) -> impl http_body::Body<Data = Bytes, Error = Error> + Unpin {
    let frames = chunks.iter().map(|c| Ok::<_, Error>(Frame::data(Bytes::from_static(c.as_bytes()))));
    StreamBody::new(futures_util::stream::iter(frames.collect::<Vec<_>>()))
}

#[tokio::test]
async fn request_bodies_go_out_with_their_length_or_chunked() {
    let answer = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
    let kept = Arc::new(Kept::default());
    let pool = || -> Option<Arc<dyn Pool<Scripted>>> { Some(kept.clone()) };

    let mut with_length = parts(Method::POST, "/up?q=1");
    with_length.headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("11"));
    Connection::new(Scripted::open(answer))
        .send(&with_length, Fields::default(), streamed(&["hello", " world"]), pool(), 0, None)
        .await
        .ok()
        .expect("an answer");
    assert_eq!(
        kept.take().kept.io.written,
        b"POST /up?q=1 HTTP/1.1\r\nhost: origin\r\ncontent-length: 11\r\n\r\nhello world"
    );

    Connection::new(Scripted::open(answer))
        .send(&parts(Method::PUT, "/up"), Fields::default(), streamed(&["hello", " world"]), pool(), 0, None)
        .await
        .ok()
        .expect("an answer");
    assert_eq!(
        kept.take().kept.io.written,
        b"PUT /up HTTP/1.1\r\nhost: origin\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    );

    Connection::new(Scripted::open(answer))
        .send(&parts(Method::POST, "/up"), Fields::default(), Full::new(Bytes::new()), pool(), 0, None)
        .await
        .unwrap();
    assert_eq!(
        kept.take().kept.io.written,
        b"POST /up HTTP/1.1\r\nhost: origin\r\ncontent-length: 0\r\n\r\n"
    );

    // A body shorter than its length is not sent as if it were whole.
    let sent = Connection::new(Scripted::open(answer))
        .send(&with_length, Fields::default(), streamed(&["hello"]), pool(), 0, None)
        .await;
    assert!(matches!(sent, Err(Failure { error: Error::Invalid(_), .. })));
}

#[tokio::test]
async fn an_answer_before_the_whole_request_keeps_the_connection_out_of_the_pool() {
    // The body never ends; the endpoint answers at once.
    let rx = futures_util::stream::pending::<Result<Frame<Bytes>, Error>>();
    let kept = Arc::new(Kept::default());
    let pool: Arc<dyn Pool<Scripted>> = kept.clone();
    let io = Scripted::open("HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n");
    let response = Connection::new(io)
        .send(&parts(Method::POST, "/up"), Fields::default(), StreamBody::new(rx), Some(pool), 0, None)
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(kept.count(), 0);
}

/// An endpoint at the other end of a pipe: for each exchange, it reads the request, then
/// writes each piece after its pause (in milliseconds); it keeps the connection open.
fn paced_exchanges(exchanges: Vec<Vec<(u64, &'static str)>>) -> tokio::io::DuplexStream {
    use tokio::io::AsyncReadExt as _;
    let (near, mut far) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        for pieces in exchanges {
            let mut request = [0u8; 1024];
            let _ = far.read(&mut request).await;
            for (pause, piece) in pieces {
                tokio::time::sleep(Duration::from_millis(pause)).await;
                if far.write_all(piece.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
        std::future::pending::<()>().await;
    });
    near
}

/// [`paced_exchanges`] for one exchange.
fn paced(pieces: Vec<(u64, &'static str)>) -> tokio::io::DuplexStream {
    paced_exchanges(vec![pieces])
}

/// The pool of connections over pipes.
type KeptPipes = Kept<tokio::io::DuplexStream>;

/// One GET on `connection` whose head must come within `head_within` ms: the body, or the
/// error of the head or of the body.
async fn get_on(
    connection: Connection<tokio::io::DuplexStream>,
    pool: &Arc<KeptPipes>,
    head_within: Option<u64>,
) -> Result<Bytes, Error> {
    let pool: Arc<dyn Pool<tokio::io::DuplexStream>> = pool.clone();
    let deadline = head_within.map(|ms| Instant::now() + Duration::from_millis(ms));
    let request = parts(Method::GET, "/x");
    let sent = connection.send(&request, Fields::default(), Full::new(Bytes::new()), Some(pool), 0, deadline);
    let response = sent.await.map_err(|failure| failure.error)?;
    let collected = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect());
    collected.await.expect("the body ends").map(|collected| collected.to_bytes())
}

/// One GET over `io` with a read timeout of 100 ms and no head deadline.
async fn read_with_timeout(io: tokio::io::DuplexStream, pool: &Arc<KeptPipes>) -> Result<Bytes, Error> {
    get_on(Connection::new(io).with_read_timeout(Duration::from_millis(100)), pool, None).await
}

/// Asserts that from `started` to now is at least `from` and less than `to` milliseconds.
#[track_caller]
fn assert_waited(started: Instant, from: u64, to: u64) {
    let waited = started.elapsed();
    let (from, to) = (Duration::from_millis(from), Duration::from_millis(to));
    assert!(waited >= from && waited < to, "waited {waited:?}, not in [{from:?}, {to:?})");
}

#[tokio::test(start_paused = true)]
async fn a_body_that_sends_nothing_for_the_read_timeout_fails() {
    let head = "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello";
    let pool = Arc::new(KeptPipes::default());
    let read = read_with_timeout(paced(vec![(0, head), (150, "world")]), &pool).await;
    assert!(matches!(read, Err(Error::Stalled { after }) if after == Duration::from_millis(100)), "{read:?}");
    assert_eq!(pool.count(), 0, "a stalled connection is not used again");

    // Chunked: a stall between chunks, too.
    let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n";
    let read = read_with_timeout(paced(vec![(0, head), (150, "0\r\n\r\n")]), &pool).await;
    assert!(matches!(read, Err(Error::Stalled { .. })), "{read:?}");
}

#[tokio::test(start_paused = true)]
async fn a_body_that_keeps_sending_or_a_slow_head_is_not_stalled() {
    // 240 ms in all, never 100 ms without a byte.
    let head = "HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhe";
    let pool = Arc::new(KeptPipes::default());
    let pieces = vec![(0, head), (80, "ll"), (80, "o "), (80, "world")];
    let read = read_with_timeout(paced(pieces), &pool).await;
    assert_eq!(read.unwrap(), "hello world");
    assert_eq!(pool.count(), 1, "the connection back in its pool");

    // The head's wait is the caller's deadline, not the body's read timeout.
    let answer = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
    let read = read_with_timeout(paced(vec![(500, answer)]), &pool).await;
    assert_eq!(read.unwrap(), "hello");
}

#[tokio::test(start_paused = true)]
async fn one_timer_serves_the_heads_and_bodies_of_one_exchange_after_another() {
    let answer = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
    let io = paced_exchanges(vec![
        // The timer is made for the head's deadline (200 ms), then set to the body's read
        // timeout (100 ms) while the body waits 80 ms.
        vec![(0, "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhe"), (80, "llo")],
        // Within the head's deadline.
        vec![(150, answer)],
        // Past it.
        vec![(300, answer)],
    ]);
    let pool = Arc::new(KeptPipes::default());
    let connection = Connection::new(io).with_read_timeout(Duration::from_millis(100));
    assert_eq!(get_on(connection, &pool, Some(200)).await.unwrap(), "hello");
    let kept = pool.take();
    assert!(kept.kept.timer.is_some(), "the timer stays with the connection");

    // The body's read timeout, set before, does not end the next exchange's head wait.
    assert_eq!(get_on(kept, &pool, Some(200)).await.unwrap(), "hello");
    let started = Instant::now();
    let late = get_on(pool.take(), &pool, Some(200)).await;
    assert!(matches!(late, Err(Error::TimedOut)), "{late:?}");
    assert_waited(started, 200, 300);
}

#[tokio::test(start_paused = true)]
async fn an_earlier_deadline_than_the_timer_is_set_to_is_set_at_once() {
    let answer = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
    let io = paced_exchanges(vec![
        // The head's deadline is 5 s; the body then stalls for 150 ms (read timeout 100 ms).
        vec![(0, "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhe"), (150, "llo")],
    ]);
    let pool = Arc::new(KeptPipes::default());
    let connection = Connection::new(io).with_read_timeout(Duration::from_millis(100));
    let started = Instant::now();
    let read = get_on(connection, &pool, Some(5000)).await;
    assert!(matches!(read, Err(Error::Stalled { .. })), "{read:?}");
    assert_waited(started, 100, 150);

    // A read timeout of 1 s, then a head due in 200 ms that comes in 300.
    let io = paced_exchanges(vec![
        vec![(0, "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhe"), (50, "llo")],
        vec![(300, answer)],
    ]);
    let connection = Connection::new(io).with_read_timeout(Duration::from_secs(1));
    assert_eq!(get_on(connection, &pool, Some(5000)).await.unwrap(), "hello");
    let started = Instant::now();
    let late = get_on(pool.take(), &pool, Some(200)).await;
    assert!(matches!(late, Err(Error::TimedOut)), "{late:?}");
    assert_waited(started, 200, 300);
}

/// A response framing for the property tests: a status, fields and how the body goes.
#[derive(Debug, Clone)]
struct Generated {
    method: Method,
    status: u16,
    fields: Vec<(String, String)>,
    body: Vec<u8>,
    framing: Framing,
    interim: bool,
}

#[derive(Debug, Clone)]
enum Framing {
    Length,
    /// The body cut at these sizes, and trailers.
    Chunked(Vec<usize>, Vec<(String, String)>),
    Close,
}

impl Generated {
    fn wire(&self) -> Vec<u8> {
        let mut wire = Vec::new();
        if self.interim {
            wire.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        wire.extend_from_slice(format!("HTTP/1.1 {} Whatever\r\n", self.status).as_bytes());
        for (name, value) in &self.fields {
            wire.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        let has_body = self.has_body();
        match &self.framing {
            Framing::Length => {
                wire.extend_from_slice(format!("Content-Length: {}\r\n\r\n", self.body.len()).as_bytes());
                if has_body {
                    wire.extend_from_slice(&self.body);
                }
            }
            Framing::Chunked(cuts, trailers) => {
                wire.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                if has_body {
                    let mut rest = &self.body[..];
                    for cut in cuts.iter().chain(std::iter::once(&usize::MAX)) {
                        let (chunk, after) = rest.split_at((*cut).min(rest.len()));
                        if !chunk.is_empty() {
                            wire.extend_from_slice(format!("{:X}\r\n", chunk.len()).as_bytes());
                            wire.extend_from_slice(chunk);
                            wire.extend_from_slice(b"\r\n");
                        }
                        rest = after;
                    }
                    wire.extend_from_slice(b"0\r\n");
                    for (name, value) in trailers {
                        wire.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
                    }
                    wire.extend_from_slice(b"\r\n");
                }
            }
            Framing::Close => {
                wire.extend_from_slice(b"\r\n");
                if has_body {
                    wire.extend_from_slice(&self.body);
                }
            }
        }
        wire
    }

    fn has_body(&self) -> bool {
        self.method != Method::HEAD && ![204, 304].contains(&self.status)
    }

    fn expected_body(&self) -> &[u8] {
        if self.has_body() { &self.body } else { &[] }
    }
}

/// A field name in random letter case.
fn field() -> impl Strategy<Value = (String, String)> {
    ("[a-z][a-z0-9-]{0,12}", proptest::collection::vec(any::<bool>(), 13), "[ -~]{0,20}").prop_map(
        |(name, upper, value): (String, Vec<bool>, String)| {
            let name = name
                .chars()
                .zip(upper)
                .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
                .collect::<String>();
            let name = if name.eq_ignore_ascii_case("content-length")
                || name.eq_ignore_ascii_case("transfer-encoding")
                || name.eq_ignore_ascii_case("connection")
            {
                format!("x-{name}")
            } else {
                name
            };
            (name, value.trim().to_owned())
        },
    )
}

fn generated() -> impl Strategy<Value = Generated> {
    let framing = prop_oneof![
        Just(Framing::Length),
        (proptest::collection::vec(1usize..64, 0..6), proptest::collection::vec(field(), 0..3))
            .prop_map(|(cuts, trailers)| Framing::Chunked(cuts, trailers)),
        Just(Framing::Close),
    ];
    (
        prop_oneof![Just(Method::GET), Just(Method::HEAD)],
        prop_oneof![Just(200u16), Just(201), Just(204), Just(304), Just(404), Just(503)],
        proptest::collection::vec(field(), 0..6),
        proptest::collection::vec(any::<u8>(), 0..300),
        framing,
        any::<bool>(),
    )
        .prop_map(|(method, status, fields, body, framing, interim)| Generated {
            method,
            status,
            fields,
            body,
            framing,
            interim,
        })
}

/// `wire` read in pieces cut at `cuts` (positions), the connection ending after it.
fn cut(wire: &[u8], cuts: &[usize]) -> Scripted {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    points.sort_unstable();
    points.dedup();
    let mut pieces = Vec::new();
    let mut from = 0;
    for point in points.into_iter().chain(std::iter::once(wire.len())) {
        if point > from {
            pieces.push(wire[from..point].to_vec());
            from = point;
        }
    }
    Scripted::new(pieces)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// The fields received, less the framing ones the generator adds, in the order that counts:
/// by name, each name's values in the order they came (RFC 9110 §5.3; a `HeaderMap` keeps a
/// repeated name's lines together).
fn received_fields(received: &Received) -> Vec<(String, Vec<u8>)> {
    let framing = ["content-length", "transfer-encoding"];
    by_name(received.headers.iter().filter(|(n, _)| !framing.contains(&n.as_str())).cloned().collect())
}

/// `fields` ordered by name, stably: the order of one name's values is kept.
fn by_name(mut fields: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    fields
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn generated_framings_are_read_whole_however_the_reads_fall(
        generated in generated(),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let wire = generated.wire();
        let (received, _) = runtime().block_on(exchange(generated.method.clone(), cut(&wire, &cuts)));
        let received = received.unwrap();
        prop_assert_eq!(received.status, generated.status);
        let expected: Vec<(String, Vec<u8>)> = generated
            .fields
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.as_bytes().to_vec()))
            .collect();
        prop_assert_eq!(received_fields(&received), by_name(expected));
        let (body, trailers) = received.body.unwrap();
        prop_assert_eq!(&body[..], generated.expected_body());
        let expected_trailers = match &generated.framing {
            Framing::Chunked(_, sent) if generated.has_body() && !sent.is_empty() => {
                let mut map = HeaderMap::new();
                for (name, value) in sent {
                    map.append(
                        http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                        HeaderValue::from_str(value).unwrap(),
                    );
                }
                Some(map)
            }
            _ => None,
        };
        prop_assert_eq!(trailers, expected_trailers);
    }

    #[test]
    fn the_connection_and_hyper_receive_the_same(generated in generated()) {
        let wire = generated.wire();
        let runtime = runtime();
        let ours = runtime.block_on(exchange(generated.method.clone(), Scripted::new([wire.clone()]))).0.map_err(|e| e.to_string());
        let hypers = runtime.block_on(through_hyper(generated.method.clone(), Scripted::new([wire])));
        match (ours, hypers) {
            (Ok(ours), Ok(hypers)) => {
                prop_assert_eq!(ours.status, hypers.status);
                prop_assert_eq!(&ours.headers, &hypers.headers);
                prop_assert_eq!(ours.body.map_err(|_| ()), hypers.body.map_err(|_| ()));
            }
            (ours, hypers) => prop_assert!(ours.is_err() && hypers.is_err(), "ours {ours:?}, hyper's {hypers:?}"),
        }
    }
}

#[test]
fn every_single_byte_split_reads_the_same() {
    let wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nX-T: 1\r\n\r\n";
    let runtime = runtime();
    for at in 0..=wire.len() {
        let (received, kept) = runtime.block_on(exchange(Method::GET, cut(wire, &[at])));
        let (body, trailers) = received.unwrap().body.unwrap();
        assert_eq!(body, "abcde", "split at {at}");
        assert_eq!(trailers.unwrap()["x-t"], "1");
        assert_eq!(kept.count(), 1, "a clean end: back in the pool, split at {at}");
    }
    let bytes: Vec<Vec<u8>> = wire.iter().map(|b| vec![*b]).collect();
    let (received, _) = runtime.block_on(exchange(Method::GET, Scripted::new(bytes)));
    assert_eq!(received.unwrap().body.unwrap().0, "abcde");
}

/// The same exchange through hyper's client connection.
async fn through_hyper(method: Method, io: Scripted) -> Result<Received, String> {
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let mut request = Request::new(Full::new(Bytes::new()));
    *request.method_mut() = method;
    *request.uri_mut() = "/x".parse().unwrap();
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    Ok(collect(response).await)
}

#[tokio::test]
async fn a_101_to_an_upgrade_request_hands_over_the_stream_with_the_bytes_past_the_head() {
    let kept = Arc::new(Kept::default());
    let mut request = parts(Method::GET, "/chat");
    request.headers.insert(http::header::CONNECTION, HeaderValue::from_static("upgrade"));
    request.headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    let endpoint = Scripted::open("HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\nframe");
    let pool: Arc<dyn Pool<Scripted>> = kept.clone();
    let response = Connection::new(endpoint)
        .send(&request, Fields::default(), Full::new(Bytes::new()), Some(pool), 0, None)
        .await
        .unwrap();

    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["upgrade"], "websocket");
    let upgraded = response.into_body().into_upgraded().expect("the 101's connection");
    assert_eq!(upgraded.read, Bytes::from_static(b"frame"), "bytes read past the head go along");
    let written = String::from_utf8(upgraded.io.written.clone()).unwrap();
    assert!(written.contains("connection: upgrade\r\n") && written.contains("upgrade: websocket\r\n"));
    assert_eq!(kept.count(), 0, "a switched connection never goes back to the pool");
}

#[tokio::test]
async fn a_non_101_answer_to_an_upgrade_request_is_an_ordinary_response() {
    let mut request = parts(Method::GET, "/chat");
    request.headers.insert(http::header::CONNECTION, HeaderValue::from_static("upgrade"));
    request.headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    let endpoint = Scripted::open("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    let response = Connection::new(endpoint)
        .send(&request, Fields::default(), Full::new(Bytes::new()), None, 0, None)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (head, body) = response.into_parts();
    assert!(body.into_upgraded().is_none());
    assert_eq!(head.status, 200);
    let response = Connection::new(Scripted::open("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"))
        .send(&request, Fields::default(), Full::new(Bytes::new()), None, 0, None)
        .await
        .unwrap();
    assert_eq!(collect(response).await.body.unwrap().0, Bytes::from_static(b"ok"));
}

#[test]
fn a_parsed_head_is_consumed_with_its_fields_in_order() {
    let wire = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-empty:\r\nx-b: two words \r\nX-B: 3\r\n\r\nok";
    let mut buf = bytes::BytesMut::from(&wire.as_bytes()[..wire.len() - 10]);
    assert!(
        head::parse_response(&mut buf, &mut head::Names::default(), 0).unwrap().is_none(),
        "a head in part is not one"
    );
    assert_eq!(buf.len(), wire.len() - 10, "and stays in the buffer");

    let mut buf = bytes::BytesMut::from(wire.as_bytes());
    let head = head::parse_response(&mut buf, &mut head::Names::default(), 0).unwrap().expect("a whole head");
    assert_eq!(&buf[..], b"ok", "the body's bytes stay");
    let fields: Vec<(&str, &[u8])> = head.headers().iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect();
    assert_eq!(
        fields,
        [("content-length", &b"2"[..]), ("x-empty", b""), ("x-b", b"two words"), ("x-b", b"3")]
    );
}

#[test]
fn a_parsed_head_has_the_room_asked_for_and_not_much_more() {
    let wire = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok";
    for room in [0, 1, 4, 9] {
        let head =
            head::parse_response(&mut bytes::BytesMut::from(&wire[..]), &mut head::Names::default(), room)
                .unwrap()
                .unwrap();
        let capacity = head.headers().capacity();
        // The map keeps its room to the client's connection: within twice what is asked.
        assert!((2 + room..=2 * (2 + room)).contains(&capacity), "room {room}: capacity {capacity}");
    }
}

#[tokio::test]
async fn added_fields_go_out_after_the_requests_own_and_left_out_ones_not_at_all() {
    static VIA: http::HeaderName = http::header::VIA;
    static FROM: http::HeaderName = http::header::FROM;
    let kept = Arc::new(Kept::default());
    let pool: Arc<dyn Pool<Scripted>> = kept.clone();
    let added = [(&VIA, HeaderValue::from_static("1.1 accel")), (&VIA, HeaderValue::from_static("2 other"))];
    let mut request = parts(Method::GET, "/a");
    for (name, value) in [("from", "a"), ("accept", "*/*"), ("from", "b"), ("via", "1.0 edge")] {
        request.headers.append(name, HeaderValue::from_static(value));
    }
    let fields = Fields { added: &added, left_out: &[&FROM] };
    Connection::new(Scripted::open("HTTP/1.1 204 No Content\r\n\r\n"))
        .send(&request, fields, Full::new(Bytes::new()), Some(pool), 0, None)
        .await
        .unwrap();
    let written = String::from_utf8(kept.take().kept.io.written).unwrap();
    let expected = "GET /a HTTP/1.1\r\nhost: origin\r\naccept: */*\r\nvia: 1.0 edge\r\nvia: 1.1 accel\r\nvia: 2 other\r\n\r\n";
    assert_eq!(written, expected, "the map's fields in order, those left out gone, the added after");
}

#[test]
fn content_lengths_are_read_field_by_field() {
    use head::Lengths;
    let read = |values: &[&str]| values.iter().fold(Lengths::None, |lengths, v| lengths.add(v.as_bytes()));
    assert_eq!(read(&[]), Lengths::None);
    assert_eq!(read(&["0"]), Lengths::One(0));
    assert_eq!(read(&[" 12 "]), Lengths::One(12));
    assert_eq!(read(&["5", "5, 5"]), Lengths::One(5), "repeats of one length are that length");
    assert_eq!(read(&["9999999999999999999"]), Lengths::One(9_999_999_999_999_999_999));
    for invalid in [
        &["2", "3"][..],
        &["2, 3"],
        &[""],
        &["2,"],
        &["+2"],
        &["two"],
        &["20000000000000000000"],
        &["3", "x"],
        // Once invalid, always: a valid length after an invalid one does not make it one.
        &["x", "3"],
        &["2", "3", "2"],
    ] {
        assert_eq!(read(invalid), Lengths::Invalid, "{invalid:?}");
    }
}

#[tokio::test]
async fn a_request_whose_length_is_not_a_length_is_not_sent() {
    let mut request = parts(Method::POST, "/up");
    request.headers.append(http::header::CONTENT_LENGTH, HeaderValue::from_static("3, 4"));
    let failure = Connection::new(Scripted::open("HTTP/1.1 204 No Content\r\n\r\n"))
        .send(&request, Fields::default(), Full::new(Bytes::from_static(b"abc")), None, 0, None)
        .await
        .unwrap_err();
    // Refused as the head is made, before a byte of it is written.
    assert!(matches!(failure.error, Error::Invalid(why) if why.starts_with("request content-length")));
    assert!(failure.unsent.is_none(), "{:?}", failure.error);
}

#[test]
fn names_remembered_from_the_last_head_are_reused_only_when_sent_the_same() {
    let mut names = head::Names::default();
    let heads = [
        "HTTP/1.1 200 OK\r\nContent-Type: a\r\nx-one: 1\r\ncontent-length: 0\r\n\r\n",
        // The same names: taken from the last head.
        "HTTP/1.1 200 OK\r\nContent-Type: b\r\nx-one: 2\r\ncontent-length: 0\r\n\r\n",
        // Another case, another name at a place, and one more field.
        "HTTP/1.1 200 OK\r\ncontent-TYPE: c\r\nx-two: 3\r\ncontent-length: 0\r\nvary: d\r\n\r\n",
        // Fewer fields.
        "HTTP/1.1 200 OK\r\nx-two: 4\r\n\r\n",
    ];
    let expected: [&[(&str, &str)]; 4] = [
        &[("content-type", "a"), ("x-one", "1"), ("content-length", "0")],
        &[("content-type", "b"), ("x-one", "2"), ("content-length", "0")],
        &[("content-type", "c"), ("x-two", "3"), ("content-length", "0"), ("vary", "d")],
        &[("x-two", "4")],
    ];
    for (wire, expected) in heads.iter().zip(expected) {
        let mut buf = bytes::BytesMut::from(wire.as_bytes());
        let head = head::parse_response(&mut buf, &mut names, 0).unwrap().unwrap();
        let fields: Vec<(&str, &str)> =
            head.headers().iter().map(|(n, v)| (n.as_str(), v.to_str().unwrap())).collect();
        assert_eq!(fields, expected, "{wire:?}");
    }
    // Past the names kept (a head's first 32), names are parsed every time.
    let long = |tag: &str| {
        let fields: String = (0..40).map(|i| format!("x-{tag}-{i}: {i}\r\n")).collect();
        format!("HTTP/1.1 200 OK\r\n{fields}\r\n")
    };
    for tag in ["a", "b", "b"] {
        let mut buf = bytes::BytesMut::from(long(tag).as_bytes());
        let head = head::parse_response(&mut buf, &mut names, 0).unwrap().unwrap();
        let fields: Vec<&str> = head.headers().keys().map(|n| n.as_str()).collect();
        let expected: Vec<String> = (0..40).map(|i| format!("x-{tag}-{i}")).collect();
        assert_eq!(fields, expected, "{tag}");
    }
    let mut buf = bytes::BytesMut::from(&b"HTTP/1.1 200 OK\r\nx bad: 1\r\n\r\n"[..]);
    assert!(
        head::parse_response(&mut buf, &mut names, 0).is_err(),
        "a malformed name is never taken as a kept one"
    );
}
