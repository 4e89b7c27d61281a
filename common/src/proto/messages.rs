//! The messages of the farm protocol (version [`super::PROTOCOL_VERSION`]).
//!
//! Adding a variant at the end of an enum or changing a field changes the
//! bincode layout: bump [`super::PROTOCOL_VERSION`] whenever a message
//! changes shape. Platforms travel as OCI platform strings
//! (`os/arch[/variant]`, see [`crate::platform::Platform`]) because bincode
//! cannot carry `skip_serializing_if` fields.

use crate::entitlement::Entitlements;
use crate::identity::Role;
use crate::oci::digest::Digest;
use serde::{Deserialize, Serialize};

/// What a new stream is for: its first frame, right after the preamble.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamOpen {
    /// The session's control stream (one per worker or client connection).
    Control(Hello),
    /// Upload one blob to the peer; raw bytes follow once the peer answers
    /// [`BlobPutReply::Send`].
    BlobPut(BlobHeader),
    /// Download one blob; the peer answers [`BlobGetReply`] then raw bytes.
    BlobGet(BlobRequest),
}

/// The dialer introduces itself on its control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version spoken (also in the preamble; repeated for logs).
    pub version: u32,
    /// The role claimed; it must match the role in the TLS certificate.
    pub role: Role,
    /// The name claimed; it must match the name in the TLS certificate.
    pub name: String,
    /// imgfarm release of the peer (informational).
    pub software: String,
    /// Platforms the worker runs natively (`linux/amd64`, ...). Empty for clients.
    pub native_platforms: Vec<String>,
    /// Platforms the worker can run by emulation (binfmt + qemu).
    pub emulated_platforms: Vec<String>,
    /// How many vertices the worker runs at once. 0 for clients.
    pub slots: u32,
    /// What the worker's cache holds, for cache affinity.
    pub cache_summary: CacheSummary,
    /// Entitlements the worker's operator allows (`imgfarm worker --allow-entitlement`);
    /// empty for clients. The coordinator places a step needing one only on a worker that
    /// allows it.
    pub entitlements: Entitlements,
}

/// A worker's cache, summarised for the scheduler.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheSummary {
    /// Bytes used by the cache.
    pub bytes: u64,
    /// Number of cached vertex results.
    pub entries: u64,
    /// Vertex cache keys held (may be truncated to a recent subset).
    pub keys: Vec<Digest>,
}

/// The coordinator's answer to a [`Hello`] it accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// Protocol version of the coordinator.
    pub version: u32,
    /// The coordinator's session id for this peer.
    pub session_id: u64,
    /// How often the worker must send [`Message::Heartbeat`], in milliseconds.
    pub heartbeat_interval_ms: u64,
}

/// Messages on a control stream after the [`StreamOpen::Control`] frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Coordinator accepts the session.
    Welcome(Welcome),
    /// The peer refuses the session or a request; the text says why and what to do.
    Refused(String),
    /// Worker is alive; carries its current load and cache.
    Heartbeat(Heartbeat),
    /// Coordinator asks a worker to run one vertex.
    RunVertex(RunVertex),
    /// Worker streams output of a running vertex.
    VertexLog(VertexLog),
    /// Worker reports a vertex finished (or failed).
    VertexDone(VertexDone),
    /// Ask the peer whether it holds a blob (the transfer itself uses a blob stream).
    BlobRequest(BlobRequest),
    /// Tell the peer a blob is available under this digest and size.
    BlobOffer(BlobHeader),
    /// Client submits a build.
    Submit(Submit),
    /// Coordinator accepted a submitted build.
    Accepted {
        /// The build id to re-attach with.
        build_id: String,
    },
    /// Client cancels a build (Ctrl-C).
    Cancel {
        /// The build to cancel.
        build_id: String,
    },
    /// Client asks for the farm's state.
    StatusRequest,
    /// Coordinator's farm state.
    Status(FarmStatus),
    /// Orderly end of the session.
    Bye,
    /// Coordinator → worker: stop a running vertex (its build was cancelled).
    CancelVertex {
        /// The vertex.
        vertex_key: Digest,
    },
    /// Coordinator → client: a vertex of the build was placed on a worker.
    VertexStarted(VertexStarted),
    /// Coordinator → client: a vertex of the build finished or failed.
    VertexFinished(VertexFinished),
    /// Coordinator → client: the build ended.
    BuildFinished(BuildFinished),
}

/// A vertex was placed on a worker (for the client's progress line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VertexStarted {
    /// The vertex.
    pub vertex_key: Digest,
    /// The worker's name.
    pub worker: String,
    /// True when the worker emulates the vertex's platform (binfmt/qemu).
    pub emulated: bool,
}

/// A vertex ended, for the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VertexFinished {
    /// The vertex.
    pub vertex_key: Digest,
    /// `None` on success, else the worker's message.
    pub error: Option<String>,
    /// True when the result came from the coordinator's cache (nothing ran).
    pub cached: bool,
    /// Wall time the worker spent, in milliseconds.
    pub duration_ms: u64,
}

/// One platform's image in a finished build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuiltManifest {
    /// The platform (`linux/arm64`).
    pub platform: String,
    /// The image manifest (in the coordinator's store).
    pub manifest: BlobHeader,
    /// Its media type.
    pub media_type: String,
}

/// The end of a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildFinished {
    /// The build.
    pub build_id: String,
    /// The per-platform manifests, or why the build failed.
    pub result: Result<Vec<BuiltManifest>, String>,
    /// The merged OCI index (in the coordinator's store), when it succeeded.
    pub index: Option<BlobHeader>,
    /// References the coordinator pushed the index to.
    pub pushed: Vec<String>,
}

/// Worker liveness and load.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Monotonic counter of this session's heartbeats.
    pub seq: u64,
    /// Slots in use right now.
    pub slots_in_use: u32,
    /// The worker's cache, if it changed since the last heartbeat.
    pub cache_summary: Option<CacheSummary>,
}

/// One vertex to run on a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunVertex {
    /// Build this vertex belongs to.
    pub build_id: String,
    /// The vertex's cache key, which names its result anywhere.
    pub vertex_key: Digest,
    /// Platform to run for (`linux/arm64`, ...).
    pub platform: String,
    /// Whether the worker runs it by emulation.
    pub emulated: bool,
    /// The job: JSON of [`crate::farm::VertexJob`].
    pub op: Vec<u8>,
    /// Blobs the vertex needs (layers, context), fetched over blob streams.
    pub inputs: Vec<BlobHeader>,
}

/// Output of a running vertex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VertexLog {
    /// The vertex.
    pub vertex_key: Digest,
    /// 1 = stdout, 2 = stderr.
    pub stream: u8,
    /// Raw bytes of output.
    pub data: Vec<u8>,
}

/// A vertex finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VertexDone {
    /// The vertex.
    pub vertex_key: Digest,
    /// `Ok(JSON of crate::farm::VertexResult)` (its blobs already put to
    /// the coordinator) or `Err(message)`.
    pub result: Result<Vec<u8>, String>,
    /// Wall time spent, in milliseconds.
    pub duration_ms: u64,
}

/// Names one blob by digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRequest {
    /// The blob wanted.
    pub digest: Digest,
}

/// Digest and size of a blob; the header of a blob transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobHeader {
    /// The blob's sha256 digest; the receiver verifies it.
    pub digest: Digest,
    /// The blob's exact size in bytes; the receiver verifies it.
    pub size: u64,
}

/// Receiver's answer to a [`StreamOpen::BlobPut`] header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobPutReply {
    /// Send the bytes.
    Send,
    /// Already stored: send nothing.
    Present,
    /// Refused (too big, not allowed...): the text says why.
    Refused(String),
}

/// Receiver's verdict once a blob's bytes arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobPutResult {
    /// Verified and stored.
    Stored,
    /// Rejected (digest or size mismatch, I/O error): nothing was stored.
    Rejected(String),
}

/// Sender's answer to a [`StreamOpen::BlobGet`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobGetReply {
    /// The blob follows: exactly `size` raw bytes.
    Found(BlobHeader),
    /// Not held.
    NotFound,
    /// Refused: the text says why.
    Refused(String),
}

/// A build submitted by a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submit {
    /// Target platforms (`linux/amd64`, ...).
    pub platforms: Vec<String>,
    /// The build: JSON of [`crate::farm::FarmDefinition`].
    pub definition: Vec<u8>,
    /// Context blobs uploaded beforehand over blob streams.
    pub context: Vec<BlobHeader>,
    /// Where the result goes: JSON of [`crate::farm::OutputSpec`].
    pub output: Vec<u8>,
    /// Re-attach to this build instead of submitting a new one.
    pub reattach: Option<String>,
}

/// A worker as the coordinator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// Worker name (from its certificate).
    pub name: String,
    /// Native platforms.
    pub native_platforms: Vec<String>,
    /// Emulated platforms.
    pub emulated_platforms: Vec<String>,
    /// Slots.
    pub slots: u32,
    /// Slots in use.
    pub slots_in_use: u32,
    /// Cache bytes.
    pub cache_bytes: u64,
    /// Milliseconds since its last heartbeat.
    pub last_heartbeat_ms: u64,
}

/// The farm's state for `imgfarm farm status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FarmStatus {
    /// Connected workers.
    pub workers: Vec<WorkerStatus>,
    /// Builds queued or running, oldest first.
    pub builds: Vec<BuildStatus>,
}

/// A build as the coordinator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildStatus {
    /// Build id.
    pub id: String,
    /// `queued`, `running`, `done`, `failed`, `cancelled`.
    pub state: String,
    /// Target platforms.
    pub platforms: Vec<String>,
    /// Who submitted it (client certificate name).
    pub client: String,
    /// Vertices to run.
    pub vertices_total: u64,
    /// Vertices finished.
    pub vertices_done: u64,
    /// The definition's title.
    pub title: String,
}

impl Hello {
    /// A hello offering `native` and `emulated` platforms on `slots` (none
    /// for a client), with an empty cache summary: what an in-process or
    /// simulated peer says when it joins.
    pub fn offer(
        role: Role,
        name: &str,
        native: &[crate::platform::Platform],
        emulated: &[crate::platform::Platform],
        slots: u32,
    ) -> Self {
        let names = |ps: &[crate::platform::Platform]| ps.iter().map(|p| p.to_string()).collect();
        Hello {
            version: super::PROTOCOL_VERSION,
            role,
            name: name.to_string(),
            software: env!("CARGO_PKG_VERSION").into(),
            native_platforms: names(native),
            emulated_platforms: names(emulated),
            slots,
            cache_summary: CacheSummary::default(),
            entitlements: Default::default(),
        }
    }

    /// The same hello, announcing that its operator allows `entitlements`.
    pub fn with_entitlements(mut self, entitlements: Entitlements) -> Self {
        self.entitlements = entitlements;
        self
    }
}

impl BuiltManifest {
    /// The record of `platform`'s image manifest `m`.
    pub fn new(platform: &str, m: &crate::oci::store::RefDescriptor) -> Self {
        BuiltManifest {
            platform: platform.to_string(),
            manifest: BlobHeader {
                digest: m.digest.clone(),
                size: m.size,
            },
            media_type: m.media_type.clone(),
        }
    }
}
