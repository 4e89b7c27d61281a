//! `imgfarm debug seed-busybox`: the offline base image of examples/hello.
//! From each busybox-static .deb (read with `dpkg-deb --fsys-tarfile`) it
//! takes `/bin/busybox`, adds one symlink per applet, a minimal /etc and the
//! usual empty directories, and stores one image per platform plus an index
//! named `docker.io/library/busybox:latest`.

use super::GlobalArgs;
use anyhow::{anyhow, bail, Context as _};
use imgfarm_common::graph::image_config::StageConfig;
use imgfarm_common::oci::image::{index_to_json, new_index, to_oci_platform};
use imgfarm_common::oci::layout::from_ref_descriptor;
use imgfarm_common::oci::media_types;
use imgfarm_common::oci::store::{ContentStore, RefDescriptor};
use imgfarm_common::platform::Platform;
use imgfarm_worker::solve::export::export_image;
use imgfarm_worker::solve::layers::LayerWriter;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

const MAX_BUSYBOX: u64 = 64 << 20;

fn busybox_binary(deb: &Path) -> anyhow::Result<Vec<u8>> {
    let mut child = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("running dpkg-deb (apt install dpkg)")?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("dpkg-deb stdout"))?;
    let mut found = None;
    for e in tar::Archive::new(stdout).entries()? {
        let mut e = e?;
        let p = e.path()?.to_string_lossy().into_owned();
        if p.trim_start_matches("./") == "bin/busybox" {
            let mut buf = Vec::new();
            (&mut e).take(MAX_BUSYBOX).read_to_end(&mut buf)?;
            found = Some(buf);
        }
    }
    let _ = child.wait();
    found.ok_or_else(|| anyhow!("{} has no /bin/busybox", deb.display()))
}

fn applets(native_busybox: &[u8]) -> anyhow::Result<Vec<String>> {
    let dir = tempfile::tempdir()?;
    let p = dir.path().join("busybox");
    std::fs::write(&p, native_busybox)?;
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let out = Command::new(&p).arg("--list").output()?;
    if !out.status.success() {
        bail!("busybox --list failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && !a.contains('/') && *a != "busybox")
        .map(str::to_string)
        .collect())
}

fn header(kind: tar::EntryType, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(0);
    h
}

fn layer(
    store: &ContentStore,
    busybox: &[u8],
    applets: &[String],
) -> anyhow::Result<imgfarm_worker::solve::result::LayerRef> {
    let mut w = LayerWriter::new(store)?;
    for (d, mode) in [
        ("bin/", 0o755),
        ("dev/", 0o755),
        ("etc/", 0o755),
        ("proc/", 0o755),
        ("root/", 0o700),
        ("sys/", 0o755),
        ("tmp/", 0o1777),
        ("var/", 0o755),
    ] {
        w.append(
            &mut header(tar::EntryType::Directory, mode),
            d,
            std::io::empty(),
        )?;
    }
    let mut h = header(tar::EntryType::Regular, 0o755);
    h.set_size(busybox.len() as u64);
    w.append(&mut h, "bin/busybox", busybox)?;
    for a in applets {
        w.append_link(
            &mut header(tar::EntryType::Symlink, 0o777),
            &format!("bin/{a}"),
            "busybox",
        )?;
    }
    for (f, text) in [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        ),
        ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
    ] {
        let mut h = header(tar::EntryType::Regular, 0o644);
        h.set_size(text.len() as u64);
        w.append(&mut h, f, text.as_bytes())?;
    }
    Ok(w.finish()?)
}

/// Run `imgfarm debug seed-busybox`.
pub fn seed_busybox(g: &GlobalArgs, debs: &Path) -> anyhow::Result<ExitCode> {
    let state = g.state_dir();
    std::fs::create_dir_all(&state)?;
    let store = ContentStore::open(&state)?;
    let host = Platform::host();
    let mut bins = BTreeMap::new();
    for arch in ["amd64", "arm64"] {
        let deb = debs.join(format!("busybox-static_{arch}.deb"));
        bins.insert(
            arch,
            busybox_binary(&deb).with_context(|| {
                format!(
                    "{}: run scripts/setup.sh first (it downloads the .debs)",
                    deb.display()
                )
            })?,
        );
    }
    let native = bins.get(host.architecture.as_str()).ok_or_else(|| {
        anyhow!(
            "no busybox for the host's architecture {}",
            host.architecture
        )
    })?;
    let applets = applets(native)?;
    let mut stage = StageConfig {
        cmd: Some(vec!["sh".into()]),
        ..StageConfig::default()
    };
    stage.set_env("PATH", imgfarm_common::graph::image_config::DEFAULT_PATH);
    stage.commit("imgfarm debug seed-busybox".into(), true);
    let mut descs = Vec::new();
    for (arch, bin) in &bins {
        let platform = Platform::new("linux", arch, "");
        let l = layer(&store, bin, &applets)?;
        let (m, _) = export_image(&store, &platform, &stage, None, &[l])?;
        let mut d = from_ref_descriptor(&m);
        d.set_platform(Some(to_oci_platform(&platform)));
        descs.push(d);
    }
    let bytes = index_to_json(&new_index(descs, &BTreeMap::new())).map_err(|e| anyhow!("{e}"))?;
    let digest = store.put_bytes(&bytes)?;
    let name = "docker.io/library/busybox:latest";
    store.set_ref(
        name,
        &RefDescriptor::new(media_types::OCI_INDEX, digest.clone(), bytes.len() as u64),
    )?;
    println!("{name} {digest} (linux/amd64, linux/arm64)");
    Ok(ExitCode::SUCCESS)
}
