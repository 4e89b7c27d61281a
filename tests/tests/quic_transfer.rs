//! Benchmark (ignored by default; run by bench/quic_transfer.sh in release):
//! one blob over one QUIC stream on loopback, digest-verified on receipt,
//! against a raw TCP copy of the same bytes on loopback in the same run.
//!
//! Each phase runs `IMGFARM_BENCH_ROUNDS` times (default 3), phases
//! interleaved, and the fastest round is reported with the CPU time the
//! process used during it (user + system, all threads; both ends of every
//! transfer run in this process).
//!
//! Figures printed:
//! - `tcp raw`: TCP copy into a discarding sink (the reference);
//! - `tcp+sha256`: the same with sha256 on receipt (what verification costs);
//! - `quic unverified`: one QUIC stream with the farm's TLS/transport
//!   settings, bytes counted and dropped (the transport alone);
//! - `quic verified`: the same, sha256-verified on receipt with the farm's
//!   receive code (the transport comparison of issue 6);
//! - `quic -> store`: the full upload path (`Link::put_blob` into the
//!   coordinator's content store: verify, temp file, fsync, rename).
//! - `quic path`: per QUIC run, the path MTU reached, MTU probes, black holes
//!   detected and packets lost.

mod wire_common;

use imgfarm_common::identity::{server_config, Role, TlsDir};
use imgfarm_common::oci::store::ContentStore;
use imgfarm_common::oci::Digest;
use imgfarm_common::proto::blob::{receive_blob_verified, send_blob_bytes, BLOB_CHUNK};
use imgfarm_common::proto::BlobHeader;
use imgfarm_coordinator::server::{
    bind_udp, endpoint_config, runtime, transport_config, QuicRecv, QuicSend,
};
use imgfarm_worker::link::{Link, LinkOptions, PutOutcome};
use sha2::{Digest as _, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wire_common::*;

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn mib_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64()
}

fn payload(bytes: usize) -> Vec<u8> {
    // xorshift: incompressible enough, cheap to make.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut v = Vec::with_capacity(bytes);
    while v.len() < bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(bytes);
    v
}

/// CPU seconds (user + system, all threads) this process used so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After the ")" closing the command name, utime and stime are the 12th
    // and 13th fields, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: f64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|x| x.parse::<f64>().unwrap_or(0.0))
        .sum();
    ticks / 100.0
}

/// The fastest round of one phase and the CPU seconds it used.
#[derive(Clone, Copy, Default)]
struct Best {
    wall: Option<Duration>,
    cpu: f64,
}

impl Best {
    fn record(&mut self, wall: Duration, cpu: f64) {
        if self.wall.is_none_or(|w| wall < w) {
            *self = Best {
                wall: Some(wall),
                cpu,
            };
        }
    }
}

async fn tcp_copy(data: Arc<Vec<u8>>, hash: bool) -> Duration {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let len = data.len();
    let start = Instant::now();
    let sender = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        for chunk in data.chunks(BLOB_CHUNK) {
            s.write_all(chunk).await.unwrap();
        }
        s.shutdown().await.unwrap();
    });
    let (mut r, _) = listener.accept().await.unwrap();
    let mut buf = vec![0u8; BLOB_CHUNK];
    let mut got = 0;
    let mut h = Sha256::new();
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        if hash {
            h.update(&buf[..n]);
        }
        got += n;
    }
    let _ = h.finalize();
    let elapsed = start.elapsed();
    sender.await.unwrap();
    assert_eq!(got, len);
    elapsed
}

/// One blob over one QUIC stream between two endpoints set up like the
/// farm's (coordinator transport and socket, worker dialer).
async fn quic_transfer(
    data: Arc<Vec<u8>>,
    header: &BlobHeader,
    farm: &TlsDir,
    verify: bool,
) -> Duration {
    let coord = farm.load(Role::Coordinator, None).unwrap();
    let tls = server_config(&coord).unwrap();
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(quic));
    cfg.transport_config(Arc::new(transport_config()));
    let server = quinn::Endpoint::new(
        endpoint_config(),
        Some(cfg),
        bind_udp("127.0.0.1:0".parse().unwrap()).unwrap(),
        runtime(),
    )
    .unwrap();
    let addr = server.local_addr().unwrap();
    let h2 = header.clone();
    let receiver = tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        if verify {
            receive_blob_verified(&mut QuicRecv(&mut recv), std::io::sink(), &h2)
                .await
                .unwrap();
        } else {
            let mut got = 0u64;
            while let Some(c) = recv.read_chunk(usize::MAX, true).await.unwrap() {
                got += c.bytes.len() as u64;
            }
            assert_eq!(got, h2.size);
        }
        send.write_all(b"k").await.unwrap();
        send.finish().unwrap();
        let _ = conn.closed().await;
    });
    let w1 = farm.load(Role::Worker, Some("w1")).unwrap();
    let tls = imgfarm_common::identity::client_config(&w1).unwrap();
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut ccfg = quinn::ClientConfig::new(Arc::new(quic));
    ccfg.transport_config(Arc::new(imgfarm_worker::link::transport_config()));
    let client = quinn::Endpoint::new(
        imgfarm_worker::link::endpoint_config(),
        None,
        bind_udp("127.0.0.1:0".parse().unwrap()).unwrap(),
        runtime(),
    )
    .unwrap();
    let conn = client
        .connect_with(ccfg, addr, "127.0.0.1")
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let start = Instant::now();
    send_blob_bytes(&mut &data[..], &mut QuicSend(&mut send), header)
        .await
        .unwrap();
    send.finish().unwrap();
    let mut ack = [0u8; 1];
    recv.read_exact(&mut ack).await.unwrap();
    let total = start.elapsed();
    let stats = conn.stats();
    println!(
        "quic path ({}): mtu {} bytes ({} MTU probes sent, {} lost, {} black holes), {} datagrams in {} sends, {} lost packets, cwnd {} bytes",
        if verify { "verified" } else { "unverified" },
        stats.path.current_mtu,
        stats.path.sent_plpmtud_probes,
        stats.path.lost_plpmtud_probes,
        stats.path.black_holes_detected,
        stats.udp_tx.datagrams,
        stats.udp_tx.ios,
        stats.path.lost_packets,
        stats.path.cwnd
    );
    conn.close(0u32.into(), b"done");
    receiver.await.unwrap();
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run bench/quic_transfer.sh (release)"]
async fn quic_vs_tcp_transfer() {
    let mib = env_usize("IMGFARM_BENCH_MIB", 512);
    let rounds = env_usize("IMGFARM_BENCH_ROUNDS", 3).max(1);
    let bytes = mib * 1024 * 1024;
    let data = Arc::new(payload(bytes));
    let header = BlobHeader {
        digest: Digest::sha256_of(&data),
        size: bytes as u64,
    };
    let tmp = tempfile::tempdir().unwrap();
    let farm = make_farm(&tmp.path().join("tls"));

    // Full path: BlobPut into the coordinator's content store.
    let store_dir = tmp.path().join("store");
    let mut c = start(
        farm.load(Role::Coordinator, None).unwrap(),
        &store_dir,
        imgfarm_common::proto::PROTOCOL_VERSION,
    );
    let w1 = farm.load(Role::Worker, Some("w1")).unwrap();
    let link = Link::connect(
        &format!("127.0.0.1:{}", c.addr.port()),
        &w1,
        hello(Role::Worker, "w1"),
        LinkOptions::default(),
    )
    .await
    .unwrap();
    let _ = next_event(&mut c).await;
    let store = ContentStore::open(&store_dir).unwrap();

    let (mut tcp, mut tcp_sha, mut unverified, mut verified, mut to_store) = Default::default();
    let timed = |best: &mut Best, cpu: f64, wall: Duration| best.record(wall, cpu_seconds() - cpu);
    for _ in 0..rounds {
        let cpu = cpu_seconds();
        timed(&mut tcp, cpu, tcp_copy(data.clone(), false).await);
        let cpu = cpu_seconds();
        timed(&mut tcp_sha, cpu, tcp_copy(data.clone(), true).await);
        let cpu = cpu_seconds();
        let d = quic_transfer(data.clone(), &header, &farm, false).await;
        timed(&mut unverified, cpu, d);
        let cpu = cpu_seconds();
        let d = quic_transfer(data.clone(), &header, &farm, true).await;
        timed(&mut verified, cpu, d);
        // Remove the blob so the next round uploads it again.
        let _ = std::fs::remove_file(store.blob_path(&header.digest));
        let cpu = cpu_seconds();
        let t = Instant::now();
        assert_eq!(
            link.put_blob(&header, &mut &data[..]).await.unwrap(),
            PutOutcome::Stored
        );
        timed(&mut to_store, cpu, t.elapsed());
    }
    link.close().await;

    let rate = |b: Best| mib_per_s(bytes, b.wall.unwrap_or(Duration::MAX));
    let tcp_r = rate(tcp);
    let row = |name: &str, b: Best| {
        let r = rate(b);
        println!(
            "{name:<16} {mib} MiB in {:>6.3} s = {r:>7.1} MiB/s ({:>5.1}% of tcp raw), cpu {:.2} s",
            b.wall.unwrap_or_default().as_secs_f64(),
            100.0 * r / tcp_r,
            b.cpu
        );
    };
    println!("best of {rounds} rounds per phase (phases interleaved)");
    row("tcp raw", tcp);
    row("tcp+sha256", tcp_sha);
    row("quic unverified", unverified);
    row("quic verified", verified);
    row("quic -> store", to_store);
    println!(
        "ratio quic unverified / tcp raw = {:.2}; quic verified / tcp+sha256 = {:.2}",
        rate(unverified) / tcp_r,
        rate(verified) / rate(tcp_sha)
    );
    println!(
        "ratio quic verified / tcp raw = {:.2} (target >= 0.50)",
        rate(verified) / tcp_r
    );
}
