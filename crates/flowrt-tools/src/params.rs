//! LLM parameters: which node inputs are API parameters for each promptflow tool, how literal values
//! are converted to the parameter types, and the request body each tool sends.

use crate::chat::{ChatFlavor, TemplateVar};
use crate::error::ToolError;
use indexmap::IndexMap;
use serde_json::{json, Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    Str,
    Int,
    Float,
    Bool,
    List,
    Dict,
    Object,
}

/// The parameters of promptflow-tools' `OpenAI.chat` / `AzureOpenAI.chat` / `.completion`
/// (everything else a node passes is a template variable).
fn spec(flavor: ChatFlavor, chat: bool) -> Vec<(&'static str, Ty)> {
    use Ty::*;
    let mut params = vec![match flavor {
        ChatFlavor::OpenAi => ("model", Str),
        ChatFlavor::AzureOpenAi => ("deployment_name", Str),
    }];
    if chat {
        params.extend([
            ("temperature", Float),
            ("top_p", Float),
            ("stream", Bool),
            ("stop", List),
            ("max_tokens", Int),
            ("presence_penalty", Float),
            ("frequency_penalty", Float),
            ("logit_bias", Dict),
            ("user", Str),
            ("function_call", Object),
            ("functions", List),
            ("tool_choice", Object),
            ("tools", List),
            ("response_format", Object),
            ("seed", Int),
        ]);
        if flavor == ChatFlavor::AzureOpenAi {
            params.push(("n", Int));
        }
    } else {
        params.extend([
            ("suffix", Str),
            ("max_tokens", Int),
            ("temperature", Float),
            ("top_p", Float),
            ("n", Int),
            ("stream", Bool),
            ("logprobs", Int),
            ("echo", Bool),
            ("stop", List),
            ("presence_penalty", Float),
            ("frequency_penalty", Float),
            ("best_of", Int),
            ("logit_bias", Dict),
            ("user", Str),
        ]);
    }
    params
}

/// Node inputs split into converted API parameters and template variables.
pub(crate) struct SplitInputs {
    pub params: IndexMap<&'static str, Value>,
    pub vars: IndexMap<String, TemplateVar>,
}

pub(crate) fn split_inputs(
    inputs: IndexMap<String, TemplateVar>,
    flavor: ChatFlavor,
    chat: bool,
) -> Result<SplitInputs, ToolError> {
    let spec = spec(flavor, chat);
    let mut params = IndexMap::new();
    let mut vars = IndexMap::new();
    for (name, var) in inputs {
        match spec.iter().find(|(n, _)| *n == name) {
            Some((pname, ty)) => {
                // A literal "" (or null) is dropped so the tool's default applies.
                if var.value.is_null() || var.value.as_str() == Some("") {
                    continue;
                }
                params.insert(*pname, convert(pname, *ty, var.value)?);
            }
            None => {
                vars.insert(name, var);
            }
        }
    }
    Ok(SplitInputs { params, vars })
}

fn type_error(name: &str, ty: Ty, value: &Value) -> ToolError {
    let ty = match ty {
        Ty::Str => "string",
        Ty::Int => "int",
        Ty::Float => "double",
        Ty::Bool => "bool",
        Ty::List => "list",
        Ty::Dict => "object",
        Ty::Object => "object",
    };
    ToolError::bad_param(name, format!("value {value} is not of type {ty}"))
}

/// promptflow's conversion of a value to the parameter's annotated type.
fn convert(name: &str, ty: Ty, value: Value) -> Result<Value, ToolError> {
    let err = |v: &Value| type_error(name, ty, v);
    Ok(match ty {
        Ty::Str => match value {
            Value::String(_) => value,
            Value::Bool(b) => json!(if b { "True" } else { "False" }),
            Value::Number(n) => json!(n.to_string()),
            other => other,
        },
        Ty::Int => match &value {
            Value::Number(n) if n.is_i64() || n.is_u64() => value,
            Value::Number(n) => json!(n
                .as_f64()
                .map(|f| f.trunc() as i64)
                .ok_or_else(|| err(&value))?),
            Value::Bool(b) => json!(*b as i64),
            Value::String(s) if s.trim().eq_ignore_ascii_case("inf") => value,
            Value::String(s) => json!(s.trim().parse::<i64>().map_err(|_| err(&value))?),
            _ => return Err(err(&value)),
        },
        Ty::Float => match &value {
            Value::Number(n) => json!(n.as_f64().ok_or_else(|| err(&value))?),
            Value::Bool(b) => json!(if *b { 1.0 } else { 0.0 }),
            Value::String(s) => json!(s.trim().parse::<f64>().map_err(|_| err(&value))?),
            _ => return Err(err(&value)),
        },
        Ty::Bool => match &value {
            Value::Bool(_) => value,
            Value::String(s) if s.eq_ignore_ascii_case("true") => json!(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => json!(false),
            Value::Number(n) => json!(n.as_f64().unwrap_or(0.0) != 0.0),
            _ => return Err(err(&value)),
        },
        Ty::List => match value {
            Value::Array(_) => value,
            Value::String(s) => match serde_json::from_str::<Value>(&s) {
                Ok(parsed @ Value::Array(_)) => parsed,
                // `stop: "###"` is sent as a single stop sequence.
                _ if name == "stop" => Value::Array(vec![Value::String(s)]),
                _ => return Err(err(&Value::String(s))),
            },
            other => return Err(err(&other)),
        },
        Ty::Dict => match value {
            Value::Object(_) => value,
            Value::String(s) => match serde_json::from_str::<Value>(&s) {
                Ok(parsed @ Value::Object(_)) => parsed,
                _ => return Err(err(&Value::String(s))),
            },
            other => return Err(err(&other)),
        },
        Ty::Object => match value {
            Value::String(s) => serde_json::from_str::<Value>(&s).unwrap_or(Value::String(s)),
            other => other,
        },
    })
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
    }
}

fn float_or(params: &IndexMap<&'static str, Value>, name: &str, default: f64) -> Value {
    params.get(name).cloned().unwrap_or_else(|| json!(default))
}

fn int_value(name: &str, v: &Value) -> Result<Value, ToolError> {
    match v {
        Value::Number(_) => Ok(v.clone()),
        _ => Err(ToolError::bad_param(
            name,
            format!("value {v} is not an int"),
        )),
    }
}

/// The chat request body (without `messages`), as `OpenAI.chat` / `AzureOpenAI.chat` build it.
/// Returns the body and whether the reply is returned as the whole message object
/// (functions or tools were requested).
pub(crate) fn chat_body(
    params: &IndexMap<&'static str, Value>,
    flavor: ChatFlavor,
) -> Result<(Map<String, Value>, bool), ToolError> {
    let mut body = Map::new();
    let model_key = match flavor {
        ChatFlavor::OpenAi => "model",
        ChatFlavor::AzureOpenAi => "deployment_name",
    };
    body.insert(
        "model".into(),
        params.get(model_key).cloned().unwrap_or_else(|| json!("")),
    );
    body.insert("temperature".into(), float_or(params, "temperature", 1.0));
    body.insert("top_p".into(), float_or(params, "top_p", 1.0));
    if flavor == ChatFlavor::AzureOpenAi {
        let n = params.get("n").cloned().unwrap_or_else(|| json!(1));
        body.insert("n".into(), int_value("n", &n)?);
    }
    let mut whole_message = false;
    if truthy(params.get("tools")) {
        let tools = params.get("tools").cloned().unwrap_or(Value::Null);
        if flavor == ChatFlavor::AzureOpenAi {
            // Only the Azure OpenAI tool validates tools and tool_choice.
            validate_tools(&tools)?;
            body.insert(
                "tool_choice".into(),
                tool_choice(params.get("tool_choice"))?,
            );
        } else if let Some(choice) = params.get("tool_choice").filter(|v| !v.is_null()) {
            body.insert("tool_choice".into(), choice.clone());
        }
        body.insert("tools".into(), tools);
        whole_message = true;
    } else if truthy(params.get("functions")) {
        let functions = params.get("functions").cloned().unwrap_or(Value::Null);
        validate_functions(&functions)?;
        body.insert("functions".into(), functions);
        body.insert(
            "function_call".into(),
            function_call(params.get("function_call"))?,
        );
        whole_message = true;
    }
    if truthy(params.get("stop")) {
        body.insert(
            "stop".into(),
            params.get("stop").cloned().unwrap_or(Value::Null),
        );
    }
    if let Some(max_tokens) = params.get("max_tokens") {
        let is_inf = max_tokens
            .as_str()
            .is_some_and(|s| s.trim().eq_ignore_ascii_case("inf"));
        if !is_inf {
            body.insert("max_tokens".into(), int_value("max_tokens", max_tokens)?);
        }
    }
    for key in ["logit_bias", "response_format"] {
        if truthy(params.get(key)) {
            body.insert(key.into(), params.get(key).cloned().unwrap_or(Value::Null));
        }
    }
    if let Some(seed) = params.get("seed") {
        body.insert("seed".into(), int_value("seed", seed)?);
    }
    for key in ["presence_penalty", "frequency_penalty"] {
        if let Some(v) = params.get(key) {
            body.insert(key.into(), v.clone());
        }
    }
    if truthy(params.get("user")) {
        body.insert(
            "user".into(),
            params.get("user").cloned().unwrap_or(Value::Null),
        );
    }
    Ok((body, whole_message))
}

/// The completion request body (without `prompt`), as `OpenAI.completion` /
/// `AzureOpenAI.completion` build it. Parameters promptflow sends as `null` are left out.
pub(crate) fn completion_body(
    params: &IndexMap<&'static str, Value>,
    flavor: ChatFlavor,
) -> Result<Map<String, Value>, ToolError> {
    let mut body = Map::new();
    let model = match flavor {
        ChatFlavor::OpenAi => params
            .get("model")
            .cloned()
            .unwrap_or_else(|| json!("text-davinci-003")),
        ChatFlavor::AzureOpenAi => params
            .get("deployment_name")
            .cloned()
            .unwrap_or_else(|| json!("")),
    };
    body.insert("model".into(), model);
    if truthy(params.get("suffix")) {
        body.insert(
            "suffix".into(),
            params.get("suffix").cloned().unwrap_or(Value::Null),
        );
    }
    let max_tokens = params
        .get("max_tokens")
        .cloned()
        .unwrap_or_else(|| json!(16));
    let is_inf = max_tokens
        .as_str()
        .is_some_and(|s| s.trim().eq_ignore_ascii_case("inf"));
    if !is_inf {
        body.insert("max_tokens".into(), int_value("max_tokens", &max_tokens)?);
    }
    body.insert("temperature".into(), float_or(params, "temperature", 1.0));
    body.insert("top_p".into(), float_or(params, "top_p", 1.0));
    let n = params.get("n").cloned().unwrap_or_else(|| json!(1));
    body.insert("n".into(), int_value("n", &n)?);
    if truthy(params.get("logprobs")) {
        let logprobs = params.get("logprobs").cloned().unwrap_or(Value::Null);
        body.insert("logprobs".into(), int_value("logprobs", &logprobs)?);
    }
    body.insert("echo".into(), json!(truthy(params.get("echo"))));
    if truthy(params.get("stop")) {
        body.insert(
            "stop".into(),
            params.get("stop").cloned().unwrap_or(Value::Null),
        );
    }
    for key in ["presence_penalty", "frequency_penalty"] {
        if let Some(v) = params.get(key) {
            body.insert(key.into(), v.clone());
        }
    }
    let best_of = params.get("best_of").cloned().unwrap_or_else(|| json!(1));
    body.insert("best_of".into(), int_value("best_of", &best_of)?);
    body.insert(
        "logit_bias".into(),
        params
            .get("logit_bias")
            .filter(|v| truthy(Some(v)))
            .cloned()
            .unwrap_or_else(|| json!({})),
    );
    body.insert(
        "user".into(),
        params.get("user").cloned().unwrap_or_else(|| json!("")),
    );
    Ok(body)
}

pub(crate) fn function_call(value: Option<&Value>) -> Result<Value, ToolError> {
    match value {
        None | Some(Value::Null) => Ok(json!("auto")),
        Some(Value::String(s)) if s == "auto" || s == "none" => Ok(json!(s)),
        Some(Value::Object(map)) if map.contains_key("name") => Ok(Value::Object(map.clone())),
        Some(Value::Object(_)) => Err(ToolError::bad_param(
            "function_call",
            "must contain \"name\" field, e.g. {\"name\": \"function_name\"}",
        )),
        Some(other) => Err(ToolError::bad_param(
            "function_call",
            format!("'{other}' must be \"auto\", \"none\" or a dict like {{\"name\": \"function_name\"}}"),
        )),
    }
}

pub(crate) fn tool_choice(value: Option<&Value>) -> Result<Value, ToolError> {
    match value {
        None | Some(Value::Null) => Ok(json!("auto")),
        Some(Value::String(s)) if s == "auto" || s == "none" || s == "required" => Ok(json!(s)),
        Some(Value::Object(map)) => {
            for key in ["type", "function"] {
                if !map.contains_key(key) {
                    return Err(ToolError::bad_param(
                        "tool_choice",
                        format!("must contain \"{key}\" field, e.g. {{\"type\": \"function\", \"function\": {{\"name\": \"my_function\"}}}}"),
                    ));
                }
            }
            match map.get("function") {
                Some(Value::Object(f)) if f.contains_key("name") => Ok(Value::Object(map.clone())),
                _ => Err(ToolError::bad_param(
                    "tool_choice",
                    "its \"function\" must be a dict with a \"name\" field",
                )),
            }
        }
        Some(other) => Err(ToolError::bad_param(
            "tool_choice",
            format!("'{other}' must be \"auto\", \"none\" or a dict"),
        )),
    }
}

fn validate_function(param: &str, i: usize, f: &Value) -> Result<(), ToolError> {
    let bad = |msg: String| Err(ToolError::bad_param(param, format!("function {i} {msg}")));
    let Value::Object(map) = f else {
        return bad(format!("'{f}' is not a dict"));
    };
    for key in ["name", "parameters"] {
        if !map.contains_key(key) {
            return bad(format!("'{f}' does not have '{key}' property"));
        }
    }
    let Some(Value::Object(parameters)) = map.get("parameters") else {
        return bad("parameters should be described as a JSON Schema object".into());
    };
    for key in ["type", "properties"] {
        if !parameters.contains_key(key) {
            return bad(format!("parameters does not have '{key}' property"));
        }
    }
    if parameters.get("type") != Some(&json!("object")) {
        return bad("parameters 'type' should be 'object'".into());
    }
    if !matches!(parameters.get("properties"), Some(Value::Object(_))) {
        return bad("parameters 'properties' should be described as a JSON Schema object".into());
    }
    Ok(())
}

pub(crate) fn validate_functions(functions: &Value) -> Result<(), ToolError> {
    let Value::Array(items) = functions else {
        return Err(ToolError::bad_param("functions", "must be a list"));
    };
    for (i, f) in items.iter().enumerate() {
        validate_function("functions", i, f)?;
    }
    Ok(())
}

pub(crate) fn validate_tools(tools: &Value) -> Result<(), ToolError> {
    let Value::Array(items) = tools else {
        return Err(ToolError::bad_param("tools", "must be a list"));
    };
    for (i, tool) in items.iter().enumerate() {
        let Value::Object(map) = tool else {
            return Err(ToolError::bad_param(
                "tools",
                format!("tool {i} '{tool}' is not a dict"),
            ));
        };
        for key in ["type", "function"] {
            if !map.contains_key(key) {
                return Err(ToolError::bad_param(
                    "tools",
                    format!("tool {i} '{tool}' does not have '{key}' property"),
                ));
            }
        }
        validate_function("tools", i, map.get("function").unwrap_or(&Value::Null))?;
    }
    Ok(())
}
