//! Arbitrary token text against a fixed rotation list. Must never panic,
//! and must never accept a token that was not signed with a listed secret.
#![no_main]

use hermes_protocol::{make_token_with_exp, verify_token};
use libfuzzer_sys::fuzz_target;

const SECRETS: [&str; 3] = ["", "s3cr3t", "old-secret"];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let now = data.len() as u64 * 1_000_000;
    if let Ok(verified) = verify_token(text, &SECRETS, now) {
        // Accepted: it must be exactly a token one of our secrets mints.
        let minted: Vec<String> = SECRETS[1..]
            .iter()
            .filter_map(|s| make_token_with_exp(&verified.payload, s, verified.exp).ok())
            .collect();
        let trimmed = text.trim().trim_end_matches('=');
        assert!(
            minted.iter().any(|t| t == trimmed),
            "accepted a token no secret minted"
        );
    }
    // A token we mint from fuzzed payload text always verifies.
    if let Ok(token) = make_token_with_exp(text, "s3cr3t", 0) {
        assert!(verify_token(&token, &SECRETS, now).is_ok());
    }
});
