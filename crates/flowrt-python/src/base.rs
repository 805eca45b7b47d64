//! The base environments compiled into this binary, and environment references.
//!
//! A base environment is the local analogue of a runtime base image: a Python requirement,
//! the version of flowrt's worker protocol, the built-in tools (Rust, so they need no packages) and
//! the packages the base pins. flowrt's worker itself needs no third-party package, but flows
//! relied on what Azure's runtime image carried without listing it (`import openai` with no
//! `requirements.txt`), so from 1.2.0 the base pins that set: the dependencies of promptflow-tools,
//! promptflow-core and promptflow-tracing (promptflow's own modules come from flowrt's worker).
//! A flow's requirements are installed over the base as `pip install -r` over an image: what the
//! flow names wins over the base's pin.
//!
//! References: `default` (the latest base), `default@1.0.0`, `NAME` (latest version of a published
//! custom environment) and `NAME@vN`.

use std::fmt;

/// One versioned base environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BaseEnv {
    /// Semantic version, `1.1.0`.
    pub version: &'static str,
    /// The Python versions it supports, `>=3.9`.
    pub python: &'static str,
    /// The JSON-lines protocol version of its tool worker.
    pub worker_protocol: u32,
    /// The built-in tools (implemented in Rust).
    pub builtin_tools: &'static [&'static str],
    /// The packages it promises flows (what `flowrt env list` shows).
    pub packages: &'static [&'static str],
    /// The requirements file pinning their closure (exact versions, with markers for each Python
    /// it supports), installed before the flow's requirements; empty for no packages.
    pub pins: &'static str,
}

impl BaseEnv {
    /// Its pinned requirement lines, comments and blank lines left out.
    pub fn pin_lines(&self) -> impl Iterator<Item = &'static str> {
        self.pins
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
    }
}

/// Every base environment, oldest first; the last is the latest.
pub const BASE_ENVS: &[BaseEnv] = &[
    BaseEnv {
        version: "1.0.0",
        python: ">=3.8",
        worker_protocol: 1,
        builtin_tools: &["prompt", "llm"],
        packages: &[],
        pins: "",
    },
    BaseEnv {
        version: "1.1.0",
        python: ">=3.9",
        worker_protocol: 1,
        builtin_tools: &["prompt", "llm", "embedding"],
        packages: &[],
        pins: "",
    },
    BaseEnv {
        version: "1.2.0",
        python: ">=3.9",
        worker_protocol: 1,
        builtin_tools: &["prompt", "llm", "embedding"],
        packages: &[
            "openai",
            "tiktoken",
            "opentelemetry-sdk",
            "google-search-results",
            "requests",
            "jinja2",
            "pydantic",
            "jsonschema",
            "python-dateutil",
            "ruamel.yaml",
            "python-dotenv",
            "numpy",
            "psutil",
            "flask",
            "fastapi",
            "docstring_parser",
            "filetype",
        ],
        pins: include_str!("../base/1.2.0.txt"),
    },
];

/// The newest base environment.
pub fn latest_base() -> &'static BaseEnv {
    // BASE_ENVS is a non-empty constant.
    &BASE_ENVS[BASE_ENVS.len() - 1]
}

/// The base environment `version` (`1.0.0`).
pub fn find_base(version: &str) -> Option<&'static BaseEnv> {
    BASE_ENVS.iter().find(|b| b.version == version)
}

/// The name that refers to the base environments.
pub const DEFAULT_ENV: &str = "default";

/// Which environment a session asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvRef {
    /// `default` (`version: None`, the latest base) or `default@1.0.0`.
    Base { version: Option<String> },
    /// `NAME` (`version: None`, its latest version) or `NAME@vN`.
    Custom { name: String, version: Option<u32> },
}

impl fmt::Display for EnvRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvRef::Base { version: None } => f.write_str(DEFAULT_ENV),
            EnvRef::Base { version: Some(v) } => write!(f, "{DEFAULT_ENV}@{v}"),
            EnvRef::Custom {
                name,
                version: None,
            } => f.write_str(name),
            EnvRef::Custom {
                name,
                version: Some(v),
            } => write!(f, "{name}@v{v}"),
        }
    }
}

/// An environment reference that cannot be parsed or resolved.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvRefError {
    #[error("invalid environment `{text}`: {reason}; expected `default`, `default@VERSION` or `NAME@vN`")]
    Syntax { text: String, reason: &'static str },
    #[error("unknown base environment version `{version}`; available: {available}")]
    UnknownBase { version: String, available: String },
}

impl EnvRef {
    /// Parse `default`, `default@1.0.0`, `NAME` or `NAME@vN`. Base versions are checked against
    /// [`BASE_ENVS`]; custom names are only checked for syntax.
    pub fn parse(text: &str) -> Result<EnvRef, EnvRefError> {
        let syntax = |reason| EnvRefError::Syntax {
            text: text.to_string(),
            reason,
        };
        let (name, version) = match text.split_once('@') {
            Some((n, v)) => (n, Some(v)),
            None => (text, None),
        };
        if !valid_env_name(name) {
            return Err(syntax(
                "a name uses letters, digits, `_`, `-` and `.` and starts with a letter or digit",
            ));
        }
        if name == DEFAULT_ENV {
            return match version {
                None => Ok(EnvRef::Base { version: None }),
                Some(v) if find_base(v).is_some() => Ok(EnvRef::Base {
                    version: Some(v.to_string()),
                }),
                Some(v) => Err(EnvRefError::UnknownBase {
                    version: v.to_string(),
                    available: BASE_ENVS
                        .iter()
                        .map(|b| b.version)
                        .collect::<Vec<_>>()
                        .join(", "),
                }),
            };
        }
        let version = match version {
            None => None,
            Some(v) => {
                let n = v
                    .strip_prefix('v')
                    .and_then(|n| n.parse::<u32>().ok())
                    .filter(|n| *n > 0)
                    .ok_or_else(|| syntax("a custom environment's version is `v1`, `v2`, ..."))?;
                Some(n)
            }
        };
        Ok(EnvRef::Custom {
            name: name.to_string(),
            version,
        })
    }
}

/// Whether `name` can name a custom environment: 1–100 characters from `[A-Za-z0-9_.-]`, starting
/// with a letter or digit.
pub fn valid_env_name(name: &str) -> bool {
    name.len() <= 100
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Whether a Python version string (`3.11.7 (main, ...)`) satisfies a base's `>=X.Y` requirement.
/// Requirements of another form are not checked.
pub fn python_satisfies(requirement: &str, version: &str) -> bool {
    let parse = |s: &str| -> Option<(u32, u32)> {
        let mut parts = s.trim().split(|c: char| !c.is_ascii_digit());
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    };
    match (requirement.strip_prefix(">="), parse(version)) {
        (Some(min), Some(have)) => parse(min).is_none_or(|min| have >= min),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_is_the_last_and_versions_are_found() {
        assert_eq!(latest_base().version, "1.2.0");
        assert_eq!(find_base("1.0.0").map(|b| b.python), Some(">=3.8"));
        assert_eq!(find_base("9.9.9"), None);
    }

    #[test]
    fn refs_parse_and_print() {
        for text in ["default", "default@1.0.0", "myenv", "myenv@v2"] {
            assert_eq!(EnvRef::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(
            EnvRef::parse("myenv@v2").unwrap(),
            EnvRef::Custom {
                name: "myenv".into(),
                version: Some(2)
            }
        );
        assert!(matches!(
            EnvRef::parse("default@9.9.9"),
            Err(EnvRefError::UnknownBase { .. })
        ));
        for bad in ["myenv@2", "myenv@v0", "", "@v1", "a b", ".x@v1"] {
            assert!(
                matches!(EnvRef::parse(bad), Err(EnvRefError::Syntax { .. })),
                "{bad}"
            );
        }
        assert_eq!(
            EnvRef::parse("default@9.9.9").unwrap_err().to_string(),
            "unknown base environment version `9.9.9`; available: 1.0.0, 1.1.0, 1.2.0"
        );
    }

    #[test]
    fn the_latest_base_pins_every_package_it_promises() {
        let pinned: Vec<String> = latest_base()
            .pin_lines()
            .map(|l| {
                let name = l.split(['=', ';', ' ']).next().unwrap_or("");
                crate::env::normalize_name(name)
            })
            .collect();
        for package in latest_base().packages {
            assert!(
                pinned.contains(&crate::env::normalize_name(package)),
                "{package} is promised but not pinned"
            );
        }
        // exact versions (markers after `;` say for which Python)
        assert!(latest_base().pin_lines().all(|l| {
            let requirement = l.split(';').next().unwrap_or("");
            requirement.contains("==") && !requirement.contains(['>', '<', '~', '*'])
        }));
    }

    #[test]
    fn python_requirement() {
        assert!(python_satisfies(">=3.9", "3.11.7 (main, Dec 2023)"));
        assert!(python_satisfies(">=3.9", "3.9.0"));
        assert!(!python_satisfies(">=3.9", "3.8.10"));
        assert!(python_satisfies("~=3", "2.7"));
    }
}
