//! Arbitrary bytes as a `passthrough_forward.forward` object. Must never
//! panic; a decoded forward must survive an encode/decode round trip.
#![no_main]

use hermes_protocol::{ConnectorFrame, PassthroughForward, WireFrame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(forward) = PassthroughForward::from_json_slice(data) {
        let frame = ConnectorFrame::PassthroughForward {
            forward,
            buffer_id: None,
        };
        let line = frame.encode();
        let again = ConnectorFrame::decode_line(line.trim_end_matches('\n').as_bytes());
        assert_eq!(again.as_ref(), Ok(&frame));
    }
});
