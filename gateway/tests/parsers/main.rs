//! Property tests ("fuzzing") of every parser that reads client bytes: the aws-chunked
//! decoder, SigV4 headers and presigned queries, the XML request bodies and the small
//! header grammars (Range, copy source, part numbers, conditional dates, checksums).
//!
//! Each property must hold for any input: no panic, no hang, and valid input decodes to
//! what the client meant. Case counts are bounded so the whole set runs in seconds.

mod chunked;
mod client;
mod headers;
mod sigv4;
mod xml;

use proptest::test_runner::Config;

/// A bounded proptest configuration: `cases` cases (or `PROPTEST_CASES` if set, for
/// long local runs), no regression files (regressions found are kept as named tests).
pub fn config(cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}
