//! Shared fixtures for the wire tests: a farm directory, a running
//! coordinator endpoint on 127.0.0.1, raw QUIC dialers.
#![allow(dead_code)]

use imgfarm_common::identity::PeerIdentity;
use imgfarm_common::identity::{
    client_config, init_farm, issue_leaf, write_new_files, Credentials, FileSpec, InitOptions,
    Role, TlsDir, Validity,
};
use imgfarm_common::oci::store::ContentStore;
use imgfarm_common::oci::Digest;
use imgfarm_common::proto::{CacheSummary, Hello, PROTOCOL_VERSION};
use imgfarm_coordinator::server::{Server, ServerError, ServerEvent, ServerOptions};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Writes a complete farm (CA, coordinator, worker w1, client alice) into `dir`.
pub fn make_farm(dir: &Path) -> TlsDir {
    std::fs::create_dir_all(dir).unwrap();
    let (ca, coord) = init_farm(&InitOptions::default()).unwrap();
    let w1 = issue_leaf(&ca, Role::Worker, "w1", &[], Validity::default_leaf()).unwrap();
    let alice = issue_leaf(&ca, Role::Client, "alice", &[], Validity::default_leaf()).unwrap();
    let mut files = vec![
        FileSpec {
            path: dir.join("ca.crt"),
            contents: ca.cert_pem.clone(),
            mode: 0o644,
        },
        FileSpec {
            path: dir.join("ca.key"),
            contents: ca.key_pem.clone(),
            mode: 0o600,
        },
    ];
    for leaf in [coord, w1, alice] {
        files.push(FileSpec {
            path: dir.join(format!("{}.crt", leaf.stem)),
            contents: leaf.cert_pem,
            mode: 0o644,
        });
        files.push(FileSpec {
            path: dir.join(format!("{}.key", leaf.stem)),
            contents: leaf.key_pem,
            mode: 0o600,
        });
    }
    write_new_files(&files, false).unwrap();
    TlsDir::new(dir)
}

pub fn hello(role: Role, name: &str) -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        role,
        name: name.into(),
        software: "test".into(),
        native_platforms: vec!["linux/amd64".into()],
        emulated_platforms: vec!["linux/arm64".into()],
        slots: 2,
        cache_summary: CacheSummary::default(),
        entitlements: Default::default(),
    }
}

/// What the test sees of the server.
#[derive(Debug)]
pub enum Ev {
    Session(PeerIdentity, Hello),
    Dropped(ServerError),
    BlobStored(Digest),
}

/// A coordinator endpoint whose events are forwarded to `events`; admitted
/// sessions get an echo loop (each received message is sent back).
pub struct Coord {
    pub addr: SocketAddr,
    pub events: mpsc::UnboundedReceiver<Ev>,
    pub store: ContentStore,
    pub server_errors: mpsc::UnboundedReceiver<String>,
}

pub fn start(creds: Credentials, store_dir: &Path, version: u32) -> Coord {
    let store = ContentStore::open(store_dir).unwrap();
    let mut opts = ServerOptions::new("127.0.0.1:0".parse().unwrap(), creds, store.clone());
    opts.protocol_version = version;
    let mut server = Server::bind(opts).unwrap();
    let addr = server.local_addr().unwrap();
    let (tx, events) = mpsc::unbounded_channel();
    let (etx, server_errors) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(ev) = server.next_event().await {
            match ev {
                ServerEvent::Session(mut s) => {
                    let etx = etx.clone();
                    let _ = tx.send(Ev::Session(s.peer.clone(), s.hello.clone()));
                    tokio::spawn(async move {
                        loop {
                            match s.recv().await {
                                Ok(Some(m)) => {
                                    if s.send(&m).await.is_err() {
                                        break;
                                    }
                                }
                                Ok(None) => break,
                                Err(e) => {
                                    let _ = etx.send(format!("{e:?}"));
                                    break;
                                }
                            }
                        }
                    });
                }
                ServerEvent::Dropped(e) => {
                    let _ = tx.send(Ev::Dropped(e));
                }
                ServerEvent::BlobStored { digest, .. } => {
                    let _ = tx.send(Ev::BlobStored(digest));
                }
            }
        }
    });
    Coord {
        addr,
        events,
        store,
        server_errors,
    }
}

/// The next server event, or panic after 10 s.
pub async fn next_event(c: &mut Coord) -> Ev {
    tokio::time::timeout(Duration::from_secs(10), c.events.recv())
        .await
        .expect("no server event within 10 s")
        .expect("server event channel closed")
}

/// A raw QUIC connection with `creds`, bypassing the link's protocol.
pub async fn raw_connect(addr: SocketAddr, creds: &Credentials) -> quinn::Connection {
    let tls = client_config(creds).unwrap();
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let cfg = quinn::ClientConfig::new(Arc::new(quic));
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(cfg);
    ep.connect(addr, "127.0.0.1").unwrap().await.unwrap()
}
