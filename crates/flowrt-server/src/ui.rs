//! The web UI's static assets: hand-written HTML, one CSS file and ES modules under
//! `crates/flowrt-server/ui/`, compiled into the binary and served at `/` and `/ui/...`.
//!
//! The assets hold no data, so they need no token: every page fetches what it shows from the
//! authenticated `/api/v1` routes. Each response carries a strict Content-Security-Policy (only
//! this origin's scripts, styles and connections; no inline code, no frames), `nosniff`, and an
//! ETag from the content's hash so a browser revalidates cheaply instead of downloading again.

use crate::AppState;
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::OnceLock;

#[cfg(test)]
mod js_functions;

/// Everything the UI is made of: (path under `/ui/`, content type, bytes).
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("index.html", HTML, include_bytes!("../ui/index.html")),
    ("app.css", CSS, include_bytes!("../ui/app.css")),
    ("js/app.js", JS, include_bytes!("../ui/js/app.js")),
    ("js/api.js", JS, include_bytes!("../ui/js/api.js")),
    ("js/dom.js", JS, include_bytes!("../ui/js/dom.js")),
    ("js/sessions.js", JS, include_bytes!("../ui/js/sessions.js")),
    ("js/flows.js", JS, include_bytes!("../ui/js/flows.js")),
    ("js/editor.js", JS, include_bytes!("../ui/js/editor.js")),
    // CodeMirror 6, built once from `ui/vendor-src` (see its README); loaded only by the editor.
    (
        "js/vendor/codemirror.js",
        JS,
        include_bytes!("../ui/js/vendor/codemirror.js"),
    ),
    ("js/runs.js", JS, include_bytes!("../ui/js/runs.js")),
    ("js/trace.js", JS, include_bytes!("../ui/js/trace.js")),
    ("js/team.js", JS, include_bytes!("../ui/js/team.js")),
    (
        "js/endpoints.js",
        JS,
        include_bytes!("../ui/js/endpoints.js"),
    ),
    ("favicon.svg", SVG, include_bytes!("../ui/favicon.svg")),
];

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// Scripts, styles, images and API calls from this origin only; nothing inline, no plugins, no
/// frames, no form posts elsewhere. `data:` images are for the favicon-free fallback of browsers.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/{*file}", get(asset))
}

/// Strong ETags, computed once per process from each asset's bytes.
fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        use sha2::Digest;
        ASSETS
            .iter()
            .map(|(_, _, bytes)| {
                let digest = sha2::Sha256::digest(bytes);
                format!("\"{}\"", hex::encode(&digest[..12]))
            })
            .collect()
    })
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    serve(&file, &headers)
}

fn serve(file: &str, headers: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|(p, _, _)| *p == file) else {
        return crate::error::ApiErr::not_found(format!("no UI asset '{file}'")).into_response();
    };
    let (_, content_type, bytes) = ASSETS[i];
    let etag = &etags()[i];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, bytes).into_response()
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Revalidate every time: a new binary must never run with an old module next to a new one,
    // and the ETag makes the check a 304 without a body.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_weighs_under_100_kb() {
        // A page loads the shell and its own module, and may import one more when asked (the
        // start dialog, the trace view, the deploy dialog): the shell and the two heaviest
        // modules bound every page. (The Chromium tests weigh each page as it loads.)
        const SHELL: &[&str] = &[
            "index.html",
            "app.css",
            "js/app.js",
            "js/api.js",
            "js/dom.js",
            "favicon.svg",
        ];
        let shell: usize = ASSETS
            .iter()
            .filter(|(p, _, _)| SHELL.contains(p))
            .map(|(_, _, b)| b.len())
            .sum();
        let mut modules: Vec<usize> = ASSETS
            .iter()
            .filter(|(p, _, _)| !SHELL.contains(p) && !EDITOR.contains(p))
            .map(|(_, _, b)| b.len())
            .collect();
        modules.sort_unstable_by(|a, b| b.cmp(a));
        let heaviest = shell + modules.iter().take(2).sum::<usize>();
        assert!(heaviest < 100 * 1024, "a page may weigh {heaviest} bytes");
    }

    /// What only the flow editor loads, when a user starts editing.
    const EDITOR: &[&str] = &["js/editor.js", "js/vendor/codemirror.js"];

    #[test]
    fn the_editors_assets_weigh_under_350_kb_compressed() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        for (_, _, bytes) in ASSETS.iter().filter(|(p, _, _)| EDITOR.contains(p)) {
            gz.write_all(bytes).expect("compresses");
        }
        let compressed = gz.finish().expect("compresses").len();
        assert!(
            compressed < 350 * 1024,
            "the editor's assets weigh {compressed} bytes compressed"
        );
    }

    /// The longest a UI function may be: one that reads at once. A page splits into what it loads
    /// (API calls), what it draws (data to DOM) and what its buttons do (call, then redraw).
    const MAX_FUNCTION_LINES: usize = 60;

    #[test]
    fn every_ui_function_is_at_most_60_lines() {
        let mut long = Vec::new();
        for (path, _, bytes) in ASSETS {
            if !path.ends_with(".js") || path.starts_with("js/vendor/") {
                continue;
            }
            let src = std::str::from_utf8(bytes).expect("the UI's modules are UTF-8");
            let found = js_functions::functions(src);
            // A scan that misread a literal would swallow code and find fewer functions, not
            // longer ones: it must at least see every exported one.
            for name in exported_functions(src) {
                assert!(
                    found.iter().any(|f| f.name == name),
                    "the scan of ui/{path} missed its exported function {name}"
                );
            }
            for f in found {
                if f.lines > MAX_FUNCTION_LINES {
                    long.push(format!(
                        "ui/{path}:{}: {} is {} lines",
                        f.line, f.name, f.lines
                    ));
                }
            }
        }
        assert!(
            long.is_empty(),
            "UI functions over {MAX_FUNCTION_LINES} lines (split them into load, render and act):\n{}",
            long.join("\n")
        );
    }

    /// The names of a module's `export function` and `export async function` declarations.
    fn exported_functions(src: &str) -> Vec<&str> {
        src.lines()
            .filter_map(|l| {
                l.strip_prefix("export function ")
                    .or_else(|| l.strip_prefix("export async function "))
            })
            .filter_map(|rest| rest.split('(').next())
            .collect()
    }

    #[test]
    fn etags_differ_per_asset() {
        let tags = etags();
        let unique: std::collections::HashSet<_> = tags.iter().collect();
        assert_eq!(unique.len(), tags.len());
    }
}
