//! The export vertex: the image config and manifest of one platform, as
//! BuildKit's image exporter writes them (config: platform fields, the
//! stage's runtime config, base history then this build's, `rootfs.diff_ids`
//! bottom first; manifest: OCI media type, config then layers).

use super::result::LayerRef;
use super::SolveError;
use imgfarm_common::graph::image_config::StageConfig;
use imgfarm_common::oci::image::config::{rfc3339_utc, Empty};
use imgfarm_common::oci::image::{
    descriptor_for, manifest_to_json, new_manifest, History, ImageConfig, RootFs, RuntimeConfig,
};
use imgfarm_common::oci::media_types;
use imgfarm_common::oci::store::{ContentStore, RefDescriptor};
use imgfarm_common::oci::Digest;
use imgfarm_common::platform::Platform;
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// Creation time: `SOURCE_DATE_EPOCH` when set (BuildKit's rule), else now.
pub fn created_now() -> String {
    if let Some(e) = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
    {
        return rfc3339_utc(e, 0);
    }
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339_utc(d.as_secs() as i64, d.subsec_nanos())
}

fn runtime(c: &StageConfig, scratch: bool) -> Result<RuntimeConfig, SolveError> {
    let set = |v: &std::collections::BTreeSet<String>| -> BTreeMap<String, Empty> {
        v.iter().map(|k| (k.clone(), Empty {})).collect()
    };
    let healthcheck = match &c.healthcheck {
        Some(h) => Some(
            serde_json::to_value(h)
                .and_then(serde_json::from_value)
                .map_err(|e| SolveError::Internal(format!("healthcheck: {e}")))?,
        ),
        None => None,
    };
    Ok(RuntimeConfig {
        user: (!c.user.is_empty()).then(|| c.user.clone()),
        exposed_ports: set(&c.exposed_ports),
        env: c.env.clone(),
        entrypoint: c.entrypoint.clone().unwrap_or_default(),
        cmd: c.cmd.clone().unwrap_or_default(),
        volumes: set(&c.volumes),
        working_dir: if c.working_dir.is_empty() {
            scratch.then(|| "/".to_string())
        } else {
            Some(c.working_dir.clone())
        },
        labels: c.labels.clone(),
        stop_signal: (!c.stop_signal.is_empty()).then(|| c.stop_signal.clone()),
        args_escaped: c.args_escaped,
        healthcheck,
        on_build: c.onbuild.clone(),
        shell: c.shell.clone(),
    })
}

/// Write config and manifest for `platform` into `store`.
pub fn export_image(
    store: &ContentStore,
    platform: &Platform,
    stage: &StageConfig,
    base: Option<&ImageConfig>,
    layers: &[LayerRef],
) -> Result<(RefDescriptor, Digest), SolveError> {
    let created = created_now();
    let mut history: Vec<History> = base.map(|b| b.history.clone()).unwrap_or_default();
    for h in &stage.history {
        history.push(History {
            created: Some(created.clone()),
            created_by: Some(h.created_by.clone()),
            author: None,
            comment: Some(h.comment.clone()),
            empty_layer: h.empty_layer,
        });
    }
    let config = ImageConfig {
        architecture: platform.architecture.clone(),
        os: platform.os.clone(),
        variant: (!platform.variant.is_empty()).then(|| platform.variant.clone()),
        author: (!stage.author.is_empty()).then(|| stage.author.clone()),
        config: runtime(stage, base.is_none())?,
        created: Some(created),
        history,
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: layers.iter().map(|l| l.diff_id.clone()).collect(),
        },
        ..ImageConfig::default()
    };
    let cbytes = config
        .to_json()
        .map_err(|e| SolveError::Internal(format!("config json: {e}")))?;
    let cdigest = store
        .put_bytes(&cbytes)
        .map_err(|e| SolveError::Store(e.to_string()))?;
    let cdesc = descriptor_for(media_types::OCI_CONFIG, &cbytes);
    let ldescs = layers
        .iter()
        .map(|l| {
            let mut d = descriptor_for(&l.media_type, &[]);
            d.set_digest(imgfarm_common::oci::image::to_oci_digest(&l.digest));
            d.set_size(l.size);
            d
        })
        .collect();
    let m = new_manifest(cdesc, ldescs, &BTreeMap::new());
    let mbytes = manifest_to_json(&m).map_err(|e| SolveError::Internal(e.to_string()))?;
    let mdigest = store
        .put_bytes(&mbytes)
        .map_err(|e| SolveError::Store(e.to_string()))?;
    Ok((
        RefDescriptor::new(media_types::OCI_MANIFEST, mdigest, mbytes.len() as u64),
        cdigest,
    ))
}
