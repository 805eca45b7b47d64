//! The workspace's small vocabularies every role names: user roles and where sessions run.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Created on the server's first start; everything.
    Owner,
    /// Manages users, computes and environments.
    Admin,
    /// Starts sessions and runs flows.
    User,
    /// Reads only.
    Viewer,
}

/// Where sessions run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ComputeKind {
    /// Named, long-lived, assigned to one user, started and stopped by hand.
    Instance,
    /// Provisioned for a session, released when its last session stops.
    Serverless,
}

/// Whether a compute can take sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum ComputeStatus {
    Running,
    Stopped,
}
