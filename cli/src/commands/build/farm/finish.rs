//! The end of a farm build on the client: the failure told like a local
//! build's, or the result downloaded and written to every output (a push
//! the coordinator did is not repeated), and the farm's metadata.

use super::super::output::{self, ExportExtras, OutputSpec as LocalOutput};
use super::super::BuildArgs;
use super::blobs;
use super::control::Control;
use super::session::{End, Followed};
use crate::commands::build::naming::{self, Namer};
use crate::progress::Progress;
use anyhow::{anyhow, Context as _};
use imgfarm_common::oci::media_types;
use imgfarm_common::oci::store::{ContentStore, RefDescriptor};
use imgfarm_common::oci::Digest;
use imgfarm_common::platform::Platform;
use imgfarm_common::proto::{BlobHeader, BuildFinished, BuiltManifest};
use std::process::ExitCode;

/// Exit code of a build cancelled with Ctrl-C (128 + SIGINT, as shells use).
const EXIT_CANCELLED: u8 = 130;

/// Exits with [`EXIT_CANCELLED`] on SIGINT or SIGTERM.
async fn exit_on_interrupt() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    eprintln!("interrupted: the build finished on the farm; its result was not written completely");
    std::process::exit(i32::from(EXIT_CANCELLED));
}

/// `--metadata-file` keys of a farm build.
fn farm_metadata(f: &Followed, names: &Namer) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("imgfarm.farm.build_id".into(), f.build_id.clone().into());
    let vertices: serde_json::Map<String, serde_json::Value> = f
        .vertices
        .iter()
        .filter(|(k, _)| !names.is_source(k))
        .map(|(k, v)| {
            let mut o = serde_json::json!({
                "name": names.name(k, None),
                "cached": v.cached,
            });
            if let Some(p) = &v.placement {
                o["worker"] = p.worker.clone().into();
                o["emulated"] = p.emulated.into();
            }
            if let Some(e) = &v.error {
                o["error"] = e.clone().into();
            }
            (k.to_string(), o)
        })
        .collect();
    m.insert("imgfarm.farm.vertices".into(), vertices.into());
    m
}

fn report_failure(f: &Followed, msg: &str, names: &Namer, progress: &mut Progress) {
    progress.finish();
    match &f.first_failure {
        Some((key, error)) => {
            let placement = f.vertices.get(key).and_then(|v| v.placement.as_ref());
            eprintln!(
                "ERROR: failed to solve: {}",
                failure_line(names, key, placement, error)
            );
            let tail = progress.tail(key.as_str());
            if !tail.is_empty() && !error.contains(tail.last().map_or("", |s| s.as_str())) {
                eprintln!("------\n{}\n------", tail.join("\n"));
            }
        }
        None => eprintln!("ERROR: failed to solve: {msg}"),
    }
}

/// `NAME (worker W): ERROR`, without naming the step twice when the
/// worker's message already starts with the step's line. Pure.
fn failure_line(
    names: &Namer,
    key: &Digest,
    placement: Option<&naming::RanOn>,
    error: &str,
) -> String {
    let plain = names.name(key, None);
    match error.strip_prefix(plain.as_str()) {
        Some(rest) if !plain.starts_with("[vertex ") => {
            format!("{}{rest}", names.name(key, placement))
        }
        _ => format!("{}: {error}", names.name(key, placement)),
    }
}

/// The per-platform manifests of a finished build.
fn built(manifests: &[BuiltManifest]) -> anyhow::Result<Vec<(Platform, RefDescriptor)>> {
    manifests
        .iter()
        .map(|m| {
            let p: Platform = m.platform.parse().map_err(|e| {
                anyhow!(
                    "the coordinator named an invalid platform {:?}: {e}",
                    m.platform
                )
            })?;
            Ok((
                p,
                RefDescriptor::new(
                    m.media_type.clone(),
                    m.manifest.digest.clone(),
                    m.manifest.size,
                ),
            ))
        })
        .collect()
}

/// Tells the user how the build ended and writes its outputs; the session
/// is closed politely on every path.
#[allow(clippy::too_many_arguments)]
pub fn finish(
    a: &BuildArgs,
    store: &ContentStore,
    outputs: &[LocalOutput],
    push: &[String],
    mut f: Followed,
    names: &Namer,
    progress: &mut Progress,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<ExitCode> {
    // From here on the build is over on the farm: Ctrl-C (whose default
    // action the session's handler replaced) just stops the client.
    let _guard = rt.enter();
    tokio::spawn(exit_on_interrupt());
    let link = f.link.take();
    let result = conclude(
        a,
        store,
        outputs,
        push,
        f,
        link.as_ref(),
        names,
        progress,
        rt,
    );
    if let Some(l) = link {
        rt.block_on(l.close());
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn conclude(
    a: &BuildArgs,
    store: &ContentStore,
    outputs: &[LocalOutput],
    push: &[String],
    mut f: Followed,
    link: Option<&Control>,
    names: &Namer,
    progress: &mut Progress,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<ExitCode> {
    let done: BuildFinished =
        match std::mem::replace(&mut f.end, End::Cancelled { confirmed: false }) {
            End::Cancelled { confirmed } => {
                progress.finish();
                eprintln!(
                    "ERROR: build {} cancelled{}",
                    f.build_id,
                    if confirmed {
                        ""
                    } else {
                        " (not confirmed by the coordinator)"
                    }
                );
                return Ok(ExitCode::from(EXIT_CANCELLED));
            }
            End::Finished(b) => b,
        };
    let manifests = match &done.result {
        Ok(m) => built(m)?,
        Err(msg) => {
            report_failure(&f, msg, names, progress);
            return Ok(ExitCode::FAILURE);
        }
    };
    let metadata = farm_metadata(&f, names);
    let missing_push: Vec<String> = push
        .iter()
        .filter(|r| !done.pushed.contains(r))
        .cloned()
        .collect();
    if !done.pushed.is_empty() {
        progress.note(&format!(
            "pushed {} to {}",
            done.index
                .as_ref()
                .map_or("the image".to_string(), |i| i.digest.to_string()),
            done.pushed.join(", ")
        ));
    }
    let local: Vec<LocalOutput> = outputs
        .iter()
        .filter(|o| o.kind != "registry")
        .cloned()
        .collect();
    if local.is_empty() && missing_push.is_empty() {
        let index = done
            .index
            .as_ref()
            .ok_or_else(|| anyhow!("the coordinator pushed but named no index"))?;
        let result = write_push_only_files(a, index, &done.pushed, metadata);
        progress.finish();
        result?;
        return Ok(ExitCode::SUCCESS);
    }
    let multi = manifests.len() > 1;
    let index = done.index.as_ref().filter(|_| multi);
    let link = link.ok_or_else(|| anyhow!("no session left to download the result"))?;
    let digests: Vec<_> = manifests.iter().map(|(_, m)| m.digest.clone()).collect();
    const STEP: &str = "farm:download";
    progress.started(STEP, "[internal] downloading the result from the farm");
    rt.block_on(blobs::download_images(
        link.handle(),
        store,
        index.map(|i| &i.digest),
        &digests,
    ))?;
    progress.done(STEP);
    let root = index.map(|i| RefDescriptor::new(media_types::OCI_INDEX, i.digest.clone(), i.size));
    if !missing_push.is_empty() {
        let r = match &root {
            Some(r) => r.clone(),
            None => manifests[0].1.clone(),
        };
        super::super::registry::push(store, &r, &missing_push)?;
        progress.note(&format!(
            "pushing {} to {}",
            r.digest,
            missing_push.join(", ")
        ));
    }
    let extras = ExportExtras { root, metadata };
    let result = output::export_with(a, store, &local, &manifests, extras, progress);
    progress.finish();
    result?;
    Ok(ExitCode::SUCCESS)
}

/// `--iidfile` and `--metadata-file` when the coordinator's push was the
/// only output (nothing is downloaded).
fn write_push_only_files(
    a: &BuildArgs,
    index: &BlobHeader,
    pushed: &[String],
    extra: serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<()> {
    if let Some(p) = &a.iidfile {
        std::fs::write(p, index.digest.as_str())
            .with_context(|| format!("writing --iidfile {}", p.display()))?;
    }
    if let Some(p) = &a.metadata_file {
        let mut meta = serde_json::json!({
            "containerimage.digest": index.digest.as_str(),
            "containerimage.descriptor": {
                "mediaType": media_types::OCI_INDEX,
                "digest": index.digest.as_str(),
                "size": index.size,
            },
            "image.name": pushed.join(","),
        });
        for (k, v) in extra {
            meta[k] = v;
        }
        std::fs::write(p, serde_json::to_vec_pretty(&meta)?)
            .with_context(|| format!("writing --metadata-file {}", p.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::build::naming::RanOn;
    use imgfarm_common::graph::op::{ImageOp, Op};
    use imgfarm_common::graph::BuildGraph;
    use imgfarm_common::graph::Vertex;

    #[test]
    fn failure_lines_name_the_step_once() {
        let v = Vertex::new(
            Some("linux/arm64".parse().unwrap()),
            Op::Image(ImageOp {
                reference: "docker.io/library/busybox:1".into(),
                digest: None,
            }),
            vec![],
            "[linux/arm64 1/2] RUN make".into(),
            1,
        );
        let key = v.key.clone();
        let names = Namer::new(&BuildGraph::from_vertices([v]));
        let p = RanOn {
            worker: "arm1".into(),
            emulated: true,
        };
        assert_eq!(
            failure_line(&names, &key, Some(&p), "exit code 2"),
            "[linux/arm64 1/2] RUN make (worker arm1, emulated): exit code 2"
        );
        assert_eq!(
            failure_line(
                &names,
                &key,
                Some(&p),
                "[linux/arm64 1/2] RUN make: exit code 2 (on worker arm1)"
            ),
            "[linux/arm64 1/2] RUN make (worker arm1, emulated): exit code 2 (on worker arm1)"
        );
    }
}
