//! One small HTTP/1 server loop, shared by everything in this project that
//! listens: the admin endpoints, the `dev` webhook ingress and the stub
//! connector. Each brings its own handler; this crate owns what every
//! listener needs and is easy to get wrong once per copy:
//!
//! - a cap on open connections (more are closed on accept, not queued);
//! - a deadline for each request head and, optionally, for a whole
//!   connection (a slow client cannot hold a slot forever);
//! - a failing `accept` (out of file descriptors) pauses with a doubling
//!   backoff instead of spinning;
//! - request bodies read against a limit, with a typed error for each way
//!   that fails;
//! - shutdown by a cancellation token.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, HeaderMap};
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The response body every handler here answers with: small and whole.
pub type Body = Full<Bytes>;

/// First and longest pause after a failed accept (doubling in between).
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// How one listener serves.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Names the listener in log lines.
    pub name: &'static str,
    /// Connections served at once; more are closed on accept.
    pub max_connections: usize,
    /// How long a client has to send each request head.
    pub header_read_timeout: Duration,
    /// How long one connection may stay open; `None` for no limit (a
    /// connection upgraded to a WebSocket leaves this loop's hands anyway).
    pub connection_timeout: Option<Duration>,
    /// Whether a handler may take the connection over with
    /// `hyper::upgrade::on` (WebSocket).
    pub upgrades: bool,
}

impl ServeOptions {
    /// 64 connections, 5 s per request head, 60 s per connection, no
    /// upgrades.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            max_connections: 64,
            header_read_timeout: Duration::from_secs(5),
            connection_timeout: Some(Duration::from_secs(60)),
            upgrades: false,
        }
    }
}

/// Serves `handler` on every connection accepted from `listener` until
/// `shutdown` (connections already open finish on their own).
pub async fn serve<H, F>(
    listener: TcpListener,
    options: ServeOptions,
    shutdown: CancellationToken,
    handler: H,
) where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let name = options.name;
    let handler = Arc::new(handler);
    let slots = Arc::new(Semaphore::new(options.max_connections));
    let mut backoff = None;
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff = None;
                pair
            }
            Err(e) => {
                // Out of file descriptors and the like: the error repeats
                // until something is released, so pause rather than spin.
                let delay = next_backoff(backoff);
                backoff = Some(delay);
                warn!(listener = name, error = %e, retry_in_ms = delay.as_millis() as u64, "accept failed");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(delay) => continue,
                }
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            debug!(listener = name, %peer, "connection refused: {} already open", options.max_connections);
            continue;
        };
        // Requests and answers are small and latency-bound: without this,
        // Nagle's algorithm meets the peer's delayed ACK (~40 ms).
        let _ = stream.set_nodelay(true);
        let handler = Arc::clone(&handler);
        let options = options.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req| {
                let answer = handler(req);
                async move { Ok::<_, Infallible>(answer.await) }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(options.header_read_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let served = async {
                if options.upgrades {
                    connection.with_upgrades().await
                } else {
                    connection.await
                }
            };
            let result = match options.connection_timeout {
                Some(limit) => match tokio::time::timeout(limit, served).await {
                    Ok(result) => result,
                    Err(_) => {
                        debug!(listener = name, %peer, "connection closed: open too long");
                        return;
                    }
                },
                None => served.await,
            };
            if let Err(e) = result {
                debug!(listener = name, %peer, error = %e, "connection ended");
            }
        });
    }
}

/// The pause after a failed accept: [`ACCEPT_BACKOFF`]'s first, then
/// doubling up to its longest.
fn next_backoff(previous: Option<Duration>) -> Duration {
    let (first, longest) = ACCEPT_BACKOFF;
    previous.map_or(first, |d| d.saturating_mul(2).min(longest))
}

/// Why a request body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Over the limit, declared (`Content-Length`) or counted while
    /// reading.
    TooLarge,
    /// The connection failed or the framing was invalid.
    Unreadable,
}

/// Whether `headers` declare a body longer than `limit`: refuse it before
/// reading a byte.
pub fn declared_too_large(headers: &HeaderMap, limit: usize) -> bool {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > limit as u64)
}

/// Reads a whole request body, at most `limit` bytes (a declared length
/// over the limit is refused without reading).
pub async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, BodyError> {
    if declared_too_large(req.headers(), limit) {
        return Err(BodyError::TooLarge);
    }
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(BodyError::TooLarge)
        }
        Err(_) => Err(BodyError::Unreadable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::StatusCode;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;

    /// Serves a handler that answers 200 with the body's length, or 413.
    async fn echo_length(options: ServeOptions) -> (std::net::SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, options, stop.clone(), |req| async move {
            let (status, text) = match read_body(req, 8).await {
                Ok(body) => (StatusCode::OK, body.len().to_string()),
                Err(e) => (StatusCode::PAYLOAD_TOO_LARGE, format!("{e:?}")),
            };
            let mut response = Response::new(Body::from(text));
            *response.status_mut() = status;
            response
        }));
        (addr, stop)
    }

    /// Sends `request` on a new connection and reads until the server
    /// closes it.
    async fn exchange(addr: std::net::SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut answer = String::new();
        match stream.read_to_string(&mut answer).await {
            Ok(_) => {}
            // Closed with our request unread: the kernel answers with a
            // reset. Nothing was answered.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("read: {e}"),
        }
        answer
    }

    #[tokio::test]
    async fn bodies_are_read_against_the_limit() {
        let (addr, _stop) = echo_length(ServeOptions::new("test")).await;
        let small = exchange(
            addr,
            "POST / HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 5\r\n\r\nhello",
        )
        .await;
        assert!(small.starts_with("HTTP/1.1 200"), "{small}");
        assert!(small.ends_with("\r\n\r\n5"), "{small}");
        let declared = exchange(
            addr,
            "POST / HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 9\r\n\r\n123456789",
        )
        .await;
        assert!(declared.starts_with("HTTP/1.1 413"), "{declared}");
        assert!(declared.ends_with("TooLarge"), "{declared}");
        // Chunked: no length declared, counted while reading.
        let counted = exchange(
            addr,
            "POST / HTTP/1.1\r\nhost: x\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n",
        )
        .await;
        assert!(counted.starts_with("HTTP/1.1 413"), "{counted}");
    }

    #[tokio::test]
    async fn connections_past_the_cap_are_closed_on_accept() {
        let options = ServeOptions {
            max_connections: 1,
            ..ServeOptions::new("test")
        };
        let (addr, _stop) = echo_length(options).await;
        // The first connection holds the only slot, idle.
        let mut first = TcpStream::connect(addr).await.expect("connect");
        first
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        let mut head = [0u8; 12];
        first.read_exact(&mut head).await.expect("answered");
        assert_eq!(&head, b"HTTP/1.1 200");
        // The second is closed without an answer.
        let refused = exchange(addr, "GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
        assert_eq!(refused, "", "closed on accept");
        // Once the first goes, its slot serves again.
        drop(first);
        // The slot is freed when the server notices the close; no event
        // of it is visible from here, so try a bounded number of times.
        let mut again = String::new();
        for _ in 0..1000 {
            let request = "GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
            again = exchange(addr, request).await;
            if !again.is_empty() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(again.starts_with("HTTP/1.1 200"), "{again}");
    }

    #[tokio::test]
    async fn a_slow_request_head_is_cut_off() {
        let options = ServeOptions {
            header_read_timeout: Duration::from_millis(100),
            ..ServeOptions::new("test")
        };
        let (addr, _stop) = echo_length(options).await;
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(b"GET / HT").await.expect("write");
        // The head never completes: the server ends the connection (with a
        // 408 or without a word) instead of holding the slot.
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer));
        read.await.expect("closed by the server").expect("read");
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
    }
}
