//! Images a flow outputs, saved as promptflow saves them. A Python tool's `Image` reaches flowrt
//! as `{"__flowrt_image__": {"mime", "base64"}}`; a flow's outputs are written with each such image
//! saved to a file named by a fresh UUID (`.ext` from its MIME type) and replaced by promptflow's
//! reference `{"data:<mime>;path": PATH}`.

use base64::Engine;
pub use flowrt_flow::MessageFormat;
use serde_json::{Map, Value};
use std::path::Path;

/// The key a Python worker marks an image with.
pub const IMAGE_MARKER: &str = "__flowrt_image__";

/// Whether `value` holds an image anywhere (so callers skip the copy when it does not).
pub fn has_images(value: &Value) -> bool {
    match value {
        Value::Object(o) => o.contains_key(IMAGE_MARKER) || o.values().any(has_images),
        Value::Array(a) => a.iter().any(has_images),
        _ => false,
    }
}

/// `value` with every image saved under `dir` and replaced by its reference. The reference's
/// path is `dir/NAME` when `relative_to` is `None`, else relative to it (promptflow writes
/// absolute paths for a single test, paths inside the run folder for a batch).
pub fn persist_images(
    value: &Value,
    dir: &Path,
    relative_to: Option<&Path>,
    format: MessageFormat,
) -> std::io::Result<Value> {
    Ok(match value {
        Value::Object(o) => match image_of(o) {
            Some((mime, bytes)) => {
                std::fs::create_dir_all(dir)?;
                let ext = mime
                    .rsplit('/')
                    .next()
                    .filter(|e| *e != "*" && !e.is_empty());
                let name = match ext {
                    Some(ext) => format!("{}.{ext}", uuid::Uuid::new_v4()),
                    None => uuid::Uuid::new_v4().to_string(),
                };
                let path = dir.join(&name);
                std::fs::write(&path, bytes)?;
                let shown = match relative_to.and_then(|base| path.strip_prefix(base).ok()) {
                    Some(rel) => rel.to_string_lossy().into_owned(),
                    None => path.to_string_lossy().into_owned(),
                };
                match format {
                    MessageFormat::Basic => {
                        let mut r = Map::new();
                        r.insert(format!("data:{mime};path"), Value::String(shown));
                        Value::Object(r)
                    }
                    MessageFormat::OpenaiVision => {
                        serde_json::json!({"type": "image_file", "image_file": {"path": shown}})
                    }
                }
            }
            None => Value::Object(
                o.iter()
                    .map(|(k, v)| Ok((k.clone(), persist_images(v, dir, relative_to, format)?)))
                    .collect::<std::io::Result<_>>()?,
            ),
        },
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|v| persist_images(v, dir, relative_to, format))
                .collect::<std::io::Result<_>>()?,
        ),
        other => other.clone(),
    })
}

/// The MIME type and bytes of a marked image.
fn image_of(o: &Map<String, Value>) -> Option<(String, Vec<u8>)> {
    if o.len() != 1 {
        return None;
    }
    let inner = o.get(IMAGE_MARKER)?.as_object()?;
    let mime = inner.get("mime")?.as_str()?.to_string();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(inner.get("base64")?.as_str()?)
        .ok()?;
    Some((mime, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn images_are_saved_and_referenced_as_promptflow_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("output");
        let value = json!({"pic": {IMAGE_MARKER: {"mime": "image/png", "base64": "aGk="}}, "n": [1, {IMAGE_MARKER: {"mime": "image/*", "base64": "aGk="}}]});
        assert!(has_images(&value));
        let saved = persist_images(&value, &out, None, MessageFormat::Basic).expect("saved");
        let path = saved["pic"]["data:image/png;path"]
            .as_str()
            .expect("a png reference");
        assert!(
            path.ends_with(".png") && path.starts_with(out.to_str().unwrap()),
            "{path}"
        );
        assert_eq!(std::fs::read(path).expect("the file"), b"hi");
        let any = saved["n"][1]["data:image/*;path"]
            .as_str()
            .expect("an image/* reference");
        // `image/*` names no extension, so the file has none.
        assert!(!any.rsplit('/').next().unwrap().contains('.'), "{any}");
        assert!(!has_images(&saved));
        let relative =
            persist_images(&value, &out, Some(dir.path()), MessageFormat::Basic).expect("saved");
        assert!(relative["pic"]["data:image/png;path"]
            .as_str()
            .unwrap()
            .starts_with("output/"));
        let vision = persist_images(&value, &out, None, MessageFormat::OpenaiVision).unwrap();
        assert_eq!(vision["pic"]["type"], "image_file");
        assert!(vision["pic"]["image_file"]["path"]
            .as_str()
            .unwrap()
            .ends_with(".png"));
        // A value without images is left alone.
        assert_eq!(
            persist_images(&json!({"a": 1}), &out, None, MessageFormat::Basic).unwrap(),
            json!({"a": 1})
        );
    }
}
