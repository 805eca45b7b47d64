//! promptflow-tools' Open Model LLM tool (`promptflow.tools.open_model_llm.OpenModelLLM.call`):
//! a prompt rendered and sent to an Azure ML online endpoint (or a serverless one) in the request
//! shape of the endpoint's model family, its reply read back the same way.
//!
//! The endpoint comes from a custom connection (`endpoint_url` and `model_family` configs, the
//! `endpoint_api_key` secret), named by the tool's `endpoint_name` as `localConnection/NAME` or
//! `connection/NAME`; or from `endpoint_url`, `endpoint_api_key` and `model_family` given as node
//! inputs. promptflow's other forms (`onlineEndpoint/…`, `serverlessEndpoint/…`) look the endpoint
//! up through Azure Resource Manager, which a self-hosted runtime has no credentials for.

use crate::client::{Endpoint, LlmClient};
use crate::error::ToolError;
use flowrt_api::connection::{Connection, ConnectionKind};
use indexmap::IndexMap;
use serde_json::{json, Map, Value};

/// The model families promptflow's tool speaks to, by the name a connection gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelFamily {
    Llama,
    Dolly,
    Gpt2,
    Falcon,
}

impl ModelFamily {
    /// `LLaMa`, `Dolly`, `GPT-2` or `Falcon`, any case, or the enum names promptflow also
    /// accepts (`LLAMA`, `GPT2`, ...).
    pub fn parse(text: &str) -> Result<Self, ToolError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "llama" => Ok(ModelFamily::Llama),
            "dolly" => Ok(ModelFamily::Dolly),
            "gpt-2" | "gpt2" => Ok(ModelFamily::Gpt2),
            "falcon" => Ok(ModelFamily::Falcon),
            _ => Err(ToolError::bad_param(
                "model_family",
                format!(
                    "'{text}' is not recognized; supported models are: LLAMA, DOLLY, GPT2, FALCON"
                ),
            )),
        }
    }

    /// promptflow's value of the family (sent in the `x-ms-user-agent` header).
    fn label(self) -> &'static str {
        match self {
            ModelFamily::Llama => "LLaMa",
            ModelFamily::Dolly => "Dolly",
            ModelFamily::Gpt2 => "GPT-2",
            ModelFamily::Falcon => "Falcon",
        }
    }
}

/// Where one call goes.
pub struct OpenModelEndpoint {
    pub url: String,
    pub api_key: String,
    pub family: ModelFamily,
}

impl OpenModelEndpoint {
    /// A custom connection's endpoint: `endpoint_url`, `model_family`, secret `endpoint_api_key`.
    pub fn from_connection(connection: &Connection) -> Result<Self, ToolError> {
        crate::client::require_kind(
            connection,
            ConnectionKind::Custom,
            "open_model_llm (it reads a custom connection)",
        )?;
        let field = |key: &str| {
            connection
                .get(key)
                .map(str::to_string)
                .ok_or_else(|| ToolError::ConnectionField {
                    connection: connection.name.clone(),
                    field: key.to_string(),
                })
        };
        Ok(OpenModelEndpoint {
            url: field("endpoint_url")?,
            api_key: field("endpoint_api_key")?,
            family: ModelFamily::parse(&field("model_family")?)?,
        })
    }
}

/// Is `url` a serverless endpoint (which speaks OpenAI's chat and completion API)?
fn is_serverless(url: &str) -> bool {
    url.contains("serverless.ml.azure.com") || url.contains("inference.ai.azure.com")
}

/// A LLaMa chat prompt (`system:` / `user:` / `assistant:` lines, any case) as messages.
fn parse_llama_chat(text: &str) -> Result<Vec<Value>, ToolError> {
    let pattern = regex::Regex::new(r"(?i)\n*(system|user|assistant)\s*:\s*\n")
        .map_err(|e| ToolError::bad_param("prompt", e.to_string()))?;
    // `re.split` with a group: the text between markers and the markers' roles, in turn.
    let mut chunks: Vec<String> = Vec::new();
    let mut last = 0;
    for caps in pattern.captures_iter(text) {
        let (Some(whole), Some(role)) = (caps.get(0), caps.get(1)) else {
            continue;
        };
        chunks.push(text[last..whole.start()].to_string());
        chunks.push(role.as_str().to_string());
        last = whole.end();
    }
    chunks.push(text[last..].to_string());
    let chunks: Vec<String> = chunks
        .into_iter()
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect();
    let mut messages = Vec::new();
    for pair in chunks.chunks(2) {
        let role = pair[0].to_lowercase();
        if !["system", "user", "assistant"].contains(&role.as_str()) {
            return Err(ToolError::ChatFormat {
                message: format!(
                    "the Chat API requires a specific format for prompt definition, and the prompt should include separate lines as role delimiters: system:, user:, assistant:; found '{role}'"
                ),
            });
        }
        let Some(content) = pair.get(1) else {
            return Err(ToolError::ChatFormat {
                message: "Unexpected chat format. Please ensure the query matches the chat format of the model used.".to_string(),
            });
        };
        messages.push(json!({"role": role, "content": content}));
    }
    Ok(messages)
}

/// The request body for `prompt`, by family, api and endpoint kind. The prompt is sent as rendered:
/// promptflow's `escape_special_characters` replaces a backslash and the character after it with
/// the same two characters.
fn request_body(
    endpoint: &OpenModelEndpoint,
    chat: bool,
    prompt: &str,
    mut model_kwargs: Map<String, Value>,
) -> Result<Value, ToolError> {
    Ok(match endpoint.family {
        ModelFamily::Llama if is_serverless(&endpoint.url) => {
            let max = model_kwargs
                .get("max_new_tokens")
                .cloned()
                .unwrap_or(Value::Null);
            model_kwargs.insert("max_tokens".into(), max);
            let mut body = if chat {
                json!({"model": "llama-2-7b-hf", "messages": parse_llama_chat(prompt)?, "n": 1})
            } else {
                json!({"prompt": prompt, "n": 1})
            };
            if let Value::Object(b) = &mut body {
                b.extend(model_kwargs);
            }
            body
        }
        ModelFamily::Llama => {
            model_kwargs.entry("do_sample").or_insert(Value::Bool(true));
            let input = if chat {
                Value::Array(parse_llama_chat(prompt)?)
            } else {
                json!([prompt])
            };
            json!({"input_data": {"input_string": input, "parameters": model_kwargs}})
        }
        ModelFamily::Dolly | ModelFamily::Gpt2 | ModelFamily::Falcon => json!({
            "input_data": {"input_string": [prompt]},
            "parameters": model_kwargs,
        }),
    })
}

fn read_reply(endpoint: &OpenModelEndpoint, chat: bool, reply: &Value) -> Option<Value> {
    let first_0 = || reply.get(0).and_then(|r| r.get("0")).cloned();
    match endpoint.family {
        ModelFamily::Llama if is_serverless(&endpoint.url) => {
            let choice = reply.get("choices")?.get(0)?;
            if chat {
                choice.get("message")?.get("content").cloned()
            } else {
                choice.get("text").cloned()
            }
        }
        ModelFamily::Llama if chat => reply.get("output").cloned(),
        ModelFamily::Llama => first_0(),
        _ => first_0().or_else(|| reply.get("output").cloned()),
    }
}

impl LlmClient {
    /// One Open Model LLM call: `prompt` (already rendered) to `endpoint` with promptflow's
    /// parameters (`temperature` 1.0, `max_new_tokens` 500 and `top_p` 1.0 unless given, over
    /// `model_kwargs`); the model's text.
    pub async fn open_model_llm(
        &self,
        endpoint: &OpenModelEndpoint,
        chat: bool,
        prompt: &str,
        deployment: Option<&str>,
        params: &IndexMap<String, Value>,
    ) -> Result<Value, ToolError> {
        let mut model_kwargs = match params.get("model_kwargs") {
            Some(Value::Object(m)) => m.clone(),
            None | Some(Value::Null) => Map::new(),
            Some(Value::String(s)) if s.trim().is_empty() => Map::new(),
            Some(other) => {
                return Err(ToolError::bad_param(
                    "model_kwargs",
                    format!("value {other} is not a dict"),
                ))
            }
        };
        for (name, default) in [
            ("top_p", json!(1.0)),
            ("temperature", json!(1.0)),
            ("max_new_tokens", json!(500)),
        ] {
            let value = match params.get(name) {
                None | Some(Value::Null) => default,
                Some(v) => v.clone(),
            };
            model_kwargs.insert(name.to_string(), value);
        }
        let mut url = endpoint.url.trim_end_matches('/').to_string();
        if is_serverless(&url) {
            let suffix = if chat {
                "/v1/chat/completions"
            } else {
                "/v1/completions"
            };
            if !url.ends_with(suffix) {
                url.push_str(suffix);
            }
        }
        let mut headers = vec![
            ("authorization", format!("Bearer {}", endpoint.api_key)),
            (
                "x-ms-user-agent",
                format!("PromptFlow/OpenModelLLM/{}", endpoint.family.label()),
            ),
        ];
        if let Some(d) = deployment {
            headers.push(("azureml-model-deployment", d.to_string()));
        }
        let target = Endpoint {
            url: url.clone(),
            headers,
            secret: Some(endpoint.api_key.clone()),
            entra_id: false,
            declared: crate::governor::Declared::default(),
        };
        let body = request_body(endpoint, chat, prompt, model_kwargs)?;
        let reply = self.post_json(&target, &body).await?;
        read_reply(endpoint, chat, &reply).ok_or_else(|| ToolError::BadResponse {
            url,
            message: format!(
                "Unexpected response format. Response: {}",
                crate::client::excerpt(&reply.to_string(), 300)
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_llama_chat_prompt_splits_on_its_role_lines() {
        let messages = parse_llama_chat("system:\nbe brief\n\nUser :\nhi\nassistant:\nhello\n")
            .expect("parses");
        assert_eq!(
            messages,
            vec![
                json!({"role": "system", "content": "be brief"}),
                json!({"role": "user", "content": "hi"}),
                json!({"role": "assistant", "content": "hello"}),
            ]
        );
        assert!(parse_llama_chat("user:\n").is_err());
    }

    #[test]
    fn each_family_gets_its_request_shape() {
        let online = |family| OpenModelEndpoint {
            url: "https://x.inference.ml.azure.com/score".into(),
            api_key: "k".into(),
            family,
        };
        let kwargs = Map::from_iter([("max_new_tokens".to_string(), json!(5))]);
        assert_eq!(
            request_body(&online(ModelFamily::Falcon), false, "hi", kwargs.clone()).expect("body"),
            json!({"input_data": {"input_string": ["hi"]}, "parameters": {"max_new_tokens": 5}})
        );
        assert_eq!(
            request_body(&online(ModelFamily::Llama), false, "hi", kwargs.clone()).expect("body"),
            json!({"input_data": {"input_string": ["hi"], "parameters": {"max_new_tokens": 5, "do_sample": true}}})
        );
        let serverless = OpenModelEndpoint {
            url: "https://m.eastus2.inference.ai.azure.com".into(),
            ..online(ModelFamily::Llama)
        };
        assert_eq!(
            request_body(&serverless, true, "user:\nhi\n", kwargs).expect("body"),
            json!({"model": "llama-2-7b-hf", "messages": [{"role": "user", "content": "hi"}], "n": 1, "max_new_tokens": 5, "max_tokens": 5})
        );
    }
}
