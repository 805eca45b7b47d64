//! Compute sessions end to end: a real `flowrt server` and real agents on 127.0.0.1, driven through
//! the CLI and the API as users would.

mod common;

use common::{flow, free_port, http};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Option<Child>,
    home: PathBuf,
    url: String,
    extra_args: Vec<String>,
    extra_env: Vec<(String, String)>,
}

impl Server {
    fn start(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let port = free_port();
        let mut s = Server {
            child: None,
            home: home.to_path_buf(),
            url: format!("http://127.0.0.1:{port}"),
            extra_args: args.iter().map(|a| a.to_string()).collect(),
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let addr = self.url.trim_start_matches("http://").to_string();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowrt"));
        cmd.args(["server", "--addr", &addr, "--idle-check-interval", "0.2"])
            .args(&self.extra_args)
            .env("FLOWRT_HOME", &self.home)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(self.home.join("server.log")).unwrap(),
            ));
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().unwrap());
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if std::net::TcpStream::connect(&addr).is_ok()
                && http("GET", &format!("{}/healthz", self.url), &[], "").0 == 200
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "server did not start: {}",
            std::fs::read_to_string(self.home.join("server.log")).unwrap_or_default()
        );
    }

    /// Stop the server process (SIGTERM); agents keep running.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.home.join("owner.token"))
            .unwrap()
            .trim()
            .to_string()
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_flowrt"))
            .args(args)
            .env("FLOWRT_HOME", &self.home)
            .env("FLOWRT_SERVER", &self.url)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "{args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn show(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["session", "show", id, "--json"])).unwrap()
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

    /// Start a session for the fixture flow `name`; returns (id, seconds to Running).
    fn start_session(&self, dir: &Path, extra: &[&str]) -> (String, f64) {
        let t = Instant::now();
        let mut args = vec!["session", "start", "--flow", dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = self.ok(&args);
        let id = out.lines().last().unwrap().trim().to_string();
        (id, t.elapsed().as_secs_f64())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Stop every agent this server started, then the server.
        if let Ok(list) = std::fs::read_dir(self.home.join("sessions")) {
            for e in list.flatten() {
                if let Ok(addr) = std::fs::read_to_string(e.path().join("agent.addr")) {
                    // Agents already stopped left their address behind: skip those.
                    if std::net::TcpStream::connect(addr.trim()).is_ok() {
                        let token = std::fs::read_to_string(e.path().join("agent.token"))
                            .unwrap_or_default();
                        let auth = format!("Bearer {}", token.trim());
                        let _ = http(
                            "POST",
                            &format!("http://{}/shutdown", addr.trim()),
                            &[("authorization", &auth)],
                            "",
                        );
                    }
                }
            }
        }
        self.stop();
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

#[test]
fn full_lifecycle_through_the_cli() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path(), &[], &[]);
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

    let out = server.ok(&[
        "flow",
        "test",
        dir.to_str().unwrap(),
        "--session",
        &id,
        "--inputs",
        "text=a b",
        "times=2",
    ]);
    let outputs: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(outputs["repeated"], json!("b-b"));

    let listed: Value = serde_json::from_str(&server.ok(&["session", "list", "--json"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let text = server.ok(&["session", "show", &id]);
    assert!(text.contains("status:        Running"), "{text}");
    let base = s["base_version"].as_str().unwrap().to_string();
    let mut settings = common::snapshot_settings(&[(_d.path(), "[TMP]")]);
    settings.add_filter(&regex_escape(&base), "[BASE]");
    settings.bind(|| {
        insta::assert_snapshot!("session_show", text);
        insta::assert_snapshot!("session_list", server.ok(&["session", "list"]));
    });
    let logs = server.ok(&["session", "logs", &id]);
    assert!(
        logs.contains(&format!("agent for session {id} listening on 127.0.0.1:")),
        "{logs}"
    );

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
    assert!(!err.status.success());
    let stderr = String::from_utf8_lossy(&err.stderr).into_owned();
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
    let server = Server::start(home.path(), &[], &[]);
    let (status, head, body) = http("GET", &format!("{}/api/v1/sessions", server.url), &[], "");
    assert_eq!(status, 401);
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{head}"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["code"],
        "Unauthorized"
    );
    let (status, _, _) = http(
        "GET",
        &format!("{}/api/v1/sessions", server.url),
        &[("authorization", "Bearer frt_wrong")],
        "",
    );
    assert_eq!(status, 401);
    let (status, _, _) = http("GET", &format!("{}/metrics", server.url), &[], "");
    assert_eq!(status, 401);
    let auth = format!("Bearer {}", server.token());
    let (status, _, body) = http(
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
    let (status, _, body) = http(
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
    let server = Server::start(home.path(), &[], &[]);
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
    let server = Server::start(home.path(), &[], &[]);
    let (_d, dir) = flow("pipeline");
    let (id, _) = server.start_session(&dir, &["--idle-timeout", "0"]);
    let pid = server.show(&id)["agent_pid"].as_u64().unwrap();
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    let s = server.wait_status(&id, "Failed", Duration::from_secs(10));
    assert!(
        s["reason"].as_str().unwrap().contains("killed by signal 9"),
        "{s}"
    );
    server.ok(&["session", "reset", &id]);
    assert_eq!(server.show(&id)["status"], "Running");
    let out = server.ok(&[
        "flow",
        "test",
        dir.to_str().unwrap(),
        "--session",
        &id,
        "--inputs",
        "text=ok",
    ]);
    assert!(out.contains("\"echo\": \"ok\""), "{out}");
}

#[test]
fn a_missing_package_fails_only_its_session_and_names_the_package() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path(), &[], &[]);
    let (_d1, good) = flow("pipeline");
    let (good_id, _) = server.start_session(&good, &["--idle-timeout", "0"]);
    let (_d2, bad) = flow("bad_reqs");
    let out = server.cli(&["session", "start", "--flow", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("flowrt-no-such-package-xyz"), "{err}");
    assert_eq!(server.show(&good_id)["status"], "Running");
}

#[test]
fn an_interactive_test_past_the_timeout_suggests_a_batch_run() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path(), &["--interactive-timeout", "1"], &[]);
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
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("did not finish within the server's request timeout (1 s)"),
        "{err}"
    );
    assert!(err.contains("run it as a batch run"), "{err}");
}

#[test]
fn agents_get_no_secrets_and_their_size_limits() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(
        home.path(),
        &[],
        &[("FLOWRT_TOKEN", "supersecret"), ("MY_API_KEY", "k")],
    );
    let (_d, dir) = flow("env_probe");
    let (id, _) = server.start_session(&dir, &["--idle-timeout", "0", "--size", "small"]);
    let out: Value = serde_json::from_str(&server.ok(&[
        "flow",
        "test",
        dir.to_str().unwrap(),
        "--session",
        &id,
    ]))
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
    let status_url = format!("http://{}/status", s["agent_addr"].as_str().unwrap());
    assert_eq!(http("GET", &status_url, &[], "").0, 401);
    assert_eq!(
        http("GET", &status_url, &[("authorization", "Bearer wrong")], "").0,
        401
    );
    let token_file = home.path().join("sessions").join(&id).join("agent.token");
    let auth = format!(
        "Bearer {}",
        std::fs::read_to_string(&token_file).unwrap().trim()
    );
    assert_eq!(
        http("GET", &status_url, &[("authorization", &auth)], "").0,
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
        let pid = server.show(&id)["agent_pid"].as_u64().unwrap();
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
    let mut server = Server::start(home.path(), &[], &[]);
    let (_d, dir) = flow("pipeline");
    let (id, _) = server.start_session(&dir, &["--idle-timeout", "0"]);
    let pid = server.show(&id)["agent_pid"].as_u64().unwrap();
    server.stop();
    server.spawn();
    let s = server.show(&id);
    assert_eq!(s["status"], "Running", "{s}");
    assert_eq!(
        s["agent_pid"].as_u64().unwrap(),
        pid,
        "the same agent kept running"
    );
    let out = server.ok(&[
        "flow",
        "test",
        dir.to_str().unwrap(),
        "--session",
        &id,
        "--inputs",
        "text=still here",
    ]);
    assert!(out.contains("still here"), "{out}");
}

#[test]
fn update_moves_a_session_to_the_latest_base() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path(), &[], &[]);
    let (_d, dir) = flow("pipeline");
    let (id, _) = server.start_session(&dir, &["--idle-timeout", "0", "--env", "default@1.0.0"]);
    let text = server.ok(&["session", "show", &id]);
    assert!(text.contains("update available: 1.1.0"), "{text}");
    server.ok(&["session", "update", &id]);
    let s = server.show(&id);
    assert_eq!(s["base_version"], "1.1.0");
    assert!(s.get("update_available").is_none(), "{s}");
}

#[test]
fn a_batch_in_a_session_survives_a_server_restart() {
    let home = tempfile::tempdir().unwrap();
    let mut server = Server::start(home.path(), &[], &[]);
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
    let out_file = home
        .path()
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
    server.spawn();
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
    let meta: Value =
        serde_json::from_str(&server.ok(&["run", "show", "in_session", "--json"])).unwrap();
    assert_eq!(meta["status"], "Completed");
}

#[test]
fn packages_after_an_install_and_identities_stay_secret() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path(), &[], &[]);
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
    let packages: Value =
        serde_json::from_str(&server.ok(&["session", "packages", &id, "--json"])).unwrap();
    let six = packages
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "six")
        .expect("six is installed");
    assert_eq!(six["version"], "1.16.0");
    assert_eq!(six["source"], "requirements");
    let text = server.ok(&["session", "packages", &id]);
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
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = server.ok(&["identity", "list", "--json"]);
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

#[test]
fn roles_and_compute_instances_are_isolated_per_user() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path(), &[], &[]);
    let owner = format!("Bearer {}", server.token());
    let api = |method: &str, path: &str, auth: &str, body: &str| {
        let (status, _, text) = http(
            method,
            &format!("{}{path}", server.url),
            &[
                ("authorization", auth),
                ("content-type", "application/json"),
            ],
            body,
        );
        (
            status,
            serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
        )
    };
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

    // Alice starts a session on her instance; Bob can neither see nor use it.
    let (_d, dir) = flow("pipeline");
    let body = json!({"flow": dir, "compute": "alice-box", "idle_timeout_s": 0}).to_string();
    let (status, s) = api("POST", "/api/v1/sessions", &alice, &body);
    assert_eq!(status, 202, "{s}");
    let id = s["id"].as_str().unwrap().to_string();
    server.wait_status(&id, "Running", Duration::from_secs(15));
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
    // Bob cannot start a session on Alice's instance either.
    let body = json!({"flow": dir, "compute": "alice-box"}).to_string();
    assert_eq!(api("POST", "/api/v1/sessions", &bob, &body).0, 404);
    // A viewer reads but may not act.
    assert_eq!(
        api("GET", &format!("/api/v1/sessions/{id}"), &vera, "").0,
        200
    );
    assert_eq!(
        api("POST", &format!("/api/v1/sessions/{id}/stop"), &vera, "").0,
        403
    );
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
    let body = json!({"flow": dir, "compute": "alice-box"}).to_string();
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
    let server = Server::start(home.path(), &[], &[]);
    let reqs = home.path().join("env-reqs.txt");
    std::fs::write(&reqs, "six==1.16.0\n").unwrap();
    let published = server.ok(&[
        "env",
        "create",
        "withsix",
        "--requirements",
        reqs.to_str().unwrap(),
    ]);
    assert_eq!(published.trim(), "withsix@v1");
    let (_d, dir) = flow("pipeline");
    let (id, _) = server.start_session(&dir, &["--env", "withsix@v1", "--idle-timeout", "0"]);
    let s = server.show(&id);
    assert_eq!(s["env_ref"], "withsix@v1");
    let packages: Value =
        serde_json::from_str(&server.ok(&["session", "packages", &id, "--json"])).unwrap();
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
    let _server = Server::start(home.path(), &[], &[]);
    assert!(
        !stale.exists(),
        "an empty session cgroup is removed when the server starts"
    );
}

#[test]
fn session_files_are_private_and_install_never_writes_through_a_symlink() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path(), &[], &[]);
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
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("requirements.txt"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
}
