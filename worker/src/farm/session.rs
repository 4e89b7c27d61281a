//! One admitted session with the coordinator.
//!
//! The control stream is split ([`crate::link::Link::split`]): a reader task
//! forwards every message into a channel, a writer task drains two channels
//! (heartbeats first; job output and results in order, so a `VertexDone`
//! never overtakes its own logs). The session loop only ever waits on
//! channels and timers, so no frame is cancelled halfway.

use super::job::{execute, JobControl, Outcome};
use super::{Ctx, WorkerEvent};
use crate::link::{Link, LinkHandle, LinkReceiver, LinkSender};
use crate::metrics::{JobOutcome, WorkerMetrics};
use crate::solve::exec::CancelToken;
use imgfarm_common::oci::Digest;
use imgfarm_common::proto::{CacheSummary, Heartbeat, Message, RunVertex, VertexDone};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Frames queued for the writer before senders wait.
const QUEUE: usize = 256;
/// How long a closing session waits for its last frames to leave.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Fastest heartbeat accepted from a `Welcome` (a hostile 0 would spin).
const MIN_HEARTBEAT: Duration = Duration::from_millis(50);
/// Longest a `CancelVertex` answer waits for the job's processes to be gone
/// (and its slot freed); a job stuck outside its RUN is answered anyway.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

/// How a session ended.
pub(crate) enum End {
    /// The shutdown future completed.
    Shutdown,
    /// The connection or the stream ended; the text says why.
    Lost(String),
}

/// What the writer sends.
enum Out {
    Msg(Message),
    Bye,
}

/// A running job of this session.
struct Running {
    id: u64,
    abort: tokio::task::AbortHandle,
    /// Output of the job is dropped once set.
    abandoned: Arc<AtomicBool>,
    /// Kills the job's RUN.
    cancel: CancelToken,
    /// Closed once the job's slot is free (its processes are gone).
    released: oneshot::Receiver<()>,
}

/// The session's running jobs by vertex key. Whoever removes a job's entry
/// answers its `VertexDone` (the job when it ends, or a cancel).
#[derive(Default)]
struct Jobs {
    map: Mutex<HashMap<Digest, Running>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Jobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Running>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take(&self, key: &Digest, id: u64) -> bool {
        let mut m = self.lock();
        if m.get(key).is_some_and(|r| r.id == id) {
            m.remove(key);
            true
        } else {
            false
        }
    }

    /// The session ended: jobs are abandoned, but a RUN already started
    /// finishes (its result is cached for when the vertex comes again).
    /// Each is counted `cancelled` here, once: its entry is gone, so the job
    /// itself no longer counts (nor answers) when it ends.
    fn stop_all(&self, metrics: &WorkerMetrics) {
        for (_, r) in self.lock().drain() {
            metrics.vertex_ended("", false, false, JobOutcome::Cancelled, Duration::ZERO);
            r.abandoned.store(true, Ordering::SeqCst);
            r.abort.abort();
        }
    }
}

/// Serves `link` until it ends or `shutdown` completes. `announced` is the
/// cache summary sent in the hello.
pub(crate) async fn serve<F: Future<Output = ()>>(
    ctx: &Arc<Ctx>,
    link: Link,
    announced: CacheSummary,
    shutdown: &mut Pin<&mut F>,
) -> End {
    let period = Duration::from_millis(link.welcome.heartbeat_interval_ms).max(MIN_HEARTBEAT);
    let (handle, sender, receiver) = link.split();
    let (ctl_tx, ctl_rx) = mpsc::channel::<Out>(QUEUE);
    let (job_tx, job_rx) = mpsc::channel::<Message>(QUEUE);
    let (in_tx, mut in_rx) = mpsc::channel::<Result<Message, String>>(QUEUE);
    let mut writer = tokio::spawn(write_loop(sender, ctl_rx, job_rx));
    let reader = tokio::spawn(read_loop(receiver, in_tx));
    let jobs = Arc::new(Jobs::default());
    let mut last_summary = announced;
    let mut seq = 0u64;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let end = loop {
        tokio::select! {
            () = &mut *shutdown => break End::Shutdown,
            _ = tick.tick() => {
                seq += 1;
                let mut summary = None;
                if ctx.cache_changed.swap(false, Ordering::SeqCst) {
                    let s = ctx.summary().await;
                    if s != last_summary {
                        last_summary = s.clone();
                        summary = Some(s);
                    }
                }
                let hb = Heartbeat { seq, slots_in_use: ctx.slots_in_use(), cache_summary: summary };
                if ctl_tx.send(Out::Msg(Message::Heartbeat(hb))).await.is_err() {
                    break End::Lost("the control stream writer stopped".into());
                }
            }
            m = in_rx.recv() => match m {
                Some(Ok(Message::RunVertex(rv))) => start_job(ctx, &handle, &job_tx, &jobs, rv),
                Some(Ok(Message::CancelVertex { vertex_key })) => {
                    cancel_job(ctx, &jobs, &job_tx, vertex_key);
                }
                Some(Ok(Message::Bye)) => break End::Lost("the coordinator ended the session".into()),
                // A refusal ends the session only when the coordinator also
                // closes the connection (which the reader then reports).
                Some(Ok(Message::Refused(why))) => tracing::warn!("the coordinator refused: {why}"),
                Some(Ok(other)) => {
                    tracing::warn!("ignoring an unexpected message from the coordinator: {other:?}");
                }
                Some(Err(e)) => break End::Lost(e),
                None => break End::Lost("the coordinator closed the control stream".into()),
            },
            r = &mut writer => {
                let why = match r {
                    Ok(Err(e)) => e,
                    _ => "the control stream writer stopped".to_string(),
                };
                jobs.stop_all(&ctx.metrics);
                reader.abort();
                handle.connection().close(0u32.into(), b"writer failed");
                return End::Lost(why);
            }
        }
    };
    jobs.stop_all(&ctx.metrics);
    reader.abort();
    if matches!(end, End::Shutdown) {
        let _ = ctl_tx.send(Out::Bye).await;
        let _ = tokio::time::timeout(CLOSE_GRACE, &mut writer).await;
    }
    writer.abort();
    let _ = tokio::time::timeout(CLOSE_GRACE, handle.close()).await;
    end
}

/// Reads control messages into `tx` until the stream ends.
async fn read_loop(mut receiver: LinkReceiver, tx: mpsc::Sender<Result<Message, String>>) {
    loop {
        let item = match receiver.recv().await {
            Ok(Some(m)) => Ok(m),
            Ok(None) => return,
            Err(e) => Err(e.to_string()),
        };
        let stop = item.is_err();
        if tx.send(item).await.is_err() || stop {
            return;
        }
    }
}

/// Writes queued frames, heartbeats first. Ends on [`Out::Bye`] (after
/// sending it) or a write error.
async fn write_loop(
    mut sender: LinkSender,
    mut ctl: mpsc::Receiver<Out>,
    mut jobs: mpsc::Receiver<Message>,
) -> Result<(), String> {
    loop {
        let next = tokio::select! {
            biased;
            m = ctl.recv() => m,
            m = jobs.recv() => m.map(Out::Msg),
        };
        match next {
            Some(Out::Msg(m)) => sender.send(&m).await.map_err(|e| e.to_string())?,
            Some(Out::Bye) | None => {
                sender.bye().await;
                return Ok(());
            }
        }
    }
}

fn start_job(
    ctx: &Arc<Ctx>,
    link: &LinkHandle,
    out: &mpsc::Sender<Message>,
    jobs: &Arc<Jobs>,
    rv: RunVertex,
) {
    let RunVertex {
        build_id,
        vertex_key: key,
        platform,
        op,
        ..
    } = rv;
    let mut map = jobs.lock();
    if map.contains_key(&key) {
        tracing::warn!("vertex {key} is already running here; ignoring the second RunVertex");
        return;
    }
    let id = jobs.next_id.fetch_add(1, Ordering::Relaxed);
    let abandoned = Arc::new(AtomicBool::new(false));
    let cancel = CancelToken::new();
    let (released_tx, released) = oneshot::channel();
    let control = JobControl {
        abandoned: Arc::clone(&abandoned),
        cancel: cancel.clone(),
        released: released_tx,
    };
    let task = {
        let key = key.clone();
        let (ctx, link, out, jobs) = (Arc::clone(ctx), link.clone(), out.clone(), Arc::clone(jobs));
        async move {
            let t0 = Instant::now();
            tracing::info!(build = %build_id, vertex = %key, platform = %platform, "running");
            let Outcome {
                result,
                cached,
                emulated,
            } = execute(
                Arc::clone(&ctx),
                link,
                out.clone(),
                key.clone(),
                op,
                control,
            )
            .await;
            if !jobs.take(&key, id) {
                return; // cancelled meanwhile: the cancel answered.
            }
            // A full disk is the worker's failure, not the step's: say so (the
            // OS text stays, so the coordinator requeues the step elsewhere).
            let result = result.map_err(|e| {
                if imgfarm_common::farm::out_of_space(&e) {
                    format!(
                        "worker {} is out of disk space in its state directory {} \
                         (nothing partial was kept; free space or lower --cache-max): {e}",
                        ctx.name,
                        ctx.state.display()
                    )
                } else {
                    e
                }
            });
            let outcome = if result.is_ok() {
                JobOutcome::Succeeded
            } else {
                JobOutcome::Failed
            };
            ctx.metrics
                .vertex_ended(&platform, emulated, cached, outcome, t0.elapsed());
            ctx.emit(WorkerEvent::VertexDone {
                key: key.clone(),
                error: result.as_ref().err().cloned(),
                cached,
            });
            let done = VertexDone {
                vertex_key: key,
                result: result.map(|r| imgfarm_common::farm::encode(&r)),
                duration_ms: u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX),
            };
            let _ = out.send(Message::VertexDone(done)).await;
            ctx.collect_soon();
        }
    };
    // The entry goes in before the task can look for it (the lock is held).
    let abort = tokio::spawn(task).abort_handle();
    map.insert(
        key,
        Running {
            id,
            abort,
            abandoned,
            cancel,
            released,
        },
    );
}

/// `CancelVertex`: stop the job (its RUN's processes are killed, its work
/// dirs removed, nothing cached or uploaded) and answer `cancelled` once its
/// slot is free, or after [`CANCEL_WAIT`] at most. The vertex key is free
/// for a new `RunVertex` at once.
fn cancel_job(ctx: &Ctx, jobs: &Jobs, out: &mpsc::Sender<Message>, key: Digest) {
    let running = jobs.lock().remove(&key);
    let Some(r) = running else {
        tracing::debug!("cancel for {key}, which is not running here");
        return;
    };
    ctx.metrics
        .vertex_ended("", false, false, JobOutcome::Cancelled, Duration::ZERO);
    r.abandoned.store(true, Ordering::SeqCst);
    r.cancel.cancel();
    r.abort.abort();
    let out = out.clone();
    tokio::spawn(async move {
        let t0 = Instant::now();
        // Never sent: the sender closes when the job's slot is dropped.
        if tokio::time::timeout(CANCEL_WAIT, r.released).await.is_err() {
            tracing::warn!(
                "vertex {key}: still stopping after {}s; answering the cancel anyway",
                CANCEL_WAIT.as_secs()
            );
        }
        tracing::info!(vertex = %key, ms = t0.elapsed().as_millis() as u64, "cancelled");
        let done = VertexDone {
            vertex_key: key,
            result: Err("cancelled".into()),
            duration_ms: 0,
        };
        let _ = out.send(Message::VertexDone(done)).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::WorkerGauges;

    /// Jobs abandoned when the session ends are counted `cancelled`, once:
    /// the job ending later finds its entry gone and counts nothing.
    #[tokio::test]
    async fn abandoned_jobs_are_counted_cancelled_once() {
        let metrics = WorkerMetrics::new(0);
        let jobs = Jobs::default();
        let key = Digest::sha256_of(b"vertex");
        let (_released_tx, released) = oneshot::channel();
        let abort = tokio::spawn(std::future::pending::<()>()).abort_handle();
        jobs.lock().insert(
            key.clone(),
            Running {
                id: 7,
                abort,
                abandoned: Arc::new(AtomicBool::new(false)),
                cancel: CancelToken::new(),
                released,
            },
        );
        jobs.stop_all(&metrics);
        // What the job's task does when it ends: nothing left to count.
        assert!(!jobs.take(&key, 7));
        jobs.stop_all(&metrics);
        let text = metrics.render(WorkerGauges::default());
        assert!(
            text.contains(
                "imgfarm_worker_vertices_total{outcome=\"cancelled\",cached=\"false\"} 1\n"
            ),
            "{text}"
        );
    }
}
