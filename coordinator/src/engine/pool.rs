//! The worker pool, free of I/O: who is connected, what they offer, when
//! they last sent a heartbeat. A worker silent for longer than the timeout
//! is reported by [`Pool::expired`]; the service then declares it lost.

use crate::scheduler::{WorkerId, WorkerSpec};
use imgfarm_common::platform::Platform;
use imgfarm_common::proto::{Heartbeat, Hello, WorkerStatus};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One connected worker.
#[derive(Debug, Clone)]
pub struct Worker {
    /// Name from its certificate.
    pub name: String,
    /// Its id in the scheduler (never reused).
    pub sched_id: WorkerId,
    /// Native platforms as announced.
    pub native: Vec<String>,
    /// Emulated platforms as announced.
    pub emulated: Vec<String>,
    /// Slots.
    pub slots: u32,
    /// Slots in use, from its last heartbeat.
    pub slots_in_use: u32,
    /// Cache size in bytes.
    pub cache_bytes: u64,
    /// Last heartbeat (or the hello).
    pub last_seen: Instant,
}

/// Why a hello cannot become a worker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// A platform string does not parse.
    #[error("worker {worker} announced platform {platform:?}: {reason}")]
    BadPlatform {
        /// The worker.
        worker: String,
        /// The string.
        platform: String,
        /// The parser's message.
        reason: String,
    },
    /// Nothing to run on.
    #[error("worker {0} announced no platform (native or emulated) and no slots; start it with --platforms and --slots")]
    NothingOffered(String),
}

/// The scheduler's view of a hello.
pub fn worker_spec(hello: &Hello) -> Result<WorkerSpec, PoolError> {
    let parse = |list: &[String]| -> Result<Vec<Platform>, PoolError> {
        list.iter()
            .map(|p| {
                p.parse::<Platform>().map_err(|e| PoolError::BadPlatform {
                    worker: hello.name.clone(),
                    platform: p.clone(),
                    reason: e.to_string(),
                })
            })
            .collect()
    };
    let native = parse(&hello.native_platforms)?;
    let emulated = parse(&hello.emulated_platforms)?;
    if (native.is_empty() && emulated.is_empty()) || hello.slots == 0 {
        return Err(PoolError::NothingOffered(hello.name.clone()));
    }
    Ok(WorkerSpec {
        name: hello.name.clone(),
        native,
        emulated,
        slots: hello.slots as usize,
        entitlements: hello.entitlements.clone(),
    })
}

/// Connected workers by control session id.
#[derive(Debug, Default)]
pub struct Pool {
    by_session: BTreeMap<u64, Worker>,
}

impl Pool {
    /// Registers a worker admitted with `hello`.
    pub fn add(&mut self, session: u64, hello: &Hello, sched_id: WorkerId, now: Instant) {
        self.by_session.insert(
            session,
            Worker {
                name: hello.name.clone(),
                sched_id,
                native: hello.native_platforms.clone(),
                emulated: hello.emulated_platforms.clone(),
                slots: hello.slots,
                slots_in_use: 0,
                cache_bytes: hello.cache_summary.bytes,
                last_seen: now,
            },
        );
    }

    /// Records a heartbeat; returns the worker's scheduler id, or `None` for
    /// a session that is not a known worker.
    pub fn heartbeat(&mut self, session: u64, hb: &Heartbeat, now: Instant) -> Option<WorkerId> {
        let w = self.by_session.get_mut(&session)?;
        w.last_seen = now;
        w.slots_in_use = hb.slots_in_use;
        if let Some(s) = &hb.cache_summary {
            w.cache_bytes = s.bytes;
        }
        Some(w.sched_id)
    }

    /// Any message from a worker shows it is alive.
    pub fn touch(&mut self, session: u64, now: Instant) {
        if let Some(w) = self.by_session.get_mut(&session) {
            w.last_seen = now;
        }
    }

    /// The worker on `session`.
    pub fn get(&self, session: u64) -> Option<&Worker> {
        self.by_session.get(&session)
    }

    /// Removes the worker on `session`.
    pub fn remove(&mut self, session: u64) -> Option<Worker> {
        self.by_session.remove(&session)
    }

    /// The session of scheduler worker `id`.
    pub fn session_of(&self, id: WorkerId) -> Option<u64> {
        self.by_session
            .iter()
            .find(|(_, w)| w.sched_id == id)
            .map(|(s, _)| *s)
    }

    /// Sessions whose worker sent nothing for longer than `timeout`.
    pub fn expired(&self, now: Instant, timeout: Duration) -> Vec<u64> {
        self.by_session
            .iter()
            .filter(|(_, w)| now.saturating_duration_since(w.last_seen) > timeout)
            .map(|(s, _)| *s)
            .collect()
    }

    /// Rows for `imgfarm farm workers`, by name.
    pub fn status(&self, now: Instant) -> Vec<WorkerStatus> {
        let mut out: Vec<WorkerStatus> = self
            .by_session
            .values()
            .map(|w| WorkerStatus {
                name: w.name.clone(),
                native_platforms: w.native.clone(),
                emulated_platforms: w.emulated.clone(),
                slots: w.slots,
                slots_in_use: w.slots_in_use,
                cache_bytes: w.cache_bytes,
                last_heartbeat_ms: now.saturating_duration_since(w.last_seen).as_millis() as u64,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Connected workers with their sessions, by session.
    pub fn workers(&self) -> impl Iterator<Item = (u64, &Worker)> {
        self.by_session.iter().map(|(s, w)| (*s, w))
    }

    /// Number of connected workers.
    pub fn len(&self) -> usize {
        self.by_session.len()
    }

    /// No worker connected.
    pub fn is_empty(&self) -> bool {
        self.by_session.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgfarm_common::identity::Role;
    use imgfarm_common::oci::Digest;
    use imgfarm_common::proto::CacheSummary;

    fn hello(name: &str, native: &[&str], slots: u32) -> Hello {
        Hello {
            version: 2,
            role: Role::Worker,
            name: name.into(),
            software: "t".into(),
            native_platforms: native.iter().map(|s| s.to_string()).collect(),
            emulated_platforms: vec![],
            slots,
            cache_summary: CacheSummary {
                bytes: 7,
                entries: 1,
                keys: vec![Digest::sha256_of(b"a"), Digest::sha256_of(b"b")],
            },
            entitlements: Default::default(),
        }
    }

    #[test]
    fn heartbeats_keep_a_worker_and_silence_expires_it() {
        let t0 = Instant::now();
        let mut p = Pool::default();
        p.add(1, &hello("w1", &["linux/amd64"], 2), 0, t0);
        p.add(2, &hello("w2", &["linux/amd64"], 2), 1, t0);
        let later = t0 + Duration::from_secs(5);
        let hb = Heartbeat {
            seq: 1,
            slots_in_use: 1,
            cache_summary: None,
        };
        assert_eq!(p.heartbeat(1, &hb, later), Some(0));
        assert_eq!(p.heartbeat(9, &hb, later), None, "unknown session");
        p.touch(9, later);
        p.touch(2, t0 + Duration::from_secs(1));
        let now = t0 + Duration::from_secs(7);
        assert!(
            p.expired(now, Duration::from_secs(6)).is_empty(),
            "touched at 1 s"
        );
        let now = t0 + Duration::from_secs(7) + Duration::from_millis(1500);
        assert_eq!(p.expired(now, Duration::from_secs(6)), vec![2]);
        assert_eq!(p.session_of(1), Some(2));
        let st = p.status(now);
        assert_eq!(st[0].name, "w1");
        assert_eq!(st[0].slots_in_use, 1);
        assert_eq!(st[0].last_heartbeat_ms, 3500);
        assert_eq!(p.remove(2).map(|w| w.name), Some("w2".into()));
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn hello_to_spec_checks_platforms_and_slots() {
        let spec = worker_spec(&hello("w1", &["linux/arm64"], 3)).unwrap();
        assert_eq!(spec.native, vec![Platform::linux_arm64()]);
        assert_eq!(spec.slots, 3);
        let e = worker_spec(&hello("w1", &["linux/"], 3)).unwrap_err();
        assert!(e.to_string().contains("\"linux/\""), "{e}");
        let e = worker_spec(&hello("w1", &[], 3)).unwrap_err();
        assert!(e.to_string().contains("--platforms"), "{e}");
        let e = worker_spec(&hello("w1", &["linux/amd64"], 0)).unwrap_err();
        assert!(matches!(e, PoolError::NothingOffered(_)));
    }
}
