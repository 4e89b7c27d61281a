//! Fuzz the manifest, index and config JSON parsers used on registry answers.
//! The checks live in `fuzz/src/checks.rs` (replayed on stable by
//! `common/tests/fuzz_regressions.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| imgfarm_fuzz::checks::image_json(data));
