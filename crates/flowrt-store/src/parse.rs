//! promptflow connection YAML (`pf connection create --file x.yaml`) into a [`Connection`].

use crate::error::StoreError;
use crate::validate_name;
use flowrt_api::{Connection, ConnectionKind};
use flowrt_yaml::{Node, Value};
use indexmap::IndexMap;
use std::path::Path;

/// Default `api_type` of an `azure_open_ai` connection.
pub const DEFAULT_AZURE_API_TYPE: &str = "azure";
/// Default `api_version` of an `azure_open_ai` connection (promptflow's default).
pub const DEFAULT_AZURE_API_VERSION: &str = "2024-02-01";

/// Top-level keys that describe the document rather than the connection.
const IGNORED_KEYS: &[&str] = &["$schema", "module", "name", "type"];

pub(crate) fn parse_str(text: &str, path: &Path) -> Result<Connection, StoreError> {
    let doc = flowrt_yaml::parse(text).map_err(|e| StoreError::Yaml {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let Value::Map(map) = &doc.value else {
        return Err(StoreError::Yaml {
            path: path.to_path_buf(),
            message: "expected a mapping at the top level".to_string(),
        });
    };
    let p = Parser { path, doc: &doc };

    let name = p.required_scalar("name")?;
    validate_name(&name)?;
    let ty = p.required_scalar("type")?;
    let Some(kind) = ConnectionKind::parse(&ty) else {
        return Err(StoreError::UnknownType {
            path: path.to_path_buf(),
            found: ty,
        });
    };

    let mut configs = IndexMap::new();
    let mut secrets = IndexMap::new();
    match kind {
        ConnectionKind::Custom => {
            for (key, _) in map.iter() {
                let key = p.key_str(key)?;
                if !IGNORED_KEYS.contains(&key.as_str()) && key != "configs" && key != "secrets" {
                    return Err(p.invalid(
                        &key,
                        "unknown field for a custom connection (expected `configs` and `secrets`)",
                    ));
                }
            }
            configs = p.string_map("configs")?;
            secrets = p.string_map("secrets")?;
        }
        _ => {
            for (key, value) in map.iter() {
                let key = p.key_str(key)?;
                if IGNORED_KEYS.contains(&key.as_str()) {
                    continue;
                }
                let Some(value) = p.scalar(&key, value)? else {
                    continue;
                };
                if kind.secret_fields().contains(&key.as_str()) {
                    secrets.insert(key, value);
                } else {
                    configs.insert(key, value);
                }
            }
            for (field, value) in kind.defaults() {
                configs
                    .entry(field.to_string())
                    .or_insert_with(|| value.to_string());
            }
            // Azure connections with Entra ID (`auth_mode: meid_token`) need no key.
            let keyless = kind.allows_keyless()
                && configs.get("auth_mode").map(String::as_str) == Some("meid_token");
            if !keyless && secrets.get("api_key").is_none_or(|v| v.is_empty()) {
                return Err(p.missing("api_key"));
            }
            for field in kind.required_fields() {
                if configs.get(*field).is_none_or(|v| v.is_empty()) {
                    return Err(p.missing(field));
                }
            }
        }
    }

    Ok(Connection {
        name,
        kind,
        configs,
        secrets,
    })
}

struct Parser<'a> {
    path: &'a Path,
    doc: &'a Node,
}

impl Parser<'_> {
    fn missing(&self, field: &str) -> StoreError {
        let hint = match field {
            "name" => {
                "\nhint: add `name: my_connection`; flows name their connection by it".to_string()
            }
            "type" => format!(
                "\nhint: add `type:` with one of {}",
                crate::error::connection_types()
            ),
            _ => String::new(),
        };
        StoreError::MissingField {
            path: self.path.to_path_buf(),
            field: field.to_string(),
            hint,
        }
    }

    fn invalid(&self, field: &str, reason: &str) -> StoreError {
        StoreError::InvalidField {
            path: self.path.to_path_buf(),
            field: field.to_string(),
            reason: reason.to_string(),
        }
    }

    fn key_str(&self, key: &Node) -> Result<String, StoreError> {
        match scalar_text(key) {
            Some(k) => Ok(k),
            None => Err(self.invalid("?", "mapping keys must be scalars")),
        }
    }

    /// A scalar as its text; `None` for null (treated as absent); error for sequences/mappings.
    fn scalar(&self, field: &str, value: &Node) -> Result<Option<String>, StoreError> {
        match &value.value {
            Value::Null => Ok(None),
            _ => match scalar_text(value) {
                Some(s) => Ok(Some(s)),
                None => Err(self.invalid(field, "expected a string, number or boolean")),
            },
        }
    }

    fn required_scalar(&self, field: &str) -> Result<String, StoreError> {
        match self.doc.get(field) {
            None => Err(self.missing(field)),
            Some(v) => match self.scalar(field, v)? {
                Some(s) if !s.is_empty() => Ok(s),
                _ => Err(self.missing(field)),
            },
        }
    }

    /// `configs:` / `secrets:` of a custom connection: a mapping of scalars (absent = empty).
    fn string_map(&self, field: &str) -> Result<IndexMap<String, String>, StoreError> {
        let mut out = IndexMap::new();
        let inner = match self.doc.get(field).map(|v| &v.value) {
            None | Some(Value::Null) => return Ok(out),
            Some(Value::Map(m)) => m,
            Some(_) => return Err(self.invalid(field, "expected a mapping of key: value")),
        };
        for (k, v) in inner {
            let key = self.key_str(k)?;
            let dotted = format!("{field}.{key}");
            let value = self.scalar(&dotted, v)?.unwrap_or_default();
            out.insert(key, value);
        }
        Ok(out)
    }
}

/// The text of a YAML scalar as promptflow would store it (`3` → "3", `true` → "true").
fn scalar_text(node: &Node) -> Option<String> {
    match &node.value {
        Value::String(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        // `1.0` stays "1.0" (Rust alone would print "1"), as promptflow reads it.
        Value::Float(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e16 => {
            Some(format!("{f:.1}"))
        }
        Value::Float(f) => Some(f.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Seq(_) | Value::Map(_) => None,
    }
}
