//! Fuzz the Dockerfile parser: any bytes parse or fail cleanly; a parse dumps and clones.
//! The checks live in `fuzz/src/checks.rs` (replayed on stable by
//! `common/tests/fuzz_regressions.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| imgfarm_fuzz::checks::parse_dockerfile(data));
