//! Sessions on a real two-node Ray cluster: a head and a second node on loopback inside a network
//! namespace of the test's own (Ray binds to the machine's external interface otherwise), a
//! `flowrt server --backend ray` in it, a session as a Ray job, a flow test through it, and a
//! 2,000-line batch spread over both nodes (`run create --nodes 2`) during which the second node
//! is killed with SIGKILL: the batch completes, every line exactly once.
//!
//! The nodes share no disk with the server: each runs in a mount namespace of its own in which
//! the server's folder (its FLOWRT_HOME) is an empty tmpfs, and keeps its sessions under a
//! temporary folder of its own. Everything reaches them over the network.
//!
//! Needs root (for `ip netns`) and Ray: `./scripts/test.sh` installs it into a venv of its own
//! and names it in FLOWRT_TEST_RAY.

// A story test reads as one journey, top to bottom: exempt from the function-length lint.
#![allow(clippy::too_many_lines)]

mod common;

use common::flow;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const LINES: usize = 2000;
const WORKER_NODE_MANAGER_PORT: u16 = 6390;

/// A network namespace with its loopback up; everything in it is killed and it is deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Netns {
        let name = format!("flowrt-t{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        run_ok(Command::new("ip").args(["netns", "exec", &name, "ip", "link", "set", "lo", "up"]));
        Netns { name }
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    fn pids(&self) -> Vec<i32> {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    fn get(&self, url: &str) -> Option<Value> {
        let out = self
            .cmd("curl")
            .args(["-sf", "-m", "5", url])
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for _ in 0..3 {
            for pid in self.pids() {
                // SAFETY: kill(2) with a pid and a signal number has no memory-safety preconditions.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `ray start` in the namespace, head or worker, on ports that do not collide (both nodes share
/// the namespace's loopback).
/// The node runs in a mount namespace of its own where `hidden` (the server's folder) is an
/// empty tmpfs, with `node_tmp` as its temporary folder.
fn ray_start(ns: &Netns, venv: &Path, tmp: &Path, head: bool, hidden: &Path, node_tmp: &Path) {
    let ray = venv.join("bin/ray");
    let path = format!(
        "{}:{}",
        venv.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    std::fs::create_dir_all(node_tmp).unwrap();
    let mut c = ns.cmd("unshare");
    c.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -t tmpfs tmpfs "$1" && shift && exec setsid "$@""#)
        .arg("sh")
        .arg(hidden)
        .arg(&ray)
        .arg("start")
        .args(["--disable-usage-stats", "--node-ip-address=127.0.0.1"]);
    if head {
        c.args([
            "--head",
            "--port=6379",
            "--node-manager-port=6380",
            "--object-manager-port=6381",
            "--dashboard-host=127.0.0.1",
            "--dashboard-port=8265",
            "--dashboard-agent-listen-port=52365",
            "--dashboard-agent-grpc-port=6382",
            "--runtime-env-agent-port=6383",
            "--metrics-export-port=6384",
            "--ray-client-server-port=10001",
            "--min-worker-port=10002",
            "--max-worker-port=10999",
        ])
        .arg(format!("--temp-dir={}", tmp.display()));
    } else {
        c.args([
            "--address=127.0.0.1:6379",
            &format!("--node-manager-port={WORKER_NODE_MANAGER_PORT}"),
            "--object-manager-port=6391",
            "--dashboard-agent-listen-port=52366",
            "--dashboard-agent-grpc-port=6392",
            "--runtime-env-agent-port=6393",
            "--metrics-export-port=6394",
            "--min-worker-port=11000",
            "--max-worker-port=11999",
        ]);
    }
    // One CPU a node: each small session takes a node's CPU, so two land on two nodes.
    c.args(["--num-cpus=1", "--object-store-memory=200000000"])
        .env("PATH", path)
        .env("TMPDIR", node_tmp)
        .env("RAY_USAGE_STATS_ENABLED", "0")
        // A lost node is noticed in seconds, not the default half minute.
        .env("RAY_health_check_period_ms", "1000")
        .env("RAY_health_check_failure_threshold", "3")
        .env("RAY_health_check_timeout_ms", "1000")
        .stdin(Stdio::null());
    run_ok(&mut c);
}

fn alive_nodes(ns: &Netns) -> usize {
    ns.get("http://127.0.0.1:8265/api/v0/nodes")
        .and_then(|v| {
            v["data"]["result"]["result"]
                .as_array()
                .map(|nodes| nodes.iter().filter(|n| n["state"] == "ALIVE").count())
        })
        .unwrap_or(0)
}

/// Every process of the second node: its raylet's session (it was started under setsid) and
/// the raylet's descendants (job entrypoints run in sessions of their own).
fn worker_node_pids(ns: &Netns) -> Vec<i32> {
    let cmdline = |pid: i32| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default()
    };
    let stat_field = |pid: i32, i: usize| -> Option<i32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let after = stat.rsplit_once(") ")?.1;
        after.split_whitespace().nth(i)?.parse().ok()
    };
    let all = ns.pids();
    let port = format!("--node_manager_port={WORKER_NODE_MANAGER_PORT}");
    let Some(raylet) = all
        .iter()
        .copied()
        .find(|p| cmdline(*p).contains("raylet") && cmdline(*p).contains(&port))
    else {
        return Vec::new();
    };
    let sid = stat_field(raylet, 3); // session id: field 6 of stat, 4th after the name
    let mut out: Vec<i32> = all
        .iter()
        .copied()
        .filter(|p| stat_field(*p, 3) == sid)
        .collect();
    // Descendants of the raylet, by parent pid, to a fixed point.
    loop {
        let before = out.len();
        for p in &all {
            if !out.contains(p) && stat_field(*p, 1).is_some_and(|pp| out.contains(&pp)) {
                out.push(*p);
            }
        }
        if out.len() == before {
            break;
        }
    }
    out
}

struct Cli<'a> {
    ns: &'a Netns,
    home: PathBuf,
    url: String,
}

impl Cli<'_> {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.ns.cmd(env!("CARGO_BIN_EXE_flowrt"));
        c.args(args)
            .env("FLOWRT_HOME", &self.home)
            .env("FLOWRT_SERVER", &self.url);
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?} failed:\n{}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.home.join("server.log")).unwrap_or_default()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn status(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["session", "show", id, "--json"])).unwrap()
    }
}

/// The session folders on the nodes (each node's `TMPDIR/flowrt-node/flowrt-session-ID-XXXXXX`
/// under `nodes`), by session id.
fn node_session_dirs(nodes: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for node in std::fs::read_dir(nodes).into_iter().flatten().flatten() {
        for s in std::fs::read_dir(node.path().join("flowrt-node"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = s.file_name().to_string_lossy().into_owned();
            if let Some(rest) = name.strip_prefix("flowrt-session-") {
                if rest.len() > 7 {
                    out.push((rest[..rest.len() - 7].to_string(), s.path()));
                }
            }
        }
    }
    out
}

/// Completed line numbers in each session's chunk runs of `run`, read from the nodes' disks.
fn lines_by_session(nodes: &Path, run: &str) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (id, dir) in node_session_dirs(nodes) {
        let mut lines = Vec::new();
        for e in std::fs::read_dir(dir.join("chunks/runs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() && name.starts_with(&format!("{run}.c")) {
                let text =
                    std::fs::read_to_string(e.path().join("line_runs.jsonl")).unwrap_or_default();
                for l in text.lines() {
                    if let Ok(v) = serde_json::from_str::<Value>(l) {
                        if v["status"] == "Completed" {
                            lines.push(v["line_number"].as_u64().unwrap());
                        }
                    }
                }
            }
        }
        if !lines.is_empty() {
            out.entry(id).or_default().extend(lines);
        }
    }
    out
}

/// The owner's API call through curl in the namespace: (status, body).
fn owner_api(cli: &Cli, method: &str, path: &str, body: &str) -> (u16, Value) {
    let token = std::fs::read_to_string(cli.home.join("owner.token")).unwrap();
    let out = cli
        .ns
        .cmd("curl")
        .args([
            "-s",
            "-m",
            "30",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-X",
            method,
        ])
        .args(["-H", &format!("authorization: Bearer {}", token.trim())])
        .args(["-H", "content-type: application/json"])
        .args(["--data-binary", body])
        .arg(format!("{}{path}", cli.url))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// The Ray job of `session` as the cluster's job list shows it, once it is there.
fn job_of(ns: &Netns, session: &str) -> Value {
    let t = Instant::now();
    loop {
        if let Some(job) = ns.get("http://127.0.0.1:8265/api/jobs/").and_then(|jobs| {
            jobs.as_array()?
                .iter()
                .find(|j| j["metadata"]["flowrt_session"] == session)
                .cloned()
        }) {
            return job;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no Ray job for {session}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Issue 19's Ray attack. A victim's session waits for its agent: its job cannot be placed
/// (a medium session needs two CPUs, the nodes have one), so the join stays open. The job list
/// shows nothing usable: no secret in its environment. An attacker's sealed session cannot reach
/// the cluster's control ports at all (it could not read that list), and given everything the
/// list shows it still cannot join as the victim's agent: every try is a 401 without
/// connections, and the server never dials the address it named.
fn attack_a_pending_join(ns: &Netns, cli: &Cli, dir: &Path) {
    let (status, started) = owner_api(
        cli,
        "POST",
        "/api/v1/sessions",
        r#"{"flow": "slow_double", "size": "medium"}"#,
    );
    assert_eq!(status, 202, "{started:#}");
    let victim = started["id"].as_str().unwrap().to_string();
    let job = job_of(ns, &victim);
    let env = job["runtime_env"]["env_vars"].clone();
    let hex64 = |v: &Value| {
        v.as_str()
            .is_some_and(|s| s.len() >= 32 && s.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    assert!(
        env.as_object().unwrap().values().all(|v| !hex64(v))
            && !job["entrypoint"].as_str().unwrap_or("").contains("token"),
        "the job list shows a secret: {job:#}"
    );

    let (_attack_dir, attack_flow) = flow("ray_attack");
    let attacker = cli
        .ok(&["session", "start", "--flow", attack_flow.to_str().unwrap()])
        .trim()
        .lines()
        .last()
        .unwrap()
        .to_string();
    std::fs::create_dir_all(dir).unwrap();
    let probe = serde_json::json!({"probe": {
        "victim": victim,
        "job_env": env,
        "join_url": format!("{}/api/v1/agents/join", cli.url),
        // The dashboard, GCS, the head's raylet and dashboard agent, Ray Client.
        "control_ports": [8265, 6379, 6380, 52365, 10001],
        "server_port": 7878,
    }});
    let inputs = dir.join("probe.json");
    std::fs::write(&inputs, probe.to_string()).unwrap();
    let out = cli.ok(&[
        "flow",
        "test",
        attack_flow.to_str().unwrap(),
        "--session",
        &attacker,
        "--inputs-file",
        inputs.to_str().unwrap(),
    ]);
    let start = out.find('{').unwrap_or(0);
    let result: Value =
        serde_json::from_str(&out[start..]).unwrap_or_else(|e| panic!("{e}: {out}"));
    let report = &result["report"];
    for (port, what) in report["ports"].as_object().unwrap() {
        assert!(
            what.as_str().unwrap().contains("errno 13"),
            "port {port} of the cluster was reachable from a session: {report:#}"
        );
    }
    assert_eq!(report["server"], "connected", "{report:#}");
    let joins = report["joins"].as_array().unwrap();
    assert!(joins.len() >= 2, "{report:#}");
    for j in joins {
        assert_eq!(j[0], 401, "{report:#}");
        assert!(
            !j[1].as_str().unwrap().contains("connections"),
            "{report:#}"
        );
    }
    assert_eq!(report["dialled"], false, "{report:#}");
    let log = std::fs::read_to_string(cli.home.join("server.log")).unwrap_or_default();
    assert!(
        log.contains(&format!("refused a join for session \"{victim}\"")),
        "{log}"
    );

    // The victim's session is still waiting for its own agent. Deleting it ends the wait at
    // once (not after the start's three minutes) and stops its job; nothing of it ever ran.
    assert_eq!(cli.status(&victim)["status"], "Preparing");
    let t = Instant::now();
    cli.ok(&["session", "delete", &victim]);
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    // Ray leaves a job it never placed PENDING when asked to stop it; it never ran.
    let id = job["submission_id"].as_str().unwrap().to_string();
    let status = ns
        .get(&format!("http://127.0.0.1:8265/api/jobs/{id}"))
        .map(|j| j["status"].clone())
        .unwrap_or(Value::Null);
    assert!(
        ["PENDING", "STOPPED", "FAILED"].contains(&status.as_str().unwrap_or("")),
        "job {id} is {status}"
    );
    // The attacker's node goes back to the batch below.
    cli.ok(&["session", "delete", &attacker]);
}

/// The server uploads its own binary to the cluster, where each node unpacks it. The debug
/// build's debug info is most of it (228 MB; 63 MB without): the server runs from a copy
/// without it, which uploads and unpacks in a fraction of the time and runs the same code.
fn lean_binary(dir: &Path) -> PathBuf {
    let lean = dir.join("flowrt");
    let stripped = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&lean)
        .arg(env!("CARGO_BIN_EXE_flowrt"))
        .status();
    if matches!(stripped, Ok(s) if s.success()) {
        lean
    } else {
        eprintln!("strip is not available: the server uploads the whole debug binary");
        PathBuf::from(env!("CARGO_BIN_EXE_flowrt"))
    }
}

#[test]
fn sessions_and_a_spread_batch_run_on_a_two_node_ray_cluster_that_loses_a_node() {
    let venv = match std::env::var("FLOWRT_TEST_RAY") {
        Ok(v) if !v.is_empty() => PathBuf::from(v),
        _ if std::env::var_os("CI").is_some() => {
            panic!("FLOWRT_TEST_RAY is not set; run the tests with ./scripts/test.sh, which installs Ray")
        }
        _ => {
            eprintln!("skipped: FLOWRT_TEST_RAY (a venv with ray[default]) is not set");
            return;
        }
    };
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var_os("CI").is_none(),
            "the Ray test needs root for its network namespace"
        );
        eprintln!("skipped: the Ray test needs root for its network namespace");
        return;
    }
    let ns = Netns::new();
    let scratch = tempfile::tempdir().unwrap();
    let ray_tmp = PathBuf::from(format!("/tmp/ray-flowrt-t{}", std::process::id()));
    // The server's folder, which the nodes cannot see, and each node's own temporary folder.
    let server_dir = scratch.path().join("server");
    let nodes = scratch.path().join("nodes");
    std::fs::create_dir_all(&server_dir).unwrap();
    let t = Instant::now();
    ray_start(&ns, &venv, &ray_tmp, true, &server_dir, &nodes.join("head"));
    ray_start(
        &ns,
        &venv,
        &ray_tmp,
        false,
        &server_dir,
        &nodes.join("worker"),
    );
    while alive_nodes(&ns) < 2 || ns.get("http://127.0.0.1:8265/api/jobs/").is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the Ray cluster did not come up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "ray cluster of two nodes up in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let home = server_dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let log = std::fs::File::create(home.join("server.log")).unwrap();
    let mut server = ns
        .cmd(lean_binary(&server_dir).to_str().unwrap())
        .args(["server", "--addr", "127.0.0.1:7878", "--backend", "ray"])
        .args([
            "--ray-address",
            "http://127.0.0.1:8265",
            "--lease-seconds",
            "3",
        ])
        .env("FLOWRT_HOME", &home)
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let cli = Cli {
        ns: &ns,
        home: home.clone(),
        url: "http://127.0.0.1:7878".into(),
    };
    let t = Instant::now();
    while ns.get("http://127.0.0.1:7878/healthz").is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "server did not start: {}",
            std::fs::read_to_string(home.join("server.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let (_flow_dir, flow_path) = flow("slow_double");
    // The batch must outlast the second session's start and the node's loss: 20 ms a line.
    let tool = flow_path.join("double.py");
    let code = std::fs::read_to_string(&tool)
        .unwrap()
        .replace("time.sleep(0.005)", "time.sleep(0.02)");
    std::fs::write(&tool, code).unwrap();
    let flow = flow_path.to_str().unwrap();
    let t = Instant::now();
    let a = cli
        .ok(&["session", "start", "--flow", flow])
        .trim()
        .lines()
        .last()
        .unwrap()
        .to_string();
    let shown = cli.status(&a);
    assert_eq!(shown["status"], "Running", "{shown:#}");
    eprintln!(
        "first session on Ray (flowrt uploaded, environment built) in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let out = cli.ok(&["flow", "test", flow, "--session", &a, "--inputs", "x=21"]);
    assert!(out.contains("42"), "{out}");
    // The session's agent sees none of the server's folder: it received its flow when it
    // joined and keeps it, its environment and its log on its node.
    let agent_pid = ns
        .pids()
        .into_iter()
        .find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).contains(&format!("agent\0--session-id\0{a}")))
                .unwrap_or(false)
        })
        .expect("the session's agent runs in the namespace");
    assert!(home.join("owner.token").exists());
    assert!(
        !Path::new(&format!("/proc/{agent_pid}/root"))
            .join(home.strip_prefix("/").unwrap())
            .join("owner.token")
            .exists(),
        "the agent's node sees the server's folder"
    );
    let server_side = home.join("sessions").join(&a);
    for name in ["flow", "agent.log", "agent.token"] {
        assert!(
            !server_side.join(name).exists(),
            "the server's folder holds the session's {name}"
        );
    }
    let on_node = node_session_dirs(&nodes);
    let (_, node_dir) = on_node
        .iter()
        .find(|(id, _)| *id == a)
        .expect("the session's folder is on its node");
    assert!(node_dir.join("flow/flow.dag.yaml").is_file());
    // The lifecycle works as on the local backend: logs and packages here, reset and stop below.
    let logs = cli.ok(&["session", "logs", &a]);
    assert!(logs.contains("joined its server"), "{logs}");
    assert!(logs.contains("received flow sha256:"), "{logs}");
    assert!(
        logs.contains("connections to the cluster's") && logs.contains("control ports are refused"),
        "{logs}"
    );
    attack_a_pending_join(&ns, &cli, &scratch.path().join("attack"));
    let packages = cli.ok(&["session", "packages", &a]);
    // The environment flowrt built for the session, pip in it.
    assert!(
        packages
            .lines()
            .any(|l| l.split_whitespace().next() == Some("pip")),
        "{packages}"
    );

    let data = scratch.path().join("lines.jsonl");
    let rows: String = (0..LINES).map(|i| format!("{{\"x\": {i}}}\n")).collect();
    std::fs::write(&data, rows).unwrap();
    let started = Instant::now();
    let client = cli
        .cmd(&["run", "create", "--session", &a, "--nodes", "2"])
        .args([
            "--data",
            data.to_str().unwrap(),
            "--name",
            "big",
            "--concurrency",
            "8",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the second session has finished a chunk on the second node, that node dies.
    let second = loop {
        let by_session = lines_by_session(&nodes, "big");
        if let Some((id, _)) = by_session.iter().find(|(id, l)| **id != a && !l.is_empty()) {
            break id.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the second session ran no chunk: {}",
            std::fs::read_to_string(home.join("server.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let jobs = ns.get("http://127.0.0.1:8265/api/jobs/").unwrap();
    let node_of = |session: &str| -> String {
        jobs.as_array()
            .unwrap()
            .iter()
            .find(|j| j["metadata"]["flowrt_session"] == session && j["status"] == "RUNNING")
            .and_then(|j| j["driver_node_id"].as_str())
            .unwrap_or("")
            .to_string()
    };
    let (node_a, node_b) = (node_of(&a), node_of(&second));
    assert!(
        !node_a.is_empty() && !node_b.is_empty() && node_a != node_b,
        "the two sessions run on two nodes: {node_a} and {node_b}"
    );
    // The second node dies: whichever of the two sessions Ray put there.
    let worker_node = ns
        .get("http://127.0.0.1:8265/api/v0/nodes")
        .and_then(|v| {
            v["data"]["result"]["result"].as_array().and_then(|nodes| {
                nodes
                    .iter()
                    .find(|n| n["is_head_node"] == false)
                    .and_then(|n| n["node_id"].as_str().map(str::to_string))
            })
        })
        .unwrap_or_default();
    let (lost, survivor) = if node_a == worker_node {
        (a.clone(), second.clone())
    } else {
        (second.clone(), a.clone())
    };
    let victims = worker_node_pids(&ns);
    assert!(
        !victims.is_empty(),
        "the second node's processes were found"
    );
    for pid in &victims {
        // SAFETY: kill(2) with a pid and a signal number has no memory-safety preconditions.
        unsafe {
            libc::kill(*pid, libc::SIGKILL);
        }
    }
    let killed_at = started.elapsed();
    let out = client.wait_with_output().unwrap();
    let elapsed = started.elapsed();
    let server_log = std::fs::read_to_string(home.join("server.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "the run did not complete:\n{}\n{}\nserver log:\n{server_log}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["status"], "Completed", "{record:#}");
    assert_eq!(record["completed_lines"], LINES, "{record:#}");
    // The session on the lost node fails with Ray's reason (once Ray has noticed the node is
    // gone, which may be after the run has finished on the other).
    let t = Instant::now();
    let shown = loop {
        let shown = cli.status(&lost);
        if shown["status"] == "Failed" || t.elapsed() > Duration::from_secs(90) {
            break shown;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(shown["status"], "Failed", "{shown:#}");
    assert!(
        shown["reason"].as_str().unwrap_or("").contains("Ray job"),
        "{shown:#}"
    );

    // The run is the workspace's, wherever it was gathered.
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
    // Lines ran on both nodes, and each to its end once.
    let by_session = lines_by_session(&nodes, "big");
    let mut count: BTreeMap<u64, u32> = BTreeMap::new();
    for l in by_session.values().flatten() {
        *count.entry(*l).or_default() += 1;
    }
    let on_a = by_session.get(&a).map_or(0, Vec::len);
    let on_b = by_session.get(&second).map_or(0, Vec::len);
    assert!(
        on_a > 0 && on_b > 0,
        "{on_a} lines on {node_a}, {on_b} on {node_b}"
    );
    assert_eq!(count.len(), LINES, "every line ran");
    // The nodes share no disk with the server: a line the lost node finished but had not yet
    // sent (its last moments) runs again elsewhere, and is recorded once (the outputs above).
    // Nothing else runs twice.
    let twice: Vec<u64> = count
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(l, _)| *l)
        .collect();
    let lost_lines = by_session.get(&lost).cloned().unwrap_or_default();
    assert!(
        twice.iter().all(|l| lost_lines.contains(l)) && twice.len() <= 50,
        "lines run more than once beyond the lost node's unsent ones: {twice:?}"
    );
    eprintln!(
        "{LINES} lines in {:.1} s over two Ray nodes, the second killed at {:.1} s: {on_a} in the run's session, {on_b} in the one --nodes started; {lost} was on the lost node; {} lines it finished but had not sent ran again",
        elapsed.as_secs_f64(),
        killed_at.as_secs_f64(),
        twice.len()
    );
    // Reset: a new job, started in about a second now that flowrt and the environment are
    // cached; then stop, which ends the job.
    let t = Instant::now();
    cli.ok(&["session", "reset", &survivor]);
    loop {
        let s = cli.status(&survivor);
        if s["status"] == "Running" {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "reset did not finish: {s:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "session reset on Ray (cached) in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let out = cli.ok(&[
        "flow",
        "test",
        flow,
        "--session",
        &survivor,
        "--inputs",
        "x=4",
    ]);
    assert!(out.contains('8'), "{out}");
    let a = survivor;
    cli.ok(&["session", "stop", &a]);
    assert_eq!(cli.status(&a)["status"], "Stopped");
    let t = Instant::now();
    loop {
        let jobs = ns.get("http://127.0.0.1:8265/api/jobs/").unwrap();
        let running = jobs
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["metadata"]["flowrt_session"] == a.as_str() && j["status"] == "RUNNING");
        if !running {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the stopped session's job still runs"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    deploy_on_ray(&ns, &cli, flow);
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&ray_tmp);
}

/// Issue 23 on Ray: a deployment's instance is a session, so on a Ray server it is a Ray job
/// like any other (here on the node left); it answers scores with the endpoint's key, and
/// deleting the endpoint ends its job.
fn deploy_on_ray(ns: &Netns, cli: &Cli, flow: &str) {
    cli.ok(&["flow", "push", flow, "--name", "double"]);
    let created: Value =
        serde_json::from_str(&cli.ok(&["endpoint", "create", "doubler", "--json"])).unwrap();
    let key = created["keys"]["primary"].as_str().unwrap().to_string();
    let t = Instant::now();
    cli.ok(&[
        "deployment",
        "create",
        "doubler/blue",
        "--flow",
        "double@v1",
    ]);
    eprintln!(
        "deployment on Ray ready in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let shown: Value =
        serde_json::from_str(&cli.ok(&["deployment", "show", "doubler/blue", "--json"])).unwrap();
    let session = shown["replicas"][0]["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(job_of(ns, &session)["status"], "RUNNING");
    let out = ns
        .cmd("curl")
        .args(["-s", "-m", "30", "-w", "\n%{http_code}"])
        .args(["-H", &format!("authorization: Bearer {key}")])
        .args(["-H", "content-type: application/json"])
        .args(["--data-binary", r#"{"x": 21}"#])
        .arg(format!("{}/endpoints/doubler/score", cli.url))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(text.trim(), "{\"y\": 42}\n200", "{text}");
    cli.ok(&["endpoint", "delete", "doubler"]);
    let t = Instant::now();
    while job_of(ns, &session)["status"] == "RUNNING" {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the deleted endpoint's instance still runs on Ray"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
