use super::*;

fn key(n: u8) -> Digest {
    Digest::sha256_of(&[n])
}

fn task(n: u8, platform: Option<Platform>, inputs: &[u8]) -> Task {
    Task {
        key: key(n),
        platform,
        inputs: inputs.iter().map(|i| key(*i)).collect(),
        runs_code: true,
    }
}

fn amd64_worker(slots: usize) -> WorkerSpec {
    WorkerSpec {
        name: "local".into(),
        native: vec![Platform::linux_amd64()],
        emulated: vec![Platform::linux_arm64()],
        slots,
    }
}

fn amd() -> Option<Platform> {
    Some(Platform::linux_amd64())
}

fn arm() -> Option<Platform> {
    Some(Platform::linux_arm64())
}

#[test]
fn runs_inputs_first_and_bounds_in_flight() {
    // 1 and 2 independent, 3 needs both.
    let tasks = vec![
        task(1, amd(), &[]),
        task(2, amd(), &[]),
        task(3, amd(), &[1, 2]),
    ];
    let mut s =
        Scheduler::new(tasks, &[key(3)], &BTreeSet::new(), vec![amd64_worker(8)], 1).unwrap();
    let d = s.decide().unwrap();
    assert_eq!(d.len(), 1, "--jobs 1 allows one vertex in flight");
    assert_eq!(d[0].key, key(1));
    assert!(s.decide().unwrap().is_empty());
    s.complete(&key(1)).unwrap();
    let d = s.decide().unwrap();
    assert_eq!(d[0].key, key(2));
    s.complete(&key(2)).unwrap();
    let d = s.decide().unwrap();
    assert_eq!(d[0].key, key(3));
    assert!(!s.is_finished());
    s.complete(&key(3)).unwrap();
    assert!(s.is_finished());
}

#[test]
fn independent_vertices_run_in_parallel() {
    let tasks = vec![
        task(1, amd(), &[]),
        task(2, amd(), &[]),
        task(3, amd(), &[1, 2]),
    ];
    let mut s =
        Scheduler::new(tasks, &[key(3)], &BTreeSet::new(), vec![amd64_worker(4)], 4).unwrap();
    assert_eq!(s.decide().unwrap().len(), 2);
    assert_eq!(s.running(), 2);
}

#[test]
fn cached_vertices_and_what_only_they_need_never_run() {
    let tasks = vec![
        task(1, amd(), &[]),
        task(2, amd(), &[1]),
        task(3, amd(), &[2]),
    ];
    let cached: BTreeSet<Digest> = [key(2)].into();
    let mut s = Scheduler::new(tasks, &[key(3)], &cached, vec![amd64_worker(4)], 4).unwrap();
    assert_eq!(s.pending(), &[key(3)]);
    let d = s.decide().unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].key, key(3));
}

#[test]
fn fully_cached_build_is_finished_at_once() {
    let tasks = vec![task(1, amd(), &[]), task(2, amd(), &[1])];
    let cached: BTreeSet<Digest> = [key(2)].into();
    let s = Scheduler::new(tasks, &[key(2)], &cached, vec![amd64_worker(4)], 4).unwrap();
    assert!(s.is_finished());
    assert!(s.pending().is_empty());
}

#[test]
fn native_worker_preferred_then_emulation_marked() {
    let arm_native = WorkerSpec {
        name: "arm".into(),
        native: vec![Platform::linux_arm64()],
        emulated: vec![],
        slots: 1,
    };
    let tasks = vec![task(1, arm(), &[])];
    let mut s = Scheduler::new(
        tasks.clone(),
        &[key(1)],
        &BTreeSet::new(),
        vec![amd64_worker(4), arm_native],
        4,
    )
    .unwrap();
    let d = s.decide().unwrap();
    assert_eq!((d[0].worker, d[0].emulated), (1, false));

    let mut s =
        Scheduler::new(tasks, &[key(1)], &BTreeSet::new(), vec![amd64_worker(4)], 4).unwrap();
    let d = s.decide().unwrap();
    assert_eq!((d[0].worker, d[0].emulated), (0, true));
}

#[test]
fn no_candidate_names_platform_and_workers() {
    let tasks = vec![task(1, Some(Platform::new("linux", "s390x", "")), &[])];
    let mut s =
        Scheduler::new(tasks, &[key(1)], &BTreeSet::new(), vec![amd64_worker(4)], 4).unwrap();
    let e = s.decide().unwrap_err().to_string();
    assert!(e.contains("linux/s390x") && e.contains("local"), "{e}");
}

#[test]
fn lost_worker_requeues_its_vertices_elsewhere() {
    let tasks = vec![task(1, amd(), &[])];
    let mut s = Scheduler::new(
        tasks,
        &[key(1)],
        &BTreeSet::new(),
        vec![amd64_worker(1), amd64_worker(1)],
        4,
    )
    .unwrap();
    let d = s.decide().unwrap();
    assert_eq!(d[0].worker, 0);
    assert_eq!(s.worker_lost(0), vec![key(1)]);
    let d = s.decide().unwrap();
    assert_eq!(d[0].worker, 1);
}

#[test]
fn load_spreads_over_workers_and_slots_bound() {
    let tasks = vec![
        task(1, amd(), &[]),
        task(2, amd(), &[]),
        task(3, amd(), &[]),
    ];
    let mut s = Scheduler::new(
        tasks,
        &[key(1), key(2), key(3)],
        &BTreeSet::new(),
        vec![amd64_worker(1), amd64_worker(1)],
        8,
    )
    .unwrap();
    let d = s.decide().unwrap();
    let workers: Vec<WorkerId> = d.iter().map(|d| d.worker).collect();
    assert_eq!(workers, vec![0, 1], "one slot each, the third waits");
    assert!(s.complete(&key(3)).is_err(), "not running yet");
}
