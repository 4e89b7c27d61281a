//! One `RunVertex`: check the job (every field comes from the network),
//! serve it from the worker's cache or fetch its blobs and run it, and upload
//! the result's blobs. [`check`] is pure; [`execute`] does the work.

use super::cache::{fingerprint, lookup, Fingerprints};
use super::context::open_context;
use super::fetch::{fetch_job_blobs, put_result};
use super::platforms::offers;
use super::{Ctx, MAX_LOG_CHUNK};
use crate::emulation;
use crate::link::LinkHandle;
use crate::solve::exec::CancelToken;
use crate::solve::result::VertexResult;
use crate::solve::LocalWorker;
use imgfarm_common::entitlement::Entitlements;
use imgfarm_common::farm::VertexJob;
use imgfarm_common::graph::key::vertex_key;
use imgfarm_common::graph::op::MountKind;
use imgfarm_common::graph::op::Op;
use imgfarm_common::graph::reuse;
use imgfarm_common::graph::BuildGraph;
use imgfarm_common::oci::Digest;
use imgfarm_common::platform::Platform;
use imgfarm_common::proto::{Message, VertexLog};
use imgfarm_transport::runner::{VertexError, VertexRunner};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Whether a job's result may be served from, and stored in, the worker's
/// cache: not for an `ADD URL` without a checksum, nor for anything that
/// reads one directly (its key does not cover the downloaded content, and
/// the download is solved here, outside the input fingerprint).
pub fn cacheable(job: &VertexJob) -> bool {
    reuse::reusable_op(&job.vertex.op) && job.inputs.iter().all(|i| reuse::reusable_op(&i.op))
}

/// Checks a job against what the coordinator claimed and what this worker
/// offers; the error says what is wrong. `native` and `emulated` are the
/// platforms the worker announced: a RUN for any other platform is refused.
pub fn check(
    key: &Digest,
    op: &[u8],
    native: &[Platform],
    emulated: &[Platform],
) -> Result<VertexJob, String> {
    let job: VertexJob =
        imgfarm_common::farm::decode(op, "vertex job").map_err(|e| e.to_string())?;
    let v = &job.vertex;
    if v.key != *key {
        return Err(format!(
            "the job is for vertex {}, but RunVertex names {key}",
            v.key
        ));
    }
    for x in std::iter::once(v).chain(&job.inputs) {
        let computed = vertex_key(x.platform.as_ref(), &x.op, &x.inputs);
        if computed != x.key {
            return Err(format!(
                "vertex {} ({}) does not match its content (computed {computed}): \
                 client and worker disagree on keys; are they the same imgfarm version?",
                x.key, x.description
            ));
        }
    }
    let wanted: BTreeSet<&Digest> = v.inputs.iter().collect();
    let given: BTreeSet<&Digest> = job.inputs.iter().map(|i| &i.key).collect();
    if let Some(missing) = wanted.difference(&given).next() {
        return Err(format!("the job lacks input vertex {missing}"));
    }
    if let Some(extra) = given.difference(&wanted).next() {
        return Err(format!("input vertex {extra} is not an input of {key}"));
    }
    for (k, _) in &job.input_results {
        if !wanted.contains(k) {
            return Err(format!("a result is given for {k}, which is not an input"));
        }
    }
    for i in job.inputs.iter().filter(|i| !i.op.is_source()) {
        if !job.input_results.iter().any(|(k, _)| k == &i.key) {
            return Err(format!(
                "the job lacks the result of input {} ({})",
                i.key, i.description
            ));
        }
    }
    match &v.op {
        op if op.is_source() => {
            return Err(format!(
                "vertex {key} is a {} source: sources are solved by each worker, not dispatched",
                op.kind()
            ))
        }
        Op::Image(img) if img.digest.is_none() => {
            return Err(format!(
                "base image {} has no manifest digest: the client must resolve base images \
                 before submitting",
                img.reference
            ))
        }
        Op::Exec(e) => {
            if let Some(m) = e
                .mounts
                .iter()
                .find(|m| m.spec.kind == MountKind::Secret && m.spec.required)
            {
                let id = if m.spec.id.is_empty() {
                    &m.spec.target
                } else {
                    &m.spec.id
                };
                return Err(format!(
                    "RUN --mount=type=secret,id={id}: secrets are not supported on the farm \
                     yet; build locally, or make the mount optional (required=false)"
                ));
            }
            let Some(p) = &v.platform else {
                return Err(format!("RUN vertex {key} has no platform"));
            };
            if !offers(native, emulated, p) {
                return Err(format!(
                    "this worker does not run {p} (native: {}; emulated: {})",
                    super::platform_list(native),
                    super::platform_list(emulated)
                ));
            }
        }
        _ => {}
    }
    Ok(job)
}

/// Refuses a job whose vertex needs an entitlement this worker's operator does not allow
/// (the coordinator should not have sent it: defence in depth).
pub fn check_entitlements(
    job: &VertexJob,
    worker: &str,
    allowed: &Entitlements,
) -> Result<(), String> {
    let needs = Entitlements::required_by(&job.vertex.op);
    let missing = allowed.missing(&needs);
    match missing.first() {
        None => Ok(()),
        Some(e) => Err(format!(
            "{} ({}) needs the {e} entitlement, which worker {worker} does not allow; its \
             operator allows it with `imgfarm worker --allow-entitlement {e}`",
            e.flag(),
            job.vertex.description
        )),
    }
}

/// What a finished job reports.
pub(crate) struct Outcome {
    pub(crate) result: Result<VertexResult, String>,
    pub(crate) cached: bool,
    /// A RUN step run under qemu.
    pub(crate) emulated: bool,
}

/// What a job shares with whoever may stop it.
pub(crate) struct JobControl {
    /// Set when the job is abandoned (cancel, session lost): its output is
    /// dropped from then on.
    pub(crate) abandoned: Arc<AtomicBool>,
    /// Triggered by `CancelVertex`: kills its RUN.
    pub(crate) cancel: CancelToken,
    /// Dropped with the job's slot: once the job's future is gone and its
    /// blocking run (if any) has ended, the receiver sees it closed.
    pub(crate) released: oneshot::Sender<()>,
}

/// Runs one job to its result: check, cache lookup, blob downloads, the
/// vertex itself on a blocking thread (holding a slot), result upload.
/// Output goes to `logs` as `VertexLog` frames of at most [`MAX_LOG_CHUNK`]
/// bytes, until `control.abandoned` is set; `control.cancel` kills its RUN.
pub(crate) async fn execute(
    ctx: Arc<Ctx>,
    link: LinkHandle,
    logs: mpsc::Sender<Message>,
    vertex_key: Digest,
    op: Vec<u8>,
    control: JobControl,
) -> Outcome {
    let JobControl {
        abandoned,
        cancel,
        released,
    } = control;
    let failed = |e: String| Outcome {
        result: Err(e),
        cached: false,
        emulated: false,
    };
    let permit = match Arc::clone(&ctx.slots).acquire_owned().await {
        // The slot and the release signal go together.
        Ok(p) => (p, released),
        Err(_) => return failed("the worker is shutting down".into()),
    };
    // Shared with other jobs, exclusive for the cache collection; moved
    // into the blocking run so an abandoned job still holds it until its
    // step really ends.
    let gate = Arc::clone(&ctx.gate).read_owned().await;
    let job = match check(&vertex_key, &op, &ctx.native, &ctx.emulated)
        .and_then(|j| check_entitlements(&j, &ctx.name, &ctx.entitlements).map(|()| j))
    {
        Ok(j) => j,
        Err(e) => return failed(format!("cannot run vertex {vertex_key}: {e}")),
    };
    let key = job.vertex.key.clone();
    let base_image = matches!(job.vertex.op, Op::Image(_));
    let fps = Fingerprints::new(&ctx.state);
    let fp = fingerprint(&job.input_results);
    let cacheable = cacheable(&job);
    if cacheable && !job.no_cache {
        if let Some(r) = lookup(&ctx.store, &ctx.cache, &fps, &key, &fp) {
            let none = BTreeSet::new();
            return match put_result(&link, &ctx.store, &r, base_image, &none, &ctx.metrics).await {
                Ok(()) => Outcome {
                    result: Ok(r),
                    cached: true,
                    emulated: false,
                },
                Err(e) => failed(e),
            };
        }
    }
    let remote = match fetch_job_blobs(&link, &ctx.store, &job, &ctx.metrics).await {
        Ok(r) => r,
        Err(e) => return failed(format!("vertex {} ({}): {e}", key, job.vertex.description)),
    };
    let emulated = job
        .vertex
        .platform
        .as_ref()
        .is_some_and(|p| emulation::resolve_in(p, &ctx.state).is_ok_and(|m| m.is_emulated()));
    let emulated_run = emulated && matches!(job.vertex.op, Op::Exec(_));
    let log = log_sender(logs, vertex_key, abandoned);
    let worker_ctx = Arc::clone(&ctx);
    let ran = tokio::task::spawn_blocking(move || {
        let r = solve(&worker_ctx, &job, emulated, cancel, log);
        // Recorded here, so a result finished after its job was abandoned
        // (session lost, cancel) still serves the next identical job.
        if r.is_ok() && cacheable {
            if let Err(e) = fps.put(&job.vertex.key, &fp) {
                tracing::warn!("recording the inputs of {}: {e}", job.vertex.key);
            }
            worker_ctx.cache_changed.store(true, Ordering::SeqCst);
        }
        (r, permit, gate)
    })
    .await;
    // The slot stays taken until the result is uploaded (or, for a job
    // abandoned, until its blocking run ends: at once for a cancelled RUN,
    // whose processes are killed).
    let (result, held) = match ran {
        Ok((r, permit, gate)) => (r, Some((permit, gate))),
        Err(e) => (
            Err(format!("vertex {key}: the solver thread failed: {e}")),
            None,
        ),
    };
    let outcome = conclude(result, emulated_run, async |r| {
        put_result(&link, &ctx.store, r, base_image, &remote, &ctx.metrics).await
    })
    .await;
    drop(held);
    outcome
}

/// The end of a job that ran: `upload` the result of the run. Whatever
/// fails from here on carries `emulated` (a RUN failing under qemu, or the
/// upload after one, is still an emulated step).
pub(crate) async fn conclude(
    result: Result<VertexResult, String>,
    emulated: bool,
    upload: impl AsyncFnOnce(&VertexResult) -> Result<(), String>,
) -> Outcome {
    let result = match result {
        Ok(r) => upload(&r).await.map(|()| r),
        Err(e) => Err(e),
    };
    Outcome {
        result,
        cached: false,
        emulated,
    }
}

/// The log callback of a running vertex: chunks of at most
/// [`MAX_LOG_CHUNK`] bytes sent as `VertexLog`, dropped once cancelled.
/// Runs on the blocking thread, so it may wait for the channel.
pub(crate) fn log_sender(
    logs: mpsc::Sender<Message>,
    vertex_key: Digest,
    cancelled: Arc<AtomicBool>,
) -> impl FnMut(&[u8]) + Send + 'static {
    move |data: &[u8]| {
        for chunk in data.chunks(MAX_LOG_CHUNK) {
            if cancelled.load(Ordering::SeqCst) {
                return;
            }
            let m = Message::VertexLog(VertexLog {
                vertex_key: vertex_key.clone(),
                stream: 1,
                data: chunk.to_vec(),
            });
            if logs.blocking_send(m).is_err() {
                return;
            }
        }
    }
}

/// The blocking part: unpack the context, rebuild the job's little graph,
/// preload the input results, solve the source inputs here, run the vertex.
fn solve(
    ctx: &Ctx,
    job: &VertexJob,
    emulated: bool,
    cancel: CancelToken,
    mut log: impl FnMut(&[u8]),
) -> Result<VertexResult, String> {
    let v = &job.vertex;
    let context = open_context(&ctx.store, &ctx.state, job.context.as_ref())?;
    let graph = BuildGraph::from_vertices(job.inputs.iter().cloned().chain([v.clone()]));
    let worker = LocalWorker::new(
        ctx.store.clone(),
        ctx.cache.clone(),
        Arc::new(graph),
        Arc::new(context),
        Some(Arc::clone(&ctx.executor)),
    )
    .with_cancel(cancel);
    for (k, r) in &job.input_results {
        worker.insert_result(k.clone(), r.clone());
    }
    for i in job.inputs.iter().filter(|i| i.op.is_source()) {
        worker
            .run(&i.key, false, &mut |_| {})
            .map_err(|e| VertexError::Input {
                key: i.key.clone(),
                description: i.description.clone(),
                source: Box::new(e),
            })
            .map_err(|e| e.to_string())?;
    }
    worker
        .run(&v.key, emulated, &mut log)
        .map_err(|e| VertexError::Step {
            description: v.description.clone(),
            source: Box::new(e),
        })
        .map_err(|e| e.to_string())
}
