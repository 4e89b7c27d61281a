//! Fuzz the wire frame decoder: frames or a clean error, and decoded messages round-trip.
//! The checks live in `fuzz/src/checks.rs` (replayed on stable by
//! `common/tests/fuzz_regressions.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| imgfarm_fuzz::checks::decode_frame(data));
