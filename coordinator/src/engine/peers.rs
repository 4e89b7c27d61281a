//! Control sessions: workers joining, heartbeating and leaving; messages
//! routed by the role in the peer's certificate.

use super::observe::VertexOutcome;
use super::pool::worker_spec;
use super::{Action, Engine, Peer, PeerId};
use imgfarm_common::identity::Role;
use imgfarm_common::proto::{close_code, FarmStatus, Hello, Message, VertexLog};
use std::time::Duration;

/// How long a refused worker's connection stays open so the refusal
/// reaches it.
const REFUSED_CLOSE_DELAY: Duration = Duration::from_millis(500);

/// How long a dropped slow client's connection stays open, sending
/// nothing new, before it is closed with the reason: CONNECTION_CLOSE goes
/// out once, and amid the data still in flight it may be lost, leaving the
/// client with a bare reset instead of the reason.
const SLOW_CLIENT_CLOSE_DELAY: Duration = Duration::from_millis(300);

impl Engine {
    /// A worker or client was admitted.
    pub(super) fn add_peer(&mut self, peer: PeerId, role: Role, name: String, hello: &Hello) {
        self.peers.insert(
            peer,
            Peer {
                role,
                name: name.clone(),
            },
        );
        if role != Role::Worker {
            tracing::debug!(client = %name, peer, "client connected");
            return;
        }
        match worker_spec(hello) {
            Ok(spec) => {
                let id = self.sched.add_worker(spec);
                self.sched
                    .add_holdings(id, hello.cache_summary.keys.iter().cloned());
                self.pool.add(peer, hello, id, self.now);
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
                self.send(peer, Message::Refused(e.to_string()));
                self.peers.remove(&peer);
                self.actions.push_back(Action::Close {
                    peer,
                    code: close_code::REFUSED,
                    reason: "worker refused".into(),
                    after: REFUSED_CLOSE_DELAY,
                });
            }
        }
    }

    /// A session ended (closed, broken or timed out).
    pub(super) fn drop_peer(&mut self, peer: PeerId, reason: &str) {
        let Some(p) = self.peers.remove(&peer) else {
            return;
        };
        if let Some(w) = self.pool.remove(peer) {
            self.drained.remove(&peer);
            let back = self.sched.worker_lost(w.sched_id);
            for k in &back {
                if let Some(d) = self.running.remove(k) {
                    self.placement_ended(&d, VertexOutcome::Lost);
                }
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
            self.actions.push_back(Action::Close {
                peer,
                code: close_code::NORMAL,
                reason: "declared lost by the coordinator".into(),
                after: Duration::ZERO,
            });
        } else {
            self.builds.detach(peer, self.now);
            tracing::debug!(client = %p.name, "client left ({reason})");
        }
        self.actions.push_back(Action::Release { peer });
    }

    /// Drops a session whose outgoing queue overflowed (its peer does not
    /// read), telling it why in the connection's close reason (the queue
    /// itself is full). A client's builds go on and it may re-attach by
    /// build id; a worker is lost and its vertices are rescheduled.
    pub(super) fn drop_slow_peer(&mut self, peer: PeerId) {
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        let worker = p.role == Role::Worker;
        let what = if worker {
            "its vertices are rescheduled; the worker may reconnect"
        } else {
            "its builds go on; re-attach by build id (imgfarm build --reattach ID)"
        };
        let why = format!(
            "the coordinator dropped this session: {} messages were waiting for it unread (the peer is not reading); {what}",
            self.opts.session_queue
        );
        tracing::warn!(peer = %p.name, "{why}");
        // A worker is closed at once (its vertices go back to the queue
        // now); a client once the data in flight to it has drained.
        let after = if worker {
            Duration::ZERO
        } else {
            SLOW_CLIENT_CLOSE_DELAY
        };
        self.actions.push_back(Action::Close {
            peer,
            code: close_code::NORMAL,
            reason: why,
            after,
        });
        self.drop_peer(peer, "too slow reading its messages");
    }

    /// Workers silent past the timeout are lost.
    pub(super) fn check_heartbeats(&mut self) {
        let timeout = self.opts.heartbeat_timeout;
        for s in self.pool.expired(self.now, timeout) {
            let t = timeout.as_secs_f64();
            self.drop_peer(s, &format!("no heartbeat for {t:.1} s"));
        }
    }

    /// One message on a control session.
    pub(super) fn on_message(&mut self, peer: PeerId, msg: Message) {
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        let role = p.role;
        if role == Role::Worker {
            self.pool.touch(peer, self.now);
        }
        match (role, msg) {
            (Role::Worker, Message::Heartbeat(hb)) => {
                if let Some(id) = self.pool.heartbeat(peer, &hb, self.now) {
                    if let Some(s) = &hb.cache_summary {
                        self.sched.add_holdings(id, s.keys.iter().cloned());
                    }
                }
            }
            (Role::Worker, Message::VertexLog(log)) => self.on_log(peer, log),
            (Role::Worker, Message::VertexDone(d)) => self.on_vertex_done_msg(peer, d),
            (Role::Client, Message::Submit(s)) => self.on_submit(peer, s),
            (Role::Client, Message::Cancel { build_id }) => self.on_cancel(peer, &build_id),
            (_, Message::StatusRequest) => {
                let status = FarmStatus {
                    workers: self.pool.status(self.now),
                    builds: self.builds.active().map(|b| b.status()).collect(),
                };
                self.send(peer, Message::Status(status));
            }
            (_, Message::Bye) => self.drop_peer(peer, "said bye"),
            (role, other) => {
                let what = debug_prefix(&other, 40);
                self.send(
                    peer,
                    Message::Refused(format!(
                        "a {role} session cannot send {what}…; message ignored"
                    )),
                );
            }
        }
    }

    fn on_log(&mut self, peer: PeerId, log: VertexLog) {
        let Some(w) = self.pool.get(peer).map(|w| w.sched_id) else {
            return;
        };
        if let Some(s) = self.running_on(w, &log.vertex_key) {
            self.tell_users(&s, &Message::VertexLog(log));
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
