//! `flowrt data push`: batch data uploaded to a server once, named by its content's hash, so a
//! run names it (`data:sha256:HEX.EXT`) and a file the server has is never sent again.

use crate::client::{block, Remote, ServerOpt};
use anyhow::{anyhow, Result};
use clap::Subcommand;
use flowrt_api::responses::{DataInfo, UploadedData};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum DataCommand {
    /// Upload a .jsonl, .csv or .tsv file; prints its reference (data:sha256:HEX.EXT). A bad JSONL
    /// line is named; a file the server already has is not sent again.
    Push {
        /// The data file.
        file: PathBuf,
        #[command(flatten)]
        server: ServerOpt,
    },
}

/// `flowrt data push FILE`.
pub fn run(cmd: DataCommand) -> Result<u8> {
    let DataCommand::Push { file, server } = cmd;
    let remote = Remote::for_server(server.server.as_deref())?;
    let (reference, sent) = block(push_data(&remote, &file))?;
    if !sent {
        eprintln!("the server has this data already: nothing uploaded");
    }
    println!("{reference}");
    Ok(0)
}

/// Upload a data file (unless the server has it already): its reference, and whether it was sent.
pub async fn push_data(remote: &Remote, file: &Path) -> Result<(String, bool)> {
    use sha2::Digest;
    use std::io::Read;
    // Hashed, then sent, a piece at a time: a large data file is never held in memory.
    let mut hasher = sha2::Sha256::new();
    let mut f = fs_err::File::open(file).map_err(|e| anyhow!("cannot read the data file: {e}"))?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| anyhow!("cannot read the data file: {e}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let format = match file.extension().and_then(|e| e.to_str()) {
        Some("csv") => "csv",
        Some("tsv") => "tsv",
        _ => "jsonl",
    };
    let reference = format!("data:sha256:{}.{format}", hex::encode(hasher.finalize()));
    if remote
        .get::<DataInfo>(&format!("/api/v1/data/{reference}"))
        .await
        .is_ok()
    {
        return Ok((reference, false));
    }
    let uploaded: UploadedData = remote
        .post_file(
            &format!("/api/v1/data?format={format}"),
            "application/octet-stream",
            file,
        )
        .await
        .map_err(|e| anyhow!("{}: {e}", file.display()))?;
    Ok((uploaded.reference, true))
}
