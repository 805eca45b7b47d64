//! The batch engine over a fake invoker: bounded concurrency, the per-line timeout, cancel,
//! resume (each line completes exactly once overall), outputs in line order whatever order lines
//! finish in, and the run folder's files.

// A story test reads as one journey, top to bottom: exempt from the function-length lint.
#![allow(clippy::too_many_lines)]

use flowrt_executor::{Invocation, NodeArg, ToolFailure, ToolInvoker, ToolOutcome};
use flowrt_runtime::batch::{self, Cancel, EngineOptions, Lines, Progress, Reporter, RetryHub};
use flowrt_runtime::runs::{self, RunMeta, RunStatus};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `work(n, ms)`: sleeps `ms`, answers `n * 10`; fails for the `n` in `fail`. Counts calls
/// started and finished per line, and the most calls in flight at once.
#[derive(Default)]
struct Fake {
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    started: Mutex<HashMap<i64, usize>>,
    finished: Mutex<HashMap<i64, usize>>,
    fail: Vec<i64>,
}

fn arg(call: &Invocation<'_>, name: &str) -> i64 {
    call.args
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, a)| match a {
            NodeArg::Value { value, .. } | NodeArg::Literal(value) => value.as_i64(),
            NodeArg::Bypassed => None,
        })
        .unwrap_or(0)
}

/// Counts a call in flight until it ends, however it ends (an aborted line drops it).
struct InFlight<'a>(&'a Fake);
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ToolInvoker for Fake {
    async fn invoke(&self, call: Invocation<'_>) -> Result<ToolOutcome, ToolFailure> {
        let (n, ms) = (arg(&call, "n"), arg(&call, "ms"));
        *self.started.lock().unwrap().entry(n).or_default() += 1;
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let _guard = InFlight(self);
        tokio::time::sleep(Duration::from_millis(ms as u64)).await;
        *self.finished.lock().unwrap().entry(n).or_default() += 1;
        if self.fail.contains(&n) {
            return Err(ToolFailure::new("ValueError", format!("line {n} fails")));
        }
        Ok(ToolOutcome::value(json!(n * 10)))
    }
}

/// Records what the engine reports.
#[derive(Default)]
struct Recorder {
    started: AtomicUsize,
    finished_lines: AtomicUsize,
    outputs: Mutex<Vec<String>>,
}

impl Reporter for Recorder {
    fn started(&self, _meta: &RunMeta, _p: &Progress) {
        self.started.fetch_add(1, Ordering::SeqCst);
    }
    fn line_finished(&self, _p: &Progress) {
        self.finished_lines.fetch_add(1, Ordering::SeqCst);
    }
    fn output(&self, line: &str) {
        self.outputs.lock().unwrap().push(line.to_string());
    }
}

fn flow(dir: &Path) -> Arc<flowrt_flow::Flow> {
    std::fs::write(
        dir.join("flow.dag.yaml"),
        "inputs:\n  n:\n    type: int\n  ms:\n    type: int\noutputs:\n  out:\n    type: int\n    reference: ${work.output}\nnodes:\n- name: work\n  type: python\n  source:\n    type: code\n    path: work.py\n  inputs:\n    n: ${inputs.n}\n    ms: ${inputs.ms}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("work.py"),
        "from promptflow.core import tool\n\n@tool\ndef work(n: int, ms: int) -> int:\n    return n * 10\n",
    )
    .unwrap();
    Arc::new(flowrt_flow::load_flow(dir, &flowrt_flow::LoadOptions::default()).unwrap())
}

fn rows(ms: impl Fn(usize) -> u64, count: usize) -> Vec<Map<String, Value>> {
    (0..count)
        .map(|n| json!({"n": n, "ms": ms(n)}).as_object().cloned().unwrap())
        .collect()
}

fn meta(name: &str, out: &Path, resumed_from: Option<&str>) -> RunMeta {
    RunMeta {
        name: name.into(),
        status: RunStatus::Running,
        flow: PathBuf::from("flow"),
        data: PathBuf::from("data.jsonl"),
        output_dir: out.to_path_buf(),
        base_run: None,
        resumed_from: resumed_from.map(str::to_string),
        variant: None,
        init: None,
        column_mapping: BTreeMap::new(),
        created: runs::utc_now(),
        finished: None,
        duration_s: 0.0,
        total_lines: 0,
        completed_lines: 0,
        failed_lines: 0,
        concurrency: 0,
        pid: std::process::id(),
        error: None,
    }
}

struct Setup {
    _tmp: tempfile::TempDir,
    home: PathBuf,
    flow: Arc<flowrt_flow::Flow>,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let flow_dir = tmp.path().join("flow");
    std::fs::create_dir_all(&flow_dir).unwrap();
    let flow = flow(&flow_dir);
    Setup {
        home: tmp.path().join("home"),
        _tmp: tmp,
        flow,
    }
}

fn options(concurrency: usize) -> EngineOptions {
    EngineOptions {
        concurrency,
        ..EngineOptions::default()
    }
}

async fn run(
    s: &Setup,
    fake: &Arc<Fake>,
    name: &str,
    lines: Lines,
    options: EngineOptions,
    cancel: Cancel,
    resumed_from: Option<&str>,
) -> (RunMeta, Arc<Recorder>) {
    let out = runs::runs_dir(&s.home).join(name);
    let recorder = Arc::new(Recorder::default());
    let outcome = batch::execute(
        s.flow.clone(),
        fake.clone(),
        lines,
        meta(name, &out, resumed_from),
        &s.home,
        options,
        recorder.clone(),
        cancel,
        Arc::new(RetryHub::default()),
    )
    .await
    .unwrap();
    (outcome.meta, recorder)
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_run_with_bounded_concurrency_and_are_written_in_line_order() {
    let s = setup();
    let fake = Arc::new(Fake {
        fail: vec![5],
        ..Fake::default()
    });
    // Later lines finish first: each sleeps less than the one before it.
    let lines = Lines {
        rows: rows(|n| (20 - n as u64) * 15, 20).into(),
        ..Lines::default()
    };
    let mut opts = options(4);
    opts.stream = true;
    let (meta, rec) = run(&s, &fake, "ordered", lines, opts, Cancel::new(), None).await;

    assert_eq!(fake.max_in_flight.load(Ordering::SeqCst), 4);
    assert_eq!(meta.status, RunStatus::Completed);
    assert_eq!((meta.completed_lines, meta.failed_lines), (19, 1));
    assert_eq!(rec.started.load(Ordering::SeqCst), 1);
    assert_eq!(rec.finished_lines.load(Ordering::SeqCst), 20);

    let dir = runs::runs_dir(&s.home).join("ordered");
    let outputs = jsonl(&dir.join("flow_outputs/output.jsonl"));
    let numbers: Vec<u64> = outputs
        .iter()
        .map(|o| o["line_number"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = (0..20).filter(|n| *n != 5).collect();
    assert_eq!(numbers, expected);
    assert_eq!(outputs[3], json!({"line_number": 3, "out": 30}));
    // Streamed outputs are the written ones, in the same order.
    let streamed = rec.outputs.lock().unwrap().clone();
    assert_eq!(streamed.len(), 19);
    assert_eq!(
        serde_json::from_str::<Value>(&streamed[0]).unwrap(),
        outputs[0]
    );
    // Every line has its record, in order; the failed one carries its error.
    let records = jsonl(&dir.join("line_runs.jsonl"));
    let numbers: Vec<u64> = records
        .iter()
        .map(|o| o["line_number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (0..20).collect::<Vec<_>>());
    assert_eq!(records[5]["status"], "Failed");
    assert_eq!(records[5]["error"]["message"], "line 5 fails");
    // The run folder: its record (also under FLOWRT_HOME/runs), errors, metrics and log.
    let saved: RunMeta =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(saved.status, RunStatus::Completed);
    assert_eq!(saved.total_lines, 20);
    assert!(saved.finished.is_some());
    assert_eq!(runs::load(&s.home, "ordered").unwrap().completed_lines, 19);
    let errors: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("error.json")).unwrap()).unwrap();
    assert_eq!(errors[0]["line_number"], 5);
    assert_eq!(
        std::fs::read_to_string(dir.join("metrics.json")).unwrap(),
        "{}"
    );
    let log = std::fs::read_to_string(dir.join("logs.txt")).unwrap();
    assert!(log.contains("concurrency: 4"), "{log}");
    assert!(log.contains("line 5 failed: line 5 fails"), "{log}");
    assert!(
        log.contains("run ordered Completed: 19 completed, 1 failed"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_past_its_timeout_fails_and_the_others_complete() {
    let s = setup();
    let fake = Arc::new(Fake::default());
    let lines = Lines {
        rows: rows(|n| if n == 2 { 60_000 } else { 10 }, 5).into(),
        ..Lines::default()
    };
    let mut opts = options(5);
    opts.line_timeout = Some(Duration::from_millis(300));
    let t = Instant::now();
    let (meta, _) = run(&s, &fake, "timeout", lines, opts, Cancel::new(), None).await;
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(meta.status, RunStatus::Completed);
    assert_eq!((meta.completed_lines, meta.failed_lines), (4, 1));
    let records = jsonl(&runs::runs_dir(&s.home).join("timeout/line_runs.jsonl"));
    assert_eq!(records[2]["status"], "Failed");
    let message = records[2]["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("did not finish within 0.3 seconds"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_promptly_and_marks_the_run_canceled() {
    let s = setup();
    let fake = Arc::new(Fake::default());
    let lines = Lines {
        rows: rows(|_| 30_000, 10).into(),
        ..Lines::default()
    };
    let cancel = Cancel::new();
    let later = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        later.cancel("interrupted");
    });
    let t = Instant::now();
    let (meta, _) = run(&s, &fake, "canceled", lines, options(3), cancel, None).await;
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(meta.status, RunStatus::Canceled);
    assert_eq!((meta.completed_lines, meta.failed_lines), (0, 0));
    // Only the first three lines started, and none of them runs on.
    assert_eq!(fake.started.lock().unwrap().len(), 3);
    assert_eq!(fake.in_flight.load(Ordering::SeqCst), 0);
    let dir = runs::runs_dir(&s.home).join("canceled");
    let saved = runs::load(&s.home, "canceled").unwrap();
    assert_eq!(saved.status, RunStatus::Canceled);
    let log = std::fs::read_to_string(dir.join("logs.txt")).unwrap();
    assert!(log.contains("interrupted: canceling the run"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batch_timeout_cancels_the_remaining_lines() {
    let s = setup();
    let fake = Arc::new(Fake::default());
    let lines = Lines {
        rows: rows(|n| if n == 0 { 10 } else { 30_000 }, 4).into(),
        ..Lines::default()
    };
    let mut opts = options(4);
    opts.batch_timeout = Some(Duration::from_millis(300));
    let (meta, _) = run(&s, &fake, "batch_timeout", lines, opts, Cancel::new(), None).await;
    assert_eq!(meta.status, RunStatus::Canceled);
    assert_eq!(meta.completed_lines, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_runs_only_the_lines_that_did_not_complete() {
    let s = setup();
    // The first run: line 3 fails, and the slow lines (8 and up) are canceled.
    let first = Arc::new(Fake {
        fail: vec![3],
        ..Fake::default()
    });
    let slow = |n: usize| if n >= 8 { 30_000 } else { 5 };
    let cancel = Cancel::new();
    let watcher = cancel.clone();
    let fake = first.clone();
    tokio::spawn(async move {
        // Cancel once every fast line has finished.
        while fake.finished.lock().unwrap().len() < 8 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        watcher.cancel("interrupted");
    });
    let lines = Lines {
        rows: rows(slow, 12).into(),
        ..Lines::default()
    };
    let (meta, _) = run(&s, &first, "first", lines, options(12), cancel, None).await;
    assert_eq!(meta.status, RunStatus::Canceled);
    assert_eq!((meta.completed_lines, meta.failed_lines), (7, 1));

    // The resumed run keeps the completed lines and runs the others (now all quick).
    let kept: BTreeMap<usize, Value> = runs::line_records(&meta.output_dir)
        .unwrap()
        .into_iter()
        .filter(|(_, r)| r["status"] == "Completed")
        .collect();
    assert_eq!(kept.len(), 7);
    let second = Arc::new(Fake::default());
    let lines = Lines {
        rows: rows(|_| 5, 12).into(),
        kept,
        ..Lines::default()
    };
    let (meta2, _) = run(
        &s,
        &second,
        "second",
        lines,
        options(4),
        Cancel::new(),
        Some("first"),
    )
    .await;
    assert_eq!(meta2.status, RunStatus::Completed);
    assert_eq!((meta2.completed_lines, meta2.failed_lines), (12, 0));
    let ran_again: Vec<i64> = {
        let mut v: Vec<i64> = second.started.lock().unwrap().keys().copied().collect();
        v.sort();
        v
    };
    assert_eq!(ran_again, vec![3, 8, 9, 10, 11]);
    // Each line completed exactly once over both runs.
    let (a, b) = (
        first.finished.lock().unwrap(),
        second.finished.lock().unwrap(),
    );
    for n in 0..12i64 {
        let ok_first = usize::from(a.get(&n).is_some() && n != 3);
        let ok_second = b.get(&n).copied().unwrap_or(0);
        assert_eq!(ok_first + ok_second, 1, "line {n}");
    }
    let outputs = jsonl(&meta2.output_dir.join("flow_outputs/output.jsonl"));
    let numbers: Vec<u64> = outputs
        .iter()
        .map(|o| o["line_number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (0..12).collect::<Vec<_>>());
    let log = std::fs::read_to_string(meta2.output_dir.join("logs.txt")).unwrap();
    assert!(
        log.contains("resuming from first: 7 completed lines kept"),
        "{log}"
    );
}
