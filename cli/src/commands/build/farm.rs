//! `imgfarm build --farm`: the same build, run by a farm (FARM.md).
//!
//! The client does what only it can: parse the Dockerfile, resolve base
//! images into its local store and compute every vertex key ([`super::plan`]),
//! pack the context ([`pack`]). It uploads the context chunks and the base
//! image blobs that the coordinator lacks, submits the graph, renders the coordinator's progress like a
//! local build's (plus the worker of each step), then downloads the result
//! and writes every output with [`super::output`], exactly as a local build.
//! A push the coordinator did is not done again.

mod blobs;
mod control;
mod finish;
mod pack;
mod push;
mod session;
mod submit;

use super::naming::Namer;
use super::{plan, BuildArgs};
use crate::commands::du::human;
use crate::commands::farm::config::{self, FarmFlags};
use crate::commands::farm::connect::{client_hello, connect, credentials, CONNECT_TIMEOUT};
use crate::commands::GlobalArgs;
use crate::progress::Progress;
use anyhow::{bail, Context as _};
use imgfarm_common::farm::encode;
use imgfarm_common::graph::BuildGraph;
use imgfarm_common::oci::Digest;
use session::Dial;
use std::process::ExitCode;

fn env_path(var: &str) -> Option<std::path::PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(Into::into)
}

/// The farm flags of a build, with `IMGFARM_TLS_DIR` / `IMGFARM_FARM_NAME`
/// filling what the flags leave out (IMGFARM_FARM is read by clap).
fn farm_flags(a: &BuildArgs) -> FarmFlags {
    FarmFlags {
        farm: a.farm.clone(),
        tls_dir: a.tls_dir.clone().or_else(|| env_path("IMGFARM_TLS_DIR")),
        name: a
            .farm_name
            .clone()
            .or_else(|| std::env::var("IMGFARM_FARM_NAME").ok()),
    }
}

/// The client's runtime: one worker thread besides the caller's, so a
/// background task (Ctrl-C while the result is written) runs even while
/// the caller does blocking work such as the export.
fn build_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the farm client's runtime")
}

/// `1 chunk`, `2 chunks`.
fn count(n: usize, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// Compressed bytes of `blobs` in the local store.
fn stored_size(store: &imgfarm_common::oci::store::ContentStore, blobs: &[Digest]) -> u64 {
    blobs
        .iter()
        .filter_map(|d| std::fs::metadata(store.blob_path(d)).ok())
        .map(|m| m.len())
        .sum()
}

/// How long an interrupted upload keeps reconnecting (a coordinator
/// restarting mid-upload is back within seconds).
const UPLOAD_RESUME_FOR: std::time::Duration = std::time::Duration::from_secs(120);

/// Connects and uploads; when the connection is lost mid-upload (the
/// coordinator restarted), reconnects and uploads again. The coordinator
/// answers "present" for every blob it already stored, so only what the
/// loss interrupted is sent again.
async fn upload_resuming(
    dial: &Dial<'_>,
    store: &imgfarm_common::oci::store::ContentStore,
    uploads: &submit::Uploads,
    progress: &mut Progress,
) -> anyhow::Result<imgfarm_worker::link::Link> {
    let mut link = connect(dial.addr, dial.creds, dial.hello, CONNECT_TIMEOUT).await?;
    if uploads.is_empty() {
        return Ok(link);
    }
    let deadline = tokio::time::Instant::now() + UPLOAD_RESUME_FOR;
    loop {
        let e = match upload(link.handle(), store, uploads, progress).await {
            Ok(()) => return Ok(link),
            Err(e) => e,
        };
        let lost = link.connection().close_reason().is_some();
        if !lost || tokio::time::Instant::now() >= deadline {
            return Err(e);
        }
        eprintln!(
            "connection to the farm coordinator lost during the upload ({e:#}); reconnecting to resume it..."
        );
        link = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                bail!(
                    "lost the farm coordinator at {} during the upload and could not reconnect within {} s ({e:#})",
                    dial.addr,
                    UPLOAD_RESUME_FOR.as_secs()
                );
            }
            match connect(dial.addr, dial.creds, dial.hello, left).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
            }
        };
    }
}

/// Uploads what the build needs, context chunks first, and shows how
/// little of it moved: the coordinator answers "present" for every blob it
/// holds, so an unchanged chunk costs a round trip and no bytes.
async fn upload(
    link: &imgfarm_worker::link::LinkHandle,
    store: &imgfarm_common::oci::store::ContentStore,
    uploads: &submit::Uploads,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    const STEP: &str = "farm:upload";
    let mut parts = Vec::new();
    if !uploads.context.is_empty() {
        parts.push(format!(
            "build context {} ({})",
            count(uploads.context.len(), "chunk"),
            human(stored_size(store, &uploads.context))
        ));
    }
    if !uploads.images.is_empty() {
        parts.push(format!(
            "base images {} ({})",
            count(uploads.images.len(), "blob"),
            human(stored_size(store, &uploads.images))
        ));
    }
    progress.started(
        STEP,
        &format!("[internal] uploading to the farm: {}", parts.join(", ")),
    );
    for (what, unit, blobs) in [
        ("build context", "chunk", &uploads.context),
        ("base images", "blob", &uploads.images),
    ] {
        if blobs.is_empty() {
            continue;
        }
        let r = blobs::upload(link, store, blobs).await?;
        progress.log(
            STEP,
            format!(
                "{what}: sent {} of {} ({}), {} already on the coordinator\n",
                r.sent,
                count(blobs.len(), unit),
                human(r.bytes),
                r.present
            )
            .as_bytes(),
        );
    }
    progress.done(STEP);
    Ok(())
}

/// Run `imgfarm build --farm ...`.
pub fn run(g: &GlobalArgs, mut a: BuildArgs) -> anyhow::Result<ExitCode> {
    let settings = config::load(&farm_flags(&a))?;
    let creds = credentials(&settings)?;
    if !a.secrets.is_empty() {
        bail!(
            "--secret is not supported with --farm yet: secrets would have to leave this machine; \
             build locally (without --farm) to use build secrets"
        );
    }
    let super::Prepared {
        mode,
        outputs,
        state,
        store,
        ctx,
        dockerfile,
    } = super::prepare(g, &mut a)?;
    let planned = plan(&a, &store, &ctx, &dockerfile);
    let (graph, platforms) = match (planned, &a.reattach) {
        (Ok(p), _) => p,
        (Err(e), Some(_)) => {
            eprintln!("WARNING: {e:#}; steps are shown by key");
            (BuildGraph::from_vertices([]), Vec::new())
        }
        (Err(e), None) => return Err(e),
    };
    for w in &graph.warnings {
        eprintln!("WARNING: {w}");
    }
    let push = push::push_refs(&a, &outputs)?;
    let mut spec = push::output_spec(&push, a.no_cache)?;
    spec.timeout_secs = a.timeout;
    spec.step_timeout_secs = a.step_timeout;
    let dial_output = encode(&spec);

    let mut progress = Progress::new(mode);
    let (submit, uploads) = match &a.reattach {
        Some(id) => (
            submit::reattach_submission(id, dial_output.clone()),
            submit::Uploads::default(),
        ),
        None => submit::new_submission(
            &a,
            &store,
            &ctx,
            &graph,
            &platforms,
            &dockerfile.path,
            &state,
            dial_output.clone(),
            &mut progress,
        )?,
    };

    let names = Namer::new(&graph);
    let hello = client_hello(&creds);
    let dial = Dial {
        addr: &settings.farm,
        creds: &creds,
        hello: &hello,
        output: dial_output,
    };
    let rt = build_runtime()?;
    let followed = rt.block_on(async {
        let link = upload_resuming(&dial, &store, &uploads, &mut progress).await?;
        session::follow(link, &dial, submit, &names, &mut progress).await
    });
    let followed = match followed {
        Ok(f) => f,
        Err(e) => {
            progress.finish();
            return Err(e);
        }
    };
    finish::finish(
        &a,
        &store,
        &outputs,
        &push,
        followed,
        &names,
        &mut progress,
        &rt,
    )
}
