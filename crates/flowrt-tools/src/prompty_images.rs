//! Images in a prompty's chat, as promptflow's `Prompty` sends them: an input written
//! `data:image/<fmt>;path|base64|url: VALUE` is an image; `![image]({{name}})` in the template
//! puts it on a line of its own; and a message with an image line is sent as content parts
//! (`text`, and `image_url` with a data URI, or the URL itself, and `detail: auto`).

use base64::Engine;
use indexmap::IndexMap;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::Path;

/// The images among a prompty's inputs: each input that names one is replaced by a placeholder
/// line, and the placeholder maps to the URL the model receives.
#[derive(Default)]
pub struct PromptImages {
    urls: IndexMap<String, String>,
    /// The image parts' `detail` (`low`, `high`; `auto` when unset).
    detail: Option<String>,
}

impl PromptImages {
    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }
}

/// `inputs` with every image input replaced by its placeholder, and the images. A path is read
/// relative to `dir` (the prompty's folder); one that cannot be read stays text, as in promptflow.
pub fn take_images(
    inputs: &IndexMap<String, Value>,
    dir: &Path,
) -> (IndexMap<String, Value>, PromptImages) {
    let pattern = regex::Regex::new(r"^data:image/([^;]*);(path|base64|url):\s*(.*)$");
    let mut images = PromptImages::default();
    let Ok(pattern) = pattern else {
        return (inputs.clone(), images);
    };
    let mut out = IndexMap::new();
    for (name, value) in inputs {
        let url = value.as_str().and_then(|s| {
            let m = pattern.captures(s)?;
            image_url(&m[1], &m[2], m[3].trim(), dir)
        });
        match url {
            Some(url) => {
                out.insert(name.clone(), Value::String(images.add(url)));
            }
            None => {
                out.insert(name.clone(), value.clone());
            }
        }
    }
    (out, images)
}

impl PromptImages {
    /// Keep `url` and return the placeholder the template renders in its place: promptflow's
    /// `str(Image)`, `Image(` and the first 8 hex digits of a hash `)`.
    fn add(&mut self, url: String) -> String {
        let digest = Sha256::digest(url.as_bytes());
        let placeholder = format!("Image({})", &hex_of(&digest)[..8]);
        self.urls.insert(placeholder.clone(), url);
        placeholder
    }
}

/// The URL the model receives for an image given as `format`, `kind` (path, url or base64) and
/// its content; `None` when a path cannot be read.
fn image_url(format: &str, kind: &str, content: &str, dir: &Path) -> Option<String> {
    let mime = format!("image/{format}");
    match kind {
        "url" => Some(content.to_string()),
        "base64" => Some(format!("data:{mime};base64,{content}")),
        _ => {
            let bytes = std::fs::read(dir.join(content)).ok()?;
            let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
            Some(format!("data:{mime};base64,{encoded}"))
        }
    }
}

/// A flow's image value as its URL: promptflow's `{"data:image/<format>;path|url|base64":
/// content}`, or a Python tool's `Image` output (`{"__flowrt_image__": {"mime", "base64"}}`).
fn image_value_url(value: &Value, dir: &Path) -> Option<String> {
    let map = value.as_object().filter(|m| m.len() == 1)?;
    let (key, content) = map.iter().next()?;
    if key == "__flowrt_image__" {
        let mime = content.get("mime")?.as_str()?;
        let data = content.get("base64")?.as_str()?;
        return Some(format!("data:{mime};base64,{data}"));
    }
    let (format, kind) = key.strip_prefix("data:image/")?.split_once(';')?;
    if !matches!(kind, "path" | "url" | "base64") {
        return None;
    }
    image_url(format, kind, content.as_str()?.trim(), dir)
}

/// A value with every image in it (alone, or an item of a list) replaced by its placeholder.
fn replace_images(value: Value, dir: &Path, images: &mut PromptImages) -> Value {
    if let Some(url) = image_value_url(&value, dir) {
        return Value::String(images.add(url));
    }
    match value {
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|i| replace_images(i, dir, images))
                .collect(),
        ),
        other => other,
    }
}

/// The messages of a vision chat tool's call (promptflow-tools' `aoai_gpt4v` / `openai_gpt4v`):
/// images in the inputs become placeholders, lists render one item a line (promptflow's
/// `ChatInputList`), `![image]({{x}})` puts an image on a line of its own, and a message with an
/// image line is sent as content parts, with the tool's `detail` input.
pub(crate) fn vision_messages(
    template: &str,
    mut vars: IndexMap<String, crate::chat::TemplateVar>,
    flavor: crate::chat::ChatFlavor,
    dir: &Path,
) -> Result<Vec<Value>, crate::ToolError> {
    let mut images = PromptImages {
        detail: vars
            .shift_remove("detail")
            .and_then(|v| v.value.as_str().map(str::to_string)),
        ..PromptImages::default()
    };
    let vars: IndexMap<String, crate::chat::TemplateVar> = vars
        .into_iter()
        .map(|(name, mut var)| {
            var.value = replace_images(var.value, dir, &mut images);
            (name, var)
        })
        .collect();
    let template = image_lines(template);
    let messages = crate::chat::build_messages_with(
        &template,
        &vars,
        flavor.walk(),
        crate::pyfmt::ListStyle::ChatLines,
    )?;
    Ok(with_image_parts(messages, &images))
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `![image]({{name}})` becomes `{{name}}` on a line of its own, as promptflow rewrites it.
pub fn image_lines(template: &str) -> String {
    match regex::Regex::new(r"!\[(\s*image\s*)\]\(\{\{(\s*[^\s{}]+\s*)\}\}\)") {
        Ok(re) => re.replace_all(template, "\n{{$2}}\n").into_owned(),
        Err(_) => template.to_string(),
    }
}

/// Messages whose content has an image's placeholder on a line become content parts.
pub fn with_image_parts(messages: Vec<Value>, images: &PromptImages) -> Vec<Value> {
    messages
        .into_iter()
        .map(|mut m| {
            let Some(text) = m.get("content").and_then(Value::as_str).map(str::to_string) else {
                return m;
            };
            let mut parts = Vec::new();
            let mut has_image = false;
            for line in text.trim().split('\n') {
                match images.urls.get(line.trim()) {
                    Some(url) => {
                        has_image = true;
                        let detail = images.detail.as_deref().unwrap_or("auto");
                        parts.push(json!({"type": "image_url", "image_url": {"url": url, "detail": detail}}));
                    }
                    None if line.trim().is_empty() => {}
                    None => parts.push(json!({"type": "text", "text": line})),
                }
            }
            if has_image {
                m["content"] = Value::Array(parts);
            }
            m
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_input_becomes_an_image_part_of_its_message() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("logo.png"), b"png-bytes").expect("write");
        let inputs = IndexMap::from([
            ("image".to_string(), json!("data:image/png;path: logo.png")),
            ("question".to_string(), json!("what is it")),
            ("missing".to_string(), json!("data:image/png;path:nope.png")),
        ]);
        let (values, images) = take_images(&inputs, dir.path());
        assert!(values["image"].as_str().unwrap().starts_with("Image("));
        assert_eq!(values["question"], "what is it");
        assert_eq!(
            values["missing"], "data:image/png;path:nope.png",
            "an unreadable path stays text"
        );
        assert_eq!(
            image_lines("{{q}}\n![image]({{ image }})"),
            "{{q}}\n\n{{ image }}\n"
        );
        let placeholder = values["image"].as_str().unwrap();
        let messages = vec![
            json!({"role": "system", "content": "be brief"}),
            json!({"role": "user", "content": format!("what is it\n\n{placeholder}\n")}),
        ];
        let out = with_image_parts(messages, &images);
        assert_eq!(out[0]["content"], "be brief");
        assert_eq!(
            out[1]["content"][0],
            json!({"type": "text", "text": "what is it"})
        );
        assert_eq!(
            out[1]["content"][1],
            json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,cG5nLWJ5dGVz", "detail": "auto"}})
        );
    }

    #[test]
    fn a_vision_chat_sends_image_values_in_lists_as_parts_one_item_a_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("logo.png"), b"png-bytes").expect("write");
        let vars = IndexMap::from([(
            "question".to_string(),
            crate::chat::TemplateVar::escaped(json!([
                {"data:image/png;url": "https://example.com/a.png"},
                "How many colors?",
                {"data:image/png;path": "logo.png"}
            ])),
        )]);
        let messages = vision_messages(
            "# system:\nbe brief\n# user:\n{{question}}\n",
            vars,
            crate::chat::ChatFlavor::AzureOpenAi,
            dir.path(),
        )
        .expect("renders");
        assert_eq!(
            messages[0],
            json!({"role": "system", "content": "be brief"})
        );
        assert_eq!(
            messages[1]["content"],
            json!([
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "auto"}},
                {"type": "text", "text": "How many colors?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,cG5nLWJ5dGVz", "detail": "auto"}}
            ])
        );
    }
}
