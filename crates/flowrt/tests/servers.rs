//! Two `flowrt server`s on one PostgreSQL database and one FLOWRT_HOME, as a team runs them when
//! one server is not enough: both serve the API, a 2,000-line batch is spread over a session on
//! each, and killing one server with SIGKILL mid-run leaves the other to finish it — every line
//! run exactly once, none lost.

// A story test reads as one journey, top to bottom: exempt from the function-length lint.
#![allow(clippy::too_many_lines)]

mod common;

use common::server::Server;
use common::{flow, fresh_postgres, http};
use serde_json::Value;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const LINES: usize = 2000;

/// One of the servers on `database` sharing `home`: server id `name`, leases of 2 s, its log
/// in `NAME.log` of the home.
fn start(home: &Path, database: &str, name: &str) -> Server {
    Server::builder()
        .home(home)
        .database(database)
        .idle_check(None)
        .args(&["--server-id", name, "--lease-seconds", "2"])
        .log(&home.join(format!("{name}.log")))
        .try_start()
        .unwrap_or_else(|log| panic!("server {name} exited: {log}"))
}

fn wait_running(server: &Server, id: &str) {
    let t = Instant::now();
    loop {
        let s: Value =
            serde_json::from_str(&server.ok(&["session", "show", id, "--json"]).stdout).unwrap();
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

/// Once session `a` (managed by `victim`, its folder under `a_home`) has finished a chunk of the
/// spread run `big` (so it is working, with more to claim), SIGKILL `victim`; the run's client
/// must then see `survivor` finish it, taking `a` over. The run's final record.
fn kill_mid_run(
    victim: &mut Server,
    a_home: &Path,
    a: &str,
    client: Child,
    survivor: &Server,
) -> Value {
    let started = Instant::now();
    while chunks_completed(a_home, a, "big") == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no chunk completed: {}",
            survivor.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    victim.kill();
    let out = client.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the run did not complete:\n{}\n{}\nsurviving server:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        survivor.log()
    );
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["status"], "Completed", "{record:#}");
    assert_eq!(record["completed_lines"], LINES, "{record:#}");
    let log = survivor.log();
    assert!(
        log.contains(&format!("taking over session {a}")),
        "the surviving server took over the dead one's session:\n{log}"
    );
    record
}

/// Where the lines of run `big` ran: on both sessions (each `(home, session)`), each line to its
/// end exactly once. How many ran on each.
fn each_line_ran_once(a: (&Path, &str), b: (&Path, &str)) -> (usize, usize) {
    let mut runs = BTreeMap::new();
    let on_a = executed(a.0, a.1, "big", &mut runs);
    let on_b = executed(b.0, b.1, "big", &mut runs);
    assert!(
        on_a > 0 && on_b > 0,
        "lines on {}: {on_a}, on {}: {on_b}",
        a.1,
        b.1
    );
    assert_eq!(runs.len(), LINES, "every line ran");
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "lines run more than once: {twice:?}");
    (on_a, on_b)
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
    let mut first = start(home, &database, "first");
    let second = start(home, &database, "second");
    let flow = flow_path.to_str().unwrap();
    let a = first
        .ok(&["session", "start", "--flow", flow])
        .stdout
        .trim()
        .lines()
        .last()
        .unwrap()
        .to_string();
    let b = second
        .ok(&["session", "start", "--flow", flow])
        .stdout
        .trim()
        .lines()
        .last()
        .unwrap()
        .to_string();
    wait_running(&first, &a);
    wait_running(&second, &b);
    // Both serve the API for every session: a test line in the first server's session,
    // through the second server.
    let out = second
        .ok(&["flow", "test", flow, "--session", &a, "--inputs", "x=21"])
        .stdout;
    assert!(out.contains("42"), "{out}");
    let listed = first.ok(&["session", "list"]).stdout;
    assert!(listed.contains(&a) && listed.contains(&b), "{listed}");
    // A lifecycle request for a session another live server manages is refused, saying where
    // to send it; the session runs on.
    let out = second.cli(&["session", "reset", &a]);
    let err = &out.stderr;
    assert!(out.code != 0, "{err}");
    assert!(
        err.contains(&format!("session '{a}' is managed by server 'first'")),
        "{err}"
    );
    wait_running(&first, &a);

    let data = home.join("lines.jsonl");
    let rows: String = (0..LINES).map(|i| format!("{{\"x\": {i}}}\n")).collect();
    std::fs::write(&data, rows).unwrap();
    let started = Instant::now();
    let client = second
        .cmd(&["run", "create", "--session", &a, "--also-on", &b])
        .args(["--data", data.to_str().unwrap(), "--name", "big"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Mid-run, the first server dies without a word.
    kill_mid_run(&mut first, home, &a, client, &second);
    let elapsed = started.elapsed();

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
    let (on_a, on_b) = each_line_ran_once((home, &a), (home, &b));
    eprintln!(
        "{LINES} lines in {:.1} s over two servers (one killed mid-run): {on_a} in {a}, {on_b} in {b}",
        elapsed.as_secs_f64()
    );
    // The run is seen through the survivor like any other.
    let shown = second.ok(&["run", "show", "big"]).stdout;
    assert!(shown.contains("Completed"), "{shown}");
    for id in [&a, &b] {
        second.ok(&["session", "stop", id]);
    }
}

/// A 32-byte secret key file (mode 0600) filled with `byte`, as an operator provides one.
fn operator_key(root: &Path, name: &str, byte: u8) -> PathBuf {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = root.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    f.write_all(&[byte; 32]).unwrap();
    path
}

/// A server on `home` that sees none of `hidden` (each an empty tmpfs in a mount namespace of its
/// own, when this test runs as root; else in plain folders that share nothing but the database).
fn start_private(
    home: &Path,
    hidden: &[&Path],
    database: &str,
    name: &str,
    key: &Path,
    blobs: &str,
) -> Result<Server, String> {
    std::fs::create_dir_all(home).unwrap();
    let mut server = Server::builder()
        .home(home)
        .database(database)
        .idle_check(None)
        .args(&[
            "--server-id",
            name,
            "--lease-seconds",
            "2",
            "--blobs",
            blobs,
        ])
        .arg("--secret-key-file")
        .arg(key)
        .log(&home.with_extension(format!("{name}.log")));
    if nix::unistd::Uid::effective().is_root() {
        let mounts: String = (0..hidden.len())
            .map(|i| format!("mount -t tmpfs tmpfs \"${}\" && ", i + 1))
            .collect();
        let script = format!("{mounts}shift {} && exec \"$@\"", hidden.len());
        let mut launcher: Vec<OsString> = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        launcher.extend(hidden.iter().map(|h| h.as_os_str().to_owned()));
        server = server.launcher(launcher);
    }
    server.try_start()
}

/// Issue 18: servers that share only PostgreSQL (`--blobs database`), each with a private
/// FLOWRT_HOME the others cannot see. A flow pushed and a connection made through one are used
/// through the other; a 2,000-line batch spread over a session on each survives the SIGKILL of
/// one server mid-run, every line once; then a third server, started afterwards on an empty home,
/// reads the run, its lines and log, runs an evaluation over it, and keeps every record after
/// both sessions are deleted. A server whose secret key is not the database's is refused.
#[test]
fn servers_sharing_only_postgres_keep_every_record_when_one_dies() {
    let Some(database) = fresh_postgres() else {
        eprintln!("skipped: FLOWRT_TEST_POSTGRES is not set (./scripts/test.sh sets it)");
        return;
    };
    let root_dir = tempfile::tempdir().unwrap();
    let root = root_dir.path();
    let (home_a, home_b, home_c, client) = (
        root.join("a"),
        root.join("b"),
        root.join("c"),
        root.join("client"),
    );
    for d in [&home_a, &home_b, &home_c, &client] {
        std::fs::create_dir_all(d).unwrap();
    }
    // The operator's key, outside every home.
    let key = operator_key(root, "secret.key", 7);
    let mut first = start_private(
        &home_a,
        &[&home_b, &home_c, &client],
        &database,
        "first",
        &key,
        "database",
    )
    .expect("the first server starts");
    let second = start_private(
        &home_b,
        &[&home_a, &home_c, &client],
        &database,
        "second",
        &key,
        "database",
    )
    .expect("the second server starts");
    // A server with another key is refused before it serves, saying why.
    let other_key = operator_key(root, "other.key", 9);
    let refused = start_private(
        &root.join("d"),
        &[&home_a],
        &database,
        "d",
        &other_key,
        "database",
    )
    .err()
    .expect("a server with another key is refused");
    assert!(refused.contains("fingerprint"), "{refused}");
    // So is one that would keep the files in its own folder.
    let refused = start_private(&root.join("e"), &[&home_a], &database, "e", &key, "folder")
        .err()
        .expect("a server keeping its own files is refused");
    assert!(refused.contains("--blobs database too"), "{refused}");

    let token = std::fs::read_to_string(home_a.join("owner.token"))
        .unwrap()
        .trim()
        .to_string();
    let cli = |server: &Server, args: &[&str]| -> Output {
        Command::new(env!("CARGO_BIN_EXE_flowrt"))
            .args(args)
            .env("FLOWRT_HOME", &client)
            .env("FLOWRT_SERVER", &server.url)
            .env("FLOWRT_TOKEN", &token)
            .output()
            .unwrap()
    };
    let ok = |server: &Server, args: &[&str]| -> String {
        let out = cli(server, args);
        assert!(
            out.status.success(),
            "{args:?} failed:\n{}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            server.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let session_of = |server: &Server| -> String {
        let id = ok(server, &["session", "start", "--flow", "sd"])
            .trim()
            .lines()
            .last()
            .unwrap()
            .to_string();
        let t = Instant::now();
        loop {
            let s: Value =
                serde_json::from_str(&ok(server, &["session", "show", &id, "--json"])).unwrap();
            if s["status"] == "Running" {
                return id;
            }
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "session {id} did not start: {s:#}\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    // Pushed through the first, started through both.
    let (_flow_dir, flow_path) = flow("slow_double");
    ok(
        &first,
        &["flow", "push", flow_path.to_str().unwrap(), "--name", "sd"],
    );
    let conn = client.join("conn.yaml");
    std::fs::write(
        &conn,
        "name: shared_conn\ntype: custom\nconfigs:\n  region: eu\nsecrets:\n  api_key: s3cret-value\n",
    )
    .unwrap();
    ok(
        &first,
        &[
            "connection",
            "create",
            "--file",
            conn.to_str().unwrap(),
            "--workspace",
        ],
    );
    let shown = ok(
        &second,
        &["connection", "show", "shared_conn", "--workspace"],
    );
    assert!(shown.contains("eu") && !shown.contains("s3cret"), "{shown}");
    let a = session_of(&first);
    let b = session_of(&second);

    let data = client.join("lines.jsonl");
    let rows: String = (0..LINES).map(|i| format!("{{\"x\": {i}}}\n")).collect();
    std::fs::write(&data, rows).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_flowrt"))
        .args(["run", "create", "--session", &a, "--also-on", &b])
        .args(["--data", data.to_str().unwrap(), "--name", "big"])
        .env("FLOWRT_HOME", &client)
        .env("FLOWRT_SERVER", &second.url)
        .env("FLOWRT_TOKEN", &token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Mid-run, the first server dies; the second finishes the run, every line once.
    kill_mid_run(&mut first, &home_a, &a, run, &second);
    each_line_ran_once((&home_a, &a), (&home_b, &b));

    // A third server, on an empty home, started now: the run is the workspace's.
    let third = start_private(
        &home_c,
        &[&home_a, &home_b, &client],
        &database,
        "third",
        &key,
        "database",
    )
    .expect("the third server starts");
    let auth = format!("Bearer {token}");
    let page = |server: &Server, run: &str| -> Value {
        let r = http::request(
            "GET",
            &format!("{}/api/v1/runs/{run}/lines?limit=10000", server.url),
            &[("authorization", &auth)],
            "",
        );
        assert_eq!(r.status, 200, "{}", r.text);
        serde_json::from_str(&r.text).unwrap()
    };
    let lines = |server: &Server, run: &str| -> Vec<Value> {
        page(server, run)["lines"].as_array().unwrap().clone()
    };
    let big = lines(&third, "big");
    assert_eq!(big.len(), LINES);
    for (i, l) in big.iter().enumerate() {
        assert_eq!(l["line_number"], i, "{l}");
        assert_eq!(l["outputs"]["y"], 2 * i, "{l}");
    }
    let r = http::request(
        "GET",
        &format!("{}/api/v1/runs/big/logs", third.url),
        &[("authorization", &auth)],
        "",
    );
    let (status, log) = (r.status, r.text);
    assert_eq!(status, 200, "{log}");
    assert!(!log.trim().is_empty());
    // An evaluation over it, through the third server, in the second server's session.
    let eval = ok(
        &third,
        &[
            "run",
            "create",
            "--session",
            &b,
            "--run",
            "big",
            "--column-mapping",
            "x=${run.outputs.y}",
            "--name",
            "big-eval",
            "--data",
            data.to_str().unwrap(),
        ],
    );
    let eval: Value = serde_json::from_str(&eval).unwrap();
    assert_eq!(eval["completed_lines"], LINES, "{eval:#}");
    let evaluated = lines(&third, "big-eval");
    assert_eq!(evaluated[7]["outputs"]["y"], 28, "{}", evaluated[7]);
    // Sessions go (through the server that manages both now); every record stays, read
    // through either live server.
    for id in [&a, &b] {
        ok(&second, &["session", "delete", id]);
    }
    for (label, server) in [("second", &second), ("third", &third)] {
        let listed = ok(server, &["run", "list"]);
        assert_eq!(listed.matches("big-eval").count(), 1, "{listed}");
        for run in ["big", "big-eval"] {
            let page = page(server, run);
            let got = page["lines"].as_array().unwrap();
            // Which lines went missing, to find where (seen once in a full run: 1,966 of 2,000).
            let seen: std::collections::BTreeSet<u64> = got
                .iter()
                .filter_map(|l| l["line_number"].as_u64())
                .collect();
            let missing: Vec<u64> = (0..LINES as u64).filter(|i| !seen.contains(i)).collect();
            assert_eq!(
                got.len(),
                LINES,
                "run {run} through the {label} server after its sessions were deleted (its index counts {}): lines missing {missing:?}",
                page["total"]
            );
        }
    }
}

/// A team that ran one server on a home of its own moves to servers sharing only the database:
/// restarted with `--blobs database`, the server moves its files into the database, and a new
/// server on an empty home runs what the old one stored. SQLite cannot share them, and says so.
#[test]
fn a_home_moves_its_files_into_the_database_when_asked() {
    let Some(database) = fresh_postgres() else {
        eprintln!("skipped: FLOWRT_TEST_POSTGRES is not set (./scripts/test.sh sets it)");
        return;
    };
    let root_dir = tempfile::tempdir().unwrap();
    let root = root_dir.path();
    let (old_home, new_home, client) = (root.join("old"), root.join("new"), root.join("client"));
    std::fs::create_dir_all(&client).unwrap();
    let key = operator_key(root, "secret.key", 3);
    let mut old = start_private(&old_home, &[], &database, "old", &key, "folder").unwrap();
    let token = std::fs::read_to_string(old_home.join("owner.token"))
        .unwrap()
        .trim()
        .to_string();
    let ok = |server: &Server, args: &[&str]| -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_flowrt"))
            .args(args)
            .env("FLOWRT_HOME", &client)
            .env("FLOWRT_SERVER", &server.url)
            .env("FLOWRT_TOKEN", &token)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            server.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (_flow_dir, flow_path) = flow("slow_double");
    ok(
        &old,
        &["flow", "push", flow_path.to_str().unwrap(), "--name", "sd"],
    );
    let data = client.join("d.jsonl");
    std::fs::write(&data, "{\"x\": 4}\n").unwrap();
    let pushed = ok(&old, &["data", "push", data.to_str().unwrap()]);
    let reference = pushed
        .split_whitespace()
        .find(|w| w.starts_with("data:sha256:"))
        .unwrap_or_else(|| panic!("no reference in {pushed}"))
        .to_string();
    // Another home cannot join while the files are in the old one's folder.
    let refused = start_private(&new_home, &[&old_home], &database, "new", &key, "database")
        .err()
        .expect("refused while the files are in another home");
    assert!(
        refused.contains("another server's FLOWRT_HOME"),
        "{refused}"
    );
    old.kill();
    // Restarted to share its files, then a server on another home runs what it stored.
    let _old = start_private(&old_home, &[], &database, "old", &key, "database").unwrap();
    let log = _old.log();
    assert!(
        log.contains("files of this home into the database"),
        "{log}"
    );
    let new = start_private(&new_home, &[&old_home], &database, "new", &key, "database").unwrap();
    let id = ok(&new, &["session", "start", "--flow", "sd"])
        .trim()
        .lines()
        .last()
        .unwrap()
        .to_string();
    // The data the old home kept is the new server's too: nothing is sent again.
    let out = Command::new(env!("CARGO_BIN_EXE_flowrt"))
        .args(["data", "push", data.to_str().unwrap()])
        .env("FLOWRT_HOME", &client)
        .env("FLOWRT_SERVER", &new.url)
        .env("FLOWRT_TOKEN", &token)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has this data already"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), reference);
    let t = Instant::now();
    loop {
        let s: Value =
            serde_json::from_str(&ok(&new, &["session", "show", &id, "--json"])).unwrap();
        if s["status"] == "Running" {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "{s:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = ok(
        &new,
        &[
            "run",
            "create",
            "--session",
            &id,
            "--data",
            data.to_str().unwrap(),
            "--name",
            "moved",
        ],
    );
    let record: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(record["completed_lines"], 1, "{record:#}");
    ok(&new, &["session", "delete", &id]);

    // On SQLite the files stay in the home.
    let out = Command::new(env!("CARGO_BIN_EXE_flowrt"))
        .args(["server", "--addr", "127.0.0.1:0", "--blobs", "database"])
        .env("FLOWRT_HOME", root.join("lone"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--database postgres://"), "{err}");
}
