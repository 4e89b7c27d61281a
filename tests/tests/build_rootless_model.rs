//! The rootless model (issue 12): a RUN that leaves files owned by other ids with restrictive
//! modes becomes a layer with exactly that metadata, built by the unprivileged farm user
//! (inside its build namespace) and by root (every id mapped, no /etc/subuid entry); cache
//! mounts honour `uid`, `gid` and `mode`; pipelines whose reader exits first end (steps start
//! with default signal dispositions). Snapshots and `prune` have their own file (snapshots.rs).

mod build_support;
mod oracle_support;

use build_support::{ok, text, As, Env};
use oracle_support::read_docker_archive;
use oracle_support::tree::{Kind, Tree};
use std::time::{Duration, Instant};

const OWNERS: &str = r#"FROM busybox
RUN touch /owned && chown 1000:2000 /owned && chmod 0600 /owned \
 && mkdir -p /home/app/.ssh && echo key > /home/app/.ssh/id_ed25519 \
 && chown -R 1000:1000 /home/app && chmod 0700 /home/app/.ssh && chmod 0400 /home/app/.ssh/id_ed25519 \
 && mkdir /locked && chmod 0000 /locked \
 && touch /zero && chown 65535:65534 /zero && chmod 0000 /zero \
 && touch /suid /sgid && chown 0:42 /sgid && chmod 4755 /suid && chmod 2710 /sgid \
 && mkdir /sticky && chmod 1777 /sticky \
 && mkdir -p /a /b && echo linked > /a/f && ln /a/f /b/g && chown 33:33 /a/f \
 && mkdir -p /gone/sub && echo x > /gone/sub/f && chown -R 1000:1000 /gone && chmod 0700 /gone/sub && chmod 0600 /gone/sub/f
RUN rm -rf /gone && echo "$(id -u):$(id -g)" > /who
USER 1000:1000
RUN echo mine > /home/app/.ssh/config && chmod 0600 /home/app/.ssh/config
"#;

/// `imgfarm build --progress plain -o OUTPUT CTX` as the env's user; the build log.
fn build_to(env: &Env, ctx: &std::path::Path, output: &str) -> String {
    ok(&env.run(&[
        "build",
        "--progress",
        "plain",
        "-o",
        output,
        ctx.to_str().expect("utf-8"),
    ]))
}

fn node<'a>(t: &'a Tree, p: &str) -> &'a oracle_support::tree::Node {
    t.get(p)
        .unwrap_or_else(|| panic!("{p} missing from the image; it has {:?}", t.keys()))
}

fn owners_modes_and_links(who: As, test: &str) {
    let Some(env) = Env::new_as(test, who) else {
        return;
    };
    let ctx = env.context("owners", &[("Dockerfile", OWNERS)]);
    let archive = env.work.path().join("owners.tar");
    let log = build_to(
        &env,
        &ctx,
        &format!("type=docker,dest={}", archive.display()),
    );
    assert!(
        !log.contains("single-id"),
        "no fallback expected as {who:?}:\n{log}"
    );
    let img = read_docker_archive(&archive);
    let t = &img.tree;
    let meta = |p: &str| {
        let n = node(t, p);
        (n.uid, n.gid, n.mode)
    };
    assert_eq!(meta("owned"), (1000, 2000, 0o600));
    assert_eq!(meta("home/app/.ssh"), (1000, 1000, 0o700));
    assert_eq!(meta("home/app/.ssh/id_ed25519"), (1000, 1000, 0o400));
    assert_eq!(meta("home/app/.ssh/config"), (1000, 1000, 0o600));
    assert_eq!(meta("locked"), (0, 0, 0o000));
    assert_eq!(node(t, "locked").kind, Kind::Dir);
    assert_eq!(meta("zero"), (65535, 65534, 0o000));
    assert_eq!(meta("suid"), (0, 0, 0o4755));
    assert_eq!(meta("sgid"), (0, 42, 0o2710));
    assert_eq!(meta("sticky"), (0, 0, 0o1777));
    assert_eq!(meta("a/f"), (33, 33, 0o644));
    assert_eq!(node(t, "b/g").kind, node(t, "a/f").kind);
    assert_eq!(node(t, "b/g").links, ["a/f"], "hardlink across dirs");
    assert!(
        !t.keys().any(|k| k.starts_with("gone")),
        "rm -rf of a non-root dir is a whiteout"
    );
    // Inside the step the user is container root, as in BuildKit.
    let who_file = node(t, "who");
    assert_eq!((who_file.uid, who_file.gid), (0, 0));
}

#[test]
fn restrictive_owners_and_modes_become_exact_layers_rootless() {
    owners_modes_and_links(
        As::FarmUser,
        "restrictive_owners_and_modes_become_exact_layers_rootless",
    );
}

#[test]
fn restrictive_owners_and_modes_become_exact_layers_as_root() {
    owners_modes_and_links(
        As::Root,
        "restrictive_owners_and_modes_become_exact_layers_as_root",
    );
}

const CACHE: &str = r#"FROM busybox
RUN --mount=type=cache,id=model-cache,target=/c,uid=1000,gid=1001,mode=0750 \
    stat -c '%u %g %a' /c > /first && mkdir -p /c/partial && chown 100:0 /c/partial && chmod 0700 /c/partial \
 && mkdir -m 0777 /out
USER 1000:1001
RUN --mount=type=cache,id=model-cache,target=/c,uid=5,gid=5,mode=0777 \
    stat -c '%u %g %a' /c > /out/second && touch /c/by-app && ls -ln /c | awk 'NR>1 {print $3, $4, $9}' | sort >> /out/second
"#;

fn cache_mount_owner(who: As, test: &str) {
    let Some(env) = Env::new_as(test, who) else {
        return;
    };
    let ctx = env.context("cache", &[("Dockerfile", CACHE)]);
    let out = env.work.path().join("cache-out");
    build_to(&env, &ctx, &format!("type=local,dest={}", out.display()));
    let read =
        |p: &str| std::fs::read_to_string(out.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    // A new cache dir takes the mount's owner and mode; the second mount finds it made.
    assert_eq!(read("first"), "1000 1001 750\n");
    assert_eq!(
        read("out/second"),
        "1000 1001 750\n100 0 partial\n1000 1001 by-app\n"
    );
}

#[test]
fn cache_mounts_honour_uid_gid_and_mode_rootless() {
    cache_mount_owner(
        As::FarmUser,
        "cache_mounts_honour_uid_gid_and_mode_rootless",
    );
}

#[test]
fn cache_mounts_honour_uid_gid_and_mode_as_root() {
    cache_mount_owner(As::Root, "cache_mounts_honour_uid_gid_and_mode_as_root");
}

const PIPES: &str = r#"FROM busybox
RUN ["/bin/grep", "-E", "^Sig(Ign|Blk):", "/proc/self/status"]
RUN grep -E '^Sig(Ign|Blk):' /proc/self/status > /signals
RUN yes abcdefgh | head -c 2000000 > /dev/null && find / -xdev | head -1 > /first && echo done > /done
"#;

#[test]
fn pipelines_whose_reader_exits_first_end() {
    let test = "pipelines_whose_reader_exits_first_end";
    let Some(env) = Env::new(test) else {
        return;
    };
    let ctx = env.context("pipes", &[("Dockerfile", PIPES)]);
    let out = env.work.path().join("pipes-out");
    let mut child = env
        .command()
        .arg("--state")
        .arg(env.state.path())
        .args(["build", "--progress", "plain", "-o"])
        .arg(format!("type=local,dest={}", out.display()))
        .arg(&ctx)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("imgfarm starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let o = child.wait_with_output().expect("output");
            panic!(
                "`yes | head` did not end within 120 s (SIGPIPE ignored?):\n{}",
                text(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The step itself starts with nothing ignored or blocked (exec form: no shell between);
    // busybox ash, as pid 1 of the step, ignores SIGQUIT (bit 2) for its children itself.
    let log = ok(&child.wait_with_output().expect("output"));
    assert!(
        log.contains("SigBlk:\t0000000000000000") && log.contains("SigIgn:\t0000000000000000"),
        "{log}"
    );
    let shell = std::fs::read_to_string(out.join("signals")).expect("signals");
    let ignored = shell
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:\t"))
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or_else(|| panic!("no SigIgn in {shell:?}"));
    assert_eq!(ignored & (1 << (13 - 1)), 0, "SIGPIPE ignored: {shell:?}");
    assert_eq!(
        std::fs::read_to_string(out.join("done")).expect("done"),
        "done\n"
    );
}

#[test]
fn a_chown_outside_the_mapped_range_fails_the_step_with_its_message() {
    let test = "a_chown_outside_the_mapped_range_fails_the_step_with_its_message";
    let Some(env) = Env::new(test) else {
        return;
    };
    let df = "FROM busybox\nRUN touch /f && chown 70000:70000 /f\n";
    let ctx = env.context("unmapped", &[("Dockerfile", df)]);
    let out = env.run(&["build", "--progress", "plain", ctx.to_str().expect("utf-8")]);
    assert!(!out.status.success(), "chown to an unmapped id must fail");
    let err = text(&out.stderr);
    for want in [
        "chown: /f: Invalid argument",
        "[2/2] RUN touch /f && chown 70000:70000 /f",
        "exit code: 1",
    ] {
        assert!(err.contains(want), "{want:?} missing from:\n{err}");
    }
}

#[test]
fn root_maps_every_id_so_large_owners_reach_the_layer() {
    let test = "root_maps_every_id_so_large_owners_reach_the_layer";
    let Some(env) = Env::new_as(test, As::Root) else {
        return;
    };
    let df = "FROM busybox\nRUN touch /big && chown 3000000:4000000 /big && chmod 0640 /big\n";
    let ctx = env.context("big", &[("Dockerfile", df)]);
    let archive = env.work.path().join("big.tar");
    build_to(
        &env,
        &ctx,
        &format!("type=docker,dest={}", archive.display()),
    );
    let img = read_docker_archive(&archive);
    let n = node(&img.tree, "big");
    assert_eq!((n.uid, n.gid, n.mode), (3_000_000, 4_000_000, 0o640));
}

#[test]
fn a_bind_mounted_stage_keeps_its_owners() {
    let test = "a_bind_mounted_stage_keeps_its_owners";
    let Some(env) = Env::new(test) else {
        return;
    };
    let df = r#"FROM busybox AS secrets
RUN mkdir /d && echo only-for-1000 > /d/f && chown -R 1000:1000 /d && chmod 0700 /d && chmod 0600 /d/f
FROM busybox
USER 1000:1000
RUN --mount=type=bind,from=secrets,source=/d,target=/m cat /m/f && stat -c '%u:%g %a' /m/f
"#;
    let ctx = env.context("bindowners", &[("Dockerfile", df)]);
    let log = ok(&env.run(&["build", "--progress", "plain", ctx.to_str().expect("utf-8")]));
    assert!(log.contains("only-for-1000"), "{log}");
    assert!(log.contains("1000:1000 600"), "{log}");
}
