//! Rendering matches Jinja2 as promptflow configures it.

// A story test reads as one journey, top to bottom: exempt from the function-length lint.
#![allow(clippy::too_many_lines)]

use flowrt_tools::{render_prompt, ToolError};
use indexmap::IndexMap;
use serde_json::{json, Value};

fn vars(v: Value) -> IndexMap<String, Value> {
    match v {
        Value::Object(map) => map.into_iter().collect(),
        _ => IndexMap::new(),
    }
}

fn render(template: &str, v: Value) -> String {
    match render_prompt(template, &vars(v)) {
        Ok(s) => s,
        Err(e) => panic!("render failed: {e}"),
    }
}

const REPORT: &str = "# {{ title | upper }}
Ort: {{ city }} / 城市 / مدينة
{% if items | length == 0 %}
Nothing.
{% elif items | length == 1 %}
Single: {{ items[0] }}
{% else %}
{{ items | length }} entries: {{ items | join(\", \") }}
{% endif %}
{% for item in items %}
{{ loop.index }}) {{ item | string | title }}{% if not loop.last %},{% endif %}

{% endfor %}
  {% if score > 0.5 %}
good {{ score | round(2) }}
  {% else %}
weak {{ score | round(1, 'floor') }}
  {% endif %}
alias={{ alias | default(\"none\") }}
{{ \"voilà vu\" | replace(\"vu\", \"VU\") }} ✓
{%- if title %} <t>{% endif %}
";

#[test]
fn report_template_like_promptflow() {
    assert_eq!(
        render(
            REPORT,
            json!({"title": "monthly", "items": ["one", "two words", "ωμέγα"], "score": 0.87654, "city": "Köln"})
        ),
        "# MONTHLY\nOrt: Köln / 城市 / مدينة\n3 entries: one, two words, ωμέγα\n1) One,\n2) Two Words,\n3) Ωμέγα\n  good 0.88\n  alias=none\nvoilà VU ✓ <t>"
    );
    assert_eq!(
        render(
            REPORT,
            json!({"title": "", "items": [], "score": 0.26, "city": "Köln"})
        ),
        "# \nOrt: Köln / 城市 / مدينة\nNothing.\n  weak 0.2\n  alias=none\nvoilà VU ✓"
    );
    assert_eq!(
        render(REPORT, json!({"title": "x", "items": [42], "score": 0.5, "city": "Москва"})),
        "# X\nOrt: Москва / 城市 / مدينة\nSingle: 42\n1) 42\n  weak 0.5\n  alias=none\nvoilà VU ✓ <t>"
    );
}

#[test]
fn python_style_printing() {
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "{{ b }} {{ f }} {{ n }}",
            json!({"b": true, "f": false, "n": null}),
            "True False None",
        ),
        ("{{ x }}", json!({"x": 1.0}), "1.0"),
        ("{{ x }}", json!({"x": 0.1}), "0.1"),
        (
            "{{ x + y }}",
            json!({"x": 0.1, "y": 0.2}),
            "0.30000000000000004",
        ),
        ("{{ x }}", json!({"x": 0.00001}), "1e-05"),
        ("{{ x }}", json!({"x": 3}), "3"),
        ("{{ 7 / 2 }} {{ 4 / 2 }}", json!({}), "3.5 2.0"),
        (
            "{{ xs }}",
            json!({"xs": ["a", 1, true, null, 2.5]}),
            "['a', 1, True, None, 2.5]",
        ),
        (
            "{{ d }}",
            json!({"d": {"k": true, "s": "it's", "l": [1]}}),
            "{'k': True, 's': \"it's\", 'l': [1]}",
        ),
        (
            "{{ xs | join('-') }}",
            json!({"xs": [1, true, null]}),
            "1-True-None",
        ),
        ("{{ b | string }}", json!({"b": false}), "False"),
        (
            "{{ 5 | round }} {{ 2.5 | round }} {{ 2.675 | round(2) }}",
            json!({}),
            "5 2.0 2.67",
        ),
        ("{{ 0.26 | round(1, 'ceil') }}", json!({}), "0.3"),
        (
            "{{ xs | sort | join(',') }}",
            json!({"xs": ["b", "C", "a"]}),
            "a,b,C",
        ),
        (
            "{{ \"hello-world (foo) [bar]\" | title }}",
            json!({}),
            "Hello-World (Foo) [Bar]",
        ),
        (
            "{{ \"o'neil mcDONALD\" | title }}",
            json!({}),
            "O'neil Mcdonald",
        ),
        (
            "{{ d | tojson }}",
            json!({"d": {"b": 1, "a": "<é>"}}),
            "{\"a\": \"\\u003c\\u00e9\\u003e\", \"b\": 1}",
        ),
        (
            "{{ missing }}|{{ missing | default('dflt') }}",
            json!({}),
            "|dflt",
        ),
        ("{% for x in missing %}x{% endfor %}done", json!({}), "done"),
        (
            "{{ s | length }} {{ s | upper }} {{ s | lower }}",
            json!({"s": "Grüße"}),
            "5 GRÜSSE grüße",
        ),
        (
            "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}",
            json!({"d": {"z": 1, "a": 2}}),
            "z=1;a=2;",
        ),
        (
            "{{ s.strip().split(',') }}",
            json!({"s": " a,b "}),
            "['a', 'b']",
        ),
    ];
    for (template, v, want) in cases {
        assert_eq!(render(template, v), want, "template {template:?}");
    }
}

#[test]
fn whitespace_settings() {
    // keep_trailing_newline
    assert_eq!(render("hi {{ x }}\n", json!({"x": 1})), "hi 1\n");
    // trim_blocks: the newline after a block tag goes; lstrip_blocks is off: indentation stays.
    assert_eq!(
        render("{% if true %}\nA\n  {% endif %}\nB", json!({})),
        "A\n  B"
    );
    // a template ending with a block tag has no trailing newline
    assert_eq!(
        render("{% for i in [1, 2] %}{{ i }}\n{% endfor %}\n", json!({})),
        "1\n2\n"
    );
    assert_eq!(render("x\n{%- if true %} y{% endif %}\n", json!({})), "x y");
}

#[test]
fn rendering_errors_fail_with_the_message() {
    let err = render_prompt("line one\n{{ xs | sum }}", &vars(json!({"xs": [1, "a"]})));
    match err {
        Err(ToolError::Template { message, line }) => {
            assert!(!message.is_empty());
            assert_eq!(line, Some(2));
        }
        other => panic!("expected a template error, got {other:?}"),
    }
    let err = render_prompt("{% if %}", &IndexMap::new());
    let text = err
        .map(|_| ())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        text.starts_with("Failed to render jinja template"),
        "{text}"
    );
    let err = render_prompt("{{ a.b.c }}", &IndexMap::new());
    assert!(
        err.is_err(),
        "attribute of an undefined value is an error in Jinja2"
    );
}

#[test]
fn center_and_wordcount_match_jinja2() {
    let vars = IndexMap::new();
    assert_eq!(
        flowrt_tools::render_prompt(
            "[{{ 'ab'|center(5) }}][{{ 'abc'|center(4) }}][{{ 'ab'|center(6) }}]",
            &vars
        )
        .unwrap(),
        "[  ab ][abc ][  ab  ]"
    );
    assert_eq!(
        flowrt_tools::render_prompt("{{ 'hello, wide world_2'|wordcount }}", &vars).unwrap(),
        "3"
    );
}
