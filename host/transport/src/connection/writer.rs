//! The writer task: queued frames, keepalive pings, the close frame; every
//! write bounded.

use super::*;

/// Why the writer stopped.
#[derive(Debug)]
pub(super) enum WriterEnd {
    Closed,
    /// Nothing heard from the peer for this long while the reader listened.
    Dead(Duration),
    /// A write made no progress for this long while the reader listened.
    Stalled(Duration),
    Error(String),
}

/// The one writer task: frames from the queue (batched, one frame per
/// message), keepalive pings, and the close frame at teardown.
///
/// Every write is bounded: a peer that stops reading fills the socket and
/// blocks the write, and a write that makes no progress for `dead_after`
/// (counted while our reader listens) means the connection is dead, exactly
/// as silence does. Without the bound a wedged peer would keep the link
/// "connected" forever, because the ping timer is not looked at while a
/// write is blocked.
pub(super) async fn write_loop(
    mut sink: WsSink,
    mut queue: mpsc::Receiver<Outgoing>,
    mut close: oneshot::Receiver<CloseFrame>,
    shared: Arc<Shared>,
    liveness: Arc<Liveness>,
) -> WriterEnd {
    let keepalive = &shared.config.keepalive;
    let dead_after = keepalive.dead_after;
    let period = keepalive.ping_interval.max(Duration::from_millis(1));
    let mut ping = tokio::time::interval_at(liveness.opened + period, period);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            frame = &mut close => {
                if let Ok(frame) = frame {
                    let _ = sink.send(Message::Close(Some(frame))).await;
                }
                return WriterEnd::Closed;
            }
            item = queue.recv() => {
                let Some(first) = item else { return WriterEnd::Closed };
                let batch = write_batch(&mut sink, &mut queue, first, &shared);
                if let Err(end) = bounded(batch, &liveness, dead_after).await {
                    return end;
                }
            }
            _ = ping.tick() => {
                let silence = liveness.silence();
                if silence >= dead_after {
                    warn!(?silence, "relay keepalive: nothing heard; treating the connection as dead");
                    return WriterEnd::Dead(silence);
                }
                let sent = async { sink.send(Message::Ping(Bytes::new())).await.map_err(|e| e.to_string()) };
                if let Err(end) = bounded(sent, &liveness, dead_after).await {
                    return end;
                }
            }
        }
    }
}

/// Drive one write to completion, unless it makes no progress for
/// `dead_after` while the reader listens (a pause of our own reader restarts
/// the clock: the peer may be blocked writing to us).
async fn bounded(
    write: impl Future<Output = Result<(), String>>,
    liveness: &Liveness,
    dead_after: Duration,
) -> Result<(), WriterEnd> {
    tokio::pin!(write);
    let started = Instant::now();
    let mut deadline = started + dead_after;
    loop {
        tokio::select! {
            biased;
            written = &mut write => return written.map_err(WriterEnd::Error),
            () = tokio::time::sleep_until(deadline) => {
                if liveness.is_paused() {
                    // Look again later; resuming restarts the stall clock.
                    deadline = Instant::now() + dead_after;
                    continue;
                }
                let since = liveness.stall_clock(started);
                let stalled = since.elapsed();
                if stalled >= dead_after {
                    warn!(?stalled, "relay write made no progress; treating the connection as dead");
                    return Err(WriterEnd::Stalled(stalled));
                }
                deadline = since + dead_after;
            }
        }
    }
}

/// Write `first` and whatever else is already queued (up to a batch), then
/// flush once. A frame that cannot be written resolves its own request with
/// `send_failed`; the others settle as connection-lost at teardown.
async fn write_batch(
    sink: &mut WsSink,
    queue: &mut mpsc::Receiver<Outgoing>,
    first: Outgoing,
    shared: &Shared,
) -> Result<(), String> {
    let mut next = Some(first);
    let mut written = 0;
    let mut yielded = false;
    while let Some(Outgoing {
        text,
        request,
        bytes,
    }) = next.take()
    {
        shared.counters.frame_out(&text);
        let fed = sink.feed(Message::text(text)).await;
        // The frame now lives in the sink's write buffer (flushed at least
        // every batch) or is gone: its share of the queue's budget returns.
        drop(bytes);
        if let Err(e) = fed {
            if let Some(id) = request {
                shared.resolve(&id, ActionResult::send_failed(&e));
            }
            return Err(e.to_string());
        }
        written += 1;
        if written < WRITE_BATCH {
            next = queue.try_recv().ok();
            if next.is_none() && !yielded {
                // Once per batch, let the tasks that are ready right now
                // (the replies of forwards converted in the same tick) queue
                // their frames before the flush: under load one `sendto`
                // carries several frames, and when nothing else is ready
                // the flush is only one scheduler pass later.
                yielded = true;
                tokio::task::yield_now().await;
                next = queue.try_recv().ok();
            }
        }
    }
    sink.flush().await.map_err(|e| e.to_string())
}
