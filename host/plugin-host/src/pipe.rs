//! The guest's captured stdout/stderr: bounded, never closed, never a trap.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// A bounded in-memory stdout/stderr: keeps the first `capacity` bytes and
/// silently drops the rest. Unlike wasmtime-wasi's `MemoryOutputPipe` it never
/// reports the stream closed or traps when full, so a chatty guest is not
/// turned into a failing one.
#[derive(Clone)]
pub(crate) struct CappedPipe {
    inner: Arc<Mutex<CappedBuf>>,
}

struct CappedBuf {
    bytes: Vec<u8>,
    capacity: usize,
    dropped: usize,
}

impl CappedPipe {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(CappedBuf {
                bytes: Vec::new(),
                capacity,
                dropped: 0,
            })),
        }
    }

    fn push(&self, data: &[u8]) {
        let mut buf = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let room = buf.capacity.saturating_sub(buf.bytes.len());
        let take = room.min(data.len());
        buf.bytes.extend_from_slice(&data[..take]);
        buf.dropped = buf.dropped.saturating_add(data.len() - take);
    }

    /// Forget what was captured (a warm instance's next call starts empty).
    pub(crate) fn clear(&self) {
        let mut buf = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        buf.bytes.clear();
        buf.dropped = 0;
    }

    /// The captured text (lossy UTF-8), with a note when some was dropped.
    pub(crate) fn text(&self) -> String {
        let buf = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut s = String::from_utf8_lossy(&buf.bytes).into_owned();
        if buf.dropped > 0 {
            s.push_str(&format!("\n[{} more bytes dropped]", buf.dropped));
        }
        s
    }
}

/// The permit offered to the guest per write; the real cap is in `push`.
const PIPE_PERMIT: usize = 4096;

impl OutputStream for CappedPipe {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(PIPE_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedPipe {
    async fn ready(&mut self) {}
}

impl IsTerminal for CappedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for CappedPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
