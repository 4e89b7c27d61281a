//! `imgfarm completion SHELL` and `imgfarm man`: the scripts load in their shells and complete
//! real commands and flags; the man pages cover every visible command and render cleanly.

use assert_cmd::Command;
use std::path::Path;

fn imgfarm() -> Command {
    Command::cargo_bin("imgfarm").unwrap()
}

fn script(shell: &str, dir: &Path) -> std::path::PathBuf {
    let out = imgfarm().args(["completion", shell]).output().unwrap();
    assert!(out.status.success(), "{shell}: {out:?}");
    assert!(!out.stdout.is_empty(), "{shell}: empty script");
    let p = dir.join(format!("imgfarm.{shell}"));
    std::fs::write(&p, &out.stdout).unwrap();
    p
}

/// What bash completes for `words` (the cursor at the end of the last word), with the
/// script sourced as bash-completion would source it.
fn bash_complete(script: &Path, words: &[&str]) -> Vec<String> {
    let line = words.join(" ");
    let program = format!(
        "source {script}; COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{line}'; \
         COMP_POINT={point}; _imgfarm imgfarm '{cur}' '{prev}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script = script.display(),
        words = words.join(" "),
        cword = words.len() - 1,
        point = line.len(),
        cur = words[words.len() - 1],
        prev = words[words.len() - 2],
    );
    let out = std::process::Command::new("bash")
        .args(["--norc", "-c", &program])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completes_commands_subcommands_and_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let s = script("bash", tmp.path());
    assert_eq!(bash_complete(&s, &["imgfarm", "bu"]), ["build"]);
    assert_eq!(bash_complete(&s, &["imgfarm", "farm", "is"]), ["issue"]);
    assert_eq!(
        bash_complete(&s, &["imgfarm", "build", "--pla"]),
        ["--platform"]
    );
    assert_eq!(
        bash_complete(&s, &["imgfarm", "coordinator", "--store-m"]),
        ["--store-max"]
    );
    assert_eq!(
        bash_complete(&s, &["imgfarm", "completion", "fi"]),
        ["fish"]
    );
    // Global flags still complete, and hidden commands stay hidden (as in --help).
    assert_eq!(bash_complete(&s, &["imgfarm", "--sta"]), ["--state"]);
    let hidden = bash_complete(&s, &["imgfarm", "deb"]);
    assert!(hidden.is_empty(), "{hidden:?}");
}

#[test]
fn zsh_and_fish_scripts_parse() {
    let tmp = tempfile::tempdir().unwrap();
    if !imgfarm_testkit::require_tools_or_skip("zsh_and_fish_scripts_parse", &["zsh", "fish"]) {
        return;
    }
    let zsh = script("zsh", tmp.path());
    let out = std::process::Command::new("zsh")
        .arg("-n")
        .arg(&zsh)
        .output()
        .unwrap();
    assert!(out.status.success(), "zsh -n: {out:?}");
    assert!(std::fs::read_to_string(&zsh)
        .unwrap()
        .starts_with("#compdef imgfarm"));
    let fish = script("fish", tmp.path());
    let out = std::process::Command::new("fish")
        .arg("--no-execute")
        .arg(&fish)
        .output()
        .unwrap();
    assert!(out.status.success(), "fish --no-execute: {out:?}");
    // fish loads it and completes a subcommand from it.
    let out = std::process::Command::new("fish")
        .args(["--no-config", "-c"])
        .arg(format!(
            "source {}; complete --do-complete 'imgfarm farm is'",
            fish.display()
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.starts_with("issue")), "{out:?}");
    for shell in ["elvish", "powershell"] {
        script(shell, tmp.path());
    }
}

#[test]
fn an_unknown_shell_is_refused_with_the_choices() {
    let out = imgfarm().args(["completion", "tcsh"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid value 'tcsh'"), "{err}");
    assert!(err.contains("bash, elvish, fish, powershell, zsh"), "{err}");
}

#[test]
fn man_pages_cover_every_visible_command_and_render_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("man1");
    let out = imgfarm()
        .args(["man", "--out", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    pages.sort();
    for want in [
        "imgfarm.1",
        "imgfarm-build.1",
        "imgfarm-coordinator.1",
        "imgfarm-worker.1",
        "imgfarm-farm.1",
        "imgfarm-farm-issue.1",
        "imgfarm-completion.1",
    ] {
        assert!(
            pages.iter().any(|p| p == want),
            "{want} missing in {pages:?}"
        );
    }
    assert!(!pages.iter().any(|p| p.contains("debug")), "{pages:?}");
    // Each written page is listed on stdout, one a line.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        pages.len()
    );
    let issue = std::fs::read_to_string(dir.join("imgfarm-farm-issue.1")).unwrap();
    assert!(issue.contains(".TH imgfarm-farm-issue 1"), "{issue}");
    assert!(issue.contains("days"), "{issue}");
    if !imgfarm_testkit::require_tools_or_skip(
        "man_pages_cover_every_visible_command_and_render_cleanly",
        &["groff"],
    ) {
        return;
    }
    for p in &pages {
        // -ww: every warning; -z: no output, only the diagnostics.
        let out = std::process::Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(dir.join(p))
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{p}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Without --out, imgfarm.1 goes to stdout.
    let out = imgfarm().arg("man").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(".ie \\n(.g .ds Aq"));
}

#[test]
fn man_out_into_a_file_is_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let out = imgfarm()
        .args(["man", "--out", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("creating {}", file.display())),
        "{err}"
    );
}
