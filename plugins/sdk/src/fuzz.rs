//! A mutation fuzzer that runs on the stable toolchain, for the SDK's
//! parsers and the first-party converters (natively).
//!
//! libFuzzer (`fuzz/`, cargo-fuzz) needs nightly, which this project's
//! machines do not have; this runs in `cargo test`. It has no coverage
//! feedback: it starts from real inputs (the corpora) and applies stacked
//! byte-level and token-level mutations (bit flips, interesting bytes, JSON
//! and form-encoding tokens, deletions, duplications, truncations, splices of
//! two seeds), sometimes continuing from the last mutant so that damage
//! accumulates. A panic stops the run, the input is written to
//! `target/fuzz-crashes/` and the test fails naming it, so it can become a
//! regression test.
//!
//! [`budget`] reads `HERMES_FUZZ_SECS` (default 2 s per target in a plain
//! `cargo test`; `scripts/test` sets a longer smoke run; a recorded run uses
//! 600). `HERMES_FUZZ_SEED` replays a run; the seed is printed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Tokens that tend to reach parser corners: escapes, surrogates, huge and
/// odd numbers, deep nesting, percent-encoding edges, form separators.
const DICTIONARY: &[&[u8]] = &[
    b"\\u0000",
    b"\\ud800",
    b"\\udc00\\ud800",
    b"\\\"",
    b"\\",
    b"1e999",
    b"-0",
    b"0.0000000000000000000001",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    b"{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":",
    b"null",
    b"true",
    b"\"\"",
    b"{}",
    b"[]",
    b"%",
    b"%z",
    b"%zz",
    b"%00",
    b"%C3%28",
    b"%F0%9F%98%80",
    b"&&",
    b"==",
    b"+",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\"type\":",
    b"\"options\":",
    b"\"data\":",
    b"\"value\":",
    b"\"name\":",
    b"Body=",
    b"From=",
    b"text=",
    b"command=",
    b"payload=",
];

/// Bytes worth writing over another.
const INTERESTING: &[u8] = &[
    0, 0x7f, 0x80, 0xff, b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b'%', b'&', b'=', b'+',
    b' ', b'\n', b'-', b'0', b'9', b'e',
];

/// Largest input the fuzzer builds (a body over the host's cap never
/// reaches a converter).
const MAX_INPUT: usize = 64 * 1024;

/// xorshift64*: small, fast, replayable from its seed (also drives the
/// end-to-end chaos soak's choices).
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (a zero seed is made odd: xorshift stays at 0).
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next_u64() % (n.max(1) as u64)).unwrap_or(0)
    }
}

/// How long each fuzz target runs: `HERMES_FUZZ_SECS`, else 2 s.
pub fn budget() -> Duration {
    let secs = std::env::var("HERMES_FUZZ_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(2.0);
    Duration::from_secs_f64(secs)
}

fn seed() -> u64 {
    std::env::var("HERMES_FUZZ_SEED")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
        | 1
}

/// What one run did.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    /// Inputs fed to the target.
    pub iterations: u64,
    /// Wall time spent.
    pub elapsed: Duration,
    /// The seed (replay with `HERMES_FUZZ_SEED`).
    pub seed: u64,
}

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    for _ in 0..=rng.below(4) {
        let len = input.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                if let Some(b) = input.get_mut(i) {
                    *b ^= 1 << rng.below(8);
                }
            }
            1 if len > 0 => {
                let i = rng.below(len);
                let v = INTERESTING[rng.below(INTERESTING.len())];
                if let Some(b) = input.get_mut(i) {
                    *b = v;
                }
            }
            2 => {
                let token = DICTIONARY[rng.below(DICTIONARY.len())];
                let at = rng.below(len + 1);
                input.splice(at..at, token.iter().copied());
            }
            3 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(16)).min(len);
                input.drain(start..end);
            }
            4 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(64)).min(len);
                let copy: Vec<u8> = input.get(start..end).unwrap_or_default().to_vec();
                let at = rng.below(len + 1);
                input.splice(at..at, copy);
            }
            5 if len > 0 => input.truncate(rng.below(len)),
            6 if !seeds.is_empty() => {
                let other = &seeds[rng.below(seeds.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                input.truncate(cut);
                input.extend_from_slice(other.get(from..).unwrap_or_default());
            }
            7 if len > 0 => {
                // Repeat a byte many times (deep nesting, long runs).
                let i = rng.below(len);
                let b = input.get(i).copied().unwrap_or(b'[');
                let n = 1 + rng.below(512);
                input.splice(i..i, std::iter::repeat_n(b, n));
            }
            _ => {
                let at = rng.below(len + 1);
                input.insert(at, (rng.next_u64() & 0xff) as u8);
            }
        }
    }
    input.truncate(MAX_INPUT);
}

/// Feeds `target` mutants of `seeds` for `budget`; panics (after saving the
/// input under `target/fuzz-crashes/NAME-*.bin`) if `target` panics.
pub fn run(
    name: &str,
    seeds: &[Vec<u8>],
    budget: Duration,
    mut target: impl FnMut(&[u8]),
) -> Report {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let mut iterations = 0u64;
    let mut current = seeds.first().cloned().unwrap_or_default();
    // Every seed once as it is, then mutants until the budget runs out.
    let mut pending: Vec<Vec<u8>> = seeds.to_vec();
    loop {
        let input = match pending.pop() {
            Some(seed_input) => seed_input,
            None => {
                if started.elapsed() >= budget {
                    break;
                }
                if seeds.is_empty() || rng.below(2) == 0 {
                    mutate(&mut rng, &mut current, seeds);
                } else {
                    current = seeds[rng.below(seeds.len())].clone();
                    mutate(&mut rng, &mut current, seeds);
                }
                current.clone()
            }
        };
        iterations += 1;
        if catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
            let path = save_crash(name, &input);
            panic!(
                "fuzz target {name} panicked on input {} (seed {seed}, iteration {iterations}); turn it into a regression test",
                path.display()
            );
        }
    }
    let report = Report {
        iterations,
        elapsed: started.elapsed(),
        seed,
    };
    println!(
        "fuzz {name}: {} inputs in {:.1}s, no panic (HERMES_FUZZ_SEED={seed})",
        report.iterations,
        report.elapsed.as_secs_f64()
    );
    report
}

fn save_crash(name: &str, input: &[u8]) -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(
            || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target")),
            PathBuf::from,
        )
        .join("fuzz-crashes");
    let _ = std::fs::create_dir_all(&dir);
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    });
    let path = dir.join(format!("{name}-{hash:016x}.bin"));
    let _ = std::fs::write(&path, input);
    std::fs::canonicalize(&path).unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SDK's JSON parser never panics. (It is not compared with
    /// serde_json: that one refuses numbers out of f64 range, which JSON's
    /// grammar allows and the SDK keeps as literals.)
    #[test]
    fn fuzz_json_parser() {
        let seeds: Vec<Vec<u8>> = [
            &br#"{"type":2,"data":{"name":"ask","options":[{"name":"q","type":3,"value":"hi \u00e9 \ud83d\ude00"}]},"n":-1.5e3}"#[..],
            br#"[1,"a",null,true,false,{"x":[]},0.5]"#,
            br#""\n\t\\\"""#,
        ]
        .iter()
        .map(|s| s.to_vec())
        .collect();
        run("sdk-json", &seeds, budget(), |bytes| {
            let text = String::from_utf8_lossy(bytes);
            if let Ok(value) = crate::json::parse(&text) {
                let _ = value.type_name();
            }
            let _ = crate::json::parse_to_serde(&text);
        });
    }

    #[test]
    fn fuzz_form_parser() {
        let seeds: Vec<Vec<u8>> = [
            &b"Body=Hello+there%21&From=%2B14155550123&To=%2B14155550199&NumMedia=0"[..],
            b"command=%2Fask&text=what+is+%C3%A9&user_id=U1&team_id=T1",
            b"payload=%7B%22type%22%3A%22block_actions%22%7D",
        ]
        .iter()
        .map(|s| s.to_vec())
        .collect();
        run("sdk-form", &seeds, budget(), |bytes| {
            if let Ok(form) = crate::form::parse(bytes) {
                for (k, v) in form.iter() {
                    let _ = (k.len(), v.len());
                }
            }
        });
    }

    #[test]
    fn a_crash_is_saved_and_reported() {
        let seeds = vec![b"abc".to_vec()];
        let result = catch_unwind(|| {
            run("self-test", &seeds, Duration::ZERO, |bytes| {
                assert_ne!(bytes, b"abc", "boom");
            })
        });
        let message = result
            .err()
            .and_then(|e| e.downcast::<String>().ok())
            .map(|s| *s)
            .unwrap_or_default();
        assert!(
            message.contains("fuzz target self-test panicked"),
            "{message}"
        );
        let path = message
            .split_once("on input ")
            .and_then(|(_, rest)| rest.split(" (seed").next())
            .map(PathBuf::from)
            .unwrap_or_default();
        assert_eq!(std::fs::read(&path).ok(), Some(b"abc".to_vec()));
        let _ = std::fs::remove_file(path);
    }
}
