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
            let mime = format!("image/{}", &m[1]);
            let content = m[3].trim();
            match &m[2] {
                "url" => Some(content.to_string()),
                "base64" => Some(format!("data:{mime};base64,{content}")),
                _ => {
                    let path = dir.join(content);
                    let bytes = std::fs::read(&path).ok()?;
                    let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
                    Some(format!("data:{mime};base64,{encoded}"))
                }
            }
        });
        match url {
            Some(url) => {
                let digest = Sha256::digest(url.as_bytes());
                let placeholder = format!("Image({})", &hex_of(&digest)[..8]);
                out.insert(name.clone(), Value::String(placeholder.clone()));
                images.urls.insert(placeholder, url);
            }
            None => {
                out.insert(name.clone(), value.clone());
            }
        }
    }
    (out, images)
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
                        parts.push(json!({"type": "image_url", "image_url": {"url": url, "detail": "auto"}}));
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
}
