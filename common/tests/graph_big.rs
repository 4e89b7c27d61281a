//! Big Dockerfiles (issue 15, finding 6): building the graph of n
//! instructions costs memory and time in proportion to n, and printing it
//! (`imgfarm debug graph`) does not build a JSON tree several times its
//! size. A counting global allocator records live and peak heap bytes.

mod graph_support;
use graph_support::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: ptr came from System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= layout.size() {
            grew(new_size - layout.size());
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        // SAFETY: ptr came from System with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The tests share the counters: run them one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Peak heap bytes above the starting point while `f` runs, and its time.
fn measure<T>(f: impl FnOnce() -> T) -> (T, usize, Duration) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let t = Instant::now();
    let out = f();
    let took = t.elapsed();
    (out, PEAK.load(Ordering::Relaxed) - base, took)
}

fn dockerfile(line: &str, n: usize) -> String {
    format!("FROM scratch\n{}", line.repeat(n))
}

/// Peak bytes and time of parsing plus graph building for n lines.
fn cost(line: &str, n: usize) -> (usize, Duration) {
    let text = dockerfile(line, n);
    let ctx = FakeContext::default();
    let ((), bytes, took) = measure(|| {
        let g = build(&text, &ctx, |_| {});
        assert!(!g.is_empty());
    });
    (bytes, took)
}

fn assert_linear(line: &str) {
    let n = 2_500;
    // Warm up (lazy statics, allocator arenas).
    cost(line, 100);
    let (b1, t1) = cost(line, n);
    let (b4, t4) = cost(line, 4 * n);
    let bytes_ratio = b4 as f64 / b1 as f64;
    assert!(
        bytes_ratio < 6.0,
        "{line:?}: {b1} bytes for {n} lines, {b4} for {} (x{bytes_ratio:.1})",
        4 * n
    );
    // Proportional to the input, with a bounded constant: well under
    // 4 KB of heap per instruction line.
    assert!(
        b4 / (4 * n) < 4096,
        "{line:?}: {} bytes per line",
        b4 / (4 * n)
    );
    // Time is reported, not asserted: on a CI machine running other tests
    // a few-millisecond run is too noisy to compare; memory shows the shape.
    eprintln!("{line:?}: {t1:?} for {n} lines, {t4:?} for {}", 4 * n);
}

#[test]
fn label_lines_cost_linear_memory_and_time() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    assert_linear("LABEL a=b\n");
}

#[test]
fn run_lines_cost_linear_memory_and_time() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    assert_linear("RUN true\n");
}

/// `json_view` prints what `to_json` describes, without a `Value` tree:
/// serialising a 10,000-RUN graph needs a small fraction of the graph's
/// own memory (the `Value` tree needed several times it).
#[test]
fn printing_a_graph_streams_it() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let small = build(
        "FROM alpine AS a\nRUN echo a\nLABEL x=y\nFROM a\nCOPY --from=a /x /y\n",
        &FakeContext::default(),
        |_| {},
    );
    assert_eq!(
        serde_json::to_value(small.json_view()).unwrap(),
        small.to_json()
    );

    let text = dockerfile("RUN true\n", 10_000);
    let ctx = FakeContext::default();
    let (g, graph_bytes, _) = measure(|| build(&text, &ctx, |_| {}));
    let ((), print_bytes, _) = measure(|| {
        serde_json::to_writer_pretty(std::io::sink(), &g.json_view()).unwrap();
    });
    assert!(
        print_bytes * 20 < graph_bytes,
        "printing took {print_bytes} bytes for a graph of {graph_bytes}"
    );
}
