//! A deterministic farm: the [`Engine`] plus simulated workers and clients,
//! stepped by hand (in the manner of quinn's test `Pair`). Workers join,
//! run, finish, fail, die, stop heartbeating; time advances only when told;
//! the coordinator restarts from its journal. No sockets, no threads, no
//! sleeps: a scenario runs in microseconds and the same steps give the
//! same outcome.
//!
//! Invariants are checked as the engine acts ([`FarmSim::violations`]):
//! every vertex goes to a worker serving its platform, a RUN is emulated
//! only while no live worker runs its platform natively, and every job the
//! engine hands out has its inputs' results.

use super::{
    Action, AllBlobs, Engine, EngineOptions, Event, ExportOutcome, MemJournal, PeerId, RunOrder,
};
use imgfarm_common::entitlement::Entitlements;
use imgfarm_common::farm::{FarmDefinition, FarmTarget, OutputSpec, VertexResult};
use imgfarm_common::graph::image_config::StageConfig;
use imgfarm_common::graph::op::{ExecOp, ExportOp, ImageOp, NetworkMode, Op};
use imgfarm_common::graph::Vertex;
use imgfarm_common::identity::Role;
use imgfarm_common::oci::store::RefDescriptor;
use imgfarm_common::oci::Digest;
use imgfarm_common::platform::Platform;
use imgfarm_common::proto::{BuildFinished, Heartbeat, Hello, Message, Submit};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// A simulated worker.
#[derive(Debug, Clone)]
pub struct SimWorker {
    /// Its name.
    pub name: String,
    /// Platforms it runs natively.
    pub native: Vec<Platform>,
    /// Platforms it emulates.
    pub emulated: Vec<Platform>,
    /// Slots.
    pub slots: u32,
    /// Vertices it was told to run and has not finished, oldest first.
    pub running: Vec<RunOrder>,
    /// Every vertex it was told to run.
    pub ran: Vec<RunOrder>,
    /// `CancelVertex` keys it received.
    pub cancelled: Vec<Digest>,
    /// Connected (not killed, not closed by the coordinator).
    pub alive: bool,
    /// Sends heartbeats when time advances.
    pub heartbeating: bool,
}

/// A simulated client.
#[derive(Debug, Clone, Default)]
pub struct SimClient {
    /// Everything the coordinator sent it.
    pub received: Vec<Message>,
    /// Builds it submitted (ids from `Accepted`).
    pub builds: Vec<String>,
}

/// The engine, its journal, and the simulated peers.
pub struct FarmSim {
    /// The engine under test.
    pub engine: Engine,
    /// Its journal (survives [`FarmSim::restart`]).
    pub journal: MemJournal,
    /// Simulated time.
    pub now: Instant,
    /// Simulated time zero (wall clock 0).
    start: Instant,
    opts: EngineOptions,
    workers: BTreeMap<PeerId, SimWorker>,
    clients: BTreeMap<PeerId, SimClient>,
    next_peer: PeerId,
    restarts: u32,
    /// Builds by id: how they ended.
    finished: BTreeMap<String, BuildFinished>,
    /// Exports held back by [`FarmSim::hold_exports`].
    held: Vec<(String, Vec<(String, RefDescriptor)>)>,
    hold_exports: bool,
    violations: Vec<String>,
    check: bool,
    record: bool,
    /// Runs per vertex key over the whole simulation.
    runs: BTreeMap<Digest, usize>,
}

impl FarmSim {
    /// A farm with no workers at simulated time zero.
    pub fn new(opts: EngineOptions) -> Self {
        let journal = MemJournal::new();
        let now = Instant::now();
        let engine = Engine::new(
            opts.clone(),
            Box::new(journal.clone()),
            Box::new(AllBlobs),
            now,
            0,
            "sim/0".into(),
        );
        Self {
            engine,
            journal,
            now,
            start: now,
            opts,
            workers: BTreeMap::new(),
            clients: BTreeMap::new(),
            next_peer: 1,
            restarts: 0,
            finished: BTreeMap::new(),
            held: Vec::new(),
            hold_exports: false,
            violations: Vec::new(),
            check: true,
            record: true,
            runs: BTreeMap::new(),
        }
    }

    /// Checks the placement invariants on every run (the default); a
    /// benchmark turns it off, since the check walks every worker.
    pub fn check_invariants(&mut self, on: bool) {
        self.check = on;
    }

    /// Keeps every message clients receive and every order workers run
    /// (the default); a benchmark turns it off to measure the engine's
    /// memory, not the simulator's.
    pub fn record(&mut self, on: bool) {
        self.record = on;
    }

    /// Keeps exports waiting until [`FarmSim::release_exports`] (a slow push).
    pub fn hold_exports(&mut self, hold: bool) {
        self.hold_exports = hold;
    }

    fn peer(&mut self) -> PeerId {
        let p = self.next_peer;
        self.next_peer += 1;
        p
    }

    /// A worker joins; `native` and `emulated` are platform strings.
    pub fn add_worker(
        &mut self,
        name: &str,
        native: &[&str],
        emulated: &[&str],
        slots: u32,
    ) -> PeerId {
        self.add_entitled_worker(name, native, emulated, slots, Entitlements::none())
    }

    /// A worker whose operator allows `entitlements` joins.
    pub fn add_entitled_worker(
        &mut self,
        name: &str,
        native: &[&str],
        emulated: &[&str],
        slots: u32,
        entitlements: Entitlements,
    ) -> PeerId {
        let parse = |l: &[&str]| -> Vec<Platform> {
            l.iter().map(|p| p.parse().expect("platform")).collect()
        };
        let w = SimWorker {
            name: name.into(),
            native: parse(native),
            emulated: parse(emulated),
            slots,
            running: Vec::new(),
            ran: Vec::new(),
            cancelled: Vec::new(),
            alive: true,
            heartbeating: true,
        };
        let peer = self.peer();
        let hello = Hello::offer(Role::Worker, name, &w.native, &w.emulated, slots)
            .with_entitlements(entitlements);
        self.workers.insert(peer, w);
        self.handle(Event::PeerJoined {
            peer,
            role: Role::Worker,
            name: name.into(),
            hello,
        });
        peer
    }

    /// A client connects.
    pub fn add_client(&mut self, name: &str) -> PeerId {
        let peer = self.peer();
        self.clients.insert(peer, SimClient::default());
        self.handle(Event::PeerJoined {
            peer,
            role: Role::Client,
            name: name.into(),
            hello: Hello::offer(Role::Client, name, &[], &[], 0),
        });
        peer
    }

    /// `client` submits `def`; the build id when accepted.
    pub fn submit(&mut self, client: PeerId, def: FarmDefinition) -> Option<String> {
        self.submit_with(client, def, OutputSpec::default())
    }

    /// `client` submits `def` with `output`.
    pub fn submit_with(
        &mut self,
        client: PeerId,
        def: FarmDefinition,
        output: OutputSpec,
    ) -> Option<String> {
        let before = self.clients.get(&client).map_or(0, |c| c.builds.len());
        self.handle(Event::Submit {
            peer: client,
            definition: def,
            output,
        });
        let c = self.clients.get(&client)?;
        (c.builds.len() > before).then(|| c.builds[before].clone())
    }

    /// `client` re-attaches to build `id` (after a restart).
    pub fn reattach(&mut self, client: PeerId, id: &str) {
        self.handle(Event::Message {
            peer: client,
            msg: Message::Submit(Submit {
                platforms: vec![],
                definition: vec![],
                context: vec![],
                output: vec![],
                reattach: Some(id.into()),
            }),
        });
    }

    /// `client` cancels build `id`.
    pub fn cancel(&mut self, client: PeerId, id: &str) {
        self.handle(Event::Message {
            peer: client,
            msg: Message::Cancel {
                build_id: id.into(),
            },
        });
    }

    /// Worker `w` finishes its oldest running vertex successfully; false
    /// when it runs nothing.
    pub fn finish_next(&mut self, w: PeerId) -> bool {
        let Some(order) = self
            .workers
            .get_mut(&w)
            .and_then(|x| (!x.running.is_empty()).then(|| x.running.remove(0)))
        else {
            return false;
        };
        let result = sim_result(&order.key);
        self.handle(Event::VertexDone {
            peer: w,
            key: order.key,
            result: Ok(result),
            duration_ms: 1,
        });
        true
    }

    /// Worker `w` fails the vertex `key` it runs with `error`.
    pub fn fail(&mut self, w: PeerId, key: &Digest, error: &str) {
        if let Some(x) = self.workers.get_mut(&w) {
            x.running.retain(|o| o.key != *key);
        }
        self.handle(Event::VertexDone {
            peer: w,
            key: key.clone(),
            result: Err(error.into()),
            duration_ms: 1,
        });
    }

    /// Every live worker finishes what it runs, round after round, until
    /// nothing runs; returns the vertices finished.
    pub fn run_until_idle(&mut self) -> usize {
        let mut n = 0;
        loop {
            let busy: Vec<PeerId> = self
                .workers
                .iter()
                .filter(|(_, w)| w.alive && !w.running.is_empty())
                .map(|(p, _)| *p)
                .collect();
            if busy.is_empty() {
                if self.held.is_empty() || self.hold_exports {
                    return n;
                }
                self.release_exports();
                continue;
            }
            for p in busy {
                if self.finish_next(p) {
                    n += 1;
                }
            }
        }
    }

    /// Worker `w`'s connection breaks (the process died).
    pub fn kill(&mut self, w: PeerId) {
        if let Some(x) = self.workers.get_mut(&w) {
            x.alive = false;
            x.running.clear();
        }
        self.handle(Event::PeerClosed {
            peer: w,
            reason: "connection lost".into(),
        });
    }

    /// Worker `w` stays connected but sends no heartbeat any more.
    pub fn silence(&mut self, w: PeerId) {
        if let Some(x) = self.workers.get_mut(&w) {
            x.heartbeating = false;
        }
    }

    /// Time passes by `d`, in steps of the engine's tick; heartbeating
    /// workers send one each step.
    pub fn advance(&mut self, d: Duration) {
        let step = self.engine.tick_period();
        let end = self.now + d;
        while self.now < end {
            self.now = (self.now + step).min(end);
            let beating: Vec<(PeerId, u32)> = self
                .workers
                .iter()
                .filter(|(_, w)| w.alive && w.heartbeating)
                .map(|(p, w)| (*p, w.running.len() as u32))
                .collect();
            for (p, in_use) in beating {
                self.handle(Event::Message {
                    peer: p,
                    msg: Message::Heartbeat(Heartbeat {
                        seq: 0,
                        slots_in_use: in_use,
                        cache_summary: None,
                    }),
                });
            }
            self.handle(Event::Tick);
        }
    }

    /// The coordinator restarts: a new engine over the same journal; every
    /// session is gone. Workers reconnect with [`FarmSim::rejoin`].
    pub fn restart(&mut self) {
        self.restarts += 1;
        self.engine = Engine::new(
            self.opts.clone(),
            Box::new(self.journal.clone()),
            Box::new(AllBlobs),
            self.now,
            self.now.saturating_duration_since(self.start).as_secs(),
            format!("sim/{}", self.restarts),
        );
        for w in self.workers.values_mut() {
            w.alive = false;
            w.running.clear();
        }
        self.clients.clear();
        self.held.clear();
    }

    /// Every worker that was connected before a restart reconnects under a
    /// new session; returns their new ids.
    pub fn rejoin(&mut self) -> Vec<PeerId> {
        let old: Vec<SimWorker> = std::mem::take(&mut self.workers).into_values().collect();
        old.into_iter()
            .filter(|w| w.heartbeating)
            .map(|w| {
                let n: Vec<String> = w.native.iter().map(|p| p.to_string()).collect();
                let e: Vec<String> = w.emulated.iter().map(|p| p.to_string()).collect();
                let n: Vec<&str> = n.iter().map(String::as_str).collect();
                let e: Vec<&str> = e.iter().map(String::as_str).collect();
                self.add_worker(&w.name, &n, &e, w.slots)
            })
            .collect()
    }

    /// Completes the held exports.
    pub fn release_exports(&mut self) {
        for (build, manifests) in std::mem::take(&mut self.held) {
            self.export_done(build, &manifests);
        }
    }

    fn export_done(&mut self, build: String, manifests: &[(String, RefDescriptor)]) {
        self.handle(Event::Exported {
            build,
            outcome: ExportOutcome::written(manifests),
        });
    }

    /// Hands `ev` to the engine and carries out its actions as the
    /// simulated peers would.
    pub fn handle(&mut self, ev: Event) {
        let mut pending = vec![ev];
        while let Some(ev) = pending.pop() {
            self.handle_one(ev, &mut pending);
        }
    }

    fn handle_one(&mut self, ev: Event, pending: &mut Vec<Event>) {
        self.engine.handle(self.now, ev);
        let mut exports = Vec::new();
        while let Some(a) = self.engine.poll_action() {
            match a {
                Action::Send { peer, msg } => pending.extend(self.deliver(peer, msg)),
                Action::Run { peer, order } => self.run(peer, order),
                Action::Release { .. } => {}
                Action::Close { peer, .. } => {
                    if let Some(w) = self.workers.get_mut(&peer) {
                        w.alive = false;
                        w.running.clear();
                    }
                }
                Action::Export {
                    build, manifests, ..
                } => exports.push((build, manifests)),
            }
        }
        for (build, manifests) in exports {
            if self.hold_exports {
                self.held.push((build, manifests));
            } else {
                pending.push(Event::Exported {
                    outcome: ExportOutcome::written(&manifests),
                    build,
                });
            }
        }
    }

    /// A message reaches a simulated peer; a cancelled vertex ends with an
    /// error, as a real worker reports it.
    fn deliver(&mut self, peer: PeerId, msg: Message) -> Option<Event> {
        if let Some(c) = self.clients.get_mut(&peer) {
            match &msg {
                Message::Accepted { build_id } if !c.builds.contains(build_id) => {
                    c.builds.push(build_id.clone());
                }
                Message::BuildFinished(f) => {
                    self.finished.insert(f.build_id.clone(), f.clone());
                }
                _ => {}
            }
            if self.record {
                c.received.push(msg);
            }
        } else if let Some(w) = self.workers.get_mut(&peer) {
            if let Message::CancelVertex { vertex_key } = msg {
                let k = vertex_key;
                let before = w.running.len();
                w.running.retain(|o| o.key != k);
                w.cancelled.push(k.clone());
                return (w.running.len() < before).then(|| Event::VertexDone {
                    peer,
                    key: k,
                    result: Err("cancelled".into()),
                    duration_ms: 1,
                });
            }
        }
        None
    }

    /// A `Run` action: checks the invariants, then the worker takes it.
    fn run(&mut self, peer: PeerId, order: RunOrder) {
        // The farm's shell builds every job (`Engine::run_message`): its
        // cost belongs to the engine's.
        match self.engine.job(&order) {
            Err(e) => self.violations.push(format!("job for {}: {e}", order.key)),
            Ok(_) if !self.check => {}
            Ok(job) => {
                if let Some(p) = &job.vertex.platform {
                    self.check_platform(peer, &order, p, matches!(job.vertex.op, Op::Exec(_)));
                }
            }
        }
        *self.runs.entry(order.key.clone()).or_default() += 1;
        let Some(w) = self.workers.get_mut(&peer) else {
            self.violations.push(format!("run on unknown peer {peer}"));
            return;
        };
        if !w.alive {
            self.violations
                .push(format!("run on dead worker {}", w.name));
        }
        w.running.push(order.clone());
        if self.record {
            w.ran.push(order);
        }
        if w.running.len() > w.slots as usize {
            self.violations
                .push(format!("{} runs more than its {} slots", w.name, w.slots));
        }
    }

    fn check_platform(&mut self, peer: PeerId, order: &RunOrder, p: &Platform, runs_code: bool) {
        let Some(w) = self.workers.get(&peer) else {
            return;
        };
        let native = w.native.iter().any(|n| n.matches(p));
        let emulates = w.emulated.iter().any(|n| n.matches(p));
        if !native && !emulates {
            self.violations
                .push(format!("{} on {} which cannot run {p}", order.key, w.name));
        }
        if order.emulated && (native || !runs_code) {
            self.violations.push(format!(
                "{} marked emulated on {} (native {native}, runs code {runs_code})",
                order.key, w.name
            ));
        }
        if order.emulated {
            let native_alive = self
                .workers
                .values()
                .any(|x| x.alive && x.native.iter().any(|n| n.matches(p)));
            if native_alive {
                self.violations.push(format!(
                    "{} emulated on {} while a native {p} worker is connected",
                    order.key, w.name
                ));
            }
        }
    }

    /// Invariant violations seen so far (empty when all held).
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// How build `id` ended, once it did.
    pub fn outcome(&self, id: &str) -> Option<&BuildFinished> {
        self.finished.get(id)
    }

    /// Worker `w`.
    pub fn worker(&self, w: PeerId) -> &SimWorker {
        &self.workers[&w]
    }

    /// Connected workers, by session.
    pub fn live_workers(&self) -> Vec<PeerId> {
        self.workers
            .iter()
            .filter(|(_, w)| w.alive)
            .map(|(p, _)| *p)
            .collect()
    }

    /// Client `c`.
    pub fn client(&self, c: PeerId) -> &SimClient {
        &self.clients[&c]
    }

    /// Runs of `key` over the simulation.
    pub fn runs_of(&self, key: &Digest) -> usize {
        self.runs.get(key).copied().unwrap_or(0)
    }

    /// Keys run more than once.
    pub fn rerun_keys(&self) -> Vec<Digest> {
        self.runs
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Total runs.
    pub fn total_runs(&self) -> usize {
        self.runs.values().sum()
    }
}

/// A worker's result for `key`: a manifest named after the key (the
/// simulator's store holds every blob).
fn sim_result(key: &Digest) -> VertexResult {
    VertexResult {
        manifest: Some(RefDescriptor::new(
            imgfarm_common::oci::media_types::OCI_MANIFEST,
            Digest::sha256_of(key.as_str().as_bytes()),
            1,
        )),
        ..VertexResult::default()
    }
}

/// Builds of simulated graphs: a base image, RUN steps and an export per
/// platform. Steps name `salt` so different builds differ, or share keys
/// when given the same salt.
pub mod graphs {
    use super::*;

    /// The base image vertex for `p`.
    pub fn image(p: &Platform) -> Vertex {
        Vertex::new(
            Some(p.clone()),
            Op::Image(ImageOp {
                reference: "docker.io/library/debian:12".into(),
                digest: Some(Digest::sha256_of(p.to_string().as_bytes())),
            }),
            vec![],
            "FROM debian:12".into(),
            1,
        )
    }

    /// A RUN step over `inputs` (the first is its root).
    pub fn run(p: &Platform, inputs: Vec<Digest>, cmd: &str) -> Vertex {
        run_on(p, inputs, cmd, NetworkMode::Default)
    }

    /// A RUN step with `RUN --network=<network>`.
    pub fn run_on(p: &Platform, inputs: Vec<Digest>, cmd: &str, network: NetworkMode) -> Vertex {
        Vertex::new(
            Some(p.clone()),
            Op::Exec(ExecOp {
                root: Some(0),
                args: vec!["/bin/sh".into(), "-c".into(), cmd.into()],
                env: vec![],
                cwd: "/".into(),
                user: String::new(),
                mounts: vec![],
                network,
                security: Default::default(),
            }),
            inputs,
            format!("RUN {cmd}"),
            2,
        )
    }

    /// The export of `top` for `p`.
    pub fn export(p: &Platform, img: &Digest, top: &Digest) -> Vertex {
        Vertex::new(
            Some(p.clone()),
            Op::Export(Box::new(ExportOp {
                stage: "final".into(),
                config: StageConfig::default(),
                base_image: Some(0),
            })),
            vec![img.clone(), top.clone()],
            "exporting".into(),
            0,
        )
    }

    /// For each platform: image → `shape` RUN steps → export. `shape[i]`
    /// lists, for RUN step `i`, the earlier steps it reads besides its root
    /// (step `i - 1`, or the image for the first); `salt` names the build.
    pub fn build(platforms: &[Platform], steps: &[Vec<usize>], salt: &str) -> FarmDefinition {
        build_on(platforms, steps, salt, |_| NetworkMode::Default)
    }

    /// [`build`] where RUN step `i` has `RUN --network=<network(i)>`.
    pub fn build_on(
        platforms: &[Platform],
        steps: &[Vec<usize>],
        salt: &str,
        network: impl Fn(usize) -> NetworkMode,
    ) -> FarmDefinition {
        let mut vertices = Vec::new();
        let mut targets = Vec::new();
        for p in platforms {
            let img = image(p);
            let mut keys: Vec<Digest> = Vec::new();
            vertices.push(img.clone());
            for (i, reads) in steps.iter().enumerate() {
                let root = keys.last().cloned().unwrap_or_else(|| img.key.clone());
                let mut inputs = vec![root];
                for r in reads {
                    if let Some(k) = keys.get(*r) {
                        if !inputs.contains(k) {
                            inputs.push(k.clone());
                        }
                    }
                }
                let v = run_on(p, inputs, &format!("{salt} step {i}"), network(i));
                keys.push(v.key.clone());
                vertices.push(v);
            }
            let top = keys.last().cloned().unwrap_or_else(|| img.key.clone());
            let e = export(p, &img.key, &top);
            targets.push(FarmTarget {
                platform: p.to_string(),
                export: e.key.clone(),
            });
            vertices.push(e);
        }
        FarmDefinition {
            vertices,
            targets,
            context: None,
            title: salt.into(),
        }
    }

    /// A straight chain of `n` RUN steps per platform.
    pub fn chain(platforms: &[Platform], n: usize, salt: &str) -> FarmDefinition {
        build(platforms, &vec![Vec::new(); n], salt)
    }
}

/// Distinct platforms of a simulated farm.
pub fn amd64() -> Platform {
    Platform::linux_amd64()
}

/// `linux/arm64`.
pub fn arm64() -> Platform {
    "linux/arm64".parse().expect("platform")
}

/// Keys of `def`'s RUN vertices.
pub fn run_keys(def: &FarmDefinition) -> BTreeSet<Digest> {
    def.vertices
        .iter()
        .filter(|v| matches!(v.op, Op::Exec(_)))
        .map(|v| v.key.clone())
        .collect()
}
