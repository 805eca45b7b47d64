//! promptflow's behaviours that its own flows rely on, as users of `flowrt` see them.

// A story test reads as one journey, top to bottom: exempt from the function-length lint.
#![allow(clippy::too_many_lines)]

mod common;

use common::{flow, Env, FakeOpenAi};
use serde_json::json;

#[test]
fn a_failing_aggregation_node_is_reported_and_the_outputs_still_printed() {
    // `pf flow test` runs aggregation with errors recorded, not raised: exit 0, outputs printed.
    let env = Env::new();
    let (_d, dir) = flow("compat_agg_fails");
    let r = env.run(&["flow", "test", dir.to_str().unwrap(), "--inputs", "x=4"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json(), json!({"doubled": 8}));
    assert!(
        r.stderr.contains(
            "error: aggregation failed: node 'summarize' failed: ValueError: cannot summarize 1 value(s)"
        ),
        "{}",
        r.stderr
    );
}

#[test]
fn nan_and_infinities_are_printed_as_promptflow_prints_them() {
    // `pf flow test` prints json.dumps(result, indent=4): four spaces a level.
    let env = Env::new();
    let (_d, dir) = flow("compat_nonfinite");
    let r = env.run(&["flow", "test", dir.to_str().unwrap(), "--inputs", "d=-inf"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let expected = r#"{
    "d": -Infinity,
    "values": {
        "nan": NaN,
        "inf": Infinity,
        "ninf": -Infinity,
        "one": 1.5
    },
    "checked": {
        "nan": "float:nan",
        "inf": "float:inf",
        "ninf": "float:-inf",
        "one": "float:1.5",
        "is_nan": true
    }
}"#;
    assert_eq!(r.stdout.trim(), expected, "{}", r.stderr);
    // An inputs file may hold NaN, as Python's json reads it.
    let inputs = dir.join("inputs.json");
    std::fs::write(&inputs, r#"{"d": NaN}"#).unwrap();
    let r = env.run(&[
        "flow",
        "test",
        dir.to_str().unwrap(),
        "--inputs-file",
        inputs.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.starts_with("{\n    \"d\": NaN,\n"), "{}", r.stdout);
}

#[test]
fn an_llm_nodes_prompt_input_replaces_its_template() {
    let server = common::FakeOpenAi::start(0);
    let env = Env::new();
    env.connection(&format!(
        "name: test_openai\ntype: open_ai\napi_key: k\nbase_url: {}/v1\n",
        server.base
    ));
    let (_d, dir) = flow("compat_llm_prompt");
    let r = env.run(&[
        "flow",
        "test",
        dir.to_str().unwrap(),
        "--inputs",
        "text=hello",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json(), json!({"answer": "echo: Say hello."}));
    let reqs = server.requests.lock().unwrap();
    // The prompt node left `{{mood}}` in its text; the llm node rendered it with its own inputs.
    assert_eq!(
        reqs[0].1["messages"],
        json!([{"role": "system", "content": "You are cheerful."},
               {"role": "user", "content": "Say hello."}])
    );
    assert!(reqs[0].1.get("mood").is_none() && reqs[0].1.get("prompt").is_none());
}

const MISSING_CONN: &str = "error: Node 'use' input 'conn': connection 'my_missing_conn' does not exist (tool 'use_conn' in 'use_conn.py' takes a CustomConnection there); create it with `flowrt connection create --file CONN.yaml` or name an existing connection";

#[test]
fn a_missing_connection_of_a_python_tool_fails_the_flow_before_any_line_runs() {
    let env = Env::new();
    let (_d, dir) = flow("compat_missing_conn");
    let r = env.run(&["flow", "test", dir.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(r.stderr.trim(), MISSING_CONN);
    assert_eq!(r.stdout, "");

    // A batch run fails before any line runs.
    let data = dir.join("data.jsonl");
    let r = env.run(&[
        "run",
        "create",
        "--flow",
        dir.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--name",
        "missing_conn",
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.trim().ends_with(MISSING_CONN), "{}", r.stderr);
    assert!(!r.stderr.contains("the tool ran"), "{}", r.stderr);
    assert!(!env
        .home
        .path()
        .join("runs/missing_conn/flow_outputs")
        .exists());

    // Nor is it served.
    let r = env.run(&["flow", "serve", dir.to_str().unwrap(), "--port", "0"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(r.stderr.trim(), MISSING_CONN);

    // With the connection created, the tool gets a connection object.
    env.connection("name: my_missing_conn\ntype: custom\nconfigs: {a: b}\nsecrets: {k: v}\n");
    let r = env.run(&["flow", "test", dir.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json(), json!({"out": "hi: CustomConnection"}));
}

#[test]
fn a_batch_runs_output_jsonl_writes_nan_as_promptflow_does() {
    let env = Env::new();
    let (d, dir) = flow("compat_nonfinite");
    let data = d.path().join("data.jsonl");
    // Data files may hold NaN too (promptflow reads them with pandas).
    std::fs::write(&data, "{\"d\": NaN}\n").unwrap();
    let r = env.run(&[
        "run",
        "create",
        "--flow",
        dir.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--name",
        "nonfinite",
        "--column-mapping",
        "d=${data.d}",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let text = std::fs::read_to_string(
        env.home
            .path()
            .join("runs/nonfinite/flow_outputs/output.jsonl"),
    )
    .unwrap();
    assert!(
        text.starts_with(
            r#"{"line_number":0,"d":NaN,"values":{"nan":NaN,"inf":Infinity,"ninf":-Infinity,"one":1.5},"#
        ),
        "{text}"
    );
    // flowrt reads its own output back (for `run show-details` and evaluation runs).
    let r = env.run(&["run", "show-details", "nonfinite"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains(r#""values":{"nan":NaN,"inf":Infinity,"#),
        "{}",
        r.stdout
    );
}

#[test]
fn a_missing_connection_of_the_unified_llm_tool_fails_at_load() {
    let env = Env::new();
    let (_d, dir) = flow("unified_llm");
    let r = env.run(&["flow", "test", dir.to_str().unwrap(), "--inputs", "topic=x"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(
        r.stderr.trim(),
        "error: node 'ask' uses connection 'test_openai', which does not exist\nhint: create it with `flowrt connection create --file CONN.yaml`"
    );
}

/// The smallest valid PNG (1×1, one white pixel).
const DOT_PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x02, 0x00, 0x00, 0x00, 0x90, 0x77, 0x53,
    0xde, 0x00, 0x00, 0x00, 0x0c, 0x49, 0x44, 0x41, 0x54, 0x08, 0xd7, 0x63, 0xf8, 0xff, 0xff, 0x3f,
    0x00, 0x05, 0xfe, 0x02, 0xfe, 0xdc, 0xcc, 0x59, 0xe7, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e,
    0x44, 0xae, 0x42, 0x60, 0x82,
];

#[test]
fn image_inputs_reach_tools_as_images_and_image_outputs_are_saved_as_promptflow_saves_them() {
    let env = Env::new();
    let (_d, dir) = flow("compat_image");
    std::fs::write(dir.join("dot.png"), DOT_PNG).unwrap();
    let r = env.run(&["flow", "test", dir.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = r.json();
    // `Image(<sha1[:8]>)`, its type guessed from its bytes, as promptflow's Image prints.
    let text = out["described"].as_str().unwrap();
    assert!(
        text.starts_with("Image(") && text.ends_with(") image/png 69 bytes"),
        "{text}"
    );
    let saved_dir = std::fs::canonicalize(&dir)
        .unwrap()
        .join(".promptflow/output");
    let check = |reference: &serde_json::Value| {
        let path = reference["data:image/png;path"]
            .as_str()
            .unwrap_or_else(|| panic!("not an image reference: {reference}"));
        assert!(
            path.starts_with(saved_dir.to_str().unwrap()) && path.ends_with(".png"),
            "{path}"
        );
        assert_eq!(std::fs::read(path).unwrap(), DOT_PNG);
    };
    check(&out["same"]);
    check(&out["both"][0]);
    check(&out["both"][1]);
    // A data URI works as well as a path, and something that is no image says so.
    let uri = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVQI12P4//8/AAX+Av7czFnnAAAAAElFTkSuQmCC";
    let r = env.run(&[
        "flow",
        "test",
        dir.to_str().unwrap(),
        "--inputs",
        &format!("picture={uri}"),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    check(&r.json()["same"]);
    let r = env.run(&[
        "flow",
        "test",
        dir.to_str().unwrap(),
        "--inputs",
        "picture=missing.png",
    ]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("missing.png"), "{}", r.stderr);

    // In a batch, images are files in flow_outputs named in output.jsonl by their file name.
    let data = dir.join("data.jsonl");
    std::fs::write(
        &data,
        "{\"picture\": {\"data:image/png;path\": \"dot.png\"}}\n{}\n",
    )
    .unwrap();
    let out_dir = dir.join("run-out");
    let r = env.run(&[
        "run",
        "create",
        "--flow",
        dir.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--column-mapping",
        "picture=${data.picture}",
        "--name",
        "pictures",
        "--output-dir",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let outputs = std::fs::read_to_string(out_dir.join("flow_outputs/output.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(outputs.lines().next().unwrap()).unwrap();
    let name = first["same"]["data:image/png;path"]
        .as_str()
        .unwrap_or_else(|| panic!("{first}"));
    assert!(!name.contains('/') && name.ends_with(".png"), "{name}");
    assert_eq!(
        std::fs::read(out_dir.join("flow_outputs").join(name)).unwrap(),
        DOT_PNG
    );
    let records = std::fs::read_to_string(out_dir.join("line_runs.jsonl")).unwrap();
    assert!(
        !records.contains("__flowrt_image__"),
        "images are saved, not inlined"
    );
}

#[test]
fn compat_the_vision_chat_tool_sends_images_as_content_parts() {
    // promptflow.tools.aoai_gpt4v.AzureOpenAI.chat: `![image]({{x}})` puts an image on a line of its
    // own, an image inside a list input is one of the list's lines, and every such line becomes an
    // `image_url` part (with the node's `detail`) of its message; the other lines are text parts.
    let server = FakeOpenAi::start(0);
    let env = Env::new();
    env.connection(&format!(
        "name: test_azure\ntype: azure_open_ai\napi_key: k\napi_base: {}\napi_version: \"2024-02-01\"\n",
        server.base
    ));
    let (_d, dir) = flow("compat_vision");
    std::fs::write(dir.join("dot.png"), DOT_PNG).unwrap();
    let r = env.run(&["flow", "test", dir.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let reqs = server.requests.lock().unwrap();
    assert_eq!(reqs.len(), 1);
    let (path, body) = &reqs[0];
    assert!(
        path.contains("/deployments/gpt-4v/chat/completions"),
        "{path}"
    );
    let dot = json!({"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{DOT_PNG_BASE64}"), "detail": "low"}});
    assert_eq!(
        body["messages"][0],
        json!({"role": "system", "content": "Describe images."})
    );
    assert_eq!(
        body["messages"][1]["content"],
        json!([{"type": "text", "text": "what is it"}, dot, dot, {"type": "text", "text": "how many colors?"}]),
        "{body}"
    );
    assert_eq!(body["max_tokens"], json!(64));
    assert!(
        body.get("detail").is_none() && body.get("connection").is_none(),
        "{body}"
    );
}

const DOT_PNG_BASE64: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVQI12P4//8/AAX+Av7czFnnAAAAAElFTkSuQmCC";

#[test]
fn compat_promptflows_own_prompty_finds_flowrts_connections() {
    // A flow whose requirements install the real promptflow runs its Prompty, which looks a
    // connection up with promptflow.core._prompty_utils.get_connection_by_name in promptflow's own
    // local store: flowrt answers that lookup from its connections. (A stand-in module plays the
    // real one here.)
    let env = Env::new();
    env.connection("name: az\ntype: azure_open_ai\napi_key: az-key\napi_base: http://az.example\n");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("flow.dag.yaml"),
        "inputs: {}\noutputs:\n  found: {reference: \"${look.output}\"}\nnodes:\n- name: look\n  type: python\n  source: {type: code, path: look.py}\n  inputs: {}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("look.py"),
        "import sys\nimport types\n\nfrom promptflow.core import tool\n\nutils = types.ModuleType('promptflow.core._prompty_utils')\n\n\ndef get_connection_by_name(name):\n    raise LookupError(f'Connection {name!r} is not found.')\n\n\nutils.get_connection_by_name = get_connection_by_name\nsys.modules['promptflow.core._prompty_utils'] = utils\n\n\n@tool\ndef look() -> dict:\n    value, kind = sys.modules['promptflow.core._prompty_utils'].get_connection_by_name('az')\n    return {'kind': kind, 'api_base': value['api_base'], 'api_key': value['api_key']}\n",
    )
    .unwrap();
    let r = env.run(&["flow", "test", dir.path().to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.json(),
        json!({"found": {"kind": "AzureOpenAI", "api_base": "http://az.example", "api_key": "az-key"}})
    );
}

/// A template saved with Windows line endings (or old Mac ones) renders as promptflow renders it:
/// Python reads templates and prompty files with universal newlines.
#[test]
fn templates_saved_with_windows_line_endings_render_without_carriage_returns() {
    let env = Env::new();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::write(
        dir.join("flow.dag.yaml"),
        "inputs:\n  name:\n    type: string\noutputs:\n  text:\n    type: string\n    reference: ${greet.output}\nnodes:\n- name: greet\n  type: prompt\n  source:\n    type: code\n    path: greet.jinja2\n  inputs:\n    name: ${inputs.name}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("greet.jinja2"),
        "Hello {{name}}!\r\nSee you.\rBye.\r\n",
    )
    .unwrap();
    let r = env.run(&[
        "flow",
        "test",
        dir.to_str().unwrap(),
        "--inputs",
        "name=Ada",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json(), json!({"text": "Hello Ada!\nSee you.\nBye.\n"}));
}

/// Issue 21: a python tool whose parameter is annotated with a value (`filter: {} = None`) runs
/// as in promptflow, which passes such arguments unchanged (output checked against pf 1.18.5).
#[test]
fn a_value_used_as_an_annotation_is_no_error() {
    let env = Env::new();
    let (_d, dir) = flow("compat_literal_annotation");
    let r = env.run(&["flow", "test", dir.to_str().unwrap(), "--inputs", "q=hi"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json(), json!({"out": "hi|{'a': 1}|x"}));
}

/// Issue 21: what promptflow accepts and ignores loads in flowrt too, with a warning naming the
/// line: keys a node does not have (a misspelt `inputz:`, a stray `variants:`), and a list input
/// whose default is text that is no list (promptflow parses it only when the input is missing).
/// Given its inputs, the flow gives promptflow 1.18.5's output.
#[test]
fn what_promptflow_ignores_is_a_warning() {
    let env = Env::new();
    let (_d, dir) = flow("compat_lenient");
    let r = env.run(&[
        "flow",
        "test",
        dir.to_str().unwrap(),
        "--inputs",
        "items=[1,2]",
        "obj={\"a\":1}",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json(), json!({"out": "[1, 2]|{'a': 1}|x"}));
    for warning in [
        "flow.dag.yaml:4: default of input 'items': value '' is not a valid list; the input must be given",
        "flow.dag.yaml:25: node 'echo' has unknown key 'inputz', which is ignored",
        "flow.dag.yaml:26: node 'echo' has unknown key 'variants', which is ignored",
    ] {
        assert!(r.stderr.contains(warning), "{warning}: {}", r.stderr);
    }
    // Without the input there is no default to use: an error, as in promptflow.
    let r = env.run(&["flow", "test", dir.to_str().unwrap()]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("'items'"), "{}", r.stderr);
}

/// Issue 21: flows that render a prompty's template themselves with promptflow's private
/// helpers (`Prompty._template`, `promptflow.core._prompty_utils.convert_prompt_template` and
/// `parse_chat`) get what promptflow 1.18.5 gives: `pf_output.json` is `pf flow test`'s output.
#[test]
fn promptflows_private_prompt_helpers_render_as_promptflow_does() {
    let env = Env::new();
    let (_d, dir) = flow("compat_prompty_utils");
    let inputs = dir.join("inputs.json");
    let r = env.run(&[
        "flow",
        "test",
        dir.to_str().unwrap(),
        "--inputs-file",
        inputs.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let expected = std::fs::read_to_string(dir.join("pf_output.json")).unwrap();
    assert_eq!(r.stdout.trim(), expected.trim());
}

/// Issue 21: every compat fixture (one for each behaviour of promptflow's that public flows rely
/// on) run side by side with promptflow 1.18.5 by `scripts/side_by_side.py`, against this test's
/// model server (and the script's managed identity endpoint, for the keyless prompty): each one
/// promptflow runs gives identical outputs under flowrt.
#[test]
fn the_compat_fixtures_give_promptflows_outputs_side_by_side() {
    let venv = match std::env::var("FLOWRT_TEST_PF_VENV") {
        Ok(v) if !v.is_empty() => std::path::PathBuf::from(v),
        _ if std::env::var_os("CI").is_some() => panic!(
            "FLOWRT_TEST_PF_VENV is not set; run the tests with ./scripts/test.sh, which installs promptflow"
        ),
        _ => {
            eprintln!("skipped: FLOWRT_TEST_PF_VENV (a venv with promptflow-devkit and promptflow-tools) is not set");
            return;
        }
    };
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = tempfile::tempdir().unwrap();
    let fixtures = work.path().join("compat");
    std::fs::create_dir(&fixtures).unwrap();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(manifest.join("tests/flows")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.starts_with("compat_") {
            copy_tree(&entry_path(manifest, &name), &fixtures.join(&name));
            names.push(name);
        }
    }
    let server = FakeOpenAi::start(0);
    let results = work.path().join("results.json");
    let out = std::process::Command::new("python3")
        .arg(manifest.join("../../scripts/side_by_side.py"))
        .args(["--flows", fixtures.to_str().unwrap()])
        .args(["--pf", venv.join("bin/pf").to_str().unwrap()])
        .args(["--flowrt", env!("CARGO_BIN_EXE_flowrt")])
        .args(["--openai-base", &server.base])
        .args(["--openai-connection", "test_openai"])
        .args(["--azure-connection", "test_azure"])
        .args(["--timeout", "120", "--jobs", "2"])
        .args(["--out", results.to_str().unwrap()])
        .output()
        .unwrap();
    // The table on stdout; progress on stderr.
    let table = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(out.status.success(), "{table}");
    // Its progress lines: `[i/n] STATUS FORMAT PATH  -- reason`.
    let mut identical = Vec::new();
    for line in table.lines().filter(|l| l.starts_with('[')) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (status, path) = (fields[1], fields[3]);
        match status {
            "identical" => identical.push(path.to_string()),
            // Fixtures of what promptflow refuses: a missing connection, a prompty that needs its
            // parameters from the caller.
            "pf_failed"
                if path.ends_with("compat_missing_conn")
                    || path.ends_with("compat_stream_chunks/ask.prompty") => {}
            _ => panic!("{line}\n{table}"),
        }
    }
    // Every flow of the fixtures was run: all identical but the two promptflow refuses.
    assert_eq!(
        identical.len() + 2,
        flows_in(&fixtures),
        "{identical:?}\n{table}"
    );
    assert!(identical.len() >= names.len(), "{identical:?}");
}

/// The flows under `dir` as the side-by-side script finds them: folders with a flow.dag.yaml or
/// flow.flex.yaml, and .prompty files.
fn flows_in(dir: &std::path::Path) -> usize {
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if path.is_dir() {
            count += flows_in(&path);
        } else if name.ends_with(".prompty") || name == "flow.dag.yaml" || name == "flow.flex.yaml"
        {
            count += 1;
        }
    }
    count
}

fn entry_path(manifest: &std::path::Path, name: &str) -> std::path::PathBuf {
    manifest.join("tests/flows").join(name)
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Issue 21: a third-party package's `custom_llm` tool (`source.type: package_with_prompt`) runs
/// in Python as promptflow runs it: the node's template reaches the parameter typed as a
/// `PromptTemplate`, the connection and the other inputs as keyword arguments.
#[test]
fn a_custom_llm_package_tool_gets_its_prompt_template() {
    let env = Env::new();
    env.connection("name: my_custom\ntype: custom\nconfigs:\n  endpoint: https://llm.example\nsecrets:\n  key: s\n");
    let (_d, dir) = flow("custom_llm_pkg");
    let r = env.run(&[
        "flow",
        "test",
        dir.to_str().unwrap(),
        "--inputs",
        "name=Grace",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.json(),
        json!({"text": "PromptTemplate|chat|https://llm.example|system:\nGreet people.\nuser:\nHello Grace!\n"})
    );
    // A tool without a PromptTemplate parameter is refused with promptflow's reason.
    let tools = dir.join("my_llm_tools.py");
    let text = std::fs::read_to_string(&tools).unwrap();
    std::fs::write(
        &tools,
        text.replace("prompt: PromptTemplate", "prompt: str"),
    )
    .unwrap();
    let r = env.run(&["flow", "test", dir.to_str().unwrap()]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("is missing a prompt template argument"),
        "{}",
        r.stderr
    );
}
