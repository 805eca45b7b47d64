//! Authoring flows on the server: a version's files, drafts checked as they are edited (YAML
//! edited in its text, so a saved version differs only where the user changed something),
//! versions saved with a message and refused when someone saved first, versions compared, and
//! `flowrt flow pull` / `flowrt flow diff`.

// A story test reads as one journey, top to bottom: exempt from the function-length lint.
#![allow(clippy::too_many_lines)]

mod common;

use common::server::Server;
use common::*;
use serde_json::{json, Value};
use std::path::Path;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/flows")
        .join(name)
}

/// The lines only one of two texts has, each with `-` or `+`.
fn changed_lines(before: &str, after: &str) -> Vec<String> {
    let (b, a): (Vec<&str>, Vec<&str>) = (before.lines().collect(), after.lines().collect());
    let mut out: Vec<String> = b
        .iter()
        .filter(|l| !a.contains(l))
        .map(|l| format!("-{l}"))
        .collect();
    out.extend(a.iter().filter(|l| !b.contains(l)).map(|l| format!("+{l}")));
    out
}

/// The `authoring` fixture pushed, its connection made (to `openai_base`), and a session
/// started on it: the session's id.
fn session_on_authoring(server: &Server, openai_base: &str) -> String {
    server.ok(&[
        "flow",
        "push",
        fixture("authoring").to_str().unwrap(),
        "--name",
        "authoring",
    ]);
    let conn = server.home().join("conn.yaml");
    std::fs::write(
        &conn,
        format!("name: test_openai\ntype: open_ai\napi_key: sk-x\nbase_url: {openai_base}/v1\n"),
    )
    .unwrap();
    server.ok(&["connection", "create", "--file", conn.to_str().unwrap()]);
    start_session(server, "authoring")
}

/// A session on workspace flow `flow` (never stopping by itself): its id.
fn start_session(server: &Server, flow: &str) -> String {
    server
        .ok(&["session", "start", "--flow", flow, "--idle-timeout", "0"])
        .stdout
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string()
}

fn draft(server: &Server, reference: &str, body: Value) -> Value {
    let (status, view) = server.api(
        "POST",
        &format!("/api/v1/flows/{reference}/draft"),
        &body.to_string(),
    );
    assert_eq!(status, 200, "{view}");
    view
}

#[test]
fn a_flow_is_edited_saved_compared_and_pulled_without_losing_a_line() {
    let server = Server::start();
    let dir = fixture("authoring");
    server.ok(&["flow", "push", dir.to_str().unwrap(), "--name", "authoring"]);
    let original = std::fs::read_to_string(dir.join("flow.dag.yaml")).unwrap();

    // The version's files, and one file's text; a path outside the flow is refused.
    let (status, files) = server.api("GET", "/api/v1/flows/authoring/files", "");
    assert_eq!(status, 200, "{files}");
    let paths: Vec<&str> = files["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        ["ask.jinja2", "flow.dag.yaml", "shout.py", "wrap.jinja2"]
    );
    let (status, file) = server.api(
        "GET",
        "/api/v1/flows/authoring@v1/file?path=flow.dag.yaml",
        "",
    );
    assert_eq!(status, 200);
    assert_eq!(file["text"], original.as_str());
    for bad in ["../../owner.token", "/etc/passwd", "nope.py"] {
        let (status, body) = server.api(
            "GET",
            &format!("/api/v1/flows/authoring/file?path={bad}"),
            "",
        );
        assert!(status == 400 || status == 404, "{bad}: {status} {body}");
        assert!(body["message"].as_str().is_some(), "{body}");
    }

    // A draft: the llm node's temperature, and a rename whose references follow.
    let edits = json!({"edits": [
        {"op": "set", "path": ["nodes", {"name": "ask"}, "inputs", "temperature"], "value": 0.9},
        {"op": "rename_node", "from": "wrap", "to": "framed"},
    ], "files": {"wrap.jinja2": "Framed answer: {{text}}\n"}});
    let view = draft(&server, "authoring@v1", edits);
    assert_eq!(view["problems"], json!([]), "{view:#}");
    let nodes: Vec<&str> = view["flow"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["ask", "framed", "shout"]);
    let edited = view["files"]["flow.dag.yaml"].as_str().unwrap().to_string();
    assert_eq!(
        changed_lines(&original, &edited),
        [
            "-    temperature: 0.2   # low: answers should repeat",
            "-- name: wrap",
            "-    text: ${wrap.output}",
            "+    temperature: 0.9   # low: answers should repeat",
            "+- name: framed",
            "+    text: ${framed.output}",
        ]
    );

    // A draft that breaks the flow says where, and is not saved.
    let broken = draft(
        &server,
        "authoring@v1",
        json!({"edits": [{"op": "set", "path": ["nodes", {"name": "shout"}, "inputs", "text"], "value": "${nowhere.output}"}]}),
    );
    assert_eq!(broken["flow"], Value::Null);
    let problem = &broken["problems"][0];
    assert_eq!(problem["file"], "flow.dag.yaml", "{broken:#}");
    assert!(problem["line"].as_u64().is_some(), "{broken:#}");
    assert!(
        problem["message"].as_str().unwrap().contains("nowhere"),
        "{broken:#}"
    );
    let refused = draft(
        &server,
        "authoring@v1",
        json!({"edits": [{"op": "rename_node", "from": "ask", "to": "shout"}]}),
    );
    assert!(
        refused["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("already named 'shout'"),
        "{refused:#}"
    );

    // Saved as v2 with its message.
    let mut changes = view["files"].clone();
    let save = json!({"base": "authoring@v1", "message": "warmer answers; wrap is framed", "files": changes});
    let (status, saved) = server.api(
        "POST",
        "/api/v1/flows/authoring/versions",
        &save.to_string(),
    );
    assert_eq!(status, 201, "{saved}");
    assert_eq!(saved["ref"], "authoring@v2");
    assert_eq!(saved["message"], "warmer answers; wrap is framed");
    // A save without a message, or with a broken flow, is refused.
    let (status, body) = server.api(
        "POST",
        "/api/v1/flows/authoring/versions",
        &json!({"base": "authoring@v2", "message": " ", "files": {}}).to_string(),
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = server.api(
        "POST",
        "/api/v1/flows/authoring/versions",
        &json!({"base": "authoring@v2", "message": "break it", "files": {"flow.dag.yaml": "nodes: [\n"}}).to_string(),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("not saved"),
        "{body}"
    );

    // A second draft from v1 saved after v2: refused with what v2 changed, nothing lost.
    changes = json!({"shout.py": "from promptflow.core import tool\n\n\n@tool\ndef shout(text: str) -> str:\n    return text.upper() + '!'\n"});
    let stale = json!({"base": "authoring@v1", "message": "louder", "files": changes});
    let (status, conflict) = server.api(
        "POST",
        "/api/v1/flows/authoring/versions",
        &stale.to_string(),
    );
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["code"], "FlowChanged");
    assert_eq!(conflict["latest"]["ref"], "authoring@v2");
    let changed_files: Vec<&str> = conflict["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(changed_files, ["flow.dag.yaml", "wrap.jinja2"]);
    // ... and saved under a new name instead.
    let (status, copy) = server.api(
        "POST",
        "/api/v1/flows/authoring_louder/versions",
        &stale.to_string(),
    );
    assert_eq!(status, 201, "{copy}");
    assert_eq!(copy["ref"], "authoring_louder@v1");

    // v1 against v2: only the changed lines, file by file.
    let (status, cmp) = server.api("GET", "/api/v1/flows/authoring/compare?from=1&to=2", "");
    assert_eq!(status, 200, "{cmp}");
    let files = cmp["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "{cmp:#}");
    let yaml_changes: Vec<String> = files[0]["hunks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|h| h["lines"].as_array().unwrap().clone())
        .filter(|l| l["op"] != " ")
        .map(|l| {
            format!(
                "{}{}",
                l["op"].as_str().unwrap(),
                l["text"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        yaml_changes,
        [
            "-    temperature: 0.2   # low: answers should repeat",
            "+    temperature: 0.9   # low: answers should repeat",
            "-- name: wrap",
            "+- name: framed",
            "-    text: ${wrap.output}",
            "+    text: ${framed.output}",
        ]
    );

    // The same from the CLI, as a unified diff.
    let diff = server.ok(&["flow", "diff", "authoring@v1", "authoring@v2"]);
    assert!(
        diff.stdout
            .contains("--- authoring@v1/wrap.jinja2\n+++ authoring@v2/wrap.jinja2\n@@ -1,1 +1,1 @@\n-Answer: {{text}}\n+Framed answer: {{text}}\n"),
        "{}",
        diff.stdout
    );

    // Pulled to a folder, it is v2's files; pushed back unchanged, it makes no version.
    let pulled = server.home().join("pulled");
    let out = server.ok(&["flow", "pull", "authoring@v2", pulled.to_str().unwrap()]);
    assert!(out.stderr.contains("pulled authoring@v2"), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(pulled.join("flow.dag.yaml")).unwrap(),
        edited
    );
    let again = server.cli(&["flow", "pull", "authoring@v2", pulled.to_str().unwrap()]);
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert!(again.stderr.contains("not empty"), "{}", again.stderr);
    let pushed = server.ok(&[
        "flow",
        "push",
        pulled.to_str().unwrap(),
        "--name",
        "authoring",
    ]);
    assert!(
        pushed.stderr.contains("unchanged since authoring@v2"),
        "{}",
        pushed.stderr
    );
}

#[test]
fn readers_cannot_edit_and_others_cannot_see() {
    let server = Server::start();
    server.ok(&[
        "flow",
        "push",
        fixture("authoring").to_str().unwrap(),
        "--name",
        "authoring",
    ]);
    let user = |name: &str, role: &str| {
        let (status, body) = server.api(
            "POST",
            "/api/v1/users",
            &json!({"name": name, "role": role}).to_string(),
        );
        assert_eq!(status, 201, "{body}");
        format!("Bearer {}", body["token"].as_str().unwrap())
    };
    let (vera, bob) = (user("vera", "viewer"), user("bob", "user"));
    let call = |auth: &str, method: &str, path: &str, body: &str| {
        let r = server.request_as(auth, method, path, body);
        (r.status, r.text)
    };
    let save =
        json!({"base": "authoring@v1", "message": "mine now", "files": {"wrap.jinja2": "x"}})
            .to_string();
    // A viewer reads the files but cannot draft or save.
    assert_eq!(
        call(&vera, "GET", "/api/v1/flows/authoring/files", "").0,
        200
    );
    assert_eq!(
        call(&vera, "POST", "/api/v1/flows/authoring@v1/draft", "{}").0,
        403
    );
    assert_eq!(
        call(&vera, "POST", "/api/v1/flows/authoring/versions", &save).0,
        403
    );
    // Another user does not see the flow at all.
    for (method, path, body) in [
        ("GET", "/api/v1/flows/authoring/files", ""),
        ("GET", "/api/v1/flows/authoring/file?path=shout.py", ""),
        ("GET", "/api/v1/flows/authoring/compare?from=1&to=1", ""),
        ("GET", "/api/v1/flows/authoring/snapshot", ""),
        ("POST", "/api/v1/flows/authoring@v1/draft", "{}"),
        ("POST", "/api/v1/flows/authoring/versions", save.as_str()),
    ] {
        let (status, text) = call(&bob, method, path, body);
        assert_eq!(status, 404, "{method} {path}: {text}");
    }
    // Nor under a name of his own: the base is still not his to read.
    let (status, _) = call(&bob, "POST", "/api/v1/flows/bobs/versions", &save);
    assert_eq!(status, 404);
    assert_eq!(
        server.api("GET", "/api/v1/flows/authoring", "").1["ref"],
        "authoring@v1"
    );
}

/// Edited through the API, three of the project's own flows change in exactly the edited
/// lines: comments, key order, quoting and blank lines stay as they were written.
#[test]
fn edited_fixtures_differ_only_in_the_edited_lines() {
    let server = Server::start();
    let cases = [
        (
            "pipeline",
            json!([{"op": "set", "path": ["inputs", "times", "default"], "value": 3}]),
            vec!["-    default: 2", "+    default: 3"],
        ),
        (
            "chat",
            json!([{"op": "set", "path": ["nodes", {"name": "chat"}, "inputs", "max_tokens"], "value": "64"},
                   {"op": "set", "path": ["nodes", {"name": "chat"}, "inputs", "top_p"], "value": 0.5}]),
            vec![
                "-    max_tokens: \"32\"",
                "+    max_tokens: \"64\"",
                "+    top_p: 0.5",
            ],
        ),
        (
            "chat_via_prompt",
            json!([{"op": "rename_node", "from": "request", "to": "prompted"}]),
            vec![
                "-- name: request",
                "-    request: ${request.output}",
                "+- name: prompted",
                "+    request: ${prompted.output}",
            ],
        ),
    ];
    for (name, edits, expected) in cases {
        let dir = fixture(name);
        server.ok(&["flow", "push", dir.to_str().unwrap(), "--name", name]);
        let original = std::fs::read_to_string(dir.join("flow.dag.yaml")).unwrap();
        let view = draft(&server, name, json!({"edits": edits}));
        assert_eq!(view["problems"], json!([]), "{name}: {view:#}");
        let edited = view["files"]["flow.dag.yaml"].as_str().unwrap();
        assert_eq!(
            changed_lines(&original, edited),
            expected,
            "{name}:\n{edited}"
        );
        assert_eq!(
            original.lines().count() + expected.iter().filter(|l| l.starts_with('+')).count()
                - expected.iter().filter(|l| l.starts_with('-')).count(),
            edited.lines().count(),
            "{name}"
        );
    }
}

/// Validate reads each node's tool as promptflow's tool-meta generation does: a python tool's
/// signature in the caller's session (its code runs there, never in the server), a template's
/// variables on the server; the inputs a tool takes that its node lacks are added to the YAML.
/// A tool that fails at import is named with its file and line.
#[test]
fn validate_reads_tools_in_the_session_and_adds_their_inputs() {
    let server = Server::start();
    let dir = fixture("authoring");
    // Nothing answers on port 9: validating never calls the model.
    let session = session_on_authoring(&server, "http://127.0.0.1:9");
    let shout = "from promptflow.core import tool\n\n\n@tool\ndef shout(text: str, times: int = 2, suffix: str = \"!\") -> str:\n    return (text.upper() + suffix) * times\n";
    let ask =
        std::fs::read_to_string(dir.join("ask.jinja2")).unwrap() + "Answer in a {{tone}} tone.\n";
    let body = json!({"files": {"shout.py": shout, "ask.jinja2": ask}, "validate": true, "session": session});
    // The first check starts the session's tool reader; later ones are warm.
    let view = draft(&server, "authoring", body.clone());
    assert_eq!(view["problems"], json!([]), "{view:#}");
    assert_eq!(
        view["added_inputs"],
        json!(["ask.tone", "shout.times", "shout.suffix"])
    );
    assert_eq!(view["tools"]["shout"]["function"], "shout");
    assert_eq!(
        view["tools"]["shout"]["inputs"]["times"],
        json!({"type": ["int"], "required": false, "default": 2})
    );
    let yaml = view["files"]["flow.dag.yaml"].as_str().unwrap();
    let original = std::fs::read_to_string(dir.join("flow.dag.yaml")).unwrap();
    assert_eq!(
        changed_lines(&original, yaml),
        ["+    tone: \"\"", "+    times: 2", "+    suffix: \"!\""]
    );
    let mut warm = Vec::new();
    for _ in 0..5 {
        let t = std::time::Instant::now();
        draft(&server, "authoring", body.clone());
        warm.push(t.elapsed().as_millis());
    }
    warm.sort();
    eprintln!("validate round trips (warm, ms): {warm:?}");

    // A tool file that raises at import: its file and line, from the session.
    let broken = "from promptflow.core import tool\nimport json\n\nraise RuntimeError(\"not configured\")\n\n@tool\ndef shout(text: str) -> str:\n    return text\n";
    let view = draft(
        &server,
        "authoring",
        json!({"files": {"shout.py": broken}, "validate": true, "session": session}),
    );
    let problem = &view["problems"][0];
    assert_eq!(problem["file"], "shout.py", "{view:#}");
    assert_eq!(problem["line"], 4, "{view:#}");
    assert!(
        problem["message"]
            .as_str()
            .unwrap()
            .contains("not configured"),
        "{view:#}"
    );
    // Without a session, python tools are not read (and the server says why).
    let view = draft(
        &server,
        "authoring",
        json!({"files": {"shout.py": shout}, "validate": true}),
    );
    assert!(
        view["tools"]["shout"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("running session"),
        "{view:#}"
    );
    // The drafts were read in the session's own folder, where its seal keeps them.
    let drafts = server.home().join("sessions").join(&session).join("drafts");
    let kept = std::fs::read_dir(&drafts).map(|d| d.count()).unwrap_or(0);
    assert!(kept >= 2, "{} holds {kept} drafts", drafts.display());
}

/// A saved version reaches a running session without a restart: the agent opens it and swaps
/// it in; a version whose requirements differ is refused with the way to install them.
#[test]
fn a_session_switches_to_a_saved_version_without_a_restart() {
    let fake = FakeOpenAi::start(0);
    let server = Server::start();
    let id = session_on_authoring(&server, &fake.base);
    let test = |question: &str| {
        let (status, line) = server.api(
            "POST",
            &format!("/api/v1/sessions/{id}/test"),
            &json!({"inputs": {"question": question}}).to_string(),
        );
        assert_eq!(status, 200, "{line}");
        line["outputs"]["answer"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(test("hi"), "ANSWER: ECHO: HI\n");
    let addr_file = server.home().join("sessions").join(&id).join("agent.addr");
    let agent_before = std::fs::read_to_string(&addr_file).unwrap();

    let save = |base: &str, files: Value| {
        let (status, saved) = server.api(
            "POST",
            "/api/v1/flows/authoring/versions",
            &json!({"base": base, "message": "framed", "files": files}).to_string(),
        );
        assert_eq!(status, 201, "{saved}");
        saved["ref"].as_str().unwrap().to_string()
    };
    let v2 = save("authoring@v1", json!({"wrap.jinja2": "Framed: {{text}}\n"}));
    let (status, switched) = server.api(
        "POST",
        &format!("/api/v1/sessions/{id}/switch"),
        &json!({"flow": v2}).to_string(),
    );
    assert_eq!(status, 200, "{switched}");
    assert_eq!(switched["flow_ref"], "authoring@v2");
    assert!(
        switched["note"]
            .as_str()
            .unwrap()
            .contains("without a restart"),
        "{switched}"
    );
    assert_eq!(test("hi"), "FRAMED: ECHO: HI\n");
    // The same agent answered: nothing restarted.
    assert_eq!(std::fs::read_to_string(&addr_file).unwrap(), agent_before);
    assert_eq!(
        server.api("GET", &format!("/api/v1/sessions/{id}"), "").1["status"],
        "Running"
    );

    // New requirements need an install, not a switch.
    let v3 = save("authoring@v2", json!({"requirements.txt": "six==1.16.0\n"}));
    let (status, refused) = server.api(
        "POST",
        &format!("/api/v1/sessions/{id}/switch"),
        &json!({"flow": v3}).to_string(),
    );
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("install"),
        "{refused}"
    );
    assert_eq!(test("hi"), "FRAMED: ECHO: HI\n");
}

/// Variants as promptflow writes them: the first one moves the node's settings into
/// `node_variants`, a clone gets a prompt file of its own, and either can be the default.
#[test]
fn a_node_gets_variants_and_a_default() {
    let server = Server::start();
    server.ok(&[
        "flow",
        "push",
        fixture("authoring").to_str().unwrap(),
        "--name",
        "authoring",
    ]);
    let ask = |rest: &[&str]| {
        let mut p = vec![json!("node_variants"), json!("ask"), json!("variants")];
        p.extend(rest.iter().map(|k| json!(k)));
        p
    };
    let view = draft(
        &server,
        "authoring",
        json!({"edits": [
            {"op": "add_variant", "node": "ask"},
            {"op": "set", "path": ask(&["variant_1", "node", "inputs", "temperature"]), "value": 1.0},
            {"op": "set_default_variant", "node": "ask", "variant": "variant_1"},
        ]}),
    );
    assert_eq!(view["problems"], json!([]), "{view:#}");
    assert_eq!(
        view["variants"]["ask"],
        json!({"default": "variant_1", "ids": ["variant_0", "variant_1"]})
    );
    let node = &view["flow"]["nodes"][0];
    assert_eq!(
        (&node["variant"], &node["source"]),
        (&json!("variant_1"), &json!("ask__variant_1.jinja2"))
    );
    assert_eq!(node["inputs"]["temperature"], 1.0);
    let original = std::fs::read_to_string(fixture("authoring").join("ask.jinja2")).unwrap();
    assert_eq!(view["files"]["ask__variant_1.jinja2"], original.as_str());
    // The other variant, shown on request.
    let files = view["files"].clone();
    let other = draft(
        &server,
        "authoring",
        json!({"files": files.clone(), "variant": {"node": "ask", "id": "variant_0"}}),
    );
    assert_eq!(other["flow"]["nodes"][0]["inputs"]["temperature"], 0.2);
    // An unknown variant cannot be the default.
    let refused = draft(
        &server,
        "authoring",
        json!({"files": view["files"], "edits": [{"op": "set_default_variant", "node": "ask", "variant": "variant_9"}]}),
    );
    assert!(
        refused["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("no variant 'variant_9'"),
        "{refused:#}"
    );
}

/// A session lists the tools its packages declare (promptflow's `package_tools` entry points),
/// and a draft adding one as a node runs it.
#[test]
fn a_sessions_package_tools_are_listed_and_one_is_added_as_a_node() {
    let server = Server::start();
    let dir = fixture("pkg_tools");
    server.ok(&["flow", "push", dir.to_str().unwrap(), "--name", "pkg_tools"]);
    let id = start_session(&server, "pkg_tools");
    let (status, listed) = server.api("GET", &format!("/api/v1/sessions/{id}/tools"), "");
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["errors"], json!([]), "{listed}");
    let tool = &listed["tools"][0];
    assert_eq!(tool["id"], "my_tools.echo.echo", "{listed}");
    assert_eq!(tool["name"], "Echo");
    assert_eq!(
        tool["inputs"]["times"],
        json!({"type": ["int"], "required": false, "default": 2})
    );
    assert_eq!(tool["inputs"]["text"]["required"], true);
    let node = json!({"name": "echo", "type": "python", "source": {"type": "package", "tool": tool["id"]}, "inputs": {"text": "${first.output}", "times": 3}});
    let view = draft(
        &server,
        "pkg_tools",
        json!({"edits": [
            {"op": "set", "path": ["nodes", 1], "value": node},
            {"op": "set", "path": ["outputs", "echoed"], "value": {"type": "string", "reference": "${echo.output}"}},
        ]}),
    );
    assert_eq!(view["problems"], json!([]), "{view:#}");
    let (status, line) = server.api(
        "POST",
        "/api/v1/flows/pkg_tools/draft/test",
        &json!({"files": view["files"], "session": id, "inputs": {"text": " hi "}}).to_string(),
    );
    assert_eq!(status, 200, "{line}");
    assert_eq!(line["outputs"]["echoed"], "hi hi hi", "{line}");
}

/// A draft names files by path: none may leave the flow's folder, and a file cannot take a
/// folder's place (or sit inside a file). Each is refused with the path, and nothing is written.
#[test]
fn paths_a_draft_names_stay_inside_its_flow() {
    let server = Server::start();
    server.ok(&[
        "flow",
        "push",
        fixture("pkg_tools").to_str().unwrap(),
        "--name",
        "pkg_tools",
    ]);
    let home = server.home();
    let token_before = std::fs::read_to_string(home.join("owner.token")).unwrap();
    for bad in [
        "../../owner.token",
        "../escape.txt",
        "/tmp/escape.txt",
        "a/../../escape.txt",
        "a\\..\\x",
    ] {
        let files = json!({ bad: "written by a hostile draft" });
        for (path, body) in [
            ("/api/v1/flows/pkg_tools/draft", json!({"files": files})),
            (
                "/api/v1/flows/pkg_tools/versions",
                json!({"base": "pkg_tools@v1", "message": "escape", "files": files}),
            ),
        ] {
            let (status, refused) = server.api("POST", path, &body.to_string());
            assert_eq!(status, 400, "{bad} via {path}: {refused}");
            assert!(
                refused["message"]
                    .as_str()
                    .unwrap()
                    .contains("is not a file of the flow"),
                "{refused}"
            );
        }
    }
    assert_eq!(
        std::fs::read_to_string(home.join("owner.token")).unwrap(),
        token_before
    );
    assert!(common::files_holding(home, "written by a hostile draft").is_empty());
    assert!(!std::path::Path::new("/tmp/escape.txt").exists());
    // A file where the flow has a folder, or inside one of its files: the draft's problem.
    for (path, names) in [
        ("my_tools", "is a folder of the flow"),
        ("first.py/x.py", "'first.py' is a file of the flow"),
    ] {
        let view = draft(&server, "pkg_tools", json!({"files": {path: "x"}}));
        assert_eq!(view["problems"][0]["file"], path, "{view:#}");
        assert!(
            view["problems"][0]["message"]
                .as_str()
                .unwrap()
                .contains(names),
            "{view:#}"
        );
        let (status, refused) = server.api(
            "POST",
            "/api/v1/flows/pkg_tools/versions",
            &json!({"base": "pkg_tools@v1", "message": "collide", "files": {path: "x"}})
                .to_string(),
        );
        assert_eq!(status, 400, "{refused}");
        assert!(
            refused["message"].as_str().unwrap().contains(names),
            "{refused}"
        );
    }
    assert_eq!(
        server.api("GET", "/api/v1/flows/pkg_tools", "").1["ref"],
        "pkg_tools@v1"
    );
}
