//! A run as `run show` and `run list` print it, whether it was made here (its folder's
//! `run.json`) or in the workspace (the server's `RunView`).

use crate::runs;
use flowrt_api::responses::RunView;

/// What `run show` and `run list` print of a run, made here or in the workspace.
pub struct Summary {
    pub name: String,
    pub status: String,
    /// The session that runs it: a workspace run's.
    pub session: Option<String>,
    /// A workspace run's flow version; a run made here, its folder.
    pub flow: Option<String>,
    pub data: Option<String>,
    pub base_run: Option<String>,
    pub total_lines: usize,
    pub completed_lines: usize,
    pub failed_lines: usize,
    pub created: String,
    pub finished: Option<String>,
    pub duration_s: f64,
    pub concurrency: usize,
    pub output_dir: Option<String>,
    pub error: Option<String>,
}

impl From<&runs::RunMeta> for Summary {
    fn from(m: &runs::RunMeta) -> Summary {
        Summary {
            name: m.name.clone(),
            status: m.status.to_string(),
            session: None,
            flow: Some(m.flow.display().to_string()),
            data: Some(m.data.display().to_string()),
            base_run: m.base_run.clone(),
            total_lines: m.total_lines,
            completed_lines: m.completed_lines,
            failed_lines: m.failed_lines,
            created: m.created.clone(),
            finished: m.finished.clone(),
            duration_s: m.duration_s,
            concurrency: m.concurrency,
            output_dir: Some(m.output_dir.display().to_string()),
            error: m.error.clone(),
        }
    }
}

impl From<&RunView> for Summary {
    fn from(r: &RunView) -> Summary {
        Summary {
            name: r.name.clone(),
            status: r.status.clone(),
            session: Some(r.session.clone()),
            flow: r.flow.clone(),
            data: None,
            base_run: r.base_run.clone(),
            total_lines: r.total_lines,
            completed_lines: r.completed_lines,
            failed_lines: r.failed_lines,
            created: r.created.clone(),
            finished: r.finished.clone(),
            duration_s: r.duration_s,
            concurrency: r.concurrency,
            output_dir: None,
            error: r.error.clone(),
        }
    }
}

/// Runs as a table; with workspace runs among them, their flow versions and sessions too.
pub fn print_list(all: &[Summary]) {
    let with_sessions = all.iter().any(|r| r.session.is_some());
    let mut header = vec![
        "NAME", "STATUS", "LINES", "DONE", "FAILED", "DURATION", "CREATED",
    ];
    if with_sessions {
        header.push("FLOW");
        header.push("SESSION");
    }
    let mut t = crate::fmt::table(&header, &["LINES", "DONE", "FAILED", "DURATION"]);
    for r in all {
        let mut row = vec![
            r.name.clone(),
            r.status.clone(),
            r.total_lines.to_string(),
            r.completed_lines.to_string(),
            r.failed_lines.to_string(),
            if r.status == "Running" {
                "-".into()
            } else {
                crate::fmt::seconds(r.duration_s)
            },
            crate::fmt::timestamp(&r.created),
        ];
        if with_sessions {
            // A workspace run names its flow version; a run made here, its folder.
            let flow = match (&r.session, &r.flow) {
                (Some(_), Some(f)) => f.clone(),
                _ => "-".to_string(),
            };
            row.push(flow);
            row.push(r.session.clone().unwrap_or_else(|| "-".into()));
        }
        t.add_row(row);
    }
    crate::fmt::print_table(&t);
}

/// A run for people, one field a line.
pub fn print_summary(r: &Summary) {
    println!("name:        {}", r.name);
    println!("status:      {}", r.status);
    if let Some(s) = &r.session {
        println!("session:     {s}");
    }
    if let Some(f) = &r.flow {
        println!("flow:        {f}");
    }
    if let Some(d) = &r.data {
        println!("data:        {d}");
    }
    if let Some(b) = &r.base_run {
        println!("base run:    {b}");
    }
    println!(
        "lines:       {} total, {} completed, {} failed",
        r.total_lines, r.completed_lines, r.failed_lines
    );
    println!("created:     {}", crate::fmt::timestamp(&r.created));
    if let Some(f) = &r.finished {
        println!("finished:    {}", crate::fmt::timestamp(f));
    }
    println!("duration:    {}", crate::fmt::seconds(r.duration_s));
    println!("concurrency: {}", r.concurrency);
    if let Some(o) = &r.output_dir {
        println!("output dir:  {o}");
    }
    if let Some(e) = &r.error {
        println!("error:       {e}");
    }
}
