//! Golden JSON written by real BuildKit, read and re-serialised by our types.
//!
//! `oci_image_data/buildkit-v0.8-config.json` is the config BuildKit (in
//! dockerd 20.10) wrote for a Dockerfile using every config-changing
//! instruction (COPY, ENV, LABEL with `<>`, EXPOSE, VOLUME, WORKDIR, USER,
//! SHELL, HEALTHCHECK, ONBUILD, STOPSIGNAL, ENTRYPOINT, CMD), taken from
//! `docker save`, which keeps the config bytes (the image ID is their digest).

use imgfarm_common::oci::image::config::ImageConfig;
use imgfarm_common::oci::Digest;
use imgfarm_common::platform::Platform;

const BUILDKIT_V08: &[u8] = include_bytes!("oci_image_data/buildkit-v0.8-config.json");

#[test]
fn buildkit_config_is_read_completely() {
    assert_eq!(
        Digest::sha256_of(BUILDKIT_V08).as_str(),
        "sha256:c252ce84da0e26ff432033ca162b9254618fc37990bd71f44eb9367f795fc6d7",
        "fixture changed"
    );
    let cfg = ImageConfig::from_json(BUILDKIT_V08).unwrap();
    assert_eq!(cfg.platform(), Platform::linux_amd64());
    let c = &cfg.config;
    assert_eq!(c.user.as_deref(), Some("1000"));
    assert_eq!(
        c.exposed_ports.keys().collect::<Vec<_>>(),
        ["443/tcp", "80/tcp"]
    );
    assert_eq!(c.env, ["PATH=/bin", "A=b"]);
    assert_eq!(c.entrypoint, ["/bin/sh"]);
    assert_eq!(c.cmd, ["-c", "echo"]);
    assert!(c.volumes.contains_key("/data"));
    assert_eq!(c.working_dir.as_deref(), Some("/w"));
    assert_eq!(c.labels["org.example.a"], "x<y>");
    assert_eq!(c.stop_signal.as_deref(), Some("SIGTERM"));
    assert!(c.args_escaped);
    let hc = c.healthcheck.as_ref().unwrap();
    assert_eq!(hc.test, ["CMD", "true"]);
    assert_eq!(hc.interval, 5_000_000_000);
    assert_eq!(c.on_build, ["RUN echo hi"]);
    assert_eq!(c.shell, ["/bin/ash", "-c"]);
    assert_eq!(cfg.history.len(), 12);
    assert_eq!(cfg.history.iter().filter(|h| !h.empty_layer).count(), 2);
    assert_eq!(cfg.rootfs.diff_ids.len(), 2);
}

#[test]
fn buildkit_config_re_serialises_byte_for_byte_in_current_field_order() {
    let cfg = ImageConfig::from_json(BUILDKIT_V08).unwrap();
    let ours = String::from_utf8(cfg.to_json().unwrap()).unwrap();
    // BuildKit v0.8 declared Healthcheck before ArgsEscaped; current BuildKit
    // (dockerspec.DockerOCIImageConfig = ocispec.ImageConfig, whose last field
    // is ArgsEscaped, then Healthcheck, OnBuild, Shell) writes ArgsEscaped
    // first. Everything else must be identical: key order, sorted maps,
    // `\u003c` escapes, RFC 3339 nanosecond times, omitted empties.
    let original = std::str::from_utf8(BUILDKIT_V08).unwrap();
    let hc = r#""Healthcheck":{"Test":["CMD","true"],"Interval":5000000000},"#;
    let ae = r#""ArgsEscaped":true,"#;
    let current = original.replace(&format!("{hc}{ae}"), &format!("{ae}{hc}"));
    assert_ne!(current, original, "the swap must apply");
    assert_eq!(ours, current);
}
