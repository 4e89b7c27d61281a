//! BuildKit shell-expansion conformance: every line of the vendored
//! `envVarTest` and `wordsTest`, and every case of
//! `derived/process-word-cases.json`, read as FORMAT.md in that directory
//! describes. Each file is one test that collects all failures.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use imgfarm_common::dockerfile::shell::{Lexer, Limits, ShellError};
use proptest::prelude::*;

fn corpus(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/conformance/buildkit-shell")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Lines as Go's `bufio.Scanner` yields them: split at `\n`, a trailing
/// `\r` dropped, no final empty line. The files must be UTF-8.
fn lines(bytes: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(bytes).expect("corpus is UTF-8");
    let text = text.strip_suffix('\n').unwrap_or(text);
    text.split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line).to_owned())
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn show(result: &Result<impl std::fmt::Debug, ShellError>) -> String {
    match result {
        Ok(value) => format!("{value:?}"),
        Err(error) => format!("error: {error}"),
    }
}

#[test]
fn env_var_test_all_lines() {
    let env = pairs(&[
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]);
    let unix = Lexer::new('\\');
    let windows = Lexer::new('\\').case_insensitive(true);
    let mut counts = BTreeMap::<String, usize>::new();
    let mut expect_error = 0;
    let mut failures = Vec::new();
    let mut ran = 0;
    for (index, raw) in lines(&corpus("envVarTest")).iter().enumerate() {
        if raw.starts_with('#') {
            continue;
        }
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('|').map(str::trim).collect();
        let [tag, input, expected] = fields[..] else {
            failures.push(format!("line {}: not three fields: {raw:?}", index + 1));
            continue;
        };
        *counts.entry(tag.to_owned()).or_default() += 1;
        if expected == "error" {
            expect_error += 1;
        }
        // A lines run in both modes, U only case-sensitive, W only
        // case-insensitive (Windows).
        let modes: &[(&str, &Lexer)] = match tag {
            "A" => &[("unix", &unix), ("windows", &windows)],
            "U" => &[("unix", &unix)],
            "W" => &[("windows", &windows)],
            other => {
                failures.push(format!("line {}: unknown tag {other:?}", index + 1));
                continue;
            }
        };
        for (mode, lexer) in modes {
            ran += 1;
            let actual = lexer.process_word(input, &env);
            let ok = match (&actual, expected) {
                (Err(_), "error") => true,
                (Ok(value), expected) => value == expected && expected != "error",
                (Err(_), _) => false,
            };
            if !ok {
                failures.push(format!(
                    "line {} [{tag}/{mode}]: input {input:?}: expected {expected:?}, got {}",
                    index + 1,
                    show(&actual)
                ));
            }
        }
    }
    let total: usize = counts.values().sum();
    assert_eq!(total, 230, "envVarTest case lines: {counts:?}");
    assert_eq!(counts.get("A"), Some(&226));
    assert_eq!(counts.get("U"), Some(&2));
    assert_eq!(counts.get("W"), Some(&2));
    assert_eq!(expect_error, 36);
    assert_eq!(ran, 226 * 2 + 2 + 2);
    assert!(
        failures.is_empty(),
        "{} envVarTest failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn words_test_all_lines() {
    let lexer = Lexer::new('\\');
    let mut env: Vec<(String, String)> = Vec::new();
    let (mut cases, mut env_lines, mut comments, mut errors) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    for (index, line) in lines(&corpus("wordsTest")).iter().enumerate() {
        if line.starts_with('#') {
            comments += 1;
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            env_lines += 1;
            let assignment = rest.trim_start_matches(' ');
            let (name, value) = assignment.split_once('=').expect("ENV line has =");
            env.retain(|(key, _)| key != name);
            env.push((name.to_owned(), value.to_owned()));
            continue;
        }
        let fields: Vec<&str> = line.split('|').collect();
        let [input, expected] = fields[..] else {
            failures.push(format!("line {}: not one '|': {line:?}", index + 1));
            continue;
        };
        cases += 1;
        let input = input.trim();
        let expected = expected.trim_start_matches(' ');
        let actual = lexer.process_words(input, &env);
        let ok = if expected == "error" {
            errors += 1;
            actual.is_err()
        } else {
            let words: Vec<&str> = expected.split(',').collect();
            actual.as_ref().is_ok_and(|got| got == &words)
        };
        if !ok {
            failures.push(format!(
                "line {}: input {input:?}: expected {expected:?}, got {}",
                index + 1,
                show(&actual)
            ));
        }
    }
    assert_eq!((cases, env_lines, comments, errors), (24, 4, 2, 1));
    assert!(
        failures.is_empty(),
        "{} wordsTest failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn string_set(value: Option<&serde_json::Value>) -> Option<BTreeSet<String>> {
    let list = value?.as_array().expect("name list is an array");
    Some(
        list.iter()
            .map(|name| name.as_str().expect("name is a string").to_owned())
            .collect(),
    )
}

#[test]
fn derived_process_word_cases() {
    let json: serde_json::Value =
        serde_json::from_slice(&corpus("derived/process-word-cases.json")).expect("valid JSON");
    assert_eq!(json["escape_token"], "\\");
    let cases = json["cases"].as_array().expect("cases array");
    assert_eq!(cases.len(), 56);
    let lexer = Lexer::new('\\');
    let mut failures = Vec::new();
    let mut checked_sets = 0;
    for (index, case) in cases.iter().enumerate() {
        let input = case["input"].as_str().expect("input");
        let env: BTreeMap<String, String> = case["env"]
            .as_object()
            .expect("env object")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("env value").to_owned()))
            .collect();
        let actual = lexer.process_word_with_matches(input, &env);
        let mut problems = Vec::new();
        if case["expect_error"].as_bool().expect("expect_error") {
            match &actual {
                Ok(expansion) => problems.push(format!("expected an error, got {expansion:?}")),
                Err(error) => {
                    if let Some(needle) = case["error_contains"].as_str() {
                        if !error.to_string().contains(needle) {
                            problems.push(format!("error {error:?} lacks {needle:?}"));
                        }
                    }
                }
            }
        } else {
            let expected = case["expected"].as_str().expect("expected");
            match &actual {
                Err(error) => problems.push(format!("expected {expected:?}, got error {error}")),
                Ok(expansion) => {
                    if expansion.result != expected {
                        problems.push(format!("expected {expected:?}, got {:?}", expansion.result));
                    }
                    let matched = string_set(case.get("matched"));
                    let unmatched = string_set(case.get("unmatched"));
                    if let (Some(matched), Some(unmatched)) = (matched, unmatched) {
                        checked_sets += 1;
                        if expansion.matched != matched || expansion.unmatched != unmatched {
                            problems.push(format!(
                                "sets: expected matched {matched:?} unmatched {unmatched:?}, \
                                 got {:?} {:?}",
                                expansion.matched, expansion.unmatched
                            ));
                        }
                    }
                }
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "case {index} ({}): input {input:?} env {env:?}: {}",
                case["source"],
                problems.join("; ")
            ));
        }
    }
    assert!(checked_sets > 30, "only {checked_sets} cases checked sets");
    assert!(
        failures.is_empty(),
        "{} derived failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Words built from the characters the lexer cares about, plus arbitrary
/// Unicode, so the generator reaches deep into the grammar.
fn hostile_word() -> impl Strategy<Value = String> {
    let pieces = prop_oneof![
        Just("$".to_owned()),
        Just("${".to_owned()),
        Just("}".to_owned()),
        Just("{".to_owned()),
        Just(":".to_owned()),
        Just("-".to_owned()),
        Just("+".to_owned()),
        Just("?".to_owned()),
        Just("#".to_owned()),
        Just("%".to_owned()),
        Just("/".to_owned()),
        Just("*".to_owned()),
        Just("\\".to_owned()),
        Just("`".to_owned()),
        Just("'".to_owned()),
        Just("\"".to_owned()),
        Just(" ".to_owned()),
        Just("\n".to_owned()),
        Just("\u{feff}".to_owned()),
        Just("A".to_owned()),
        Just("BIG".to_owned()),
        Just("EMPTY".to_owned()),
        Just("한".to_owned()),
        Just("1".to_owned()),
        any::<char>().prop_map(String::from),
    ];
    prop_oneof![
        prop::collection::vec(pieces, 0..48).prop_map(|parts| parts.concat()),
        any::<String>(),
    ]
}

fn hostile_env() -> Vec<(String, String)> {
    pairs(&[
        ("A", "a b*c"),
        ("BIG", &"x y ".repeat(64)),
        ("EMPTY", ""),
        ("P", "\\"),
        ("T", "$0$$"),
    ])
}

type Options = (bool, bool, bool, bool, bool, bool);

fn lexer_with(options: Options) -> Lexer {
    let (backtick, raw_quotes, raw_escapes, skip_unset, skip_quotes, ignore_case) = options;
    Lexer::new(if backtick { '`' } else { '\\' })
        .raw_quotes(raw_quotes)
        .raw_escapes(raw_escapes)
        .skip_unset_env(skip_unset)
        .skip_process_quotes(skip_quotes)
        .case_insensitive(ignore_case)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn expansion_never_panics(word in hostile_word(), options in any::<Options>()) {
        let lexer = lexer_with(options);
        let env = hostile_env();
        let _ = lexer.process_word(&word, &env);
        let _ = lexer.process_words(&word, &env);
        let _ = lexer.process_word_with_matches(&word, &env);
    }

    #[test]
    fn expansion_never_exceeds_the_bound(word in hostile_word(), options in any::<Options>()) {
        let max = 512;
        let lexer = lexer_with(options).limits(Limits {
            max_word_bytes: 256,
            max_result_bytes: max,
            max_work_bytes: 8 * max,
            max_depth: 8,
            max_match_steps: 10_000,
        });
        let env = hostile_env();
        if let Ok(result) = lexer.process_word(&word, &env) {
            prop_assert!(result.len() <= max);
        }
        if let Ok(words) = lexer.process_words(&word, &env) {
            prop_assert!(words.iter().map(String::len).sum::<usize>() <= max);
        }
    }
}

/// A rough throughput figure, run by hand:
/// `cargo test --release -p imgfarm-common --test shell_conformance -- --ignored --nocapture`.
#[test]
#[ignore = "timing, run by hand in release mode"]
fn timing_typical_words() {
    let env = pairs(&[
        ("VERSION", "v1.2.3"),
        ("TARGETOS", "linux"),
        ("TARGETARCH", "arm64"),
        ("TARGETVARIANT", ""),
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ),
    ]);
    let words = [
        "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz",
        "/opt/app/bin:$PATH",
        "\"hello world\" 'quoted $x' plain\\ escaped",
        "${PATH##*:}${PATH%%:*}${PATH//bin/BIN}",
    ];
    let lexer = Lexer::default();
    let rounds = 100_000;
    for word in words {
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(lexer.process_word(std::hint::black_box(word), &env).ok());
        }
        let per = started.elapsed() / rounds;
        println!("{per:>10?} per expansion of {word:?}");
    }
}
