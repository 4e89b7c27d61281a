//! Timing harness for `bench/context_digest.sh`: selects a whole tree named
//! by `IMGFARM_BENCH_TREE` and prints entries, time and digest. Ignored in
//! normal test runs.

use imgfarm_common::context::BuildContext;
use imgfarm_common::dockerfile::ignore::IgnoreMatcher;
use std::time::Instant;

#[test]
#[ignore = "benchmark; run through bench/context_digest.sh"]
fn context_digest_of_bench_tree() {
    let Some(tree) = std::env::var_os("IMGFARM_BENCH_TREE") else {
        eprintln!("IMGFARM_BENCH_TREE not set; nothing to measure");
        return;
    };
    let start = Instant::now();
    let ctx =
        BuildContext::open(std::path::Path::new(&tree), IgnoreMatcher::empty()).expect("open tree");
    let selection = ctx.select(&[".".to_string()], &[]).expect("select tree");
    let digest = selection.digest();
    let elapsed = start.elapsed();
    println!(
        "imgfarm-context entries={} seconds={:.3} digest={}",
        selection.entry_count(),
        elapsed.as_secs_f64(),
        digest
    );
}
