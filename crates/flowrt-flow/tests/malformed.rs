//! Malformed flows: each gives one exact, actionable message naming the file and line.

// A story test reads as one journey, top to bottom: exempt from the function-length lint.
#![allow(clippy::too_many_lines)]

use flowrt_flow::{load_flow, LoadOptions};
use std::path::Path;

const ECHO: &str = "- name: a\n  type: python\n  source: {type: code, path: echo.py}\n  inputs: {x: \"${inputs.t}\"}\n";

/// Load `yaml` as a flow in a fresh folder (with echo.py present) and return the error text with
/// the folder replaced by `FLOW`.
fn error_of(yaml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("echo.py"), "").unwrap();
    std::fs::write(dir.path().join("flow.dag.yaml"), yaml).unwrap();
    error_in(dir.path())
}

fn error_in(dir: &Path) -> String {
    match load_flow(dir, &LoadOptions::default()) {
        Ok(_) => panic!("flow must be rejected"),
        Err(e) => e.to_string().replace(&dir.display().to_string(), "FLOW"),
    }
}

fn flow(nodes: &str) -> String {
    format!("inputs:\n  t: {{type: string}}\noutputs:\n  o: {{reference: \"${{a.output}}\"}}\nnodes:\n{nodes}")
}

#[test]
fn cycle_is_named() {
    let yaml = flow(
        "- name: a\n  type: python\n  source: {type: code, path: echo.py}\n  inputs: {x: \"${c.output}\"}\n\
         - name: b\n  type: python\n  source: {type: code, path: echo.py}\n  inputs: {x: \"${a.output}\"}\n\
         - name: c\n  type: python\n  source: {type: code, path: echo.py}\n  inputs: {x: \"${b.output}\"}\n",
    );
    assert_eq!(
        error_of(&yaml),
        "FLOW/flow.dag.yaml:6: the nodes form a cycle: a -> b -> c -> a; a node cannot depend on itself through other nodes"
    );
}

#[test]
fn self_reference() {
    let yaml = flow("- name: a\n  type: python\n  source: {type: code, path: echo.py}\n  inputs: {x: \"${a.output}\"}\n");
    assert_eq!(
        error_of(&yaml),
        "FLOW/flow.dag.yaml:9: node 'a' input 'x' references the node itself\n\
         FLOW/flow.dag.yaml:6: the nodes form a cycle: a -> a; a node cannot depend on itself through other nodes"
    );
}

#[test]
fn unknown_node_in_node_input() {
    let yaml = flow("- name: a\n  type: python\n  source: {type: code, path: echo.py}\n  inputs: {x: \"${ghost.output}\"}\n");
    assert_eq!(
        error_of(&yaml),
        "FLOW/flow.dag.yaml:9: node 'a' input 'x' references node 'ghost', which does not exist; nodes: a"
    );
}

#[test]
fn unknown_node_in_output() {
    let yaml =
        "inputs:\n  t: {type: string}\noutputs:\n  o: {reference: \"${nope.output}\"}\nnodes:\n"
            .to_string()
            + ECHO;
    assert_eq!(
        error_of(&yaml),
        "FLOW/flow.dag.yaml:4: output 'o' references node 'nope', which does not exist; nodes: a"
    );
}

#[test]
fn unknown_flow_input() {
    let yaml = flow("- name: a\n  type: python\n  source: {type: code, path: echo.py}\n  inputs: {x: \"${inputs.txet}\"}\n");
    assert_eq!(
        error_of(&yaml),
        "FLOW/flow.dag.yaml:9: node 'a' input 'x' references flow input 'txet', which is not declared; declared inputs: t"
    );
}

#[test]
fn duplicate_node_names() {
    let yaml = flow(&format!("{ECHO}{ECHO}"));
    assert_eq!(
        error_of(&yaml),
        "FLOW/flow.dag.yaml:10: duplicate node name 'a': node names must be unique"
    );
}

#[test]
fn missing_tool_file() {
    let yaml = flow("- name: a\n  type: python\n  source: {type: code, path: nowhere.py}\n");
    assert_eq!(
        error_of(&yaml),
        "FLOW/flow.dag.yaml:8: node 'a': source file 'nowhere.py' does not exist in FLOW"
    );
}

#[test]
fn malformed_yaml_has_line_and_column() {
    let yaml = "inputs:\n  t: {type: string}\nnodes:\n- name: a\n  source: [type, code\n    path: echo.py\n   inputs: x\n";
    assert_eq!(
        error_of(yaml),
        "FLOW/flow.dag.yaml:6:9: invalid YAML: illegal placement of ':' indicator, inside the '[' opened at line 5 column 11 (is its ']' missing?)"
    );
}

#[test]
fn unknown_top_level_key() {
    let yaml = flow(ECHO) + "nodez: []\n";
    assert_eq!(
        error_of(&yaml),
        "FLOW/flow.dag.yaml:10: unknown top-level key 'nodez'; allowed keys are: $schema, id, name, display_name, version, description, tags, type, language, message_format, inputs, outputs, nodes, node_variants, tools, environment_variables, additional_includes, environment, provider, module"
    );
}

#[test]
fn source_path_escaping_the_folder() {
    let yaml = flow("- name: a\n  type: python\n  source: {type: code, path: ../outside.py}\n");
    assert_eq!(
        error_of(&yaml),
        "FLOW/flow.dag.yaml:8: node 'a': source path '../outside.py' leaves the flow folder; tool files must be inside it (use a path relative to flow.dag.yaml without '..')"
    );
}

#[test]
fn absolute_source_path() {
    let yaml = flow("- name: a\n  type: python\n  source: {type: code, path: /etc/passwd}\n");
    assert_eq!(
        error_of(&yaml),
        "FLOW/flow.dag.yaml:8: node 'a': source path '/etc/passwd' leaves the flow folder; tool files must be inside it (use a path relative to flow.dag.yaml without '..')"
    );
}

#[cfg(unix)]
#[test]
fn symlink_escaping_the_folder() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("evil.py"), "").unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path().join("evil.py"), dir.path().join("link.py")).unwrap();
    std::fs::write(
        dir.path().join("flow.dag.yaml"),
        flow("- name: a\n  type: python\n  source: {type: code, path: link.py}\n"),
    )
    .unwrap();
    let text = error_in(dir.path()).replace(
        &outside.path().canonicalize().unwrap().display().to_string(),
        "OUTSIDE",
    );
    assert_eq!(text, "FLOW/flow.dag.yaml:8: node 'a': source path 'link.py' resolves to OUTSIDE/evil.py, outside the flow folder");
}

#[test]
fn unknown_input_type() {
    let yaml = "inputs:\n  t: {type: strin}\noutputs:\n  o: {reference: \"${a.output}\"}\nnodes:\n"
        .to_string()
        + ECHO;
    assert_eq!(
        error_of(&yaml),
        "FLOW/flow.dag.yaml:2: input 't' has unknown type 'strin'; use one of: int, double, bool, string, list, object, image"
    );
}

#[test]
fn unconvertible_default() {
    let yaml = "inputs:\n  t: {type: string}\n  n: {type: int, default: many}\noutputs:\n  o: {reference: \"${a.output}\"}\nnodes:\n".to_string() + ECHO;
    assert_eq!(
        error_of(&yaml),
        "FLOW/flow.dag.yaml:3: default of input 'n': value 'many' is not a valid int"
    );
}

#[test]
fn node_without_type() {
    let yaml = flow("- name: a\n  source: {type: code, path: echo.py}\n");
    assert_eq!(
        error_of(&yaml),
        "FLOW/flow.dag.yaml:6: node 'a' has no type; use python, llm or prompt"
    );
}

#[test]
fn unknown_node_type() {
    let yaml = flow("- name: a\n  type: pyhton\n  source: {type: code, path: echo.py}\n");
    assert_eq!(
        error_of(&yaml),
        "FLOW/flow.dag.yaml:7: node 'a' has unknown type 'pyhton'; use python, llm or prompt"
    );
}

#[test]
fn node_without_source() {
    let yaml = flow("- name: a\n  type: python\n");
    assert_eq!(
        error_of(&yaml),
        "FLOW/flow.dag.yaml:6: node 'a' has no 'source' (for example source: {type: code, path: tool.py})"
    );
}

#[test]
fn code_source_without_path() {
    let yaml = flow("- name: a\n  type: python\n  source: {type: code}\n");
    assert_eq!(
        error_of(&yaml),
        "FLOW/flow.dag.yaml:8: node 'a': source of type code needs a 'path'"
    );
}

#[test]
fn llm_node_without_connection_or_api() {
    let yaml = flow("- name: a\n  type: llm\n  source: {type: code, path: echo.py}\n");
    assert_eq!(
        error_of(&yaml),
        "FLOW/flow.dag.yaml:6: llm node 'a' needs a 'connection'\n\
         FLOW/flow.dag.yaml:6: llm node 'a' needs 'api: chat' or 'api: completion'"
    );
}

#[test]
fn llm_node_with_unknown_api() {
    let yaml = flow("- name: a\n  type: llm\n  connection: c\n  api: chatt\n  source: {type: code, path: echo.py}\n");
    assert_eq!(
        error_of(&yaml),
        "FLOW/flow.dag.yaml:9: llm node 'a': unknown api 'chatt'; use chat or completion"
    );
}

#[test]
fn output_without_reference() {
    let yaml =
        "inputs:\n  t: {type: string}\noutputs:\n  o: {type: string}\nnodes:\n".to_string() + ECHO;
    assert_eq!(
        error_of(&yaml),
        "FLOW/flow.dag.yaml:4: output 'o' needs a reference such as ${node_name.output}"
    );
}

#[test]
fn reference_to_an_unknown_section() {
    let yaml = flow("- name: a\n  type: python\n  source: {type: code, path: echo.py}\n  inputs: {x: \"${inputs.t}\"}\n- name: b\n  type: python\n  source: {type: code, path: echo.py}\n  inputs: {x: \"${a.outputs}\"}\n");
    assert_eq!(
        error_of(&yaml),
        "FLOW/flow.dag.yaml:13: node 'b' input 'x': reference '${a.outputs}': unknown section 'outputs' of node 'a' (only 'output' can be referenced)"
    );
}

#[test]
fn bracket_right_after_output_in_a_node_input() {
    let yaml = flow(&format!("{ECHO}- name: b\n  type: python\n  source: {{type: code, path: echo.py}}\n  inputs: {{x: \"${{a.output[0]}}\"}}\n"));
    assert_eq!(
        error_of(&yaml),
        "FLOW/flow.dag.yaml:13: node 'b' input 'x': '${a.output[0]}' is not supported: a key or index cannot follow 'output' directly in a node input; read a property first, e.g. ${a.output.items[0]}"
    );
}

#[test]
fn activate_without_is() {
    let yaml = flow("- name: a\n  type: python\n  source: {type: code, path: echo.py}\n  activate: {when: \"${inputs.t}\"}\n");
    assert_eq!(
        error_of(&yaml),
        "FLOW/flow.dag.yaml:9: node 'a': activate needs both 'when' (usually a reference) and 'is' (a value)"
    );
}

#[test]
fn activate_on_an_unknown_node() {
    let yaml = flow("- name: a\n  type: python\n  source: {type: code, path: echo.py}\n  activate: {when: \"${z.output}\", is: 1}\n");
    assert_eq!(
        error_of(&yaml),
        "FLOW/flow.dag.yaml:9: node 'a' activate.when references node 'z', which does not exist; nodes: a"
    );
}

#[test]
fn line_node_reading_an_aggregation_node() {
    let yaml = flow(&format!(
        "- name: agg\n  type: python\n  source: {{type: code, path: echo.py}}\n  aggregation: true\n  inputs: {{x: \"${{inputs.t}}\"}}\n{ECHO}  \n- name: b\n  type: python\n  source: {{type: code, path: echo.py}}\n  inputs: {{x: \"${{agg.output}}\"}}\n"
    ));
    assert_eq!(
        error_of(&yaml),
        "FLOW/flow.dag.yaml:16: node 'b' reads aggregation node 'agg': only other aggregation nodes can use an aggregation node's output"
    );
}

#[test]
fn use_variants_without_node_variants() {
    let yaml = flow("- name: a\n  use_variants: true\n");
    assert_eq!(
        error_of(&yaml),
        "FLOW/flow.dag.yaml:6: node 'a' has use_variants but node_variants has no entry for it"
    );
}

/// Issue 21: promptflow loads a node with a key it does not know (a misspelling, a stray
/// `variants:`) and ignores the key: so does flowrt, with a warning naming the line.
#[test]
fn an_unknown_node_key_is_a_warning() {
    let yaml = flow(
        "- name: a\n  type: python\n  source: {type: code, path: echo.py}\n  inputz: {}\n  variants: {}\n",
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("echo.py"), "").unwrap();
    std::fs::write(dir.path().join("flow.dag.yaml"), yaml).unwrap();
    let flow = load_flow(dir.path(), &LoadOptions::default()).expect("the flow loads");
    let warnings: Vec<String> = flow.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        warnings,
        [
            "line 9: node 'a' has unknown key 'inputz', which is ignored",
            "line 10: node 'a' has unknown key 'variants', which is ignored"
        ]
    );
}

#[test]
fn top_level_not_a_mapping() {
    assert_eq!(
        error_of("- just\n- a list\n"),
        "FLOW/flow.dag.yaml:1: flow.dag.yaml must be a mapping with inputs, outputs and nodes"
    );
}

#[test]
fn no_flow_in_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        error_in(dir.path()),
        "no flow found at FLOW\nhint: a flow is a folder holding flow.dag.yaml or flow.flex.yaml (or the path of that file), or a .prompty file"
    );
}

#[test]
fn several_problems_are_reported_together() {
    let yaml =
        "inputs:\n  t: {type: strin}\noutputs:\n  o: {reference: \"${nope.output}\"}\nnodes:\n"
            .to_string()
            + ECHO;
    let text = error_of(&yaml);
    assert_eq!(text.lines().count(), 2, "{text}");
}

#[test]
fn a_path_after_a_flow_input_names_an_undeclared_input() {
    // As in promptflow, `${inputs.t.a}` names an input called "t.a".
    let yaml = flow("- name: a\n  type: python\n  source: {type: code, path: echo.py}\n  inputs: {x: \"${inputs.t.a}\"}\n");
    assert_eq!(
        error_of(&yaml),
        "FLOW/flow.dag.yaml:9: node 'a' input 'x' references flow input 't.a', which is not declared; declared inputs: t"
    );
}

#[test]
fn requirements_outside_the_flow_are_never_read_there() {
    // The attack: a session's server reads this file as requirements, and the token it points at
    // ends up in the session's failure reason and in a package index request. A path leaving the
    // folder names only the copy taken into it under its own name (issue 21: flows share one
    // requirements file), which a snapshot holds or lacks.
    for (rel, expected) in [
        ("../home/owner.token", "FLOW/flow.dag.yaml:11: environment.python_requirements_txt '../home/owner.token' leaves the flow folder, and no copy named 'owner.token' is in it: flowrt copies the file in when it runs or pushes the flow from its folder, so check that '../home/owner.token' exists there, or put the file inside the folder"),
        ("/etc/passwd", "FLOW/flow.dag.yaml:11: environment.python_requirements_txt '/etc/passwd' leaves the flow folder, and no copy named 'passwd' is in it: flowrt copies the file in when it runs or pushes the flow from its folder, so check that '/etc/passwd' exists there, or put the file inside the folder"),
    ] {
        let yaml = format!("{}environment:\n  python_requirements_txt: {rel}\n", flow(ECHO));
        assert_eq!(error_of(&yaml), expected);
    }
    // With the copy inside, the flow loads and reads the copy, never the path it names.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("echo.py"), "").unwrap();
    std::fs::write(dir.path().join("owner.token"), "requests\n").unwrap();
    std::fs::write(
        dir.path().join("flow.dag.yaml"),
        format!(
            "{}environment:\n  python_requirements_txt: ../home/owner.token\n",
            flow(ECHO)
        ),
    )
    .unwrap();
    let loaded = load_flow(dir.path(), &LoadOptions::default()).expect("the flow loads");
    assert_eq!(
        loaded.requirements_file(),
        Some(dir.path().join("owner.token"))
    );
    assert_eq!(loaded.requirements_rel(), "owner.token");
    // ... and through a symlink inside the folder.
    let dir = tempfile::tempdir().unwrap();
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(dir.path().join("echo.py"), "").unwrap();
    std::os::unix::fs::symlink(secret.path(), dir.path().join("requirements.txt")).unwrap();
    std::fs::write(
        dir.path().join("flow.dag.yaml"),
        format!(
            "{}environment:\n  python_requirements_txt: requirements.txt\n",
            flow(ECHO)
        ),
    )
    .unwrap();
    let err = error_in(dir.path());
    assert!(err.contains("'requirements.txt' resolves to"), "{err}");
    assert!(err.contains("outside the flow folder"), "{err}");
}

#[test]
fn deeply_nested_yaml_is_refused_quickly() {
    let yaml = format!("{}extra: {}\n", flow(ECHO), "[".repeat(100_000));
    let started = std::time::Instant::now();
    let err = error_of(&yaml);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        err,
        "FLOW/flow.dag.yaml:10:1: invalid YAML: collections nested more than 64 deep"
    );
}

#[test]
fn empty_output_reference() {
    // promptflow refuses an empty reference too (EmptyOutputReference).
    let yaml = format!(
        "inputs:\n  t: {{type: string}}\noutputs:\n  o: {{reference: \"\"}}\nnodes:\n{ECHO}"
    );
    assert_eq!(
        error_of(&yaml),
        "FLOW/flow.dag.yaml:4: output 'o' needs a reference such as ${node_name.output}"
    );
}

#[test]
fn csharp_nodes_and_flows_are_not_supported() {
    let yaml = flow("- name: a\n  type: csharp\n  source: {type: package, tool: (Basic)Basic.Flow.HelloWorld}\n");
    assert_eq!(
        error_of(&yaml),
        "FLOW/flow.dag.yaml:7: node 'a' has type 'csharp', which flowrt does not support; flowrt runs python, llm, prompt and custom_llm nodes"
    );
    let yaml = format!("language: csharp\n{}", flow(ECHO));
    assert_eq!(
        error_of(&yaml),
        "FLOW/flow.dag.yaml:1: language 'csharp' is not supported: flowrt runs Python flows (language: python)"
    );
}

#[test]
fn each_problem_points_at_the_line_of_its_own_setting() {
    // Several problems in one file: each is reported on the line of the key or value at fault,
    // not on the line of the node or section that holds it.
    let yaml = "inputs:\n  t:\n    type: strnig\n  n:\n    type: int\n    default: many\noutputs:\n  o:\n    type: string\n    reference: ${a.output.x}\n  p:\n    reference: ${ghost.output}\nnodes:\n- name: a\n  type: python\n  source:\n    type: code\n    path: echo.py\n  inputs:\n    x: ${inputs.t}\n    y: ${inputs.nope}\n";
    assert_eq!(
        error_of(yaml),
        "FLOW/flow.dag.yaml:3: input 't' has unknown type 'strnig'; use one of: int, double, bool, string, list, object, image\n\
         FLOW/flow.dag.yaml:6: default of input 'n': value 'many' is not a valid int\n\
         FLOW/flow.dag.yaml:21: node 'a' input 'y' references flow input 'nope', which is not declared; declared inputs: t, n\n\
         FLOW/flow.dag.yaml:12: output 'p' references node 'ghost', which does not exist; nodes: a"
    );
}

#[test]
fn a_repeated_key_is_refused_on_the_line_of_its_second_writing() {
    let yaml = flow(ECHO) + "outputs:\n  q: {reference: \"${a.output}\"}\n";
    let error = error_of(&yaml);
    assert!(
        error.starts_with(
            "FLOW/flow.dag.yaml:10:1: invalid YAML: 'outputs' is written twice in one mapping"
        ),
        "{error}"
    );
}
