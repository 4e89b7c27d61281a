//! The farm-user fixture: a real unprivileged user with working subordinate id ranges.

use imgfarm_testkit::{init_tracing, is_root, or_skip, run_checked, FarmUser};

#[test]
fn farm_user_runs_commands_as_itself() {
    init_tracing();
    let name = "farm_user_runs_commands_as_itself";
    let Some(user) = or_skip(name, FarmUser::get()) else {
        return;
    };
    if is_root() {
        assert_eq!(user.name(), imgfarm_testkit::FARM_USER_NAME);
        assert_ne!(user.uid(), 0);
    }
    let out = run_checked(user.command("id").arg("-u")).expect("id -u");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        user.uid().to_string()
    );
    let home = run_checked(user.command("sh").args(["-c", "echo $HOME"])).expect("sh");
    assert_eq!(
        String::from_utf8_lossy(&home.stdout).trim(),
        user.home().to_string_lossy()
    );
    assert!(user.subuid_start() > 0 && user.subgid_start() > 0);
}

#[test]
fn farm_user_maps_its_subordinate_ids() {
    init_tracing();
    let name = "farm_user_maps_its_subordinate_ids";
    let Some(user) = or_skip(name, FarmUser::get()) else {
        return;
    };
    let out = run_checked(
        user.userns_command("cat")
            .args(["/proc/self/uid_map", "/proc/self/gid_map"]),
    )
    .expect("unshare --map-auto --map-root-user");
    let maps = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<u64>> = maps
        .lines()
        .map(|l| {
            l.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .collect();
    assert!(rows.contains(&vec![0, u64::from(user.uid()), 1]), "{maps}");
    assert!(
        rows.iter()
            .any(|r| r[0] == 1 && r[1] == user.subuid_start() && r[2] >= 65535),
        "{maps}"
    );
    assert!(
        rows.iter()
            .any(|r| r[0] == 1 && r[1] == user.subgid_start() && r[2] >= 65535),
        "{maps}"
    );
    let id = run_checked(user.userns_command("id").arg("-u")).expect("id in userns");
    assert_eq!(String::from_utf8_lossy(&id.stdout).trim(), "0");
}

#[test]
fn remove_dir_all_deletes_subuid_owned_files() {
    init_tracing();
    let name = "remove_dir_all_deletes_subuid_owned_files";
    let Some(user) = or_skip(name, FarmUser::get()) else {
        return;
    };
    let dir = user.tempdir().expect("user tempdir");
    let d = dir.path().join("work");
    // Inside the namespace: a dir owned by inner uid 1000 (a sub-id outside), read-only.
    run_checked(user.userns_command("sh").arg("-c").arg(format!(
        "mkdir -p {d}/a/b && echo x > {d}/a/b/f && chown -R 1000:1000 {d}/a && chmod 0555 {d}/a/b",
        d = d.display()
    )))
    .expect("make sub-id files");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(d.join("a")).expect("stat");
    assert_eq!(u64::from(meta.uid()), user.subuid_start() + 999);
    // From outside, the user itself cannot delete them.
    let outside = user
        .command("rm")
        .arg("-rf")
        .arg(&d)
        .output()
        .expect("rm runs");
    assert!(!outside.status.success());
    user.remove_dir_all(&d).expect("remove in userns");
    assert!(!d.exists());
    // Missing paths are fine.
    user.remove_dir_all(&d).expect("idempotent");
    let top = dir.path().to_path_buf();
    drop(dir);
    assert!(!top.exists());
}
