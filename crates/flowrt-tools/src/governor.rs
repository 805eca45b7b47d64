//! One rate governor per model endpoint (URL and model), shared by every request this process
//! sends there: every line of a run, every run and test of a session.
//!
//! Without it, concurrent lines that get HTTP 429 each sleep what the server said and wake
//! together, one gets through and the rest are refused again: the quota is spent on refusals and
//! lines fail after their retries. With it, requests start on a shared pace:
//!
//! - unpaced until the first 429 (a deployment with room is never slowed), but for a cold
//!   endpoint's first requests, which start a millisecond apart rather than all at once;
//! - at the first 429, the pace becomes the rate the server accepted over the last second
//!   (requests started less those refused), somewhat below it; each later 429 (at most one cut
//!   per ten requests at the pace) lowers it by a tenth, and every success
//!   raises it slowly (additive increase, multiplicative decrease), so the pace settles just under
//!   the quota and follows it when it changes or when other clients share it;
//! - a 429's `Retry-After` / `retry-after-ms` holds every request back until then (a coordinated
//!   wait), and starts after it are spaced and jittered so they do not arrive together;
//! - a reply whose `x-ratelimit-remaining-requests` or `-tokens` is 0 is read as a 429 before
//!   it happens: everyone waits for its `x-ratelimit-reset-*`, and the pace slows;
//! - a quota the user declares is the starting pace (a connection's `rpm`), and a declared `tpm`
//!   spaces requests by their tokens (prompt at four characters a token, plus `max_tokens`).

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How fast the pace grows back after a cut: this share of itself a second (each success adds
/// this much, and successes come at the pace). Fast enough to take back a cut in two seconds,
/// and to find the room another client leaves.
const INCREASE_PER_S: f64 = 0.05;
/// The share of the pace kept at each 429 after the first.
const DECREASE: f64 = 0.9;
/// 429s within this many requests at the new pace after a cut belong to the same overload: one
/// cut (kept between 0.1 and 1 s, so a fast pace converges in a fraction of a second).
const CUT_COOLDOWN_REQUESTS: f64 = 10.0;
/// The share of what the server accepted lately that the first pace takes: the quota's opening
/// burst, and replies still on their way, make that count high.
const FIRST_SHARE: f64 = 0.8;
/// The slowest pace: one request every 10 s.
const MIN_RATE: f64 = 0.1;
/// The first pace is never below this: a quota that let nothing through in the last second
/// (every request refused) says little about its rate, and growing from a crawl takes minutes.
const FIRST_RATE_FLOOR: f64 = 1.0;
/// A cold endpoint's first requests start this far apart, even unpaced: a batch's first wave of
/// lines would otherwise open all its connections in the same instant, more than a small
/// server's accept queue holds (Python's `http.server` keeps 5), and a dropped connection
/// attempt costs the kernel's one-second retransmit.
const WARMUP_SPACING: Duration = Duration::from_millis(1);
const WARMUP_REQUESTS: u64 = 64;

/// What a governor has seen, for progress lines.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RateStatus {
    /// The endpoint (URL, and the model for endpoints that serve several).
    pub endpoint: String,
    /// The pace in requests a second; `None` while unpaced (no 429 yet, no declared quota).
    pub pace: Option<f64>,
    /// Requests sent, and how many got 429.
    pub requests: u64,
    pub rate_limited: u64,
    /// Total time requests waited for their turn.
    pub waited: Duration,
}

/// The quota a connection declares, a minute, and how long one call may wait it out.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Declared {
    pub rpm: Option<f64>,
    pub tpm: Option<f64>,
    /// `rate_limit_budget_s`: replaces `RetryPolicy::rate_limit_budget` for this endpoint.
    pub rate_limit_budget: Option<Duration>,
}

#[derive(Debug)]
struct State {
    /// Declared tokens a second; 0: none.
    tokens_per_s: f64,
    /// When the declared token budget has room for the next request.
    tokens_free_at: Instant,
    /// Requests a second; 0: unpaced.
    rate: f64,
    /// When the next request may start.
    next_start: Instant,
    /// Starts and 429s of the last second: what the server accepted lately is the difference
    /// (successes would lag by the model's latency: the first 429s come before any reply).
    starts: VecDeque<Instant>,
    refusals: VecDeque<Instant>,
    last_cut: Option<Instant>,
    requests: u64,
    rate_limited: u64,
    waited: Duration,
}

/// The pace of one endpoint.
#[derive(Debug)]
pub struct Governor {
    endpoint: String,
    state: Mutex<State>,
}

fn registry() -> &'static Mutex<HashMap<String, Arc<Governor>>> {
    static GOVERNORS: OnceLock<Mutex<HashMap<String, Arc<Governor>>>> = OnceLock::new();
    GOVERNORS.get_or_init(Default::default)
}

/// The governor of `endpoint` in this process (made on first use), starting from what the
/// connection declares.
pub fn governor(endpoint: &str, declared: Declared) -> Arc<Governor> {
    let mut all = registry().lock().unwrap_or_else(|p| p.into_inner());
    all.entry(endpoint.to_string())
        .or_insert_with(|| {
            Arc::new(Governor {
                endpoint: endpoint.to_string(),
                state: Mutex::new(State {
                    tokens_per_s: declared.tpm.map_or(0.0, |t| t / 60.0),
                    tokens_free_at: Instant::now(),
                    rate: declared
                        .rpm
                        .filter(|r| r.is_finite() && *r > 0.0)
                        .map_or(0.0, |r| (r / 60.0).max(MIN_RATE)),
                    next_start: Instant::now(),
                    starts: VecDeque::new(),
                    refusals: VecDeque::new(),
                    last_cut: None,
                    requests: 0,
                    rate_limited: 0,
                    waited: Duration::ZERO,
                }),
            })
        })
        .clone()
}

tokio::task_local! {
    /// Model calls answered on this task so far (see [`counting_answers`]).
    static ANSWERED_ON_TASK: Cell<u64>;
}

/// Run `work` and count the model calls answered (not refused) on its task: a batch line's own
/// calls. A process-wide count would also hold the first calls of lines still running, or
/// requests still waiting their turn, and over-state the calls a line makes.
pub async fn counting_answers<F: Future>(work: F) -> (F::Output, u64) {
    ANSWERED_ON_TASK
        .scope(Cell::new(0), async {
            let out = work.await;
            (out, ANSWERED_ON_TASK.with(Cell::get))
        })
        .await
}

/// What every governor of this process has seen, busiest first.
pub fn rate_statuses() -> Vec<RateStatus> {
    let all: Vec<Arc<Governor>> = registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .cloned()
        .collect();
    let mut out: Vec<RateStatus> = all.iter().map(|g| g.status()).collect();
    out.sort_by_key(|s| std::cmp::Reverse(s.requests));
    out
}

impl Governor {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait for the turn of a request that counts `tokens` against a token quota.
    pub async fn admit(&self, tokens: f64) {
        let start = {
            let mut s = self.lock();
            let now = Instant::now();
            s.requests += 1;
            let mut start = s.next_start.max(now);
            if s.tokens_per_s > 0.0 {
                start = start.max(s.tokens_free_at);
                s.tokens_free_at = start + Duration::from_secs_f64(tokens / s.tokens_per_s);
            }
            if s.rate > 0.0 {
                // Jitter within a tenth of the spacing: evenly paced clients that share a quota
                // do not stay in lock-step.
                let spacing = 1.0 / s.rate;
                s.next_start = start + Duration::from_secs_f64(spacing * (0.95 + 0.1 * unit()));
            } else if s.requests <= WARMUP_REQUESTS {
                s.next_start = start + WARMUP_SPACING;
            }
            let wait = start - now;
            s.waited += wait;
            s.starts.push_back(start);
            trim(&mut s.starts, now);
            start
        };
        tokio::time::sleep_until(start.into()).await;
    }

    /// The request succeeded: the pace may grow.
    pub fn succeeded(&self) {
        // Outside a counted task (a single test), there is nothing to count.
        let _ = ANSWERED_ON_TASK.try_with(|n| n.set(n.get() + 1));
        let mut s = self.lock();
        if s.rate > 0.0 {
            // d(rate)/dt = INCREASE_PER_S * rate, with one success every 1/rate seconds.
            s.rate += INCREASE_PER_S;
        }
    }

    /// The request got 429: hold everyone back for what the server said, and slow the pace.
    pub fn rate_limited(&self, retry_after: Option<Duration>) {
        {
            let mut s = self.lock();
            let now = Instant::now();
            s.rate_limited += 1;
            s.refusals.push_back(now);
            trim(&mut s.refusals, now);
        }
        self.slow_down(retry_after);
    }

    /// A reply said the quota is spent until `reset`: the same as a 429, without the refusal.
    pub fn quota_spent(&self, reset: Duration) {
        self.slow_down(Some(reset));
    }

    fn slow_down(&self, retry_after: Option<Duration>) {
        let mut s = self.lock();
        let now = Instant::now();
        if let Some(wait) = retry_after {
            let until = now + wait.min(Duration::from_secs(60));
            s.next_start = s.next_start.max(until);
        }
        let cooldown = if s.rate > 0.0 {
            Duration::from_secs_f64((CUT_COOLDOWN_REQUESTS / s.rate).clamp(0.1, 1.0))
        } else {
            Duration::ZERO
        };
        if s.last_cut.is_some_and(|t| now.duration_since(t) < cooldown) {
            return;
        }
        s.last_cut = Some(now);
        s.rate = if s.rate > 0.0 {
            s.rate * DECREASE
        } else {
            // The first 429: what the server accepted over the last second is what the quota
            // allows, plus the burst a quota lets through at first, hence well below it.
            trim(&mut s.starts, now);
            trim(&mut s.refusals, now);
            let accepted = s.starts.len().saturating_sub(s.refusals.len());
            (accepted as f64 * FIRST_SHARE).max(FIRST_RATE_FLOOR)
        }
        .max(MIN_RATE);
    }

    pub fn status(&self) -> RateStatus {
        let s = self.lock();
        RateStatus {
            endpoint: self.endpoint.clone(),
            pace: (s.rate > 0.0).then_some(s.rate),
            requests: s.requests,
            rate_limited: s.rate_limited,
            waited: s.waited,
        }
    }
}

/// Drop the instants more than a second before `now`.
fn trim(times: &mut VecDeque<Instant>, now: Instant) {
    while times
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) > Duration::from_secs(1))
    {
        times.pop_front();
    }
}

fn unit() -> f64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0x9ace);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(name: &str, rpm: Option<f64>) -> Arc<Governor> {
        fresh_declared(
            name,
            Declared {
                rpm,
                ..Declared::default()
            },
        )
    }

    fn fresh_declared(name: &str, declared: Declared) -> Arc<Governor> {
        governor(&format!("test://{name}/{:?}", Instant::now()), declared)
    }

    #[tokio::test]
    async fn each_task_counts_only_the_answers_it_got() {
        let g = fresh("counting", None);
        let line = |calls: usize, refused: usize| {
            let g = g.clone();
            tokio::spawn(counting_answers(async move {
                for _ in 0..refused {
                    g.rate_limited(Some(Duration::ZERO));
                }
                for _ in 0..calls {
                    tokio::task::yield_now().await;
                    g.succeeded();
                }
            }))
        };
        let (two, three) = (line(2, 1), line(3, 0));
        assert_eq!(two.await.unwrap().1, 2, "a 429 is not an answer");
        assert_eq!(three.await.unwrap().1, 3);
        // Outside a counting task, an answer is counted by no one and harms nothing.
        g.succeeded();
    }

    #[tokio::test]
    async fn unpaced_until_the_first_429_then_just_under_what_got_through() {
        let g = fresh("first", None);
        assert_eq!(g.status().pace, None);
        // 21 requests start (no reply yet: the model is slow), the 21st is refused.
        for _ in 0..21 {
            g.admit(0.0).await;
        }
        g.rate_limited(Some(Duration::from_millis(50)));
        let pace = g.status().pace.unwrap();
        assert!((pace - 16.0).abs() < 1e-9, "{pace}");
        // Another 429 within ten requests at that pace is the same overload: no second cut.
        g.rate_limited(None);
        assert_eq!(g.status().pace, Some(pace));
        assert_eq!(g.status().rate_limited, 2);
    }

    #[test]
    fn successes_raise_the_pace_slowly_and_a_declared_quota_is_the_start() {
        let g = fresh("declared", Some(1200.0));
        assert_eq!(g.status().pace, Some(20.0));
        for _ in 0..20 {
            g.succeeded();
        }
        // Twenty successes at 20/s: about a second, so 5% more.
        let pace = g.status().pace.unwrap();
        assert!((pace - 21.0).abs() < 1e-9, "{pace}");
    }

    #[tokio::test]
    async fn a_retry_after_holds_every_request_back_and_starts_are_spaced() {
        let g = fresh("spaced", Some(600.0));
        g.rate_limited(Some(Duration::from_millis(200)));
        let t = Instant::now();
        g.admit(0.0).await;
        assert!(
            t.elapsed() >= Duration::from_millis(190),
            "{:?}",
            t.elapsed()
        );
        // 600/min cut to 540/min: 9 a second, about 111 ms apart.
        let t = Instant::now();
        g.admit(0.0).await;
        g.admit(0.0).await;
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(190) && took < Duration::from_millis(400),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn a_declared_token_quota_spaces_requests_by_their_tokens() {
        // 60,000 tokens a minute is 1,000 a second: 100-token requests 100 ms apart.
        let g = fresh_declared(
            "tpm",
            Declared {
                tpm: Some(60_000.0),
                ..Declared::default()
            },
        );
        let t = Instant::now();
        for _ in 0..4 {
            g.admit(100.0).await;
        }
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(290) && took < Duration::from_millis(450),
            "{took:?}"
        );
    }
}
