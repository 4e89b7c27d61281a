//! Benchmark (ignored by default; run by bench/quic_transfer.sh in release):
//! one blob over one QUIC stream on loopback, digest-verified on receipt,
//! against a raw TCP copy of the same bytes on loopback in the same run.
//!
//! Figures printed:
//! - `tcp raw`: TCP copy into a discarding sink (the reference);
//! - `tcp+sha256`: the same with sha256 on receipt (what verification costs);
//! - `quic verified`: one QUIC stream with the farm's TLS/transport settings,
//!   sha256-verified on receipt (the transport comparison);
//! - `quic -> store`: the full upload path (BlobPut into the coordinator's
//!   content store: verify, temp file, fsync, rename).

mod wire_common;

use imgfarm_common::identity::{server_config, Role};
use imgfarm_common::oci::Digest;
use imgfarm_common::proto::blob::{receive_blob_verified, send_blob_bytes, BLOB_CHUNK};
use imgfarm_common::proto::BlobHeader;
use imgfarm_coordinator::server::{endpoint_config, transport_config};
use imgfarm_worker::link::{Link, LinkOptions, PutOutcome};
use sha2::{Digest as _, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wire_common::*;

/// A loopback UDP socket with the same buffer sizes the endpoints request.
fn udp() -> std::net::UdpSocket {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let r = socket2::SockRef::from(&s);
    let size = env_u64("QP_BUF").map_or(imgfarm_common::proto::windows::SOCKET_BUFFER, |b| {
        b as usize
    });
    r.set_recv_buffer_size(size).unwrap();
    r.set_send_buffer_size(size).unwrap();
    s
}

fn env_u64(k: &str) -> Option<u64> {
    std::env::var(k).ok().and_then(|v| v.parse().ok())
}

/// EXPERIMENT: env overrides of the transport settings.
fn tweak(mut t: quinn::TransportConfig) -> quinn::TransportConfig {
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(imgfarm_common::proto::windows::MAX_UDP_PAYLOAD);
    if let Some(ms) = env_u64("QP_COOLDOWN_MS") {
        mtu.black_hole_cooldown(Duration::from_millis(ms));
    }
    t.mtu_discovery_config(Some(mtu));
    if let Some(w) = env_u64("QP_STREAM_WIN") {
        t.stream_receive_window(quinn::VarInt::from_u64(w).unwrap());
    }
    if let Some(w) = env_u64("QP_CONN_WIN") {
        t.receive_window(quinn::VarInt::from_u64(w).unwrap());
        t.send_window(w);
    }
    if let Some(m) = env_u64("QP_MIN_MTU") {
        t.min_mtu(m as u16);
    }
    if env_u64("QP_BBR") == Some(1) {
        t.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
    }
    t
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

async fn quic_verified(data: Arc<Vec<u8>>, farm: &imgfarm_common::identity::TlsDir) -> Duration {
    let coord = farm.load(Role::Coordinator, None).unwrap();
    let tls = server_config(&coord).unwrap();
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(quic));
    cfg.transport_config(Arc::new(tweak(transport_config())));
    let server = quinn::Endpoint::new(
        endpoint_config(),
        Some(cfg),
        udp(),
        imgfarm_coordinator::server::runtime(),
    )
    .unwrap();
    let addr = server.local_addr().unwrap();
    let header = BlobHeader {
        digest: Digest::sha256_of(&data),
        size: data.len() as u64,
    };
    let h2 = header.clone();
    let receiver = tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        let start = Instant::now();
        receive_blob_verified(&mut recv, std::io::sink(), &h2)
            .await
            .unwrap();
        let took = start.elapsed();
        send.write_all(b"k").await.unwrap();
        send.finish().unwrap();
        let _ = conn.closed().await;
        took
    });
    let w1 = farm.load(Role::Worker, Some("w1")).unwrap();
    let tls = imgfarm_common::identity::client_config(&w1).unwrap();
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut ccfg = quinn::ClientConfig::new(Arc::new(quic));
    ccfg.transport_config(Arc::new(tweak(imgfarm_worker::link::transport_config())));
    let client = quinn::Endpoint::new(
        imgfarm_worker::link::endpoint_config(),
        None,
        udp(),
        imgfarm_coordinator::server::runtime(),
    )
    .unwrap();
    let conn = client
        .connect_with(ccfg, addr, "127.0.0.1")
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let watched = conn.clone();
    let t0 = Instant::now();
    let sampler = tokio::spawn(async move {
        let mut seen = Vec::new();
        loop {
            let p = watched.stats().path;
            if seen.last().map(|(m, _, _)| *m) != Some(p.current_mtu) {
                seen.push((
                    p.current_mtu,
                    p.black_holes_detected,
                    t0.elapsed().as_millis(),
                ));
            }
            if watched.close_reason().is_some() {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let start = Instant::now();
    send_blob_bytes(&mut &data[..], &mut send, &header)
        .await
        .unwrap();
    send.finish().unwrap();
    let mut ack = [0u8; 1];
    recv.read_exact(&mut ack).await.unwrap();
    let total = start.elapsed();
    let stats = conn.stats();
    println!(
        "quic path: mtu {} bytes ({} MTU probes sent, {} lost, {} black holes), {} datagrams sent in {} ios, {} lost packets, cwnd {} bytes",
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
    println!(
        "quic path: mtu over time (mtu, black holes) {:?}",
        sampler.await.unwrap()
    );
    let _ = receiver.await.unwrap();
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run bench/quic_transfer.sh (release)"]
async fn quic_vs_tcp_transfer() {
    let mib: usize = std::env::var("IMGFARM_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let bytes = mib * 1024 * 1024;
    let data = Arc::new(payload(bytes));
    let tmp = tempfile::tempdir().unwrap();
    let farm = make_farm(&tmp.path().join("tls"));

    let tcp = tcp_copy(data.clone(), false).await;
    let tcp_sha = tcp_copy(data.clone(), true).await;
    let quic = quic_verified(data.clone(), &farm).await;

    // Full path: BlobPut into the coordinator's content store.
    let mut c = start(
        farm.load(Role::Coordinator, None).unwrap(),
        &tmp.path().join("store"),
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
    let header = BlobHeader {
        digest: Digest::sha256_of(&data),
        size: bytes as u64,
    };
    let t = Instant::now();
    assert_eq!(
        link.put_blob(&header, &mut &data[..]).await.unwrap(),
        PutOutcome::Stored
    );
    let store_path = t.elapsed();
    link.close().await;

    let tcp_r = mib_per_s(bytes, tcp);
    let row = |name: &str, d: Duration| {
        let r = mib_per_s(bytes, d);
        println!(
            "{name:<16} {mib} MiB in {:>7.3} s = {r:>8.1} MiB/s  ({:>5.1}% of tcp raw)",
            d.as_secs_f64(),
            100.0 * r / tcp_r
        );
    };
    row("tcp raw", tcp);
    row("tcp+sha256", tcp_sha);
    row("quic verified", quic);
    row("quic -> store", store_path);
    println!(
        "ratio quic verified / tcp raw = {:.2} (target >= 0.50)",
        mib_per_s(bytes, quic) / tcp_r
    );
}
