//! Pushing a flow folder to a server's workspace (`flow push`, and `session start` / `run
//! create` given a folder). The folder is packed as a snapshot (its `additional_includes` merged in, `.gitignore` / `.amlignore` honoured) and
//! uploaded once: a folder whose files have not changed since its latest version uploads nothing.

use crate::client::Remote;
use anyhow::{anyhow, bail, Result};
use flowrt_api::responses::{FlowVersion, PushedFlow};
use flowrt_store::snapshot::{self, SnapshotLimits};
use std::path::Path;

/// What a push did.
pub struct Pushed {
    /// `name@vN`.
    pub reference: String,
    /// Nothing was uploaded: the latest version already holds these files.
    pub unchanged: bool,
    pub bytes_sent: usize,
}

/// The name a flow gets when none is given: its folder's name (or a prompty file's stem), made
/// into a valid flow name.
pub fn default_name(flow: &Path) -> String {
    let path = flow.canonicalize().unwrap_or_else(|_| flow.to_path_buf());
    let raw = if path.is_file() {
        path.file_stem()
    } else {
        path.file_name()
    }
    .map(|n| n.to_string_lossy().into_owned())
    .unwrap_or_else(|| "flow".into());
    let name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    name.trim_start_matches(['.', '-'])
        .chars()
        .take(100)
        .collect()
}

/// Push `flow` (a folder, or a `.prompty` file in one) as `name`.
pub async fn push(remote: &Remote, flow: &Path, name: &str, home: &Path) -> Result<Pushed> {
    if !flow.exists() {
        bail!("no flow at {}", flow.display());
    }
    let (folder, entry) = if flow.is_file() {
        let entry = flow
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| anyhow!("{} names no file", flow.display()))?;
        (
            flow.parent().unwrap_or(Path::new(".")).to_path_buf(),
            Some(entry),
        )
    } else {
        (flow.to_path_buf(), None)
    };
    // Includes resolved here, on the machine that has them: the server never reads a path.
    let merged = crate::includes::Merged::new(&folder, home)?;
    let limits = SnapshotLimits::default();
    let dir = merged.dir.clone();
    let files = snapshot::collect(&dir, &limits)
        .map_err(|e| anyhow!("cannot push {}: {e}", folder.display()))?;
    let hash = snapshot::hash_files(&files)?;
    // Compare first: an unchanged folder sends no bytes.
    if let Ok(latest) = remote
        .get::<FlowVersion>(&format!("/api/v1/flows/{name}"))
        .await
    {
        if latest.hash == hash && latest.entry == entry {
            return Ok(Pushed {
                reference: latest.reference,
                unchanged: true,
                bytes_sent: 0,
            });
        }
    }
    let (archive, info) = snapshot::pack(&dir, &limits)
        .map_err(|e| anyhow!("cannot push {}: {e}", folder.display()))?;
    let sent = archive.len();
    let mut path = format!("/api/v1/flows/{name}");
    if let Some(e) = &entry {
        path.push_str(&format!("?entry={}", urlencode(e)));
    }
    let pushed: PushedFlow = remote
        .post_bytes(&path, "application/gzip", archive)
        .await?;
    if pushed.flow.hash != info.hash {
        bail!(
            "the server stored {} for {name}, not the {} packed here",
            pushed.flow.hash,
            info.hash
        );
    }
    Ok(Pushed {
        reference: pushed.flow.reference,
        unchanged: pushed.unchanged,
        bytes_sent: sent,
    })
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
