//! `imgfarm load [-i FILE]`: import a docker-archive (`docker save`,
//! `skopeo copy ... docker-archive:`) or an OCI image layout tar, told apart
//! by their members (`oci-layout` + `index.json` → OCI, else
//! `manifest.json` → docker). Every blob is verified; blobs are held by a
//! lease until the refs are set. On any error no ref changes and the blobs
//! this load added are removed again.

use super::image::{open_store, store_name};
use super::GlobalArgs;
use anyhow::{anyhow, bail, Context};
use clap::Args;
use imgfarm_common::image_name::familiar;
use imgfarm_common::oci::docker_archive::import_docker_archive;
use imgfarm_common::oci::layout::{
    import_tar, to_ref_descriptor, ImportLimits, LayoutRef, LeasedStore,
};
use imgfarm_common::oci::store::ContentStore;
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::ExitCode;

/// `imgfarm load`
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read from this file instead of stdin
    #[arg(short, long)]
    pub input: Option<PathBuf>,
}

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Oci,
    Docker,
}

/// Which archive this is, from its member names (headers only).
fn detect(f: &mut File) -> anyhow::Result<Kind> {
    let mut names = BTreeSet::new();
    {
        let mut ar = tar::Archive::new(&mut *f);
        let entries = ar.entries().context("not a tar archive")?;
        for e in entries {
            let e = e.context("reading the archive (corrupt or truncated tar)")?;
            let p = e.path().context("member path")?;
            let p = p.to_string_lossy();
            let p = p.trim_start_matches("./");
            if matches!(p, "oci-layout" | "index.json" | "manifest.json") {
                names.insert(p.to_string());
            }
        }
    }
    f.seek(SeekFrom::Start(0))?;
    // docker load reads manifest.json when there is one (docker 25+ and
    // imgfarm write both forms into a docker-archive).
    if names.contains("manifest.json") {
        Ok(Kind::Docker)
    } else if names.contains("oci-layout") && names.contains("index.json") {
        Ok(Kind::Oci)
    } else {
        bail!("not an image archive: it has neither oci-layout + index.json (OCI) nor manifest.json (docker-archive)")
    }
}

/// The image name an OCI layout entry carries: containerd's
/// `io.containerd.image.name`, else `org.opencontainers.image.ref.name` when
/// it is a full name (a bare tag such as `latest` names no repository).
fn image_name_of(r: &LayoutRef) -> Option<String> {
    if let Some(n) = r
        .descriptor
        .annotations()
        .as_ref()
        .and_then(|a| a.get(CONTAINERD_NAME))
    {
        return Some(n.clone());
    }
    r.name
        .as_ref()
        .filter(|n| n.contains(':') || n.contains('/'))
        .cloned()
}

/// containerd's annotation for the full image name in an OCI layout.
const CONTAINERD_NAME: &str = "io.containerd.image.name";

fn import(store: &ContentStore, mut f: File) -> anyhow::Result<Vec<LayoutRef>> {
    let lease = store.lease(Some(std::time::Duration::from_secs(3600)))?;
    let before: BTreeSet<_> = store.du()?.blobs.into_keys().collect();
    let leased = LeasedStore {
        store,
        lease: &lease,
    };
    let result = (|| -> anyhow::Result<Vec<(String, LayoutRef)>> {
        let refs = match detect(&mut f)? {
            Kind::Oci => import_tar(&leased, &mut f, ImportLimits::default())
                .context("importing the OCI archive")?,
            Kind::Docker => import_docker_archive(&leased, &mut f, ImportLimits::default())
                .context("importing the docker-archive")?,
        };
        let mut named = Vec::new();
        for r in refs {
            let name = match image_name_of(&r) {
                Some(n) => {
                    store_name(&n).with_context(|| format!("the archive names an image {n:?}"))?
                }
                None => String::new(),
            };
            named.push((name, r));
        }
        Ok(named)
    })();
    match result {
        Ok(named) => {
            let mut out = Vec::new();
            for (name, r) in named {
                let d = to_ref_descriptor(&r.descriptor)?;
                if name.is_empty() {
                    println!("Loaded image ID: {}", d.digest);
                } else {
                    store.set_ref(&name, &d)?;
                    println!("Loaded image: {}", familiar(&name));
                }
                out.push(r);
            }
            lease.release();
            Ok(out)
        }
        Err(e) => {
            for d in lease.digests() {
                if !before.contains(&d) {
                    let _ = store.delete_blob(&d);
                }
            }
            lease.release();
            Err(e)
        }
    }
}

/// Run `imgfarm load`.
pub fn run(g: &GlobalArgs, a: LoadArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(g)?;
    let file = match &a.input {
        Some(p) => File::open(p).with_context(|| format!("opening {}", p.display()))?,
        None => {
            // Archives need two passes: spool stdin to an unnamed temp file.
            let tmp_dir = g.state_dir().join("tmp");
            std::fs::create_dir_all(&tmp_dir)?;
            let mut f = tempfile::tempfile_in(&tmp_dir)?;
            std::io::copy(&mut std::io::stdin().lock().take(u64::MAX), &mut f)
                .context("reading the archive from stdin")?;
            f.seek(SeekFrom::Start(0))?;
            f
        }
    };
    let what = a
        .input
        .as_ref()
        .map_or_else(|| "stdin".to_string(), |p| p.display().to_string());
    import(&store, file).map_err(|e| anyhow!("loading {what}: {e:#}; nothing was loaded"))?;
    Ok(ExitCode::SUCCESS)
}
