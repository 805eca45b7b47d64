//! promptflow's behaviours that its own flows rely on, as users of `flowrt` see them.

mod common;

use common::{flow, Env};
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
    let env = Env::new();
    let (_d, dir) = flow("compat_nonfinite");
    let r = env.run(&["flow", "test", dir.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let expected = r#"{
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
}
