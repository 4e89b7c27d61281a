//! `imgfarm build --farm`: the same build, run by a farm (FARM.md).
//!
//! The client does what only it can: parse the Dockerfile, resolve base
//! images into its local store and compute every vertex key ([`super::plan`]),
//! pack the context ([`pack`]). It uploads the context layer and the base
//! image blobs, submits the graph, renders the coordinator's progress like a
//! local build's (plus the worker of each step), then downloads the result
//! and writes every output with [`super::output`], exactly as a local build.
//! A push the coordinator did is not done again.

mod blobs;
mod naming;
mod pack;
mod session;

use super::output::{self, ExportExtras, OutputSpec as LocalOutput};
use super::{open_context, plan, read_dockerfile, BuildArgs};
use crate::commands::du::human;
use crate::commands::farm::config::{self, FarmFlags};
use crate::commands::farm::connect::{
    client_hello, connect, credentials, runtime, CONNECT_TIMEOUT,
};
use crate::commands::GlobalArgs;
use crate::progress::{Mode, Progress};
use anyhow::{anyhow, bail, Context as _};
use imgfarm_common::context::BuildContext;
use imgfarm_common::farm::{
    encode, ContextBlob, FarmDefinition, FarmTarget, OutputSpec, RegistryCredential,
};
use imgfarm_common::graph::op::Op;
use imgfarm_common::graph::BuildGraph;
use imgfarm_common::oci::media_types;
use imgfarm_common::oci::store::{ContentStore, RefDescriptor};
use imgfarm_common::oci::Digest;
use imgfarm_common::platform::Platform;
use imgfarm_common::proto::{BlobHeader, BuildFinished, BuiltManifest, Submit};
use imgfarm_common::registry::{tls::allows_plain_http, CredentialSources, Reference, Secret};
use naming::Namer;
use session::{Dial, End, Followed};
use std::path::Path;
use std::process::ExitCode;

/// Exit code of a build cancelled with Ctrl-C (128 + SIGINT, as shells use).
const EXIT_CANCELLED: u8 = 130;

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

/// The refs to push: the names of every registry output (`--push -t ...`).
fn push_refs(a: &BuildArgs, outputs: &[LocalOutput]) -> anyhow::Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for o in outputs.iter().filter(|o| o.kind == "registry") {
        for n in output::names(a, o)? {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    Ok(out)
}

/// Where the push goes, with the client's credentials for those hosts
/// (docker/podman config, lent for this build only) and the hosts it would
/// itself reach over plain http (loopback registries).
fn output_spec(push: &[String], no_cache: bool) -> anyhow::Result<OutputSpec> {
    let mut hosts: Vec<String> = Vec::new();
    for r in push {
        let parsed: Reference = r.parse().map_err(|e| anyhow!("--push {r}: {e}"))?;
        if !hosts.contains(&parsed.registry) {
            hosts.push(parsed.registry);
        }
    }
    let sources = CredentialSources::from_env();
    let mut credentials = Vec::new();
    for h in &hosts {
        match sources.lookup(h) {
            Ok(Some(c)) => match c.secret {
                Secret::Basic { username, password } => credentials.push(RegistryCredential {
                    host: h.clone(),
                    username,
                    secret: password,
                }),
                Secret::IdentityToken(_) => eprintln!(
                    "WARNING: the credential for {h} in {} is an identity token, which cannot be \
                     lent to the farm; the coordinator pushes to {h} without credentials",
                    c.source
                ),
            },
            Ok(None) => {}
            Err(e) => eprintln!("WARNING: credentials for {h}: {e}"),
        }
    }
    let insecure = hosts
        .iter()
        .filter(|h| allows_plain_http(h, &[]))
        .cloned()
        .collect();
    Ok(OutputSpec {
        push: push.to_vec(),
        credentials,
        insecure,
        no_cache,
    })
}

fn title(a: &BuildArgs, dockerfile: &Path) -> String {
    if !a.tags.is_empty() {
        return a.tags.join(", ");
    }
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    format!("{} in {}", name(dockerfile), name(&a.context))
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
    a.context = std::fs::canonicalize(&a.context).with_context(|| {
        format!(
            "build context {}: cannot resolve the directory (does it exist?)",
            a.context.display()
        )
    })?;
    let mode = Mode::parse(&a.progress).map_err(|e| anyhow!(e))?;
    let outputs = output::parse_outputs(&a)?;
    let state = g.state_dir();
    std::fs::create_dir_all(&state)
        .with_context(|| format!("creating state directory {}", state.display()))?;
    let store = ContentStore::open(&state)
        .with_context(|| format!("opening the image store in {}", state.display()))?;
    let (_, _, dockerfile_path) = read_dockerfile(&a)?;
    let ctx = open_context(&a, &dockerfile_path)?;
    let planned = plan(&a, &store, &ctx);
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
    let push = push_refs(&a, &outputs)?;
    let spec = output_spec(&push, a.no_cache)?;
    let dial_output = encode(&spec);

    let mut progress = Progress::new(mode);
    let (submit, uploads) = match &a.reattach {
        Some(id) => (reattach_submission(id, dial_output.clone()), Vec::new()),
        None => new_submission(
            &a,
            &store,
            &ctx,
            &graph,
            &platforms,
            &dockerfile_path,
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
    let rt = runtime()?;
    let followed = rt.block_on(async {
        let link = connect(&settings.farm, &creds, &hello, CONNECT_TIMEOUT).await?;
        if !uploads.is_empty() {
            let total: u64 = uploads
                .iter()
                .filter_map(|d| std::fs::metadata(store.blob_path(d)).ok())
                .map(|m| m.len())
                .sum();
            const STEP: &str = "farm:upload";
            progress.started(
                STEP,
                &format!(
                    "[internal] uploading {} blobs ({}) to the farm",
                    uploads.len(),
                    human(total)
                ),
            );
            let r = blobs::upload(&link, &store, &uploads).await?;
            progress.log(
                STEP,
                format!(
                    "sent {} ({}), {} already on the coordinator\n",
                    r.sent,
                    human(r.bytes),
                    r.present
                )
                .as_bytes(),
            );
            progress.done(STEP);
        }
        session::follow(link, &dial, submit, &names, &mut progress).await
    });
    let followed = match followed {
        Ok(f) => f,
        Err(e) => {
            progress.finish();
            return Err(e);
        }
    };
    finish(
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

/// Re-attaching to a build submitted before: only the output (credentials
/// again) travels.
fn reattach_submission(id: &str, output: Vec<u8>) -> Submit {
    Submit {
        platforms: Vec::new(),
        definition: Vec::new(),
        context: Vec::new(),
        output,
        reattach: Some(id.to_string()),
    }
}

/// A new build: the context packed (when a step reads it), the definition,
/// and every blob the coordinator needs before it accepts the build.
#[allow(clippy::too_many_arguments)]
fn new_submission(
    a: &BuildArgs,
    store: &ContentStore,
    ctx: &BuildContext,
    graph: &BuildGraph,
    platforms: &[Platform],
    dockerfile: &Path,
    output: Vec<u8>,
    progress: &mut Progress,
) -> anyhow::Result<(Submit, Vec<Digest>)> {
    let reads_context = graph
        .vertices()
        .iter()
        .any(|v| matches!(v.op, Op::Context(_)));
    let context = if reads_context {
        const STEP: &str = "farm:pack";
        progress.started(STEP, "[internal] packing the build context");
        let packed = pack::pack_context(store, ctx)?;
        progress.log(
            STEP,
            format!(
                "{} entries, {} compressed\n",
                packed.entries,
                human(packed.layer.size)
            )
            .as_bytes(),
        );
        progress.done(STEP);
        tracing::debug!(selection = %packed.selection, layer = %packed.layer.digest, "packed the build context");
        Some(packed)
    } else {
        None
    };
    let mut uploads = blobs::base_image_blobs(store, graph)?;
    if let Some(c) = &context {
        if !uploads.contains(&c.layer.digest) {
            uploads.insert(0, c.layer.digest.clone());
        }
    }
    let definition = FarmDefinition {
        vertices: graph.vertices().into_iter().cloned().collect(),
        targets: graph
            .targets
            .iter()
            .map(|t| FarmTarget {
                platform: t.platform.to_string(),
                export: t.export.clone(),
            })
            .collect(),
        context: context.as_ref().map(|c| ContextBlob {
            layer: c.layer.clone(),
        }),
        title: title(a, dockerfile),
    };
    definition
        .validate()
        .map_err(|e| anyhow!("internal error: {e}"))?;
    let submit = Submit {
        platforms: platforms.iter().map(ToString::to_string).collect(),
        definition: encode(&definition),
        context: context
            .as_ref()
            .map(|c| BlobHeader::from(&c.layer))
            .into_iter()
            .collect(),
        output,
        reattach: None,
    };
    Ok((submit, uploads))
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
            (k.clone(), o)
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
            let tail = progress.tail(key);
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
    key: &str,
    placement: Option<&naming::Placement>,
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

#[allow(clippy::too_many_arguments)]
fn finish(
    a: &BuildArgs,
    store: &ContentStore,
    outputs: &[LocalOutput],
    push: &[String],
    mut f: Followed,
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
    let link = f
        .link
        .take()
        .ok_or_else(|| anyhow!("no session left to download the result"))?;
    let digests: Vec<_> = manifests.iter().map(|(_, m)| m.digest.clone()).collect();
    const STEP: &str = "farm:download";
    progress.started(STEP, "[internal] downloading the result from the farm");
    rt.block_on(blobs::download_images(
        &link,
        store,
        index.map(|i| &i.digest),
        &digests,
    ))?;
    progress.done(STEP);
    rt.block_on(link.close());
    let root = index.map(|i| RefDescriptor::new(media_types::OCI_INDEX, i.digest.clone(), i.size));
    if !missing_push.is_empty() {
        let r = match &root {
            Some(r) => r.clone(),
            None => manifests[0].1.clone(),
        };
        super::registry::push(store, &r, &missing_push)?;
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
    use super::naming::Placement;
    use super::*;
    use imgfarm_common::graph::op::{ImageOp, Op};
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
        let key = v.key.to_string();
        let names = Namer::new(&BuildGraph::from_vertices([v]));
        let p = Placement {
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

    #[test]
    fn loopback_push_targets_may_use_plain_http() {
        let spec = output_spec(
            &[
                "localhost:5000/app:1".to_string(),
                "127.0.0.1:5001/app:1".to_string(),
                "registry.example/app:1".to_string(),
            ],
            true,
        )
        .unwrap();
        assert_eq!(spec.insecure, vec!["localhost:5000", "127.0.0.1:5001"]);
        assert!(spec.no_cache);
        assert_eq!(spec.push.len(), 3);
        assert!(output_spec(&["Not A Ref!".to_string()], false).is_err());
    }
}
