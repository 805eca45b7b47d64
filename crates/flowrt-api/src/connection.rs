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
    /// SerpAPI (`api_key`): the `serpapi` tool's.
    Serp,
    /// Vector stores (`api_key`, `api_base`).
    Qdrant,
    Weaviate,
    /// Azure AI Search (`api_key`, `api_base`, `api_version`).
    CognitiveSearch,
    /// Azure AI services (`api_key`, `endpoint`).
    AzureAiServices,
    /// Azure AI Content Safety and Document Intelligence (`api_key`, `endpoint`, `api_version`,
    /// `api_type`).
    AzureContentSafety,
    FormRecognizer,
}

impl ConnectionKind {
    /// promptflow's YAML spelling (`open_ai`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionKind::OpenAi => "open_ai",
            ConnectionKind::AzureOpenAi => "azure_open_ai",
            ConnectionKind::Custom => "custom",
            ConnectionKind::Serverless => "serverless",
            ConnectionKind::Serp => "serp",
            ConnectionKind::Qdrant => "qdrant",
            ConnectionKind::Weaviate => "weaviate",
            ConnectionKind::CognitiveSearch => "cognitive_search",
            ConnectionKind::AzureAiServices => "azure_ai_services",
            ConnectionKind::AzureContentSafety => "azure_content_safety",
            ConnectionKind::FormRecognizer => "form_recognizer",
        }
    }

    /// Every kind, for parsing and for messages that list them.
    pub const ALL: [ConnectionKind; 11] = [
        ConnectionKind::OpenAi,
        ConnectionKind::AzureOpenAi,
        ConnectionKind::Custom,
        ConnectionKind::Serverless,
        ConnectionKind::Serp,
        ConnectionKind::Qdrant,
        ConnectionKind::Weaviate,
        ConnectionKind::CognitiveSearch,
        ConnectionKind::AzureAiServices,
        ConnectionKind::AzureContentSafety,
        ConnectionKind::FormRecognizer,
    ];

    /// The kind promptflow's YAML `type:` names.
    pub fn parse(text: &str) -> Option<ConnectionKind> {
        ConnectionKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// The plain fields a connection of this kind must have, besides `api_key`.
    pub fn required_fields(self) -> &'static [&'static str] {
        match self {
            ConnectionKind::AzureOpenAi
            | ConnectionKind::Serverless
            | ConnectionKind::Qdrant
            | ConnectionKind::Weaviate
            | ConnectionKind::CognitiveSearch => &["api_base"],
            ConnectionKind::AzureAiServices
            | ConnectionKind::AzureContentSafety
            | ConnectionKind::FormRecognizer => &["endpoint"],
            ConnectionKind::OpenAi | ConnectionKind::Custom | ConnectionKind::Serp => &[],
        }
    }

    /// Plain fields promptflow fills in when the YAML leaves them out.
    pub fn defaults(self) -> &'static [(&'static str, &'static str)] {
        match self {
            ConnectionKind::AzureOpenAi => &[("api_type", "azure"), ("api_version", "2024-02-01")],
            ConnectionKind::CognitiveSearch => &[("api_version", "2023-11-01")],
            ConnectionKind::AzureContentSafety => &[
                ("api_version", "2023-10-01"),
                ("api_type", "Content Safety"),
            ],
            ConnectionKind::FormRecognizer => &[
                ("api_version", "2023-07-31"),
                ("api_type", "Form Recognizer"),
            ],
            _ => &[],
        }
    }

    /// Whether Entra ID (`auth_mode: meid_token`) can stand in for the key, as promptflow allows.
    pub fn allows_keyless(self) -> bool {
        matches!(
            self,
            ConnectionKind::AzureOpenAi
                | ConnectionKind::CognitiveSearch
                | ConnectionKind::AzureAiServices
        )
    }

    /// The promptflow class a Python tool sees (`OpenAIConnection`, ...).
    pub fn python_class(self) -> &'static str {
        match self {
            ConnectionKind::OpenAi => "OpenAIConnection",
            ConnectionKind::AzureOpenAi => "AzureOpenAIConnection",
            ConnectionKind::Custom => "CustomConnection",
            ConnectionKind::Serverless => "ServerlessConnection",
            ConnectionKind::Serp => "SerpConnection",
            ConnectionKind::Qdrant => "QdrantConnection",
            ConnectionKind::Weaviate => "WeaviateConnection",
            ConnectionKind::CognitiveSearch => "CognitiveSearchConnection",
            ConnectionKind::AzureAiServices => "AzureAIServicesConnection",
            ConnectionKind::AzureContentSafety => "AzureContentSafetyConnection",
            ConnectionKind::FormRecognizer => "FormRecognizerConnection",
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

/// A Microsoft Entra ID service principal a session identity signs in with, for Azure endpoints
/// called without a key (a keyless Azure OpenAI connection or prompty). Its secret is sealed at
/// rest by the store, goes to the identity's sessions' agents only (never to their code), and is
/// masked in `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntraServicePrincipal {
    /// The directory (tenant) id: a GUID or a domain name.
    pub tenant_id: String,
    /// The application (client) id.
    pub client_id: String,
    /// The client secret.
    pub client_secret: String,
}

impl fmt::Debug for EntraServicePrincipal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntraServicePrincipal")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &"******")
            .finish()
    }
}

impl EntraServicePrincipal {
    /// What is wrong with it, if anything: ids are 1-100 characters of letters, digits, `-` and
    /// `.` (as Entra ID writes them), the secret 1-1024 characters without control characters.
    pub fn problem(&self) -> Option<String> {
        let id_ok = |v: &str| {
            !v.is_empty()
                && v.len() <= 100
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        };
        if !id_ok(&self.tenant_id) {
            return Some(
                "tenant_id must be a GUID or a domain name (letters, digits, '-', '.')".into(),
            );
        }
        if !id_ok(&self.client_id) {
            return Some("client_id must be the application's GUID".into());
        }
        if self.client_secret.is_empty()
            || self.client_secret.len() > 1024
            || self.client_secret.chars().any(char::is_control)
        {
            return Some(
                "client_secret must be 1-1024 characters without control characters".into(),
            );
        }
        None
    }
}
