//! Layer export benchmark driver (see `bench/layer_export.sh`).
//!
//! - `layer_export gen DIR MB`: writes a deterministic tree of mixed file
//!   sizes (many small files, some large; text-like and random data).
//! - `layer_export export SRC STORE [--level N] [--threads N] [--single]
//!   [--zstd]`: exports SRC as a layer into the content store at STORE and
//!   prints digest, diff_id, sizes, seconds and peak RSS.

use imgfarm_common::oci::layer::{self, Compression, CreateOptions};
use imgfarm_common::oci::store::ContentStore;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("gen") if args.len() == 4 => gen(Path::new(&args[2]), args[3].parse().unwrap_or(500)),
        Some("export") if args.len() >= 4 => export(&args[2], &args[3], &args[4..]),
        _ => Err("usage: layer_export gen DIR MB | export SRC STORE [--level N] [--threads N] [--single] [--zstd]".into()),
    };
    if let Err(e) = result {
        eprintln!("layer_export: {e}");
        std::process::exit(1);
    }
}

fn flag(rest: &[String], name: &str) -> Option<String> {
    rest.iter()
        .position(|a| a == name)
        .and_then(|i| rest.get(i + 1).cloned())
}

fn export(src: &str, store: &str, rest: &[String]) -> Result<(), String> {
    let store = ContentStore::open(store).map_err(|e| e.to_string())?;
    let mut opts = CreateOptions::default();
    if let Some(l) = flag(rest, "--level") {
        opts.level = Some(l.parse().map_err(|_| "bad --level")?);
    }
    if let Some(t) = flag(rest, "--threads") {
        opts.threads = t.parse().map_err(|_| "bad --threads")?;
    }
    if rest.iter().any(|a| a == "--single") {
        opts.gzip_chunk = None;
    }
    if rest.iter().any(|a| a == "--zstd") {
        opts.compression = Compression::Zstd;
    }
    opts.source_date_epoch = Some(0);
    let start = Instant::now();
    let info = layer::create(&store, Path::new(src), &opts).map_err(|e| e.to_string())?;
    let secs = start.elapsed().as_secs_f64();
    let rss_kib = peak_rss_kib();
    println!(
        "digest={} diff_id={} size={} uncompressed={} seconds={secs:.3} peak_rss_kib={rss_kib} threads={} chunked={}",
        info.digest,
        info.diff_id,
        info.size,
        info.uncompressed_size,
        opts.threads,
        opts.gzip_chunk.is_some()
    );
    Ok(())
}

fn peak_rss_kib() -> i64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .map(|u| u.max_rss())
        .unwrap_or(-1)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn random_bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(len);
        v
    }
    /// Log-like text: compresses roughly 4-6x with gzip.
    fn text(&mut self, len: usize) -> Vec<u8> {
        const WORDS: [&str; 24] = [
            "GET",
            "POST",
            "/api/v1/items",
            "200",
            "404",
            "user",
            "session",
            "cache",
            "miss",
            "hit",
            "INFO",
            "WARN",
            "ERROR",
            "latency_ms",
            "request",
            "id",
            "shard",
            "node",
            "timeout",
            "retry",
            "ok",
            "done",
            "start",
            "stop",
        ];
        let mut v = Vec::with_capacity(len + 64);
        while v.len() < len {
            write!(
                v,
                "2026-11-26T{:02}:{:02}:{:02}.{:03}Z ",
                self.below(24),
                self.below(60),
                self.below(60),
                self.below(1000)
            )
            .ok();
            for _ in 0..(4 + self.below(8)) {
                v.extend_from_slice(WORDS[self.below(WORDS.len() as u64) as usize].as_bytes());
                v.push(b' ');
            }
            writeln!(v, "{}", self.below(100_000)).ok();
        }
        v.truncate(len);
        v
    }
}

fn gen(dir: &Path, mb: u64) -> Result<(), String> {
    let budget = mb << 20;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut written = 0u64;
    let write = |rel: String, data: Vec<u8>| -> Result<(), String> {
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::write(&p, &data).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(())
    };
    // ~50%: 4 large files (2 text, 2 random).
    let large = budget / 8;
    for i in 0..4u64 {
        let data = if i % 2 == 0 {
            rng.text(large as usize)
        } else {
            rng.random_bytes(large as usize)
        };
        written += data.len() as u64;
        write(format!("large/blob{i}.bin"), data)?;
    }
    // ~25%: medium files 128 KiB - 1 MiB.
    let mut i = 0;
    while written < budget * 3 / 4 {
        let len = (128 << 10) + rng.below(896 << 10) as usize;
        let data = if rng.below(3) == 0 {
            rng.random_bytes(len)
        } else {
            rng.text(len)
        };
        written += data.len() as u64;
        write(format!("medium/d{}/m{i}.dat", i % 16), data)?;
        i += 1;
    }
    // ~25%: many small files 100 B - 16 KiB in nested dirs.
    let mut i = 0;
    while written < budget {
        let len = 100 + rng.below(16 << 10) as usize;
        let data = if rng.below(4) == 0 {
            rng.random_bytes(len)
        } else {
            rng.text(len)
        };
        written += data.len() as u64;
        write(format!("small/{}/{}/f{i}.txt", i % 64, (i / 64) % 16), data)?;
        i += 1;
    }
    println!("generated {written} bytes in {}", dir.display());
    Ok(())
}
