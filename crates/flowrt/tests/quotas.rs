//! Batch runs against a model deployment's quota (issue 20), local and in sessions: a
//! quota-keeping fake deployment on 127.0.0.1, the real CLI, and for sessions a real server and
//! agents. These stories hold a run's wall time to 1.15x of what its quota allows, and a suite
//! keeping both cores busy beside them stretched one past it: `scripts/run_tests.py` runs this
//! binary alone, never beside another suite. The tests of this file may share the machine with
//! each other: they mostly wait.

// The shared fixtures hold a story-length function or two: exempt from the function-length lint.
#![allow(clippy::too_many_lines)]

mod common;

use common::http::{self, Reply};
use common::server::Server;
use common::{flow, s, write_jsonl, Env, QuotaOpenAi};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

fn show_json(env: &Env, name: &str) -> Value {
    let r = env.run(&["run", "show", name, "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.json()
}

/// The quota tests' deployment: its latency, and the average tokens of the `two_calls` flow's
/// requests (prompt words plus `max_tokens`: 35 for the draft, 37 for the polish).
const QUOTA_LATENCY: Duration = Duration::from_millis(50);
const TOKENS_PER_CALL: f64 = 36.0;

/// Run `runs` 200-line batches of `two_calls` at once (separate processes: as many sessions each
/// with its own governor) against one deployment, at the default concurrency. Returns the
/// longest run's own duration and the server's counts; every line of every run must complete.
fn batches_against_a_quota(server: &QuotaOpenAi, runs: usize) -> (Duration, common::QuotaStats) {
    batches_against_a_declared_quota(server, runs, "")
}

/// [`batches_against_a_quota`] with `extra` lines in the connection's YAML.
fn batches_against_a_declared_quota(
    server: &QuotaOpenAi,
    runs: usize,
    extra: &str,
) -> (Duration, common::QuotaStats) {
    let env = Env::new();
    env.connection(&format!(
        "name: quota_openai\ntype: open_ai\napi_key: sk-test\nbase_url: {}/v1\n{extra}",
        server.base
    ));
    let (d, dir) = flow("two_calls");
    let data = d.path().join("data.jsonl");
    let rows: Vec<Value> = (0..200)
        .map(|i| json!({"question": format!("question number {i}")}))
        .collect();
    write_jsonl(&data, &rows);
    let children: Vec<_> = (0..runs)
        .map(|i| {
            env.spawn(&[
                "run",
                "create",
                "--flow",
                s(&dir),
                "--data",
                s(&data),
                "--name",
                &format!("q{i}"),
            ])
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    // The runs' own time (not the processes' start), the longest: they ran side by side.
    let mut longest = 0.0f64;
    for i in 0..runs {
        let meta = show_json(&env, &format!("q{i}"));
        assert_eq!(meta["completed_lines"], 200, "{meta:#}");
        assert_eq!(meta["status"], "Completed", "{meta:#}");
        longest = longest.max(meta["duration_s"].as_f64().unwrap());
    }
    (Duration::from_secs_f64(longest), server.stats())
}

/// Issue 20: lines share one governor per deployment, so a quota paces them instead of failing
/// them. Fewer than 10% of the requests get 429, and the batch takes at most 1.15 times what the
/// quota allows (`ideal`).
fn assert_quota_kept(wall: Duration, stats: &common::QuotaStats, ideal: Duration) {
    let refused = stats.rate_limited as f64 / stats.requests as f64;
    eprintln!(
        "wall {:.2} s, ideal {:.2} s ({:.2}x), {} requests, {} got 429 ({:.1}%)",
        wall.as_secs_f64(),
        ideal.as_secs_f64(),
        wall.as_secs_f64() / ideal.as_secs_f64(),
        stats.requests,
        stats.rate_limited,
        100.0 * refused
    );
    assert!(refused < 0.10, "{stats:?}");
    assert!(
        wall.as_secs_f64() <= 1.15 * ideal.as_secs_f64(),
        "{wall:?} against an ideal of {ideal:?}"
    );
}

#[test]
fn a_batch_against_a_requests_quota_completes_every_line_at_the_quotas_pace() {
    // 3,000 requests a minute: 50 a second, so 400 calls take 8 s at best.
    let server = QuotaOpenAi::start(Some(3000.0), None, QUOTA_LATENCY);
    let (wall, stats) = batches_against_a_quota(&server, 1);
    assert_quota_kept(wall, &stats, Duration::from_secs_f64(400.0 / 50.0));
    eprintln!("first refused: {:?}", stats.first_refused);
}

#[test]
fn a_batch_against_a_tokens_quota_completes_every_line_at_the_quotas_pace() {
    // 108,000 tokens a minute at 36 a call: 50 calls a second again.
    let tpm = 50.0 * 60.0 * TOKENS_PER_CALL;
    let server = QuotaOpenAi::start(None, Some(tpm), QUOTA_LATENCY);
    let (wall, stats) = batches_against_a_quota(&server, 1);
    assert_quota_kept(wall, &stats, Duration::from_secs_f64(400.0 / 50.0));
}

#[test]
fn two_batches_sharing_one_deployments_quota_both_complete_at_its_pace() {
    // Two processes (as two sessions), each learning the quota from its 429s: 800 calls at 50 a
    // second.
    let server = QuotaOpenAi::start(Some(3000.0), None, QUOTA_LATENCY);
    let (wall, stats) = batches_against_a_quota(&server, 2);
    assert_quota_kept(wall, &stats, Duration::from_secs_f64(800.0 / 50.0));
}

#[test]
fn a_quota_the_connection_declares_is_the_pace_from_the_first_call() {
    // Declared, the quota paces the run from its start (no opening burst of refusals); later
    // 429s are the governor probing for room above it.
    let server = QuotaOpenAi::start(Some(3000.0), None, QUOTA_LATENCY);
    let (wall, stats) = batches_against_a_declared_quota(&server, 1, "rpm: 3000\n");
    assert_quota_kept(wall, &stats, Duration::from_secs_f64(400.0 / 50.0));
    assert!(stats.rate_limited * 20 < stats.requests, "{stats:?}");
    // Undeclared, the first 429 comes as the quota's first second of burst runs out (after
    // about 60 requests here); declared, not before the pace has grown well past it.
    assert!(stats.first_refused.is_none_or(|n| n > 150), "{stats:?}");
}

#[test]
fn a_token_quota_the_connection_declares_spaces_calls_by_their_tokens() {
    let tpm = 50.0 * 60.0 * TOKENS_PER_CALL;
    let server = QuotaOpenAi::start(None, Some(tpm), QUOTA_LATENCY);
    let (wall, stats) = batches_against_a_declared_quota(&server, 1, &format!("tpm: {tpm}\n"));
    assert_quota_kept(wall, &stats, Duration::from_secs_f64(400.0 / 50.0));
    // Spaced by their tokens from the first call, the calls never outrun the quota's burst.
    assert!(stats.first_refused.is_none_or(|n| n > 150), "{stats:?}");
}

/// A server on `home` (which the test keeps), stopped rather than killed when dropped.
fn server(home: &std::path::Path) -> common::server::Builder {
    Server::builder().home(home).stop_on_drop()
}

/// Start a session for the flow folder `dir` that never stops for idleness; returns its id.
fn start_session(server: &Server, dir: &std::path::Path) -> String {
    let out = server
        .ok(&[
            "session",
            "start",
            "--flow",
            dir.to_str().unwrap(),
            "--idle-timeout",
            "0",
        ])
        .stdout;
    out.lines().last().unwrap().trim().to_string()
}

/// A server whose sessions run `two_calls` against a quota server (`rpm`, `latency`), with
/// `lines` rows of data to run.
struct QuotaSessions {
    _home: tempfile::TempDir,
    _flow: tempfile::TempDir,
    server: Server,
    model: common::QuotaOpenAi,
    sessions: Vec<String>,
    data: PathBuf,
}

impl QuotaSessions {
    fn start(rpm: f64, latency: Duration, sessions: usize, lines: usize) -> QuotaSessions {
        let home = tempfile::tempdir().unwrap();
        let server = server(home.path()).start();
        let model = common::QuotaOpenAi::start(Some(rpm), None, latency);
        let conn = home.path().join("conn.yaml");
        std::fs::write(
            &conn,
            format!(
                "name: quota_openai\ntype: open_ai\napi_key: sk-x\nbase_url: {}/v1\n",
                model.base
            ),
        )
        .unwrap();
        server.ok(&["connection", "create", "--file", conn.to_str().unwrap()]);
        let (d, dir) = flow("two_calls");
        let sessions = (0..sessions)
            .map(|_| start_session(&server, &dir))
            .collect();
        let data = d.path().join("rows.jsonl");
        let rows: String = (0..lines)
            .map(|i| format!("{{\"question\": \"question number {i}\"}}\n"))
            .collect();
        std::fs::write(&data, rows).unwrap();
        QuotaSessions {
            _home: home,
            _flow: d,
            server,
            model,
            sessions,
            data,
        }
    }
}

/// Issue 20: a session's batch against a quota completes every line, and its event stream says
/// which endpoint's quota paces it, at what pace, with the time left computed from it.
#[test]
fn a_session_run_paced_by_a_quota_says_so_in_its_events() {
    let q = QuotaSessions::start(1200.0, Duration::from_millis(20), 1, 60);
    let (server, model, data, id) = (&q.server, &q.model, &q.data, &q.sessions[0]);
    let client = server
        .cmd(&["run", "create", "--session", id])
        .args(["--data", data.to_str().unwrap(), "--name", "paced"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The stream, from a moment after the start until the run ends.
    std::thread::sleep(Duration::from_millis(1500));
    let auth = format!("Bearer {}", server.token());
    let Reply { status, text, .. } = http::request(
        "GET",
        &format!("{}/api/v1/runs/paced/events", server.url),
        &[("authorization", &auth)],
        "",
    );
    assert_eq!(status, 200, "{text}");
    let out = client.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["completed_lines"], 60, "{record:#}");
    let paced: Vec<Value> = text
        .split("\n\n")
        .filter(|e| e.starts_with("event: progress"))
        .filter_map(|e| serde_json::from_str::<Value>(e.split_once("data: ")?.1).ok())
        .filter(|p| !p["quota"].is_null())
        .collect();
    let last = paced
        .last()
        .unwrap_or_else(|| panic!("no paced progress in {text}"));
    let quota = &last["quota"];
    assert!(
        quota["endpoint"].as_str().unwrap().contains(&model.base),
        "{last}"
    );
    let pace = quota["requests_per_second"].as_f64().unwrap();
    assert!(
        pace > 5.0 && pace < 40.0,
        "1,200 a minute is 20 a second: {last}"
    );
    // Counted on the lines that finished: the last reading, as the run ended, is exact.
    assert!(
        (quota["calls_per_line"].as_f64().unwrap() - 2.0).abs() < 0.01,
        "{last}"
    );
    assert!(last["eta_seconds"].as_f64().is_some(), "{last}");
}

/// Issue 20's acceptance with sessions: two sessions on one deployment each learn their share of
/// its quota from their own 429s. Both 200-line two-call batches complete every line, under 10%
/// of the requests are refused, and together they take at most 1.15x of the quota's ideal.
#[test]
fn two_sessions_sharing_one_deployments_quota_both_complete_at_its_pace() {
    // 3,000 a minute: 50 a second, so 800 calls take 16 s at best.
    let q = QuotaSessions::start(3000.0, Duration::from_millis(50), 2, 200);
    let (server, model, data) = (&q.server, &q.model, &q.data);
    let (first, second) = (&q.sessions[0], &q.sessions[1]);
    let runs: Vec<_> = [(first, "shared-a"), (second, "shared-b")]
        .into_iter()
        .map(|(session, name)| {
            server
                .cmd(&["run", "create", "--session", session])
                .args(["--data", data.to_str().unwrap(), "--name", name])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // How long the runs themselves took (not the CLI's upload or the server's hand-off, which a
    // busy test machine slows and the quota has nothing to do with): they ran side by side, so
    // the longer one is the time the two took together.
    let mut longest = 0.0f64;
    for run in runs {
        let out = run.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let record: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(record["completed_lines"], 200, "{record:#}");
        longest = longest.max(record["duration_s"].as_f64().unwrap());
    }
    let stats = model.stats();
    eprintln!(
        "two sessions: {longest:.2} s against an ideal of 16 s, {} requests, {} refused",
        stats.requests, stats.rate_limited
    );
    assert!(stats.rate_limited * 10 < stats.requests, "{stats:?}");
    assert!(longest <= 16.0 * 1.15, "{longest} s");
}
