//! Flows written for promptflow load unchanged: every key its flow contract reads is accepted, and
//! its older spellings mean what they mean there.

// A story test reads as one journey, top to bottom: exempt from the function-length lint.
#![allow(clippy::too_many_lines)]

use flowrt_flow::{load_flow, InputValue, LoadOptions, RefSource};
use serde_json::json;

fn load(yaml: &str) -> flowrt_flow::Flow {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("echo.py"), "").unwrap();
    std::fs::write(dir.path().join("flow.dag.yaml"), yaml).unwrap();
    load_flow(dir.path(), &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_key_of_promptflows_contract_is_accepted() {
    let flow = load(
        r#"
$schema: https://azuremlschemas.azureedge.net/promptflow/latest/Flow.schema.json
id: my_flow_id
name: My Flow
display_name: My Flow
version: 2
description: what it does
tags: {owner: me}
type: standard
language: python
message_format: openai-vision
tools: []
environment: {python_requirements_txt: requirements.txt}
environment_variables: {A: "1"}
additional_includes: []
inputs:
  q: {type: string, default: hi, description: the question}
outputs:
  o: {type: string, reference: "${a.output}", description: d, evaluation_only: false}
nodes:
- name: a
  type: python
  comment: a comment
  description: a description
  display_name: A
  enable_cache: false
  reduce: false
  skip: {when: "${inputs.q}", is: true, return: "${inputs.q}"}
  source: {type: code, path: echo.py}
  inputs: {x: "${flow.q}"}
- name: total
  type: python
  reduce: true
  source: {type: code, path: echo.py}
  inputs: {xs: "${a.output}"}
"#,
    );
    let a = flow.node("a").unwrap();
    assert!(!a.aggregation);
    match &a.inputs["x"] {
        InputValue::Reference(r) => assert_eq!(r.source, RefSource::FlowInput("q".into())),
        other => panic!("{other:?}"),
    }
    // `reduce` is promptflow's older name for `aggregation`.
    assert!(flow.node("total").unwrap().aggregation);
}

#[test]
fn literal_outputs_and_activate_conditions_are_values() {
    let flow = load(
        r#"
inputs: {}
outputs:
  s: {reference: hello}
  n: {reference: 3}
nodes:
- name: a
  type: python
  source: {type: code, path: echo.py}
  activate: {when: dummy, is: dummy}
"#,
    );
    assert_eq!(
        flow.outputs["s"].reference.source,
        RefSource::Literal(json!("hello"))
    );
    assert_eq!(
        flow.outputs["n"].reference.source,
        RefSource::Literal(json!(3))
    );
    let when = &flow.node("a").unwrap().activate.as_ref().unwrap().when;
    assert_eq!(when.source, RefSource::Literal(json!("dummy")));
    assert_eq!(when.node(), None);
}
