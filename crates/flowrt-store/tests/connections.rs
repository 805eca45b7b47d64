//! Connection store behaviour against real files in temp directories.

// A story test reads as one journey, top to bottom: exempt from the function-length lint.
#![allow(clippy::too_many_lines)]

use flowrt_api::{Connection, ConnectionKind};
use flowrt_store::{masked, ConnectionStore, StoreError};
use indexmap::IndexMap;
use std::path::{Path, PathBuf};

const SECRET: &str = "sk-very-secret-4f9a2c";

fn write(dir: &Path, file: &str, text: &str) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path
}

fn parse(text: &str) -> Result<Connection, StoreError> {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "conn.yaml", text);
    ConnectionStore::parse_yaml(&path)
}

fn parse_err(text: &str) -> (String, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "conn.yaml", text);
    let err = ConnectionStore::parse_yaml(&path).unwrap_err();
    (err.to_string(), path)
}

fn map(pairs: &[(&str, &str)]) -> IndexMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn conn(name: &str, secret: &str) -> Connection {
    Connection {
        name: name.to_string(),
        kind: ConnectionKind::OpenAi,
        configs: map(&[("base_url", "https://example.test/v1")]),
        secrets: map(&[("api_key", secret)]),
    }
}

/// Every byte of every file under `dir`, recursively.
fn all_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(all_files(&path));
        } else {
            let bytes = std::fs::read(&path).unwrap();
            out.push((path, bytes));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------- parsing ----------

#[test]
fn parses_open_ai() {
    let c = parse(
        "$schema: https://azuremlschemas.azureedge.net/promptflow/latest/OpenAIConnection.schema.json\n\
         name: my_openai\ntype: open_ai\napi_key: sk-abc\norganization: org-1\nbase_url: https://api.example/v1\n",
    )
    .unwrap();
    assert_eq!(c.name, "my_openai");
    assert_eq!(c.kind, ConnectionKind::OpenAi);
    assert_eq!(c.secrets, map(&[("api_key", "sk-abc")]));
    assert_eq!(
        c.configs,
        map(&[
            ("organization", "org-1"),
            ("base_url", "https://api.example/v1")
        ])
    );
}

#[test]
fn parses_open_ai_minimal() {
    let c = parse("name: o\ntype: open_ai\napi_key: k\n").unwrap();
    assert!(c.configs.is_empty());
    assert_eq!(c.api_key(), Some("k"));
}

#[test]
fn parses_azure_open_ai_with_defaults() {
    let c = parse(
        "name: aoai\ntype: azure_open_ai\nmodule: promptflow.connections\napi_key: k\napi_base: https://x.openai.azure.com/\n",
    )
    .unwrap();
    assert_eq!(c.kind, ConnectionKind::AzureOpenAi);
    assert_eq!(c.secrets, map(&[("api_key", "k")]));
    assert_eq!(
        c.configs,
        map(&[
            ("api_base", "https://x.openai.azure.com/"),
            ("api_type", "azure"),
            ("api_version", "2024-02-01"),
        ])
    );
}

#[test]
fn parses_azure_open_ai_explicit_version() {
    let c = parse(
        "name: aoai\ntype: azure_open_ai\napi_key: k\napi_base: https://x\napi_type: azure\napi_version: 2023-07-01-preview\n",
    )
    .unwrap();
    assert_eq!(c.config("api_version"), Some("2023-07-01-preview"));
}

#[test]
fn azure_meid_token_needs_no_key() {
    let c = parse("name: aoai\ntype: azure_open_ai\napi_base: https://x\nauth_mode: meid_token\n")
        .unwrap();
    assert!(c.secrets.is_empty());
    assert_eq!(c.config("auth_mode"), Some("meid_token"));
}

#[test]
fn parses_serverless() {
    let c =
        parse("name: sl\ntype: serverless\napi_key: k\napi_base: https://sl.example/\n").unwrap();
    assert_eq!(c.kind, ConnectionKind::Serverless);
    assert_eq!(c.configs, map(&[("api_base", "https://sl.example/")]));
    assert_eq!(c.secrets, map(&[("api_key", "k")]));
}

/// promptflow's other strongly typed connections: their required fields, their defaults, and
/// the key always a secret.
#[test]
fn parses_the_other_promptflow_connection_types() {
    let c = parse("name: s\ntype: serp\napi_key: k\n").unwrap();
    assert_eq!(
        (c.kind, c.kind.python_class()),
        (ConnectionKind::Serp, "SerpConnection")
    );
    assert_eq!(c.secrets, map(&[("api_key", "k")]));
    let c = parse("name: q\ntype: qdrant\napi_key: k\napi_base: https://q\n").unwrap();
    assert_eq!(c.configs, map(&[("api_base", "https://q")]));
    let c = parse("name: w\ntype: weaviate\napi_key: k\napi_base: https://w\n").unwrap();
    assert_eq!(c.kind, ConnectionKind::Weaviate);
    let c = parse("name: cs\ntype: cognitive_search\napi_key: k\napi_base: https://s\n").unwrap();
    assert_eq!(
        c.configs,
        map(&[("api_base", "https://s"), ("api_version", "2023-11-01")])
    );
    let c = parse("name: cs\ntype: cognitive_search\napi_base: https://s\nauth_mode: meid_token\n")
        .unwrap();
    assert!(c.secrets.is_empty(), "Entra ID needs no key");
    let c = parse("name: fr\ntype: form_recognizer\napi_key: k\nendpoint: https://f\n").unwrap();
    assert_eq!(
        c.configs,
        map(&[
            ("endpoint", "https://f"),
            ("api_version", "2023-07-31"),
            ("api_type", "Form Recognizer")
        ])
    );
    let c = parse(
        "name: cs\ntype: azure_content_safety\napi_key: k\nendpoint: https://c\napi_version: 2024-01-01\n",
    )
    .unwrap();
    assert_eq!(
        c.configs,
        map(&[
            ("endpoint", "https://c"),
            ("api_version", "2024-01-01"),
            ("api_type", "Content Safety")
        ])
    );
    let c = parse("name: ai\ntype: azure_ai_services\napi_key: k\nendpoint: https://a\n").unwrap();
    assert_eq!(c.kind.python_class(), "AzureAIServicesConnection");
    let (msg, path) = parse_err("name: fr\ntype: form_recognizer\napi_key: k\n");
    assert_eq!(
        msg,
        format!("{}: missing required field `endpoint`", path.display())
    );
    let (msg, path) = parse_err("name: w\ntype: weaviate\napi_base: https://w\n");
    assert_eq!(
        msg,
        format!("{}: missing required field `api_key`", path.display())
    );
}

#[test]
fn parses_custom_with_scalars_as_text() {
    let c = parse(
        "name: cust\ntype: custom\nconfigs:\n  endpoint: https://e\n  retries: 3\n  temperature: 0.5\n  enabled: true\nsecrets:\n  token: abc\n  pin: 1234\n",
    )
    .unwrap();
    assert_eq!(c.kind, ConnectionKind::Custom);
    assert_eq!(
        c.configs,
        map(&[
            ("endpoint", "https://e"),
            ("retries", "3"),
            ("temperature", "0.5"),
            ("enabled", "true"),
        ])
    );
    assert_eq!(c.secrets, map(&[("token", "abc"), ("pin", "1234")]));
}

#[test]
fn custom_without_configs_is_empty() {
    let c = parse("name: cust\ntype: custom\nsecrets:\n  token: abc\n").unwrap();
    assert!(c.configs.is_empty());
}

#[test]
fn unknown_type_lists_valid_types() {
    let (msg, path) = parse_err("name: x\ntype: cosmos\napi_key: k\n");
    assert_eq!(
        msg,
        format!(
            "{}: unknown connection type `cosmos`; expected one of: open_ai, azure_open_ai, custom, serverless, serp, qdrant, weaviate, cognitive_search, azure_ai_services, azure_content_safety, form_recognizer",
            path.display()
        )
    );
}

#[test]
fn missing_name_is_named() {
    let (msg, path) = parse_err("type: open_ai\napi_key: k\n");
    assert_eq!(
        msg,
        format!(
            "{}: missing required field `name`\nhint: add `name: my_connection`; flows name their connection by it",
            path.display()
        )
    );
}

#[test]
fn missing_type_is_named() {
    let (msg, path) = parse_err("name: x\napi_key: k\n");
    assert_eq!(
        msg,
        format!(
            "{}: missing required field `type`\nhint: add `type:` with one of open_ai, azure_open_ai, custom, serverless, serp, qdrant, weaviate, cognitive_search, azure_ai_services, azure_content_safety, form_recognizer",
            path.display()
        )
    );
}

#[test]
fn missing_api_key_is_named() {
    let (msg, path) = parse_err("name: x\ntype: open_ai\n");
    assert_eq!(
        msg,
        format!("{}: missing required field `api_key`", path.display())
    );
    let (msg, path) = parse_err("name: x\ntype: serverless\napi_base: https://b\napi_key:\n");
    assert_eq!(
        msg,
        format!("{}: missing required field `api_key`", path.display())
    );
}

#[test]
fn missing_api_base_is_named() {
    let (msg, path) = parse_err("name: x\ntype: azure_open_ai\napi_key: k\n");
    assert_eq!(
        msg,
        format!("{}: missing required field `api_base`", path.display())
    );
    let (msg, path) = parse_err("name: x\ntype: serverless\napi_key: k\n");
    assert_eq!(
        msg,
        format!("{}: missing required field `api_base`", path.display())
    );
}

#[test]
fn nested_value_is_rejected_with_field() {
    let (msg, path) = parse_err("name: c\ntype: custom\nconfigs:\n  deep:\n    x: 1\n");
    assert_eq!(
        msg,
        format!(
            "{}: invalid field `configs.deep`: expected a string, number or boolean",
            path.display()
        )
    );
}

#[test]
fn custom_unknown_top_level_field_is_rejected() {
    let (msg, _) = parse_err("name: c\ntype: custom\nsecret:\n  token: abc\n");
    assert!(
        msg.contains("invalid field `secret`: unknown field for a custom connection"),
        "{msg}"
    );
}

#[test]
fn invalid_yaml_names_file() {
    let (msg, path) = parse_err("name: [unclosed\n");
    assert!(
        msg.starts_with(&format!("{}: invalid connection YAML: ", path.display())),
        "{msg}"
    );
}

#[test]
fn yaml_with_bad_name_is_rejected() {
    let (msg, _) = parse_err("name: \"bad\\nname\"\ntype: open_ai\napi_key: k\n");
    assert!(
        msg.starts_with("invalid connection name \"bad\\nname\""),
        "{msg}"
    );
}

#[test]
fn missing_file_names_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.yaml");
    let msg = ConnectionStore::parse_yaml(&path).unwrap_err().to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
}

// ---------- storage ----------

#[test]
fn open_touches_nothing() {
    let home = tempfile::tempdir().unwrap();
    let store = ConnectionStore::open(&home.path().join("h")).unwrap();
    assert!(store.list().unwrap().is_empty());
    assert_eq!(store.get("x").unwrap(), None);
    assert!(!store.delete("x").unwrap());
    assert!(!home.path().join("h").exists());
}

#[test]
fn upsert_get_round_trip_and_replace() {
    let home = tempfile::tempdir().unwrap();
    let store = ConnectionStore::open(home.path()).unwrap();
    let c = conn("oa", SECRET);
    store.upsert(&c).unwrap();
    assert_eq!(store.get("oa").unwrap(), Some(c));

    let replaced = conn("oa", "sk-other");
    store.upsert(&replaced).unwrap();
    assert_eq!(store.get("oa").unwrap(), Some(replaced));
    assert_eq!(store.list().unwrap().len(), 1);

    // A second store on the same home (fresh process) reads it with the persisted key.
    let again = ConnectionStore::open(home.path()).unwrap();
    assert_eq!(
        again.get("oa").unwrap().unwrap().api_key(),
        Some("sk-other")
    );
}

#[test]
fn create_from_file_parses_and_stores() {
    let home = tempfile::tempdir().unwrap();
    let store = ConnectionStore::open(home.path()).unwrap();
    let yaml = write(
        home.path(),
        "c.yaml",
        "name: cust\ntype: custom\nconfigs:\n  n: 3\nsecrets:\n  token: abc\n",
    );
    let created = store.create_from_file(&yaml).unwrap();
    assert_eq!(store.get("cust").unwrap(), Some(created.clone()));
    assert_eq!(created.get("n"), Some("3"));
    assert_eq!(created.get("token"), Some("abc"));
}

#[test]
fn list_is_sorted_by_name() {
    let home = tempfile::tempdir().unwrap();
    let store = ConnectionStore::open(home.path()).unwrap();
    for name in ["zeta", "alpha", "Mid", "beta.2", "beta-1"] {
        store.upsert(&conn(name, SECRET)).unwrap();
    }
    // Stray files are ignored.
    std::fs::write(home.path().join("connections/notes.txt"), "x").unwrap();
    std::fs::write(home.path().join("connections/.tmp-abc.partial"), "x").unwrap();
    let names: Vec<String> = store.list().unwrap().into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["Mid", "alpha", "beta-1", "beta.2", "zeta"]);
}

#[test]
fn delete_removes() {
    let home = tempfile::tempdir().unwrap();
    let store = ConnectionStore::open(home.path()).unwrap();
    store.upsert(&conn("a", SECRET)).unwrap();
    store.upsert(&conn("b", SECRET)).unwrap();
    assert!(store.delete("a").unwrap());
    assert!(!store.delete("a").unwrap());
    assert_eq!(store.get("a").unwrap(), None);
    let names: Vec<String> = store.list().unwrap().into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["b"]);
}

#[test]
fn secrets_never_touch_disk_in_plain_text() {
    let home = tempfile::tempdir().unwrap();
    let store = ConnectionStore::open(home.path()).unwrap();
    store.upsert(&conn("oa", SECRET)).unwrap();
    let mut custom = conn("cu", "unused");
    custom.kind = ConnectionKind::Custom;
    custom.secrets = map(&[("token", SECRET), ("other", "pw-123456789")]);
    store.upsert(&custom).unwrap();

    let files = all_files(home.path());
    assert!(files.len() >= 3, "{files:?}");
    for (path, bytes) in &files {
        assert!(
            !contains(bytes, SECRET.as_bytes()),
            "secret found in {}",
            path.display()
        );
        assert!(!contains(bytes, b"pw-123456789"), "{}", path.display());
    }
    // ... while the plain configs are readable in the JSON.
    let json = std::fs::read_to_string(home.path().join("connections/oa.json")).unwrap();
    assert!(json.contains("https://example.test/v1"));
    assert!(json.contains("\"type\": \"open_ai\""));
}

#[cfg(unix)]
#[test]
fn key_and_connection_files_are_0600() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().unwrap();
    let store = ConnectionStore::open(home.path()).unwrap();
    store.upsert(&conn("oa", SECRET)).unwrap();
    let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(home.path().join("secret.key")), 0o600);
    assert_eq!(mode(home.path().join("connections/oa.json")), 0o600);
    assert_eq!(mode(home.path().join("connections")), 0o700);
    assert_eq!(
        std::fs::metadata(home.path().join("secret.key"))
            .unwrap()
            .len(),
        32
    );
}

#[cfg(unix)]
#[test]
fn key_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().unwrap();
    ConnectionStore::open(home.path())
        .unwrap()
        .upsert(&conn("oa", SECRET))
        .unwrap();
    let key = home.path().join("secret.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();

    let store = ConnectionStore::open(home.path()).unwrap();
    let msg = store.get("oa").unwrap_err().to_string();
    assert_eq!(
        msg,
        format!(
            "secret key file {0} is accessible by group or others (mode 644); run `chmod 600 {0}` and retry",
            key.display()
        )
    );
    assert!(store.upsert(&conn("b", SECRET)).is_err());

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(store.get("oa").unwrap().unwrap().api_key(), Some(SECRET));
}

#[test]
fn connection_without_secrets_needs_no_key() {
    let home = tempfile::tempdir().unwrap();
    let store = ConnectionStore::open(home.path()).unwrap();
    let mut c = conn("plain", SECRET);
    c.kind = ConnectionKind::Custom;
    c.secrets.clear();
    store.upsert(&c).unwrap();
    assert!(!home.path().join("secret.key").exists());
    assert_eq!(store.get("plain").unwrap(), Some(c));
}

#[test]
fn tampered_ciphertext_is_an_error_naming_the_connection() {
    let home = tempfile::tempdir().unwrap();
    let store = ConnectionStore::open(home.path()).unwrap();
    store.upsert(&conn("oa", SECRET)).unwrap();
    let path = home.path().join("connections/oa.json");
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let sealed = doc["secrets"]["api_key"].as_str().unwrap().to_string();
    // Flip one base64 character in the ciphertext body.
    let mut chars: Vec<char> = sealed.chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    doc["secrets"]["api_key"] = serde_json::Value::String(chars.into_iter().collect());
    std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();

    let msg = store.get("oa").unwrap_err().to_string();
    assert_eq!(
        msg,
        "cannot decrypt secret `api_key` of connection `oa`: the secret key does not match or the stored value was altered"
    );
    assert!(store.list().is_err());
}

#[test]
fn wrong_key_is_an_error_naming_the_connection() {
    let home = tempfile::tempdir().unwrap();
    ConnectionStore::open(home.path())
        .unwrap()
        .upsert(&conn("oa", SECRET))
        .unwrap();
    std::fs::write(home.path().join("secret.key"), [7u8; 32]).unwrap();
    let err = ConnectionStore::open(home.path())
        .unwrap()
        .get("oa")
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Decrypt { name, field } if name == "oa" && field == "api_key")
    );
}

#[test]
fn sealed_value_moved_to_another_connection_fails() {
    let home = tempfile::tempdir().unwrap();
    let store = ConnectionStore::open(home.path()).unwrap();
    store.upsert(&conn("a", SECRET)).unwrap();
    store.upsert(&conn("b", "sk-b")).unwrap();
    let read = |n: &str| -> serde_json::Value {
        let p = home.path().join(format!("connections/{n}.json"));
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let mut b = read("b");
    b["secrets"]["api_key"] = read("a")["secrets"]["api_key"].clone();
    std::fs::write(
        home.path().join("connections/b.json"),
        serde_json::to_vec(&b).unwrap(),
    )
    .unwrap();
    assert!(matches!(
        store.get("b").unwrap_err(),
        StoreError::Decrypt { name, .. } if name == "b"
    ));
}

#[test]
fn corrupt_key_file_is_reported() {
    let home = tempfile::tempdir().unwrap();
    let key = home.path().join("secret.key");
    std::fs::write(&key, b"short").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let msg = ConnectionStore::open(home.path())
        .unwrap()
        .upsert(&conn("oa", SECRET))
        .unwrap_err()
        .to_string();
    assert_eq!(
        msg,
        format!(
            "secret key file {} is corrupt: expected 32 bytes, found 5",
            key.display()
        )
    );
}

#[test]
fn invalid_names_are_rejected() {
    let home = tempfile::tempdir().unwrap();
    let store = ConnectionStore::open(home.path()).unwrap();
    let long_escaped = "é".repeat(41); // 41 characters, 246 bytes once escaped
    for bad in [
        "",
        "a\nb",
        "tab\there",
        "\u{7f}",
        &"a".repeat(201),
        &long_escaped,
    ] {
        let err = store.get(bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("invalid connection name {bad:?}: use 1 to 200 characters, none of them a control character (a tab, a line break), and fewer when many are not ASCII letters, digits, `_` or `-` (each of their bytes takes 3 of the 240 its file name may have)")
        );
        assert!(matches!(
            store.delete(bad),
            Err(StoreError::InvalidName { .. })
        ));
        assert!(matches!(
            store.upsert(&conn(bad, SECRET)),
            Err(StoreError::InvalidName { .. })
        ));
    }
    assert!(store.get(&"a".repeat(200)).unwrap().is_none());
    assert!(store.get(&"é".repeat(40)).unwrap().is_none());
}

/// promptflow's `pf connection create` takes any name (checked with promptflow 1.18.5: `My
/// Conn`, `a/b`, `c@d`, `x:y`, `ünï`), and flows name them: each is kept, found, listed and
/// deleted, in a file of its own inside the connections folder, whatever its characters say
/// of paths.
#[test]
fn names_promptflow_accepts_are_kept_in_files_of_their_own() {
    let home = tempfile::tempdir().unwrap();
    let store = ConnectionStore::open(home.path()).unwrap();
    let names = [
        "My Conn",
        "a/b",
        "a%2Fb",
        "c@d",
        "x:y",
        "\u{fc}n\u{ef}",
        "../x",
        "..",
        ".hidden",
        "a\\b",
        "plain-name.v1",
        "%",
        "100%",
    ];
    for (i, name) in names.iter().enumerate() {
        store.upsert(&conn(name, &format!("{SECRET}-{i}"))).unwrap();
    }
    for (i, name) in names.iter().enumerate() {
        let got = store
            .get(name)
            .unwrap()
            .unwrap_or_else(|| panic!("{name} is gone"));
        assert_eq!(got.name, *name);
        assert_eq!(got.secrets["api_key"], format!("{SECRET}-{i}"), "{name}");
    }
    let mut listed: Vec<String> = store.list().unwrap().into_iter().map(|c| c.name).collect();
    let mut expected: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected);
    // Every file is directly in the folder; nothing was written beside it or above it.
    let dir = home.path().join("connections");
    let files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files.len(), names.len(), "{files:?}");
    assert!(
        files.contains(&"plain-name.v1.json".to_string()),
        "plain names keep their file name: {files:?}"
    );
    assert!(!home.path().join("x.json").exists());
    assert!(!dir.join("a").exists(), "no folder made of `a/b`");
    for name in names {
        assert!(store.delete(name).unwrap(), "{name}");
    }
    assert!(store.list().unwrap().is_empty());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}

#[test]
fn name_in_file_must_match_file_name() {
    let home = tempfile::tempdir().unwrap();
    let store = ConnectionStore::open(home.path()).unwrap();
    store.upsert(&conn("a", SECRET)).unwrap();
    std::fs::copy(
        home.path().join("connections/a.json"),
        home.path().join("connections/b.json"),
    )
    .unwrap();
    let msg = store.get("b").unwrap_err().to_string();
    assert!(msg.contains("holds connection `a`, expected `b`"), "{msg}");
}

// ---------- masked ----------

#[test]
fn masked_typed_connection_flattens_plain_fields() {
    let c = Connection {
        name: "aoai".into(),
        kind: ConnectionKind::AzureOpenAi,
        configs: map(&[
            ("api_base", "https://x"),
            ("api_type", "azure"),
            ("api_version", "2024-02-01"),
        ]),
        secrets: map(&[("api_key", SECRET)]),
    };
    let m = masked(&c);
    assert_eq!(
        m,
        serde_json::json!({
            "name": "aoai",
            "type": "azure_open_ai",
            "api_key": "******",
            "api_base": "https://x",
            "api_type": "azure",
            "api_version": "2024-02-01",
            "configs": {"api_base": "https://x", "api_type": "azure", "api_version": "2024-02-01"},
            "secrets": {"api_key": "******"},
        })
    );
    assert!(!m.to_string().contains(SECRET));
}

#[test]
fn masked_custom_connection_keeps_maps_only() {
    let c = Connection {
        name: "cu".into(),
        kind: ConnectionKind::Custom,
        configs: map(&[("endpoint", "https://e"), ("name", "shadow")]),
        secrets: map(&[("token", SECRET), ("pin", "424242")]),
    };
    let m = masked(&c);
    assert_eq!(
        m,
        serde_json::json!({
            "name": "cu",
            "type": "custom",
            "configs": {"endpoint": "https://e", "name": "shadow"},
            "secrets": {"token": "******", "pin": "******"},
        })
    );
    let text = m.to_string();
    assert!(!text.contains(SECRET) && !text.contains("424242"));
}

#[test]
fn masked_open_ai_from_yaml() {
    let c = parse("name: o\ntype: open_ai\napi_key: sk-xyz\nbase_url: https://b\n").unwrap();
    let m = masked(&c);
    assert_eq!(m["base_url"], "https://b");
    assert_eq!(m["api_key"], "******");
    assert!(!m.to_string().contains("sk-xyz"));
}

#[test]
fn debug_of_store_does_not_leak_key() {
    let home = tempfile::tempdir().unwrap();
    let store = ConnectionStore::open(home.path()).unwrap();
    store.upsert(&conn("oa", SECRET)).unwrap();
    let dbg = format!("{store:?}");
    assert!(dbg.contains("SecretKey(******)"), "{dbg}");
}
