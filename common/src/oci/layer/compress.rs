//! The compression stage of layer creation: a hashing counter (for the
//! `diff_id`), and gzip (single stream or parallel members) or zstd.
//!
//! Parallel gzip cuts the uncompressed tar into fixed-size chunks and
//! compresses each as its own gzip member (RFC 1952 §2.2: "a gzip file
//! consists of a series of members"); members are written in order. The
//! output depends only on the chunk size and level, never on the number of
//! threads, so digests stay reproducible across machines.

use super::Compression;
use crate::oci::Digest;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Passes bytes through while hashing and counting them.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    pub(crate) fn finish(self) -> (W, Digest, u64) {
        (self.inner, Digest::from_sha256(self.hasher), self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Whether a chunk's byte histogram is flat enough that deflate cannot
/// gain (already-compressed or random data): the sum of squared byte counts
/// is within 2% of a uniform distribution's. Integer-only, so every machine
/// decides alike and digests stay reproducible.
fn looks_incompressible(data: &[u8]) -> bool {
    if data.len() < 64 * 1024 {
        return false;
    }
    let mut hist = [0u64; 256];
    for &b in data {
        hist[b as usize] += 1;
    }
    let n = data.len() as u128;
    let sum_sq: u128 = hist.iter().map(|&c| u128::from(c) * u128::from(c)).sum();
    // uniform: sum_sq ~= n^2 / 256
    sum_sq * 256 * 100 <= n * n * 102
}

/// gzip one member with a fixed header (mtime 0, OS 255 "unknown", no
/// name), so equal input gives equal bytes. Incompressible chunks are
/// stored (deflate level 0) instead of spending CPU for no gain.
fn gzip_member(data: &[u8], level: u32) -> io::Result<Vec<u8>> {
    let level = if looks_incompressible(data) { 0 } else { level };
    let out = Vec::with_capacity(data.len() / 3 + 64);
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(out, flate2::Compression::new(level));
    enc.write_all(data)?;
    enc.finish()
}

/// A compressing writer of the chosen kind.
pub(crate) enum Compressor<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    ParallelGzip(Box<ParallelGzip<W>>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

/// Compression settings resolved from the create options.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub kind: Compression,
    pub level: Option<u32>,
    pub gzip_chunk: Option<usize>,
    pub threads: usize,
}

impl<W: Write> Compressor<W> {
    pub(crate) fn new(inner: W, s: Settings) -> io::Result<Self> {
        Ok(match s.kind {
            Compression::None => Self::Plain(inner),
            Compression::Gzip => {
                let level = s.level.unwrap_or(6).min(9);
                match s.gzip_chunk {
                    Some(chunk) => Self::ParallelGzip(Box::new(ParallelGzip::new(
                        inner,
                        level,
                        chunk.max(64 * 1024),
                        s.threads.max(1),
                    ))),
                    None => Self::Gzip(
                        flate2::GzBuilder::new()
                            .mtime(0)
                            .operating_system(255)
                            .write(inner, flate2::Compression::new(level)),
                    ),
                }
            }
            Compression::Zstd => {
                let level = s.level.map(|l| l.min(19) as i32).unwrap_or(3);
                let mut enc = zstd::stream::write::Encoder::new(inner, level)?;
                enc.include_checksum(true)?;
                Self::Zstd(enc)
            }
        })
    }

    pub(crate) fn finish(self) -> io::Result<W> {
        match self {
            Self::Plain(mut w) => {
                w.flush()?;
                Ok(w)
            }
            Self::Gzip(e) => e.finish(),
            Self::ParallelGzip(p) => p.finish(),
            Self::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(w) => w.write(buf),
            Self::Gzip(w) => w.write(buf),
            Self::ParallelGzip(w) => w.write(buf),
            Self::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(w) => w.flush(),
            Self::Gzip(w) => w.flush(),
            Self::ParallelGzip(_) => Ok(()),
            Self::Zstd(w) => w.flush(),
        }
    }
}

type Job = (u64, Vec<u8>);
type Done = (u64, io::Result<Vec<u8>>);

/// gzip with one member per `chunk` bytes, compressed on `threads` worker
/// threads; at most `2 * threads` chunks are in memory at once.
pub(crate) struct ParallelGzip<W: Write> {
    inner: W,
    level: u32,
    chunk: usize,
    buf: Vec<u8>,
    submitted: u64,
    written: u64,
    jobs: Option<SyncSender<Job>>,
    results: Receiver<Done>,
    ready: BTreeMap<u64, Vec<u8>>,
    workers: Vec<JoinHandle<()>>,
    max_in_flight: u64,
}

impl<W: Write> ParallelGzip<W> {
    fn new(inner: W, level: u32, chunk: usize, threads: usize) -> Self {
        let (results_tx, results) = mpsc::channel::<Done>();
        let (jobs, workers) = if threads > 1 {
            let (jobs_tx, jobs_rx) = mpsc::sync_channel::<Job>(threads);
            let jobs_rx = Arc::new(Mutex::new(jobs_rx));
            let workers = (0..threads)
                .map(|_| spawn_worker(Arc::clone(&jobs_rx), results_tx.clone(), level))
                .collect();
            (Some(jobs_tx), workers)
        } else {
            (None, Vec::new())
        };
        Self {
            inner,
            level,
            chunk,
            buf: Vec::with_capacity(chunk),
            submitted: 0,
            written: 0,
            jobs,
            results,
            ready: BTreeMap::new(),
            workers,
            max_in_flight: 2 * threads as u64,
        }
    }

    fn submit(&mut self) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(self.chunk));
        let seq = self.submitted;
        self.submitted += 1;
        let Some(jobs) = self.jobs.as_ref() else {
            let member = gzip_member(&data, self.level)?;
            self.written += 1;
            return self.inner.write_all(&member);
        };
        jobs.send((seq, data))
            .map_err(|_| io::Error::other("gzip worker threads exited"))?;
        while self.submitted - self.written >= self.max_in_flight {
            self.receive_one()?;
        }
        Ok(())
    }

    fn receive_one(&mut self) -> io::Result<()> {
        let (seq, member) = self
            .results
            .recv()
            .map_err(|_| io::Error::other("gzip worker threads exited"))?;
        self.ready.insert(seq, member?);
        while let Some(member) = self.ready.remove(&self.written) {
            self.inner.write_all(&member)?;
            self.written += 1;
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<W> {
        if !self.buf.is_empty() || self.submitted == 0 {
            self.submit()?;
        }
        self.jobs = None;
        while self.written < self.submitted {
            self.receive_one()?;
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        self.inner.flush()?;
        // `Drop` is trivial now; move the writer out.
        let Self { inner, .. } = self;
        Ok(inner)
    }
}

fn spawn_worker(
    jobs: Arc<Mutex<Receiver<Job>>>,
    results: Sender<Done>,
    level: u32,
) -> JoinHandle<()> {
    std::thread::spawn(move || loop {
        let job = {
            let rx = jobs.lock().unwrap_or_else(|p| p.into_inner());
            rx.recv()
        };
        let Ok((seq, data)) = job else { return };
        if results.send((seq, gzip_member(&data, level))).is_err() {
            return;
        }
    })
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let total = buf.len();
        while !buf.is_empty() {
            let room = self.chunk - self.buf.len();
            let take = room.min(buf.len());
            self.buf.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            if self.buf.len() == self.chunk {
                self.submit()?;
            }
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn parallel(data: &[u8], threads: usize) -> Vec<u8> {
        let mut p = ParallelGzip::new(Vec::new(), 6, 64 * 1024, threads);
        for c in data.chunks(10_000) {
            p.write_all(c).unwrap();
        }
        p.finish().unwrap()
    }

    #[test]
    fn incompressible_detection() {
        let mut x: u64 = 88172645463325252;
        let random: Vec<u8> = (0..1 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        assert!(looks_incompressible(&random));
        let text = b"the quick brown fox jumps over the lazy dog\n".repeat(30_000);
        assert!(!looks_incompressible(&text));
        assert!(!looks_incompressible(&random[..1000]));
        let stored = gzip_member(&random, 6).unwrap();
        assert!(stored.len() < random.len() + 200);
    }

    #[test]
    fn parallel_gzip_is_valid_and_thread_count_independent() {
        let data: Vec<u8> = (0..500_000u32)
            .map(|i| (i % 251) as u8 ^ (i / 997) as u8)
            .collect();
        let one = parallel(&data, 1);
        let three = parallel(&data, 3);
        assert_eq!(one, three);
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&three[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        // Empty input still gives a valid (empty) gzip stream.
        let empty = parallel(&[], 2);
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&empty[..])
            .read_to_end(&mut back)
            .unwrap();
        assert!(back.is_empty());
    }
}
