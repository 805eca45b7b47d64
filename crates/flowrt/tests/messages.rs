//! What a newcomer sees, as snapshots: tables, status lines and error messages of the real binary,
//! with paths, ports, times and durations filtered. A change to any of these is a change users
//! notice, so it shows up in review as a snapshot diff.

// A story test reads as one journey, top to bottom: exempt from the function-length lint.
#![allow(clippy::too_many_lines)]

mod common;

use common::{flow, s, snapshot_settings, write_jsonl, Env};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

#[test]
fn an_llm_node_on_a_dead_endpoint_fails_fast_and_says_so() {
    let env = Env::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    env.connection(&format!(
        "name: test_openai\ntype: open_ai\napi_key: sk-test-secret\nbase_url: http://127.0.0.1:{port}/v1\n"
    ));
    let (d, dir) = flow("chat");
    let started = Instant::now();
    let r = env.run(&["flow", "test", s(&dir), "--inputs", "question=hi"]);
    let took = started.elapsed();
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    assert!(r.stderr.contains(&url), "{}", r.stderr);
    assert!(
        r.stderr.contains("3 attempts") || r.stderr.contains("attempt 2 of 3"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("sk-test-secret"));
    flowrt_snapshot!("dead_endpoint_flow_test", r, &[(d.path(), "[TMP]")]);
}

#[test]
fn batch_exit_codes_follow_the_documented_rule() {
    let env = Env::new();
    let (d, dir) = flow("batch_rows");
    let some = d.path().join("some.jsonl");
    write_jsonl(
        &some,
        &[
            json!({"n": 0, "sleep": 0, "mode": ""}),
            json!({"n": 1, "sleep": 0, "mode": "fail"}),
        ],
    );
    let all = d.path().join("all.jsonl");
    write_jsonl(
        &all,
        &[
            json!({"n": 0, "sleep": 0, "mode": "fail"}),
            json!({"n": 1, "sleep": 0, "mode": "fail"}),
        ],
    );
    let create = |data: &Path, name: &str, extra: &[&str]| {
        let mut args = vec![
            "run",
            "create",
            "--flow",
            s(&dir),
            "--data",
            s(data),
            "--name",
            name,
        ];
        args.extend_from_slice(extra);
        env.run(&args)
    };
    // Some lines failed: the run completed (exit 0), the status line counts the failures.
    let r = create(&some, "some", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("run some Completed: 1 of 2 lines completed, 1 failed"),
        "{}",
        r.stderr
    );
    // ... unless --strict, for CI.
    let r = create(&some, "some_strict", &["--strict"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    // Every line failed: the run failed (exit 1) and says why, with the first error.
    let r = create(&all, "all", &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let stderr: String = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("run all") || l.starts_with("error:") || l.starts_with("hint:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let settings = snapshot_settings(&[(env.home.path(), "[HOME]"), (d.path(), "[TMP]")]);
    settings.bind(|| insta::assert_snapshot!("batch_every_line_failed", stderr));
    let show = env.run(&["run", "show", "all", "--json"]).json();
    assert_eq!(show["status"], "Failed");

    // An unclosed reference in a mapping is taken literally, and said so.
    let r = create(&some, "literal", &["--column-mapping", "mode=${data.mode"]);
    let warning = r
        .stderr
        .lines()
        .find(|l| l.starts_with("warning:"))
        .unwrap_or_default()
        .to_string();
    settings.bind(|| insta::assert_snapshot!("mapping_unclosed_reference", warning));

    // The run commands' tables.
    let r = env.run(&["run", "list"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    settings.bind(|| insta::assert_snapshot!("run_list", r.stdout));
    let r = env.run(&["run", "show", "some"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    settings.bind(|| insta::assert_snapshot!("run_show", r.stdout));
    let r = env.run(&["run", "show-details", "some"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stdout.contains("0.000"), "{}", r.stdout);
    settings.bind(|| insta::assert_snapshot!("run_show_details", r.stdout));
}

#[test]
fn a_mapping_to_a_column_no_row_has_fails_before_any_line_runs() {
    let env = Env::new();
    let (d, dir) = flow("batch_trivial");
    let data = d.path().join("data.jsonl");
    write_jsonl(&data, &[json!({"value": 1}), json!({"value": 2})]);
    let r = env.run(&[
        "run",
        "create",
        "--flow",
        s(&dir),
        "--data",
        s(&data),
        "--name",
        "typo",
        "--column-mapping",
        "x=${data.valeu}",
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    flowrt_snapshot!("mapping_no_such_column", r, &[(d.path(), "[TMP]")]);
    // Nothing was started, so nothing is left behind.
    assert_eq!(env.run(&["run", "show", "typo"]).code, 2);
}

#[test]
fn flow_validate_counts_in_words_and_checks_connections() {
    let env = Env::new();
    let (d, dir) = flow("batch_trivial");
    let r = env.run(&["flow", "validate", s(&dir)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let paths = [(env.home.path(), "[HOME]"), (d.path(), "[TMP]")];
    flowrt_snapshot!("flow_validate_ok", r, &paths);

    let (d2, chat) = flow("chat");
    let r = env.run(&["flow", "validate", s(&chat)]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let paths = [(env.home.path(), "[HOME]"), (d2.path(), "[TMP]")];
    flowrt_snapshot!("flow_validate_missing_connection", r, &paths);
}

#[test]
fn help_names_the_home_folder_and_the_exit_codes() {
    let env = Env::new();
    let r = env.run(&["--help"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("FLOWRT_HOME"), "{}", r.stdout);
    assert!(r.stdout.contains("Exit codes:"), "{}", r.stdout);
    let r = env.run(&["run", "create", "--help"]);
    assert!(r.stdout.contains("--strict"), "{}", r.stdout);
    assert!(
        r.stdout.contains("Exit codes: 0 the run completed"),
        "{}",
        r.stdout
    );
    // Every session option and argument says what it is.
    for cmd in [
        "start", "show", "install", "logs", "stop", "reset", "edit", "packages",
    ] {
        let r = env.run(&["session", cmd, "--help"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let lines: Vec<&str> = r.stdout.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let t = l.trim_start();
            let is_item = (t.starts_with("--") || t.starts_with('<')) && l.starts_with("  ");
            if is_item && !t.starts_with("--help") && !t.starts_with("--version") {
                // The help text is on the same line after the name, or on the next line.
                let described = t
                    .split_once("  ")
                    .is_some_and(|(_, rest)| !rest.trim().is_empty())
                    || lines
                        .get(i + 1)
                        .is_some_and(|n| n.starts_with("          ") && !n.trim().is_empty());
                assert!(
                    described,
                    "session {cmd}: '{t}' has no help text:\n{}",
                    r.stdout
                );
            }
        }
    }
}
