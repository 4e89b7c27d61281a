use super::*;
use imgfarm_common::farm::FarmTarget;
use imgfarm_common::graph::op::{ContextOp, UrlOp};
use imgfarm_common::platform::Platform;

use crate::engine::sim::graphs::{export, image, run};

fn context() -> Vertex {
    Vertex::new(
        None,
        Op::Context(ContextOp {
            sources: vec!["a".into()],
            excludes: vec![],
            selection: Digest::sha256_of(b"sel"),
        }),
        vec![],
        "context".into(),
        0,
    )
}

fn url(pinned: bool) -> Vertex {
    Vertex::new(
        None,
        Op::Url(UrlOp {
            url: "http://127.0.0.1:1/f".into(),
            filename: "f".into(),
            checksum: pinned.then(|| Digest::sha256_of(b"f")),
            content_addressed: pinned,
        }),
        vec![],
        "ADD http://127.0.0.1:1/f".into(),
        3,
    )
}

/// One platform: image → run (reads `extra`) → export; plus an unused vertex.
fn def(extra: Option<Vertex>) -> (FarmDefinition, Vec<Digest>) {
    let p = Platform::linux_amd64();
    let img = image(&p);
    let mut vs = vec![img.clone()];
    let mut run_inputs = vec![img.key.clone()];
    if let Some(x) = extra {
        run_inputs.push(x.key.clone());
        vs.push(x);
    }
    let r = run(&p, run_inputs, "make");
    let unused = run(&p, vec![img.key.clone()], "unused");
    let e = export(&p, &img.key, &r.key);
    let keys = vec![
        img.key.clone(),
        r.key.clone(),
        e.key.clone(),
        unused.key.clone(),
    ];
    vs.extend([r, unused, e.clone()]);
    (
        FarmDefinition {
            vertices: vs,
            targets: vec![FarmTarget {
                platform: "linux/amd64".into(),
                export: e.key,
            }],
            context: None,
            title: "t".into(),
        },
        keys,
    )
}

fn build(id: &str, d: FarmDefinition, output: OutputSpec) -> Build {
    Build::new(id.into(), "alice".into(), d, output, 0)
}

#[test]
fn needs_only_what_the_exports_reach_and_exports_when_they_are_done() {
    let (d, k) = def(Some(context()));
    let mut b = build("b1", d, OutputSpec::default());
    assert!(b.needs(&k[0]) && b.needs(&k[1]) && b.needs(&k[2]));
    assert!(!b.needs(&k[3]), "a vertex no export reaches is not needed");
    assert_eq!(b.sources().len(), 1, "the context is a source");
    let done = b.done_at_start(|_| false);
    assert_eq!(done.len(), 1, "only the source is done at start");
    assert_eq!(b.tasks().len(), 4);
    assert!(!b.ready_to_export());
    for key in &k[..2] {
        assert!(b.mark_done(key));
    }
    assert!(!b.mark_done(&k[0]), "done twice counts once");
    assert!(!b.mark_done(&k[3]), "not needed");
    assert!(!b.ready_to_export());
    b.mark_done(&k[2]);
    assert!(b.ready_to_export());
    b.exporting = true;
    assert!(!b.ready_to_export(), "not twice");
    let st = b.status();
    assert_eq!((st.vertices_total, st.vertices_done), (4, 3));
    assert_eq!(st.state, "queued");
}

#[test]
fn cached_results_are_reused_except_downstream_of_an_unpinned_url() {
    let (d, k) = def(Some(url(false)));
    let b = build("b1", d, OutputSpec::default());
    let done = b.done_at_start(|_| true);
    assert!(done.contains(&k[0]), "the base image is reusable");
    assert!(!done.contains(&k[1]), "RUN reads the unpinned download");
    assert!(!done.contains(&k[2]), "and so does the export");
    // Fresh vertices get a per-build scheduler key; the others keep theirs.
    assert_eq!(b.sched_key(&k[0]), k[0]);
    let s = b.sched_key(&k[1]);
    assert_ne!(s, k[1]);
    assert_eq!(b.real_key(&s), Some(k[1].clone()));
    assert_eq!(b.real_key(&k[1]), None, "known only by its salted key");
    let other = build("b2", def(Some(url(false))).0, OutputSpec::default());
    assert_ne!(other.sched_key(&k[1]), s, "each build runs it afresh");
    let t = b.tasks();
    let run = t.iter().find(|t| t.key == s).unwrap();
    assert!(run.inputs.contains(&k[0]));
    assert_eq!(b.roots(), vec![b.sched_key(&k[2])]);

    let (d, k) = def(Some(url(true)));
    let b = build("b3", d, OutputSpec::default());
    assert!(
        b.done_at_start(|_| true).contains(&k[1]),
        "pinned URL: reusable"
    );
}

#[test]
fn no_cache_reuses_nothing() {
    let (d, k) = def(None);
    let b = build(
        "b1",
        d,
        OutputSpec {
            no_cache: true,
            ..OutputSpec::default()
        },
    );
    assert!(b.done_at_start(|_| true).is_empty());
    assert_ne!(b.sched_key(&k[0]), k[0]);
}

#[test]
fn identical_vertices_of_two_builds_share_a_key_and_end_separately() {
    let (d, k) = def(None);
    let mut all = Builds::default();
    all.insert(build("b1", d.clone(), OutputSpec::default()));
    all.insert(build("b2", d, OutputSpec::default()));
    let users = all.needing(&k[1]);
    assert_eq!(
        users,
        vec![("b1".into(), k[1].clone()), ("b2".into(), k[1].clone())]
    );
    assert!(all.needed_only_by("b1", &[k[1].clone()]).is_empty());
    all.get_mut("b2").unwrap().state = BuildState::Cancelled;
    assert_eq!(
        all.needed_only_by("b1", &[k[1].clone()]),
        vec![k[1].clone()]
    );
    assert_eq!(all.needing(&k[1]).len(), 1, "ended builds need nothing");
    all.get_mut("b1").unwrap().attached.insert(7);
    all.detach(7, std::time::Instant::now());
    assert!(all.get("b1").unwrap().attached.is_empty());
    all.prune_ended(0);
    assert!(all.get("b2").is_none());
    assert!(all.get("b1").is_some(), "active builds are never pruned");
}

#[test]
fn a_push_waits_for_credentials_lost_in_a_restart() {
    let (d, k) = def(None);
    let out = OutputSpec {
        push: vec!["localhost:5000/x:1".into()],
        ..OutputSpec::default()
    };
    let mut b = build("b1", d, out);
    b.had_credentials = true;
    for key in &k[..3] {
        b.mark_done(key);
    }
    assert!(b.awaiting_credentials());
    assert!(!b.ready_to_export());
    b.output
        .credentials
        .push(imgfarm_common::farm::RegistryCredential {
            host: "localhost:5000".into(),
            username: "u".into(),
            secret: "p".into(),
        });
    assert!(b.ready_to_export());
}

#[test]
fn states_round_trip() {
    for s in [
        BuildState::Queued,
        BuildState::Running,
        BuildState::Done,
        BuildState::Failed,
        BuildState::Cancelled,
    ] {
        assert_eq!(BuildState::parse(s.as_str()), Some(s));
    }
    assert_eq!(BuildState::parse("x"), None);
    assert!(BuildState::Running.is_active() && !BuildState::Done.is_active());
}

#[test]
fn describe_names_platform_and_step() {
    let (d, k) = def(None);
    let b = build("b1", d, OutputSpec::default());
    let s = b.describe(&k[1]);
    assert!(s.starts_with("linux/amd64 RUN make ("), "{s}");
    let ghost = Digest::sha256_of(b"ghost");
    assert_eq!(b.describe(&ghost), ghost.to_string());
}

#[test]
fn a_vertex_is_ready_since_admission_or_its_last_input() {
    let (d, k) = def(Some(context()));
    let mut b = build("b1", d, OutputSpec::default());
    let t0 = std::time::Instant::now();
    assert_eq!(b.ready_since(&k[1]), None, "not taken in yet");
    b.queued_at = Some(t0);
    assert_eq!(b.ready_since(&k[0]), Some(t0), "no inputs: since admission");
    assert_eq!(b.ready_since(&k[1]), Some(t0), "inputs done at start");
    let t1 = t0 + std::time::Duration::from_secs(2);
    b.finished_at(&k[0], t1);
    assert_eq!(b.ready_since(&k[1]), Some(t1), "since its input finished");
    let t2 = t1 + std::time::Duration::from_secs(3);
    b.finished_at(&k[1], t2);
    assert_eq!(
        b.ready_since(&k[2]),
        Some(t2),
        "since the last of its inputs"
    );
    b.finished_at(&k[3], t2 + std::time::Duration::from_secs(9));
    assert_eq!(
        b.ready_since(&k[2]),
        Some(t2),
        "an unneeded vertex is not recorded"
    );
}
