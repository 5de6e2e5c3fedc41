//! Codec throughput: a typical `passthrough_forward` frame with a 2 KB body
//! (encode + decode, and decode alone), and decode of an inbound event frame.
//!
//! Run: `cargo bench -p hermes-protocol --bench codec`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hermes_protocol::{
    ConnectorFrame, FrameDecoder, MessageEvent, MessageType, PassthroughForward, SessionSource,
    WireFrame,
};

fn forward_frame() -> ConnectorFrame {
    // A Discord-interaction-sized JSON body, 2048 bytes.
    let mut body = br#"{"type":2,"id":"1234567890","channel_id":"9876543210","data":{"name":"ask","options":[{"name":"q","value":""#.to_vec();
    body.resize(2048 - 5, b'x');
    body.extend_from_slice(br#""}]}}"#);
    ConnectorFrame::PassthroughForward {
        forward: PassthroughForward {
            platform: "discord".into(),
            bot_id: "1100000000000000001".into(),
            method: "POST".into(),
            path: "/interactions".into(),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                (
                    "user-agent".into(),
                    "Discord-Interactions/1.0 (+https://discord.com)".into(),
                ),
                ("x-forwarded-for".into(), "203.0.113.7".into()),
            ],
            body,
            profile: None,
        },
        buffer_id: Some("buf-0001".into()),
    }
}

fn inbound_frame() -> ConnectorFrame {
    ConnectorFrame::Inbound {
        event: MessageEvent {
            text: "Can you summarize the thread above and list the open questions?".into(),
            message_type: MessageType::Text,
            source: SessionSource {
                platform: "discord".into(),
                chat_id: "1200000000000000001".into(),
                chat_type: "group".into(),
                chat_name: Some("general".into()),
                user_id: Some("3300000000000000007".into()),
                user_name: Some("ben".into()),
                scope_id: Some("9000000000000000000".into()),
                ..SessionSource::default()
            },
            message_id: Some("1500000000000000002".into()),
            ..MessageEvent::default()
        },
        buffer_id: None,
    }
}

fn codec(c: &mut Criterion) {
    let forward = forward_frame();
    let forward_line = forward.encode();
    let inbound_line = inbound_frame().encode();

    let mut group = c.benchmark_group("passthrough_forward_2k");
    group.throughput(Throughput::Bytes(forward_line.len() as u64));
    group.bench_function("encode+decode", |b| {
        b.iter(|| {
            let line = black_box(&forward).encode();
            ConnectorFrame::decode_line(line.trim_end().as_bytes())
        })
    });
    group.bench_function("decode", |b| {
        b.iter(|| ConnectorFrame::decode_line(black_box(forward_line.trim_end().as_bytes())))
    });
    group.bench_function("decode_streaming", |b| {
        let mut decoder = FrameDecoder::<ConnectorFrame>::new();
        b.iter(|| {
            let _ = decoder.push(black_box(forward_line.as_bytes()));
            decoder.next_frame()
        })
    });
    group.finish();

    let mut group = c.benchmark_group("inbound_event");
    group.throughput(Throughput::Bytes(inbound_line.len() as u64));
    group.bench_function("decode", |b| {
        b.iter(|| ConnectorFrame::decode_line(black_box(inbound_line.trim_end().as_bytes())))
    });
    group.finish();
}

// The macro generates an undocumented `pub fn benches`.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, codec);
}
criterion_main!(group::benches);
