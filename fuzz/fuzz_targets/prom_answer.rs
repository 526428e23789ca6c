//! Any bytes as a Prometheus `/api/v1/query` answer: samples or a typed error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pvp_ops::prom::parse_query_answer;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(samples) = parse_query_answer(s)
    {
        std::hint::black_box(samples);
    }
});
