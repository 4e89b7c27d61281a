//! Fuzz layer application: any archive applied into a fresh temp root changes nothing outside it.
//! The checks live in `fuzz/src/checks.rs` (replayed on stable by
//! `common/tests/fuzz_regressions.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| imgfarm_fuzz::checks::layer_apply(data));
