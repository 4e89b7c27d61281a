//! Workers that share one certificate and name, as the replicas of a Kubernetes Deployment do
//! (deploy/kubernetes: every pod of a pool runs as worker `pool-ARCH`, since pod names are
//! random and a certificate names one worker). Real processes on loopback, as in
//! `farm_e2e.rs`: one coordinator, two `imgfarm worker --name pool-amd64` processes with
//! state dirs of their own, and `imgfarm build --farm` as the client.
//!
//! The coordinator keys workers by session (`engine::pool`) and the scheduler by a
//! `WorkerId` per session; the name is only shown. These tests prove it end to end: both
//! replicas get vertices, one killed mid-step leaves the other's session alone and its step
//! runs on the other, it re-joins (same state, as a restarted container with its emptyDir)
//! and gets work again, and a step goes to the replica that holds its input (cache
//! affinity) although both have the same name.
//!
//! Which process ran a vertex: each worker runs with `--log-level info` and logs
//! `vertex KEY done`; the client's `--metadata-file` maps each step's name to its KEY.

mod farm_support;

use farm_support::{lines_with, spawn_worker, tree, worker_of, Farm, Proc};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const NAME: &str = "pool-amd64";
const BUILD_DEADLINE: Duration = Duration::from_secs(300);

/// Two independent stages (two replicas with one slot each run one each) joined by a third.
const TWO_STAGES: &str = "\
FROM busybox AS a
ARG R
ARG S=0
RUN echo a-$R > /a && sleep $S
FROM busybox AS b
ARG R
ARG S=0
RUN echo b-$R > /b && sleep $S
FROM busybox
ARG R
COPY --from=a /a /a
COPY --from=b /b /b
RUN cat /a /b > /ab
";

/// A replica of worker `pool-amd64` (one slot, linux/amd64) with state dir `replica-TAG-state`,
/// logging every vertex it finishes.
fn replica(farm: &Farm, tag: &str) -> Proc {
    let state = farm.env.work.path().join(format!("replica-{tag}-state"));
    let mut c = farm.worker_command(NAME, &state, Some("linux/amd64"), 1);
    c.args(["--log-level", "info"]);
    spawn_worker(NAME, c)
}

/// A build of `ctx` with build args, local output to `out-TAG` and metadata to `meta-TAG.json`.
struct Build {
    proc: Proc,
    dest: PathBuf,
    meta: PathBuf,
}

fn start_build(farm: &Farm, ctx: &std::path::Path, tag: &str, args: &[&str]) -> Build {
    let dest = farm.env.work.path().join(format!("out-{tag}"));
    let meta = farm.env.work.path().join(format!("meta-{tag}.json"));
    let mut all = vec![
        "--platform".to_string(),
        "linux/amd64".into(),
        "--output".into(),
        format!("type=local,dest={}", dest.display()),
        "--metadata-file".into(),
        meta.display().to_string(),
    ];
    for a in args {
        all.push("--build-arg".into());
        all.push((*a).to_string());
    }
    all.push(ctx.display().to_string());
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    Build {
        proc: farm.start_build(&all),
        dest,
        meta,
    }
}

impl Build {
    /// Waits for success; the client's output.
    fn finish(&mut self) -> String {
        let status = self.proc.wait(BUILD_DEADLINE);
        let out = self.proc.output();
        assert!(status.success(), "build failed ({status}):\n{out}");
        out
    }

    /// The vertex key of the step whose name contains `step`, from the metadata file.
    fn key_of(&self, step: &str) -> String {
        let text = std::fs::read_to_string(&self.meta).expect("metadata file");
        let m: serde_json::Value = serde_json::from_str(&text).expect("metadata json");
        let vertices = m["imgfarm.farm.vertices"].as_object().expect("vertices");
        let keys: Vec<&String> = vertices
            .iter()
            .filter(|(_, v)| v["name"].as_str().is_some_and(|n| n.contains(step)))
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys.len(), 1, "one vertex named {step:?} in {text}");
        keys[0].clone()
    }

    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.dest.join(name))
            .unwrap_or_else(|e| panic!("{}/{name}: {e}", self.dest.display()))
    }
}

/// Whether replica `p` ran vertex `key` (not served from its cache).
fn ran(p: &Proc, key: &str) -> bool {
    let done = format!("vertex {key} done");
    p.output()
        .lines()
        .any(|l| l.contains(&done) && !l.contains("(cached)"))
}

/// Rows of `imgfarm farm workers --format json` named `name`.
fn rows_named(farm: &Farm, name: &str) -> usize {
    fn count(v: &serde_json::Value, name: &str) -> usize {
        match v {
            serde_json::Value::Array(a) => a.iter().map(|x| count(x, name)).sum(),
            serde_json::Value::Object(o) => {
                usize::from(o.get("name").and_then(|n| n.as_str()) == Some(name))
                    + o.values().map(|x| count(x, name)).sum::<usize>()
            }
            _ => 0,
        }
    }
    let run = farm.env.run(&[
        "farm",
        "workers",
        "--farm",
        &farm.farm_url(),
        "--tls-dir",
        farm.tls.to_str().expect("utf-8"),
        "--format",
        "json",
    ]);
    farm_support::ok(&run);
    let out = farm_support::text(&run.stdout);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    count(&v, name)
}

/// Waits until `client` shows step `step` placed on a worker.
fn wait_placed(client: &mut Proc, step: &str) {
    let start = Instant::now();
    while !lines_with(&client.output(), step)
        .into_iter()
        .any(|l| worker_of(l).is_some())
    {
        assert!(
            !client.exited() && start.elapsed() < Duration::from_secs(120),
            "{step} was not placed:\n{}",
            client.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn replicas_sharing_a_name_split_the_work_and_survive_each_other() {
    let name = "replicas_sharing_a_name_split_the_work_and_survive_each_other";
    let Some(farm) = Farm::new(name, &[NAME]) else {
        return;
    };
    let coordinator = farm.start_coordinator_with(3, &["--log-level", "info"]);
    let mut a = replica(&farm, "a");
    let b = replica(&farm, "b");
    assert_eq!(rows_named(&farm, NAME), 2, "both replicas are listed");
    let ctx = farm.env.context("two", &[("Dockerfile", TWO_STAGES)]);

    // 1. Both replicas get vertices: the two stages run at once, one on each.
    let mut one = start_build(&farm, &ctx, "one", &["R=one", "S=2"]);
    one.finish();
    assert_eq!(one.file("ab"), "a-one\nb-one\n");
    let (ka, kb) = (one.key_of("echo a-"), one.key_of("echo b-"));
    assert!(
        (ran(&a, &ka) && ran(&b, &kb)) || (ran(&a, &kb) && ran(&b, &ka)),
        "each replica ran one stage:\n--- a\n{}\n--- b\n{}",
        a.output(),
        b.output()
    );

    // 2. One replica killed mid-step: the other keeps its session and runs the lost step.
    let mut two = start_build(&farm, &ctx, "two", &["R=two", "S=4"]);
    wait_placed(&mut two.proc, "echo a-");
    wait_placed(&mut two.proc, "echo b-");
    std::thread::sleep(Duration::from_millis(800));
    a.kill();
    let out = two.finish();
    assert_eq!(two.file("ab"), "a-two\nb-two\n", "{out}");
    let (ka, kb) = (two.key_of("echo a-"), two.key_of("echo b-"));
    assert!(
        ran(&b, &ka) && ran(&b, &kb),
        "the surviving replica ran both stages:\n{}",
        b.output()
    );
    // The session line on stdout (with --log-level info the log repeats it on stderr).
    let sessions = b
        .output()
        .lines()
        .filter(|l| l.starts_with(&format!("worker {NAME} connected")))
        .count();
    assert_eq!(
        sessions,
        1,
        "the surviving replica never lost its session:\n{}",
        b.output()
    );
    let log = coordinator.output();
    assert_eq!(
        log.matches("worker lost").count() + log.matches("worker left").count(),
        1,
        "only the killed replica left:\n{log}"
    );

    // 3. The killed replica comes back with its state (a restarted container keeps its
    //    emptyDir) and gets work again.
    a = replica(&farm, "a");
    assert_eq!(rows_named(&farm, NAME), 2, "both replicas are listed again");
    let mut three = start_build(&farm, &ctx, "three", &["R=three", "S=2"]);
    three.finish();
    assert_eq!(three.file("ab"), "a-three\nb-three\n");
    let (ka, kb) = (three.key_of("echo a-"), three.key_of("echo b-"));
    assert!(
        ran(&a, &ka) || ran(&a, &kb),
        "the re-joined replica ran a stage:\n{}",
        a.output()
    );
    let files = tree(&three.dest);
    assert!(files.contains_key("ab"), "{files:?}");
}

#[test]
fn a_step_goes_to_the_replica_holding_its_input() {
    let name = "a_step_goes_to_the_replica_holding_its_input";
    let Some(farm) = Farm::new(name, &[NAME]) else {
        return;
    };
    let _coordinator = farm.start_coordinator(3);
    // Joined first: with both idle and equally loaded, ties go to it.
    let first = replica(&farm, "first");
    let second = replica(&farm, "second");
    let busy = farm.env.context(
        "busy",
        &[("Dockerfile", "FROM busybox\nARG S\nRUN sleep $S > /slept\n")],
    );
    let chain1 = farm.env.context(
        "chain1",
        &[("Dockerfile", "FROM busybox\nRUN echo one > /one\n")],
    );
    let chain2 = farm.env.context(
        "chain2",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN echo one > /one\nRUN cat /one > /two\n",
        )],
    );

    // `first` is busy with a long step, so the short one runs on `second`.
    let mut hold = start_build(&farm, &busy, "busy", &["S=6"]);
    wait_placed(&mut hold.proc, "sleep");
    let mut one = start_build(&farm, &chain1, "chain1", &[]);
    one.finish();
    let k_one = one.key_of("echo one");
    assert!(ran(&second, &k_one), "{}", second.output());
    hold.finish();

    // Both idle now; only `second` holds the first step's result. The next step on top of it
    // goes there, not to `first` (which wins ties), though both are named pool-amd64.
    let mut two = start_build(&farm, &chain2, "chain2", &[]);
    let out = two.finish();
    assert_eq!(two.file("two"), "one\n");
    let k_two = two.key_of("cat /one");
    assert_eq!(two.key_of("echo one"), k_one, "the same first step");
    assert!(
        ran(&second, &k_two) && !ran(&first, &k_two),
        "the step ran on the replica holding its input:\n{out}\n--- first\n{}\n--- second\n{}",
        first.output(),
        second.output()
    );
}
