//! The one error type of this crate.

use thiserror::Error;

/// Everything a built-in tool can fail with. Messages carry enough context to act on (the template
/// line, the HTTP status and the server's message, the parameter or connection field at fault) and
/// never contain an API key.
#[derive(Debug, Error)]
pub enum ToolError {
    /// The Jinja2 template failed to parse or render.
    #[error("Failed to render jinja template: {message}{}. Please modify your prompt to fix the issue.", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Template {
        message: String,
        line: Option<usize>,
    },

    /// The rendered chat prompt does not follow the `role:` line format.
    #[error("{message}")]
    ChatFormat { message: String },

    /// An LLM/embedding parameter has a value that cannot be used.
    #[error("invalid value for parameter '{name}': {message}")]
    BadParameter { name: String, message: String },

    /// The connection lacks a field the call needs.
    #[error("connection '{connection}' is missing the field '{field}'")]
    ConnectionField { connection: String, field: String },

    /// The connection kind cannot serve this tool.
    #[error("connection '{connection}' of type '{kind}' is not supported by {tool}; use a connection of type {expected}")]
    UnsupportedConnection {
        connection: String,
        kind: String,
        tool: String,
        /// The connection types the tool reads, as the hint names them.
        expected: String,
    },

    /// The service answered with an error status.
    #[error("POST {url} failed with HTTP {status}{}: {message}", attempts_note(*attempts))]
    Http {
        url: String,
        status: u16,
        message: String,
        attempts: u32,
    },

    /// The service could not be reached (connection refused, reset, timed out...).
    #[error("could not reach {url}{}: {message}", attempts_note(*attempts))]
    Network {
        url: String,
        message: String,
        attempts: u32,
    },

    /// A prompty cannot be run as written or its reply does not fit what it asks for (a
    /// configuration without an endpoint, a non-JSON reply to `response_format: json_object`, an
    /// `outputs` key the reply lacks).
    #[error("{message}")]
    Prompty {
        /// promptflow's name for the failure (`InvalidOutputKeyError`, `JSONDecodeError`, ...).
        kind: &'static str,
        message: String,
    },

    /// An Azure endpoint without a key needed a Microsoft Entra ID token and no credential of
    /// the chain gave one (the message lists what each said; it never holds a secret).
    #[error("{message}\nhint: give the connection an api_key, or sign in: set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (a service principal), run on a compute with a managed identity, or run `az login`")]
    Credential { message: String },

    /// The service answered 2xx with a body this crate does not understand.
    #[error("unexpected response from {url}: {message}")]
    BadResponse { url: String, message: String },
}

fn attempts_note(attempts: u32) -> String {
    if attempts > 1 {
        format!(" after {attempts} attempts")
    } else {
        String::new()
    }
}

impl ToolError {
    /// The HTTP status, for errors that have one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ToolError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// How many requests were made before giving up (0 when no request was made).
    pub fn attempts(&self) -> u32 {
        match self {
            ToolError::Http { attempts, .. } | ToolError::Network { attempts, .. } => *attempts,
            _ => 0,
        }
    }

    /// The exception promptflow raises for this failure, for a run's `error_type`:
    /// `ChatAPIInvalidRoleError` for a chat prompt without valid role lines, `JSONDecodeError`
    /// for a non-JSON reply to a JSON prompty, and so on; `None` when there is no specific one.
    pub fn python_type(&self) -> Option<&'static str> {
        match self {
            ToolError::Prompty { kind, .. } => Some(kind),
            ToolError::ChatFormat { message } if message.contains("function role") => {
                Some("ChatAPIFunctionRoleInvalidFormatError")
            }
            ToolError::ChatFormat { message } if message.contains("tool role") => {
                Some("ChatAPIToolRoleInvalidFormatError")
            }
            ToolError::ChatFormat { .. } => Some("ChatAPIInvalidRoleError"),
            ToolError::Template { .. } => Some("JinjaTemplateError"),
            _ => None,
        }
    }

    pub(crate) fn bad_param(name: &str, message: impl Into<String>) -> Self {
        ToolError::BadParameter {
            name: name.to_string(),
            message: message.into(),
        }
    }
}
