//! Dockerfile features through the whole local build, checked on the
//! result: heredocs (COPY and a RUN script), .dockerignore, a whiteout of a
//! base file, WORKDIR/USER/ENV/EXPOSE/ENTRYPOINT in the config, and
//! `--chown` owners in the layer.

mod build_support;

use build_support::{ok, Env};

fn read_json(p: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).expect("read json")).expect("json")
}

#[test]
fn heredocs_ignore_whiteouts_and_config_fields() {
    let Some(env) = Env::new("heredocs_ignore_whiteouts_and_config_fields") else {
        return;
    };
    let dockerfile = r#"FROM busybox
COPY <<EOT /greeting
hello heredoc
EOT
RUN <<EOT
#!/bin/sh
echo from-script > /script-out
EOT
RUN rm /bin/vi && echo app:x:1234:1234::/home/app:/bin/sh >> /etc/passwd && echo app:x:1234: >> /etc/group
COPY --chown=app . /ctx/
WORKDIR /srv/data
USER app
ENV A=1 B="two words"
EXPOSE 8080/tcp
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /greeting"]
"#;
    let ctx = env.context(
        "features",
        &[
            ("Dockerfile", dockerfile),
            (".dockerignore", "ignored.txt\n"),
            ("kept.txt", "kept"),
            ("ignored.txt", "nope"),
        ],
    );
    let local = env.work.path().join("local");
    let layout = env.work.path().join("layout");
    let tarball = env.work.path().join("fs.tar");
    ok(&env.run(&[
        "build",
        "--progress",
        "plain",
        "-o",
        &format!("type=local,dest={}", local.display()),
        "-o",
        &format!("type=oci,dest={},tar=false", layout.display()),
        "-o",
        &format!("type=tar,dest={}", tarball.display()),
        ctx.to_str().unwrap(),
    ]));
    let read = |p: &str| std::fs::read_to_string(local.join(p)).unwrap_or_default();
    assert_eq!(read("greeting"), "hello heredoc\n");
    assert_eq!(read("script-out"), "from-script\n");
    assert_eq!(read("ctx/kept.txt"), "kept");
    assert!(!local.join("ctx/ignored.txt").exists(), ".dockerignore");
    assert!(local.join("bin/sh").symlink_metadata().is_ok());
    assert!(local.join("bin/vi").symlink_metadata().is_err(), "whiteout");
    assert!(local.join("srv/data").is_dir(), "WORKDIR creates the dir");

    // Owners in the exported filesystem tar: --chown=app is 1234:1234.
    let listing = tar_verbose(&tarball);
    let kept = listing
        .lines()
        .find(|l| l.ends_with("ctx/kept.txt"))
        .unwrap_or_else(|| panic!("ctx/kept.txt in the tar:\n{listing}"));
    assert!(kept.contains("1234/1234"), "{kept}");

    let index = read_json(&layout.join("index.json"));
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let m = read_json(&blob(index["manifests"][0]["digest"].as_str().unwrap()));
    let cfg = read_json(&blob(m["config"]["digest"].as_str().unwrap()));
    let c = &cfg["config"];
    assert_eq!(c["User"], "app");
    assert_eq!(c["WorkingDir"], "/srv/data");
    let envs: Vec<&str> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        envs.contains(&"A=1") && envs.contains(&"B=two words"),
        "{envs:?}"
    );
    assert_eq!(c["ExposedPorts"], serde_json::json!({"8080/tcp": {}}));
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(c["Cmd"], serde_json::json!(["cat /greeting"]));
    // One layer per COPY/RUN/WORKDIR on top of the base; config-only steps add none.
    let layers = m["layers"].as_array().unwrap().len();
    assert_eq!(layers, 1 + 5, "base + COPY, RUN, RUN, COPY, WORKDIR");
    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), layers);
    let empty = cfg["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["empty_layer"] == true)
        .count();
    assert!(
        empty >= 5,
        "USER, ENV, EXPOSE, ENTRYPOINT, CMD are empty layers"
    );
}

/// `tar --numeric-owner -tvf` of a tarball.
fn tar_verbose(p: &std::path::Path) -> String {
    let out = std::process::Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(p)
        .output()
        .expect("tar");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A one-file HTTP server on 127.0.0.1 (a thread of this test): `/hello.txt`
/// (the content of `body`, read per request) with a Last-Modified header,
/// everything else 404. Returns the port.
fn serve_hello(body: std::path::PathBuf) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().expect("clone"));
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            loop {
                let mut l = String::new();
                if reader.read_line(&mut l).unwrap_or(0) == 0 || l == "\r\n" {
                    break;
                }
            }
            let path = first.split(' ').nth(1).unwrap_or("");
            let resp = if path == "/hello.txt" {
                let body = std::fs::read_to_string(&body).unwrap_or_default();
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()
            };
            let _ = conn.write_all(resp.as_bytes());
        }
    });
    port
}

#[test]
fn add_from_url_with_and_without_checksum() {
    let Some(env) = Env::new("add_from_url_with_and_without_checksum") else {
        return;
    };
    let body = "downloaded over http\n";
    let served = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(served.path(), body).expect("write");
    let port = serve_hello(served.path().to_path_buf());
    let sum = imgfarm_common::oci::Digest::sha256_of(body.as_bytes());
    let url = format!("http://127.0.0.1:{port}/hello.txt");
    let dockerfile =
        format!("FROM busybox\nADD {url} /dl/\nADD --checksum={sum} {url} /named.txt\n");
    let ctx = env.context("addurl", &[("Dockerfile", &dockerfile)]);
    let local = env.work.path().join("local");
    let tarball = env.work.path().join("fs.tar");
    ok(&env.run(&[
        "build",
        "--progress",
        "plain",
        "-t",
        "addurl:ok",
        "-o",
        &format!("type=local,dest={}", local.display()),
        "-o",
        &format!("type=tar,dest={}", tarball.display()),
        ctx.to_str().unwrap(),
    ]));
    let read = |p: &str| std::fs::read_to_string(local.join(p)).unwrap_or_default();
    assert_eq!(
        read("dl/hello.txt"),
        body,
        "dest/ takes the URL's file name"
    );
    assert_eq!(read("named.txt"), body);
    let listing = tar_verbose(&tarball);
    for name in ["dl/hello.txt", "named.txt"] {
        let line = listing
            .lines()
            .find(|l| l.ends_with(name))
            .unwrap_or_else(|| panic!("{name} in the tar:\n{listing}"));
        assert!(line.starts_with("-rw-------"), "mode 0600: {line}");
        assert!(
            line.contains("1994-11-06"),
            "mtime from Last-Modified: {line}"
        );
    }

    // Without a checksum the URL is fetched again: a changed download shows
    // in the next build even though the Dockerfile did not change.
    std::fs::write(served.path(), "second version\n").expect("write");
    let unpinned = env.context(
        "addurl-unpinned",
        &[("Dockerfile", &format!("FROM busybox\nADD {url} /dl/\n"))],
    );
    let local2 = env.work.path().join("local2");
    for _ in 0..2 {
        let _ = std::fs::remove_dir_all(&local2);
        ok(&env.run(&[
            "build",
            "-o",
            &format!("type=local,dest={}", local2.display()),
            unpinned.to_str().unwrap(),
        ]));
        std::fs::write(served.path(), "third version\n").expect("write");
    }
    assert_eq!(
        std::fs::read_to_string(local2.join("dl/hello.txt")).unwrap_or_default(),
        "third version\n"
    );
    std::fs::write(served.path(), body).expect("write");

    // A wrong checksum fails the build, names both digests, and stores nothing.
    let refs_before = env.refs();
    let wrong = imgfarm_common::oci::Digest::sha256_of(b"something else");
    let bad = env.context(
        "addurl-bad",
        &[(
            "Dockerfile",
            &format!("FROM busybox\nADD --checksum={wrong} {url} /x\n"),
        )],
    );
    let out = env.run(&["build", "-t", "addurl:bad", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = build_support::text(&out.stderr);
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(
        err.contains(wrong.as_str()) && err.contains(sum.as_str()),
        "{err}"
    );
    assert_eq!(env.refs(), refs_before, "no ref on a checksum mismatch");

    // A 404 is a clear error.
    let missing = env.context(
        "addurl-404",
        &[(
            "Dockerfile",
            &format!("FROM busybox\nADD http://127.0.0.1:{port}/nope.txt /x\n"),
        )],
    );
    let out = env.run(&["build", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = build_support::text(&out.stderr);
    assert!(
        err.contains("HTTP 404") && err.contains("nope.txt"),
        "{err}"
    );
}

#[test]
fn run_mount_bind_from_stage_and_image() {
    let Some(env) = Env::new("run_mount_bind_from_stage_and_image") else {
        return;
    };
    let dockerfile = r#"FROM busybox AS data
RUN mkdir /stuff && echo from-stage > /stuff/s.txt && ln -s /etc /stuff/etc-link
FROM busybox
RUN --mount=type=bind,from=data,source=/stuff,target=/mnt/stage cat /mnt/stage/s.txt > /copied
RUN --mount=type=bind,from=data,source=/stuff,target=/mnt/rw,rw echo changed > /mnt/rw/s.txt && cat /mnt/rw/s.txt > /rw-seen
RUN --mount=type=bind,from=data,source=/stuff/s.txt,target=/one-file cat /one-file > /file-copied
RUN --mount=type=bind,from=busybox,source=/bin,target=/img-bin ls /img-bin/sh > /img-listing
RUN --mount=type=bind,from=data,source=/stuff,target=/again cat /again/s.txt > /again-copied
"#;
    let ctx = env.context("bindstage", &[("Dockerfile", dockerfile)]);
    let local = env.work.path().join("local");
    ok(&env.run(&[
        "build",
        "--progress",
        "plain",
        "-o",
        &format!("type=local,dest={}", local.display()),
        ctx.to_str().unwrap(),
    ]));
    let read = |p: &str| std::fs::read_to_string(local.join(p)).unwrap_or_default();
    assert_eq!(read("copied"), "from-stage\n");
    assert_eq!(read("rw-seen"), "changed\n", "rw mounts are writable");
    assert_eq!(
        read("again-copied"),
        "from-stage\n",
        "rw writes are discarded"
    );
    assert_eq!(read("file-copied"), "from-stage\n");
    assert_eq!(read("img-listing"), "/img-bin/sh\n");
    assert!(local.join("mnt/stage").is_dir(), "mount target kept");
    assert!(
        !local.join("mnt/stage/s.txt").exists(),
        "mount content not kept"
    );

    // Errors: a missing source, a source leaving the stage by `..`, and an
    // absolute symlink (refused for now: it would resolve on the host).
    for (source, want) in [
        ("/nope", "bind mount source /nope"),
        ("/stuff/../..", "leaves the stage"),
        ("/stuff/etc-link", "resolves outside the stage"),
    ] {
        let bad = env.context(
            "bindstage-bad",
            &[(
                "Dockerfile",
                &format!(
                    "FROM busybox AS data\nRUN mkdir /stuff && ln -s /etc /stuff/etc-link\nFROM busybox\nRUN --mount=type=bind,from=data,source={source},target=/m true\n"
                ),
            )],
        );
        let out = env.run(&["build", bad.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{source}");
        let err = build_support::text(&out.stderr);
        assert!(err.contains(want), "{source}: {err}");
    }
}
