//! The few files the server itself reads or writes directly in a session's folder (the agent's
//! log, its address, a Ray job's id), opened so that a link the session's code put in their
//! place is refused rather than followed: `O_NOFOLLOW` on the file (the folder itself is the
//! server's, and its code cannot replace it), and only regular files are read. Anything else the
//! server needs of a session comes over the agent's channel.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

fn plain(name: &str) -> std::io::Result<()> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("'{name}' is not a file name of a session folder"),
        ));
    }
    Ok(())
}

fn regular(f: File) -> std::io::Result<File> {
    if f.metadata()?.is_file() {
        Ok(f)
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a regular file",
        ))
    }
}

fn open_read(folder: &Path, name: &str) -> std::io::Result<File> {
    plain(name)?;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(folder.join(name))?;
    regular(f)
}

/// File `name` of session folder `folder` from byte `offset`, at most `max` bytes.
pub fn read_from(folder: &Path, name: &str, offset: u64, max: u64) -> std::io::Result<Vec<u8>> {
    let mut f = open_read(folder, name)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    f.take(max).read_to_end(&mut buf)?;
    Ok(buf)
}

/// The last `max` bytes of file `name` of session folder `folder`, and its length.
pub fn read_tail(folder: &Path, name: &str, max: u64) -> std::io::Result<(Vec<u8>, u64)> {
    let mut f = open_read(folder, name)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(max)))?;
    let mut buf = Vec::new();
    f.take(max).read_to_end(&mut buf)?;
    Ok((buf, len))
}

/// File `name` of session folder `folder`, whole, if it is at most `max` bytes (an agent's
/// address, a job id).
pub fn read_small(folder: &Path, name: &str, max: u64) -> std::io::Result<String> {
    let buf = read_from(folder, name, 0, max + 1)?;
    if buf.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{name} is larger than {max} bytes"),
        ));
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// File `name` of session folder `folder` opened to append (created, mode 0600, if missing). A
/// link in its place is removed (the link, not what it points at) and a fresh file begun.
pub fn append(folder: &Path, name: &str) -> std::io::Result<File> {
    plain(name)?;
    let path = folder.join(name);
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
    };
    let f = match open() {
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            std::fs::remove_file(&path)?;
            open()?
        }
        other => other?,
    };
    regular(f)
}

/// Replace file `name` of session folder `folder` with `text` (a link in its place is replaced,
/// never written through).
pub fn replace(folder: &Path, name: &str, text: &str) -> std::io::Result<()> {
    plain(name)?;
    let tmp = folder.join(format!(".{name}.server-tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    drop(f);
    std::fs::rename(&tmp, folder.join(name))
}

/// Open `rel` (a path inside session folder `folder`) with no link followed anywhere along it
/// and nothing outside the folder reached (`openat2`, `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`).
fn open_beneath(folder: &Path, rel: &str, dir: bool) -> std::io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let root = rustix::fs::open(
        folder,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )?;
    let mut flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK;
    if dir {
        flags |= OFlags::DIRECTORY;
    }
    Ok(rustix::fs::openat2(
        &root,
        rel,
        flags,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
    )?)
}

/// The regular file at `rel` inside session folder `folder`, opened without following a link.
pub fn open_file_beneath(folder: &Path, rel: &str) -> std::io::Result<File> {
    regular(File::from(open_beneath(folder, rel, false)?))
}

/// The names of the entries of directory `rel` inside session folder `folder` (no link
/// followed along it).
pub fn list_beneath(folder: &Path, rel: &str) -> std::io::Result<Vec<String>> {
    let fd = open_beneath(folder, rel, true)?;
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::new(fd)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name != "." && name != ".." {
            names.push(name);
        }
    }
    Ok(names)
}

/// Give session folder `folder` and everything in it to user and group `uid`, all but its top
/// entry `keep`, walking by file descriptor: no link is followed, and a folder replaced by a
/// link while the walk runs is not entered (the folder's old user may still write in it).
pub fn hand_over(folder: &Path, uid: u32, keep: &str) -> std::io::Result<()> {
    use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Uid};
    use std::os::fd::AsFd;
    let (owner, group) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(uid)));
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    fn walk(
        dir: std::os::fd::OwnedFd,
        owner: Option<Uid>,
        group: Option<Gid>,
        keep: Option<&str>,
        flags: OFlags,
    ) -> std::io::Result<()> {
        rustix::fs::fchown(&dir, owner, group)?;
        let mut subdirs = Vec::new();
        for entry in rustix::fs::Dir::read_from(dir.as_fd())? {
            let entry = entry?;
            let name = entry.file_name().to_owned();
            let bytes = name.to_bytes();
            if bytes == b"." || bytes == b".." || keep.is_some_and(|k| k.as_bytes() == bytes) {
                continue;
            }
            rustix::fs::chownat(
                &dir,
                name.as_c_str(),
                owner,
                group,
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
            if entry.file_type() == FileType::Directory {
                subdirs.push(name);
            }
        }
        for name in subdirs {
            // Opened with O_NOFOLLOW: if it became a link meanwhile, it is not entered.
            match rustix::fs::openat(&dir, name.as_c_str(), flags, Mode::empty()) {
                Ok(sub) => walk(sub, owner, group, None, flags)?,
                Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
    let root = rustix::fs::open(folder, dir_flags, Mode::empty())?;
    walk(root, owner, group, Some(keep), dir_flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handing_a_folder_over_never_follows_a_link_out_of_it() {
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: only root can give files away");
            return;
        }
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("passwd"), "root:x:0:0").unwrap();
        let folder = d.path().join("session");
        std::fs::create_dir_all(folder.join("flow/sub")).unwrap();
        std::fs::write(folder.join("flow/sub/tool.py"), "x").unwrap();
        std::fs::write(folder.join("agent.token"), "t").unwrap();
        std::os::unix::fs::symlink(&outside, folder.join("flow/escape")).unwrap();
        std::os::unix::fs::symlink(outside.join("passwd"), folder.join("passwd")).unwrap();
        hand_over(&folder, 250_777, "agent.token").unwrap();
        for mine in ["", "flow", "flow/sub", "flow/sub/tool.py"] {
            let m = std::fs::symlink_metadata(folder.join(mine)).unwrap();
            assert_eq!((m.uid(), m.gid()), (250_777, 250_777), "{mine}");
        }
        // The links themselves are the session's; what they point to is not touched.
        for link in ["flow/escape", "passwd"] {
            assert_eq!(
                std::fs::symlink_metadata(folder.join(link)).unwrap().uid(),
                250_777
            );
        }
        for theirs in [
            outside.clone(),
            outside.join("passwd"),
            folder.join("agent.token"),
        ] {
            assert_eq!(
                std::fs::metadata(&theirs).unwrap().uid(),
                0,
                "{}",
                theirs.display()
            );
        }
    }

    #[test]
    fn a_link_in_place_of_a_file_is_refused_or_replaced_never_followed() {
        let d = tempfile::tempdir().unwrap();
        let secret = d.path().join("owner.token");
        std::fs::write(&secret, "frt_secret").unwrap();
        let folder = d.path().join("session");
        std::fs::create_dir(&folder).unwrap();
        for name in ["agent.log", "agent.addr", "ray.job"] {
            std::os::unix::fs::symlink(&secret, folder.join(name)).unwrap();
        }
        assert!(read_from(&folder, "agent.log", 0, 100).is_err());
        assert!(read_tail(&folder, "agent.log", 100).is_err());
        assert!(read_small(&folder, "agent.addr", 100).is_err());
        use std::io::Write;
        append(&folder, "agent.log")
            .unwrap()
            .write_all(b"agent started")
            .unwrap();
        assert_eq!(
            read_from(&folder, "agent.log", 0, 100).unwrap(),
            b"agent started"
        );
        replace(&folder, "ray.job", "raysubmit_1").unwrap();
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "frt_secret");
        assert_eq!(read_small(&folder, "ray.job", 100).unwrap(), "raysubmit_1");
        // A fifo would block a reader forever: only regular files are read.
        let fifo = folder.join("agent.addr2");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(read_small(&folder, "agent.addr2", 100).is_err());
        assert!(read_small(&folder, "../owner.token", 100).is_err());
        // Beneath: no link anywhere along the path, nothing outside the folder.
        std::fs::create_dir_all(folder.join("runs/r1")).unwrap();
        std::fs::write(folder.join("runs/r1/logs.txt"), "log").unwrap();
        std::os::unix::fs::symlink(&secret, folder.join("runs/r1/metrics.json")).unwrap();
        std::os::unix::fs::symlink(d.path(), folder.join("runs/out")).unwrap();
        let mut text = String::new();
        open_file_beneath(&folder, "runs/r1/logs.txt")
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "log");
        assert!(open_file_beneath(&folder, "runs/r1/metrics.json").is_err());
        assert!(open_file_beneath(&folder, "runs/out/owner.token").is_err());
        assert!(open_file_beneath(&folder, "../owner.token").is_err());
        assert!(list_beneath(&folder, "runs/out").is_err());
        let mut names = list_beneath(&folder, "runs").unwrap();
        names.sort();
        assert_eq!(names, ["out", "r1"]);
    }
}
