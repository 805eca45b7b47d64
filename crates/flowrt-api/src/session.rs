//! Compute sessions as every role sees them: status, sizes and the records the server keeps.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A session's lifecycle status. `Preparing` carries the phase it is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum SessionStatus {
    NotAvailable,
    Preparing,
    Running,
    Stopping,
    Stopped,
    Failed,
}

impl fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What a `Preparing` session is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PreparingPhase {
    /// Reading requirements, choosing the environment.
    Resolving,
    /// Building the environment with uv.
    Installing,
    /// Starting the agent process.
    Starting,
}

/// A session's size: the resource limits its agent runs under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SessionSize {
    #[default]
    Small,
    Medium,
    Large,
}

impl SessionSize {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "small" => Some(SessionSize::Small),
            "medium" => Some(SessionSize::Medium),
            "large" => Some(SessionSize::Large),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SessionSize::Small => "small",
            SessionSize::Medium => "medium",
            SessionSize::Large => "large",
        }
    }

    /// Limits per size (documented in the README): address space in MiB, open files, processes,
    /// Python workers.
    pub fn limits(self) -> SizeLimits {
        match self {
            SessionSize::Small => SizeLimits {
                memory_mib: 4096,
                open_files: 1024,
                processes: 256,
                workers: 1,
            },
            SessionSize::Medium => SizeLimits {
                memory_mib: 8192,
                open_files: 4096,
                processes: 1024,
                workers: 2,
            },
            SessionSize::Large => SizeLimits {
                memory_mib: 16384,
                open_files: 16384,
                processes: 4096,
                workers: 4,
            },
        }
    }
}

/// Resource limits applied to a session's agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeLimits {
    pub memory_mib: u64,
    pub open_files: u64,
    pub processes: u64,
    pub workers: usize,
}

/// The error body every API error returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiError {
    pub code: crate::ErrorCode,
    pub message: String,
}
