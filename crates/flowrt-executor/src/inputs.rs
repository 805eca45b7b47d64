//! Turning the values a user passes into the flow's typed inputs.

use flowrt_flow::{convert_value, Flow};
use indexmap::IndexMap;
use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InputError {
    #[error("missing required input '{name}' ({ty})")]
    Missing { name: String, ty: String },
    #[error("input '{name}': {message}")]
    Invalid { name: String, message: String },
}

/// Convert `given` to the flow's declared inputs: each value converted to its type, defaults for the
/// rest, `[]` for a chat history without default; unknown extra keys are ignored, as in promptflow.
pub fn prepare_inputs(
    flow: &Flow,
    given: &IndexMap<String, Value>,
) -> Result<IndexMap<String, Value>, InputError> {
    let mut out = IndexMap::with_capacity(flow.inputs.len());
    for (name, decl) in &flow.inputs {
        let value = match given.get(name) {
            Some(v) => convert_value(decl.ty, v).map_err(|message| InputError::Invalid {
                name: name.clone(),
                message,
            })?,
            None => match (&decl.default, decl.is_chat_history) {
                (Some(d), _) => d.clone(),
                (None, true) => Value::Array(Vec::new()),
                (None, false) => {
                    return Err(InputError::Missing {
                        name: name.clone(),
                        ty: decl.ty.to_string(),
                    });
                }
            },
        };
        out.insert(name.clone(), value);
    }
    Ok(out)
}
