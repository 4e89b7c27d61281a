//! The farm's Ansible roles (ansible/) parse and pass ansible-lint's production profile.
//! Applying them for real is `sudo ansible/sandbox-apply.sh INVENTORY` (see ansible/README.md).

use std::path::PathBuf;
use std::process::Command;

fn ansible_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ansible")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .current_dir(ansible_dir())
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_LOCALHOST_WARNING", "0")
        .output()
        .expect("start the ansible tool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn site_playbook_passes_syntax_check() {
    if !imgfarm_testkit::require_tools_or_skip(
        "site_playbook_passes_syntax_check",
        &["ansible-playbook"],
    ) {
        return;
    }
    let out = run(Command::new("ansible-playbook").args([
        "--syntax-check",
        "-i",
        "inventory.example.yml",
        "site.yml",
    ]));
    assert!(out.contains("playbook: site.yml"), "{out}");
}

#[test]
fn roles_pass_ansible_lint_production_profile() {
    if !imgfarm_testkit::require_tools_or_skip(
        "roles_pass_ansible_lint_production_profile",
        &["ansible-lint"],
    ) {
        return;
    }
    let out = run(Command::new("ansible-lint").args([
        "--offline",
        "--nocolor",
        "--profile",
        "production",
        "site.yml",
    ]));
    assert!(out.contains("Passed"), "{out}");
}
