//! `flowrt flow pull` and `flowrt flow diff`: a workspace flow's versions brought back to a
//! folder, and two versions compared, so editing in the browser and in a local folder mix.

use crate::client::{block, Remote};
use anyhow::{anyhow, bail, Result};
use flowrt_api::responses::FlowComparison;
use std::path::Path;

/// `flowrt flow pull NAME[@vN] DIR`: the version's files into a new (or empty) folder.
pub fn pull(reference: &str, dir: &Path, server: Option<&str>) -> Result<u8> {
    let remote = Remote::from_env(server, &flowrt_store::flowrt_home())?;
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .map_err(|e| anyhow!("cannot read {}: {e}", dir.display()))?
            .next()
            .is_none();
        if !empty {
            bail!(
                "{} is not empty; pull into a new folder (nothing there is overwritten)",
                dir.display()
            );
        }
    }
    block(async move {
        let (archive, headers) = remote
            .get_bytes(&format!("/api/v1/flows/{reference}/snapshot"))
            .await?;
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let (pulled, entry) = (header("x-flowrt-flow"), header("x-flowrt-entry"));
        // Unpacked beside the folder, then moved into place: an interrupted pull leaves no half
        // folder under the name asked for.
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)
            .map_err(|e| anyhow!("cannot create {}: {e}", parent.display()))?;
        let staging = parent.join(format!(".flowrt-pull-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        let unpacked = flowrt_store::snapshot::unpack(
            std::io::Cursor::new(archive),
            &staging,
            &flowrt_store::snapshot::SnapshotLimits::default(),
        );
        let info = match unpacked {
            Ok(info) => info,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                bail!("the server's archive of {reference} could not be unpacked: {e}");
            }
        };
        if dir.exists() {
            std::fs::remove_dir(dir)
                .map_err(|e| anyhow!("cannot replace {}: {e}", dir.display()))?;
        }
        std::fs::rename(&staging, dir).map_err(|e| {
            let _ = std::fs::remove_dir_all(&staging);
            anyhow!("cannot move the flow into {}: {e}", dir.display())
        })?;
        let shown = if entry.is_empty() {
            dir.display().to_string()
        } else {
            dir.join(&entry).display().to_string()
        };
        eprintln!(
            "pulled {pulled} into {} ({} files, {} bytes); push it back with `flowrt flow push {shown} --name {}`",
            dir.display(),
            info.files,
            info.bytes,
            pulled.split('@').next().unwrap_or(reference)
        );
        Ok(0)
    })
}

/// `flowrt flow diff NAME@vA [NAME@vB]`: what changed, as a unified diff.
pub fn diff(from: &str, to: Option<&str>, server: Option<&str>) -> Result<u8> {
    let remote = Remote::from_env(server, &flowrt_store::flowrt_home())?;
    let (name, a) = split_ref(from)?;
    block(async move {
        let b = match to {
            Some(t) => {
                let (other, b) = split_ref(t)?;
                if other != name {
                    bail!("'{from}' and '{t}' are versions of different flows; diff compares versions of one flow");
                }
                b
            }
            None => {
                let latest: flowrt_api::responses::FlowVersion =
                    remote.get(&format!("/api/v1/flows/{name}")).await?;
                latest.version
            }
        };
        let cmp: FlowComparison = remote
            .get(&format!("/api/v1/flows/{name}/compare?from={a}&to={b}"))
            .await?;
        print!("{}", unified(&cmp));
        if cmp.files.is_empty() {
            eprintln!(
                "{} and {} hold the same files",
                cmp.from.reference, cmp.to.reference
            );
        }
        Ok(0)
    })
}

fn split_ref(reference: &str) -> Result<(String, u32)> {
    let bad =
        || anyhow!("'{reference}' names no version; write NAME@vN (`flowrt flow list` shows them)");
    let (name, v) = reference.rsplit_once("@v").ok_or_else(bad)?;
    Ok((name.to_string(), v.parse().map_err(|_| bad())?))
}

/// The comparison as `diff -u` prints it.
fn unified(cmp: &FlowComparison) -> String {
    let mut out = String::new();
    for f in &cmp.files {
        let old = if f.status == "added" {
            "/dev/null".to_string()
        } else {
            format!("{}/{}", cmp.from.reference, f.path)
        };
        let new = if f.status == "removed" {
            "/dev/null".to_string()
        } else {
            format!("{}/{}", cmp.to.reference, f.path)
        };
        out.push_str(&format!("--- {old}\n+++ {new}\n"));
        if f.hunks.is_empty() {
            out.push_str("(not text: only that it changed is shown)\n");
        }
        for h in &f.hunks {
            let count = |ops: &[&str]| {
                h.lines
                    .iter()
                    .filter(|l| ops.contains(&l.op.as_str()))
                    .count()
            };
            out.push_str(&format!(
                "@@ -{},{} +{},{} @@\n",
                h.from_line,
                count(&[" ", "-"]),
                h.to_line,
                count(&[" ", "+"])
            ));
            for l in &h.lines {
                out.push_str(&format!("{}{}\n", l.op, l.text));
            }
        }
    }
    out
}
