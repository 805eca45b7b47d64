//! The web UI end to end: a real `flowrt server` (with real session agents) on 127.0.0.1, and
//! `tests/ui/e2e.mjs` driving Debian's headless Chromium through playwright-core as users would:
//! sign in, start a session with advanced settings, install a package, test a line and read its
//! trace, submit and watch a batch, compare runs, and check what a viewer and another user see.
//! Screenshots go to `target/ui-screenshots/`; `./scripts/test.sh` installs Chromium and
//! playwright-core when they are missing.

// A story test reads as one journey, top to bottom: exempt from the function-length lint.
#![allow(clippy::too_many_lines)]

mod common;

use common::flow;
use common::http::{self, get};
use common::server::Server;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";

fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui")
}

/// What only the UI's stories ask of their server.
trait UiServer {
    /// `method path` as the user whose token is `token`, with `body` as JSON (none when null).
    fn as_user(&self, method: &str, path: &str, token: &str, body: &Value) -> (u16, Value);
    /// A new user: their id and token.
    fn user(&self, name: &str, role: &str) -> (String, String);
}

impl UiServer for Server {
    fn as_user(&self, method: &str, path: &str, token: &str, body: &Value) -> (u16, Value) {
        let text = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        self.api_as(&format!("Bearer {token}"), method, path, &text)
    }

    fn user(&self, name: &str, role: &str) -> (String, String) {
        let (status, v) = self.as_user(
            "POST",
            "/api/v1/users",
            &self.token(),
            &json!({"name": name, "role": role}),
        );
        assert_eq!(status, 201, "{v}");
        (
            v["user"]["id"].as_str().unwrap().to_string(),
            v["token"].as_str().unwrap().to_string(),
        )
    }
}

/// Fifty sessions for one user, written straight into the store as they would be after starts
/// and stops, so the list's drawing time is measured without fifty agents on a small machine.
fn fifty_sessions(home: &Path, owner: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = flowrt_store::Store::open(home).await.unwrap();
        for i in 0..50u64 {
            let s = store
                .insert_session(&flowrt_store::NewSession {
                    owner: owner.to_string(),
                    flow_dir: home.join("snapshots/none").display().to_string(),
                    flow_ref: Some(format!("perf-flow-{}@v1", i % 7)),
                    env_ref: "default".into(),
                    env_key: None,
                    base_version: "2026.1".into(),
                    size: flowrt_api::SessionSize::Small,
                    idle_timeout_s: 600 + i * 60,
                    identity: None,
                    compute: None,
                    shared: false,
                })
                .await
                .unwrap();
            if i % 3 == 0 {
                store
                    .update_session_status(
                        &s.id,
                        flowrt_api::SessionStatus::Stopped,
                        None,
                        Some("stopped by its owner"),
                    )
                    .await
                    .unwrap();
            }
        }
        store.close().await;
    });
}

/// A server for a UI test, once Chromium and playwright-core are there to drive it.
fn ui_server(home: &Path) -> Server {
    let playwright = ui_dir().join("node_modules/playwright-core");
    assert!(
        Path::new(CHROMIUM).exists() && playwright.exists(),
        "the UI tests need {CHROMIUM} and {}: run ./scripts/test.sh, which installs both (apt-get install chromium; npm ci in crates/flowrt/tests/ui)",
        playwright.display()
    );
    server_on(home)
}

/// A server on `home` whose agents are shut down with it.
fn server_on(home: &Path) -> Server {
    Server::builder()
        .home(home)
        .idle_check(Some("0.5"))
        // Where the kernel cannot seal sessions, the test users start them anyway.
        .args(&["--allow-unsealed-sessions-for-everyone"])
        .stop_on_drop()
        .start()
}

#[test]
fn the_web_ui_in_headless_chromium() {
    let home = tempfile::tempdir().unwrap();
    let server = ui_server(home.path());
    let (_, alice) = server.user("alice", "user");
    let (_, bob) = server.user("bob", "user");
    let (_, viewer) = server.user("vera", "viewer");
    let (perf_id, perf) = server.user("perf", "user");
    let (status, v) = server.as_user(
        "POST",
        "/api/v1/computes",
        &server.token(),
        &json!({"name": "alice-box", "size": "medium", "user": "alice"}),
    );
    assert_eq!(status, 201, "{v}");

    // Alice pushes the flow the scenarios use; its first node takes a moment, so that a batch's
    // progress can be watched while it goes (one line at a time: about 2 s for 20 lines).
    let (_d, dir) = flow("pipeline");
    let stats = std::fs::read_to_string(dir.join("stats.py")).unwrap();
    std::fs::write(
        dir.join("stats.py"),
        stats
            .replace("from promptflow", "import time\nfrom promptflow")
            .replace(
                "    words = text.split()",
                "    time.sleep(0.1)\n    words = text.split()",
            ),
    )
    .unwrap();
    server.ok_as(&alice, &["flow", "push", dir.to_str().unwrap()]);
    // A chat flow whose llm node talks to a fake OpenAI server that streams its replies.
    let model = common::FakeOpenAi::start(0);
    let conn = home.path().join("conn.yaml");
    std::fs::write(
        &conn,
        format!(
            "name: test_openai\ntype: open_ai\napi_key: sk-x\nbase_url: {}/v1\n",
            model.base
        ),
    )
    .unwrap();
    let (_c, chat) = flow("chat");
    // And a flow whose requirements name a package that does not exist: its session fails.
    let (_b, bad) = flow("bad_reqs");
    for args in [
        // Alice's connection, in the workspace: it reaches her sessions only.
        vec![
            "connection",
            "create",
            "--file",
            conn.to_str().unwrap(),
            "--workspace",
        ],
        vec!["flow", "push", chat.to_str().unwrap()],
        vec!["flow", "push", bad.to_str().unwrap()],
    ] {
        server.ok_as(&alice, &args);
    }
    fifty_sessions(home.path(), &perf_id);

    let data = home.path().join("lines.jsonl");
    let rows: Vec<Value> = (0..20)
        .map(|i| json!({"text": format!("line {i} of the batch"), "times": 3}))
        .collect();
    common::write_jsonl(&data, &rows);

    run_scenarios(
        "e2e.mjs",
        &server,
        &[
            ("TOKEN_ALICE", &alice),
            ("TOKEN_BOB", &bob),
            ("TOKEN_VIEWER", &viewer),
            ("TOKEN_PERF", &perf),
            ("TOKEN_OWNER", &server.token()),
            ("DATA_FILE", data.to_str().unwrap()),
        ],
        Duration::from_secs(240),
    );
}

/// Run one of `tests/ui/*.mjs` against `server` with `vars`, failing with the server's log.
fn run_scenarios(script: &str, server: &Server, vars: &[(&str, &str)], within: Duration) {
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let t = Instant::now();
    let mut node = Command::new("node")
        .arg(ui_dir().join(script))
        .env("FLOWRT_URL", &server.url)
        .env("SCREENSHOTS", &shots)
        .env("CHROMIUM", CHROMIUM)
        .envs(vars.iter().copied())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs (install it with apt-get install nodejs)");
    let status = loop {
        if let Some(s) = node.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > within {
            let _ = node.kill();
            panic!("{script} took more than {within:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "{script} failed (see the steps above, the screenshots in {} and the server log below)\n{}",
        shots.display(),
        server
            .log()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Authoring in the browser (`tests/ui/editor.mjs`): a flow edited node by node and file by
/// file, saved, compared, a second save of the same version refused with the difference, and a
/// viewer kept out. The saved YAML then differs from the pushed one only in the edited lines.
#[test]
fn the_flow_editor_in_headless_chromium() {
    let home = tempfile::tempdir().unwrap();
    let server = ui_server(home.path());
    let (_, alice) = server.user("alice", "user");
    let (_, viewer) = server.user("vera", "viewer");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/flows/authoring");
    server.ok_as(
        &alice,
        &[
            "flow",
            "push",
            fixture.to_str().unwrap(),
            "--name",
            "authoring",
        ],
    );
    // Alice's own connection and a running session on the flow, where validate reads her code
    // and drafts run.
    let fake = common::FakeOpenAi::start(0);
    let conn = home.path().join("conn.yaml");
    std::fs::write(
        &conn,
        format!(
            "name: test_openai\ntype: open_ai\napi_key: sk-x\nbase_url: {}/v1\n",
            fake.base
        ),
    )
    .unwrap();
    server.ok_as(
        &alice,
        &[
            "connection",
            "create",
            "--file",
            conn.to_str().unwrap(),
            "--workspace",
        ],
    );
    let (status, session) = server.as_user(
        "POST",
        "/api/v1/sessions",
        &alice,
        &json!({"flow": "authoring", "idle_timeout_s": 0}),
    );
    assert_eq!(status, 202, "{session}");
    let id = session["id"].as_str().unwrap().to_string();
    let t = Instant::now();
    loop {
        let (_, s) = server.as_user(
            "GET",
            &format!("/api/v1/sessions/{id}"),
            &alice,
            &Value::Null,
        );
        if s["status"] == "Running" {
            break;
        }
        assert!(s["status"] != "Failed", "{s}");
        assert!(t.elapsed() < Duration::from_secs(60), "{s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    run_scenarios(
        "editor.mjs",
        &server,
        &[
            ("TOKEN_ALICE", &alice),
            ("TOKEN_VIEWER", &viewer),
            ("TOKEN_OWNER", &server.token()),
        ],
        Duration::from_secs(180),
    );
    // What the browser saved is the pushed YAML with only the edited lines changed.
    let (status, v2) = server.as_user(
        "GET",
        "/api/v1/flows/authoring@v2/file?path=flow.dag.yaml",
        &alice,
        &Value::Null,
    );
    assert_eq!(status, 200, "{v2}");
    let original = std::fs::read_to_string(fixture.join("flow.dag.yaml")).unwrap();
    let saved = v2["text"].as_str().unwrap();
    let diff: Vec<String> = similar_lines(&original, saved);
    assert_eq!(
        diff,
        [
            "-    temperature: 0.2   # low: answers should repeat",
            "+    temperature: 0.9   # low: answers should repeat",
            "-- name: wrap",
            "+- name: framed",
            "-    text: ${wrap.output}",
            "+    text: ${framed.output}",
        ],
        "{saved}"
    );
}

/// The changed lines between two texts in order, each with `-` or `+`.
fn similar_lines(before: &str, after: &str) -> Vec<String> {
    let (b, a): (Vec<&str>, Vec<&str>) = (before.lines().collect(), after.lines().collect());
    // Lines match in order (a longest common subsequence); what is left over changed.
    let mut lcs = vec![vec![0usize; a.len() + 1]; b.len() + 1];
    for i in (0..b.len()).rev() {
        for j in (0..a.len()).rev() {
            lcs[i][j] = if b[i] == a[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < b.len() || j < a.len() {
        if i < b.len() && j < a.len() && b[i] == a[j] {
            i += 1;
            j += 1;
        } else if j < a.len() && (i == b.len() || lcs[i][j + 1] > lcs[i + 1][j]) {
            out.push(format!("+{}", a[j]));
            j += 1;
        } else {
            out.push(format!("-{}", b[i]));
            i += 1;
        }
    }
    out
}

#[test]
fn ui_assets_are_served_with_strict_headers_and_revalidate() {
    let home = tempfile::tempdir().unwrap();
    let server = server_on(home.path());
    let page = get(&format!("{}/", server.url));
    assert_eq!(page.status, 200);
    let head = format!("{:?}", page.headers);
    assert!(
        page.header("content-type").starts_with("text/html"),
        "{head}"
    );
    assert!(
        page.header("content-security-policy")
            .starts_with("default-src 'self'"),
        "{head}"
    );
    assert_eq!(page.header("x-content-type-options"), "nosniff", "{head}");
    assert!(page.text.contains("/ui/js/app.js"));
    let app = get(&format!("{}/ui/js/app.js", server.url));
    assert_eq!(app.status, 200);
    assert!(
        app.header("content-type").starts_with("text/javascript"),
        "{:?}",
        app.headers
    );
    let etag = app.header("etag");
    assert!(!etag.is_empty(), "an ETag: {:?}", app.headers);
    let again = http::request(
        "GET",
        &format!("{}/ui/js/app.js", server.url),
        &[("if-none-match", etag)],
        "",
    );
    assert_eq!((again.status, again.text.as_str()), (304, ""));
    assert_eq!(get(&format!("{}/ui/nope.js", server.url)).status, 404);
    // The assets need no token, but the data behind them does.
    assert_eq!(get(&format!("{}/api/v1/limits", server.url)).status, 401);
    let owner = server.token();
    let (status, v) = server.as_user("GET", "/api/v1/limits", &owner, &Value::Null);
    assert_eq!(status, 200);
    assert!(v["interactive_timeout_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_sessions_requirements_are_read_for_its_viewers_only() {
    let home = tempfile::tempdir().unwrap();
    let server = server_on(home.path());
    let (_, alice) = server.user("alice", "user");
    let (_, bob) = server.user("bob", "user");
    let (d, dir) = flow("pipeline");
    std::fs::write(dir.join("requirements.txt"), "six==1.16.0\n").unwrap();
    let _ = d;
    // A session record is enough: the file is read from the snapshot it runs.
    server.ok_as(&alice, &["flow", "push", dir.to_str().unwrap()]);
    let (status, s) = server.as_user(
        "POST",
        "/api/v1/sessions",
        &alice,
        &json!({"flow": "pipeline@v1", "idle_timeout_s": 0}),
    );
    assert_eq!(status, 202, "{s}");
    let id = s["id"].as_str().unwrap();
    let path = format!("/api/v1/sessions/{id}/requirements");
    let (status, v) = server.as_user("GET", &path, &alice, &Value::Null);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["text"], "six==1.16.0\n");
    assert_eq!(v["path"], "requirements.txt");
    assert_eq!(v["flow_ref"], "pipeline@v1");
    let (status, v) = server.as_user("GET", &path, &bob, &Value::Null);
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["code"], "NotFound");
}
