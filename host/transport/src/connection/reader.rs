//! The reader task: decode every message, dispatch every frame, survive
//! every bad frame.

use super::*;

/// Why the reader stopped.
#[derive(Debug)]
pub(super) enum ReaderEnd {
    PeerClosed(Option<(u16, String)>),
    Eof,
    Error(String),
    Overflow(usize),
    BadFirstDescriptor(DescriptorError),
    ConsumerGone,
}

/// Everything the reader task owns.
pub(super) struct Reader {
    pub(super) shared: Arc<Shared>,
    pub(super) inbound: Arc<InboundQueue>,
    /// Installed as the connection's writer once the handshake completes.
    pub(super) writer: OutboundQueue,
    /// Taken by the first descriptor.
    pub(super) handshake: Option<oneshot::Sender<()>>,
    pub(super) liveness: Arc<Liveness>,
}

/// The one reader task: decode every message, dispatch every frame, survive
/// every bad frame. Returns only when the connection (or the layer above) is
/// gone, or the peer overflowed the partial-line bound.
pub(super) async fn read_loop(mut stream: WsStream, mut reader: Reader) -> ReaderEnd {
    let config = &reader.shared.config;
    let mut decoder = FrameDecoder::<ConnectorFrame>::with_max_partial(config.max_partial_line)
        .with_limits(DecodeLimits {
            max_body_bytes: config.max_forward_body,
        });
    while let Some(message) = stream.next().await {
        if message.is_ok() {
            // Any message is proof of life, not only a pong.
            reader.liveness.heard();
        }
        let bytes_in = &reader.shared.counters.bytes_in;
        let pushed = match &message {
            Ok(Message::Text(text)) => {
                bytes_in.fetch_add(text.len() as u64, std::sync::atomic::Ordering::Relaxed);
                decoder.push(text.as_bytes())
            }
            // A binary message is treated as UTF-8 text (§2).
            Ok(Message::Binary(bytes)) => {
                bytes_in.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
                decoder.push(bytes)
            }
            Ok(Message::Pong(_)) => continue,
            Ok(Message::Close(frame)) => {
                let close = frame
                    .as_ref()
                    .map(|f| (u16::from(f.code), f.reason.as_str().to_owned()));
                return ReaderEnd::PeerClosed(close);
            }
            // Pings are answered by tungstenite itself.
            Ok(Message::Ping(_) | Message::Frame(_)) => continue,
            Err(e) => return ReaderEnd::Error(e.to_string()),
        };
        // Complete lines before an overflow are still processed (the decoder
        // keeps them); then the connection is given up.
        let overflow = pushed.err();
        while let Some((decoded, len)) = decoder.next_frame_with_len() {
            if let Some(end) = reader.dispatch(decoded, len).await {
                return end;
            }
        }
        if let Some(e) = overflow {
            warn!(error = %e, "relay peer overflowed the partial-line bound; re-dialling");
            return ReaderEnd::Overflow(reader.shared.config.max_partial_line);
        }
    }
    ReaderEnd::Eof
}

impl Reader {
    /// Handle one decoded line of `len` bytes. `Some` ends the reader.
    async fn dispatch(
        &mut self,
        decoded: Result<ConnectorFrame, DecodeError>,
        len: usize,
    ) -> Option<ReaderEnd> {
        let counters = &self.shared.counters;
        let frame = match decoded {
            Ok(frame) => {
                counters.frame_in(frame.frame_type());
                frame
            }
            Err(DecodeError::BadDescriptor(e)) if self.handshake.is_some() => {
                warn!(error = %e, "relay handshake failed: first descriptor is invalid");
                return Some(ReaderEnd::BadFirstDescriptor(e));
            }
            Err(error) => {
                Counters::bump(&counters.malformed_frames);
                // The error names the frame type and field, never values.
                warn!(kind = error.kind(), error = %error, "skipping malformed relay frame");
                let buffer_id = error.buffer_id().map(str::to_owned);
                return match buffer_id {
                    Some(buffer_id) => {
                        self.deliver(InboundItem::Dropped { buffer_id, error }, len)
                            .await
                    }
                    None => None,
                };
            }
        };
        match frame {
            ConnectorFrame::Descriptor(descriptor) => self.on_descriptor(descriptor),
            ConnectorFrame::OutboundResult { request_id, result } => {
                if !self.shared.resolve(&request_id, result) {
                    Counters::bump(&counters.late_results);
                    debug!(request_id = %request_id, "ignoring late or unknown outbound_result");
                }
                None
            }
            ConnectorFrame::GoingIdleAck => {
                self.shared
                    .idle_acks
                    .send_modify(|n| *n = n.wrapping_add(1));
                None
            }
            ConnectorFrame::Unknown { frame_type } => {
                Counters::bump(&counters.unknown_types);
                debug!(frame_type = %frame_type.chars().take(64).collect::<String>(), "ignoring relay frame of unknown type");
                None
            }
            ConnectorFrame::Inbound { event, buffer_id } => {
                self.deliver(InboundItem::Event { event, buffer_id }, len)
                    .await
            }
            ConnectorFrame::InterruptInbound {
                session_key,
                chat_id,
            } => {
                let item = InboundItem::Interrupt {
                    session_key,
                    chat_id,
                };
                self.deliver(item, len).await
            }
            ConnectorFrame::PassthroughForward { forward, buffer_id } => {
                self.deliver(InboundItem::Forward { forward, buffer_id }, len)
                    .await
            }
        }
    }

    fn on_descriptor(&mut self, descriptor: Descriptor) -> Option<ReaderEnd> {
        match self.handshake.take() {
            Some(done) => {
                let descriptor = Arc::new(descriptor);
                info!(platform = %descriptor.platform, "relay connected");
                self.shared
                    .install(self.writer.clone(), Arc::clone(&descriptor));
                Counters::bump(&self.shared.counters.handshakes);
                self.shared.set_state(LinkState::Connected { descriptor });
                let _ = done.send(());
            }
            // Later descriptors describe further fronted platforms and never
            // replace the default (§3.2).
            None => self.shared.add_platform_descriptor(descriptor),
        }
        None
    }

    /// Hand an item, decoded from a line of `len` bytes, to the layer above.
    /// Awaiting here is the backpressure: while the channel is full by count
    /// or by bytes this task does not read the socket, and the keepalive
    /// clocks stop (see [`Liveness`]).
    async fn deliver(&self, item: InboundItem, len: usize) -> Option<ReaderEnd> {
        let item = match self.inbound.try_push(item, len) {
            Ok(()) => return None,
            Err(TryPush::Closed) => return Some(ReaderEnd::ConsumerGone),
            Err(TryPush::Full(item)) => item,
        };
        self.liveness.pause();
        let sent = self.inbound.push(item, len).await;
        self.liveness.resume();
        match sent {
            Ok(()) => None,
            Err(_) => Some(ReaderEnd::ConsumerGone),
        }
    }
}
