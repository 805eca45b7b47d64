//! Microsoft Entra ID tokens for Azure OpenAI endpoints called without a key.
//!
//! promptflow calls an Azure OpenAI connection that has no `api_key` (a connection with
//! `auth_mode: meid_token`, a prompty configuration naming no key) with a bearer token from
//! `DefaultAzureCredential` for the Cognitive Services scope. This module is that credential
//! chain, built from the Azure SDK's own credentials (`azure_identity`), tried in the order the
//! Azure SDKs try them: a service principal from the environment (`AZURE_TENANT_ID`,
//! `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`), workload identity (`AZURE_FEDERATED_TOKEN_FILE`),
//! managed identity (App Service / Container Apps endpoint, or the VM's IMDS), the Azure CLI and
//! the Azure Developer CLI. The first source that answers is asked first from then on; a source
//! that did not answer in time is left out for five minutes; tokens are cached by the
//! credentials until shortly before they expire.
//!
//! Tokens only ever go into the `Authorization` header of the model request: they are not
//! logged, not put into errors, traces or run records.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use azure_core::http::{
    headers::Headers, AsyncRawResponse, Body, ClientOptions, ExponentialRetryOptions, HttpClient,
    Request, RetryOptions, Transport,
};
use azure_identity::{
    AzureCliCredential, AzureDeveloperCliCredential, ClientSecretCredential,
    ClientSecretCredentialOptions, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId, WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};

use crate::error::ToolError;

/// The scope promptflow asks tokens for: every Azure AI service, Azure OpenAI among them.
pub const COGNITIVE_SCOPE: &str = "https://cognitiveservices.azure.com/.default";

/// How long a token endpoint may take before the chain moves on. The VM metadata service is
/// only probed briefly: off Azure nothing answers at its address, and waiting the usual
/// connect timeout there would hold up keyless calls.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);
const IMDS_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Two quick retries of a token request. The SDK's default (eight retries over up to a minute)
/// made an unreachable sign-in endpoint hold a keyless call for the whole [`TOKEN_TIMEOUT`]
/// before the chain moved on or said why; the chain itself is asked again on the next call.
fn token_retry() -> RetryOptions {
    RetryOptions::exponential(ExponentialRetryOptions {
        initial_delay: azure_core::time::Duration::milliseconds(200),
        max_retries: 2,
        max_total_elapsed: azure_core::time::Duration::seconds(5),
        max_delay: azure_core::time::Duration::seconds(2),
    })
}

/// The largest token reply read (a token is a few KB).
const MAX_TOKEN_REPLY: usize = 1 << 20;

struct Source {
    name: &'static str,
    credential: Arc<dyn TokenCredential>,
    timeout: Duration,
    /// When the source last did not answer in time: it is not asked again for
    /// [`SILENT_SOURCE_PAUSE`] (the metadata service off Azure would hold up every call), then
    /// asked again (a long-running session outlives a moment of silence on Azure).
    silent_since: std::sync::Mutex<Option<std::time::Instant>>,
}

/// How long a source that did not answer in time is left out of the chain.
const SILENT_SOURCE_PAUSE: Duration = Duration::from_secs(300);

/// The credential chain of this process (built once, from its environment).
struct Chain {
    sources: Vec<Source>,
    /// Sources that could not even be set up (a malformed tenant id), with why.
    unusable: Vec<String>,
    /// The source that answered last: asked first.
    last_good: AtomicUsize,
}

static CHAIN: OnceLock<Chain> = OnceLock::new();

/// The session identity's service principal, given by the server to a session's agent (whose
/// environment names no credential of the server's); asked before the environment's sources.
static SESSION_PRINCIPAL: OnceLock<flowrt_api::EntraServicePrincipal> = OnceLock::new();

/// Sign keyless Azure calls of this process in as the session identity's service principal
/// (set once, before the first call; a later call changes nothing).
pub fn sign_in_as_session_identity(principal: flowrt_api::EntraServicePrincipal) {
    let _ = SESSION_PRINCIPAL.set(principal);
}

/// A bearer token for Azure OpenAI from the first credential of the chain that has one.
pub(crate) async fn cognitive_services_token(http: &reqwest::Client) -> Result<String, ToolError> {
    let chain = CHAIN.get_or_init(|| Chain::from_env(http));
    chain.token(COGNITIVE_SCOPE).await
}

impl Chain {
    fn from_env(http: &reqwest::Client) -> Chain {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let options = || ClientOptions {
            transport: Some(Transport::new(Arc::new(SdkTransport(http.clone())))),
            retry: token_retry(),
            ..Default::default()
        };
        let mut sources = Vec::new();
        let mut unusable = Vec::new();
        let mut add = |name: &'static str,
                       made: azure_core::Result<Arc<dyn TokenCredential>>,
                       timeout: Duration| match made {
            Ok(credential) => sources.push(Source {
                name,
                credential,
                timeout,
                silent_since: std::sync::Mutex::new(None),
            }),
            Err(e) => unusable.push(format!("{name}: {}", first_line(&e.to_string()))),
        };
        if let Some(p) = SESSION_PRINCIPAL.get() {
            add(
                "the session identity's service principal",
                ClientSecretCredential::new(
                    &p.tenant_id,
                    p.client_id.clone(),
                    p.client_secret.clone().into(),
                    Some(ClientSecretCredentialOptions {
                        client_options: options(),
                    }),
                )
                .map(|c| c as Arc<dyn TokenCredential>),
                TOKEN_TIMEOUT,
            );
        }
        if let (Some(tenant), Some(client), Some(secret)) = (
            var("AZURE_TENANT_ID"),
            var("AZURE_CLIENT_ID"),
            var("AZURE_CLIENT_SECRET"),
        ) {
            add(
                "environment (AZURE_CLIENT_SECRET)",
                ClientSecretCredential::new(
                    &tenant,
                    client,
                    secret.into(),
                    Some(ClientSecretCredentialOptions {
                        client_options: options(),
                    }),
                )
                .map(|c| c as Arc<dyn TokenCredential>),
                TOKEN_TIMEOUT,
            );
        }
        if var("AZURE_FEDERATED_TOKEN_FILE").is_some() {
            let mut workload = WorkloadIdentityCredentialOptions::default();
            workload.credential_options.client_options = options();
            add(
                "workload identity",
                WorkloadIdentityCredential::new(Some(workload))
                    .map(|c| c as Arc<dyn TokenCredential>),
                TOKEN_TIMEOUT,
            );
        }
        // An App Service / Container Apps / Azure ML endpoint is named by the environment;
        // without one, the VM's metadata service may answer.
        let named_endpoint = var("IDENTITY_ENDPOINT").is_some() || var("MSI_ENDPOINT").is_some();
        add(
            "managed identity",
            ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                user_assigned_id: var("AZURE_CLIENT_ID").map(UserAssignedId::ClientId),
                client_options: options(),
            }))
            .map(|c| c as Arc<dyn TokenCredential>),
            if named_endpoint {
                TOKEN_TIMEOUT
            } else {
                IMDS_PROBE_TIMEOUT
            },
        );
        add(
            "Azure CLI",
            AzureCliCredential::new(None).map(|c| c as Arc<dyn TokenCredential>),
            TOKEN_TIMEOUT,
        );
        add(
            "Azure Developer CLI",
            AzureDeveloperCliCredential::new(None).map(|c| c as Arc<dyn TokenCredential>),
            TOKEN_TIMEOUT,
        );
        Chain {
            sources,
            unusable,
            last_good: AtomicUsize::new(0),
        }
    }

    async fn token(&self, scope: &str) -> Result<String, ToolError> {
        let first = self.last_good.load(Ordering::Relaxed);
        let order = std::iter::once(first).chain((0..self.sources.len()).filter(|i| *i != first));
        let mut tried = self.unusable.clone();
        for index in order {
            let Some(source) = self.sources.get(index) else {
                continue;
            };
            let silent = *source
                .silent_since
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if silent.is_some_and(|at| at.elapsed() < SILENT_SOURCE_PAUSE) {
                tried.push(format!(
                    "{}: did not answer in the last minutes",
                    source.name
                ));
                continue;
            }
            let scopes = [scope];
            let asked = source.credential.get_token(&scopes, None);
            match tokio::time::timeout(source.timeout, asked).await {
                Ok(Ok(token)) => {
                    self.last_good.store(index, Ordering::Relaxed);
                    return Ok(token.token.secret().to_string());
                }
                Ok(Err(e)) => tried.push(format!("{}: {}", source.name, reason(&e))),
                Err(_) => {
                    *source
                        .silent_since
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
                    tried.push(format!(
                        "{}: no answer within {:?}",
                        source.name, source.timeout
                    ));
                }
            }
        }
        Err(ToolError::Credential {
            message: format!(
                "no Microsoft Entra ID credential gave a token for {scope}:\n  - {}",
                tried.join("\n  - ")
            ),
        })
    }
}

/// An Azure SDK error with the errors it wraps ("... retry policy expired ...: <why the
/// request failed>"), each by its first line: the outer one alone does not say what went wrong.
fn reason(error: &azure_core::Error) -> String {
    let mut parts = vec![first_line(&error.to_string())];
    let mut cause = std::error::Error::source(error);
    while let Some(e) = cause {
        let line = first_line(&e.to_string());
        if !parts.iter().any(|p| p.contains(&line)) {
            parts.push(line);
        }
        cause = e.source();
    }
    crate::client::excerpt(&parts.join(": "), 500)
}

/// The first line of an Azure SDK error, without its troubleshooting link.
fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    crate::client::excerpt(line, 300)
}

/// The Azure SDK's HTTP transport over flowrt's reqwest client, so token requests share the
/// TLS stack and the connection pool of model calls instead of bringing a second HTTP stack.
#[derive(Debug)]
struct SdkTransport(reqwest::Client);

#[async_trait::async_trait]
impl HttpClient for SdkTransport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        use azure_core::error::{Error, ErrorKind};
        let method = reqwest::Method::from_bytes(request.method().as_ref().as_bytes())
            .map_err(|e| Error::with_error(ErrorKind::Other, e, "unsupported HTTP method"))?;
        let mut req = self.0.request(method, request.url().as_str());
        for (name, value) in request.headers().iter() {
            req = req.header(name.as_str(), value.as_str());
        }
        req = match request.body() {
            Body::Bytes(bytes) => req.body(bytes.to_vec()),
            #[allow(unreachable_patterns)]
            _ => {
                return Err(Error::with_message(
                    ErrorKind::Other,
                    "token requests are sent whole, not streamed",
                ))
            }
        };
        let resp = req.send().await.map_err(|e| {
            let kind = if e.is_connect() {
                ErrorKind::Connection
            } else {
                ErrorKind::Io
            };
            Error::with_error(kind, e, "token request failed")
        })?;
        let status = resp.status().as_u16();
        let mut headers = Headers::new();
        for (name, value) in resp.headers() {
            if let Ok(value) = value.to_str() {
                headers.insert(name.as_str().to_string(), value.to_string());
            }
        }
        let mut body = Vec::new();
        let mut resp = resp;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| Error::with_error(ErrorKind::Io, e, "reading the token reply failed"))?
        {
            if body.len() + chunk.len() > MAX_TOKEN_REPLY {
                return Err(Error::with_message(
                    ErrorKind::Io,
                    "the token reply is larger than 1 MiB",
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(AsyncRawResponse::from_bytes(status.into(), headers, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::credentials::{AccessToken, TokenRequestOptions};
    use std::sync::atomic::AtomicU32;

    /// A credential that never answers, counting how often it was asked.
    #[derive(Debug, Default)]
    struct Silent(AtomicU32);

    #[async_trait::async_trait]
    impl TokenCredential for Silent {
        async fn get_token(
            &self,
            _scopes: &[&str],
            _options: Option<TokenRequestOptions<'_>>,
        ) -> azure_core::Result<AccessToken> {
            self.0.fetch_add(1, Ordering::SeqCst);
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn a_source_that_does_not_answer_is_left_out_for_a_while() {
        let silent = Arc::new(Silent::default());
        let chain = Chain {
            sources: vec![Source {
                name: "metadata service",
                credential: silent.clone(),
                timeout: Duration::from_millis(50),
                silent_since: std::sync::Mutex::new(None),
            }],
            unusable: Vec::new(),
            last_good: AtomicUsize::new(0),
        };
        let first = chain.token(COGNITIVE_SCOPE).await.unwrap_err().to_string();
        assert!(
            first.contains("metadata service: no answer within 50ms"),
            "{first}"
        );
        let started = std::time::Instant::now();
        let second = chain.token(COGNITIVE_SCOPE).await.unwrap_err().to_string();
        assert!(
            second.contains("did not answer in the last minutes"),
            "{second}"
        );
        assert!(started.elapsed() < Duration::from_millis(50));
        assert_eq!(silent.0.load(Ordering::SeqCst), 1);
    }
}
