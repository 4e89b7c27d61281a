//! One farm build as the client follows it (FARM.md "Message flow"):
//! submit (or re-attach), render progress until `BuildFinished`, cancel on
//! Ctrl-C, and re-attach by build id when the connection is lost.
//!
//! Once accepted, the session is a [`Control`]: its reader runs in a task
//! of its own, so Ctrl-C (or a cancel timeout) never interrupts a frame.

use super::control::Control;
use super::submit::reattach_submission;
use crate::commands::build::naming::{Namer, RanOn};
use crate::commands::farm::connect::connect;
use crate::progress::Progress;
use anyhow::{anyhow, bail, Context as _};
use imgfarm_common::identity::Credentials;
use imgfarm_common::oci::Digest;
use imgfarm_common::proto::{BuildFinished, Hello, Message, Submit};
use imgfarm_worker::link::{Link, LinkError};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::Instant;

/// How long the coordinator may take to confirm a cancel.
pub const CANCEL_WAIT: Duration = Duration::from_secs(10);
/// How long the client keeps trying to re-attach after losing the coordinator.
pub const REATTACH_FOR: Duration = Duration::from_secs(300);
/// How long the coordinator may take to accept a submission.
const ACCEPT_WAIT: Duration = Duration::from_secs(120);

/// Everything needed to (re)connect.
pub struct Dial<'a> {
    /// Coordinator address.
    pub addr: &'a str,
    /// Client credentials.
    pub creds: &'a Credentials,
    /// Client hello.
    pub hello: &'a Hello,
    /// The encoded OutputSpec (credentials included) sent on each re-attach.
    pub output: Vec<u8>,
}

/// What the client saw of one vertex.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VertexSeen {
    /// Where it ran (the last placement, after any failover).
    pub placement: Option<RanOn>,
    /// Served from the coordinator's cache.
    pub cached: bool,
    /// Its error, if it failed.
    pub error: Option<String>,
    /// Its end was shown (a replay after re-attaching is not shown twice).
    pub finished: bool,
}

/// How the build ended for the client.
#[derive(Debug)]
pub enum End {
    /// The coordinator reported the end.
    Finished(BuildFinished),
    /// The user cancelled; `confirmed` when the coordinator said so in time.
    Cancelled {
        /// The coordinator sent BuildFinished after the Cancel.
        confirmed: bool,
    },
}

/// The whole story of a followed build.
#[derive(Debug)]
pub struct Followed {
    /// The coordinator's build id.
    pub build_id: String,
    /// How it ended.
    pub end: End,
    /// Per vertex key.
    pub vertices: BTreeMap<Digest, VertexSeen>,
    /// The first vertex that failed, with its error.
    pub first_failure: Option<(Digest, String)>,
    /// The session, when still usable (to download results).
    pub link: Option<Control>,
}

/// A build the user cancelled without the coordinator confirming it.
fn unconfirmed(
    build_id: String,
    vertices: BTreeMap<Digest, VertexSeen>,
    first_failure: Option<(Digest, String)>,
) -> Followed {
    Followed {
        build_id,
        end: End::Cancelled { confirmed: false },
        vertices,
        first_failure,
        link: None,
    }
}

enum Step {
    Signal,
    CancelTimeout,
    Recv(Result<Option<Message>, LinkError>),
}

fn interrupts() -> anyhow::Result<(Signal, Signal)> {
    Ok((
        signal(SignalKind::interrupt())
            .map_err(|e| anyhow!("installing the Ctrl-C handler: {e}"))?,
        signal(SignalKind::terminate())
            .map_err(|e| anyhow!("installing the SIGTERM handler: {e}"))?,
    ))
}

/// Why a submission was not accepted.
#[derive(Debug)]
enum NotAccepted {
    /// The coordinator said no (unknown build, missing blob, bad definition):
    /// asking again will not help.
    Refused(String),
    /// The session failed or timed out.
    Failed(anyhow::Error),
}

impl From<NotAccepted> for anyhow::Error {
    fn from(n: NotAccepted) -> Self {
        match n {
            NotAccepted::Refused(why) => anyhow!("the coordinator refused the build: {why}"),
            NotAccepted::Failed(e) => e,
        }
    }
}

/// Sends `submit` and waits for the coordinator's `Accepted`.
async fn submit_and_wait(link: &mut Link, submit: Submit) -> Result<String, NotAccepted> {
    let failed = |e: LinkError| NotAccepted::Failed(e.into());
    link.send(&Message::Submit(submit)).await.map_err(failed)?;
    let wait = async {
        loop {
            match link.recv().await.map_err(failed)? {
                Some(Message::Accepted { build_id }) => return Ok(build_id),
                Some(Message::Refused(why)) => return Err(NotAccepted::Refused(why)),
                Some(_) => continue,
                None => {
                    return Err(NotAccepted::Failed(anyhow!(
                        "the coordinator closed the session before accepting the build"
                    )))
                }
            }
        }
    };
    tokio::time::timeout(ACCEPT_WAIT, wait).await.map_err(|_| {
        NotAccepted::Failed(anyhow!(
            "the coordinator did not accept the build within {}s",
            ACCEPT_WAIT.as_secs()
        ))
    })?
}

/// A fresh session re-attached to `build_id`, trying until `deadline`.
async fn reattach(dial: &Dial<'_>, build_id: &str, deadline: Instant) -> anyhow::Result<Link> {
    let mut last = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!(
                "lost the farm coordinator at {} and could not re-attach to build {build_id} within {}s ({last}); \
                 re-attach later with `imgfarm build --reattach {build_id}` and the same flags",
                dial.addr,
                REATTACH_FOR.as_secs()
            );
        }
        match connect(dial.addr, dial.creds, dial.hello, left).await {
            Ok(mut link) => {
                let submit = reattach_submission(build_id, dial.output.clone());
                match submit_and_wait(&mut link, submit).await {
                    Ok(_) => return Ok(link),
                    Err(NotAccepted::Refused(why)) => {
                        bail!("the coordinator refused to re-attach to build {build_id}: {why}")
                    }
                    Err(NotAccepted::Failed(e)) => last = e.to_string(),
                }
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Submits `submit` (a new build, or a re-attach when `submit.reattach` is
/// set) on `link` and follows the build to its end.
pub async fn follow(
    mut link: Link,
    dial: &Dial<'_>,
    submit: Submit,
    names: &Namer,
    progress: &mut Progress,
) -> anyhow::Result<Followed> {
    let (mut sigint, mut sigterm) = interrupts()?;
    let build_id = match submit_and_wait(&mut link, submit).await {
        Ok(id) => id,
        Err(e) => {
            // Say goodbye, so the coordinator does not wait for the idle timeout.
            link.close().await;
            return Err(anyhow::Error::from(e)).with_context(|| {
                format!(
                    "submitting the build to the farm coordinator at {}",
                    dial.addr
                )
            });
        }
    };
    progress.fact("build id", "farm_build_id", &build_id);
    let mut link = Some(Control::start(link));
    let mut vertices: BTreeMap<Digest, VertexSeen> = BTreeMap::new();
    let mut first_failure = None;
    let mut cancel_at: Option<Instant> = None;
    loop {
        let Some(l) = link.as_mut() else {
            // Lost: re-attach, still listening for Ctrl-C.
            let deadline = Instant::now() + REATTACH_FOR;
            let id = build_id.clone();
            let fut = reattach(dial, &id, deadline);
            tokio::pin!(fut);
            let got = loop {
                tokio::select! {
                    r = &mut fut => break r,
                    _ = sigint.recv() => {}
                    _ = sigterm.recv() => {}
                }
                if cancel_at.is_some() {
                    return Ok(unconfirmed(build_id, vertices, first_failure));
                }
                eprintln!("cancel requested: the build is cancelled once the coordinator is back (Ctrl-C again to quit now)");
                cancel_at = Some(Instant::now() + REATTACH_FOR + CANCEL_WAIT);
            };
            let mut fresh = Control::start(got?);
            eprintln!("re-attached to build {build_id}");
            if cancel_at.is_some() {
                let _ = fresh
                    .send(&Message::Cancel {
                        build_id: build_id.clone(),
                    })
                    .await;
                cancel_at = Some(Instant::now() + CANCEL_WAIT);
            }
            link = Some(fresh);
            continue;
        };
        let step = tokio::select! {
            biased;
            _ = sigint.recv() => Step::Signal,
            _ = sigterm.recv() => Step::Signal,
            _ = tokio::time::sleep_until(cancel_at.unwrap_or_else(Instant::now)), if cancel_at.is_some() => Step::CancelTimeout,
            r = l.recv() => Step::Recv(r),
        };
        match step {
            Step::Signal if cancel_at.is_some() => {
                return Ok(unconfirmed(build_id, vertices, first_failure));
            }
            Step::Signal => {
                progress.finish();
                eprintln!("cancelling build {build_id} on the farm (Ctrl-C again to quit now)...");
                cancel_at = Some(Instant::now() + CANCEL_WAIT);
                if l.send(&Message::Cancel {
                    build_id: build_id.clone(),
                })
                .await
                .is_err()
                {
                    link = None;
                }
            }
            Step::CancelTimeout => {
                eprintln!(
                    "the coordinator did not confirm the cancel within {}s",
                    CANCEL_WAIT.as_secs()
                );
                return Ok(unconfirmed(build_id, vertices, first_failure));
            }
            Step::Recv(Ok(Some(msg))) => match msg {
                Message::VertexStarted(s) => {
                    let seen = vertices.entry(s.vertex_key.clone()).or_default();
                    // A replay after re-attaching names the same worker: shown once.
                    let shown = seen.finished
                        || seen
                            .placement
                            .as_ref()
                            .is_some_and(|p| p.worker == s.worker);
                    if !shown {
                        let p = RanOn {
                            worker: s.worker,
                            emulated: s.emulated,
                        };
                        progress
                            .started(s.vertex_key.as_str(), &names.name(&s.vertex_key, Some(&p)));
                        seen.placement = Some(p);
                    }
                }
                Message::VertexLog(l) => progress.log(l.vertex_key.as_str(), &l.data),
                Message::VertexFinished(f) => {
                    let seen = vertices.entry(f.vertex_key.clone()).or_default();
                    if seen.finished {
                        continue;
                    }
                    seen.finished = true;
                    match (&f.error, &seen.placement) {
                        (Some(e), _) => {
                            if seen.placement.is_none() {
                                progress.started(
                                    f.vertex_key.as_str(),
                                    &names.name(&f.vertex_key, None),
                                );
                            }
                            progress.failed(f.vertex_key.as_str(), e);
                            seen.error = Some(e.clone());
                            first_failure.get_or_insert((f.vertex_key.clone(), e.clone()));
                        }
                        (None, Some(_)) => progress.done(f.vertex_key.as_str()),
                        (None, None) if names.is_source(&f.vertex_key) => {}
                        (None, None) => {
                            seen.cached = f.cached;
                            progress
                                .cached(f.vertex_key.as_str(), &names.name(&f.vertex_key, None));
                        }
                    }
                }
                Message::BuildFinished(b) if b.build_id == build_id => {
                    let end = if cancel_at.is_some() {
                        End::Cancelled { confirmed: true }
                    } else {
                        End::Finished(b)
                    };
                    return Ok(Followed {
                        build_id,
                        end,
                        vertices,
                        first_failure,
                        link,
                    });
                }
                Message::Refused(why) => {
                    eprintln!("WARNING: the coordinator refused a request: {why}");
                }
                _ => {}
            },
            Step::Recv(Ok(None)) => {
                eprintln!(
                    "the farm coordinator ended the session; re-attaching to build {build_id}..."
                );
                link = None;
            }
            Step::Recv(Err(e)) => {
                let why = e.to_string();
                eprintln!("connection to the farm coordinator lost ({why}); re-attaching to build {build_id}...");
                link = None;
            }
        }
    }
}
