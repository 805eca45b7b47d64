//! Two `flowrt server`s on one PostgreSQL database and one FLOWRT_HOME, as a team runs them when
//! one server is not enough: both serve the API, a 2,000-line batch is spread over a session on
//! each, and killing one server with SIGKILL mid-run leaves the other to finish it — every line
//! run exactly once, none lost.

mod common;

use common::{flow, free_port, fresh_postgres, http};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const LINES: usize = 2000;

struct Server {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Server {
    fn start(home: &Path, database: &str, name: &str) -> Server {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let log = home.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_flowrt"))
            .args(["server", "--addr", &addr, "--database", database])
            .args(["--server-id", name, "--lease-seconds", "2"])
            .env("FLOWRT_HOME", home)
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap();
        let url = format!("http://{addr}");
        let t = Instant::now();
        while std::net::TcpStream::connect(&addr).is_err()
            || http("GET", &format!("{url}/healthz"), &[], "").0 != 200
        {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "server {name} did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Server { child, url, log }
    }

    fn cli(&self, home: &Path, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_flowrt"))
            .args(args)
            .env("FLOWRT_HOME", home)
            .env("FLOWRT_SERVER", &self.url)
            .output()
            .unwrap()
    }

    fn ok(&self, home: &Path, args: &[&str]) -> String {
        let out = self.cli(home, args);
        assert!(
            out.status.success(),
            "{args:?} failed:\n{}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL: no shutdown, no lease handed back
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn wait_running(server: &Server, home: &Path, id: &str) {
    let t = Instant::now();
    loop {
        let s: Value =
            serde_json::from_str(&server.ok(home, &["session", "show", id, "--json"])).unwrap();
        if s["status"] == "Running" {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "session {id} did not start: {s:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Line numbers and how often each ran to its end, over every chunk run of `run` in `session`.
fn executed(home: &Path, session: &str, run: &str, into: &mut BTreeMap<u64, u32>) -> usize {
    let dir = home.join("sessions").join(session).join("chunks/runs");
    let mut lines = 0;
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !(e.path().is_dir() && name.starts_with(&format!("{run}.c"))) {
            continue;
        }
        let text = std::fs::read_to_string(e.path().join("line_runs.jsonl")).unwrap_or_default();
        for l in text.lines() {
            let v: Value = serde_json::from_str(l).unwrap();
            if v["status"] == "Completed" {
                *into.entry(v["line_number"].as_u64().unwrap()).or_default() += 1;
                lines += 1;
            }
        }
    }
    lines
}

/// The chunks of `run` completed in session `session`'s folder.
fn chunks_completed(home: &Path, session: &str, run: &str) -> usize {
    let mut n = 0;
    for s in std::fs::read_dir(home.join("sessions"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|s| s.file_name().to_string_lossy() == session)
    {
        for e in std::fs::read_dir(s.path().join("chunks/runs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("{run}.c")) && name.ends_with(".json") {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                if text.contains("\"Completed\"") {
                    n += 1;
                }
            }
        }
    }
    n
}

#[test]
fn two_servers_share_a_batch_and_one_finishes_it_when_the_other_is_killed() {
    let Some(database) = fresh_postgres() else {
        eprintln!("skipped: FLOWRT_TEST_POSTGRES is not set (./scripts/test.sh sets it)");
        return;
    };
    let home_dir = tempfile::tempdir().unwrap();
    let home = home_dir.path();
    let (_flow_dir, flow_path) = flow("slow_double");
    let mut first = Server::start(home, &database, "first");
    let second = Server::start(home, &database, "second");
    let flow = flow_path.to_str().unwrap();
    let a = first
        .ok(home, &["session", "start", "--flow", flow])
        .trim()
        .lines()
        .last()
        .unwrap()
        .to_string();
    let b = second
        .ok(home, &["session", "start", "--flow", flow])
        .trim()
        .lines()
        .last()
        .unwrap()
        .to_string();
    wait_running(&first, home, &a);
    wait_running(&second, home, &b);
    // Both serve the API for every session: a test line in the first server's session,
    // through the second server.
    let out = second.ok(
        home,
        &["flow", "test", flow, "--session", &a, "--inputs", "x=21"],
    );
    assert!(out.contains("42"), "{out}");
    let listed = first.ok(home, &["session", "list"]);
    assert!(listed.contains(&a) && listed.contains(&b), "{listed}");
    // A lifecycle request for a session another live server manages is refused, saying where
    // to send it; the session runs on.
    let out = second.cli(home, &["session", "reset", &a]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("session '{a}' is managed by server 'first'")),
        "{err}"
    );
    wait_running(&first, home, &a);

    let data = home.join("lines.jsonl");
    let rows: String = (0..LINES).map(|i| format!("{{\"x\": {i}}}\n")).collect();
    std::fs::write(&data, rows).unwrap();
    let started = Instant::now();
    let client = Command::new(env!("CARGO_BIN_EXE_flowrt"))
        .args(["run", "create", "--session", &a, "--also-on", &b])
        .args(["--data", data.to_str().unwrap(), "--name", "big"])
        .env("FLOWRT_HOME", home)
        .env("FLOWRT_SERVER", &second.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Mid-run: once the first server's session has finished a chunk (so it is working, with
    // more to claim), the first server dies without a word.
    while chunks_completed(home, &a, "big") == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no chunk completed: {}",
            std::fs::read_to_string(&second.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    first.kill();
    let out = client.wait_with_output().unwrap();
    let elapsed = started.elapsed();
    assert!(
        out.status.success(),
        "the run did not complete:\n{}\n{}\nsecond server:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&second.log).unwrap_or_default()
    );
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["status"], "Completed", "{record:#}");
    assert_eq!(record["completed_lines"], LINES, "{record:#}");
    let log = std::fs::read_to_string(&second.log).unwrap();
    assert!(
        log.contains(&format!("taking over session {a}")),
        "the second server took over the first one's session:\n{log}"
    );

    // The run's outputs: every line once, in order, right.
    // The run's outputs, as the workspace keeps them.
    let outputs =
        std::fs::read_to_string(home.join("workspace/runs/big/flow_outputs/output.jsonl")).unwrap();
    let outputs: Vec<Value> = outputs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(outputs.len(), LINES);
    for (i, o) in outputs.iter().enumerate() {
        assert_eq!(o["line_number"], i, "{o}");
        assert_eq!(o["y"], 2 * i, "{o}");
    }
    // Where the lines ran: on both sessions, each line to its end exactly once.
    let mut runs = BTreeMap::new();
    let on_a = executed(home, &a, "big", &mut runs);
    let on_b = executed(home, &b, "big", &mut runs);
    assert!(on_a > 0 && on_b > 0, "lines on {a}: {on_a}, on {b}: {on_b}");
    assert_eq!(runs.len(), LINES, "every line ran");
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "lines run more than once: {twice:?}");
    eprintln!(
        "{LINES} lines in {:.1} s over two servers (one killed mid-run): {on_a} in {a}, {on_b} in {b}",
        elapsed.as_secs_f64()
    );
    // The run is seen through the survivor like any other.
    let shown = second.ok(home, &["run", "show", "big"]);
    assert!(shown.contains("Completed"), "{shown}");
    for id in [&a, &b] {
        second.ok(home, &["session", "stop", id]);
    }
}
