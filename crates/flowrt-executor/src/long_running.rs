//! The `{node_name} has been running for {duration} seconds` warnings: which running nodes have
//! crossed another whole interval since they started. Observers feed it node starts and finishes;
//! whoever owns the log asks it periodically what is due.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A running node: its line (`None` for aggregation) and name.
type NodeKey = (Option<usize>, String);

#[derive(Default)]
pub struct LongRunning {
    /// When each running node started, and how many intervals were already reported.
    running: Mutex<HashMap<NodeKey, (Instant, u64)>>,
}

impl LongRunning {
    pub fn started(&self, line: Option<usize>, node: &str) {
        if let Ok(mut r) = self.running.lock() {
            r.insert((line, node.to_string()), (Instant::now(), 0));
        }
    }

    pub fn finished(&self, line: Option<usize>, node: &str) {
        if let Ok(mut r) = self.running.lock() {
            r.remove(&(line, node.to_string()));
        }
    }

    /// The warnings due now, each once per interval crossed:
    /// `line 3: slow_node has been running for 60 seconds` (or `aggregation: ...`).
    pub fn due(&self, interval: Duration) -> Vec<String> {
        let mut out = Vec::new();
        let Ok(mut running) = self.running.lock() else {
            return out;
        };
        for ((line, node), (start, warned)) in running.iter_mut() {
            let periods = (start.elapsed().as_secs_f64() / interval.as_secs_f64()) as u64;
            if periods > *warned {
                *warned = periods;
                let place = line
                    .map(|l| format!("line {l}"))
                    .unwrap_or_else(|| "aggregation".into());
                out.push(format!(
                    "{place}: {node} has been running for {} seconds",
                    seconds(periods as f64 * interval.as_secs_f64())
                ));
            }
        }
        out.sort();
        out
    }
}

/// Seconds as people write them: `60`, `0.6`.
fn seconds(s: f64) -> String {
    let rounded = (s * 10.0).round() / 10.0;
    if rounded.fract() == 0.0 {
        format!("{rounded:.0}")
    } else {
        format!("{rounded:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_once_per_interval_until_the_node_finishes() {
        let lr = LongRunning::default();
        lr.started(Some(3), "slow");
        lr.started(None, "agg");
        assert!(lr.due(Duration::from_millis(50)).is_empty());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(
            lr.due(Duration::from_millis(50)),
            vec![
                "aggregation: agg has been running for 0.1 seconds",
                "line 3: slow has been running for 0.1 seconds"
            ]
        );
        assert!(
            lr.due(Duration::from_millis(50)).is_empty(),
            "not again within the same interval"
        );
        lr.finished(Some(3), "slow");
        lr.finished(None, "agg");
        std::thread::sleep(Duration::from_millis(60));
        assert!(lr.due(Duration::from_millis(50)).is_empty());
    }
}
