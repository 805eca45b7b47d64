//! `additional_includes`: files and folders outside the flow folder that promptflow copies into
//! the flow's snapshot before running it. flowrt does the same: a flow that lists includes runs
//! from a merged copy under FLOWRT_HOME/flows/, so tools import and reference included files by
//! their base name, exactly as under promptflow.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The folder to load the flow from: `flow` itself, or a merged copy when it has includes.
pub fn materialize(flow: &Path, home: &Path) -> Result<PathBuf> {
    // A .prompty file is self-contained: it has no additional_includes.
    if flow.is_file()
        && flow
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("prompty"))
    {
        return Ok(flow.to_path_buf());
    }
    let (dir, file) = if flow.is_dir() {
        let file = [
            "flow.dag.yaml",
            "flow.dag.yml",
            "flow.flex.yaml",
            "flow.flex.yml",
        ]
        .iter()
        .map(|n| flow.join(n))
        .find(|p| p.is_file())
        .unwrap_or_else(|| flow.join("flow.dag.yaml"));
        (flow.to_path_buf(), file)
    } else {
        (
            flow.parent().map(Path::to_path_buf).unwrap_or_default(),
            flow.to_path_buf(),
        )
    };
    let Ok(text) = fs_err::read_to_string(&file) else {
        return Ok(flow.to_path_buf()); // the loader reports a missing flow with a hint
    };
    let (mut includes, requirements): (Vec<String>, Option<String>) =
        match flowrt_yaml::parse(&text) {
            Ok(v) => (
                v.get("additional_includes")
                    .and_then(flowrt_yaml::Node::as_sequence)
                    .map(|s| {
                        s.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                v.get("environment")
                    .and_then(|e| e.get("python_requirements_txt"))
                    .and_then(flowrt_yaml::Node::as_str)
                    .map(str::to_string),
            ),
            Err(_) => return Ok(flow.to_path_buf()), // the loader reports YAML errors with positions
        };
    // A requirements file outside the folder (one file for a repository's flows) is taken in
    // as an include is, under its own name: the loader finds it there, and a pushed snapshot
    // holds it.
    if let Some(rel) = requirements.filter(|r| flowrt_flow::leaves_folder(r)) {
        if dir.join(&rel).is_file() {
            includes.push(rel);
        }
    }
    if includes.is_empty() {
        return Ok(flow.to_path_buf());
    }
    let merged = home
        .join("flows")
        .join(format!("merged-{}-{}", std::process::id(), unique()));
    copy_tree(&dir, &merged)?;
    for inc in &includes {
        let src = dir.join(inc);
        let Some(name) = src.file_name() else {
            bail!(
                "{}: additional_includes entry '{inc}' names no file or folder",
                file.display()
            );
        };
        if !src.exists() {
            bail!(
                "{}: additional_includes entry '{inc}' does not exist (looked for {})",
                file.display(),
                src.display()
            );
        }
        // An include holding flowrt's home would copy the home, this merged copy included, into
        // itself without end.
        if let (Ok(inc_path), Ok(home_path)) = (src.canonicalize(), home.canonicalize()) {
            if home_path.starts_with(&inc_path) {
                let _ = std::fs::remove_dir_all(&merged);
                bail!(
                    "{}: additional_includes entry '{inc}' holds flowrt's home folder ({}); include the files the flow needs instead",
                    file.display(),
                    home_path.display()
                );
            }
        }
        let dst = merged.join(name);
        if src.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            fs_err::copy(&src, &dst)
                .with_context(|| format!("copying additional include '{inc}'"))?;
        }
    }
    Ok(merged)
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A flow folder's files for a merged copy: links followed (an include may be one), caches left out.
fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let filter = flowrt_store::fsutil::CopyFilter {
        skip_names: &["__pycache__", ".promptflow"],
        symlinks: true,
        ..Default::default()
    };
    Ok(flowrt_store::fsutil::copy_tree(src, dst, &filter)?)
}

/// A flow folder ready to load; a merged copy is removed when dropped.
pub struct Merged {
    pub dir: PathBuf,
    original: PathBuf,
    temporary: bool,
}

impl Merged {
    pub fn new(flow: &Path, home: &Path) -> Result<Self> {
        let dir = materialize(flow, home)?;
        let temporary = dir != flow;
        Ok(Merged {
            dir,
            original: flow.to_path_buf(),
            temporary,
        })
    }

    /// Load the flow; messages name the user's folder, not the merged copy. What promptflow
    /// would ignore in it is a warning on stderr, with its file and line.
    pub fn load(&self, options: &flowrt_flow::LoadOptions) -> Result<flowrt_flow::Flow> {
        let loaded = flowrt_flow::load_flow(&self.dir, options);
        if let Ok(flow) = &loaded {
            let file = flow.file.display().to_string().replace(
                &self.dir.display().to_string(),
                &self.original.display().to_string(),
            );
            for w in &flow.warnings {
                match w.line {
                    Some(line) => eprintln!("warning: {file}:{line}: {}", w.message),
                    None => eprintln!("warning: {file}: {}", w.message),
                }
            }
        }
        loaded.map_err(|e| {
            if self.temporary {
                anyhow::anyhow!(e.to_string().replace(
                    &self.dir.display().to_string(),
                    &self.original.display().to_string()
                ))
            } else {
                e.into()
            }
        })
    }
}

impl Drop for Merged {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
