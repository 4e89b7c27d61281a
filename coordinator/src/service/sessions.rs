//! Control sessions: workers joining, heartbeating and leaving; messages
//! routed by the role in the peer's certificate.

use super::core::{Core, Peer};
use super::pool::{parse_key, summary_keys, worker_spec};
use imgfarm_common::identity::Role;
use imgfarm_common::proto::{close_code, FarmStatus, Message, VertexLog};
use std::time::{Duration, Instant};

/// How long a dropped slow client's connection stays open, sending
/// nothing new, before it is closed with the reason.
const SLOW_CLIENT_CLOSE_DELAY: Duration = Duration::from_millis(300);

impl Core {
    /// A worker or client was admitted.
    pub(super) fn add_peer(
        &mut self,
        session: u64,
        peer: Peer,
        hello: &imgfarm_common::proto::Hello,
    ) {
        let role = peer.role;
        let name = peer.name.clone();
        self.peers.insert(session, peer);
        if role != Role::Worker {
            tracing::debug!(client = %name, session, "client connected");
            return;
        }
        match worker_spec(hello) {
            Ok(spec) => {
                let id = self.sched.add_worker(spec);
                self.sched
                    .add_holdings(id, summary_keys(&hello.cache_summary));
                self.pool.add(session, hello, id, Instant::now());
                tracing::info!(
                    worker = %name,
                    native = %hello.native_platforms.join(","),
                    emulated = %hello.emulated_platforms.join(","),
                    slots = hello.slots,
                    "worker joined"
                );
            }
            Err(e) => {
                tracing::warn!("{e}");
                self.send(session, Message::Refused(e.to_string()));
                if let Some(p) = self.peers.remove(&session) {
                    let conn = p.conn.clone();
                    drop(p);
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        conn.close(close_code::REFUSED.into(), b"worker refused");
                    });
                }
            }
        }
    }

    /// A session ended (closed, broken or timed out).
    pub(super) fn drop_peer(&mut self, session: u64, reason: &str) {
        let Some(peer) = self.peers.remove(&session) else {
            return;
        };
        if let Some(w) = self.pool.remove(session) {
            let back = self.sched.worker_lost(w.sched_id);
            for k in &back {
                self.running.remove(k);
            }
            if back.is_empty() {
                tracing::info!(worker = %w.name, "worker left ({reason})");
            } else {
                tracing::warn!(
                    worker = %w.name,
                    "worker lost ({reason}); {} running vertices go back to the queue",
                    back.len()
                );
            }
            peer.conn.close(
                close_code::NORMAL.into(),
                b"declared lost by the coordinator",
            );
        } else {
            self.builds.detach(session);
            tracing::debug!(client = %peer.name, "client left ({reason})");
        }
    }

    /// Drops the sessions whose outgoing queue overflowed (their peer does
    /// not read), telling them why in the connection's close reason (the
    /// queue itself is full). A client's builds go on and it may re-attach
    /// by build id; a worker is lost and its vertices are rescheduled.
    /// Returns whether any session was dropped.
    pub(super) fn drop_slow_peers(&mut self) -> bool {
        let slow = std::mem::take(self.overflowed.get_mut());
        let mut dropped = false;
        for session in slow {
            let Some(peer) = self.peers.get(&session) else {
                continue;
            };
            let what = if peer.role == Role::Worker {
                "its vertices are rescheduled; the worker may reconnect"
            } else {
                "its builds go on; re-attach by build id (imgfarm build --reattach ID)"
            };
            let why = format!(
                "the coordinator dropped this session: {} messages were waiting for it unread (the peer is not reading); {what}",
                self.opts.session_queue
            );
            tracing::warn!(peer = %peer.name, "{why}");
            let (conn, worker) = (peer.conn.clone(), peer.role == Role::Worker);
            if worker {
                // Lost at once: its vertices go back to the queue now.
                conn.close(close_code::NORMAL.into(), why.as_bytes());
            }
            self.drop_peer(session, "too slow reading its messages");
            if !worker {
                // A client is closed once the data already in flight to it
                // has drained: CONNECTION_CLOSE goes out once, and amid
                // that burst it may be lost, leaving the client with a
                // bare reset instead of the reason.
                tokio::spawn(async move {
                    tokio::time::sleep(SLOW_CLIENT_CLOSE_DELAY).await;
                    conn.close(close_code::NORMAL.into(), why.as_bytes());
                });
            }
            dropped = true;
        }
        dropped
    }

    /// Workers silent past the timeout are lost.
    pub(super) fn check_heartbeats(&mut self, now: Instant) {
        for s in self.pool.expired(now, self.opts.heartbeat_timeout) {
            let t = self.opts.heartbeat_timeout.as_secs_f64();
            self.drop_peer(s, &format!("no heartbeat for {t:.1} s"));
        }
    }

    /// One message on a control session.
    pub(super) fn on_message(&mut self, session: u64, msg: Message) {
        let Some(peer) = self.peers.get(&session) else {
            return;
        };
        let (role, name) = (peer.role, peer.name.clone());
        if role == Role::Worker {
            self.pool.touch(session, Instant::now());
        }
        match (role, msg) {
            (Role::Worker, Message::Heartbeat(hb)) => {
                if let Some(id) = self.pool.heartbeat(session, &hb, Instant::now()) {
                    if let Some(s) = &hb.cache_summary {
                        self.sched.add_holdings(id, summary_keys(s));
                    }
                }
            }
            (Role::Worker, Message::VertexLog(log)) => self.on_log(session, log),
            (Role::Worker, Message::VertexDone(d)) => self.on_vertex_done(session, d),
            (Role::Client, Message::Submit(s)) => self.on_submit(session, &name, s),
            (Role::Client, Message::Cancel { build_id }) => self.on_cancel(session, &build_id),
            (_, Message::StatusRequest) => {
                let now = Instant::now();
                let status = FarmStatus {
                    workers: self.pool.status(now),
                    builds: self.builds.active().map(|b| b.status()).collect(),
                };
                self.send(session, Message::Status(status));
            }
            (_, Message::Bye) => self.drop_peer(session, "said bye"),
            (role, other) => {
                let what = debug_prefix(&other, 40);
                self.send(
                    session,
                    Message::Refused(format!(
                        "a {role} session cannot send {what}…; message ignored"
                    )),
                );
            }
        }
    }

    pub(super) fn on_log(&self, session: u64, log: VertexLog) {
        let Some(w) = self.pool.get(session) else {
            return;
        };
        let Some(key) = parse_key(&log.vertex_key) else {
            return;
        };
        if let Some(s) = self.running_on(w.sched_id, &key) {
            self.to_users(&s, &Message::VertexLog(log));
        }
    }
}

/// The first `n` characters of `value`'s `Debug` form. Formatting stops
/// there, so a large message (megabytes of bytes) is never rendered whole.
fn debug_prefix(value: &impl std::fmt::Debug, n: usize) -> String {
    struct Bounded {
        out: String,
        left: usize,
    }
    impl std::fmt::Write for Bounded {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            for c in s.chars() {
                if self.left == 0 {
                    return Err(std::fmt::Error);
                }
                self.out.push(c);
                self.left -= 1;
            }
            Ok(())
        }
    }
    let mut b = Bounded {
        out: String::new(),
        left: n,
    };
    // The error only says the bound was reached.
    let _ = std::fmt::Write::write_fmt(&mut b, format_args!("{value:?}"));
    b.out
}
