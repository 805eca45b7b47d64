//! Connections: named credentials for a service, in promptflow's connection YAML format.
//!
//! A [`Connection`] holds its secrets in plain memory; `Debug` redacts them so a connection can be
//! logged safely. Storage (encryption at rest) belongs to the binary, not to this vocabulary crate.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The kinds of connection flowrt understands, named as promptflow names them in YAML (`type:`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionKind {
    OpenAi,
    AzureOpenAi,
    Custom,
    Serverless,
}

impl ConnectionKind {
    /// promptflow's YAML spelling (`open_ai`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionKind::OpenAi => "open_ai",
            ConnectionKind::AzureOpenAi => "azure_open_ai",
            ConnectionKind::Custom => "custom",
            ConnectionKind::Serverless => "serverless",
        }
    }

    /// The promptflow class a Python tool sees (`OpenAIConnection`, ...).
    pub fn python_class(self) -> &'static str {
        match self {
            ConnectionKind::OpenAi => "OpenAIConnection",
            ConnectionKind::AzureOpenAi => "AzureOpenAIConnection",
            ConnectionKind::Custom => "CustomConnection",
            ConnectionKind::Serverless => "ServerlessConnection",
        }
    }

    /// Field names whose values are secrets for the strongly typed kinds.
    pub fn secret_fields(self) -> &'static [&'static str] {
        &["api_key"]
    }
}

/// A named connection. For `custom`, `configs` and `secrets` are the user's maps; for the other kinds,
/// `configs` holds the plain fields (`base_url`, `api_base`, `api_version`, ...) and `secrets` holds
/// `api_key`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Connection {
    pub name: String,
    pub kind: ConnectionKind,
    pub configs: IndexMap<String, String>,
    pub secrets: IndexMap<String, String>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let masked: IndexMap<&str, &str> = self
            .secrets
            .keys()
            .map(|k| (k.as_str(), "******"))
            .collect();
        f.debug_struct("Connection")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("configs", &self.configs)
            .field("secrets", &masked)
            .finish()
    }
}

impl Connection {
    /// A config or secret value by key (`${conn.key}` references look both up).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.secrets
            .get(key)
            .or_else(|| self.configs.get(key))
            .map(String::as_str)
    }

    /// The API key (`api_key` secret), if any.
    pub fn api_key(&self) -> Option<&str> {
        self.secrets.get("api_key").map(String::as_str)
    }

    /// A plain (non-secret) field.
    pub fn config(&self, key: &str) -> Option<&str> {
        self.configs.get(key).map(String::as_str)
    }
}
