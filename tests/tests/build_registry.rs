//! `imgfarm build` with a real registry on loopback: a base image the local
//! store lacks is pulled, and `--push` sends the two-platform index, which
//! skopeo (an independent client) reads back.

mod build_support;

use build_support::{ok, text, Env};
use imgfarm_testkit::{or_skip, require_tools_or_skip, BaseImages, Registry};

#[test]
fn base_pulled_from_registry_and_result_pushed_as_an_index() {
    let name = "base_pulled_from_registry_and_result_pushed_as_an_index";
    if !require_tools_or_skip(name, &["skopeo"]) {
        return;
    }
    let Some(env) = Env::new(name) else {
        return;
    };
    let Some(reg) = or_skip(name, Registry::start()) else {
        return;
    };
    let base = BaseImages::build().expect("base images");
    base.push_to(&reg, "library/busybox", "1")
        .expect("push base");
    let from = format!("{}/library/busybox:1", reg.addr());
    let ctx = env.context(
        "pushed",
        &[(
            "Dockerfile",
            &format!("FROM {from}\nRUN uname -m > /arch\nCMD [\"cat\", \"/arch\"]\n"),
        )],
    );
    let target = format!("{}/example/pushed:1", reg.addr());
    let err = ok(&env.run(&[
        "build",
        "--progress",
        "plain",
        "--platform",
        "linux/amd64,linux/arm64",
        "--push",
        "-t",
        &target,
        ctx.to_str().unwrap(),
    ]));
    assert!(err.contains("pushing"), "{err}");
    assert!(
        env.refs().iter().any(|(n, _)| n == &from),
        "the pulled base is in the local store"
    );
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--raw"])
        .args(reg.skopeo_flags_plain())
        .arg(format!("docker://{target}"))
        .output()
        .expect("skopeo");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let raw: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
    let archs: Vec<&str> = raw["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(archs, ["amd64", "arm64"]);
}
