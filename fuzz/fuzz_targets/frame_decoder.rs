//! Arbitrary bytes, cut into messages at data-chosen points, through the
//! streaming decoder in both directions. Must never panic; each decoded
//! frame must re-encode to a line that decodes to the same frame.
#![no_main]

use hermes_protocol::{ConnectorFrame, FrameDecoder, GatewayFrame, WireFrame};
use libfuzzer_sys::fuzz_target;

fn check<F: WireFrame + PartialEq + std::fmt::Debug>(data: &[u8], max_partial: usize) {
    let mut decoder = FrameDecoder::<F>::with_max_partial(max_partial);
    // The first byte picks the chunk length so the fuzzer explores message
    // boundaries too.
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    for chunk in data.chunks(step) {
        let _ = decoder.push(chunk);
        while let Some(result) = decoder.next_frame() {
            if let Ok(frame) = result {
                let line = frame.encode();
                assert_eq!(line.matches('\n').count(), 1);
                let again = F::decode_line(line.trim_end_matches('\n').as_bytes());
                assert_eq!(again.as_ref(), Ok(&frame));
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check::<ConnectorFrame>(data, 4096);
    check::<GatewayFrame>(data, 64);
});
