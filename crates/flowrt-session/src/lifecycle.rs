//! The session lifecycle as a pure state machine: no IO, every transition checked.
//!
//! `NotAvailable → Preparing(resolving → installing → starting) → Running → Stopping → Stopped`,
//! or `Failed` (with a reason) from any active state. A stopped or failed session can be started
//! again (reset recreates it with the same environment).

use flowrt_api::{PreparingPhase, SessionStatus};

/// Where a session is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    NotAvailable,
    Preparing(PreparingPhase),
    Running,
    Stopping,
    Stopped,
    Failed { reason: String },
}

/// What happened to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    StartRequested,
    EnvResolved {
        cached: bool,
    },
    EnvBuilt,
    AgentReady,
    /// Preparing failed (bad requirements, agent did not start, ...).
    PrepareFailed {
        reason: String,
    },
    /// The agent process ended without being asked to.
    AgentExited {
        reason: String,
    },
    StopRequested,
    IdleTimeout,
    AgentStopped,
    /// The server restarted while the session was preparing: it settles as stopped, to be
    /// prepared again.
    PrepareInterrupted,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a session that is {from} cannot take '{event}'{hint}")]
pub struct InvalidTransition {
    pub from: String,
    pub event: String,
    pub hint: &'static str,
}

impl State {
    /// The status and phase as stored and shown.
    pub fn status(&self) -> (SessionStatus, Option<PreparingPhase>) {
        match self {
            State::NotAvailable => (SessionStatus::NotAvailable, None),
            State::Preparing(p) => (SessionStatus::Preparing, Some(*p)),
            State::Running => (SessionStatus::Running, None),
            State::Stopping => (SessionStatus::Stopping, None),
            State::Stopped => (SessionStatus::Stopped, None),
            State::Failed { .. } => (SessionStatus::Failed, None),
        }
    }

    /// Rebuild from what the store holds.
    pub fn from_status(
        status: SessionStatus,
        phase: Option<PreparingPhase>,
        reason: Option<&str>,
    ) -> State {
        match status {
            SessionStatus::NotAvailable => State::NotAvailable,
            SessionStatus::Preparing => {
                State::Preparing(phase.unwrap_or(PreparingPhase::Resolving))
            }
            SessionStatus::Running => State::Running,
            SessionStatus::Stopping => State::Stopping,
            SessionStatus::Stopped => State::Stopped,
            SessionStatus::Failed => State::Failed {
                reason: reason.unwrap_or("unknown").to_string(),
            },
        }
    }

    fn name(&self) -> String {
        match self {
            State::Preparing(p) => format!("Preparing ({})", phase_name(*p)),
            State::Failed { .. } => "Failed".into(),
            other => format!("{:?}", other.status().0),
        }
    }

    /// Apply `event`: the next state, or why it cannot happen.
    pub fn apply(&self, event: &Event) -> Result<State, InvalidTransition> {
        use PreparingPhase::*;
        let next = match (self, event) {
            (
                State::NotAvailable | State::Stopped | State::Failed { .. },
                Event::StartRequested,
            ) => Some(State::Preparing(Resolving)),
            (State::Preparing(Resolving), Event::EnvResolved { cached: true }) => {
                Some(State::Preparing(Starting))
            }
            (State::Preparing(Resolving), Event::EnvResolved { cached: false }) => {
                Some(State::Preparing(Installing))
            }
            (State::Preparing(Installing), Event::EnvBuilt) => Some(State::Preparing(Starting)),
            (State::Preparing(Starting), Event::AgentReady) => Some(State::Running),
            (State::Preparing(_), Event::PrepareInterrupted) => Some(State::Stopped),
            (State::Preparing(_), Event::PrepareFailed { reason }) => Some(State::Failed {
                reason: reason.clone(),
            }),
            (State::Preparing(_) | State::Running, Event::AgentExited { reason }) => {
                Some(State::Failed {
                    reason: reason.clone(),
                })
            }
            (State::Preparing(_) | State::Running, Event::StopRequested | Event::IdleTimeout) => {
                Some(State::Stopping)
            }
            // A stop of a failed session just settles it.
            (State::Failed { .. }, Event::StopRequested) => Some(State::Stopped),
            (State::Stopping, Event::AgentStopped | Event::AgentExited { .. }) => {
                Some(State::Stopped)
            }
            _ => None,
        };
        next.ok_or_else(|| InvalidTransition {
            from: self.name(),
            event: event_name(event).to_string(),
            hint: match (self, event) {
                (State::Stopped, Event::StopRequested) => "; it is already stopped",
                (State::Running | State::Preparing(_), Event::StartRequested) => {
                    "; it is already started"
                }
                _ => "",
            },
        })
    }
}

pub fn phase_name(p: PreparingPhase) -> &'static str {
    match p {
        PreparingPhase::Resolving => "resolving",
        PreparingPhase::Installing => "installing",
        PreparingPhase::Starting => "starting",
    }
}

fn event_name(e: &Event) -> &'static str {
    match e {
        Event::StartRequested => "start",
        Event::EnvResolved { .. } => "environment resolved",
        Event::EnvBuilt => "environment built",
        Event::AgentReady => "agent ready",
        Event::PrepareFailed { .. } => "prepare failed",
        Event::AgentExited { .. } => "agent exited",
        Event::StopRequested => "stop",
        Event::IdleTimeout => "idle timeout",
        Event::AgentStopped => "agent stopped",
        Event::PrepareInterrupted => "prepare interrupted",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PreparingPhase::*;

    fn run(events: &[Event]) -> Result<State, InvalidTransition> {
        events
            .iter()
            .try_fold(State::NotAvailable, |s, e| s.apply(e))
    }

    #[test]
    fn the_happy_paths() {
        let cached = [
            Event::StartRequested,
            Event::EnvResolved { cached: true },
            Event::AgentReady,
        ];
        assert_eq!(run(&cached), Ok(State::Running));
        let built = [
            Event::StartRequested,
            Event::EnvResolved { cached: false },
            Event::EnvBuilt,
            Event::AgentReady,
        ];
        assert_eq!(run(&built), Ok(State::Running));
        let stopped = [&built[..], &[Event::StopRequested, Event::AgentStopped]].concat();
        assert_eq!(run(&stopped), Ok(State::Stopped));
        let restarted = [&stopped[..], &[Event::StartRequested]].concat();
        assert_eq!(run(&restarted), Ok(State::Preparing(Resolving)));
    }

    #[test]
    fn an_interrupted_preparation_settles_stopped_and_starts_again() {
        let interrupted = [
            Event::StartRequested,
            Event::EnvResolved { cached: false },
            Event::PrepareInterrupted,
        ];
        assert_eq!(run(&interrupted), Ok(State::Stopped));
        let again = [&interrupted[..], &[Event::StartRequested]].concat();
        assert_eq!(run(&again), Ok(State::Preparing(Resolving)));
        // Only a preparation can be interrupted.
        assert!(State::Running.apply(&Event::PrepareInterrupted).is_err());
    }

    #[test]
    fn failures_carry_their_reason_and_can_be_restarted() {
        let failed = [
            Event::StartRequested,
            Event::EnvResolved { cached: false },
            Event::PrepareFailed {
                reason: "no such package nopkg".into(),
            },
        ];
        assert_eq!(
            run(&failed),
            Ok(State::Failed {
                reason: "no such package nopkg".into()
            })
        );
        let crashed = [
            Event::StartRequested,
            Event::EnvResolved { cached: true },
            Event::AgentReady,
            Event::AgentExited {
                reason: "killed by signal 9".into(),
            },
        ];
        let s = run(&crashed).unwrap();
        assert_eq!(s.status(), (SessionStatus::Failed, None));
        assert_eq!(
            s.apply(&Event::StartRequested),
            Ok(State::Preparing(Resolving))
        );
        assert_eq!(s.apply(&Event::StopRequested), Ok(State::Stopped));
    }

    #[test]
    fn idle_timeout_stops_a_running_session() {
        let s = run(&[
            Event::StartRequested,
            Event::EnvResolved { cached: true },
            Event::AgentReady,
            Event::IdleTimeout,
        ])
        .unwrap();
        assert_eq!(s, State::Stopping);
        assert_eq!(
            s.apply(&Event::AgentExited {
                reason: "exit 0".into()
            }),
            Ok(State::Stopped)
        );
    }

    #[test]
    fn invalid_transitions_say_why() {
        let e = State::Stopped.apply(&Event::StopRequested).unwrap_err();
        assert_eq!(
            e.to_string(),
            "a session that is Stopped cannot take 'stop'; it is already stopped"
        );
        let e = State::Running.apply(&Event::StartRequested).unwrap_err();
        assert_eq!(
            e.to_string(),
            "a session that is Running cannot take 'start'; it is already started"
        );
        let e = State::Preparing(Installing)
            .apply(&Event::AgentReady)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "a session that is Preparing (installing) cannot take 'agent ready'"
        );
        assert!(State::NotAvailable.apply(&Event::IdleTimeout).is_err());
        assert!(State::Stopped.apply(&Event::AgentReady).is_err());
    }

    #[test]
    fn status_round_trips_through_the_store() {
        for s in [
            State::NotAvailable,
            State::Preparing(Installing),
            State::Running,
            State::Stopping,
            State::Stopped,
            State::Failed { reason: "r".into() },
        ] {
            let (status, phase) = s.status();
            let reason = match &s {
                State::Failed { reason } => Some(reason.as_str()),
                _ => None,
            };
            assert_eq!(State::from_status(status, phase, reason), s);
        }
    }
}
