//! How a farm client splits the build context into chunk layers, so that a
//! changed context re-sends only the chunks around what changed (the
//! coordinator and workers skip every blob they hold by digest).
//!
//! The input is the context's entries in the order the selection lists
//! them (depth-first, byte order of names) with a weight each: the bytes
//! the entry takes in a tar stream. Boundaries are content-defined, over
//! paths rather than bytes: a chunk ends after an entry once it holds at
//! least `min` bytes and the entry's path hash falls under a threshold
//! proportional to the entry's weight (so a chunk grows about `avg` bytes
//! past `min`, whatever the file sizes), or before an entry that would take
//! it past `max`. Changing, adding or removing one entry
//! therefore changes its own chunk and at most the boundary after it; the
//! chunks further on are cut at the same paths and keep their bytes.
//!
//! The sizes scale with the whole context ([`ChunkParams::for_total`]), in
//! powers of two, so the chunk count stays in the low thousands (and under
//! [`MAX_CONTEXT_CHUNKS`] with a wide margin) from a few files up to
//! terabytes. A context that grows or shrinks across one of those sizes is
//! re-chunked, and sent again, once.

use sha2::{Digest as _, Sha256};
use std::ops::Range;

/// Most chunks a context may have (checked by
/// [`super::ContextBlob::validate`]); [`ChunkParams::for_total`] keeps real
/// contexts far below it.
pub const MAX_CONTEXT_CHUNKS: usize = 100_000;

/// Smallest chunk at the finest level (uncompressed tar bytes).
const BASE_MIN: u64 = 8 << 10;
/// Mean growth past `min` at the finest level. With 8 + 16 KiB, one edit
/// in a 20,000-file context of 20 MB of tar re-sends 0.16 % of it on
/// average and under 0.7 % at worst (1,500 simulated edits, inserts and
/// removals; the test in the client's `pack` module checks real chunks).
const BASE_AVG: u64 = 16 << 10;
/// Largest chunk at the finest level, unless one entry alone is larger.
const BASE_MAX: u64 = 1 << 20;
/// Chunks expected at most before the sizes double.
const TARGET_CHUNKS: u64 = 4096;

/// Tar block size.
const BLOCK: u64 = 512;

/// Chunk sizes, in uncompressed tar bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkParams {
    /// A chunk holds at least this much before it may end (the last one
    /// excepted).
    pub min: u64,
    /// Mean growth past `min` before a content-defined boundary.
    pub avg: u64,
    /// A chunk never grows past this, unless a single entry is larger.
    pub max: u64,
}

impl ChunkParams {
    /// The sizes for a context of `total` tar bytes: the finest level
    /// (8 KiB minimum, 16 KiB mean growth, 1 MiB maximum) doubled until
    /// about [`TARGET_CHUNKS`] chunks are expected. A chunk under `min` is
    /// the last one or is followed by one over `max` (≥ 2 × `min`), so a
    /// context has at most `total / min + 1` chunks (fewer than
    /// 3 × [`TARGET_CHUNKS`]).
    pub fn for_total(total: u64) -> Self {
        let mut level = 0u32;
        while level < 40 && total / ((BASE_MIN + BASE_AVG) << level) > TARGET_CHUNKS {
            level += 1;
        }
        Self {
            min: BASE_MIN << level,
            avg: BASE_AVG << level,
            max: BASE_MAX << level,
        }
    }
}

/// The bytes an entry takes in a tar stream: a header block, the content
/// rounded up to whole blocks, and a GNU long-name record for a path
/// longer than the header's 100 bytes (or a link target, for long links).
pub fn tar_weight(path: &str, link_target: Option<&str>, content: u64) -> u64 {
    let blocks = |n: u64| n.div_ceil(BLOCK) * BLOCK;
    let long = |s: &str| {
        if s.len() >= 100 {
            BLOCK + blocks(s.len() as u64 + 1)
        } else {
            0
        }
    };
    BLOCK + blocks(content) + long(path) + link_target.map_or(0, long)
}

/// Is `path` (weighing `weight`) a content-defined boundary, `grown` bytes
/// past the chunk's minimum? Decided by its path alone, with probability
/// `weight / (2 × avg)` until the chunk has grown `avg`, then
/// `2 × weight / avg` (capped at 1): FastCDC's normalisation, which keeps
/// the mean near `avg` but makes long chunks much rarer than a single
/// threshold would.
fn is_boundary(path: &str, weight: u64, avg: u64, grown: u64) -> bool {
    let (num, den) = if grown < avg { (1u128, 2u128) } else { (2, 1) };
    let (num, den) = (u128::from(weight) * num, u128::from(avg.max(1)) * den);
    if num >= den {
        return true;
    }
    let h = Sha256::digest(path.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&h[..8]);
    let h = u128::from(u64::from_be_bytes(first));
    // h / 2^64 < num / den, in integers (num < den < 2^57: no overflow).
    h * den < num << 64
}

/// Splits `items` (path and tar weight, in stream order) into consecutive
/// chunks; the ranges cover every item, in order. No items, no chunks.
pub fn split(items: &[(&str, u64)], params: ChunkParams) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0u64;
    for (i, (path, weight)) in items.iter().enumerate() {
        if bytes > 0 && bytes.saturating_add(*weight) > params.max {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes = bytes.saturating_add(*weight);
        if bytes >= params.min && is_boundary(path, *weight, params.avg, bytes - params.min) {
            out.push(start..i + 1);
            start = i + 1;
            bytes = 0;
        }
    }
    if start < items.len() {
        out.push(start..items.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 20,000 small files in 200 directories, as the realworld bench's
    /// context (about 20 MB of tar): (path, weight).
    fn tree(n_dirs: usize, per_dir: usize) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for d in 0..n_dirs {
            out.push((format!("files/d{d:03}"), BLOCK));
            for f in 0..per_dir {
                let size = 12 * (1 + (f % 7) as u64);
                out.push((
                    format!("files/d{d:03}/f{f:03}.txt"),
                    tar_weight("", None, size),
                ));
            }
        }
        out
    }

    /// Each chunk's items (a stand-in for its bytes).
    fn chunk_items(items: &[(String, u64)]) -> Vec<Vec<(String, u64)>> {
        let refs: Vec<(&str, u64)> = items.iter().map(|(p, w)| (p.as_str(), *w)).collect();
        let total = items.iter().map(|(_, w)| w).sum();
        split(&refs, ChunkParams::for_total(total))
            .into_iter()
            .map(|r| items[r].to_vec())
            .collect()
    }

    /// Chunks of `after` not found (same items) among those of `before`.
    fn new_chunks<T: PartialEq>(before: &[T], after: &[T]) -> usize {
        after.iter().filter(|c| !before.contains(c)).count()
    }

    #[test]
    fn chunks_cover_everything_in_order_within_the_bounds() {
        let items = tree(200, 100);
        let refs: Vec<(&str, u64)> = items.iter().map(|(p, w)| (p.as_str(), *w)).collect();
        let total: u64 = items.iter().map(|(_, w)| w).sum();
        let p = ChunkParams::for_total(total);
        assert_eq!(
            p,
            ChunkParams::for_total(0),
            "a 20 MB tar is the finest level"
        );
        let chunks = split(&refs, p);
        assert_eq!(chunks.first().unwrap().start, 0);
        assert_eq!(chunks.last().unwrap().end, items.len());
        for w in chunks.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        for c in &chunks[..chunks.len() - 1] {
            let bytes: u64 = items[c.clone()].iter().map(|(_, w)| w).sum();
            assert!(bytes >= p.min && bytes <= p.max, "{c:?}: {bytes}");
        }
        assert!(chunks.len() as u64 <= total / p.min + 1);
        // Normalised boundaries: no chunk runs far past the mean.
        let largest = chunks
            .iter()
            .map(|c| items[c.clone()].iter().map(|(_, w)| w).sum::<u64>())
            .max()
            .unwrap();
        assert!(largest < p.min + 8 * p.avg, "{largest}");
        // About min + avg (24 KiB of tar) each: some 800 chunks.
        assert!((500..1200).contains(&chunks.len()), "{}", chunks.len());
        assert_eq!(split(&refs, p), chunks, "deterministic");
        assert!(split(&[], p).is_empty());
    }

    #[test]
    fn one_change_touches_at_most_two_chunks() {
        let items = tree(200, 100);
        let before = chunk_items(&items);
        // A file grows by a block (content edit), one is added, one removed.
        let mut grown = items.clone();
        grown[5000].1 += 4 * BLOCK;
        let mut added = items.clone();
        added.insert(12_345, ("files/d122/f045a.txt".into(), 2 * BLOCK));
        let mut removed = items.clone();
        removed.remove(777);
        for (what, after) in [("grown", grown), ("added", added), ("removed", removed)] {
            let after = chunk_items(&after);
            let n = new_chunks(&before, &after);
            assert!((1..=2).contains(&n), "{what}: {n} new chunks");
        }
    }

    #[test]
    fn big_entries_end_chunks_and_sizes_scale_with_the_context() {
        // Files as large as the mean each close a chunk (past the minimum).
        let items: Vec<(String, u64)> = (0..100)
            .map(|i| (format!("big{i:03}"), BASE_MIN + BASE_AVG))
            .collect();
        assert_eq!(chunk_items(&items).len(), 100);
        // One entry over the maximum is a chunk of its own.
        let refs = [("a", 10), ("huge", BASE_MAX * 3), ("b", 10)];
        let chunks = split(&refs, ChunkParams::for_total(0));
        assert_eq!(chunks, vec![0..1, 1..2, 2..3]);

        let tb = ChunkParams::for_total(1 << 40);
        assert!(tb.min > BASE_MIN);
        assert!((1u64 << 40) / tb.min + 1 < (3 * TARGET_CHUNKS) + 1);
        assert!(3 * TARGET_CHUNKS < MAX_CONTEXT_CHUNKS as u64);
        assert_eq!(tar_weight("a", None, 0), 512);
        assert_eq!(tar_weight("a", None, 513), 1536);
        assert_eq!(tar_weight(&"x".repeat(120), None, 1), 512 + 512 + 512 + 512);
    }
}
