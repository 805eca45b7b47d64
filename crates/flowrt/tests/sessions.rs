//! Compute sessions end to end: a real `flowrt server` and real agents on 127.0.0.1, driven through
//! the CLI and the API as users would.

// A story test reads as one journey, top to bottom: exempt from the function-length lint.
#![allow(clippy::too_many_lines)]

mod common;

use common::http::{self, header, Reply};
use common::server::{Builder as ServerBuilder, Server};
use common::{flow, free_port};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

thread_local! {
    /// The database the servers this test thread starts use: `None` for SQLite under their home.
    static DATABASE: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Run a story against a server on SQLite, then again on a fresh Postgres database (the one
/// `./scripts/test.sh` starts), as `flowrt server --database postgres://…` serves it.
fn on_both_stores(story: fn()) {
    story();
    if let Some(url) = common::fresh_postgres() {
        DATABASE.with(|d| *d.borrow_mut() = Some(url));
        story();
        DATABASE.with(|d| *d.borrow_mut() = None);
    }
}

/// A server on `home` (which the test keeps), on this thread's store (see [`on_both_stores`]),
/// stopped rather than killed when dropped, as this file's servers always were.
fn server(home: &Path) -> ServerBuilder {
    let server = Server::builder().home(home).stop_on_drop();
    match DATABASE.with(|d| d.borrow().clone()) {
        Some(url) => server.database(&url),
        None => server,
    }
}

/// What the session stories ask of their server besides the harness.
trait Sessions {
    /// `session show ID --json`.
    fn show(&self, id: &str) -> Value;
    /// Wait until session `id` is `status`; fails after `within`.
    fn wait_status(&self, id: &str, status: &str, within: Duration) -> Value;
    /// Where a session's agent listens and its pid, as the server keeps them (views hide both:
    /// code in one session must not find another session's agent).
    fn agent(&self, id: &str) -> (String, u64);
    /// Start a session for the flow folder `dir`; returns (id, seconds to Running).
    fn start_session(&self, dir: &Path, extra: &[&str]) -> (String, f64);
    /// Test a line of the `escape` flow at `dir` in session `id`: the report of what its code
    /// could do to each of `targets` (`{"read": [...], "write": [...], ...}`).
    fn probe(&self, dir: &Path, id: &str, targets: &Value) -> Value;
}

impl Sessions for Server {
    fn show(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["session", "show", id, "--json"]).stdout).unwrap()
    }

    fn wait_status(&self, id: &str, status: &str, within: Duration) -> Value {
        let t = Instant::now();
        loop {
            let s = self.show(id);
            if s["status"] == status {
                return s;
            }
            assert!(
                t.elapsed() < within,
                "session {id} did not become {status}: {s:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn agent(&self, id: &str) -> (String, u64) {
        let dir = self.home().join("sessions").join(id);
        let addr = std::fs::read_to_string(dir.join("agent.addr"))
            .unwrap()
            .trim()
            .to_string();
        let token = std::fs::read_to_string(dir.join("agent.token")).unwrap();
        let auth = format!("Bearer {}", token.trim());
        let r = http::request(
            "GET",
            &format!("http://{addr}/health"),
            &[("authorization", &auth)],
            "",
        );
        assert_eq!(r.status, 200, "{}", r.text);
        let pid = serde_json::from_str::<Value>(&r.text).unwrap()["pid"]
            .as_u64()
            .unwrap();
        (addr, pid)
    }

    fn start_session(&self, dir: &Path, extra: &[&str]) -> (String, f64) {
        let t = Instant::now();
        let mut args = vec!["session", "start", "--flow", dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = self.ok(&args).stdout;
        let id = out.lines().last().unwrap().trim().to_string();
        (id, t.elapsed().as_secs_f64())
    }

    fn probe(&self, dir: &Path, id: &str, targets: &Value) -> Value {
        let out = self
            .ok(&[
                "flow",
                "test",
                dir.to_str().unwrap(),
                "--session",
                id,
                "--inputs",
                &format!("targets={targets}"),
            ])
            .stdout;
        serde_json::from_str::<Value>(&out).unwrap()["report"].clone()
    }
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

/// On SQLite, then on Postgres.
#[test]
fn full_lifecycle_through_the_cli() {
    on_both_stores(full_lifecycle_through_the_cli_story);
}

fn full_lifecycle_through_the_cli_story() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    let (_d, dir) = flow("pipeline");
    let (id, secs) = server.start_session(&dir, &["--idle-timeout", "0"]);
    eprintln!("session start to Running: {secs:.3} s");
    assert!(id.starts_with("s-"), "{id}");
    let s = server.show(&id);
    assert_eq!(s["status"], "Running");
    assert_eq!(
        s["env_ref"],
        json!(format!("default@{}", s["base_version"].as_str().unwrap()))
    );

    let out = server
        .ok(&[
            "flow",
            "test",
            dir.to_str().unwrap(),
            "--session",
            &id,
            "--inputs",
            "text=a b",
            "times=2",
        ])
        .stdout;
    let outputs: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(outputs["repeated"], json!("b-b"));
    // The folder changes: the session still runs the version it started on, and says so.
    let yaml = dir.join("flow.dag.yaml");
    let text = std::fs::read_to_string(&yaml).unwrap();
    std::fs::write(&yaml, format!("{text}\n# edited\n")).unwrap();
    let out = server.cli(&[
        "flow",
        "test",
        dir.to_str().unwrap(),
        "--session",
        &id,
        "--inputs",
        "text=a b",
    ]);
    assert!(out.code == 0);
    let said = out.stderr;
    assert!(
        said.contains("runs pipeline@v1") && said.contains("has changed since"),
        "{said}"
    );
    std::fs::write(&yaml, text).unwrap();

    let listed: Value =
        serde_json::from_str(&server.ok(&["session", "list", "--json"]).stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let text = server.ok(&["session", "show", &id]).stdout;
    assert!(text.contains("status:        Running"), "{text}");
    let base = s["base_version"].as_str().unwrap().to_string();
    let mut settings = common::snapshot_settings(&[(_d.path(), "[TMP]")]);
    settings.add_filter(&regex_escape(&base), "[BASE]");
    settings.bind(|| {
        insta::assert_snapshot!("session_show", text);
        insta::assert_snapshot!("session_list", server.ok(&["session", "list"]).stdout);
    });
    let logs = server.ok(&["session", "logs", &id]).stdout;
    assert!(
        logs.contains(&format!("agent for session {id} is ready")),
        "{logs}"
    );
    // The log is its user's to read: it names no address the agent listens on and no path of
    // the server's.
    assert!(!logs.contains("127.0.0.1:"), "{logs}");
    assert!(!logs.contains(&home.path().display().to_string()), "{logs}");

    server.ok(&["session", "stop", &id]);
    assert_eq!(server.show(&id)["status"], "Stopped");
    let err = server.cli(&[
        "flow",
        "test",
        dir.to_str().unwrap(),
        "--session",
        &id,
        "--inputs",
        "text=x",
    ]);
    assert!(err.code != 0);
    let stderr = err.stderr.clone();
    assert!(stderr.contains(&format!("session '{id}' is Stopped, not Running")));
    settings.bind(|| insta::assert_snapshot!("session_stopped_flow_test", stderr));

    let t = Instant::now();
    server.ok(&["session", "reset", &id]);
    eprintln!(
        "reset (cached environment) to Running: {:.3} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(server.show(&id)["status"], "Running");
}

#[test]
fn requests_without_a_valid_token_get_401() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    let Reply {
        status,
        headers,
        text: body,
    } = http::get(&format!("{}/api/v1/sessions", server.url));
    assert_eq!(status, 401);
    assert!(
        header(&headers, "www-authenticate")
            .to_ascii_lowercase()
            .starts_with("bearer"),
        "{headers:?}"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["code"],
        "Unauthorized"
    );
    let Reply { status, .. } = http::request(
        "GET",
        &format!("{}/api/v1/sessions", server.url),
        &[("authorization", "Bearer frt_wrong")],
        "",
    );
    assert_eq!(status, 401);
    let Reply { status, .. } = http::request("GET", &format!("{}/metrics", server.url), &[], "");
    assert_eq!(status, 401);
    let auth = format!("Bearer {}", server.token());
    let Reply {
        status, text: body, ..
    } = http::request(
        "GET",
        &format!("{}/api/v1/openapi.json", server.url),
        &[("authorization", &auth)],
        "",
    );
    assert_eq!(status, 200);
    assert!(
        serde_json::from_str::<Value>(&body).unwrap()["paths"]["/api/v1/sessions/{id}/reset"]
            .is_object()
    );
    let Reply {
        status, text: body, ..
    } = http::request(
        "GET",
        &format!("{}/metrics", server.url),
        &[("authorization", &auth)],
        "",
    );
    assert_eq!(status, 200);
    assert!(body.contains("flowrt_http_requests_total{method=\"GET\",route=\"/api/v1/sessions\",status=\"401\"} 2"), "{body}");
    // The owner token file is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(home.path().join("owner.token"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn an_idle_session_stops_and_restarts_fast() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    let (_d, dir) = flow("pipeline");
    let (id, _) = server.start_session(&dir, &["--idle-timeout", "2s"]);
    let s = server.wait_status(&id, "Stopped", Duration::from_secs(15));
    assert!(s["reason"].as_str().unwrap().contains("idle"), "{s}");
    let (id2, secs) = server.start_session(&dir, &[]);
    eprintln!("second session start (environment cached): {secs:.3} s");
    assert_eq!(server.show(&id2)["status"], "Running");
}

#[test]
fn a_killed_agent_fails_its_session_and_reset_recovers_it() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    let (_d, dir) = flow("pipeline");
    let (id, _) = server.start_session(&dir, &["--idle-timeout", "0"]);
    let pid = server.agent(&id).1;
    // Where the machine gives sessions cgroups, the killed agent's go with it (not at the reset).
    let groups: Vec<PathBuf> = [
        "/sys/fs/cgroup/flowrt",
        "/sys/fs/cgroup/memory/flowrt",
        "/sys/fs/cgroup/pids/flowrt",
    ]
    .iter()
    .map(|root| Path::new(root).join(&id))
    .filter(|g| g.is_dir())
    .collect();
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    let s = server.wait_status(&id, "Failed", Duration::from_secs(10));
    assert!(
        s["reason"].as_str().unwrap().contains("killed by signal 9"),
        "{s}"
    );
    wait_until(
        "the killed agent's cgroups go",
        Duration::from_secs(10),
        || groups.iter().all(|g| !g.exists()),
    );
    server.ok(&["session", "reset", &id]);
    assert_eq!(server.show(&id)["status"], "Running");
    let out = server
        .ok(&[
            "flow",
            "test",
            dir.to_str().unwrap(),
            "--session",
            &id,
            "--inputs",
            "text=ok",
        ])
        .stdout;
    assert!(out.contains("\"echo\": \"ok\""), "{out}");
}

#[test]
fn a_missing_package_fails_only_its_session_and_names_the_package() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    let (_d1, good) = flow("pipeline");
    let (good_id, _) = server.start_session(&good, &["--idle-timeout", "0"]);
    let (_d2, bad) = flow("bad_reqs");
    let out = server.cli(&["session", "start", "--flow", bad.to_str().unwrap()]);
    assert!(out.code != 0);
    let err = out.stderr;
    assert!(err.contains("flowrt-no-such-package-xyz"), "{err}");
    assert_eq!(server.show(&good_id)["status"], "Running");
}

#[test]
fn an_interactive_test_past_the_timeout_suggests_a_batch_run() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path())
        .args(&["--interactive-timeout", "1"])
        .start();
    let (_d, dir) = flow("slow");
    let (id, _) = server.start_session(&dir, &["--idle-timeout", "0"]);
    let out = server.cli(&[
        "flow",
        "test",
        dir.to_str().unwrap(),
        "--session",
        &id,
        "--inputs",
        "seconds=3",
    ]);
    assert!(out.code != 0);
    let err = out.stderr;
    assert!(
        err.contains("did not finish within the server's request timeout (1 s)"),
        "{err}"
    );
    assert!(err.contains("run it as a batch run"), "{err}");
}

#[test]
fn agents_get_no_secrets_and_their_size_limits() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path())
        .env("FLOWRT_TOKEN", "supersecret")
        .env("MY_API_KEY", "k")
        .start();
    let (_d, dir) = flow("env_probe");
    let (id, _) = server.start_session(&dir, &["--idle-timeout", "0", "--size", "small"]);
    let out: Value = serde_json::from_str(
        &server
            .ok(&["flow", "test", dir.to_str().unwrap(), "--session", &id])
            .stdout,
    )
    .unwrap();
    let keys: Vec<&str> = out["probe"]["env_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert!(
        !keys.contains(&"FLOWRT_TOKEN") && !keys.contains(&"MY_API_KEY"),
        "{keys:?}"
    );
    assert_eq!(out["probe"]["nofile"], json!(1024));
    // The agent answers only its server: other local users reach 127.0.0.1 too.
    let s = server.show(&id);
    assert!(
        s.get("agent_addr").is_none() && s.get("agent_pid").is_none(),
        "{s}"
    );
    let status_url = format!("http://{}/status", server.agent(&id).0);
    assert_eq!(http::request("GET", &status_url, &[], "").status, 401);
    assert_eq!(
        http::request("GET", &status_url, &[("authorization", "Bearer wrong")], "").status,
        401
    );
    let token_file = home.path().join("sessions").join(&id).join("agent.token");
    let auth = format!(
        "Bearer {}",
        std::fs::read_to_string(&token_file).unwrap().trim()
    );
    assert_eq!(
        http::request("GET", &status_url, &[("authorization", &auth)], "").status,
        200
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Where the machine lets us write cgroups, the agent's tree is in the session's memory group.
    let memory_v1 = Path::new("/sys/fs/cgroup/memory");
    let writable = std::fs::create_dir_all(memory_v1.join("flowrt")).is_ok();
    if writable {
        let pid = server.agent(&id).1;
        let groups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(groups.contains(&format!("flowrt/{id}")), "{groups}");
        let limit = std::fs::read_to_string(
            memory_v1
                .join("flowrt")
                .join(&id)
                .join("memory.limit_in_bytes"),
        )
        .unwrap();
        assert_eq!(limit.trim(), (4096u64 * 1024 * 1024).to_string());
    }
    assert_eq!(out["probe"]["cwd_is_session"], json!(true));
}

#[test]
fn a_server_restart_re_adopts_running_agents() {
    let home = tempfile::tempdir().unwrap();
    let mut server = server(home.path()).start();
    let (_d, dir) = flow("pipeline");
    let (id, _) = server.start_session(&dir, &["--idle-timeout", "0"]);
    let pid = server.agent(&id).1;
    server.stop();
    server.restart();
    let s = server.show(&id);
    assert_eq!(s["status"], "Running", "{s}");
    assert_eq!(server.agent(&id).1, pid, "the same agent kept running");
    let out = server
        .ok(&[
            "flow",
            "test",
            dir.to_str().unwrap(),
            "--session",
            &id,
            "--inputs",
            "text=still here",
        ])
        .stdout;
    assert!(out.contains("still here"), "{out}");
}

#[test]
fn update_moves_a_session_to_the_latest_base() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    let (_d, dir) = flow("pipeline");
    let (id, _) = server.start_session(&dir, &["--idle-timeout", "0", "--env", "default@1.0.0"]);
    let text = server.ok(&["session", "show", &id]).stdout;
    assert!(text.contains("update available: 1.2.0"), "{text}");
    server.ok(&["session", "update", &id]);
    let s = server.show(&id);
    assert_eq!(s["base_version"], "1.2.0");
    assert!(s.get("update_available").is_none(), "{s}");
}

#[test]
fn a_batch_in_a_session_survives_a_server_restart() {
    let home = tempfile::tempdir().unwrap();
    let mut server = server(home.path()).start();
    let (d, dir) = flow("slow");
    let (id, _) = server.start_session(&dir, &["--idle-timeout", "0"]);
    let data = d.path().join("data.jsonl");
    let rows: String = (0..40).map(|_| "{\"seconds\": 0.1}\n").collect();
    std::fs::write(&data, rows).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_flowrt"))
        .args([
            "run",
            "create",
            "--session",
            &id,
            "--data",
            data.to_str().unwrap(),
            "--name",
            "in_session",
            "--concurrency",
            "2",
            "--column-mapping",
            "seconds=${data.seconds}",
        ])
        .env("FLOWRT_HOME", home.path())
        .env("FLOWRT_SERVER", &server.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Restart the server while the batch runs.
    // The run's folder is in the session's own folder: the session can write nowhere else.
    let out_file = home
        .path()
        .join("sessions")
        .join(&id)
        .join("runs/in_session/flow_outputs/output.jsonl");
    let t = Instant::now();
    while std::fs::read_to_string(&out_file)
        .map(|s| s.lines().count())
        .unwrap_or(0)
        < 4
    {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the batch did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server.stop();
    let done_before_restart = std::fs::read_to_string(&out_file).unwrap().lines().count();
    assert!(done_before_restart < 40, "the restart must come mid-batch");
    server.restart();
    let out = run.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<u64> = std::fs::read_to_string(&out_file)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["line_number"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        lines,
        (0..40).collect::<Vec<_>>(),
        "every line exactly once, in order"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let meta: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(meta["status"], "Completed");
    assert_eq!(meta["completed_lines"], 40);
}

#[test]
fn packages_after_an_install_and_identities_stay_secret() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    let (d, dir) = flow("pipeline");
    let (id, _) = server.start_session(&dir, &["--idle-timeout", "0"]);
    let reqs = d.path().join("requirements.txt");
    std::fs::write(&reqs, "six==1.16.0\n").unwrap();
    server.ok(&[
        "session",
        "install",
        &id,
        "--requirements",
        reqs.to_str().unwrap(),
    ]);
    let s = server.show(&id);
    assert_eq!(s["status"], "Running");
    assert!(
        s["env_key"].is_string(),
        "the session now has its own environment: {s}"
    );
    // Its sealed workers read their new environment (its pyvenv.cfg and site-packages): the
    // flow's Python tools still run after the install.
    let line: Value = serde_json::from_str(
        &server
            .ok(&[
                "flow",
                "test",
                "x",
                "--session",
                &id,
                "--inputs",
                "text=hello world",
            ])
            .stdout,
    )
    .unwrap();
    assert_eq!(line["first_word"], "hello", "{line}");
    let packages: Value =
        serde_json::from_str(&server.ok(&["session", "packages", &id, "--json"]).stdout).unwrap();
    let six = packages
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "six")
        .expect("six is installed");
    assert_eq!(six["version"], "1.16.0");
    assert_eq!(six["source"], "requirements");
    let text = server.ok(&["session", "packages", &id]).stdout;
    assert!(
        text.lines()
            .any(|l| l.starts_with("six ") && l.ends_with("requirements")),
        "{text}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_flowrt"))
        .args([
            "identity",
            "create",
            "feed-reader",
            "--feed-token-env",
            "FEED",
        ])
        .env("FLOWRT_HOME", home.path())
        .env("FLOWRT_SERVER", &server.url)
        .env("FEED", "tok-very-secret-42")
        .output()
        .unwrap();
    // A token must say where it may go.
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--feed-host"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_flowrt"))
        .args([
            "identity",
            "create",
            "feed-reader",
            "--feed-token-env",
            "FEED",
            "--feed-host",
            "feed.example.com",
        ])
        .env("FLOWRT_HOME", home.path())
        .env("FLOWRT_SERVER", &server.url)
        .env("FEED", "tok-very-secret-42")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = server.ok(&["identity", "list", "--json"]).stdout;
    assert!(
        listed.contains("feed-reader") && !listed.contains("tok-very-secret-42"),
        "{listed}"
    );
    let db = std::fs::read(home.path().join("flowrt.db")).unwrap();
    assert!(
        !String::from_utf8_lossy(&db).contains("tok-very-secret-42"),
        "the token is stored encrypted"
    );
}

/// On SQLite, then on Postgres.
#[test]
fn roles_and_compute_instances_are_isolated_per_user() {
    on_both_stores(roles_and_compute_instances_are_isolated_per_user_story);
}

fn roles_and_compute_instances_are_isolated_per_user_story() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    let owner = format!("Bearer {}", server.token());
    let api =
        |method: &str, path: &str, auth: &str, body: &str| server.api_as(auth, method, path, body);
    // The owner creates a user and a viewer; their tokens are shown once.
    let (status, alice) = api(
        "POST",
        "/api/v1/users",
        &owner,
        r#"{"name": "alice", "role": "user"}"#,
    );
    assert_eq!(status, 201);
    let alice = format!("Bearer {}", alice["token"].as_str().unwrap());
    let (_, vera) = api(
        "POST",
        "/api/v1/users",
        &owner,
        r#"{"name": "vera", "role": "viewer"}"#,
    );
    let vera = format!("Bearer {}", vera["token"].as_str().unwrap());
    // Users cannot create users.
    assert_eq!(
        api(
            "POST",
            "/api/v1/users",
            &alice,
            r#"{"name": "eve", "role": "admin"}"#
        )
        .0,
        403
    );

    // Alice's compute instance is hers alone: another user can neither see nor touch it.
    assert_eq!(
        api(
            "POST",
            "/api/v1/computes",
            &alice,
            r#"{"name": "alice-box", "size": "small"}"#
        )
        .0,
        201
    );
    let (_, bob) = api(
        "POST",
        "/api/v1/users",
        &owner,
        r#"{"name": "bob", "role": "user"}"#,
    );
    let bob = format!("Bearer {}", bob["token"].as_str().unwrap());
    let (_, bobs) = api("GET", "/api/v1/computes", &bob, "");
    assert_eq!(bobs, json!([]));
    assert_eq!(api("GET", "/api/v1/computes/alice-box", &bob, "").0, 404);
    assert_eq!(
        api("POST", "/api/v1/computes/alice-box/stop", &bob, "").0,
        404
    );

    // Alice pushes a flow and starts a session on her instance; Bob can neither see nor use it.
    let (_d, dir) = flow("pipeline");
    let alice_token = alice.trim_start_matches("Bearer ");
    let pushed = server.cli_as(alice_token, &["flow", "push", dir.to_str().unwrap()]);
    assert!(pushed.code == 0, "{}", pushed.stderr);
    assert_eq!(pushed.stdout.trim(), "pipeline@v1");
    let body =
        json!({"flow": "pipeline@v1", "compute": "alice-box", "idle_timeout_s": 0}).to_string();
    let (status, s) = api("POST", "/api/v1/sessions", &alice, &body);
    assert_eq!(status, 202, "{s}");
    let id = s["id"].as_str().unwrap().to_string();
    let t = Instant::now();
    // Only Alice may see her instance's session, so she is the one to wait for it.
    while api("GET", &format!("/api/v1/sessions/{id}"), &alice, "").1["status"] != "Running" {
        assert!(t.elapsed() < Duration::from_secs(15), "not Running");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        api("GET", &format!("/api/v1/sessions/{id}"), &bob, "").0,
        404
    );
    assert_eq!(
        api(
            "POST",
            &format!("/api/v1/sessions/{id}/test"),
            &bob,
            r#"{"inputs": {"text": "x"}}"#
        )
        .0,
        404
    );
    assert_eq!(api("GET", "/api/v1/sessions", &bob, "").1, json!([]));
    // Bob sees neither Alice's flow nor that its name exists; he pushes his own under another name.
    let bob_token = bob.trim_start_matches("Bearer ");
    assert_eq!(api("GET", "/api/v1/flows/pipeline", &bob, "").0, 404);
    assert_eq!(api("GET", "/api/v1/flows", &bob, "").1, json!([]));
    let refused = server.cli_as(bob_token, &["flow", "push", dir.to_str().unwrap()]);
    assert!(refused.code != 0);
    assert!(refused.stderr.contains("the name 'pipeline' is taken"));
    let pushed = server.cli_as(
        bob_token,
        &["flow", "push", dir.to_str().unwrap(), "--name", "bobs"],
    );
    assert!(pushed.code == 0, "{}", pushed.stderr);
    // Bob cannot start a session on Alice's flow, nor on Alice's instance.
    let body = json!({"flow": "pipeline@v1"}).to_string();
    assert_eq!(api("POST", "/api/v1/sessions", &bob, &body).0, 404);
    let body = json!({"flow": "bobs", "compute": "alice-box"}).to_string();
    assert_eq!(api("POST", "/api/v1/sessions", &bob, &body).0, 404);
    // A compute instance's sessions, with their logs, packages and runs, are seen only by the
    // user it is assigned to: not by a viewer, an admin or the owner either, and each answer is
    // the one a session that does not exist gets (so its existence does not leak).
    let (_, ada) = api(
        "POST",
        "/api/v1/users",
        &owner,
        r#"{"name": "ada", "role": "admin"}"#,
    );
    let ada = format!("Bearer {}", ada["token"].as_str().unwrap());
    let rows = "{\"text\": \"one two\"}\n".repeat(3);
    let run = json!({"session": id, "name": "alices-run", "data": rows}).to_string();
    assert_eq!(api("POST", "/api/v1/runs", &alice, &run).0, 202);
    let missing = api("GET", "/api/v1/sessions/s-000000000000", &bob, "").1;
    for (who, auth) in [
        ("viewer", &vera),
        ("admin", &ada),
        ("owner", &owner),
        ("user", &bob),
    ] {
        for (method, path) in [
            ("GET", format!("/api/v1/sessions/{id}")),
            ("GET", format!("/api/v1/sessions/{id}/logs")),
            ("GET", format!("/api/v1/sessions/{id}/packages")),
            ("POST", format!("/api/v1/sessions/{id}/test")),
            ("POST", format!("/api/v1/sessions/{id}/stop")),
            ("GET", "/api/v1/runs/alices-run".to_string()),
            ("GET", "/api/v1/runs/alices-run/lines".to_string()),
        ] {
            let (status, e) = api(method, &path, auth, r#"{"inputs": {}}"#);
            // A viewer may not act on any session, so it learns nothing from a 403 either.
            let expected = if who == "viewer" && method == "POST" {
                403
            } else {
                404
            };
            assert_eq!(status, expected, "{who}: {method} {path}: {e}");
            if expected == 404 && path.starts_with("/api/v1/sessions/") {
                assert_eq!(
                    e["message"],
                    missing["message"]
                        .as_str()
                        .unwrap()
                        .replace("s-000000000000", &id),
                    "{who}: {path}"
                );
            }
        }
        let (_, sessions) = api("GET", "/api/v1/sessions", auth, "");
        assert_eq!(sessions, json!([]), "{who}");
        let (_, runs) = api("GET", "/api/v1/runs", auth, "");
        assert_eq!(runs, json!([]), "{who}");
    }
    assert!(
        missing["message"]
            .as_str()
            .unwrap()
            .contains("starts your own"),
        "{missing}"
    );
    // Counts over everyone's sessions are for admins.
    assert_eq!(api("GET", "/metrics", &alice, "").0, 403);
    assert_eq!(api("GET", "/metrics", &ada, "").0, 200);
    // Alice runs her line.
    let (status, r) = api(
        "POST",
        &format!("/api/v1/sessions/{id}/test"),
        &alice,
        r#"{"inputs": {"text": "hi there"}}"#,
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["outputs"]["first_word"], "hi");
    // A stopped instance takes no new sessions.
    assert_eq!(
        api("POST", "/api/v1/computes/alice-box/stop", &alice, "").0,
        200
    );
    let body = json!({"flow": "pipeline@v1", "compute": "alice-box"}).to_string();
    let (status, e) = api("POST", "/api/v1/sessions", &alice, &body);
    assert_eq!(status, 409);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("flowrt compute start alice-box"),
        "{e}"
    );
}

#[test]
fn a_session_on_a_published_custom_environment() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    let reqs = home.path().join("env-reqs.txt");
    std::fs::write(&reqs, "six==1.16.0\n").unwrap();
    let published = server
        .ok(&[
            "env",
            "create",
            "withsix",
            "--requirements",
            reqs.to_str().unwrap(),
        ])
        .stdout;
    assert_eq!(published.trim(), "withsix@v1");
    let (_d, dir) = flow("pipeline");
    let (id, _) = server.start_session(&dir, &["--env", "withsix@v1", "--idle-timeout", "0"]);
    let s = server.show(&id);
    assert_eq!(s["env_ref"], "withsix@v1");
    let packages: Value =
        serde_json::from_str(&server.ok(&["session", "packages", &id, "--json"]).stdout).unwrap();
    assert!(
        packages
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "six"),
        "{packages}"
    );
}

#[test]
fn a_starting_server_sweeps_cgroups_its_agents_left_behind() {
    let stale = Path::new("/sys/fs/cgroup/memory/flowrt/s-000000000000");
    if std::fs::create_dir_all(stale).is_err() {
        return; // this machine gives no writable cgroups: rlimits alone apply
    }
    let home = tempfile::tempdir().unwrap();
    let _server = server(home.path()).start();
    assert!(
        !stale.exists(),
        "an empty session cgroup is removed when the server starts"
    );
}

#[test]
fn session_files_are_private_and_install_never_writes_through_a_symlink() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    let (d, dir) = flow("pipeline");
    let (id, _) = server.start_session(&dir, &["--idle-timeout", "0"]);
    // Other local users read nothing of the server's: not its home, not a session's log.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(home.path()), 0o700);
    let session_dir = home.path().join("sessions").join(&id);
    assert_eq!(mode(&session_dir) & 0o077, 0, "{:o}", mode(&session_dir));
    assert_eq!(mode(&session_dir.join("agent.log")) & 0o077, 0);
    // The attack: the flow's requirements.txt becomes a link to a file the server can write.
    let victim = d.path().join("victim.txt");
    std::fs::write(&victim, "precious\n").unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("requirements.txt")).unwrap();
    let reqs = d.path().join("new-requirements.txt");
    std::fs::write(&reqs, "six\n").unwrap();
    let out = server.cli(&[
        "session",
        "install",
        &id,
        "--requirements",
        reqs.to_str().unwrap(),
        "--save-only",
    ]);
    // The session runs the pushed snapshot, not the folder: the link is never written through,
    // and the requirements become the flow's next version.
    assert!(out.code == 0, "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(server.show(&id)["flow_ref"], "pipeline@v2");
    // Pushing a folder with a link out of it is refused on the client, naming the link.
    let pushed = server.cli(&["flow", "push", dir.to_str().unwrap()]);
    assert!(pushed.code != 0);
    let stderr = pushed.stderr;
    assert!(
        stderr.contains("'requirements.txt' is a link to"),
        "{stderr}"
    );
}

#[test]
fn a_session_batch_gets_its_data_in_the_request_and_bad_data_is_named_at_once() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    let (d, dir) = flow("slow");
    let (id, _) = server.start_session(&dir, &["--idle-timeout", "0"]);
    let bad = d.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"seconds\": 0}\n{\"seconds\": \n").unwrap();
    let t = Instant::now();
    let out = server.cli(&[
        "run",
        "create",
        "--session",
        &id,
        "--data",
        bad.to_str().unwrap(),
        "--name",
        "bad",
    ]);
    assert!(out.code != 0);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let stderr = out.stderr;
    assert!(stderr.contains("data line 2: not valid JSON"), "{stderr}");
    // The typed run API takes no command line: names that would leave the session's folder,
    // bad mappings and numbers are refused, and so is another user's session.
    let token = server.token();
    let auth = format!("Bearer {token}");
    for body in [
        json!({"session": id, "name": "../x", "data": "{}"}),
        json!({"session": id, "name": "a/b", "data": "{}"}),
        json!({"session": id, "name": "ok", "data": "{}", "run": "../other"}),
        json!({"session": id, "name": "ok", "data": "{}", "column_mapping": {"a=b": "c"}}),
        json!({"session": id, "name": "ok", "data": "{}", "concurrency": 0}),
        json!({"session": id, "name": "ok"}),
        json!({"session": id, "name": "ok", "data": "[1]"}),
    ] {
        let Reply { status, text, .. } = http::request(
            "POST",
            &format!("{}/api/v1/runs", server.url),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body.to_string(),
        );
        assert_eq!(status, 400, "{body}: {text}");
    }
    let Reply { status, text, .. } = http::request(
        "POST",
        &format!("{}/api/v1/runs", server.url),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        json!({"session": id, "name": "ok", "args": ["--output-dir", "/tmp/x"], "data": "{}"})
            .to_string(),
    );
    // Unknown fields are not a back door: there is no argv to pass, and a field the API does not
    // know (a typo, or an old client's `args`) is refused, naming it.
    assert_eq!(status, 422, "{text}");
    assert!(text.contains("unknown field `args`"), "{text}");
    assert!(!Path::new("/tmp/x").exists());
}

#[test]
fn session_runs_read_through_the_server_like_local_ones() {
    // The run's name holds a dot: its record is runs/remote.v1.json, not a file derived from it.
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    let (d, dir) = flow("slow");
    let (id, _) = server.start_session(&dir, &["--idle-timeout", "0"]);
    let data = d.path().join("data.jsonl");
    std::fs::write(
        &data,
        "{\"seconds\": 0}\n{\"seconds\": \"nope\"}\n{\"seconds\": 0}\n",
    )
    .unwrap();
    let out = server.cli(&[
        "run",
        "create",
        "--session",
        &id,
        "--data",
        data.to_str().unwrap(),
        "--name",
        "remote.v1",
        "--column-mapping",
        "seconds=${data.seconds}",
    ]);
    assert!(out.code == 0, "{}", out.stderr);
    // The client has no record of it: every command reads it through the server.
    let client_home = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_flowrt"))
            .args(args)
            .env("FLOWRT_HOME", client_home.path())
            .env("FLOWRT_SERVER", &server.url)
            .env("FLOWRT_TOKEN", server.token())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shown: Value = serde_json::from_str(&cli(&["run", "show", "remote.v1", "--json"])).unwrap();
    assert_eq!(shown["status"], "Completed");
    assert_eq!(shown["session"], id.as_str());
    assert_eq!(
        (
            shown["completed_lines"].as_u64(),
            shown["failed_lines"].as_u64()
        ),
        (Some(2), Some(1))
    );
    assert!(
        shown.get("output_dir").is_none() && shown.get("pid").is_none(),
        "{shown}"
    );
    let list = cli(&["run", "list"]);
    assert!(list.contains("remote.v1") && list.contains(&id), "{list}");
    let details = cli(&["run", "show-details", "remote.v1"]);
    assert!(
        details.contains("Failed") && details.contains("nope"),
        "{details}"
    );
    let failed: Value = serde_json::from_str(
        &server
            .ok(&["run", "show-details", "remote.v1", "--json"])
            .stdout,
    )
    .unwrap();
    assert_eq!(failed.as_array().unwrap().len(), 3);
    assert_eq!(cli(&["run", "show-metrics", "remote.v1"]).trim(), "{}");
    // Lines, one line and logs through the API, as a UI reads them.
    let auth = format!("Bearer {}", server.token());
    let Reply { status, text, .. } = http::request(
        "GET",
        &format!("{}/api/v1/runs/remote.v1/lines?status=Failed", server.url),
        &[("authorization", &auth)],
        "",
    );
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["total"], 1);
    assert_eq!(v["lines"][0]["line_number"], 1);
    let Reply { status, text, .. } = http::request(
        "GET",
        &format!("{}/api/v1/runs/remote.v1/lines/0", server.url),
        &[("authorization", &auth)],
        "",
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["outputs"]["slept"],
        0.0
    );
    let Reply { status, text, .. } = http::request(
        "GET",
        &format!("{}/api/v1/runs/remote.v1/logs", server.url),
        &[("authorization", &auth)],
        "",
    );
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("concurrency"), "{text}");
    // Events: every line, progress counts, then the end; the stream closes by itself.
    let Reply {
        status,
        headers,
        text,
    } = http::request(
        "GET",
        &format!("{}/api/v1/runs/remote.v1/events", server.url),
        &[("authorization", &auth)],
        "",
    );
    assert_eq!(status, 200, "{text}");
    assert!(
        header(&headers, "content-type").contains("text/event-stream"),
        "{headers:?}"
    );
    assert_eq!(text.matches("event: line").count(), 3, "{text}");
    assert!(
        text.contains("event: progress") && text.contains("\"done\":3"),
        "{text}"
    );
    assert!(
        text.contains("event: end") && text.contains("\"status\":\"Completed\""),
        "{text}"
    );
    assert!(text.contains("\"node\":\"nap\""), "{text}");
    assert!(
        !text.contains("event: node"),
        "node events only when asked: {text}"
    );
    // With ?nodes=true, each node's start and end as well, for every line.
    let Reply { status, text, .. } = http::request(
        "GET",
        &format!("{}/api/v1/runs/remote.v1/events?nodes=true", server.url),
        &[("authorization", &auth)],
        "",
    );
    assert_eq!(status, 200, "{text}");
    let node_events: Vec<Value> = text
        .split("\n\n")
        .filter(|e| e.starts_with("event: node"))
        .map(|e| serde_json::from_str(e.split_once("data: ").unwrap().1).unwrap())
        .collect();
    // Line 1's input is no int: it fails before any node runs, so it has no node events.
    assert!(
        !node_events.iter().any(|e| e["line_number"] == 1),
        "{node_events:?}"
    );
    for line in [0, 2] {
        let of = |status: &str| {
            node_events
                .iter()
                .any(|e| e["line_number"] == line && e["node"] == "nap" && e["status"] == status)
        };
        assert!(
            of("Running") && of("Completed"),
            "line {line}: {node_events:?}"
        );
    }
}

#[test]
fn a_sealed_session_touches_nothing_but_its_own_folder() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    // A stored connection, so the key file exists to be attacked.
    let conn = home.path().join("conn.yaml");
    std::fs::write(
        &conn,
        "name: team_openai\ntype: open_ai\napi_key: sk-team-secret\n",
    )
    .unwrap();
    server.ok(&["connection", "create", "--file", conn.to_str().unwrap()]);
    std::fs::remove_file(&conn).unwrap();
    let (_d1, other_flow) = flow("pipeline");
    let (other, _) = server.start_session(&other_flow, &["--idle-timeout", "0"]);
    let (_d2, dir) = flow("seal_probe");
    let (id, _) = server.start_session(&dir, &["--idle-timeout", "0"]);
    let log = server.ok(&["session", "logs", &id]).stdout;
    assert!(log.contains("sealed (Landlock"), "{log}");
    let h = home.path();
    let other_dir = h.join("sessions").join(&other);
    let targets = json!({
        "read": [
            h.join("owner.token"), h.join("secret.key"), h.join("flowrt.db"),
            other_dir.join("agent.token"), other_dir.join("agent.log"),
            other_flow.join("flow.dag.yaml"),
        ],
        "write": [
            h.join("pwned.txt"), other_dir.join("pwned.txt"), other_flow.join("pwned.txt"),
        ],
        "list": [h.to_path_buf(), h.join("sessions")],
        // The session's agent reads files for its code's callbacks (a prompty's template): it
        // is sealed as its code is.
        "host_read": [h.join("secret.key"), other_dir.join("agent.token")],
    });
    let report = &server.probe(&dir, &id, &targets);
    for (path, outcome) in report["attempts"].as_object().unwrap() {
        assert_eq!(outcome, "PermissionError", "{path}: {report:#}");
    }
    assert_eq!(
        report["attempts"].as_object().unwrap().len(),
        13,
        "{report:#}"
    );
    // Its own work succeeds: its folder, its temp, its flow copy.
    assert_eq!(report["own"], json!("ok"), "{report:#}");
    assert!(!h.join("pwned.txt").exists());

    // The machine's processes: a session sees its own only, so the server's environment and
    // command line (a database URL, a cloud key) and other sessions' agents are not there to
    // read. Where the server runs as root (as CI does) the kernel gives each session a PID
    // namespace; elsewhere the session's log says that processes are shared.
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(log.contains("processes: shared"), "{log}");
        return;
    }
    let log = server.ok(&["session", "logs", &id]).stdout;
    assert!(log.contains("a PID namespace of its own"), "{log}");
    assert!(log.contains("its own IPC namespace and /dev/shm"), "{log}");
    let server_pid = server.pid();
    let (_, other_agent) = server.agent(&other);
    // Shared memory another session (or anything on the machine) left in /dev/shm.
    let shm = PathBuf::from(format!("/dev/shm/flowrt-test-{}", std::process::id()));
    std::fs::write(&shm, "someone else's shared memory").unwrap();
    let targets = json!({
        "read": [
            format!("/proc/{server_pid}/environ"), format!("/proc/{server_pid}/cmdline"),
            format!("/proc/{other_agent}/environ"), format!("/proc/{other_agent}/cmdline"),
            shm,
        ],
    });
    let report = server.probe(&dir, &id, &targets);
    let _ = std::fs::remove_file(&shm);
    for (path, outcome) in report["attempts"].as_object().unwrap() {
        assert_ne!(outcome, "ok", "{path}: {report:#}");
    }
    let pids: Vec<u64> = report["pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    assert!(
        !pids.contains(&u64::from(server_pid)) && !pids.contains(&other_agent),
        "the session sees {pids:?}"
    );
    // Its own agent is its PID 1, its worker beside it, and little else.
    assert!(pids.contains(&1) && pids.len() < 10, "{pids:?}");
}

/// The server never opens a path in a session's folder. A session's code that replaces its run's
/// files with links to the server's token, or plants a link where the next run's data will go,
/// gets nothing of the token back through the API, and nothing is written through the link.
#[test]
fn links_a_session_plants_in_its_folder_lead_the_server_nowhere() {
    use sha2::Digest;
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    let (d, dir) = flow("link_attack");
    let (id, _) = server.start_session(&dir, &["--idle-timeout", "0"]);
    let h = home.path();
    let owner_token = server.token();
    let token_file = h.join("owner.token");
    let pwned = h.join("pwned.txt");
    // The next run's data, whose name in the session's folder is its hash.
    let next_data = "{\"links\": {}}\n";
    let next_file = format!(
        "data/{}.jsonl",
        hex::encode(sha2::Sha256::digest(next_data))
    );
    let mut links = json!({
        "runs/attack/logs.txt": token_file,
        "runs/attack/line_runs.jsonl": token_file,
        "runs/attack/node_events.jsonl": token_file,
        "runs/attack/flow_outputs/output.jsonl": token_file,
        "agent.log": token_file,
        "agent.token": token_file,
    });
    links[next_file.as_str()] = json!(pwned);
    let data = d.path().join("attack.jsonl");
    std::fs::write(&data, format!("{}\n", json!({"links": links})).repeat(3)).unwrap();
    server.ok(&[
        "run",
        "create",
        "--session",
        &id,
        "--data",
        data.to_str().unwrap(),
        "--name",
        "attack",
    ]);
    let auth = format!("Bearer {owner_token}");
    // Each answers, and none with the owner's token in it.
    let no_leak = |paths: &[String]| {
        for path in paths {
            let Reply { status, text, .. } = http::request(
                "GET",
                &format!("{}{path}", server.url),
                &[("authorization", &auth)],
                "",
            );
            assert_eq!(status, 200, "{path}: {text}");
            assert!(
                !text.contains(&owner_token),
                "{path} leaks the owner's token: {text}"
            );
        }
    };
    no_leak(
        &[
            "/api/v1/runs/attack",
            "/api/v1/runs/attack/logs",
            "/api/v1/runs/attack/lines",
            "/api/v1/runs/attack/metrics",
            "/api/v1/runs/attack/events",
            "/api/v1/runs",
        ]
        .map(String::from),
    );
    // The next run's data goes to the session over its channel: the planted link is replaced,
    // not written through.
    let next = d.path().join("next.jsonl");
    std::fs::write(&next, next_data).unwrap();
    server.ok(&[
        "run",
        "create",
        "--session",
        &id,
        "--data",
        next.to_str().unwrap(),
        "--name",
        "after-attack",
    ]);
    assert!(!pwned.exists(), "the server wrote through a session's link");
    let shown: Value =
        serde_json::from_str(&server.ok(&["run", "show", "after-attack", "--json"]).stdout)
            .unwrap();
    assert_eq!(shown["completed_lines"], 1, "{shown}");
    // The session's log and its agent's token are the server's to keep, not to read back.
    no_leak(&[
        format!("/api/v1/sessions/{id}/logs"),
        format!("/api/v1/sessions/{id}"),
    ]);
    let out = server
        .ok(&[
            "flow",
            "test",
            dir.to_str().unwrap(),
            "--session",
            &id,
            "--inputs",
            "links={}",
        ])
        .stdout;
    assert!(out.contains("linked"), "{out}");
    // A reset starts the agent afresh: the links are replaced, not written through.
    server.ok(&["session", "reset", &id]);
    wait_until("the session runs again", Duration::from_secs(60), || {
        server
            .ok(&["session", "show", &id, "--json"])
            .stdout
            .contains("\"Running\"")
    });
    assert_eq!(
        std::fs::read_to_string(&token_file).unwrap().trim(),
        owner_token
    );
    let Reply { text: log, .. } = http::request(
        "GET",
        &format!("{}/api/v1/sessions/{id}/logs", server.url),
        &[("authorization", &auth)],
        "",
    );
    assert!(
        !log.contains(&owner_token) && log.contains("is ready"),
        "{log}"
    );
}

/// A home from before runs were workspace records keeps its runs in its sessions' folders: the
/// server imports them at start, once, read without following a link a session planted.
#[test]
fn runs_kept_in_session_folders_by_an_older_flowrt_are_imported_at_start() {
    let home = tempfile::tempdir().unwrap();
    let mut server = server(home.path()).start();
    let (d, dir) = flow("slow");
    let (id, _) = server.start_session(&dir, &["--idle-timeout", "0"]);
    let data = d.path().join("data.jsonl");
    std::fs::write(&data, "{\"seconds\": 0}\n{\"seconds\": 0}\n").unwrap();
    server.ok(&[
        "run",
        "create",
        "--session",
        &id,
        "--data",
        data.to_str().unwrap(),
        "--name",
        "old-run",
        "--column-mapping",
        "seconds=${data.seconds}",
    ]);
    server.ok(&["session", "stop", &id]);
    server.stop();
    // As an older flowrt left it: no workspace records, the runs in the session's folder, and
    // a record the session's code replaced with a link to the owner's token.
    let h = home.path();
    std::fs::remove_dir_all(h.join("workspace")).unwrap();
    let forget = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('DELETE FROM workspace_runs'); c.commit()",
            h.join("flowrt.db").to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(forget.success());
    let runs = h.join("sessions").join(&id).join("runs");
    std::os::unix::fs::symlink(h.join("owner.token"), runs.join("evil.json")).unwrap();
    server.restart();
    let listed: Vec<Value> =
        serde_json::from_str(&server.ok(&["run", "list", "--json"]).stdout).unwrap();
    let names: Vec<&str> = listed.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["old-run"], "{listed:#?}");
    let shown: Value =
        serde_json::from_str(&server.ok(&["run", "show", "old-run", "--json"]).stdout).unwrap();
    assert_eq!(
        (
            shown["status"].as_str(),
            shown["completed_lines"].as_u64(),
            shown["session"].as_str()
        ),
        (Some("Completed"), Some(2), Some(id.as_str())),
        "{shown}"
    );
    assert_eq!(shown["flow"], "slow@v1");
    let details: Value = serde_json::from_str(
        &server
            .ok(&["run", "show-details", "old-run", "--json"])
            .stdout,
    )
    .unwrap();
    assert_eq!(details.as_array().unwrap().len(), 2, "{details}");
    // Once: a run deleted afterwards does not come back at the next start.
    server.ok(&["run", "delete", "old-run"]);
    server.stop();
    server.restart();
    assert!(!server
        .ok(&["run", "list", "--json"])
        .stdout
        .contains("old-run"));
}

/// One client cannot take the server down: thousands of connections from one address that send
/// a request line and never finish their headers leave `/healthz` and the API answering at once
/// (that client holds only its share), and are closed after the header timeout.
#[test]
fn half_open_connections_from_one_client_leave_the_server_answering() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path())
        .args(&[
            "--header-timeout",
            "2",
            "--max-connections-per-client",
            "200",
        ])
        .start();
    let addr: std::net::SocketAddr = server.url.trim_start_matches("http://").parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The attacker dials from 127.0.0.2, the rest of the world from 127.0.0.1. Raw sockets on
    // purpose: requests that never finish their headers are what this story is about, and no
    // HTTP client sends one; the answering side is checked through reqwest like any other.
    let mut held = rt.block_on(async {
        let mut held = Vec::new();
        for _ in 0..3000 {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            if let Ok(mut stream) = socket.connect(addr).await {
                let _ = stream.write_all(b"GET / HTTP/1.1\r\n").await;
                held.push(stream);
            }
        }
        held
    });
    assert!(held.len() > 2000, "only {} connected", held.len());
    let auth = format!("Bearer {}", server.token());
    for (path, headers) in [
        ("/healthz", vec![]),
        ("/api/v1/sessions", vec![("authorization", auth.as_str())]),
    ] {
        let t = Instant::now();
        let Reply { status, text, .. } =
            http::request("GET", &format!("{}{path}", server.url), &headers, "");
        assert_eq!(status, 200, "{path}: {text}");
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "{path} took {:?}",
            t.elapsed()
        );
    }
    // Past the header timeout, every one of them is closed by the server.
    std::thread::sleep(Duration::from_secs(4));
    let open = rt.block_on(async {
        let mut open = 0;
        for stream in &mut held {
            let mut buf = [0u8; 64];
            match tokio::time::timeout(Duration::from_millis(5), stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {}
                // An answer (a 408) and then the close would do too; silence would not.
                Ok(Ok(_)) => {}
                Err(_) => open += 1,
            }
        }
        open
    });
    assert_eq!(
        open, 0,
        "half-open connections still held after the header timeout"
    );
}

/// The pids of processes whose command line contains `needle` (ours only: this test's runs).
fn pids_with(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().next())
            == Some("Z");
        if !zombie
            && String::from_utf8_lossy(&cmd)
                .replace('\0', " ")
                .contains(needle)
        {
            out.push(pid);
        }
    }
    out
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let t = Instant::now();
    while !done() {
        assert!(t.elapsed() < within, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn stopping_or_killing_a_session_ends_its_batch_and_workers() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    let (d, dir) = flow("slow");
    for how in ["stop", "kill"] {
        let (id, _) = server.start_session(&dir, &["--idle-timeout", "0"]);
        let data = d.path().join("data.jsonl");
        let rows: String = (0..200).map(|_| "{\"seconds\": 0.5}\n").collect();
        std::fs::write(&data, rows).unwrap();
        let name = format!("long_{how}");
        let mut run = Command::new(env!("CARGO_BIN_EXE_flowrt"))
            .args([
                "run",
                "create",
                "--session",
                &id,
                "--data",
                data.to_str().unwrap(),
                "--name",
                &name,
                "--column-mapping",
                "seconds=${data.seconds}",
            ])
            .env("FLOWRT_HOME", home.path())
            .env("FLOWRT_SERVER", &server.url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The batch runs inside the session's agent: started once its lines are being written.
        let session_dir = home.path().join("sessions").join(&id);
        let run_dir = session_dir.join("runs").join(&name);
        wait_until("the batch starts", Duration::from_secs(20), || {
            std::fs::read_to_string(run_dir.join("line_runs.jsonl"))
                .is_ok_and(|t| !t.trim().is_empty())
        });
        let (_, agent_pid) = server.agent(&id);
        match how {
            "stop" => {
                server.ok(&["session", "stop", &id]);
            }
            _ => {
                Command::new("kill")
                    .args(["-KILL", &agent_pid.to_string()])
                    .status()
                    .unwrap();
            }
        }
        // The agent ends, and the batch run with it.
        wait_until(
            &format!("{how}: the batch run ends"),
            Duration::from_secs(15),
            || {
                std::fs::read_to_string(format!("/proc/{agent_pid}/stat"))
                    .map(|s| s.contains(") Z"))
                    .unwrap_or(true)
            },
        );
        if how == "stop" {
            // A stopped session cancels its run: finished lines are kept for a resume.
            let record = std::fs::read_to_string(run_dir.join("run.json")).unwrap();
            assert!(record.contains("\"Canceled\""), "{record}");
        }
        let flow_copy = session_dir.join("flow");
        wait_until(
            &format!("{how}: the workers end"),
            Duration::from_secs(15),
            || {
                pids_with(flow_copy.to_str().unwrap()).is_empty()
                    && pids_with("flowrt_worker").iter().all(|p| {
                        std::fs::read_link(format!("/proc/{p}/cwd"))
                            .map(|c| !c.starts_with(&session_dir))
                            .unwrap_or(true)
                    })
            },
        );
        // The client that started it hears the run ended, and says so with its exit code.
        wait_until(
            &format!("{how}: the client returns"),
            Duration::from_secs(15),
            || matches!(run.try_wait(), Ok(Some(_))),
        );
        let code = run.wait().unwrap().code();
        assert!(matches!(code, Some(1) | Some(130)), "{how}: exit {code:?}");
    }
}

#[test]
fn an_agent_whose_session_folder_is_deleted_stops_by_itself() {
    let home = tempfile::tempdir().unwrap();
    let mut server = server(home.path()).start();
    let (_d, dir) = flow("pipeline");
    let (id, _) = server.start_session(&dir, &["--idle-timeout", "0"]);
    let (_, pid) = server.agent(&id);
    // The server is gone for good, and so is the session's folder.
    server.stop();
    std::fs::remove_dir_all(home.path().join("sessions").join(&id)).unwrap();
    wait_until("the agent exits", Duration::from_secs(10), || {
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.contains(") Z"))
                .unwrap_or(true)
    });
}

/// `flowrt agent` on its own, without a server: it exits after `--idle-exit` seconds without a
/// run, and (with no idle exit at all) once its session folder is gone.
#[test]
fn an_agent_alone_exits_when_idle_or_when_its_folder_goes() {
    let (_d, dir) = flow("pipeline");
    let python = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v python3"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for (how, idle_exit) in [("idle", "1"), ("folder", "0")] {
        let tmp = tempfile::tempdir().unwrap();
        let folder = tmp.path().join("session");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("agent.token"), "secret-token\n").unwrap();
        let started = Instant::now();
        let mut agent = Command::new(env!("CARGO_BIN_EXE_flowrt"))
            .args(["agent", "--session-id", "s-alone", "--flow"])
            .arg(&dir)
            .args(["--python", python.trim(), "--addr-file"])
            .arg(folder.join("agent.addr"))
            .arg("--token-file")
            .arg(folder.join("agent.token"))
            .args(["--idle-exit", idle_exit])
            .current_dir(&folder)
            .env("FLOWRT_HOME", &folder)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_until(
            &format!("{how}: the agent listens"),
            Duration::from_secs(20),
            || folder.join("agent.addr").exists(),
        );
        if how == "folder" {
            // Without an idle exit it would run on: only the folder's going stops it.
            std::thread::sleep(Duration::from_secs(3));
            assert!(matches!(agent.try_wait(), Ok(None)), "it exited by itself");
            std::fs::remove_dir_all(&folder).unwrap();
        }
        wait_until(
            &format!("{how}: the agent exits"),
            Duration::from_secs(15),
            || matches!(agent.try_wait(), Ok(Some(_))),
        );
        let out = agent.wait_with_output().unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{how}: {log}");
        let why = match how {
            "idle" => "with no word from the server: stopping",
            _ => "the session folder is gone: stopping",
        };
        assert!(log.contains(why), "{how}: {log}");
        if how == "idle" {
            assert!(
                started.elapsed() >= Duration::from_secs(1),
                "{how}: exited before its idle exit"
            );
        }
    }
}

#[test]
fn api_rejections_are_json_with_a_message() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    let (_d, dir) = flow("pipeline");
    let (id, _) = server.start_session(&dir, &["--idle-timeout", "0"]);
    let auth = format!("Bearer {}", server.token());
    let json_ct = ("content-type", "application/json");
    // (method, path, headers, body, expected status)
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, &'a str, u16);
    let cases: Vec<Case> = vec![
        (
            "POST",
            format!("/api/v1/sessions/{id}/test"),
            vec![json_ct],
            r#"{"inputs": [1, 2]}"#,
            400,
        ),
        (
            "POST",
            format!("/api/v1/sessions/{id}/test"),
            vec![json_ct],
            "{not json",
            400,
        ),
        (
            "POST",
            format!("/api/v1/sessions/{id}/test"),
            vec![("content-type", "text/plain")],
            "{}",
            415,
        ),
        (
            "POST",
            "/api/v1/sessions".to_string(),
            vec![json_ct],
            r#"{"size": "small"}"#,
            422,
        ),
        ("GET", "/api/v1/no/such/route".to_string(), vec![], "", 404),
        ("DELETE", "/api/v1/sessions".to_string(), vec![], "", 405),
        // Numbers past their documented range are named, not a 500 or a silent overflow.
        (
            "POST",
            "/api/v1/runs".to_string(),
            vec![json_ct],
            r#"{"session": "s-x", "name": "r", "data": "{}", "line_timeout": 1e308}"#,
            400,
        ),
        (
            "POST",
            "/api/v1/runs".to_string(),
            vec![json_ct],
            r#"{"session": "s-x", "name": "r", "data": "{}", "line_timeout": 1.8446744073709552e19}"#,
            400,
        ),
        (
            "POST",
            "/api/v1/sessions".to_string(),
            vec![json_ct],
            r#"{"flow": "pipeline", "idle_timeout_s": 18446744073709551615}"#,
            400,
        ),
        (
            "PATCH",
            format!("/api/v1/sessions/{id}"),
            vec![json_ct],
            r#"{"idle_timeout_s": 9223372036854775808}"#,
            400,
        ),
        // A JSON array, or text, where an object (or nothing) is documented.
        (
            "PATCH",
            format!("/api/v1/sessions/{id}"),
            vec![json_ct],
            "[]",
            400,
        ),
        (
            "POST",
            "/api/v1/tokens".to_string(),
            vec![json_ct],
            "[]",
            400,
        ),
        (
            "POST",
            format!("/api/v1/sessions/{id}/reset"),
            vec![json_ct],
            "[1]",
            400,
        ),
        (
            "POST",
            format!("/api/v1/sessions/{id}/stop"),
            vec![json_ct],
            "[]",
            400,
        ),
        (
            "POST",
            "/api/v1/computes/box/start".to_string(),
            vec![json_ct],
            "[]",
            400,
        ),
        (
            "POST",
            "/api/v1/computes/box/stop".to_string(),
            vec![("content-type", "text/plain")],
            "stop it",
            400,
        ),
    ];
    for (method, path, headers, body, expected) in cases {
        let mut h = headers.clone();
        h.push(("authorization", &auth));
        let Reply {
            status,
            headers,
            text,
        } = http::request(method, &format!("{}{path}", server.url), &h, body);
        assert_eq!(status, expected, "{method} {path} {body}: {text}");
        assert!(
            header(&headers, "content-type").starts_with("application/json"),
            "{method} {path}: {headers:?}"
        );
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"));
        assert!(
            v["code"].is_string() && !v["message"].as_str().unwrap_or("").is_empty(),
            "{text}"
        );
        assert_eq!(
            header(&headers, "x-content-type-options"),
            "nosniff",
            "{method} {path}: {headers:?}"
        );
    }
    let Reply { text, .. } = http::request(
        "POST",
        &format!("{}/api/v1/runs", server.url),
        &[json_ct, ("authorization", &auth)],
        r#"{"session": "s-x", "name": "r", "data": "{}", "line_timeout": 1e308}"#,
    );
    assert!(text.contains("line_timeout"), "{text}");
    // The session is untouched by the refused requests.
    let shown: Value =
        serde_json::from_str(&server.ok(&["session", "show", &id, "--json"]).stdout).unwrap();
    assert_eq!(shown["status"], "Running", "{shown}");
}

/// A gzip-compressed tar whose entries are written raw, as an attacker would write them.
fn hostile_archive(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (path, ty, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*ty);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        let name = h.as_old_mut().name.as_mut();
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        tar.append(&h, *data).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// POST an archive (`application/gzip`) as the owner of `token`; (status, body).
fn post_archive(url: &str, token: &str, body: &[u8]) -> (u16, String) {
    let r = http::request(
        "POST",
        url,
        &[
            ("authorization", &format!("Bearer {token}")),
            ("content-type", "application/gzip"),
        ],
        body,
    );
    (r.status, r.text)
}

/// Each user's flow versions, data and runs share a storage quota: an upload that would pass it
/// is refused with 507, naming what uses the space, and keeps nothing; other users are not
/// affected.
#[test]
fn a_users_storage_quota_refuses_what_would_pass_it() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).args(&["--user-quota-mib", "1"]).start();
    let token = server.token();
    let auth = format!("Bearer {token}");
    let rows = |tag: &str| -> String {
        (0..18000)
            .map(|i| format!("{{\"q\": \"{tag} question number {i:>6}\"}}\n"))
            .collect()
    };
    let upload = |auth: &str, body: &str| {
        http::request(
            "POST",
            &format!("{}/api/v1/data?format=jsonl", server.url),
            &[
                ("authorization", auth),
                ("content-type", "application/octet-stream"),
            ],
            body,
        )
    };
    let first = rows("a");
    assert!(
        first.len() > 400_000 && first.len() < 700_000,
        "{}",
        first.len()
    );
    let Reply { status, text, .. } = upload(&auth, &first);
    assert_eq!(status, 201, "{text}");
    // A second one passes the quota: refused, saying what uses the space, and kept nowhere.
    let Reply { status, text, .. } = upload(&auth, &rows("b"));
    assert_eq!(status, 507, "{text}");
    let e: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(e["code"], "QuotaExceeded");
    let message = e["message"].as_str().unwrap();
    assert!(
        message.contains("storage quota of 1.0 MiB") && message.contains("your data"),
        "{message}"
    );
    let owner_data = std::fs::read_dir(home.path().join("data"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    assert_eq!(std::fs::read_dir(&owner_data).unwrap().count(), 1);
    // The same data again stores nothing, so it is not refused.
    assert_eq!(upload(&auth, &first).status, 200);
    // Another user has a quota of their own.
    let (status, u) = server.api_as(
        &auth,
        "POST",
        "/api/v1/users",
        r#"{"name": "ana", "role": "user"}"#,
    );
    assert_eq!(status, 201, "{u}");
    let ana = format!("Bearer {}", u["token"].as_str().unwrap());
    assert_eq!(upload(&ana, &rows("c")).status, 201);
}

/// The server's peak resident memory (VmHWM), in bytes.
fn peak_memory(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

/// Uploads are bounded as they arrive: a small archive that inflates to more than a file may
/// hold is refused without the server holding it in memory, and an upload refused after it was
/// unpacked (a flow that does not load) leaves nothing on disk.
#[test]
fn refused_uploads_cost_little_memory_and_leave_nothing_behind() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    let token = server.token();
    let pid = server.pid();
    // 64 MiB and one byte of zeros: about 64 KiB compressed.
    let zeros = vec![0u8; 64 * 1024 * 1024 + 1];
    let bomb = hostile_archive(&[("big.bin", tar::EntryType::Regular, &zeros)]);
    drop(zeros);
    assert!(bomb.len() < 1024 * 1024, "{}", bomb.len());
    let before = peak_memory(pid);
    let threads: Vec<_> = (0..12)
        .map(|i| {
            let (url, token, bomb) = (server.url.clone(), token.clone(), bomb.clone());
            std::thread::spawn(move || {
                post_archive(&format!("{url}/api/v1/flows/bomb{i}"), &token, &bomb)
            })
        })
        .collect();
    for t in threads {
        let (status, text) = t.join().unwrap();
        assert_eq!(status, 400, "{text}");
        assert!(text.contains("big.bin"), "{text}");
    }
    let grew = peak_memory(pid).saturating_sub(before);
    assert!(
        grew < 64 * 1024 * 1024,
        "12 inflating uploads raised the server's peak memory by {} MiB",
        grew / (1024 * 1024)
    );
    // A flow whose flow.dag.yaml does not load, a hundred times: nothing of it is kept.
    let broken = hostile_archive(&[(
        "flow.dag.yaml",
        tar::EntryType::Regular,
        b"nodes: [unclosed",
    )]);
    for i in 0..100 {
        let (status, text) = post_archive(
            &format!("{}/api/v1/flows/broken{i}", server.url),
            &token,
            &broken,
        );
        assert_eq!(status, 400, "{text}");
    }
    let left: Vec<_> = std::fs::read_dir(home.path().join("snapshots"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "refused uploads left {left:?}");
}

#[test]
fn workspace_flows_upload_once_and_run_after_the_folder_is_gone() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    let (d, dir) = flow("pipeline");
    let push = |args: &[&str]| {
        let mut all = vec!["flow", "push", dir.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = server.cli(&all);
        assert!(out.code == 0, "{}", out.stderr);
        (out.stdout.trim().to_string(), out.stderr.clone())
    };
    let (first, said) = push(&[]);
    assert_eq!(first, "pipeline@v1");
    assert!(said.contains("uploaded"), "{said}");
    // Unchanged: compared by hash, nothing is sent, no new version.
    let (again, said) = push(&[]);
    assert_eq!(again, "pipeline@v1");
    assert!(said.contains("nothing uploaded"), "{said}");
    // Changed: the next version. Ignored files do not count.
    std::fs::write(dir.join(".amlignore"), "scratch/\n").unwrap();
    let (second, _) = push(&[]);
    assert_eq!(second, "pipeline@v2");
    std::fs::create_dir_all(dir.join("scratch")).unwrap();
    std::fs::write(dir.join("scratch/big.txt"), "x".repeat(10_000)).unwrap();
    assert_eq!(push(&[]).0, "pipeline@v2");

    let list = server.ok(&["flow", "list"]).stdout;
    assert!(
        list.contains("pipeline@v1") && list.contains("pipeline@v2"),
        "{list}"
    );
    let shown: Value =
        serde_json::from_str(&server.ok(&["flow", "show", "pipeline@v1"]).stdout).unwrap();
    assert_eq!(shown["ref"], "pipeline@v1");
    assert_eq!(shown["inputs"]["times"]["type"], "int");
    assert!(shown["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["name"] == "stats"));
    assert!(
        shown["edges"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["from"] == "inputs"),
        "{shown:#}"
    );

    // The folder is gone: the server runs what was uploaded.
    drop(d);
    assert!(!dir.exists());
    let out = server
        .ok(&[
            "session",
            "start",
            "--flow",
            "pipeline@v2",
            "--idle-timeout",
            "0",
        ])
        .stdout;
    let id = out.lines().last().unwrap().trim().to_string();
    let out = server
        .ok(&[
            "flow",
            "test",
            "pipeline",
            "--session",
            &id,
            "--inputs",
            "text=a b",
            "times=2",
        ])
        .stdout;
    let outputs: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(outputs["repeated"], json!("b-b"));
    // A path is not a flow to the server.
    let token = server.token();
    let auth = format!("Bearer {token}");
    let Reply { status, text, .. } = http::request(
        "POST",
        &format!("{}/api/v1/sessions", server.url),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        json!({"flow": "/etc"}).to_string(),
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("looks like a path"), "{text}");

    // Bad uploads get a 4xx that says what and where.
    let reg = tar::EntryType::Regular;
    let url = format!("{}/api/v1/flows/evil", server.url);
    for (upload, says) in [
        (
            b"this is not an archive".to_vec(),
            "not a valid gzip-compressed tar archive",
        ),
        (
            hostile_archive(&[("../x.py", reg, b"x")]),
            "'../x.py' leaves the flow folder",
        ),
        (
            hostile_archive(&[("/etc/cron.d/x", reg, b"x")]),
            "'/etc/cron.d/x' is an absolute path",
        ),
        (
            hostile_archive(&[("l", tar::EntryType::Symlink, b"")]),
            "'l' is a link",
        ),
        (
            hostile_archive(&[("d", tar::EntryType::Block, b"")]),
            "'d' is a device",
        ),
        (
            hostile_archive(&[("flow.dag.yaml", reg, b"nodes: [")]),
            "invalid YAML",
        ),
    ] {
        let (status, text) = post_archive(&url, &token, &upload);
        assert_eq!(status, 400, "{says}: {text}");
        assert!(text.contains(says), "{says}: {text}");
    }
    let (status, text) = post_archive(&format!("{}/api/v1/flows/..%2Fx", server.url), &token, b"");
    assert!(status == 400 || status == 404, "{status} {text}");
    assert!(server.show(&id)["status"] == "Running");
}

/// The issue's story, as a user on another machine would live it: a CLI with its own HOME and
/// FLOWRT_HOME, flows pushed and then deleted, and everything else through the server.
#[test]
fn a_remote_cli_runs_tests_batches_evaluations_and_resumes_through_the_server() {
    let server_home = tempfile::tempdir().unwrap();
    let server = server(server_home.path()).start();
    let client = tempfile::tempdir().unwrap();
    let token = server.token();
    let cli = |args: &[&str]| -> Output {
        Command::new(env!("CARGO_BIN_EXE_flowrt"))
            .args(args)
            .env("HOME", client.path())
            .env("FLOWRT_HOME", client.path())
            .env("FLOWRT_SERVER", &server.url)
            .env("FLOWRT_TOKEN", &token)
            .output()
            .unwrap()
    };
    let ok = |args: &[&str]| -> String {
        let out = cli(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Push, then delete the folders: the server has what it needs.
    let mut sessions = Vec::new();
    for name in ["batch_base", "batch_eval", "slow"] {
        let (d, dir) = flow(name);
        assert_eq!(
            ok(&["flow", "push", dir.to_str().unwrap()]).trim(),
            format!("{name}@v1")
        );
        drop(d);
        let out = ok(&["session", "start", "--flow", name, "--idle-timeout", "0"]);
        sessions.push(out.lines().last().unwrap().trim().to_string());
    }
    let (base, eval, slow) = (&sessions[0], &sessions[1], &sessions[2]);
    let test: Value = serde_json::from_str(&ok(&[
        "flow",
        "test",
        "x",
        "--session",
        base,
        "--inputs",
        "q=hi",
    ]))
    .unwrap();
    assert_eq!(test, json!({"answer": "HI"}));

    // A 1,000-line batch, then an evaluation over it in another session.
    let data = client.path().join("qa.jsonl");
    // Every fourth expected answer is wrong: accuracy 0.75.
    let rows: String = (0..1000)
        .map(|i| {
            let expected = if i % 4 == 0 {
                "wrong".to_string()
            } else {
                format!("Q{i}")
            };
            format!("{}\n", json!({"q": format!("q{i}"), "expected": expected}))
        })
        .collect();
    std::fs::write(&data, rows).unwrap();
    ok(&[
        "run",
        "create",
        "--session",
        base,
        "--data",
        data.to_str().unwrap(),
        "--name",
        "answers",
    ]);
    ok(&[
        "run",
        "create",
        "--session",
        eval,
        "--data",
        data.to_str().unwrap(),
        "--name",
        "graded",
        "--run",
        "answers",
        "--column-mapping",
        "answer=${run.outputs.answer}",
        "--column-mapping",
        "expected=${data.expected}",
        "--column-mapping",
        "source=${run.inputs.q}",
    ]);
    let shown: Value = serde_json::from_str(&ok(&["run", "show", "graded", "--json"])).unwrap();
    assert_eq!(shown["status"], "Completed", "{shown}");
    assert_eq!(shown["completed_lines"], 1000);
    let metrics: Value = serde_json::from_str(&ok(&["run", "show-metrics", "graded"])).unwrap();
    assert_eq!(metrics, json!({"accuracy": 0.75, "graded": 1000}));
    let details = ok(&["run", "show-details", "graded", "--max-lines", "3"]);
    assert!(
        details.contains("\"correct\":true") && details.contains("997 more lines"),
        "{details}"
    );
    let auth = format!("Bearer {token}");
    let Reply {
        status, text: logs, ..
    } = http::request(
        "GET",
        &format!("{}/api/v1/runs/graded/logs", server.url),
        &[("authorization", &auth)],
        "",
    );
    assert_eq!(status, 200);
    assert!(logs.contains("run graded"), "{logs}");

    // A run names the flow it means: an evaluation flow asked of the base flow's session is
    // refused before anything runs, naming both flows (never the session's flow run instead,
    // with the mapping dropped, and reported as a success).
    let out = cli(&[
        "run",
        "create",
        "--session",
        base,
        "--flow",
        "batch_eval",
        "--data",
        data.to_str().unwrap(),
        "--run",
        "answers",
        "--column-mapping",
        "answer=${run.outputs.answer}",
        "--name",
        "graded-in-base",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("batch_base@v1") && err.contains("batch_eval@v1"),
        "{err}"
    );
    assert!(!cli(&["run", "show", "graded-in-base"]).status.success());
    // The same flow, named: accepted.
    ok(&[
        "run",
        "create",
        "--session",
        eval,
        "--flow",
        "batch_eval",
        "--data",
        data.to_str().unwrap(),
        "--run",
        "answers",
        "--column-mapping",
        "answer=${run.outputs.answer}",
        "--column-mapping",
        "expected=${data.expected}",
        "--column-mapping",
        "source=${run.inputs.q}",
        "--name",
        "graded-again",
    ]);
    // Every run once in the workspace, attributed to the session and flow that ran it: the
    // evaluation's session read the base run without making it a run of its own.
    let listed: Vec<Value> = serde_json::from_str(&ok(&["run", "list", "--json"])).unwrap();
    let named = |n: &str| -> Vec<&Value> { listed.iter().filter(|r| r["name"] == n).collect() };
    assert_eq!(named("answers").len(), 1, "{listed:#?}");
    assert_eq!(named("graded").len(), 1, "{listed:#?}");
    assert_eq!(named("answers")[0]["session"], base.as_str());
    assert_eq!(named("answers")[0]["flow"], "batch_base@v1");
    assert_eq!(named("graded")[0]["flow"], "batch_eval@v1");
    assert_eq!(named("graded")[0]["base_run"], "answers");
    let answers: Value = serde_json::from_str(&ok(&["run", "show", "answers", "--json"])).unwrap();
    assert_eq!(answers["session"], base.as_str());
    // A name is the workspace's: another session cannot take it.
    let out = cli(&[
        "run",
        "create",
        "--session",
        slow,
        "--data",
        data.to_str().unwrap(),
        "--name",
        "answers",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists in the workspace"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Cancel a long batch, then resume it: every line exactly once.
    let slow_data = client.path().join("slow.jsonl");
    // 400 lines of 0.1 s, two at a time: about 20 s, far longer than it takes to cancel.
    std::fs::write(
        &slow_data,
        (0..400).map(|_| "{\"seconds\": 0.1}\n").collect::<String>(),
    )
    .unwrap();
    let long = Command::new(env!("CARGO_BIN_EXE_flowrt"))
        .args([
            "run",
            "create",
            "--session",
            slow,
            "--data",
            slow_data.to_str().unwrap(),
            "--name",
            "long",
            "--concurrency",
            "2",
            // An input with a default ignores a same-named column unless mapped (promptflow's rule).
            "--column-mapping",
            "seconds=${data.seconds}",
        ])
        .env("HOME", client.path())
        .env("FLOWRT_HOME", client.path())
        .env("FLOWRT_SERVER", &server.url)
        .env("FLOWRT_TOKEN", &token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("some lines finish", Duration::from_secs(30), || {
        cli(&["run", "show", "long", "--json"]).status.success()
            && serde_json::from_slice::<Value>(
                &cli(&["run", "show-details", "long", "--json"]).stdout,
            )
            .map(|v| v.as_array().map(|a| a.len()).unwrap_or(0) >= 10)
            .unwrap_or(false)
    });
    ok(&["run", "cancel", "long"]);
    let out = long.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let canceled: Value = serde_json::from_str(&ok(&["run", "show", "long", "--json"])).unwrap();
    assert_eq!(canceled["status"], "Canceled");
    let done_before = canceled["completed_lines"].as_u64().unwrap();
    assert!(done_before < 400, "the cancel must come mid-run");
    ok(&[
        "run",
        "create",
        "--session",
        slow,
        "--resume-from",
        "long",
        "--name",
        "long2",
    ]);
    let Reply { status, text, .. } = http::request(
        "GET",
        &format!("{}/api/v1/runs/long2/lines?limit=1000", server.url),
        &[("authorization", &auth)],
        "",
    );
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let numbers: Vec<u64> = v["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["line_number"].as_u64().unwrap())
        .collect();
    assert_eq!(
        numbers,
        (0..400).collect::<Vec<_>>(),
        "every line exactly once"
    );
    // The client's own home holds nothing of the runs: they live on the server.
    assert!(!client.path().join("runs").exists());

    // Sessions are disposable: deleting every one keeps every run, its lines, metrics and log.
    for id in [base, eval, slow] {
        let Reply { status, text, .. } = http::request(
            "DELETE",
            &format!("{}/api/v1/sessions/{id}", server.url),
            &[("authorization", &auth)],
            "",
        );
        assert_eq!(status, 204, "{text}");
    }
    let listed: Vec<Value> = serde_json::from_str(&ok(&["run", "list", "--json"])).unwrap();
    let names: Vec<&str> = listed.iter().filter_map(|r| r["name"].as_str()).collect();
    for n in ["answers", "graded", "graded-again", "long", "long2"] {
        assert_eq!(
            names.iter().filter(|x| **x == n).count(),
            1,
            "{n}: {names:?}"
        );
    }
    let shown: Value = serde_json::from_str(&ok(&["run", "show", "graded", "--json"])).unwrap();
    assert_eq!(
        (shown["status"].as_str(), shown["completed_lines"].as_u64()),
        (Some("Completed"), Some(1000))
    );
    let metrics: Value = serde_json::from_str(&ok(&["run", "show-metrics", "graded"])).unwrap();
    assert_eq!(metrics, json!({"accuracy": 0.75, "graded": 1000}));
    let Reply { status, text, .. } = http::request(
        "GET",
        &format!("{}/api/v1/runs/answers/lines/999", server.url),
        &[("authorization", &auth)],
        "",
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["outputs"]["answer"],
        "Q999"
    );
    let Reply {
        status, text: logs, ..
    } = http::request(
        "GET",
        &format!("{}/api/v1/runs/graded/logs", server.url),
        &[("authorization", &auth)],
        "",
    );
    assert_eq!(status, 200);
    assert!(logs.contains("run graded"), "{logs}");
    // A finished run can be archived (left out of the list), restored and deleted.
    ok(&["run", "archive", "graded-again"]);
    let listed = ok(&["run", "list", "--json"]);
    assert!(!listed.contains("graded-again"), "{listed}");
    assert!(ok(&["run", "list", "--json", "--archived"]).contains("graded-again"));
    ok(&["run", "restore", "graded-again"]);
    ok(&["run", "delete", "graded-again"]);
    assert!(!cli(&["run", "show", "graded-again"]).status.success());
    assert!(!server_home
        .path()
        .join("workspace/runs/graded-again")
        .exists());
}

#[test]
fn data_is_uploaded_once_checked_and_private_to_its_owner() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    let (d, _) = flow("slow");
    let data = d.path().join("rows.jsonl");
    std::fs::write(&data, "{\"seconds\": 0}\n{\"seconds\": 0}\n").unwrap();
    let first = server.cli(&["data", "push", data.to_str().unwrap()]);
    assert!(first.code == 0, "{}", first.stderr);
    let reference = first.stdout.trim().to_string();
    assert!(
        reference.starts_with("data:sha256:") && reference.ends_with(".jsonl"),
        "{reference}"
    );
    let again = server.cli(&["data", "push", data.to_str().unwrap()]);
    assert_eq!(again.stdout.trim(), reference);
    assert!(again.stderr.contains("nothing uploaded"));
    // A bad line is named at upload.
    let bad = d.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"a\": 1}\n[1, 2]\n").unwrap();
    let out = server.cli(&["data", "push", bad.to_str().unwrap()]);
    assert!(out.code != 0);
    assert!(out.stderr.contains("data line 2: not a JSON object"));
    // Another user cannot name it.
    let owner = format!("Bearer {}", server.token());
    let Reply {
        status, text: body, ..
    } = http::request(
        "POST",
        &format!("{}/api/v1/users", server.url),
        &[
            ("authorization", &owner),
            ("content-type", "application/json"),
        ],
        r#"{"name": "eve2", "role": "user"}"#,
    );
    assert_eq!(status, 201, "{body}");
    let eve = format!(
        "Bearer {}",
        serde_json::from_str::<Value>(&body).unwrap()["token"]
            .as_str()
            .unwrap()
    );
    let Reply { status, .. } = http::request(
        "GET",
        &format!("{}/api/v1/data/{reference}", server.url),
        &[("authorization", &eve)],
        "",
    );
    assert_eq!(status, 404);
    let Reply { status, .. } = http::request(
        "GET",
        &format!("{}/api/v1/data/{reference}", server.url),
        &[("authorization", &owner)],
        "",
    );
    assert_eq!(status, 200);
}

#[test]
fn a_single_line_test_through_a_session_streams_the_reply_then_the_result() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
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
    server.ok(&["connection", "create", "--file", conn.to_str().unwrap()]);
    let (_d, dir) = flow("chat");
    let (id, _) = server.start_session(&dir, &["--idle-timeout", "0"]);
    let auth = format!("Bearer {}", server.token());
    let Reply {
        status,
        headers,
        text,
    } = http::request(
        "POST",
        &format!("{}/api/v1/sessions/{id}/test", server.url),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
            ("accept", "text/event-stream"),
        ],
        r#"{"inputs": {"question": "hello there"}}"#,
    );
    assert_eq!(status, 200, "{text}");
    assert!(
        header(&headers, "content-type").contains("text/event-stream"),
        "{headers:?}"
    );
    let chunks: Vec<String> = text
        .split("\n\n")
        .filter(|e| e.starts_with("event: chunk"))
        .map(|e| {
            let data = e.split_once("data: ").unwrap().1;
            serde_json::from_str::<Value>(data).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(chunks.len() >= 2, "the reply arrives in pieces: {text}");
    assert_eq!(chunks.concat(), "echo: hello there");
    let result = text
        .split("\n\n")
        .find(|e| e.starts_with("event: result"))
        .expect(&text);
    let result: Value = serde_json::from_str(result.split_once("data: ").unwrap().1).unwrap();
    assert_eq!(result["outputs"]["answer"], "echo: hello there");
    assert_eq!(result["node_runs"][0]["node"], "chat");
    // Each node's start and end arrive as they happen, before the result: the start before
    // the reply's first piece, the end after its last.
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .collect();
    let at = |needle: &str| {
        events
            .iter()
            .position(|e| {
                e.starts_with(needle.split('|').next().unwrap())
                    && e.contains(needle.split('|').nth(1).unwrap_or(""))
            })
            .unwrap_or_else(|| panic!("no {needle} in {text}"))
    };
    let started = at("event: node|\"Running\"");
    let finished = at("event: node|\"Completed\"");
    let first_chunk = at("event: chunk|");
    let result_at = at("event: result|");
    assert!(
        started < first_chunk && first_chunk < finished && finished < result_at,
        "{text}"
    );
    // Without the header: the plain JSON answer, as before.
    let Reply { status, text, .. } = http::request(
        "POST",
        &format!("{}/api/v1/sessions/{id}/test", server.url),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        r#"{"inputs": {"question": "hi"}}"#,
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["outputs"]["answer"],
        "echo: hi"
    );
}

/// Read a streaming HTTP response for `until` (or until `done` says enough), returning the text.
fn read_stream(url: &str, token: &str, until: Duration, done: impl Fn(&str) -> bool) -> String {
    use std::io::Read;
    // The stream does not end by itself: the request's timeout ends the reading.
    let mut resp = http::client()
        .get(url)
        .header("authorization", format!("Bearer {token}"))
        .header("accept", "text/event-stream")
        .timeout(until)
        .send()
        .unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 8192];
    while !done(&text) {
        match resp.read(&mut buf) {
            Ok(n) if n > 0 => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            _ => break,
        }
    }
    text
}

#[test]
fn session_changes_arrive_as_events_without_polling() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    let token = server.token();
    let url = format!("{}/api/v1/sessions/events", server.url);
    let (_d, dir) = flow("pipeline");
    let watcher = {
        let (url, token) = (url.clone(), token.clone());
        std::thread::spawn(move || {
            read_stream(&url, &token, Duration::from_secs(20), |t| {
                t.contains("\"status\":\"Stopped\"")
            })
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let (id, _) = server.start_session(&dir, &["--idle-timeout", "0"]);
    server.ok(&["session", "stop", &id]);
    let text = watcher.join().unwrap();
    let statuses: Vec<String> = text
        .split("\n\n")
        .filter_map(|e| e.split_once("data: "))
        .filter_map(|(_, d)| serde_json::from_str::<Value>(d.lines().next().unwrap_or("")).ok())
        .filter(|v| v["id"] == id.as_str())
        .map(|v| v["status"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        statuses.contains(&"Running".to_string()),
        "{statuses:?}\n{text}"
    );
    assert_eq!(
        statuses.last().map(String::as_str),
        Some("Stopped"),
        "{statuses:?}"
    );
    // A stream shows no one else's sessions.
    let owner = format!("Bearer {token}");
    let Reply { text: made, .. } = http::request(
        "POST",
        &format!("{}/api/v1/users", server.url),
        &[
            ("authorization", &owner),
            ("content-type", "application/json"),
        ],
        r#"{"name": "quinn", "role": "user"}"#,
    );
    let quinn: Value = serde_json::from_str(&made).unwrap();
    let theirs = read_stream(
        &url,
        quinn["token"].as_str().unwrap(),
        Duration::from_millis(800),
        |_| false,
    );
    assert!(!theirs.contains(&id), "{theirs}");
}

#[test]
fn prompty_and_flex_flows_run_in_sessions() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    let model = common::FakeOpenAi::start(0);
    let conn = home.path().join("conn.yaml");
    std::fs::write(
        &conn,
        format!(
            "name: oai\ntype: open_ai\napi_key: sk-x\nbase_url: {}/v1\n",
            model.base
        ),
    )
    .unwrap();
    server.ok(&["connection", "create", "--file", conn.to_str().unwrap()]);
    // A .prompty file: pushed as the entry of its folder's snapshot.
    let folder = tempfile::tempdir().unwrap();
    let prompty = folder.path().join("hello.prompty");
    std::fs::write(
        &prompty,
        "---\nname: Hello\nmodel:\n  api: chat\n  configuration:\n    type: openai\n    connection: oai\n    model: m\n  parameters:\n    max_tokens: 16\ninputs:\n  who:\n    type: string\n---\nuser:\nhello {{who}}\n",
    )
    .unwrap();
    let (id, _) = server.start_session(&prompty, &["--idle-timeout", "0"]);
    assert_eq!(server.show(&id)["flow_ref"], "hello@v1");
    let out = server
        .ok(&[
            "flow",
            "test",
            prompty.to_str().unwrap(),
            "--session",
            &id,
            "--inputs",
            "who=ada",
        ])
        .stdout;
    // A plain result is printed bare, as `pf flow test` prints it.
    assert_eq!(out.trim_end(), "echo: hello ada");
    // A flex flow.
    let (_d, flex) = flow("flex_gen");
    let (fid, _) = server.start_session(&flex, &["--idle-timeout", "0"]);
    let out = server
        .ok(&[
            "flow",
            "test",
            flex.to_str().unwrap(),
            "--session",
            &fid,
            "--inputs",
            "word=abc",
        ])
        .stdout;
    assert_eq!(out.trim_end(), "A.B.C");
}

/// Every answer a client gets — successes and errors — matches the schema the OpenAPI document
/// gives for its operation and status, on a real server with a real session and batch run.
/// On SQLite, then on Postgres.
#[test]
fn every_answer_matches_the_schema_the_document_gives_it() {
    on_both_stores(every_answer_matches_the_schema_the_document_gives_it_story);
}

fn every_answer_matches_the_schema_the_document_gives_it_story() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    let auth = format!("Bearer {}", server.token());
    let Reply { text: doc, .. } = http::request(
        "GET",
        &format!("{}/api/v1/openapi.json", server.url),
        &[("authorization", &auth)],
        "",
    );
    let doc: Value = serde_json::from_str(&doc).unwrap();
    let (_d, dir) = flow("batch_base");
    let (session, _) = server.start_session(&dir, &["--idle-timeout", "0"]);
    let mut checked: Vec<String> = Vec::new();
    // Call `method path` (a concrete URL path matching `template`) and check the answer against
    // the document; returns the JSON body.
    let mut call = |method: &str, template: &str, path: &str, body: &str| -> Value {
        let Reply {
            status,
            headers,
            text,
        } = http::request(
            &method.to_uppercase(),
            &format!("{}{path}", server.url),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body,
        );
        let op = &doc["paths"][template][method];
        assert!(op.is_object(), "{method} {template} is not documented");
        let response = &op["responses"][status.to_string()];
        assert!(
            response.is_object(),
            "{method} {path}: status {status} is not documented: {text}"
        );
        if status == 204 {
            checked.push(format!("{method} {template} {status}"));
            return Value::Null;
        }
        let schema = &response["content"]["application/json"]["schema"];
        assert!(
            header(&headers, "content-type").starts_with("application/json"),
            "{method} {path}: {headers:?}"
        );
        let value: Value = serde_json::from_str(&text).unwrap();
        // Resolve the document's `#/components/...` references from the schema itself.
        let rooted = json!({"allOf": [schema], "components": doc["components"]});
        let validator = jsonschema::validator_for(&rooted).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} {status} does not match its schema: {errors:#?}\n{value:#}"
        );
        checked.push(format!("{method} {template} {status}"));
        value
    };

    call("get", "/healthz", "/healthz", "");
    call("get", "/api/v1/me", "/api/v1/me", "");
    let user = call(
        "post",
        "/api/v1/users",
        "/api/v1/users",
        r#"{"name": "ann", "role": "user"}"#,
    );
    assert!(user["token"].as_str().is_some_and(|t| !t.is_empty()));
    call("get", "/api/v1/users", "/api/v1/users", "");
    call(
        "post",
        "/api/v1/environments",
        "/api/v1/environments",
        r#"{"name": "teamenv", "requirements": ""}"#,
    );
    call("get", "/api/v1/environments", "/api/v1/environments", "");
    call(
        "post",
        "/api/v1/identities",
        "/api/v1/identities",
        r#"{"name": "feed", "feed_token": "s3cret", "feed_hosts": ["pkgs.example.com"]}"#,
    );
    call(
        "post",
        "/api/v1/identities/{name}/grants",
        "/api/v1/identities/feed/grants",
        r#"{"user": "ann"}"#,
    );
    let ids = call("get", "/api/v1/identities", "/api/v1/identities", "");
    assert!(!ids.to_string().contains("s3cret"), "{ids}");
    assert_eq!(ids[0]["granted"].as_array().map(Vec::len), Some(1), "{ids}");
    call(
        "post",
        "/api/v1/computes",
        "/api/v1/computes",
        r#"{"name": "box"}"#,
    );
    call("get", "/api/v1/computes", "/api/v1/computes", "");
    for action in ["stop", "start"] {
        call(
            "post",
            &format!("/api/v1/computes/{{name}}/{action}"),
            &format!("/api/v1/computes/box/{action}"),
            "",
        );
    }
    call("get", "/api/v1/computes/{name}", "/api/v1/computes/box", "");
    call(
        "delete",
        "/api/v1/computes/{name}",
        "/api/v1/computes/box",
        "",
    );
    // Errors have their schema too.
    call("get", "/api/v1/computes/{name}", "/api/v1/computes/box", "");
    call("post", "/api/v1/users", "/api/v1/users", r#"{"nmae": "x"}"#);

    let yaml = "name: c1\ntype: custom\nconfigs: {a: b}\nsecrets: {k: hidden-value}\n";
    let created = call(
        "post",
        "/api/v1/connections",
        "/api/v1/connections",
        &json!({"yaml": yaml, "shared": true}).to_string(),
    );
    assert_eq!(created["secrets"]["k"], "******");
    call("get", "/api/v1/connections", "/api/v1/connections", "");
    call(
        "get",
        "/api/v1/connections/{name}",
        "/api/v1/connections/c1",
        "",
    );
    call(
        "delete",
        "/api/v1/connections/{name}",
        "/api/v1/connections/c1",
        "",
    );
    call("get", "/api/v1/tokens", "/api/v1/tokens", "");
    call(
        "post",
        "/api/v1/tokens",
        "/api/v1/tokens",
        r#"{"expires_in_s": 60}"#,
    );
    call("get", "/api/v1/audit", "/api/v1/audit?limit=5", "");
    call(
        "post",
        "/api/v1/users/{name}/roles",
        "/api/v1/users/ann/roles",
        r#"{"role": "access-admin"}"#,
    );
    call(
        "delete",
        "/api/v1/users/{name}/roles/{role}",
        "/api/v1/users/ann/roles/access-admin",
        "",
    );
    call(
        "post",
        "/api/v1/users/{name}/disable",
        "/api/v1/users/ann/disable",
        "",
    );
    call("get", "/api/v1/flows", "/api/v1/flows", "");
    call(
        "get",
        "/api/v1/flows/{name}",
        "/api/v1/flows/batch_base",
        "",
    );
    call(
        "get",
        "/api/v1/flows/{name}/files",
        "/api/v1/flows/batch_base/files",
        "",
    );
    call(
        "get",
        "/api/v1/flows/{name}/file",
        "/api/v1/flows/batch_base/file?path=flow.dag.yaml",
        "",
    );
    let drafted = call(
        "post",
        "/api/v1/flows/{name}/draft",
        "/api/v1/flows/batch_base/draft",
        r#"{"edits": [{"op": "set", "path": ["inputs", "q", "default"], "value": "hello"}]}"#,
    );
    let save = json!({"base": "batch_base@v1", "message": "a default", "files": drafted["files"]});
    call(
        "post",
        "/api/v1/flows/{name}/versions",
        "/api/v1/flows/batch_base/versions",
        &save.to_string(),
    );
    // The same save again is stale: a 409 with the conflict's own schema.
    call(
        "post",
        "/api/v1/flows/{name}/versions",
        "/api/v1/flows/batch_base/versions",
        &save.to_string(),
    );
    call(
        "get",
        "/api/v1/flows/{name}/compare",
        "/api/v1/flows/batch_base/compare?from=1&to=2",
        "",
    );
    call("get", "/api/v1/sessions", "/api/v1/sessions", "");
    let sid = format!("/api/v1/sessions/{session}");
    call("get", "/api/v1/sessions/{id}", &sid, "");
    call(
        "patch",
        "/api/v1/sessions/{id}",
        &sid,
        r#"{"size": "medium"}"#,
    );
    call(
        "get",
        "/api/v1/sessions/{id}/packages",
        &format!("{sid}/packages"),
        "",
    );
    call(
        "get",
        "/api/v1/sessions/{id}/logs",
        &format!("{sid}/logs"),
        "",
    );
    let line = call(
        "post",
        "/api/v1/sessions/{id}/test",
        &format!("{sid}/test"),
        r#"{"inputs": {"q": "hi"}}"#,
    );
    assert_eq!(line["outputs"]["answer"], "HI", "{line}");

    let rows: String = (0..20).map(|i| format!("{{\"q\": \"q{i}\"}}\n")).collect();
    let pushed = call("post", "/api/v1/data", "/api/v1/data?format=jsonl", &rows);
    let data_ref = pushed["ref"].as_str().unwrap().to_string();
    call(
        "get",
        "/api/v1/data/{reference}",
        &format!("/api/v1/data/{data_ref}"),
        "",
    );
    call(
        "post",
        "/api/v1/runs",
        "/api/v1/runs",
        &json!({"session": session, "name": "twenty", "data_ref": data_ref}).to_string(),
    );
    let t = Instant::now();
    loop {
        let run = call("get", "/api/v1/runs/{name}", "/api/v1/runs/twenty", "");
        if run["status"] != "Running" {
            assert_eq!(run["status"], "Completed", "{run:#}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "{run:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    call("get", "/api/v1/runs", "/api/v1/runs", "");
    let page = call(
        "get",
        "/api/v1/runs/{name}/lines",
        "/api/v1/runs/twenty/lines?limit=5",
        "",
    );
    assert_eq!(page["total"], 20);
    call(
        "get",
        "/api/v1/runs/{name}/lines/{line}",
        "/api/v1/runs/twenty/lines/3",
        "",
    );
    call(
        "get",
        "/api/v1/runs/{name}/metrics",
        "/api/v1/runs/twenty/metrics",
        "",
    );
    call(
        "get",
        "/api/v1/runs/{name}/logs",
        "/api/v1/runs/twenty/logs",
        "",
    );
    // A finished run cannot be canceled: a 409 with its schema.
    call(
        "post",
        "/api/v1/runs/{name}/cancel",
        "/api/v1/runs/twenty/cancel",
        "",
    );
    call(
        "post",
        "/api/v1/sessions/{id}/stop",
        &format!("{sid}/stop"),
        "",
    );
    call("delete", "/api/v1/sessions/{id}", &sid, "");
    call("get", "/api/v1/sessions/{id}", &sid, "");
    assert!(checked.len() >= 35, "{checked:#?}");
    // The check itself can fail: a session without its fields is not a SessionView.
    let rooted = json!({"allOf": [{"$ref": "#/components/schemas/SessionView"}], "components": doc["components"]});
    let validator = jsonschema::validator_for(&rooted).unwrap();
    assert!(!validator.is_valid(&json!({"id": 1})));
}

/// The server's connections are its owner's: another user's flow that names one does not get
/// it, so it cannot return the owner's secret (found by probing as a plain user).
#[test]
fn another_users_flow_does_not_receive_the_owners_connections() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    let file = home.path().join("conn.yaml");
    std::fs::write(
        &file,
        "name: team_key\ntype: custom\nconfigs: {region: north}\nsecrets: {key: owners-secret-value}\n",
    )
    .unwrap();
    server.ok(&["connection", "create", "--file", file.to_str().unwrap()]);
    std::fs::remove_file(&file).unwrap();
    let (_d, dir) = flow("conn_reader");
    // The owner's own session gets it.
    let (id, _) = server.start_session(&dir, &["--idle-timeout", "0"]);
    let mine: Value =
        serde_json::from_str(&server.ok(&["flow", "test", "x", "--session", &id]).stdout).unwrap();
    assert_eq!(mine["secret"], "owners-secret-value");
    // A plain user's does not.
    let Reply {
        status, text: user, ..
    } = http::request(
        "POST",
        &format!("{}/api/v1/users", server.url),
        &[
            ("authorization", &format!("Bearer {}", server.token())),
            ("content-type", "application/json"),
        ],
        r#"{"name": "mallory", "role": "user"}"#,
    );
    assert_eq!(status, 201);
    let token = serde_json::from_str::<Value>(&user).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let pushed = server.cli_as(
        &token,
        &["flow", "push", dir.to_str().unwrap(), "--name", "mine"],
    );
    assert!(pushed.code == 0, "{}", pushed.stderr);
    let started = server.cli_as(
        &token,
        &["session", "start", "--flow", "mine", "--idle-timeout", "0"],
    );
    assert!(started.code == 0, "{}", started.stderr);
    let theirs = started.stdout.lines().last().unwrap().trim().to_string();
    let out = server.cli_as(&token, &["flow", "test", "x", "--session", &theirs]);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(out.code != 0, "{all}");
    assert!(!all.contains("owners-secret-value"), "{all}");
    assert!(all.contains("team_key"), "{all}");
    let log = std::fs::read_to_string(home.path().join("sessions").join(&theirs).join("agent.log"))
        .unwrap_or_default();
    assert!(!log.contains("owners-secret-value"), "{log}");
}

/// Identities and environments have owners (found by probing as a plain user): a user may not
/// act as an identity that is not granted to them, an identity's token goes only to the hosts it
/// names, and one user cannot publish a version over another's environment.
/// On SQLite, then on Postgres.
#[test]
fn identities_are_granted_their_tokens_go_only_to_their_hosts_and_environments_are_owned() {
    on_both_stores(
        identities_are_granted_their_tokens_go_only_to_their_hosts_and_environments_are_owned_story,
    );
}

fn identities_are_granted_their_tokens_go_only_to_their_hosts_and_environments_are_owned_story() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    let owner = format!("Bearer {}", server.token());
    let api =
        |method: &str, path: &str, auth: &str, body: &str| server.api_as(auth, method, path, body);
    let mut tokens = Vec::new();
    for name in ["alice", "bob"] {
        let (status, u) = api(
            "POST",
            "/api/v1/users",
            &owner,
            &json!({"name": name, "role": "user"}).to_string(),
        );
        assert_eq!(status, 201, "{u}");
        tokens.push(u["token"].as_str().unwrap().to_string());
    }
    let (alice, bob) = (
        format!("Bearer {}", tokens[0]),
        format!("Bearer {}", tokens[1]),
    );
    let secret = "feed-token-do-not-leak-7731";
    let body = json!({"name": "builder", "feed_token": secret, "feed_hosts": ["pkgs.example.com"]});
    assert_eq!(
        api("POST", "/api/v1/identities", &owner, &body.to_string()).0,
        201
    );

    // Alice's flow installs from a "private" index on a host of her choosing.
    let (_d, dir) = flow("batch_base");
    std::fs::write(
        dir.join("requirements.txt"),
        "-i http://collector.invalid/{private}/simple\nsix\n",
    )
    .unwrap();
    let pushed = server.cli_as(
        &tokens[0],
        &["flow", "push", dir.to_str().unwrap(), "--name", "hers"],
    );
    assert!(pushed.code == 0, "{}", pushed.stderr);
    let start = json!({"flow": "hers", "identity": "builder", "idle_timeout_s": 0}).to_string();
    // Not granted to her: refused, saying who can grant it.
    let (status, e) = api("POST", "/api/v1/sessions", &alice, &start);
    assert_eq!(status, 403, "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("flowrt identity grant builder alice"),
        "{e}"
    );
    // A user cannot grant identities at all (not even someone else's to themselves).
    assert_eq!(
        api(
            "POST",
            "/api/v1/identities/builder/grants",
            &alice,
            r#"{"user": "alice"}"#
        )
        .0,
        403
    );
    let granted = server.ok(&["identity", "grant", "builder", "alice"]).stdout;
    assert!(granted.is_empty(), "{granted}");
    let (status, s) = api("POST", "/api/v1/sessions", &alice, &start);
    assert_eq!(status, 202, "{s}");
    let id = s["id"].as_str().unwrap().to_string();
    // Granted, but the index's host is not one the token may go to: the session fails before
    // anything is sent, and says why.
    let t = Instant::now();
    let failed = loop {
        let (_, s) = api("GET", &format!("/api/v1/sessions/{id}"), &alice, "");
        if s["status"] == "Failed" {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{s:#}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let reason = failed["reason"].as_str().unwrap();
    assert!(
        reason.contains("collector.invalid") && reason.contains("pkgs.example.com"),
        "{reason}"
    );
    // Bob is not granted it.
    let (status, _) = api("POST", "/api/v1/sessions", &bob, &start);
    assert!(status == 403 || status == 404, "{status}");
    // The token is nowhere a user or the disk can read it.
    let (_, listed) = api("GET", "/api/v1/identities", &owner, "");
    assert_eq!(listed[0]["feed_hosts"], json!(["pkgs.example.com"]));
    let mut seen = listed.to_string() + &failed.to_string();
    for entry in walk(home.path()) {
        seen.push_str(&String::from_utf8_lossy(
            &std::fs::read(entry).unwrap_or_default(),
        ));
    }
    assert!(!seen.contains(secret), "the feed token leaked");

    // Environments belong to whoever published them first.
    let env = r#"{"name": "teamenv", "requirements": "six\n"}"#;
    assert_eq!(api("POST", "/api/v1/environments", &alice, env).0, 201);
    let (status, e) = api("POST", "/api/v1/environments", &bob, env);
    assert_eq!(status, 403, "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("another name"),
        "{e}"
    );
    let (status, v) = api("POST", "/api/v1/environments", &alice, env);
    assert_eq!((status, v["reference"].as_str()), (201, Some("teamenv@v2")));
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Users, tokens, roles and the audit log, as an admin and a user drive them from the CLI.
/// On SQLite, then on Postgres.
#[test]
fn tokens_expire_and_revoke_users_disable_roles_assign_and_everything_is_audited() {
    on_both_stores(
        tokens_expire_and_revoke_users_disable_roles_assign_and_everything_is_audited_story,
    );
}

fn tokens_expire_and_revoke_users_disable_roles_assign_and_everything_is_audited_story() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    let as_user = |token: &str, args: &[&str]| -> (bool, String, String) {
        let out = server.cli_as(token, args);
        (out.code == 0, out.stdout.clone(), out.stderr.clone())
    };
    let owner = server.token();
    let created = |name: &str, extra: &[&str]| -> String {
        let mut args = vec!["user", "create", name];
        args.extend_from_slice(extra);
        let (ok, out, err) = as_user(&owner, &args);
        assert!(ok, "{err}");
        assert!(err.contains("shown once"), "{err}");
        out.trim().to_string()
    };
    let ana = created("ana", &["--role", "user"]);
    let vic = created("vic", &["--role", "viewer"]);
    created("bob", &[]);
    let (ok, _, _) = as_user(&ana, &["session", "list"]);
    assert!(ok);

    // A token that expires, and one that is revoked.
    let (ok, short, err) = as_user(&ana, &["token", "create", "--expires", "2s"]);
    assert!(ok && err.contains("until 20"), "{err}");
    let (ok, second, err) = as_user(&ana, &["token", "create"]);
    assert!(ok && err.contains("until revoked"), "{err}");
    let (short, second) = (short.trim().to_string(), second.trim().to_string());
    let (_, listed, _) = as_user(&ana, &["token", "list", "--json"]);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed:#}");
    assert!(
        !listed.to_string().contains(&second),
        "token list shows no token"
    );
    let second_id = listed[2]["id"].as_str().unwrap().to_string();
    assert!(as_user(&second, &["session", "list"]).0);
    assert!(as_user(&ana, &["token", "revoke", &second_id]).0);
    let (ok, _, err) = as_user(&second, &["session", "list"]);
    assert!(!ok && err.contains("revoked"), "{err}");
    std::thread::sleep(Duration::from_millis(2100));
    let (ok, _, err) = as_user(&short, &["session", "list"]);
    assert!(!ok && err.contains("expired"), "{err}");
    // Another user's token cannot be revoked by a user: it does not exist for them.
    let (_, all, _) = as_user(&owner, &["token", "list", "--json"]);
    let owners_id = serde_json::from_str::<Value>(&all).unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (ok, _, err) = as_user(&ana, &["token", "revoke", &owners_id]);
    assert!(!ok && err.contains("does not exist"), "{err}");

    // A service principal's token, made by an admin; a user cannot make tokens for others.
    created("ci", &["--service"]);
    let (ok, ci, err) = as_user(
        &owner,
        &["token", "create", "--for", "ci", "--expires", "30d"],
    );
    assert!(ok, "{err}");
    assert!(as_user(ci.trim(), &["flow", "list"]).0);
    let (ok, _, err) = as_user(&ana, &["token", "create", "--for", "ci"]);
    assert!(!ok && err.contains("users/write"), "{err}");

    // A disabled user's tokens are refused until it is enabled.
    assert!(as_user(&owner, &["user", "disable", "ana"]).0);
    let (ok, _, err) = as_user(&ana, &["session", "list"]);
    assert!(!ok && err.contains("disabled"), "{err}");
    assert!(as_user(&owner, &["user", "enable", "ana"]).0);
    assert!(as_user(&ana, &["session", "list"]).0);
    let (_, users, _) = as_user(&owner, &["user", "list"]);
    assert!(
        users
            .lines()
            .any(|l| l.starts_with("ci ") && l.contains("service")),
        "{users}"
    );

    // Roles: a user cannot grant them; an access admin (a viewer besides) grants user and
    // viewer but not admin, and still may not start sessions.
    let (ok, _, err) = as_user(&ana, &["role", "assign", "bob", "admin"]);
    assert!(!ok && err.contains("roleAssignments/write"), "{err}");
    let (ok, _, err) = as_user(&owner, &["role", "assign", "vic", "access-admin"]);
    assert!(ok && err.contains("viewer, access-admin"), "{err}");
    let (ok, _, err) = as_user(&vic, &["role", "assign", "bob", "viewer"]);
    assert!(ok && err.contains("bob: viewer"), "{err}");
    let (ok, _, err) = as_user(&vic, &["role", "assign", "bob", "admin"]);
    assert!(!ok && err.contains("only an owner or admin"), "{err}");
    let (_td, d) = flow("batch_base");
    let (ok, _, err) = as_user(&vic, &["flow", "push", d.to_str().unwrap()]);
    assert!(!ok && err.contains("sessions/write"), "{err}");
    let (_, table, _) = as_user(&owner, &["role", "list"]);
    assert!(
        table.contains("access-admin") && table.contains("roleAssignments/write"),
        "{table}"
    );
    assert!(as_user(&vic, &["role", "remove", "vic", "access-admin"]).0);
    let (ok, _, err) = as_user(&vic, &["role", "assign", "bob", "user"]);
    assert!(!ok && err.contains("roleAssignments/write"), "{err}");

    // The audit log has every state-changing request, refused ones too; only admins read it.
    let (ok, _, err) = as_user(&ana, &["audit", "list"]);
    assert!(!ok && err.contains("audit/read"), "{err}");
    let (ok, audit, err) = as_user(&owner, &["audit", "list", "--limit", "500", "--json"]);
    assert!(ok, "{err}");
    let audit: Value = serde_json::from_str(&audit).unwrap();
    let has = |user: &str, method: &str, path: &str, status: u64| {
        audit.as_array().unwrap().iter().any(|e| {
            e["user"] == user && e["method"] == method && e["path"] == path && e["status"] == status
        })
    };
    assert!(has("ana", "POST", "/api/v1/tokens", 201), "{audit:#}");
    assert!(has(
        "ana",
        "DELETE",
        &format!("/api/v1/tokens/{second_id}"),
        204
    ));
    assert!(has("owner", "POST", "/api/v1/users/ana/disable", 200));
    assert!(has("vic", "POST", "/api/v1/users/bob/roles", 403));
    assert!(
        !audit.to_string().contains(&second),
        "no token in the audit log"
    );
    let (_, text, _) = as_user(&owner, &["audit", "list"]);
    assert!(text.contains("POST /api/v1/users/bob/roles"), "{text}");
}

/// On a serverless session, its owner reaches it, an admin too, and another user or a viewer
/// gets 404 (403 for a viewer's change). It needs a running agent, so a real server; the route ×
/// role matrix runs in-process in `crates/flowrt-server/tests/router.rs`.
/// On SQLite, then on Postgres.
#[test]
fn a_serverless_session_is_reached_by_its_owner_and_admins_only() {
    on_both_stores(a_serverless_session_is_reached_by_its_owner_and_admins_only_story);
}

fn a_serverless_session_is_reached_by_its_owner_and_admins_only_story() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    let owner = format!("Bearer {}", server.token());
    let api =
        |method: &str, path: &str, auth: &str, body: &str| server.api_as(auth, method, path, body);
    let mut users: Vec<String> = vec![owner.clone()];
    for (name, role) in [("adm", "admin"), ("usr", "user"), ("vwr", "viewer")] {
        let (status, u) = api(
            "POST",
            "/api/v1/users",
            &owner,
            &json!({"name": name, "role": role}).to_string(),
        );
        assert_eq!(status, 201, "{u}");
        users.push(format!("Bearer {}", u["token"].as_str().unwrap()));
    }

    // Owner of the resource or not: usr's serverless session.
    let (_d, dir) = flow("batch_base");
    let usr_token = users[2].trim_start_matches("Bearer ").to_string();
    let pushed = server.cli_as(&usr_token, &["flow", "push", dir.to_str().unwrap()]);
    assert!(pushed.code == 0, "{}", pushed.stderr);
    let (status, s) = api(
        "POST",
        "/api/v1/sessions",
        &users[2],
        r#"{"flow": "batch_base", "idle_timeout_s": 0}"#,
    );
    assert_eq!(status, 202, "{s}");
    let id = s["id"].as_str().unwrap().to_string();
    let (_, other) = api(
        "POST",
        "/api/v1/users",
        &owner,
        r#"{"name": "usr2", "role": "user"}"#,
    );
    let other = format!("Bearer {}", other["token"].as_str().unwrap());
    for (method, path) in [
        ("GET", format!("/api/v1/sessions/{id}")),
        ("GET", format!("/api/v1/sessions/{id}/logs")),
        ("GET", format!("/api/v1/sessions/{id}/packages")),
        ("PATCH", format!("/api/v1/sessions/{id}")),
    ] {
        for (who, auth, expected) in [
            ("its owner", &users[2], 200),
            ("an admin", &users[1], 200),
            ("another user", &other, 404),
            (
                "a viewer",
                &users[3],
                if method == "GET" { 404 } else { 403 },
            ),
        ] {
            let (status, e) = api(method, &path, auth, "{}");
            assert_eq!(status, expected, "{who}: {method} {path}: {e}");
        }
    }
}

/// Connections on the server: a user's own reach only that user's sessions until shared; a
/// secret is in no response, log or file in plain text; only its owner deletes one.
/// On SQLite, then on Postgres.
/// A workspace connection named as promptflow allows (`/`, spaces, `?`) is created, shown and
/// deleted through the API: the name travels as one escaped path segment.
#[test]
fn a_workspace_connection_with_a_slash_in_its_name_is_shown_and_deleted() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    let name = "team/key 2?x";
    let file = home.path().join("conn.yaml");
    std::fs::write(
        &file,
        format!("name: \"{name}\"\ntype: custom\nsecrets: {{key: slash-secret}}\n"),
    )
    .unwrap();
    let created = server
        .ok(&[
            "connection",
            "create",
            "--file",
            file.to_str().unwrap(),
            "--workspace",
        ])
        .stdout;
    assert!(created.contains("team/key 2?x"), "{created}");
    let shown = server
        .ok(&["connection", "show", name, "--workspace"])
        .stdout;
    assert!(shown.contains("\"name\": \"team/key 2?x\""), "{shown}");
    assert!(!shown.contains("slash-secret"), "{shown}");
    server.ok(&["connection", "delete", name, "--workspace"]);
    let listed = server
        .ok(&["connection", "list", "--workspace", "--json"])
        .stdout;
    assert_eq!(listed.trim(), "[]");
}

#[test]
fn workspace_connections_are_their_creators_until_shared_and_their_secrets_never_show() {
    on_both_stores(
        workspace_connections_are_their_creators_until_shared_and_their_secrets_never_show_story,
    );
}

fn workspace_connections_are_their_creators_until_shared_and_their_secrets_never_show_story() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    let mut tokens = Vec::new();
    for name in ["mia", "ann"] {
        let out = server.ok(&["user", "create", name]).stdout;
        tokens.push(out.trim().to_string());
    }
    let (mia, ann) = (tokens[0].clone(), tokens[1].clone());
    let run = |token: &str, args: &[&str]| -> (bool, String) {
        let out = server.cli_as(token, args);
        (out.code == 0, format!("{}{}", out.stdout, out.stderr))
    };
    let secret = "mias-secret-value-90210";
    let file = home.path().join("conn.yaml");
    std::fs::write(
        &file,
        format!("name: team_key\ntype: custom\nconfigs: {{region: north}}\nsecrets: {{key: {secret}}}\n"),
    )
    .unwrap();
    let (ok, shown) = run(
        &mia,
        &[
            "connection",
            "create",
            "--file",
            file.to_str().unwrap(),
            "--workspace",
        ],
    );
    assert!(ok, "{shown}");
    assert!(
        shown.contains("\"owner\": \"mia\"") && shown.contains("******"),
        "{shown}"
    );
    assert!(!shown.contains(secret));
    let (_d, dir) = flow("conn_reader");
    for (token, name) in [(&mia, "mias"), (&ann, "anns")] {
        let (ok, out) = run(
            token,
            &["flow", "push", dir.to_str().unwrap(), "--name", name],
        );
        assert!(ok, "{out}");
    }
    let start = |token: &str, flow: &str| -> String {
        let out = server.cli_as(
            token,
            &["session", "start", "--flow", flow, "--idle-timeout", "0"],
        );
        assert!(out.code == 0, "{}", out.stderr);
        let stdout = out.stdout.clone();
        stdout.lines().last().unwrap().trim().to_string()
    };
    let test = |token: &str, id: &str| run(token, &["flow", "test", "x", "--session", id]);
    // Mia's session gets her connection; Ann's gets none: it is not shared.
    let (ok, out) = test(&mia, &start(&mia, "mias"));
    assert!(ok && out.contains(secret), "{out}");
    let (ok, out) = test(&ann, &start(&ann, "anns"));
    assert!(
        !ok && out.contains("team_key") && !out.contains(secret),
        "{out}"
    );
    let (ok, out) = run(&ann, &["connection", "list", "--workspace", "--json"]);
    assert!(ok && out.trim() == "[]", "{out}");
    // Shared, it reaches Ann's next session; she sees it masked and cannot delete it.
    let (ok, out) = run(
        &mia,
        &[
            "connection",
            "create",
            "--file",
            file.to_str().unwrap(),
            "--workspace",
            "--shared",
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = test(&ann, &start(&ann, "anns"));
    assert!(ok && out.contains(secret), "{out}");
    let (ok, out) = run(&ann, &["connection", "show", "team_key", "--workspace"]);
    assert!(
        ok && out.contains("\"shared\": true") && !out.contains(secret),
        "{out}"
    );
    let (ok, out) = run(&ann, &["connection", "delete", "team_key", "--workspace"]);
    assert!(!ok && out.contains("only its owner"), "{out}");
    // The secret is sealed on disk and in no log (the YAML it came from aside).
    std::fs::remove_file(&file).unwrap();
    for path in walk(home.path()) {
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default()).into_owned();
        assert!(
            !text.contains(secret),
            "{} holds the secret",
            path.display()
        );
    }
    let (ok, out) = run(&mia, &["connection", "delete", "team_key", "--workspace"]);
    assert!(ok, "{out}");
}

/// Compute names are each user's own, so creating one tells nothing of anyone else's (found by
/// probing: a 409 on create leaked that a colleague had one); bad user and compute names are
/// refused, naming the rule.
#[test]
fn compute_names_are_per_user_and_bad_names_are_refused() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    let owner = format!("Bearer {}", server.token());
    let api =
        |method: &str, path: &str, auth: &str, body: &str| server.api_as(auth, method, path, body);
    let mut users = Vec::new();
    for name in ["alice", "bob"] {
        let (_, u) = api(
            "POST",
            "/api/v1/users",
            &owner,
            &json!({"name": name, "role": "user"}).to_string(),
        );
        users.push(format!("Bearer {}", u["token"].as_str().unwrap()));
    }
    let (alice, bob) = (&users[0], &users[1]);
    let body = r#"{"name": "box", "size": "small"}"#;
    assert_eq!(api("POST", "/api/v1/computes", alice, body).0, 201);
    // Bob's "box" is his own: no 409 tells him Alice has one.
    let (status, b) = api("POST", "/api/v1/computes", bob, body);
    assert_eq!(status, 201, "{b}");
    assert_eq!(api("POST", "/api/v1/computes/box/stop", bob, "").0, 200);
    let (_, a) = api("GET", "/api/v1/computes/box", alice, "");
    assert_eq!(a["status"], "Running", "Bob stopped only his own: {a}");
    // Creating a second one of the same name is the creator's own conflict.
    let (status, e) = api("POST", "/api/v1/computes", alice, body);
    assert_eq!(status, 409, "{e}");
    for bad in ["", "a/b", "a\u{0}b", &"x".repeat(5000), "..", "-x"] {
        let (status, e) = api(
            "POST",
            "/api/v1/computes",
            alice,
            &json!({"name": bad}).to_string(),
        );
        assert_eq!(status, 400, "compute {bad:?}: {e}");
        let (status, e) = api(
            "POST",
            "/api/v1/users",
            &owner,
            &json!({"name": bad, "role": "user"}).to_string(),
        );
        assert_eq!(status, 400, "user {bad:?}: {e}");
        assert!(e["message"].as_str().unwrap().contains("letters"), "{e}");
    }
}

/// A serverless session shared with the workspace: every data scientist sees it and runs lines
/// and batches on it (a pipeline's service principal, say); only its owner and admins change it;
/// a viewer still runs nothing; compute-instance sessions cannot be shared.
#[test]
fn a_shared_session_runs_everyones_lines_but_only_its_owner_changes_it() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    let owner = format!("Bearer {}", server.token());
    let mut auth = Vec::new();
    for (name, role, service) in [
        ("ana", "user", false),
        ("ci", "user", true),
        ("vic", "viewer", false),
    ] {
        let (status, u) = server.api_as(
            &owner,
            "POST",
            "/api/v1/users",
            &json!({"name": name, "role": role, "service": service}).to_string(),
        );
        assert_eq!(status, 201, "{u}");
        auth.push(format!("Bearer {}", u["token"].as_str().unwrap()));
    }
    let (ana, ci, vic) = (&auth[0], &auth[1], &auth[2]);
    let (_d, dir) = flow("batch_base");
    let pushed = server.cli_as(
        ana.trim_start_matches("Bearer "),
        &["flow", "push", dir.to_str().unwrap()],
    );
    assert!(pushed.code == 0, "{}", pushed.stderr);
    let start = |shared: bool| {
        let body = json!({"flow": "batch_base", "idle_timeout_s": 0, "shared": shared}).to_string();
        let (status, s) = server.api_as(ana, "POST", "/api/v1/sessions", &body);
        assert_eq!(status, 202, "{s}");
        s["id"].as_str().unwrap().to_string()
    };
    let (private, shared) = (start(false), start(true));
    let t = Instant::now();
    while [&private, &shared].iter().any(|id| {
        server
            .api_as(ana, "GET", &format!("/api/v1/sessions/{id}"), "")
            .1["status"]
            != "Running"
    }) {
        assert!(t.elapsed() < Duration::from_secs(20), "not Running");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The pipeline sees only the shared one, and runs a line and a batch on it.
    let (_, listed) = server.api_as(ci, "GET", "/api/v1/sessions", "");
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [shared.as_str()], "{listed}");
    assert_eq!(listed[0]["shared"], true);
    let line = r#"{"inputs": {"q": "hi"}}"#;
    let (status, r) = server.api_as(ci, "POST", &format!("/api/v1/sessions/{shared}/test"), line);
    assert_eq!(
        (status, &r["outputs"]["answer"]),
        (200, &json!("HI")),
        "{r}"
    );
    // Its owner's runs on it stay hers: sharing the compute does not share its history.
    let run =
        json!({"session": shared, "name": "ana-run", "data": "{\"q\": \"secret\"}\n"}).to_string();
    assert_eq!(server.api_as(ana, "POST", "/api/v1/runs", &run).0, 202);
    let run = json!({"session": shared, "name": "ci-run", "data": "{\"q\": \"a\"}\n"}).to_string();
    assert_eq!(server.api_as(ci, "POST", "/api/v1/runs", &run).0, 202);
    let names = |who: &str| -> Vec<String> {
        server
            .api_as(who, "GET", "/api/v1/runs", "")
            .1
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(ci), ["ci-run"]);
    assert_eq!(
        server.api_as(ci, "GET", "/api/v1/runs/ana-run/lines", "").0,
        404
    );
    // A viewer reads the workspace's runs, as it reads its flows.
    assert_eq!(names(vic), ["ana-run", "ci-run"]);
    assert_eq!(server.api_as(vic, "GET", "/api/v1/runs/ana-run", "").0, 200);
    assert_eq!(
        server.api_as(vic, "DELETE", "/api/v1/runs/ana-run", "").0,
        403
    );
    assert_eq!(
        server
            .api_as(
                ci,
                "POST",
                &format!("/api/v1/sessions/{private}/test"),
                line,
            )
            .0,
        404
    );
    // It may not change it; its owner may.
    let (status, e) = server.api_as(ci, "POST", &format!("/api/v1/sessions/{shared}/stop"), "");
    assert_eq!(status, 403, "{e}");
    // A viewer sees it but runs nothing on it.
    assert_eq!(
        server
            .api_as(vic, "GET", &format!("/api/v1/sessions/{shared}"), "")
            .0,
        200
    );
    assert_eq!(
        server
            .api_as(
                vic,
                "POST",
                &format!("/api/v1/sessions/{shared}/test"),
                line,
            )
            .0,
        403
    );
    // A compute instance's sessions stay their user's.
    let body = json!({"flow": "batch_base", "compute": "box", "shared": true}).to_string();
    let (status, e) = server.api_as(ana, "POST", "/api/v1/sessions", &body);
    assert_eq!(status, 400, "{e}");
    assert_eq!(
        server
            .api_as(ana, "POST", &format!("/api/v1/sessions/{shared}/stop"), "")
            .0,
        200
    );
}

/// The join route is the one route a user's token does not open: only the proof a Ray session's
/// job can give (its log's commitment, from its node). Guessed, missing or malformed, it gets a
/// JSON 4xx and registers nothing, so no one can point the server at an address of their choosing.
#[test]
fn the_agent_join_route_refuses_anything_but_a_pending_jobs_proof() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    let owner = format!("Bearer {}", server.token());
    let hex = "ab".repeat(32);
    let join =
        json!({"session_id": "s-000000000000", "addr": "127.0.0.1:9", "secret": hex, "token": hex})
            .to_string();
    let evil = json!({"session_id": "s-1", "addr": "evil.example:80", "secret": hex, "token": hex})
        .to_string();
    let short = json!({"session_id": "s-1", "addr": "127.0.0.1:9", "secret": "ab", "token": hex})
        .to_string();
    for (auth, body, want) in [
        ("Bearer guessed", join.as_str(), 401),
        ("", join.as_str(), 401),
        // A user's own API token proves nothing.
        (owner.as_str(), join.as_str(), 401),
        ("", evil.as_str(), 400),
        ("", short.as_str(), 400),
        ("", r#"{"session_id": "s-1", "addr": "127.0.0.1:9"}"#, 422),
        ("Bearer guessed", "not json", 400),
    ] {
        let (status, v) = server.api_as(auth, "POST", "/api/v1/agents/join", body);
        assert_eq!(status, want, "{auth} {body}: {v}");
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}: {v}"
        );
    }
}

/// Issue 19: a server not running as root shares its user with every session's code, which could
/// read `/proc/<server>/environ` (a database password, a cloud key). The server makes itself
/// non-dumpable, so only a process with CAP_SYS_PTRACE reads it; a plain process of the same user
/// (the control below) is readable, so this test fails where the protection is missing.
#[test]
fn the_servers_environment_is_unreadable_to_processes_of_its_own_user() {
    use std::os::unix::fs::chown;
    use std::os::unix::process::CommandExt;
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to run the server as another user");
        return;
    }
    const NOBODY: u32 = 65534;
    let scratch = tempfile::tempdir().unwrap();
    let home = scratch.path().join("home");
    std::fs::create_dir(&home).unwrap();
    chown(scratch.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    chown(&home, Some(NOBODY), Some(NOBODY)).unwrap();
    let port = free_port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_flowrt"))
        .args(["server", "--addr", &format!("127.0.0.1:{port}")])
        .env("FLOWRT_HOME", &home)
        .env("FLOWRT_TEST_SECRET", "hunter2")
        .uid(NOBODY)
        .gid(NOBODY)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(port, &mut server, "the server");
    let mut control = Command::new("sleep")
        .arg("30")
        .env("FLOWRT_TEST_SECRET", "hunter2")
        .uid(NOBODY)
        .gid(NOBODY)
        .spawn()
        .unwrap();
    let read_as_nobody = |pid: u32| {
        Command::new("cat")
            .arg(format!("/proc/{pid}/environ"))
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
            .unwrap()
    };
    // `spawn` returns once the control's exec has begun; the kernel makes the new program's
    // memory readable to its user a moment later (under load, after the first read): ask until
    // it is, or 10 s.
    let t = Instant::now();
    let of_control = loop {
        let out = read_as_nobody(control.id());
        if out.status.success() || t.elapsed() > Duration::from_secs(10) {
            break out;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let of_server = read_as_nobody(server.id());
    let _ = control.kill();
    let _ = server.kill();
    let _ = control.wait();
    let _ = server.wait();
    assert!(
        String::from_utf8_lossy(&of_control.stdout).contains("hunter2"),
        "the control process should be readable: {of_control:?}"
    );
    assert!(
        !of_server.status.success()
            && !String::from_utf8_lossy(&of_server.stdout).contains("hunter2"),
        "the server's environment was readable: {of_server:?}"
    );
}

/// Issue 19: installing a session's requirements runs code its user chose (a source package's
/// build backend). That code runs sealed, with a scrubbed environment: it cannot read the
/// server's token, write into the server's home, or see the server's environment. The package
/// is served by a local index, its in-tree build backend probes and fails the install with what
/// it found, which the session's reason shows.
#[test]
fn a_requirements_build_script_cannot_reach_the_servers_files_or_environment() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path())
        .env("FLOWRT_TEST_SECRET", "hunter2")
        .start();
    let index = tempfile::tempdir().unwrap();
    let token_path = home.path().join("owner.token");
    let planted = home.path().join("planted-by-a-build");
    // The machine's uv cache, which every user's installs would share: a file planted there
    // could end up in another user's environment.
    let shared_cache = std::env::var_os("UV_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/uv"));
    std::fs::create_dir_all(&shared_cache).unwrap();
    let in_cache = shared_cache.join(format!("planted-by-a-build-{}", std::process::id()));
    let backend = format!(
        r#"import json, os
def _probe():
    found = {{}}
    try:
        found["token"] = open({token:?}).read()[:12]
    except OSError as e:
        found["token"] = "denied " + e.__class__.__name__
    try:
        open({planted:?}, "w").write("x")
        found["write"] = "written"
    except OSError as e:
        found["write"] = "denied " + e.__class__.__name__
    try:
        open({in_cache:?}, "w").write("x")
        found["cache"] = "written"
    except OSError as e:
        found["cache"] = "denied " + e.__class__.__name__
    found["env"] = os.environ.get("FLOWRT_TEST_SECRET", "absent")
    raise RuntimeError("PROBE " + json.dumps(found, sort_keys=True))
def get_requires_for_build_wheel(config_settings=None):
    _probe()
def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _probe()
"#,
        token = token_path.display().to_string(),
        planted = planted.display().to_string(),
        in_cache = in_cache.display().to_string(),
    );
    let src = index.path().join("src/evilpkg-1.0");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("pyproject.toml"),
        "[build-system]\nrequires = []\nbuild-backend = \"probe_backend\"\nbackend-path = [\".\"]\n\n[project]\nname = \"evilpkg\"\nversion = \"1.0\"\n",
    )
    .unwrap();
    std::fs::write(src.join("probe_backend.py"), backend).unwrap();
    std::fs::write(
        src.join("PKG-INFO"),
        "Metadata-Version: 2.1\nName: evilpkg\nVersion: 1.0\n",
    )
    .unwrap();
    let served = index.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let tar = Command::new("tar")
        .args(["-czf"])
        .arg(served.join("evilpkg-1.0.tar.gz"))
        .arg("-C")
        .arg(index.path().join("src"))
        .arg("evilpkg-1.0")
        .status()
        .unwrap();
    assert!(tar.success());
    let port = free_port();
    let mut http_server = Command::new("python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1"])
        .arg(port.to_string())
        .arg("--directory")
        .arg(&served)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(port, &mut http_server, "the package index");
    let (_d, dir) = flow("batch_base");
    std::fs::write(
        dir.join("requirements.txt"),
        format!("--no-index\n--find-links http://127.0.0.1:{port}/\nevilpkg==1.0\n"),
    )
    .unwrap();
    let out = server.cli(&["session", "start", "--flow", dir.to_str().unwrap()]);
    let _ = http_server.kill();
    let _ = http_server.wait();
    assert!(out.code != 0, "the install should fail");
    let stderr = out.stderr.clone();
    let probe = stderr
        .lines()
        .find_map(|l| l.split_once("PROBE {").map(|(_, p)| format!("{{{p}")))
        .unwrap_or_else(|| panic!("the build backend did not run: {stderr}"));
    let found: Value =
        serde_json::from_str(probe.trim()).unwrap_or_else(|e| panic!("{e}: {probe}"));
    assert!(
        found["token"].as_str().unwrap().starts_with("denied"),
        "{found}"
    );
    assert!(
        found["write"].as_str().unwrap().starts_with("denied"),
        "{found}"
    );
    assert_eq!(found["env"], "absent", "{found}");
    assert!(!planted.exists());
    assert!(
        found["cache"].as_str().unwrap().starts_with("denied"),
        "{found}"
    );
    assert!(!in_cache.exists());
    // What the failed install says names no folder of the server's.
    assert!(
        !stderr.contains(&home.path().display().to_string()),
        "{stderr}"
    );
}

/// A Python every user of the machine may run (not one under /root, which is 0700), for the
/// sessions that run as users of their own.
fn python_for_everyone() -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    ["/usr/bin/python3", "/usr/local/bin/python3"]
        .iter()
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .find(|p| {
            p.ancestors()
                .skip(1)
                .all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
                && std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o005 == 0o005)
        })
}

/// With `--session-uids`, each session's processes run as a user of its own: they hold none of
/// the server's file permissions (its token, its database, other sessions' folders), whatever
/// Landlock does, and their folder is theirs, all but the agent's token.
#[test]
fn with_session_uids_each_session_runs_as_a_user_of_its_own() {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(std::env::var_os("CI").is_none(), "CI runs as root");
        eprintln!("skipped: only root can run sessions as other users");
        return;
    }
    let Some(python) = python_for_everyone() else {
        eprintln!("skipped: no Python here that other users may run");
        return;
    };
    let refused = Command::new(env!("CARGO_BIN_EXE_flowrt"))
        .args(["server", "--session-uids", "300-200"])
        .env("FLOWRT_HOME", tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("the range must start at 1000 or above"),
        "{err}"
    );

    let home = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let server = server(home.path())
        .args(&["--session-uids", "250000-250099"])
        .env("FLOWRT_PYTHON", &python)
        .start();
    let (_d, dir) = flow("seal_probe");
    let (a, _) = server.start_session(&dir, &["--idle-timeout", "0"]);
    let (b, _) = server.start_session(&dir, &["--idle-timeout", "0"]);
    let h = home.path();
    let probe = |id: &str, other: &str| -> Value {
        let other_dir = h.join("sessions").join(other);
        let targets = json!({
            "read": [
                h.join("owner.token"), h.join("flowrt.db"), h.join("server.log"),
                other_dir.join("agent.log"), h.join("sessions").join(id).join("agent.token"),
            ],
            "write": [other_dir.join("pwned.txt")],
            "list": [h.join("sessions"), other_dir],
        });
        server.probe(&dir, id, &targets)
    };
    let (ra, rb) = (probe(&a, &b), probe(&b, &a));
    let mut uids = Vec::new();
    for (id, report) in [(&a, &ra), (&b, &rb)] {
        for (path, outcome) in report["attempts"].as_object().unwrap() {
            assert_eq!(outcome, "PermissionError", "{path}: {report:#}");
        }
        assert_eq!(report["own"], "ok", "{report:#}");
        let uid = report["uid"].as_u64().unwrap();
        assert!((250000..=250099).contains(&uid), "{report:#}");
        assert_eq!(report["gid"], uid, "{report:#}");
        uids.push(uid);
        let log = server.ok(&["session", "logs", id]).stdout;
        assert!(
            log.contains(&format!("runs as user {uid} of its own")),
            "{log}"
        );
        // Its folder is its user's, but for the token the agent read before it became that
        // user.
        use std::os::unix::fs::MetadataExt;
        let folder = h.join("sessions").join(id);
        assert_eq!(std::fs::metadata(&folder).unwrap().uid() as u64, uid);
        assert_eq!(
            std::fs::metadata(folder.join("flow")).unwrap().uid() as u64,
            uid
        );
        assert_eq!(
            std::fs::metadata(folder.join("agent.token")).unwrap().uid(),
            0
        );
    }
    assert_ne!(uids[0], uids[1], "two sessions share a user");
    // A session deleted frees its user; the folders go with the sessions.
    server.ok(&["session", "delete", &a]);
    server.ok(&["session", "delete", &b]);
}

/// Wait until `child` listens on `port` on 127.0.0.1; it must not exit first. A port probe, no
/// HTTP: all these stories need of a package index or of a server run as another user.
fn wait_listening(port: u16, child: &mut Child, what: &str) {
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(30) && child.try_wait().unwrap().is_none(),
            "{what} did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Found by two sessions' runs pushing the same data at once: uploads in the same millisecond
/// wrote into one temporary file, and one of them failed with "storing the data failed". Every
/// one of many simultaneous uploads of the same (and of different) data succeeds.
#[test]
fn simultaneous_uploads_of_data_all_succeed() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    let auth = format!("Bearer {}", server.token());
    let url = format!("{}/api/v1/data?format=jsonl", server.url);
    let uploads: Vec<_> = (0..16)
        .map(|i| {
            let (url, auth) = (url.clone(), auth.clone());
            std::thread::spawn(move || {
                let body = format!("{{\"x\": {}}}\n", i % 2).repeat(2000);
                http::request("POST", &url, &[("authorization", &auth)], &body)
            })
        })
        .collect();
    for u in uploads {
        let Reply { status, text, .. } = u.join().unwrap();
        assert!(status == 200 || status == 201, "{status} {text}");
    }
}

/// Issue 18: an evaluation in a session gets its base run's files streamed from disk to the
/// session (as data files), never whole in one request: the server's memory does not grow with
/// the base run (here 2 x 20 MB of data and outputs), and the evaluation reads every line.
#[test]
fn an_evaluation_in_a_session_gets_its_base_run_streamed() {
    // 20 MB of data and 20 MB of outputs: held whole, as parsed JSON, they would take several
    // times the 24 MiB the server's peak may grow by.
    const LINES: usize = 250;
    const CHARS: usize = 80_000;
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    let pid = server.pid();
    let flows = tempfile::tempdir().unwrap();
    let dir = flows.path().join("echo_text");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("flow.dag.yaml"),
        "inputs:\n  text:\n    type: string\noutputs:\n  out:\n    type: string\n    reference: ${echo.output}\n  size:\n    type: int\n    reference: ${size.output}\nnodes:\n- name: echo\n  type: python\n  source:\n    type: code\n    path: echo.py\n  inputs:\n    text: ${inputs.text}\n- name: size\n  type: python\n  source:\n    type: code\n    path: size.py\n  inputs:\n    text: ${inputs.text}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("echo.py"),
        "from promptflow import tool\n\n@tool\ndef echo(text: str) -> str:\n    return text\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("size.py"),
        "from promptflow import tool\n\n@tool\ndef size(text: str) -> int:\n    return len(text)\n",
    )
    .unwrap();
    let (id, _) = server.start_session(&dir, &[]);
    let data = flows.path().join("big.jsonl");
    let rows: String = (0..LINES)
        .map(|i| {
            format!(
                "{{\"text\": \"{}\"}}\n",
                char::from(b'a' + (i % 26) as u8).to_string().repeat(CHARS)
            )
        })
        .collect();
    std::fs::write(&data, rows).unwrap();
    let data = data.to_str().unwrap();
    let base: Value = serde_json::from_str(
        &server
            .ok(&[
                "run",
                "create",
                "--session",
                &id,
                "--data",
                data,
                "--name",
                "base",
            ])
            .stdout,
    )
    .unwrap();
    assert_eq!(base["completed_lines"], LINES, "{base:#}");
    let before = peak_memory(pid);
    let eval: Value = serde_json::from_str(
        &server
            .ok(&[
                "run",
                "create",
                "--session",
                &id,
                "--run",
                "base",
                "--data",
                data,
                "--column-mapping",
                "text=${run.outputs.out}",
                "--name",
                "base-eval",
            ])
            .stdout,
    )
    .unwrap();
    assert_eq!(eval["completed_lines"], LINES, "{eval:#}");
    let grew = peak_memory(pid).saturating_sub(before);
    eprintln!(
        "the evaluation raised the server's peak memory by {:.1} MiB",
        grew as f64 / (1024.0 * 1024.0)
    );
    assert!(
        grew < 24 * 1024 * 1024,
        "giving the session a 40 MB base run raised the server's peak memory by {} MiB",
        grew / (1024 * 1024)
    );
    let auth = format!("Bearer {}", server.token());
    let Reply {
        status, text: body, ..
    } = http::request(
        "GET",
        &format!(
            "{}/api/v1/runs/base-eval/lines?offset={}&limit=1",
            server.url,
            LINES - 1
        ),
        &[("authorization", &auth)],
        "",
    );
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["lines"][0]["outputs"]["size"], CHARS, "{page}");
}

/// Issue 21: a flow naming a requirements file outside its folder (one file for a repository's
/// flows, `../requirements.txt`) runs embedded as in promptflow, and `flow push` takes the file
/// into the snapshot under its own name, where the session's environment reads it: the server
/// never reads outside the snapshot.
#[test]
fn a_requirements_file_outside_the_flow_is_taken_in() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    let repo = tempfile::tempdir().unwrap();
    let (_d, dir) = flow("batch_trivial");
    let flow_dir = repo.path().join("flows").join("trivial");
    std::fs::create_dir_all(&flow_dir).unwrap();
    for f in ["flow.dag.yaml", "inc.py"] {
        std::fs::copy(dir.join(f), flow_dir.join(f)).unwrap();
    }
    let yaml = std::fs::read_to_string(flow_dir.join("flow.dag.yaml")).unwrap();
    std::fs::write(
        flow_dir.join("flow.dag.yaml"),
        format!("environment:\n  python_requirements_txt: ../../requirements.txt\n{yaml}"),
    )
    .unwrap();
    let shared = "# one file for every flow of the repository\n";
    std::fs::write(repo.path().join("requirements.txt"), shared).unwrap();
    let out = server
        .ok(&[
            "flow",
            "test",
            flow_dir.to_str().unwrap(),
            "--inputs",
            "x=1",
        ])
        .stdout;
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"y": 2})
    );
    server.ok(&[
        "flow",
        "push",
        flow_dir.to_str().unwrap(),
        "--name",
        "trivial",
    ]);
    let (id, _) = server.start_session(Path::new("trivial"), &["--idle-timeout", "0"]);
    server.wait_status(&id, "Running", Duration::from_secs(120));
    let auth = format!("Bearer {}", server.token());
    let Reply {
        status, text: body, ..
    } = http::request(
        "GET",
        &format!("{}/api/v1/sessions/{id}/requirements", server.url),
        &[("authorization", &auth)],
        "",
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["path"], "requirements.txt", "{v}");
    assert_eq!(v["text"], shared, "{v}");
}

/// A session started when its flow's environment is already built (by an earlier session)
/// runs in that environment, with the flow's requirements, as the first one did, not in the
/// bare interpreter.
#[test]
fn a_session_on_a_built_environment_runs_with_the_flows_requirements() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    let (_d, dir) = flow("with_reqs");
    for n in 1..=2 {
        let (id, _) = server.start_session(&dir, &["--idle-timeout", "0"]);
        let out = server
            .ok(&[
                "flow",
                "test",
                "with_reqs",
                "--session",
                &id,
                "--inputs",
                "x=7",
            ])
            .stdout;
        assert!(out.contains("x = 7"), "session {n}: {out}");
        server.ok(&["session", "delete", &id]);
    }
}

/// Issue 21: a session identity may carry a Microsoft Entra ID service principal. A session
/// acting as it signs keyless Azure OpenAI calls in with it: the agent (whose environment names
/// none of the server's credentials) receives it from the server and asks it first. Its secret
/// is in no API answer, no file of the session or the server, and not in the database.
#[test]
fn a_session_identitys_service_principal_signs_keyless_calls_in() {
    let home = tempfile::tempdir().unwrap();
    let server = server(home.path()).start();
    let secret = "entra-secret-do-not-leak-7741";
    let out = server
        .cmd(&[
            "identity",
            "create",
            "signer",
            "--entra-tenant-id",
            "contoso.example",
            "--entra-client-id",
            "11111111-2222-3333-4444-555555555555",
            "--entra-client-secret-env",
            "SP_SECRET",
        ])
        .env("SP_SECRET", secret)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = server.ok(&["identity", "list"]).stdout;
    assert!(
        listed.contains("11111111-2222-3333-4444-555555555555") && !listed.contains(secret),
        "{listed}"
    );
    // A malformed principal is refused with what is wrong.
    let out = server
        .cmd(&[
            "identity",
            "create",
            "bad",
            "--entra-tenant-id",
            "a/b",
            "--entra-client-id",
            "x",
            "--entra-client-secret-env",
            "SP_SECRET",
        ])
        .env("SP_SECRET", secret)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tenant_id"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let model = common::FakeOpenAi::start(0);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keyless.prompty");
    std::fs::write(
        &file,
        format!(
            "---\nmodel:\n  configuration:\n    type: azure_openai\n    azure_deployment: d\n    azure_endpoint: {}\n  parameters: {{}}\n---\nuser:\nhi\n",
            model.base
        ),
    )
    .unwrap();
    let (id, _) = server.start_session(&file, &["--identity", "signer", "--idle-timeout", "0"]);
    let out = server.cli(&["flow", "test", file.to_str().unwrap(), "--session", &id]);
    // Entra ID is not reachable from here: the sign-in fails, and says the session identity's
    // principal was asked first.
    assert!(out.code != 0);
    let said = out.stderr;
    let asked = said
        .find("the session identity's service principal:")
        .unwrap_or_else(|| panic!("{said}"));
    assert!(
        said.find("managed identity:").is_none_or(|m| m > asked),
        "{said}"
    );
    assert!(!said.contains(secret), "{said}");
    assert_eq!(model.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    server.ok(&["session", "delete", &id]);
    assert_eq!(
        common::files_holding(home.path(), secret),
        Vec::<PathBuf>::new()
    );
}
