//! The OpenAPI (swagger) document `flowrt flow serve` answers at `/swagger.json`, as
//! `pf flow serve` describes a flow: its inputs and outputs, chat flows marked.

use flowrt_flow::{Flow, ValueType};
use serde_json::{json, Map, Value};

/// promptflow's swagger for a served flow: /score with the flow's inputs and outputs.
pub fn swagger(flow: &Flow) -> Value {
    fn ty(t: ValueType) -> &'static str {
        match t {
            ValueType::Int => "integer",
            ValueType::Double => "number",
            ValueType::Bool => "boolean",
            ValueType::String => "string",
            ValueType::List => "array",
            ValueType::Object | ValueType::Image => "object",
        }
    }
    // A prompty flow is named after its file, a folder flow after its folder.
    let named_by = if flow.kind == flowrt_flow::FlowKind::Prompty {
        flow.file.file_stem()
    } else {
        flow.dir.file_name()
    };
    let name = named_by
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "flow".into());
    let mut props = Map::new();
    let mut info = json!({"title": format!("Promptflow[{name}] API"), "version": "1.0.0", "x-flow-name": name});
    for (k, input) in &flow.inputs {
        let mut schema = json!({"type": ty(input.ty)});
        if let Some(d) = &input.description {
            schema["description"] = json!(d);
        }
        if let Some(d) = &input.default {
            schema["default"] = d.clone();
        }
        if input.is_chat_input {
            info["x-chat-input"] = json!(k);
            info["x-flow-type"] = json!("chat");
        }
        if input.is_chat_history {
            info["x-chat-history"] = json!(k);
        }
        props.insert(k.clone(), schema);
    }
    let mut out_props = Map::new();
    for (k, o) in &flow.outputs {
        let t =
            o.ty.as_deref()
                .and_then(ValueType::parse)
                .map(ty)
                .unwrap_or("string");
        out_props.insert(k.clone(), json!({"type": t}));
        if o.is_chat_output {
            info["x-chat-output"] = json!(k);
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": info,
        "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearerAuth": []}],
        "paths": {"/score": {"post": {
            "summary": "run the flow",
            "requestBody": {"required": !flow.inputs.is_empty(), "content": {"application/json": {"schema": {
                "type": "object", "properties": props, "required": flow.inputs.keys().collect::<Vec<_>>()}}}},
            "responses": {
                "200": {"description": "the flow's outputs", "content": {"application/json": {"schema": {"type": "object", "properties": out_props}}}},
                "400": {"description": "bad inputs or a failed node"}
            }
        }}}
    })
}
