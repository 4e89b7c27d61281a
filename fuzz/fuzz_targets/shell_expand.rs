//! Fuzz the shell word expander (BuildKit shell.Lex) under every option combination.
//! The checks live in `fuzz/src/checks.rs` (replayed on stable by
//! `common/tests/fuzz_regressions.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| imgfarm_fuzz::checks::shell_expand(data));
