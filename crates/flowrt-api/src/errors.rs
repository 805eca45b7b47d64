//! Every `code` a refusal carries. The server answers `{code, message}` ([`crate::ApiError`]) and
//! an agent answers its server the same way ([`crate::agent::AgentError`]); clients branch on the
//! code, people read the message. One table, documented in the OpenAPI document.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The codes, each once: the enum, its text and the list of all come from this table.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $code:ident,)*) => {
        /// What went wrong, for a program to branch on.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        pub enum ErrorCode {
            $($(#[$doc])* $code,)*
        }

        impl ErrorCode {
            /// Every code.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$code,)*];

            /// The code as it travels: the variant's name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$code => stringify!($code),)*
                }
            }
        }
    };
}

error_codes! {
    // Any route.
    /// No token, an unknown, expired or revoked one, or a disabled user's (401).
    Unauthorized,
    /// The caller's roles lack the route's permission, or the resource is another user's (403).
    Forbidden,
    /// No such resource (or one the caller may not see), or no such route (404).
    NotFound,
    /// The path exists, the method does not (405).
    MethodNotAllowed,
    /// The request is malformed or names something invalid; the message says what (400).
    BadRequest,
    /// The body is not the JSON the route reads (422).
    InvalidBody,
    /// The body's media type is not the route's (415).
    UnsupportedMediaType,
    /// The body is larger than the route takes (413).
    PayloadTooLarge,
    /// A flow or data upload is larger than the server takes (413).
    TooLarge,
    /// The name is taken, or the resource is not in a state for this (409).
    Conflict,
    /// The user's flows, data and runs would take more than their disk quota (507).
    QuotaExceeded,
    /// A failure of flowrt itself; the details are in the server's log (500).
    Internal,
    /// Any other refusal of the HTTP layer.
    Rejected,
    // Flows.
    /// A save started from a version older than the latest: someone saved first (409).
    FlowChanged,
    // Sessions and interactive tests.
    /// An interactive test ran past the server's request timeout (504).
    InteractiveTimeout,
    /// The session's agent did not answer in time (504).
    Timeout,
    // Endpoints.
    /// The flow failed on the request's inputs (400).
    UserError,
    /// The deployment's instance refused the request (4xx from it).
    Refused,
    /// The instance answering stopped while it answered (502).
    InstanceFailed,
    /// The deployment has no instance ready (503).
    NoInstance,
    /// No deployment of the endpoint takes traffic (503).
    NoTraffic,
    // The agent protocol (an agent answering its server).
    /// The line's inputs do not fit the flow.
    BadInputs,
    /// The flow cannot be opened (a bad YAML, a missing tool file).
    BadFlow,
    /// A batch run's request is not one the agent can run.
    BadRun,
    /// A batch run could not start.
    BatchFailed,
    /// The connections handed to the agent cannot be read.
    BadConnections,
    /// A draft sent to the session cannot be unpacked.
    BadDraft,
    /// Reading a draft's tools or running its line failed.
    DraftFailed,
    /// Switching the session to another version of its flow failed.
    SwitchFailed,
    /// Listing the tools of the session's packages failed.
    ToolsFailed,
    /// A run's files cannot be read or written in the session's folder.
    RunFiles,
    /// The session's log cannot be read.
    Log,
    /// The session's packages cannot be listed.
    Packages,
}

/// The code's JSON Schema, each code described, for the OpenAPI document.
pub fn schema() -> serde_json::Value {
    serde_json::to_value(<ErrorCode as utoipa::PartialSchema>::schema()).unwrap_or_default()
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text a code travels as is the one serde writes: clients comparing strings and
    /// clients decoding the enum agree.
    #[test]
    fn each_code_travels_as_its_name() {
        for &code in ErrorCode::ALL {
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, serde_json::Value::String(code.as_str().into()));
            assert_eq!(serde_json::from_value::<ErrorCode>(json).unwrap(), code);
        }
    }
}
