//! Property tests: arbitrary YAML and reference text never make the parser panic.

// A story test reads as one journey, top to bottom: exempt from the function-length lint.
#![allow(clippy::too_many_lines)]

use flowrt_flow::{load_flow, parse_reference, LoadOptions};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn references_never_panic(s in "\\PC{0,40}") {
        let _ = parse_reference(&s);
        let _ = parse_reference(&format!("${{{s}}}"));
        let _ = LoadOptions::parse_variant(&s);
    }

    #[test]
    fn structured_references_never_panic(
        head in "[a-z_]{0,6}",
        tail in prop::collection::vec(prop_oneof![
            "\\.[a-z]{0,4}", "\\[[0-9-]{0,3}\\]", "\\['[^']{0,4}'\\]", "\\[\"[^\"]{0,3}\"\\]", "[\\[\\]'\". ]"
        ], 0..6),
    ) {
        let _ = parse_reference(&format!("${{{head}{}}}", tail.concat()));
    }

    #[test]
    fn arbitrary_yaml_never_panics(s in "\\PC{0,200}") {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("flow.dag.yaml"), &s).unwrap();
        let _ = load_flow(dir.path(), &LoadOptions::default());
    }

    #[test]
    fn flow_shaped_yaml_never_panics(
        names in prop::collection::vec("[a-c]{1,2}", 0..5),
        refs in prop::collection::vec("\\$\\{[a-c.\\[\\]0-9'inputs]{0,12}\\}", 0..5),
        agg in any::<bool>(),
    ) {
        let mut yaml = String::from("inputs:\n  t: {type: string}\noutputs:\n  o: {reference: \"${a.output}\"}\nnodes:\n");
        for (i, n) in names.iter().enumerate() {
            let r = refs.get(i).cloned().unwrap_or_default();
            yaml.push_str(&format!(
                "- name: {n}\n  type: python\n  source: {{type: code, path: t.py}}\n  aggregation: {agg}\n  inputs: {{x: \"{r}\"}}\n  activate: {{when: \"{r}\", is: 1}}\n"
            ));
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.py"), "").unwrap();
        std::fs::write(dir.path().join("flow.dag.yaml"), &yaml).unwrap();
        let _ = load_flow(dir.path(), &LoadOptions::default());
    }
}
