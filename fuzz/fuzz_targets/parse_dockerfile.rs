//! Fuzz the Dockerfile parser: any bytes must parse or fail cleanly, and a
//! successful parse must dump and clone without panicking.
#![no_main]

use imgfarm_common::dockerfile::{dump::dump, parser::parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(result) = parse(data) {
        let text = dump(&result.ast);
        assert_eq!(text.lines().count(), result.ast.children.len());
        let copy = result.ast.clone();
        assert_eq!(copy, result.ast);
    }
});
