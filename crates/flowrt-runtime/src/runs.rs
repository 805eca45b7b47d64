//! Run records under FLOWRT_HOME: `runs/<name>.json` points at each run's folder and mirrors its
//! `run.json`, so `flowrt run list/show` and `--run`/`--resume-from` find runs by name.

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunStatus {
    Running,
    Completed,
    Failed,
    Canceled,
}

impl std::fmt::Display for RunStatus {
    /// As a run's record writes it: `Running`, `Completed`, `Failed`, `Canceled`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RunStatus::Running => "Running",
            RunStatus::Completed => "Completed",
            RunStatus::Failed => "Failed",
            RunStatus::Canceled => "Canceled",
        })
    }
}

impl RunStatus {
    /// The status a record names (`"Running"`, ...), if it is one.
    pub fn parse(text: &str) -> Option<RunStatus> {
        serde_json::from_value(Value::String(text.to_string())).ok()
    }

    pub fn is_terminal(self) -> bool {
        self != RunStatus::Running
    }

    /// A run's status lifecycle, pure: a run is `Running` until it ends, and an ended run stays
    /// as it ended (its record may still be completed, say with its metrics). A late or replayed
    /// record (a follower that lagged, an agent back after its run was declared lost) can neither
    /// bring an ended run back to `Running` nor end it another way.
    pub fn next(self, proposed: RunStatus) -> Result<RunStatus, InvalidRunTransition> {
        match (self, proposed) {
            (RunStatus::Running, to) => Ok(to),
            (from, to) if from == to => Ok(to),
            (from, to) => Err(InvalidRunTransition { from, to }),
        }
    }
}

/// A status change the run lifecycle refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a run that is {from:?} stays {from:?}; it cannot become {to:?}")]
pub struct InvalidRunTransition {
    pub from: RunStatus,
    pub to: RunStatus,
}

/// What a run folder's `run.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunMeta {
    pub name: String,
    pub status: RunStatus,
    pub flow: PathBuf,
    pub data: PathBuf,
    pub output_dir: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_run: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// A flex class entry's `--init` kwargs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<Map<String, Value>>,
    pub column_mapping: BTreeMap<String, String>,
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    pub duration_s: f64,
    pub total_lines: usize,
    pub completed_lines: usize,
    pub failed_lines: usize,
    pub concurrency: usize,
    pub pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub fn runs_dir(home: &Path) -> PathBuf {
    home.join("runs")
}

fn pointer(home: &Path, name: &str) -> PathBuf {
    runs_dir(home).join(format!("{name}.json"))
}

/// A run name must be usable as a file name.
pub fn check_name(name: &str) -> Result<()> {
    flowrt_api::names::check("run", name, flowrt_api::names::RUN_NAME_MAX).map_err(|e| anyhow!(e))
}

pub fn save(home: &Path, meta: &RunMeta) -> Result<()> {
    let text = serde_json::to_string_pretty(meta)?;
    for path in [meta.output_dir.join("run.json"), pointer(home, &meta.name)] {
        if let Some(parent) = path.parent() {
            fs_err::create_dir_all(parent)?;
        }
        let tmp = path.with_extension("json.tmp");
        fs_err::write(&tmp, &text)?;
        fs_err::rename(&tmp, &path)?;
    }
    Ok(())
}

pub fn load(home: &Path, name: &str) -> Result<RunMeta> {
    check_name(name)?;
    let path = pointer(home, name);
    let text = fs_err::read_to_string(&path).map_err(|_| {
        anyhow!(
            "run '{name}' does not exist\nhint: `flowrt run list` shows the runs in {}",
            runs_dir(home).display()
        )
    })?;
    let meta: RunMeta =
        serde_json::from_str(&text).with_context(|| format!("{} is damaged", path.display()))?;
    Ok(reconcile(meta))
}

/// A run recorded as Running whose process is gone (killed, machine restarted) is shown as Failed
/// with a hint to resume it, rather than Running forever.
fn reconcile(mut meta: RunMeta) -> RunMeta {
    if meta.status == RunStatus::Running && !process_alive(meta.pid) {
        meta.status = RunStatus::Failed;
        meta.error = Some(format!(
            "the run's process ({}) is gone; resume it with `flowrt run create --resume-from {}`",
            meta.pid, meta.name
        ));
    }
    meta
}

/// Whether `pid` is a live flowrt process (a reused pid running something else does not count).
fn process_alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Field 3 is the state; a zombie has exited.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    matches!(state, Some(s) if s != "Z") && String::from_utf8_lossy(&cmdline).contains("flowrt")
}

/// Delete run `meta`: its record under `home` and its folder, when that folder is the run's (its
/// `run.json` names the run: a folder the user pointed `--output-dir` at is checked, not trusted).
pub fn delete(home: &Path, meta: &RunMeta) -> Result<()> {
    let own = fs_err::read_to_string(meta.output_dir.join("run.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<RunMeta>(&t).ok())
        .is_some_and(|m| m.name == meta.name);
    if own {
        fs_err::remove_dir_all(&meta.output_dir)?;
    }
    fs_err::remove_file(pointer(home, &meta.name))?;
    Ok(())
}

pub fn exists(home: &Path, name: &str) -> bool {
    pointer(home, name).is_file()
}

pub fn list(home: &Path) -> Result<Vec<RunMeta>> {
    let mut out = Vec::new();
    let Ok(entries) = fs_err::read_dir(runs_dir(home)) else {
        return Ok(out);
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        if let Ok(text) = fs_err::read_to_string(&p) {
            if let Ok(meta) = serde_json::from_str::<RunMeta>(&text) {
                out.push(reconcile(meta));
            }
        }
    }
    // Oldest first, as they were created (timestamps compared as times, not as text).
    let when = |m: &RunMeta| m.created.parse::<jiff::Timestamp>().ok();
    out.sort_by(|a, b| when(a).cmp(&when(b)).then(a.name.cmp(&b.name)));
    Ok(out)
}

/// Every well-formed record of `line_runs.jsonl`, by line number (a torn last line from a killed
/// run is skipped).
pub fn line_records(dir: &Path) -> Result<BTreeMap<usize, Value>> {
    read_line_records(&dir.join("line_runs.jsonl"))
}

/// The records of a `line_runs.jsonl` file by line number (none if it is absent; a torn line is
/// skipped).
pub fn read_line_records(path: &Path) -> Result<BTreeMap<usize, Value>> {
    let mut out = BTreeMap::new();
    let Ok(file) = std::fs::File::open(path) else {
        return Ok(out);
    };
    for line in std::io::BufReader::new(file).lines() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            if let Some(n) = v.get("line_number").and_then(Value::as_u64) {
                out.insert(n as usize, v);
            }
        }
    }
    Ok(out)
}

/// The completed lines' outputs of a run, by line number.
pub fn outputs(dir: &Path) -> Result<BTreeMap<usize, Map<String, Value>>> {
    let path = dir.join("flow_outputs").join("output.jsonl");
    let text = fs_err::read_to_string(&path)?;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if let Ok(Value::Object(mut m)) = flowrt_flow::nonfinite::from_json_text(line) {
            if let Some(n) = m.remove("line_number").and_then(|v| v.as_u64()) {
                out.insert(n as usize, m);
            }
        }
    }
    Ok(out)
}

/// UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
/// Now, as RFC 3339 in UTC with microseconds, so records made within one second still sort in the
/// order they were made.
/// Unix milliseconds as run records write times.
pub fn utc_from_ms(ms: i64) -> Option<String> {
    jiff::Timestamp::from_millisecond(ms)
        .ok()
        .map(|t| t.to_string())
}

pub fn utc_now() -> String {
    let now = jiff::Timestamp::now();
    now.round(jiff::Unit::Microsecond)
        .unwrap_or(now)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::RunStatus::{self, *};

    #[test]
    fn a_running_run_may_end_any_way_and_an_ended_one_stays_as_it_ended() {
        for to in [Running, Completed, Failed, Canceled] {
            assert_eq!(Running.next(to), Ok(to));
        }
        for from in [Completed, Failed, Canceled] {
            assert!(from.is_terminal());
            assert_eq!(from.next(from), Ok(from));
            for to in [Running, Completed, Failed, Canceled] {
                if to != from {
                    let refused = from.next(to).unwrap_err();
                    assert_eq!((refused.from, refused.to), (from, to));
                }
            }
        }
        assert_eq!(RunStatus::parse("Canceled"), Some(Canceled));
        assert_eq!(RunStatus::parse("Paused"), None);
    }
}
