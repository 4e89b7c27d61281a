//! Real QUIC on 127.0.0.1: mutual TLS against the farm CA, role checks,
//! version handshake, frame limit, verified blob transfer.

mod wire_common;

use imgfarm_common::identity::{Credentials, Role};
use imgfarm_common::oci::store::ContentStore;
use imgfarm_common::oci::Digest;
use imgfarm_common::proto::io::{read_preamble, write_preamble, WireError};
use imgfarm_common::proto::{
    close_code, BlobHeader, CodecError, HandshakeError, Message, PROTOCOL_VERSION,
};
use imgfarm_coordinator::server::ServerError;
use imgfarm_worker::link::{
    connect_with_backoff, Backoff, Link, LinkError, LinkOptions, PutOutcome,
};
use std::path::Path;
use std::time::{Duration, Instant};
use wire_common::*;

fn url(c: &Coord) -> String {
    format!("quic://127.0.0.1:{}", c.addr.port())
}

#[tokio::test]
async fn worker_and_client_handshake_ok() {
    let tmp = tempfile::tempdir().unwrap();
    let farm = make_farm(&tmp.path().join("tls"));
    let mut c = start(
        farm.load(Role::Coordinator, None).unwrap(),
        &tmp.path().join("store"),
        PROTOCOL_VERSION,
    );
    let w1 = farm.load(Role::Worker, Some("w1")).unwrap();
    let mut link = Link::connect(
        &url(&c),
        &w1,
        hello(Role::Worker, "w1"),
        LinkOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(link.welcome.version, PROTOCOL_VERSION);
    match next_event(&mut c).await {
        Ev::Session(peer, h) => {
            assert_eq!((peer.role, peer.name.as_str()), (Role::Worker, "w1"));
            assert_eq!(h.native_platforms, vec!["linux/amd64".to_string()]);
        }
        other => panic!("expected a session, got {other:?}"),
    }
    // The control stream works both ways (the fixture echoes).
    link.send(&Message::StatusRequest).await.unwrap();
    assert_eq!(link.recv().await.unwrap(), Some(Message::StatusRequest));
    link.close().await;

    // A client with its only client certificate (no --name).
    let alice = farm.load(Role::Client, None).unwrap();
    assert_eq!(alice.identity.name, "alice");
    let link = Link::connect(
        &url(&c),
        &alice,
        hello(Role::Client, "alice"),
        LinkOptions::default(),
    )
    .await
    .unwrap();
    assert!(matches!(next_event(&mut c).await, Ev::Session(p, _) if p.role == Role::Client));
    link.close().await;
}

/// Dials as a worker would (retrying what may pass, giving up on the rest)
/// and returns the error, panicking if it is still retrying after 10 s.
async fn dial_until_refused(c: &Coord, creds: &Credentials, role: Role, name: &str) -> LinkError {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    let mut retried = Vec::new();
    let (addr, hello, opts) = (url(c), hello(role, name), LinkOptions::default());
    let attempt = connect_with_backoff(&addr, creds, &hello, &opts, &mut backoff, |e, _| {
        retried.push(e.to_string())
    });
    match tokio::time::timeout(Duration::from_secs(10), attempt).await {
        Ok(Ok(_)) => panic!("{role} {name} was admitted"),
        Ok(Err(e)) => {
            assert!(retried.is_empty(), "retried after {retried:?}");
            e
        }
        Err(_) => panic!("still retrying after 10 s: {retried:?}"),
    }
}

fn assert_names(text: &str, wants: &[&str]) {
    for w in wants {
        assert!(text.contains(w), "{w:?} missing in {text:?}");
    }
}

#[tokio::test]
async fn worker_or_client_from_another_ca_is_refused_and_told_why() {
    let (_guard, logs) = imgfarm_testkit::capture_logs();
    let tmp = tempfile::tempdir().unwrap();
    let farm = make_farm(&tmp.path().join("tls"));
    let other = make_farm(&tmp.path().join("other"));
    let mut c = start(
        farm.load(Role::Coordinator, None).unwrap(),
        &tmp.path().join("store"),
        PROTOCOL_VERSION,
    );
    let farm_ca = farm.load(Role::Client, None).unwrap().ca;
    for (role, name) in [(Role::Worker, "w1"), (Role::Client, "alice")] {
        // This farm's ca.crt (so the coordinator passes), a leaf from another.
        let mut creds = other.load(role, Some(name)).unwrap();
        creds.ca = farm_ca.clone();
        let started = Instant::now();
        let err = dial_until_refused(&c, &creds, role, name).await;
        let took = started.elapsed();
        assert!(took < Duration::from_secs(3), "took {took:?}");
        // The dialler is told its own certificate was refused, and why.
        assert_names(
            &err.to_string(),
            &[
                &format!(
                    "the farm coordinator at {} refused this {role}'s certificate",
                    url(&c)
                ),
                "it is not signed by the farm's CA",
                "check --tls-dir / IMGFARM_TLS_DIR",
            ],
        );
        // The coordinator names the peer and the reason.
        match next_event(&mut c).await {
            Ev::Dropped(e) => assert_names(
                &e.to_string(),
                &[
                    "refused a connection from 127.0.0.1:",
                    "its certificate is not signed by this farm's CA (",
                ],
            ),
            other => panic!("expected a refused connection, got {other:?}"),
        }
    }
    let logged = logs.text();
    let warnings: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("refused a connection from 127.0.0.1:"))
        .collect();
    assert_eq!(warnings.len(), 2, "{logged}");
    assert!(
        warnings
            .iter()
            .all(|l| l.contains("its certificate is not signed by this farm's CA (")),
        "{logged}"
    );
}

#[tokio::test]
async fn coordinator_from_another_ca_is_refused_by_the_worker_and_told_why() {
    let (_guard, logs) = imgfarm_testkit::capture_logs();
    let tmp = tempfile::tempdir().unwrap();
    let farm = make_farm(&tmp.path().join("tls"));
    let other = make_farm(&tmp.path().join("other"));
    let mut c = start(
        other.load(Role::Coordinator, None).unwrap(),
        &tmp.path().join("store"),
        PROTOCOL_VERSION,
    );
    let w1 = farm.load(Role::Worker, Some("w1")).unwrap();
    let started = Instant::now();
    let err = dial_until_refused(&c, &w1, Role::Worker, "w1").await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_names(
        &err.to_string(),
        &[
            &format!(
                "this worker refused the certificate of the farm coordinator at {}",
                url(&c)
            ),
            "it is not signed by the farm's CA",
            "--tls-dir / IMGFARM_TLS_DIR",
        ],
    );
    // The coordinator hears that its own certificate was refused.
    match next_event(&mut c).await {
        Ev::Dropped(e) => assert_names(
            &e.to_string(),
            &[
                "127.0.0.1:",
                "refused this coordinator's certificate",
                "not signed by the CA it trusts",
            ],
        ),
        other => panic!("expected a refused connection, got {other:?}"),
    }
    assert!(
        logs.text()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("refused this coordinator's certificate")),
        "{}",
        logs.text()
    );
}

#[tokio::test]
async fn client_cert_cannot_register_as_worker_and_reverse() {
    let tmp = tempfile::tempdir().unwrap();
    let farm = make_farm(&tmp.path().join("tls"));
    let mut c = start(
        farm.load(Role::Coordinator, None).unwrap(),
        &tmp.path().join("store"),
        PROTOCOL_VERSION,
    );
    let alice = farm.load(Role::Client, Some("alice")).unwrap();
    let err = Link::connect(
        &url(&c),
        &alice,
        hello(Role::Worker, "alice"),
        LinkOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("TLS certificate is for client"),
        "{err}"
    );
    assert!(matches!(
        next_event(&mut c).await,
        Ev::Dropped(ServerError::Wire {
            source: WireError::Handshake(HandshakeError::IdentityMismatch { .. }),
            ..
        })
    ));

    let w1 = farm.load(Role::Worker, Some("w1")).unwrap();
    let err = Link::connect(
        &url(&c),
        &w1,
        hello(Role::Client, "w1"),
        LinkOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("TLS certificate is for worker"),
        "{err}"
    );
    assert!(matches!(
        next_event(&mut c).await,
        Ev::Dropped(ServerError::Wire {
            source: WireError::Handshake(HandshakeError::IdentityMismatch { .. }),
            ..
        })
    ));

    // The coordinator's own certificate has no clientAuth usage: refused in
    // TLS, and both sides say it is the key usage.
    let coord = farm.load(Role::Coordinator, None).unwrap();
    let started = Instant::now();
    let err = dial_until_refused(&c, &coord, Role::Worker, "coordinator").await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_names(
        &err.to_string(),
        &[
            "refused this coordinator's certificate",
            "it has the wrong extended key usage for this use",
        ],
    );
    match next_event(&mut c).await {
        Ev::Dropped(e) => assert_names(
            &e.to_string(),
            &[
                "refused a connection from 127.0.0.1:",
                "its certificate has the wrong extended key usage for this use",
            ],
        ),
        other => panic!("expected a refused connection, got {other:?}"),
    }
}

#[tokio::test]
async fn version_mismatch_is_refused_on_both_sides() {
    let tmp = tempfile::tempdir().unwrap();
    let farm = make_farm(&tmp.path().join("tls"));
    let mut c = start(
        farm.load(Role::Coordinator, None).unwrap(),
        &tmp.path().join("store"),
        1,
    );
    let w1 = farm.load(Role::Worker, Some("w1")).unwrap();
    let err = Link::connect(
        &url(&c),
        &w1,
        hello(Role::Worker, "w1"),
        LinkOptions {
            protocol_version: 2,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "peer speaks imgfarm protocol 1, we speak 2: upgrade the coordinator"
    );
    match next_event(&mut c).await {
        Ev::Dropped(e) => assert_eq!(
            e.to_string(),
            "worker w1: peer speaks imgfarm protocol 2, we speak 1: upgrade the coordinator"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn older_worker_is_told_to_upgrade_on_both_sides() {
    let tmp = tempfile::tempdir().unwrap();
    let farm = make_farm(&tmp.path().join("tls"));
    let mut c = start(
        farm.load(Role::Coordinator, None).unwrap(),
        &tmp.path().join("store"),
        2,
    );
    let w1 = farm.load(Role::Worker, Some("w1")).unwrap();
    let err = Link::connect(
        &url(&c),
        &w1,
        hello(Role::Worker, "w1"),
        LinkOptions {
            protocol_version: 1,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "peer speaks imgfarm protocol 2, we speak 1: upgrade the worker"
    );
    match next_event(&mut c).await {
        Ev::Dropped(e) => assert_eq!(
            e.to_string(),
            "worker w1: peer speaks imgfarm protocol 1, we speak 2: upgrade the worker"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn oversized_frame_drops_the_peer() {
    let tmp = tempfile::tempdir().unwrap();
    let farm = make_farm(&tmp.path().join("tls"));
    let mut c = start(
        farm.load(Role::Coordinator, None).unwrap(),
        &tmp.path().join("store"),
        PROTOCOL_VERSION,
    );
    let w1 = farm.load(Role::Worker, Some("w1")).unwrap();

    // Before any session: a stream opening with a 4 GiB frame header.
    let conn = raw_connect(c.addr, &w1).await;
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    write_preamble(&mut send, PROTOCOL_VERSION).await.unwrap();
    send.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    match next_event(&mut c).await {
        Ev::Dropped(ServerError::Wire {
            source: WireError::Codec(CodecError::FrameTooLarge { len, .. }),
            ..
        }) => assert_eq!(len, u64::from(u32::MAX)),
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
    let reason = tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .unwrap();
    match reason {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, close_code::FRAME_TOO_LARGE.into())
        }
        other => panic!("{other:?}"),
    }

    // Inside an admitted session: the session's recv fails and the peer is dropped.
    let mut link = Link::connect(
        &url(&c),
        &w1,
        hello(Role::Worker, "w1"),
        LinkOptions::default(),
    )
    .await
    .unwrap();
    assert!(matches!(next_event(&mut c).await, Ev::Session(..)));
    // Hand-craft a hostile frame header on the control stream.
    link.send_raw_bytes(&(MAX_FRAME_PLUS_ONE).to_be_bytes())
        .await
        .unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), c.server_errors.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(e.contains("FrameTooLarge"), "{e}");
    let reason = tokio::time::timeout(Duration::from_secs(5), link.connection().closed())
        .await
        .unwrap();
    assert!(
        matches!(reason, quinn::ConnectionError::ApplicationClosed(ref c) if c.error_code == close_code::FRAME_TOO_LARGE.into()),
        "{reason:?}"
    );
}

const MAX_FRAME_PLUS_ONE: u32 = imgfarm_common::proto::MAX_CONTROL_FRAME + 1;

#[tokio::test]
async fn blob_transfer_is_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let farm = make_farm(&tmp.path().join("tls"));
    let mut c = start(
        farm.load(Role::Coordinator, None).unwrap(),
        &tmp.path().join("store"),
        PROTOCOL_VERSION,
    );
    let w1 = farm.load(Role::Worker, Some("w1")).unwrap();
    let link = Link::connect(
        &url(&c),
        &w1,
        hello(Role::Worker, "w1"),
        LinkOptions::default(),
    )
    .await
    .unwrap();
    assert!(matches!(next_event(&mut c).await, Ev::Session(..)));

    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let header = BlobHeader {
        digest: Digest::sha256_of(&data),
        size: data.len() as u64,
    };
    assert_eq!(
        link.put_blob(&header, &mut &data[..]).await.unwrap(),
        PutOutcome::Stored
    );
    assert!(matches!(next_event(&mut c).await, Ev::BlobStored(d) if d == header.digest));
    assert!(c.store.contains(&header.digest));
    // Sent once: a second upload is answered "present" without bytes.
    assert_eq!(
        link.put_blob(&header, &mut &data[..]).await.unwrap(),
        PutOutcome::AlreadyPresent
    );
    assert!(matches!(next_event(&mut c).await, Ev::BlobStored(_)));

    // A corrupted sender: header of one blob, bytes of another.
    let evil = b"not the announced bytes".to_vec();
    let lying = BlobHeader {
        digest: Digest::sha256_of(b"something else entirely!"),
        size: evil.len() as u64,
    };
    let err = link.put_blob(&lying, &mut &evil[..]).await.unwrap_err();
    assert!(err.to_string().contains("refused by peer"), "{err}");
    assert!(matches!(
        next_event(&mut c).await,
        Ev::Dropped(ServerError::Blob { .. })
    ));
    assert!(!c.store.contains(&lying.digest));
    assert!(!c.store.contains(&Digest::sha256_of(&evil)));

    // A size lie: more bytes than announced.
    let short = BlobHeader {
        digest: Digest::sha256_of(&evil[..5]),
        size: 5,
    };
    // The link sends exactly `size` bytes, so lie through a raw stream instead.
    let conn = raw_connect(c.addr, &w1).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    write_preamble(&mut send, PROTOCOL_VERSION).await.unwrap();
    imgfarm_common::proto::io::write_msg(
        &mut send,
        &imgfarm_common::proto::StreamOpen::BlobPut(short.clone()),
    )
    .await
    .unwrap();
    send.write_all(&evil).await.unwrap();
    send.finish().unwrap();
    read_preamble(&mut recv, PROTOCOL_VERSION, Role::Coordinator, Role::Worker)
        .await
        .unwrap();
    assert!(matches!(
        next_event(&mut c).await,
        Ev::Dropped(ServerError::Blob { .. })
    ));
    assert!(!c.store.contains(&short.digest));

    // Download into the worker's own store, verified.
    let mine = ContentStore::open(tmp.path().join("worker-store")).unwrap();
    assert!(link.get_blob(&mine, &header.digest).await.unwrap());
    assert_eq!(mine.read_bytes(&header.digest, 1 << 30).unwrap(), data);
    assert!(!link
        .get_blob(&mine, &Digest::sha256_of(b"absent"))
        .await
        .unwrap());
    link.close().await;
}

#[tokio::test]
async fn a_second_control_stream_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let farm = make_farm(&tmp.path().join("tls"));
    let mut c = start(
        farm.load(Role::Coordinator, None).unwrap(),
        &tmp.path().join("store"),
        PROTOCOL_VERSION,
    );
    let w1 = farm.load(Role::Worker, Some("w1")).unwrap();
    let link = Link::connect(
        &url(&c),
        &w1,
        hello(Role::Worker, "w1"),
        LinkOptions::default(),
    )
    .await
    .unwrap();
    assert!(matches!(next_event(&mut c).await, Ev::Session(..)));
    let (mut send, mut recv) = link.connection().open_bi().await.unwrap();
    write_preamble(&mut send, PROTOCOL_VERSION).await.unwrap();
    imgfarm_common::proto::io::write_msg(
        &mut send,
        &imgfarm_common::proto::StreamOpen::Control(hello(Role::Worker, "w1")),
    )
    .await
    .unwrap();
    read_preamble(&mut recv, PROTOCOL_VERSION, Role::Coordinator, Role::Worker)
        .await
        .unwrap();
    let reply: Message = imgfarm_common::proto::io::expect_msg(
        &mut recv,
        imgfarm_common::proto::MAX_CONTROL_FRAME,
        "refusing",
    )
    .await
    .unwrap();
    assert!(
        matches!(reply, Message::Refused(ref t) if t.contains("one session per connection")),
        "{reply:?}"
    );
    assert!(matches!(
        next_event(&mut c).await,
        Ev::Dropped(ServerError::Wire {
            source: WireError::Unexpected(_),
            ..
        })
    ));
}

/// Re-issues `role`/`name` in the farm at `dir` (its CA, the coordinator for 127.0.0.1) valid
/// for `validity`, replacing its files, as `farm issue --force` does.
fn reissue(dir: &Path, role: Role, name: &str, validity: imgfarm_common::identity::Validity) {
    use imgfarm_common::identity::{issue_leaf, CaMaterial};
    let ca = CaMaterial {
        cert_pem: std::fs::read_to_string(dir.join("ca.crt")).unwrap(),
        key_pem: std::fs::read_to_string(dir.join("ca.key")).unwrap(),
    };
    let sans = ["127.0.0.1".to_string()];
    let sans: &[String] = if role == Role::Coordinator {
        &sans
    } else {
        &[]
    };
    let leaf = issue_leaf(&ca, role, name, sans, validity).unwrap();
    std::fs::write(dir.join(format!("{}.crt", leaf.stem)), leaf.cert_pem).unwrap();
    std::fs::write(dir.join(format!("{}.key", leaf.stem)), leaf.key_pem).unwrap();
}

/// Re-issues `role`/`name` with a validity period that ended yesterday, as a certificate from
/// `farm issue --days N` is N days later.
fn expire(dir: &Path, role: Role, name: &str) {
    let now = std::time::SystemTime::now();
    let day = Duration::from_secs(86_400);
    let past = imgfarm_common::identity::Validity {
        not_before: now - 3 * day,
        not_after: now - day,
    };
    reissue(dir, role, name, past);
}

/// What happens at expiry (docs/operations.md): a worker whose certificate has expired is
/// refused at the handshake and told so, without retrying; a coordinator whose certificate
/// has expired is refused by every worker, which says so.
#[tokio::test]
async fn an_expired_certificate_is_refused_on_either_side_and_told_why() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tls");
    let farm = make_farm(&dir);
    // The worker's certificate expired.
    expire(&dir, Role::Worker, "w1");
    let mut c = start(
        farm.load(Role::Coordinator, None).unwrap(),
        &tmp.path().join("store"),
        PROTOCOL_VERSION,
    );
    let w1 = farm.load(Role::Worker, Some("w1")).unwrap();
    let err = dial_until_refused(&c, &w1, Role::Worker, "w1").await;
    assert_names(
        &err.to_string(),
        &[
            "refused this worker's certificate",
            "it has expired or is not valid yet (check both clocks, or issue a new one)",
        ],
    );
    match next_event(&mut c).await {
        Ev::Dropped(e) => assert_names(
            &e.to_string(),
            &["refused a connection from 127.0.0.1:", "has expired"],
        ),
        other => panic!("expected a refused connection, got {other:?}"),
    }
    // A renewed worker certificate is admitted by the same running coordinator.
    let renewed = imgfarm_common::identity::Validity::days_from_now(30).unwrap();
    reissue(&dir, Role::Worker, "w1", renewed);
    let w1 = farm.load(Role::Worker, Some("w1")).unwrap();
    let link = Link::connect(
        &url(&c),
        &w1,
        hello(Role::Worker, "w1"),
        LinkOptions::default(),
    )
    .await
    .expect("the renewed certificate is admitted");
    link.close().await;
    drop(c);

    // The coordinator's certificate expired: the worker refuses it.
    expire(&dir, Role::Coordinator, "coordinator");
    let c = start(
        farm.load(Role::Coordinator, None).unwrap(),
        &tmp.path().join("store2"),
        PROTOCOL_VERSION,
    );
    let err = dial_until_refused(&c, &w1, Role::Worker, "w1").await;
    assert_names(
        &err.to_string(),
        &[
            "this worker refused the certificate of the farm coordinator at",
            "it has expired or is not valid yet",
        ],
    );
}

/// CA rotation without downtime (docs/operations.md): while every `ca.crt` holds the old and
/// the new CA, peers with certificates of either are admitted, whichever CA signed the
/// coordinator's; a peer that trusts only the new CA refuses the old coordinator certificate.
#[tokio::test]
async fn a_ca_bundle_admits_certificates_of_both_cas_during_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let old = make_farm(&tmp.path().join("old"));
    let new = make_farm(&tmp.path().join("new"));
    // The bundle, as an operator writes it: `cat old/ca.crt new/ca.crt > ca.crt`.
    let mut bundle = std::fs::read_to_string(tmp.path().join("old/ca.crt")).unwrap();
    bundle.push_str(&std::fs::read_to_string(tmp.path().join("new/ca.crt")).unwrap());
    for farm in ["old", "new"] {
        std::fs::write(tmp.path().join(farm).join("ca.crt"), &bundle).unwrap();
    }
    for (coordinator_from, store) in [(&old, "s1"), (&new, "s2")] {
        let c = start(
            coordinator_from.load(Role::Coordinator, None).unwrap(),
            &tmp.path().join(store),
            PROTOCOL_VERSION,
        );
        for worker_from in [&old, &new] {
            let w1 = worker_from.load(Role::Worker, Some("w1")).unwrap();
            assert_eq!(w1.ca.len(), 2);
            let link = Link::connect(
                &url(&c),
                &w1,
                hello(Role::Worker, "w1"),
                LinkOptions::default(),
            )
            .await
            .expect("admitted during the rotation");
            link.close().await;
        }
        drop(c);
    }
    // After the rotation: a worker that trusts only the new CA refuses the old coordinator.
    let c = start(
        old.load(Role::Coordinator, None).unwrap(),
        &tmp.path().join("s3"),
        PROTOCOL_VERSION,
    );
    let mut w1 = new.load(Role::Worker, Some("w1")).unwrap();
    w1.ca.truncate(0);
    w1.ca
        .push(new.load(Role::Worker, Some("w1")).unwrap().ca[1].clone());
    let err = dial_until_refused(&c, &w1, Role::Worker, "w1").await;
    assert_names(
        &err.to_string(),
        &["refused the certificate of the farm coordinator"],
    );
}
