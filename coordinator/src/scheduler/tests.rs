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
        needs: Default::default(),
    }
}

fn amd64_worker(slots: usize) -> WorkerSpec {
    WorkerSpec {
        name: "local".into(),
        native: vec![Platform::linux_amd64()],
        emulated: vec![Platform::linux_arm64()],
        slots,
        entitlements: Default::default(),
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
        entitlements: Default::default(),
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

// --- Multi-build API (issue 6 "Scheduler") ---

fn worker(name: &str, native: &[Platform], emulated: &[Platform], slots: usize) -> WorkerSpec {
    WorkerSpec {
        name: name.into(),
        native: native.to_vec(),
        emulated: emulated.to_vec(),
        slots,
        entitlements: Default::default(),
    }
}

fn amd_native(name: &str, slots: usize) -> WorkerSpec {
    worker(name, &[Platform::linux_amd64()], &[], slots)
}

fn none() -> BTreeSet<Digest> {
    BTreeSet::new()
}

fn on_worker(p: &PlacementRound, k: u8) -> Option<WorkerId> {
    p.decisions
        .iter()
        .find(|d| d.key == key(k))
        .map(|d| d.worker)
}

#[test]
fn affinity_wins_over_load_among_free_workers() {
    let mut s = Scheduler::empty(16);
    let a = s.add_worker(amd_native("a", 4));
    let b = s.add_worker(amd_native("b", 4));
    // Worker a already runs something, so b is less loaded; a holds the input.
    s.add_build(vec![task(9, amd(), &[])], &[key(9)], &none())
        .unwrap();
    assert_eq!(on_worker(&s.place(), 9), Some(a));
    s.add_holdings(a, [key(1)]);
    s.add_build(vec![task(2, amd(), &[1])], &[key(2)], &[key(1)].into())
        .unwrap();
    assert_eq!(on_worker(&s.place(), 2), Some(a), "a holds the input");
    // Holding the vertex's own key beats holding all its inputs.
    s.add_holdings(b, [key(1), key(3)]);
    s.add_holdings(a, [key(4)]);
    let t = Task {
        key: key(4),
        platform: amd(),
        inputs: vec![key(1), key(3)],
        runs_code: true,
        needs: Default::default(),
    };
    s.add_build(vec![t], &[key(4)], &[key(1), key(3)].into())
        .unwrap();
    assert_eq!(on_worker(&s.place(), 4), Some(a));
    assert_eq!(s.state_of(&key(4)), Some(VertexState::Running(a)));
}

#[test]
fn affinity_never_waits_for_a_full_worker() {
    let mut s = Scheduler::empty(16);
    let a = s.add_worker(amd_native("a", 1));
    let b = s.add_worker(amd_native("b", 1));
    s.add_holdings(a, [key(1)]);
    s.add_build(
        vec![task(2, amd(), &[1]), task(3, amd(), &[1])],
        &[key(2), key(3)],
        &[key(1)].into(),
    )
    .unwrap();
    let p = s.place();
    assert_eq!(on_worker(&p, 2), Some(a));
    assert_eq!(on_worker(&p, 3), Some(b), "a is full: b takes it at once");
}

#[test]
fn two_amd64_workers_share_independent_vertices() {
    let mut s = Scheduler::empty(16);
    let a = s.add_worker(amd_native("a", 2));
    let b = s.add_worker(amd_native("b", 2));
    let tasks = (1..=4).map(|n| task(n, amd(), &[])).collect();
    s.add_build(tasks, &[key(1), key(2), key(3), key(4)], &none())
        .unwrap();
    let p = s.place();
    let ws: Vec<WorkerId> = p.decisions.iter().map(|d| d.worker).collect();
    assert_eq!(ws, vec![a, b, a, b], "lowest load first, ties by id");
    assert!(p.unplaceable.is_empty());
}

#[test]
fn never_placed_on_a_worker_without_its_platform() {
    let mut s = Scheduler::empty(16);
    let _amd = s.add_worker(amd_native("amd", 8));
    let arm_w = s.add_worker(worker("arm", &[Platform::linux_arm64()], &[], 1));
    s.add_build(
        vec![task(1, arm(), &[]), task(2, arm(), &[])],
        &[key(1), key(2)],
        &none(),
    )
    .unwrap();
    let p = s.place();
    assert_eq!(p.decisions.len(), 1, "arm has one slot; amd cannot take it");
    assert_eq!(p.decisions[0].worker, arm_w);
    assert!(p.unplaceable.is_empty(), "a busy candidate is not 'none'");
}

#[test]
fn native_preferred_over_emulated_and_emulation_marked_for_run_only() {
    let mut s = Scheduler::empty(16);
    let emu = s.add_worker(worker(
        "emu",
        &[Platform::linux_amd64()],
        &[Platform::linux_arm64()],
        8,
    ));
    let mut copy = task(2, arm(), &[]);
    copy.runs_code = false;
    s.add_build(vec![task(1, arm(), &[]), copy], &[key(1), key(2)], &none())
        .unwrap();
    let p = s.place();
    assert_eq!(
        p.decisions,
        vec![
            Decision {
                key: key(1),
                worker: emu,
                emulated: true
            },
            Decision {
                key: key(2),
                worker: emu,
                emulated: false
            },
        ]
    );
    // Once a native arm64 worker exists, it wins even when busier.
    let arm_w = s.add_worker(worker("arm", &[Platform::linux_arm64()], &[], 1));
    s.add_build(vec![task(3, arm(), &[])], &[key(3)], &none())
        .unwrap();
    let p = s.place();
    assert_eq!(
        p.decisions,
        vec![Decision {
            key: key(3),
            worker: arm_w,
            emulated: false
        }]
    );
}

#[test]
fn identical_keys_from_two_builds_run_once() {
    let mut s = Scheduler::empty(16);
    s.add_worker(amd_native("a", 8));
    s.add_build(
        vec![task(1, amd(), &[]), task(2, amd(), &[1])],
        &[key(2)],
        &none(),
    )
    .unwrap();
    s.add_build(
        vec![task(1, amd(), &[]), task(3, amd(), &[1])],
        &[key(3)],
        &none(),
    )
    .unwrap();
    assert_eq!(s.pending(), &[key(1), key(2), key(3)]);
    let p = s.place();
    assert_eq!(p.decisions.len(), 1);
    s.complete(&key(1)).unwrap();
    // A third build arriving after 1 finished does not run it again.
    s.add_build(
        vec![task(1, amd(), &[]), task(4, amd(), &[1])],
        &[key(4)],
        &none(),
    )
    .unwrap();
    let keys: Vec<Digest> = s.place().decisions.into_iter().map(|d| d.key).collect();
    assert_eq!(keys, vec![key(2), key(3), key(4)]);
}

#[test]
fn failed_task_is_rearmed_by_a_later_build() {
    let mut s = Scheduler::empty(16);
    s.add_worker(amd_native("a", 8));
    let graph = || vec![task(1, amd(), &[]), task(2, amd(), &[1])];
    s.add_build(graph(), &[key(2)], &none()).unwrap();
    s.place();
    s.fail(&key(1)).unwrap();
    assert_eq!(s.state_of(&key(1)), Some(VertexState::Failed));
    assert!(s.place().decisions.is_empty());
    s.add_build(graph(), &[key(2)], &none()).unwrap();
    assert_eq!(s.state_of(&key(1)), Some(VertexState::Waiting));
    assert_eq!(on_worker(&s.place(), 1), Some(0));
}

#[test]
fn forget_drops_waiting_tasks_but_not_running_ones() {
    let mut s = Scheduler::empty(1);
    s.add_worker(amd_native("a", 8));
    s.add_build(
        vec![
            task(1, amd(), &[]),
            task(2, amd(), &[]),
            task(3, amd(), &[1]),
        ],
        &[key(2), key(3)],
        &none(),
    )
    .unwrap();
    assert_eq!(on_worker(&s.place(), 1), Some(0));
    s.forget(&[key(1), key(2), key(3)]);
    assert_eq!(s.state_of(&key(1)), Some(VertexState::Running(0)));
    assert_eq!(s.state_of(&key(2)), None);
    assert_eq!(s.state_of(&key(3)), None);
    assert_eq!(s.pending(), &[key(1)]);
    s.complete(&key(1)).unwrap();
    assert!(s.place().decisions.is_empty(), "nothing forgotten runs");
    assert!(s.is_finished());
    // The forgotten keys can come back with a new build.
    s.add_build(vec![task(3, amd(), &[1])], &[key(3)], &none())
        .unwrap();
    assert_eq!(on_worker(&s.place(), 3), Some(0));
}

#[test]
fn worker_lost_returns_its_vertices_and_drops_its_holdings() {
    let mut s = Scheduler::empty(16);
    let a = s.add_worker(amd_native("a", 4));
    let b = s.add_worker(amd_native("b", 1));
    s.add_holdings(a, [key(9)]);
    s.add_build(
        vec![task(1, amd(), &[9]), task(2, amd(), &[9])],
        &[key(1), key(2)],
        &[key(9)].into(),
    )
    .unwrap();
    let p = s.place();
    assert_eq!((on_worker(&p, 1), on_worker(&p, 2)), (Some(a), Some(a)));
    assert_eq!(
        s.worker_lost(a),
        vec![key(1), key(2)]
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
    assert_eq!(s.running(), 0);
    let p = s.place();
    assert_eq!(p.decisions.len(), 1, "b has one slot");
    assert_eq!(p.decisions[0].worker, b);
    // A reconnecting worker is a new id; a's old holdings no longer count.
    let a2 = s.add_worker(amd_native("a", 4));
    assert_ne!(a2, a);
    s.add_holdings(a, [key(9)]);
    let p = s.place();
    assert_eq!(p.decisions.len(), 1);
    assert_eq!(p.decisions[0].worker, a2);
}

#[test]
fn unplaceable_is_reported_while_other_vertices_are_placed() {
    let mut s = Scheduler::empty(16);
    s.add_worker(amd_native("amd1", 4));
    let s390x = Some(Platform::new("linux", "s390x", ""));
    s.add_build(
        vec![task(1, s390x, &[]), task(2, amd(), &[])],
        &[key(1), key(2)],
        &none(),
    )
    .unwrap();
    let p = s.place();
    assert_eq!(on_worker(&p, 2), Some(0));
    assert_eq!(p.unplaceable.len(), 1);
    let (k, e) = &p.unplaceable[0];
    assert_eq!(k, &key(1));
    let msg = e.to_string();
    assert!(msg.contains("linux/s390x") && msg.contains("amd1"), "{msg}");
    assert_eq!(s.state_of(&key(1)), Some(VertexState::Waiting));
    // A worker that joins later takes it.
    let z = s.add_worker(worker("z", &[Platform::new("linux", "s390x", "")], &[], 1));
    assert_eq!(on_worker(&s.place(), 1), Some(z));
}

#[test]
fn decide_starts_nothing_when_a_vertex_has_no_candidate() {
    let mut s = Scheduler::empty(16);
    s.add_worker(amd_native("amd1", 4));
    let s390x = Some(Platform::new("linux", "s390x", ""));
    s.add_build(
        vec![task(1, amd(), &[]), task(2, s390x, &[])],
        &[key(1), key(2)],
        &none(),
    )
    .unwrap();
    assert!(s.decide().is_err());
    assert_eq!(s.running(), 0);
    assert_eq!(s.state_of(&key(1)), Some(VertexState::Waiting));
}

#[test]
fn add_build_with_missing_input_changes_nothing() {
    let mut s = Scheduler::empty(16);
    s.add_worker(amd_native("a", 4));
    let e = s
        .add_build(vec![task(2, amd(), &[1])], &[key(2)], &none())
        .unwrap_err();
    assert!(matches!(e, SchedError::MissingInput { .. }), "{e}");
    assert_eq!(s.state_of(&key(2)), None);
    assert!(s.pending().is_empty());
}

#[test]
fn events_for_vertices_not_running_are_refused() {
    let mut s = Scheduler::empty(16);
    s.add_worker(amd_native("a", 4));
    s.add_build(vec![task(1, amd(), &[])], &[key(1)], &none())
        .unwrap();
    assert_eq!(s.complete(&key(1)), Err(SchedError::NotRunning(key(1))));
    assert_eq!(s.fail(&key(7)), Err(SchedError::NotRunning(key(7))));
    // Lost or unknown workers: no effect, no panic.
    s.add_holdings(42, [key(1)]);
    assert!(s.worker_lost(42).is_empty());
}

#[test]
fn complete_records_holdings_for_affinity() {
    let mut s = Scheduler::empty(16);
    let a = s.add_worker(amd_native("a", 4));
    let b = s.add_worker(amd_native("b", 4));
    s.add_build(
        vec![
            task(1, amd(), &[]),
            task(2, amd(), &[]),
            task(3, amd(), &[2]),
        ],
        &[key(1), key(3)],
        &none(),
    )
    .unwrap();
    let p = s.place();
    assert_eq!((on_worker(&p, 1), on_worker(&p, 2)), (Some(a), Some(b)));
    s.complete(&key(2)).unwrap();
    assert_eq!(
        on_worker(&s.place(), 3),
        Some(b),
        "b holds 2 although a and b have equal load"
    );
}

/// Nothing left inside: no state, task, ready entry, user link or order.
fn assert_empty(s: &Scheduler) {
    assert_eq!(s.tracked(), 0, "{s:?}");
    assert!(s.tasks.is_empty(), "{s:?}");
    assert!(s.seq.is_empty() && s.ready.is_empty(), "{s:?}");
    assert!(s.users.is_empty(), "{s:?}");
    assert!(s.order.is_empty(), "{s:?}");
    assert_eq!(s.running(), 0);
}

#[test]
fn retire_drops_done_failed_and_waiting_keys() {
    let mut s = Scheduler::empty(16);
    s.add_worker(amd_native("a", 2));
    // 9 cached; 1 and 2 run; 3 waits for 1, 4 for 2.
    s.add_build(
        vec![
            task(1, amd(), &[9]),
            task(2, amd(), &[]),
            task(3, amd(), &[1]),
            task(4, amd(), &[2]),
        ],
        &[key(3), key(4)],
        &[key(9)].into(),
    )
    .unwrap();
    assert_eq!(s.place().decisions.len(), 2);
    s.complete(&key(1)).unwrap();
    s.fail(&key(2)).unwrap();
    assert_eq!(s.state_of(&key(3)), Some(VertexState::Waiting));
    assert_eq!(s.tracked(), 5);
    s.retire(&[key(9), key(1), key(2), key(3), key(4)]);
    assert_empty(&s);
    assert!(s.place().decisions.is_empty(), "nothing retired runs");
    // Unknown keys and an empty list are fine.
    s.retire(&[key(7)]);
    s.retire(&[]);
    assert_empty(&s);
}

#[test]
fn retire_never_drops_a_running_key_nor_what_it_waits_for() {
    let mut s = Scheduler::empty(16);
    s.add_worker(amd_native("a", 1));
    s.add_build(
        vec![task(1, amd(), &[]), task(2, amd(), &[1])],
        &[key(2)],
        &none(),
    )
    .unwrap();
    assert_eq!(on_worker(&s.place(), 1), Some(0));
    s.complete(&key(1)).unwrap();
    assert_eq!(on_worker(&s.place(), 2), Some(0));
    // 2 is running: it stays, and so does its input 1 until 2 is retired
    // (a running vertex that goes back to waiting needs its inputs done).
    s.retire(&[key(1), key(2)]);
    assert_eq!(s.state_of(&key(2)), Some(VertexState::Running(0)));
    assert_eq!(s.state_of(&key(1)), Some(VertexState::Done));
    // Its outcome arrives as usual; then it retires.
    s.complete(&key(2)).unwrap();
    s.retire(&[key(1), key(2)]);
    assert_empty(&s);
}

#[test]
fn retire_keeps_the_inputs_a_remaining_task_waits_for() {
    let mut s = Scheduler::empty(16);
    s.add_worker(amd_native("a", 1));
    // Build A: 1 → 2 → 3; build B: 2 → 4. A ends early; the caller (by
    // mistake) retires all of A's keys while 4 still waits for 2.
    s.add_build(
        vec![
            task(1, amd(), &[]),
            task(2, amd(), &[1]),
            task(3, amd(), &[2]),
        ],
        &[key(3)],
        &none(),
    )
    .unwrap();
    s.add_build(vec![task(4, amd(), &[2])], &[key(4)], &none())
        .unwrap();
    s.retire(&[key(1), key(2), key(3)]);
    assert_eq!(s.state_of(&key(3)), None, "nobody waits for 3");
    assert_eq!(s.state_of(&key(2)), Some(VertexState::Waiting));
    assert_eq!(
        s.state_of(&key(1)),
        Some(VertexState::Waiting),
        "2 waits for it"
    );
    for k in [1, 2, 4] {
        assert_eq!(on_worker(&s.place(), k), Some(0));
        s.complete(&key(k)).unwrap();
    }
    assert!(s.is_finished());
    // Done inputs of a remaining task that is done themselves may go.
    s.retire(&[key(1), key(2)]);
    assert_eq!(s.tracked(), 1);
    s.retire(&[key(4)]);
    assert_empty(&s);
}

#[test]
fn retired_keys_come_back_with_a_later_build() {
    let mut s = Scheduler::empty(16);
    s.add_worker(amd_native("a", 4));
    let graph = || vec![task(1, amd(), &[]), task(2, amd(), &[1])];
    s.add_build(graph(), &[key(2)], &none()).unwrap();
    for k in [1, 2] {
        assert_eq!(on_worker(&s.place(), k), Some(0));
        s.complete(&key(k)).unwrap();
    }
    s.retire(&[key(1), key(2)]);
    assert_empty(&s);
    // Once with 1 cached (its result is in the database), once without.
    s.add_build(graph(), &[key(2)], &[key(1)].into()).unwrap();
    assert_eq!(s.state_of(&key(1)), Some(VertexState::Done));
    assert_eq!(on_worker(&s.place(), 2), Some(0));
    s.complete(&key(2)).unwrap();
    s.retire(&[key(1), key(2)]);
    s.add_build(graph(), &[key(2)], &none()).unwrap();
    assert_eq!(on_worker(&s.place(), 1), Some(0));
}

#[test]
fn many_sequential_builds_leave_nothing_behind() {
    let mut s = Scheduler::empty(16);
    let w = s.add_worker(amd_native("a", 2));
    s.set_holdings_cap(10);
    // Each build has keys of its own (like salted --no-cache keys) plus a
    // shared base; every one ends (done or failed) and is retired.
    for b in 0..200u32 {
        let k = |n: u32| Digest::sha256_of(format!("{b}/{n}").as_bytes());
        let base = Digest::sha256_of(b"base");
        let tasks = vec![
            Task {
                key: base.clone(),
                platform: amd(),
                inputs: vec![],
                runs_code: false,
                needs: Default::default(),
            },
            Task {
                key: k(1),
                platform: amd(),
                inputs: vec![base.clone()],
                runs_code: true,
                needs: Default::default(),
            },
            Task {
                key: k(2),
                platform: amd(),
                inputs: vec![k(1)],
                runs_code: false,
                needs: Default::default(),
            },
        ];
        let cached: BTreeSet<Digest> = if b > 0 { [base.clone()].into() } else { none() };
        s.add_build(tasks, &[k(2)], &cached).unwrap();
        loop {
            let p = s.place();
            if p.decisions.is_empty() {
                break;
            }
            for d in p.decisions {
                if b % 7 == 3 && d.key == k(1) {
                    s.fail(&d.key).unwrap();
                } else {
                    s.complete(&d.key).unwrap();
                }
            }
        }
        s.retire(&[base, k(1), k(2)]);
        assert_empty(&s);
        assert!(s.holdings(w) <= 10);
    }
    assert_eq!(s.holdings(w), 10);
}

#[test]
fn holdings_keep_the_newest_keys_up_to_the_cap() {
    let mut s = Scheduler::empty(16);
    let a = s.add_worker(amd_native("a", 4));
    let b = s.add_worker(amd_native("b", 4));
    s.set_holdings_cap(3);
    // b reports 1..=4 (1 is forgotten), then 2 again (now the newest) and
    // 5: 3 is the oldest and goes.
    s.add_holdings(b, [key(1), key(2), key(3), key(4)]);
    assert_eq!(s.holdings(b), 3);
    s.add_holdings(b, [key(2), key(5)]);
    assert_eq!(s.holdings(b), 3);
    // Where a vertex reading `k` goes: b only by affinity (a has the lower
    // id, both are idle). Failing the probe leaves holdings unchanged.
    let probe = |s: &mut Scheduler, k: u8| {
        s.add_build(
            vec![task(k + 100, amd(), &[k])],
            &[key(k + 100)],
            &[key(k)].into(),
        )
        .unwrap();
        let w = on_worker(&s.place(), k + 100);
        s.fail(&key(k + 100)).unwrap();
        s.retire(&[key(k), key(k + 100)]);
        w
    };
    let placed: Vec<_> = (1..=5).map(|k| probe(&mut s, k)).collect();
    assert_eq!(placed, [Some(a), Some(b), Some(a), Some(b), Some(b)]);
    // A new cap applies to existing workers at once (0 counts as 1), and
    // to workers added later.
    s.set_holdings_cap(0);
    assert_eq!(s.holdings(b), 1);
    assert_eq!((probe(&mut s, 5), probe(&mut s, 2)), (Some(b), Some(a)));
    let c = s.add_worker(amd_native("c", 1));
    s.add_holdings(c, [key(1), key(2)]);
    assert_eq!(s.holdings(c), 1);
    assert_eq!(s.holdings(99), 0, "unknown worker");
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    fn platform(n: u8) -> Option<Platform> {
        match n % 3 {
            0 => None,
            1 => amd(),
            _ => arm(),
        }
    }

    /// Vertex i's inputs are earlier vertices (a DAG in graph order).
    fn graph() -> impl Strategy<Value = Vec<(u8, Vec<usize>, bool)>> {
        proptest::collection::vec(
            (
                0u8..3,
                proptest::collection::vec(0usize..64, 0..3),
                any::<bool>(),
            ),
            1..40,
        )
    }

    fn capable(w: &WorkerSpec, p: &Option<Platform>) -> bool {
        match p {
            None => true,
            Some(p) => w.native.iter().chain(&w.emulated).any(|n| n.matches(p)),
        }
    }

    proptest! {
        #[test]
        fn right_platform_and_always_finishes(
            g in graph(),
            // (native arm64?, emulates arm64?, slots) for workers that may die
            mortal in proptest::collection::vec((any::<bool>(), any::<bool>(), 1usize..3), 0..4),
            events in proptest::collection::vec(0u8..8, 0..200),
        ) {
            let tasks: Vec<Task> = g
                .iter()
                .enumerate()
                .map(|(i, (p, ins, code))| Task {
                    key: key(i as u8),
                    platform: platform(*p),
                    inputs: ins
                        .iter()
                        .filter(|_| i > 0)
                        .map(|n| key((n % i) as u8))
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect(),
                    runs_code: *code,
                    needs: Default::default(),
                })
                .collect();
            let roots: Vec<Digest> = tasks.iter().map(|t| t.key.clone()).collect();
            let mut s = Scheduler::empty(6);
            // The survivor: amd64 native, emulates arm64, never lost.
            let mut specs = vec![worker("survivor", &[Platform::linux_amd64()], &[Platform::linux_arm64()], 1)];
            s.add_worker(specs[0].clone());
            for (i, (native_arm, emu_arm, slots)) in mortal.iter().enumerate() {
                let spec = if *native_arm {
                    worker(&format!("m{i}"), &[Platform::linux_arm64()], &[], *slots)
                } else if *emu_arm {
                    worker(&format!("m{i}"), &[Platform::linux_amd64()], &[Platform::linux_arm64()], *slots)
                } else {
                    worker(&format!("m{i}"), &[Platform::linux_amd64()], &[], *slots)
                };
                specs.push(spec.clone());
                s.add_worker(spec);
            }
            let by_key: BTreeMap<Digest, Task> = tasks.iter().map(|t| (t.key.clone(), t.clone())).collect();
            s.add_build(tasks, &roots, &BTreeSet::new()).unwrap();
            let mut running: Vec<Decision> = Vec::new();
            let mut lost = BTreeSet::new();
            let mut ev = events.into_iter();
            for _round in 0..10_000 {
                let p = s.place();
                prop_assert!(p.unplaceable.is_empty(), "{:?}", p.unplaceable);
                for d in p.decisions {
                    let t = &by_key[&d.key];
                    prop_assert!(!lost.contains(&d.worker));
                    prop_assert!(capable(&specs[d.worker], &t.platform), "{d:?} on {:?}", specs[d.worker]);
                    if let Some(pl) = &t.platform {
                        let native = specs[d.worker].native.iter().any(|n| n.matches(pl));
                        prop_assert_eq!(d.emulated, !native && t.runs_code);
                    }
                    running.push(d);
                }
                if running.is_empty() {
                    break;
                }
                match ev.next() {
                    Some(n) if n == 0 && specs.len() > 1 => {
                        let w = 1 + (running.len() % (specs.len() - 1));
                        if lost.insert(w) {
                            let back = s.worker_lost(w);
                            let mut expect: Vec<Digest> = running.iter().filter(|d| d.worker == w).map(|d| d.key.clone()).collect();
                            expect.sort();
                            prop_assert_eq!(back, expect);
                            running.retain(|d| d.worker != w);
                        }
                    }
                    e => {
                        let i = e.map_or(0, |n| n as usize) % running.len();
                        let d = running.remove(i);
                        s.complete(&d.key).unwrap();
                    }
                }
            }
            prop_assert!(s.is_finished(), "stuck: {:?}", s);
            prop_assert_eq!(s.running(), 0);
        }
    }

    /// Everything `roots` need in `tasks`.
    fn closure(tasks: &[Task], roots: &[Digest]) -> BTreeSet<Digest> {
        let by_key: BTreeMap<&Digest, &Task> = tasks.iter().map(|t| (&t.key, t)).collect();
        let mut seen = BTreeSet::new();
        let mut todo: Vec<Digest> = roots.to_vec();
        while let Some(k) = todo.pop() {
            if seen.insert(k.clone()) {
                if let Some(t) = by_key.get(&k) {
                    todo.extend(t.inputs.iter().cloned());
                }
            }
        }
        seen
    }

    proptest! {
        /// Two builds over one graph, the second arriving mid-way, the first maybe cancelled:
        /// every key runs at most once, the surviving builds finish, and
        /// once both ended nothing is left.
        #[test]
        fn shared_keys_run_once_and_cancel_spares_the_other_build(
            g in graph(),
            roots_a in proptest::collection::vec(0usize..64, 1..4),
            roots_b in proptest::collection::vec(0usize..64, 1..4),
            join_after in 0usize..20,
            cancel_a in any::<bool>(),
            retire_on_cancel in any::<bool>(),
            picks in proptest::collection::vec(0usize..16, 0..200),
        ) {
            let n = g.len();
            let tasks: Vec<Task> = g
                .iter()
                .enumerate()
                .map(|(i, (p, ins, code))| Task {
                    key: key(i as u8),
                    platform: platform(*p),
                    inputs: ins
                        .iter()
                        .filter(|_| i > 0)
                        .map(|x| key((x % i) as u8))
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect(),
                    runs_code: *code,
                    needs: Default::default(),
                })
                .collect();
            let roots_a: Vec<Digest> = roots_a.iter().map(|r| key((r % n) as u8)).collect();
            let roots_b: Vec<Digest> = roots_b.iter().map(|r| key((r % n) as u8)).collect();
            let need_a = closure(&tasks, &roots_a);
            let need_b = closure(&tasks, &roots_b);
            let mut s = Scheduler::empty(4);
            s.add_worker(worker("amd", &[Platform::linux_amd64()], &[Platform::linux_arm64()], 2));
            s.add_worker(worker("arm", &[Platform::linux_arm64()], &[], 1));
            s.add_build(tasks.clone(), &roots_a, &BTreeSet::new()).unwrap();
            let mut started: BTreeSet<Digest> = BTreeSet::new();
            let mut running: Vec<Digest> = Vec::new();
            let mut picks = picks.into_iter();
            let mut joined = false;
            for round in 0..10_000usize {
                if !joined && round >= join_after {
                    joined = true;
                    s.add_build(tasks.clone(), &roots_b, &BTreeSet::new()).unwrap();
                    if cancel_a {
                        let only_a: Vec<Digest> = need_a.difference(&need_b).cloned().collect();
                        if retire_on_cancel {
                            s.retire(&only_a);
                        } else {
                            s.forget(&only_a);
                        }
                    }
                }
                for d in s.place().decisions {
                    prop_assert!(started.insert(d.key.clone()), "{} ran twice", d.key);
                    running.push(d.key);
                }
                if running.is_empty() {
                    if joined {
                        break;
                    }
                    continue;
                }
                let i = picks.next().unwrap_or(0) % running.len();
                let k = running.remove(i);
                s.complete(&k).unwrap();
            }
            for r in &roots_b {
                prop_assert_eq!(s.state_of(r), Some(VertexState::Done));
            }
            if !cancel_a {
                for r in &roots_a {
                    prop_assert_eq!(s.state_of(r), Some(VertexState::Done));
                }
            }
            prop_assert!(s.is_finished());
            // Both builds ended: retiring every key leaves nothing behind.
            let all: Vec<Digest> = need_a.union(&need_b).cloned().collect();
            s.retire(&all);
            prop_assert_eq!(s.tracked(), 0);
            prop_assert!(s.tasks.is_empty() && s.users.is_empty() && s.order.is_empty());
        }
    }
}

/// Scheduling cost per vertex (place + complete) for a 1000-vertex graph
/// over 8 workers. `cargo test -p imgfarm-coordinator --lib -- --ignored
/// --nocapture sched_bench`.
#[test]
#[ignore]
fn sched_bench_1000_vertices_8_workers() {
    use std::time::Instant;
    // Layers of 50 vertices, each needing up to 3 vertices of the layer
    // before; platforms alternate amd64/arm64.
    let n = 1000usize;
    let keys: Vec<Digest> = (0..n)
        .map(|i| Digest::sha256_of(&(i as u32).to_le_bytes()))
        .collect();
    let tasks: Vec<Task> = (0..n)
        .map(|i| {
            let layer = i / 50;
            let inputs = if layer == 0 {
                vec![]
            } else {
                (0..3)
                    .map(|j| keys[(layer - 1) * 50 + (i * 7 + j * 13) % 50].clone())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect()
            };
            Task {
                key: keys[i].clone(),
                platform: if i % 2 == 0 { amd() } else { arm() },
                inputs,
                runs_code: true,
                needs: Default::default(),
            }
        })
        .collect();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        let mut s = Scheduler::empty(64);
        for w in 0..8 {
            let p = if w % 2 == 0 {
                Platform::linux_amd64()
            } else {
                Platform::linux_arm64()
            };
            s.add_worker(worker(&format!("w{w}"), &[p], &[], 4));
        }
        s.add_build(tasks.clone(), &keys, &BTreeSet::new()).unwrap();
        let mut done = 0;
        while !s.is_finished() {
            let p = s.place();
            assert!(p.unplaceable.is_empty());
            for d in p.decisions {
                s.complete(&d.key).unwrap();
                done += 1;
            }
        }
        assert_eq!(done, n);
        best = best.min(start.elapsed().as_secs_f64());
    }
    println!(
        "scheduler: {n} vertices over 8 workers: {:.1} µs per vertex (add_build + place + complete, best of 5)",
        best * 1e6 / n as f64
    );
}
