//! Batch and evaluation runs (`flowrt run ...`) as users see them: the run folder's files,
//! stdout/stderr, exit codes, cancel/kill/resume and memory.

// A story test reads as one journey, top to bottom: exempt from the function-length lint.
#![allow(clippy::too_many_lines)]

mod common;

use common::{flow, s, write_jsonl, Env, FakeOpenAi};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn run_dir(env: &Env, name: &str) -> PathBuf {
    env.home.path().join("runs").join(name)
}

fn outputs(env: &Env, name: &str) -> Vec<Value> {
    read_jsonl(&run_dir(env, name).join("flow_outputs/output.jsonl"))
}

/// The `line_number`s of a run's output.jsonl, in file order.
fn output_lines(env: &Env, name: &str) -> Vec<u64> {
    outputs(env, name)
        .iter()
        .map(|o| o["line_number"].as_u64().unwrap())
        .collect()
}

/// Rows for the `batch_rows` flow: `n` = line number, all sleeping `sleep` s, with modes by line.
fn rows(count: usize, sleep: f64, mode: impl Fn(usize) -> &'static str) -> Vec<Value> {
    (0..count)
        .map(|n| json!({"n": n, "sleep": sleep, "mode": mode(n)}))
        .collect()
}

/// The `n`s the `batch_rows` tool was called with (it appends each to calls.txt), sorted.
fn calls(flow_dir: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_to_string(flow_dir.join("calls.txt"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    v.sort_unstable();
    v
}

fn show_json(env: &Env, name: &str) -> Value {
    let r = env.run(&["run", "show", name, "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.json()
}

/// Wait (generously) until `line_runs.jsonl` of a run holds at least `n` records.
fn wait_for_records(env: &Env, name: &str, n: usize, child: &mut std::process::Child) {
    let path = run_dir(env, name).join("line_runs.jsonl");
    let t0 = Instant::now();
    loop {
        let have = std::fs::read_to_string(&path)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if have >= n {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before {n} lines were recorded (had {have})");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no {n} line records after 60 s (had {have})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the run did not stop within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn mapping_renames_literals_implicit_columns_defaults_and_csv_tsv_conversion() {
    let env = Env::new();
    let (d, dir) = flow("batch_map");
    let expected = json!({
        "question": ["hello, world", "str"],
        "count": [3, "int"],
        "ratio": [2.5, "float"],
        "tag": ["fixed-tag", "str"],
        // `mode` has a default: it wins over the data's `mode` column when not mapped.
        "mode": ["from-default", "str"],
    });
    for (ext, text) in [
        (
            "csv",
            "q,count,ratio,mode\n\"hello, world\",3,2.5,from-data\nbye,4,1,from-data\n",
        ),
        (
            "tsv",
            "q\tcount\tratio\tmode\nhello, world\t3\t2.5\tfrom-data\nbye\t4\t1\tfrom-data\n",
        ),
    ] {
        let data = d.path().join(format!("data.{ext}"));
        std::fs::write(&data, text).unwrap();
        let name = format!("map_{ext}");
        let r = env.run(&[
            "run",
            "create",
            "--flow",
            s(&dir),
            "--data",
            s(&data),
            "--name",
            &name,
            "--column-mapping",
            "question=${data.q}",
            "tag=fixed-tag",
        ]);
        assert_eq!(r.code, 0, "{ext}: {}", r.stderr);
        let out = outputs(&env, &name);
        assert_eq!(out.len(), 2, "{ext}: {out:?}");
        assert_eq!(out[0], json!({"line_number": 0, "got": expected}), "{ext}");
        assert_eq!(out[1]["got"]["count"], json!([4, "int"]), "{ext}");
        assert_eq!(out[1]["got"]["ratio"], json!([1.0, "float"]), "{ext}");
        assert!(!run_dir(&env, &name).join("error.json").exists());
    }

    // An explicit mapping of an input with a default reads the column.
    let data = d.path().join("data.jsonl");
    write_jsonl(
        &data,
        &[
            json!({"q": "a", "count": 1, "ratio": 0.5, "mode": "m0"}),
            json!({"question": "no q here", "count": 2, "ratio": 0.5, "mode": "m1"}),
            json!({"q": "c", "count": 3, "ratio": 0.5, "mode": "m2"}),
        ],
    );
    let r = env.run(&[
        "run",
        "create",
        "--flow",
        s(&dir),
        "--data",
        s(&data),
        "--name",
        "map_missing",
        "--column-mapping",
        "question=${data.q}",
        "tag=t",
        "mode=${data.mode}",
    ]);
    // As in promptflow, which reads the data as a table: a row without a column that other rows
    // have holds NaN there, which reaches a string input as "nan"; the line runs.
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = outputs(&env, "map_missing");
    assert_eq!(output_lines(&env, "map_missing"), [0, 1, 2]);
    assert_eq!(out[0]["got"]["mode"], json!(["m0", "str"]));
    assert_eq!(out[1]["got"]["question"], json!(["nan", "str"]));

    // A column that no row has would fail every line, naming the input and the column ...
    let r = env.run(&[
        "run",
        "create",
        "--flow",
        s(&dir),
        "--data",
        s(&data),
        "--name",
        "map_nowhere",
        "--column-mapping",
        "question=${data.nope}",
        "tag=t",
    ]);
    // ... is caught before any line runs: exit 2, the columns there are listed, no run is left.
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(
        r.stderr.trim(),
        "error: --column-mapping question='${data.nope}': the data has no column 'nope' on any line; its columns are: count, mode, q, question, ratio"
    );
    assert!(!run_dir(&env, "map_nowhere").exists());
    assert_eq!(env.run(&["run", "show", "map_nowhere"]).code, 2);
}

#[test]
fn evaluation_over_a_base_run_joins_outputs_data_and_base_inputs() {
    let env = Env::new();
    let (d, base_flow) = flow("batch_base");
    let (_e, eval_flow) = flow("batch_eval");
    let base_data = d.path().join("base.jsonl");
    write_jsonl(
        &base_data,
        &[json!({"q": "hi"}), json!({"q": "none"}), json!({"q": "yo"})],
    );
    let r = env.run(&[
        "run",
        "create",
        "--flow",
        s(&base_flow),
        "--data",
        s(&base_data),
        "--name",
        "base",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        outputs(&env, "base"),
        [
            json!({"line_number": 0, "answer": "HI"}),
            json!({"line_number": 1, "answer": null}),
            json!({"line_number": 2, "answer": "YO"}),
        ]
    );

    let eval_data = d.path().join("eval.jsonl");
    write_jsonl(
        &eval_data,
        &[
            json!({"expected": "HI"}),
            json!({"expected": "None"}),
            json!({"expected": "nope"}),
        ],
    );
    let r = env.run(&[
        "run",
        "create",
        "--flow",
        s(&eval_flow),
        "--data",
        s(&eval_data),
        "--run",
        "base",
        "--name",
        "eval",
        "--concurrency",
        "3",
        "--column-mapping",
        "answer=${run.outputs.answer}",
        "expected=${data.expected}",
        "source=${run.inputs.q}",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("concurrency: 3"), "{}", r.stderr);
    assert_eq!(
        outputs(&env, "eval"),
        [
            json!({"line_number": 0, "grade": {"answer": "HI", "source": "hi", "correct": true}}),
            // A null base output mapped to a string input arrives as "None".
            json!({"line_number": 1, "grade": {"answer": "None", "source": "none", "correct": true}}),
            json!({"line_number": 2, "grade": {"answer": "YO", "source": "yo", "correct": false}}),
        ]
    );
    let metrics = read_json(&run_dir(&env, "eval").join("metrics.json"));
    assert_eq!(metrics, json!({"accuracy": 2.0 / 3.0, "graded": 3}));
    let logs = std::fs::read_to_string(run_dir(&env, "eval").join("logs.txt")).unwrap();
    assert!(logs.contains("concurrency: 3"), "{logs}");
    let run_json = read_json(&run_dir(&env, "eval").join("run.json"));
    assert_eq!(run_json["base_run"], "base");
    assert_eq!(run_json["status"], "Completed");
    assert!(run_dir(&env, "eval").join("snapshot/grade.py").is_file());

    // The run commands.
    let r = env.run(&["run", "list"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rows: Vec<&str> = r.stdout.lines().collect();
    assert!(rows[0].starts_with("NAME"), "{}", r.stdout);
    for name in ["base", "eval"] {
        assert!(
            rows.iter()
                .any(|l| l.starts_with(name) && l.contains("Completed")),
            "{}",
            r.stdout
        );
    }
    let r = env.run(&["run", "list", "--json"]);
    let names: Vec<Value> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].clone())
        .collect();
    assert_eq!(names, [json!("base"), json!("eval")]);

    let r = env.run(&["run", "show", "eval"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for line in [
        "name:        eval",
        "status:      Completed",
        "base run:    base",
        "lines:       3 total, 3 completed, 0 failed",
        "concurrency: 3",
    ] {
        assert!(r.stdout.contains(line), "{line}\n{}", r.stdout);
    }

    let r = env.run(&["run", "show-details", "eval"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let table: Vec<&str> = r.stdout.lines().collect();
    assert!(
        table[0].contains("LINE") && table[0].contains("STATUS"),
        "{}",
        r.stdout
    );
    assert_eq!(table.len(), 4, "{}", r.stdout);
    assert!(
        table[2].trim_start().starts_with("1  Completed"),
        "{}",
        r.stdout
    );
    assert!(table[2].contains(r#""answer":"None""#), "{}", r.stdout);
    let r = env.run(&["run", "show-details", "eval", "--max-lines", "1"]);
    assert!(r.stdout.contains("... 2 more lines"), "{}", r.stdout);
    let r = env.run(&["run", "show-details", "eval", "--json"]);
    let details = r.json();
    assert_eq!(details.as_array().unwrap().len(), 3);
    assert_eq!(details[1]["inputs"]["answer"], "None");
    assert_eq!(details[1]["nodes"][0]["node"], "grade");

    let r = env.run(&["run", "show-metrics", "eval"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json(), metrics);

    let r = env.run(&["run", "show", "ghost"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("run 'ghost' does not exist"),
        "{}",
        r.stderr
    );
    let r = env.run(&[
        "run",
        "create",
        "--flow",
        s(&eval_flow),
        "--data",
        s(&eval_data),
        "--name",
        "eval",
    ]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("run 'eval' already exists"),
        "{}",
        r.stderr
    );
}

#[test]
fn failed_lines_do_not_fail_the_run_and_resume_reruns_only_them() {
    let env = Env::new();
    let (d, dir) = flow("batch_rows");
    let data = d.path().join("data.jsonl");
    write_jsonl(
        &data,
        &rows(9, 0.0, |n| if n == 2 || n == 5 { "fail" } else { "" }),
    );
    let r = env.run(&[
        "run",
        "create",
        "--flow",
        s(&dir),
        "--data",
        s(&data),
        "--name",
        "first",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("2 failed"), "{}", r.stderr);
    assert!(r.stderr.contains("--resume-from first"), "{}", r.stderr);
    assert_eq!(output_lines(&env, "first"), [0, 1, 3, 4, 6, 7, 8]);
    assert_eq!(
        outputs(&env, "first")[2],
        json!({"line_number": 3, "n": 3, "out": 30})
    );
    let errors = read_json(&run_dir(&env, "first").join("error.json"));
    let errors = errors.as_array().unwrap();
    assert_eq!(errors.len(), 2);
    for (e, n) in errors.iter().zip([2, 5]) {
        assert_eq!(e["line_number"], n);
        assert_eq!(e["node"], "work");
        assert_eq!(e["error_type"], "ValueError");
        assert_eq!(e["message"], format!("row {n} is bad (code ROW-{n})"));
    }
    // Aggregation sees only the completed lines.
    assert_eq!(
        read_json(&run_dir(&env, "first").join("metrics.json")),
        json!({"lines": 7, "sum": 290})
    );
    let meta = show_json(&env, "first");
    assert_eq!(meta["status"], "Completed");
    assert_eq!(
        (
            meta["completed_lines"].clone(),
            meta["failed_lines"].clone()
        ),
        (json!(7), json!(2))
    );
    assert_eq!(calls(&dir), (0..9).collect::<Vec<_>>());

    // Fix the tool, then resume: only the failed lines run again.
    std::fs::write(dir.join("fixed"), "").unwrap();
    std::fs::remove_file(dir.join("calls.txt")).unwrap();
    let r = env.run(&[
        "run",
        "create",
        "--flow",
        s(&dir),
        "--data",
        s(&data),
        "--name",
        "second",
        "--resume-from",
        "first",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(calls(&dir), [2, 5]);
    assert_eq!(output_lines(&env, "second"), (0..9).collect::<Vec<_>>());
    assert_eq!(
        outputs(&env, "second")[5],
        json!({"line_number": 5, "n": 5, "out": 50})
    );
    assert!(!run_dir(&env, "second").join("error.json").exists());
    assert_eq!(
        read_json(&run_dir(&env, "second").join("metrics.json")),
        json!({"lines": 9, "sum": 360})
    );
    let meta = show_json(&env, "second");
    assert_eq!(meta["resumed_from"], "first");
    assert_eq!(
        (
            meta["completed_lines"].clone(),
            meta["failed_lines"].clone()
        ),
        (json!(9), json!(0))
    );

    // The resumed run holds every line's record, so it can itself be resumed: nothing re-runs.
    std::fs::remove_file(dir.join("calls.txt")).unwrap();
    let r = env.run(&[
        "run",
        "create",
        "--flow",
        s(&dir),
        "--data",
        s(&data),
        "--name",
        "third",
        "--resume-from",
        "second",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(calls(&dir), Vec::<u64>::new());
    assert_eq!(output_lines(&env, "third"), (0..9).collect::<Vec<_>>());
    assert_eq!(
        read_json(&run_dir(&env, "third").join("metrics.json")),
        json!({"lines": 9, "sum": 360})
    );
}

#[test]
fn a_tools_import_time_is_not_counted_against_the_first_lines_timeout() {
    // promptflow loads a flow's tools before its first line; a tool that takes 1.5 s to import
    // must not make the first lines miss a 1 s line timeout.
    let env = Env::new();
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("slow_import.py"),
        "import time\nfrom promptflow.core import tool\n\ntime.sleep(1.5)\nprint('slow_import loaded')\n\n\n@tool\ndef double(n: int) -> int:\n    return n * 2\n",
    )
    .unwrap();
    std::fs::write(
        d.path().join("flow.dag.yaml"),
        "inputs:\n  n: {type: int}\noutputs:\n  out: {reference: \"${double.output}\"}\nnodes:\n- name: double\n  type: python\n  source: {type: code, path: slow_import.py}\n  inputs: {n: \"${inputs.n}\"}\n",
    )
    .unwrap();
    let data = d.path().join("data.jsonl");
    write_jsonl(&data, &[json!({"n": 1}), json!({"n": 2}), json!({"n": 3})]);
    let r = env.run(&[
        "run",
        "create",
        "--flow",
        s(d.path()),
        "--data",
        s(&data),
        "--name",
        "slow_import",
        "--line-timeout",
        "1",
        "--concurrency",
        "2",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(output_lines(&env, "slow_import"), [0, 1, 2]);
    // What the import printed is shown once, under its node's name.
    assert_eq!(
        r.stderr.matches("[double] slow_import loaded").count(),
        1,
        "{}",
        r.stderr
    );
}

#[test]
fn a_line_timeout_fails_that_line_and_the_run_goes_on() {
    let env = Env::new();
    let (d, dir) = flow("batch_rows");
    let data = d.path().join("data.jsonl");
    let mut data_rows = rows(6, 0.0, |_| "");
    data_rows[2]["sleep"] = json!(60);
    write_jsonl(&data, &data_rows);
    let t0 = Instant::now();
    let r = env.run(&[
        "run",
        "create",
        "--flow",
        s(&dir),
        "--data",
        s(&data),
        "--name",
        "slow",
        "--line-timeout",
        "1",
        "--concurrency",
        "2",
    ]);
    let took = t0.elapsed();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert_eq!(output_lines(&env, "slow"), [0, 1, 3, 4, 5]);
    let errors = read_json(&run_dir(&env, "slow").join("error.json"));
    assert_eq!(errors.as_array().unwrap().len(), 1, "{errors:#}");
    assert_eq!(errors[0]["line_number"], 2);
    assert_eq!(errors[0]["error_type"], "LineExecutionTimeoutError");
    let message = errors[0]["message"].as_str().unwrap();
    assert!(message.contains("within 1 seconds"), "{message}");
    // The node that was running is marked canceled.
    let records = read_jsonl(&run_dir(&env, "slow").join("line_runs.jsonl"));
    assert_eq!(records[2]["status"], "Failed");
    assert_eq!(records[2]["nodes"][0]["node"], "work");
    assert_eq!(records[2]["nodes"][0]["status"], "Canceled");
    let logs = std::fs::read_to_string(run_dir(&env, "slow").join("logs.txt")).unwrap();
    assert!(logs.contains("line 2 failed"), "{logs}");
}

#[test]
fn a_long_running_node_is_reported_in_the_run_log() {
    let env = Env::new();
    let (d, dir) = flow("batch_rows");
    let data = d.path().join("data.jsonl");
    write_jsonl(&data, &rows(2, 1.2, |_| ""));
    let r = env.run(&[
        "run",
        "create",
        "--flow",
        s(&dir),
        "--data",
        s(&data),
        "--name",
        "long",
        "--long-running-interval",
        "0.3",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let logs = std::fs::read_to_string(run_dir(&env, "long").join("logs.txt")).unwrap();
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("work has been running for"))
        .collect();
    assert!(warnings.len() >= 2, "{logs}");
    assert!(warnings.iter().all(|w| w.ends_with(" seconds")), "{logs}");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("running for 0.6 seconds")),
        "{logs}"
    );
}

/// Start a run of many slow lines in the background and wait until a few are recorded.
fn start_slow_run(env: &Env, dir: &Path, data: &Path, name: &str) -> std::process::Child {
    write_jsonl(data, &rows(40, 0.2, |_| ""));
    let mut child = env.spawn(&[
        "run",
        "create",
        "--flow",
        s(dir),
        "--data",
        s(data),
        "--name",
        name,
        "--concurrency",
        "2",
    ]);
    wait_for_records(env, name, 4, &mut child);
    child
}

#[test]
fn cancel_keeps_finished_lines_and_resume_completes_the_rest() {
    let env = Env::new();
    let (d, dir) = flow("batch_rows");
    let data = d.path().join("data.jsonl");
    let mut child = start_slow_run(&env, &dir, &data, "cancelme");
    assert_eq!(show_json(&env, "cancelme")["status"], "Running");
    let r = env.run(&["run", "cancel", "cancelme"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("--resume-from cancelme"), "{}", r.stderr);
    let status = wait_exit(&mut child);
    assert_eq!(status.code(), Some(130));
    let meta = show_json(&env, "cancelme");
    assert_eq!(meta["status"], "Canceled");
    let done = output_lines(&env, "cancelme");
    assert!(done.len() >= 4 && done.len() < 40, "{done:?}");
    assert_eq!(done, (0..done.len() as u64).collect::<Vec<_>>());
    assert_eq!(meta["completed_lines"], done.len());
    let r = env.run(&["run", "cancel", "cancelme"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("not running"), "{}", r.stderr);

    std::fs::remove_file(dir.join("calls.txt")).unwrap();
    let r = env.run(&[
        "run",
        "create",
        "--flow",
        s(&dir),
        "--data",
        s(&data),
        "--name",
        "resumed",
        "--resume-from",
        "cancelme",
        "--concurrency",
        "8",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(output_lines(&env, "resumed"), (0..40).collect::<Vec<_>>());
    let reran = calls(&dir);
    assert!(
        reran.iter().all(|n| !done.contains(n)),
        "{reran:?} re-ran kept lines"
    );
    assert_eq!(
        read_json(&run_dir(&env, "resumed").join("metrics.json")),
        json!({"lines": 40, "sum": 7800})
    );
}

#[test]
fn sigkill_mid_run_then_resume_writes_every_line_once() {
    let env = Env::new();
    let (d, dir) = flow("batch_rows");
    let data = d.path().join("data.jsonl");
    let mut child = start_slow_run(&env, &dir, &data, "killed");
    child.kill().unwrap();
    child.wait().unwrap();
    // The killed run is not shown as running forever.
    let shown: serde_json::Value =
        serde_json::from_str(&env.run(&["run", "show", "killed", "--json"]).stdout).unwrap();
    assert_eq!(shown["status"], json!("Failed"));
    assert!(
        shown["error"]
            .as_str()
            .unwrap()
            .contains("resume it with `flowrt run create --resume-from killed`"),
        "{shown}"
    );
    let r = env.run(&[
        "run",
        "create",
        // Resuming needs only the run's name: its flow, data and mapping are reused.
        "--name",
        "after_kill",
        "--resume-from",
        "killed",
        "--concurrency",
        "8",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("resuming: "), "{}", r.stderr);
    assert_eq!(
        output_lines(&env, "after_kill"),
        (0..40).collect::<Vec<_>>()
    );
    let records = read_jsonl(&run_dir(&env, "after_kill").join("line_runs.jsonl"));
    let numbers: Vec<u64> = records
        .iter()
        .map(|r| r["line_number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (0..40).collect::<Vec<_>>());
}

#[test]
fn a_crashing_python_worker_fails_only_its_line() {
    let env = Env::new();
    let (d, dir) = flow("batch_rows");
    let data = d.path().join("data.jsonl");
    // Every line is in flight when line 5 kills its worker.
    write_jsonl(&data, &rows(12, 0.5, |n| if n == 5 { "crash" } else { "" }));
    let r = env.run(&[
        "run",
        "create",
        "--flow",
        s(&dir),
        "--data",
        s(&data),
        "--name",
        "crash",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let expected: Vec<u64> = (0..12).filter(|n| *n != 5).collect();
    assert_eq!(output_lines(&env, "crash"), expected);
    let errors = read_json(&run_dir(&env, "crash").join("error.json"));
    assert_eq!(errors.as_array().unwrap().len(), 1, "{errors:#}");
    assert_eq!(errors[0]["line_number"], 5);
    assert_eq!(errors[0]["node"], "work");
    assert_eq!(errors[0]["error_type"], "WorkerCrashed");
    let message = errors[0]["message"].as_str().unwrap();
    assert!(message.contains("exited with code 3"), "{message}");
}

/// Peak resident memory (VmHWM, kB) of a flowrt run, sampled until it exits.
fn peak_rss_kb(env: &Env, args: &[&str]) -> u64 {
    let mut child = env.spawn(args);
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_path) {
            if let Some(kb) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kb);
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            return peak;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn ten_thousand_lines_run_in_constant_memory() {
    let env = Env::new();
    let (d, dir) = flow("batch_trivial");
    let peaks = peaks_over_sizes(
        &env,
        d.path(),
        [1_000, 10_000],
        &json!({}),
        |data, count| {
            let name = format!("big{count}");
            let peak = peak_rss_kb(
                &env,
                &[
                    "run",
                    "create",
                    "--flow",
                    s(&dir),
                    "--data",
                    s(data),
                    "--name",
                    &name,
                ],
            );
            (name, peak, 1)
        },
    );
    assert!(peaks[0] > 0, "could not read VmHWM");
    assert!(
        (peaks[1] as f64) < peaks[0] as f64 * 1.5 + 20_000.0,
        "peak RSS grew from {} kB (1,000 lines) to {} kB (10,000 lines)",
        peaks[0],
        peaks[1]
    );
}

/// For each of `counts`: rows `{"x": i, ...extra}` written to a data file, `run(data, count)`
/// measured (the run's name, its peak RSS, and what its flow adds to x), its outputs checked to be
/// `y = x + added` on every line in order. The peaks, in order.
fn peaks_over_sizes(
    env: &Env,
    dir: &Path,
    counts: [usize; 2],
    extra: &Value,
    run: impl Fn(&Path, usize) -> (String, u64, usize),
) -> Vec<u64> {
    let mut peaks = Vec::new();
    for count in counts {
        let data = dir.join(format!("data{count}.jsonl"));
        let rows: Vec<Value> = (0..count)
            .map(|x| {
                let mut row = extra.clone();
                row["x"] = json!(x);
                row
            })
            .collect();
        write_jsonl(&data, &rows);
        let t0 = Instant::now();
        let (name, peak, added) = run(&data, count);
        eprintln!(
            "{name}: {count} lines in {:?}, peak RSS {peak} kB",
            t0.elapsed()
        );
        let out = outputs(env, &name);
        assert_eq!(out.len(), count);
        assert!(out
            .iter()
            .enumerate()
            .all(|(i, o)| o == &json!({"line_number": i, "y": i + added})));
        peaks.push(peak);
    }
    peaks
}

/// An evaluation reads its base run's outputs and data rows as its lines run: its memory does
/// not grow with the base run's size either.
#[test]
fn an_evaluation_reads_its_base_run_in_constant_memory() {
    let env = Env::new();
    let (d, dir) = flow("batch_trivial");
    let text = "a row's long text, carried along by the base run's data. ".repeat(40);
    let peaks = peaks_over_sizes(
        &env,
        d.path(),
        [2_000, 20_000],
        &json!({"text": text}),
        |data, count| {
            let base = format!("base{count}");
            let r = env.run(&[
                "run",
                "create",
                "--flow",
                s(&dir),
                "--data",
                s(data),
                "--name",
                &base,
            ]);
            assert_eq!(r.code, 0, "{}", r.stderr);
            // Each evaluation line reads its base line's output: y = x + 1, then + 1 again.
            let name = format!("eval{count}");
            let peak = peak_rss_kb(
                &env,
                &[
                    "run",
                    "create",
                    "--flow",
                    s(&dir),
                    "--data",
                    s(data),
                    "--run",
                    &base,
                    "--column-mapping",
                    "x=${run.outputs.y}",
                    "--name",
                    &name,
                ],
            );
            (name, peak, 2)
        },
    );
    assert!(
        (peaks[1] as f64) < peaks[0] as f64 * 1.2 + 10_000.0,
        "an evaluation's peak RSS grew from {} kB (2,000 lines) to {} kB (20,000 lines)",
        peaks[0],
        peaks[1]
    );
}

#[test]
fn a_batch_timeout_cancels_the_run_and_keeps_finished_lines() {
    let env = Env::new();
    let (d, dir) = flow("batch_rows");
    let data = d.path().join("data.jsonl");
    write_jsonl(&data, &rows(40, 0.3, |_| ""));
    let t0 = Instant::now();
    let r = env.run(&[
        "run",
        "create",
        "--flow",
        s(&dir),
        "--data",
        s(&data),
        "--name",
        "capped",
        "--batch-timeout",
        "2",
        "--concurrency",
        "2",
    ]);
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t0.elapsed()
    );
    assert_eq!(r.code, 130, "{}", r.stderr);
    let meta = show_json(&env, "capped");
    assert_eq!(meta["status"], "Canceled");
    let done = output_lines(&env, "capped");
    assert!(!done.is_empty() && done.len() < 40, "{done:?}");
    assert_eq!(meta["completed_lines"], done.len());
    let logs = std::fs::read_to_string(run_dir(&env, "capped").join("logs.txt")).unwrap();
    assert!(logs.contains("--batch-timeout"), "{logs}");
}

#[test]
fn llm_lines_all_complete_when_every_third_request_is_throttled() {
    let server = FakeOpenAi::start_failing_every(3);
    let env = Env::new();
    env.connection(&format!(
        "name: test_openai\ntype: open_ai\napi_key: sk-test\nbase_url: {}/v1\n",
        server.base
    ));
    let (d, dir) = flow("chat");
    let data = d.path().join("data.jsonl");
    let rows: Vec<Value> = (0..12)
        .map(|i| json!({"question": format!("q{i}"), "chat_history": []}))
        .collect();
    write_jsonl(&data, &rows);
    let r = env.run(&[
        "run",
        "create",
        "--flow",
        s(&dir),
        "--data",
        s(&data),
        "--name",
        "llm",
        "--concurrency",
        "4",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = outputs(&env, "llm");
    let expected: Vec<Value> = (0..12)
        .map(|i| json!({"line_number": i, "answer": format!("echo: q{i}")}))
        .collect();
    assert_eq!(out, expected);
    assert!(!run_dir(&env, "llm").join("error.json").exists());
    let hits = server.hits.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        hits >= 17,
        "12 answers and at least 5 throttled requests, got {hits}"
    );
    // Token usage is recorded per node.
    let records = read_jsonl(&run_dir(&env, "llm").join("line_runs.jsonl"));
    assert_eq!(records[0]["nodes"][0]["usage"]["total_tokens"], 8);
}

#[test]
fn a_batch_run_merges_additional_includes_and_snapshots_them() {
    let env = Env::new();
    let root = tempfile::tempdir().unwrap();
    let common = root.path().join("common");
    let flow_dir = root.path().join("flow");
    std::fs::create_dir_all(&common).unwrap();
    std::fs::create_dir_all(&flow_dir).unwrap();
    std::fs::write(
        common.join("greet.py"),
        "from promptflow.core import tool\n\n@tool\ndef greet(name: str) -> str:\n    return 'hi ' + name\n",
    )
    .unwrap();
    std::fs::write(
        flow_dir.join("flow.dag.yaml"),
        "additional_includes:\n- ../common/greet.py\ninputs:\n  name: {type: string}\noutputs:\n  g: {reference: \"${greet.output}\"}\nnodes:\n- name: greet\n  type: python\n  source: {type: code, path: greet.py}\n  inputs: {name: \"${inputs.name}\"}\n",
    )
    .unwrap();
    let data = root.path().join("data.jsonl");
    write_jsonl(&data, &[json!({"name": "ada"}), json!({"name": "bob"})]);
    let r = env.run(&[
        "run",
        "create",
        "--flow",
        s(&flow_dir),
        "--data",
        s(&data),
        "--name",
        "inc",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        outputs(&env, "inc"),
        [
            json!({"line_number": 0, "g": "hi ada"}),
            json!({"line_number": 1, "g": "hi bob"})
        ]
    );
    assert!(run_dir(&env, "inc").join("snapshot/greet.py").is_file());
    let meta = show_json(&env, "inc");
    assert_eq!(meta["flow"], json!(flow_dir.canonicalize().unwrap()));
}

#[test]
fn stream_prints_each_line_as_it_completes_in_order() {
    let env = Env::new();
    let (d, dir) = flow("batch_trivial");
    let data = d.path().join("data.jsonl");
    write_jsonl(&data, &(0..5).map(|x| json!({"x": x})).collect::<Vec<_>>());
    let r = env.run(&[
        "run",
        "create",
        "--flow",
        s(&dir),
        "--data",
        s(&data),
        "--name",
        "streamed",
        "--stream",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let streamed: Vec<Value> = r
        .stdout
        .lines()
        .take_while(|l| l.starts_with("{\"line_number\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        streamed,
        (0..5)
            .map(|i| json!({"line_number": i, "y": i + 1}))
            .collect::<Vec<_>>()
    );
    // The run's record follows the streamed lines.
    assert!(
        r.stdout.contains("\"status\": \"Completed\""),
        "{}",
        r.stdout
    );
    // Without a terminal, progress is plain text (no carriage-return redraws).
    assert!(!r.stderr.contains('\r'), "{:?}", r.stderr);
    assert!(
        r.stderr.contains("run streamed: 5 lines, concurrency: 16"),
        "{}",
        r.stderr
    );
}
