//! How a batch run made here shows its progress: an indicatif bar on a terminal, a plain
//! progress line every few seconds otherwise (CI logs), warnings and errors above the bar.

use crate::runs;
use flowrt_runtime::batch;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The CLI's reporter: an indicatif bar on a terminal, a plain progress line every few seconds
/// otherwise (CI logs); warnings above the bar.
#[derive(Default)]
pub struct Terminal {
    bar: std::sync::OnceLock<indicatif::ProgressBar>,
    last_line: Mutex<Option<Instant>>,
}

impl Terminal {
    /// A bar drawn on stderr when it is a terminal, else hidden.
    fn new_bar(total: usize) -> indicatif::ProgressBar {
        if !std::io::stderr().is_terminal() {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new(total as u64);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("[{bar:30}] {pos}/{len} lines, {msg}")
        {
            bar.set_style(style.progress_chars("#>."));
        }
        bar
    }

    fn print(&self, text: String) {
        match self.bar.get() {
            Some(bar) if !bar.is_hidden() => bar.println(text),
            _ => eprintln!("{text}"),
        }
    }
}

impl batch::Reporter for Terminal {
    fn note(&self, msg: &str) {
        eprintln!("{msg}");
    }

    fn warn(&self, msg: &str) {
        self.print(format!("warning: {msg}"));
    }

    fn error(&self, msg: &str) {
        self.print(format!("error: {msg}"));
    }

    fn started(&self, meta: &runs::RunMeta, progress: &batch::Progress) {
        eprintln!(
            "run {}: {} lines, concurrency: {}",
            meta.name, meta.total_lines, meta.concurrency
        );
        if progress.kept > 0 {
            eprintln!(
                "resuming: {} of {} lines already completed",
                progress.kept, progress.total
            );
        }
        let bar = Terminal::new_bar(progress.total);
        bar.set_position(progress.done as u64);
        let _ = self.bar.set(bar);
        if let Ok(mut t) = self.last_line.lock() {
            *t = Some(Instant::now());
        }
    }

    fn line_finished(&self, progress: &batch::Progress) {
        if let Some(bar) = self.bar.get() {
            bar.set_position(progress.done as u64);
        }
    }

    fn tick(&self, progress: &batch::Progress) {
        match self.bar.get() {
            Some(bar) if !bar.is_hidden() => bar.set_message(progress.details()),
            _ => {
                let Ok(mut last) = self.last_line.lock() else {
                    return;
                };
                if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                    *last = Some(Instant::now());
                    eprintln!("progress: {}", progress.text());
                }
            }
        }
    }

    fn output(&self, line: &str) {
        println!("{line}");
    }

    fn lines_done(&self, _progress: &batch::Progress) {
        if let Some(bar) = self.bar.get() {
            if !bar.is_hidden() {
                bar.finish_and_clear();
            }
        }
    }
}
