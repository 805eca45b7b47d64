//! The workspace's small vocabularies every role names: user roles and where sessions run.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A set of permissions a user holds. Mapped to Azure's built-in roles: `owner` is Owner,
/// `admin` is Contributor with user management, `user` is AzureML Data Scientist, `viewer` is
/// Reader, and `access-admin` is User Access Administrator (it grants roles, nothing else).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Created on the server's first start; everything.
    Owner,
    /// Manages users, computes, identities and environments; sees every serverless session.
    Admin,
    /// Starts sessions and runs flows (a data scientist).
    User,
    /// Reads only.
    Viewer,
    /// Grants and removes roles (`roleAssignments/write`) without owning the workspace; held
    /// besides a user's own role.
    AccessAdmin,
}

/// What a request needs. Every API route names one (in the server's route table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub enum Permission {
    /// Liveness: anyone, without a token.
    #[serde(rename = "public")]
    Public,
    /// Read what the caller may see.
    #[serde(rename = "read")]
    Read,
    /// Push flows and data, start and use sessions, run batches (`sessions/write`).
    #[serde(rename = "sessions/write")]
    SessionsWrite,
    /// Create endpoints and deploy flow versions behind them.
    #[serde(rename = "endpoints/write")]
    EndpointsWrite,
    /// Score endpoints with a user token (endpoint keys need no permission).
    #[serde(rename = "endpoints/score")]
    EndpointsScore,
    /// Create and assign compute instances.
    #[serde(rename = "computes/write")]
    ComputesWrite,
    /// Publish custom environments.
    #[serde(rename = "environments/write")]
    EnvironmentsWrite,
    /// Create identities and grant their use.
    #[serde(rename = "identities/write")]
    IdentitiesWrite,
    /// Create, disable and list users; create tokens for others.
    #[serde(rename = "users/write")]
    UsersWrite,
    /// Grant and remove roles.
    #[serde(rename = "roleAssignments/write")]
    RoleAssignmentsWrite,
    /// Read the audit log and the server's metrics.
    #[serde(rename = "audit/read")]
    AuditRead,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Public => "public",
            Permission::Read => "read",
            Permission::SessionsWrite => "sessions/write",
            Permission::EndpointsWrite => "endpoints/write",
            Permission::EndpointsScore => "endpoints/score",
            Permission::ComputesWrite => "computes/write",
            Permission::EnvironmentsWrite => "environments/write",
            Permission::IdentitiesWrite => "identities/write",
            Permission::UsersWrite => "users/write",
            Permission::RoleAssignmentsWrite => "roleAssignments/write",
            Permission::AuditRead => "audit/read",
        }
    }
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Owner,
        Role::Admin,
        Role::User,
        Role::Viewer,
        Role::AccessAdmin,
    ];

    /// The permissions the role holds.
    pub fn permissions(self) -> &'static [Permission] {
        use Permission::*;
        match self {
            Role::Owner => &[
                Public,
                Read,
                SessionsWrite,
                EndpointsWrite,
                EndpointsScore,
                ComputesWrite,
                EnvironmentsWrite,
                IdentitiesWrite,
                UsersWrite,
                RoleAssignmentsWrite,
                AuditRead,
            ],
            Role::Admin => &[
                Public,
                Read,
                SessionsWrite,
                EndpointsWrite,
                EndpointsScore,
                ComputesWrite,
                EnvironmentsWrite,
                IdentitiesWrite,
                UsersWrite,
                AuditRead,
            ],
            Role::User => &[
                Public,
                Read,
                SessionsWrite,
                EndpointsWrite,
                EndpointsScore,
                ComputesWrite,
                EnvironmentsWrite,
            ],
            Role::Viewer => &[Public, Read],
            Role::AccessAdmin => &[Public, Read, RoleAssignmentsWrite],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::User => "user",
            Role::Viewer => "viewer",
            Role::AccessAdmin => "access-admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
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

impl std::fmt::Display for ComputeStatus {
    /// As the API writes it: `Running`, `Stopped`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ComputeStatus::Running => "Running",
            ComputeStatus::Stopped => "Stopped",
        })
    }
}
