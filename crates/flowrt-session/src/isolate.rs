//! A session's own view of the machine's processes: the agent moves into a new PID namespace with
//! its own mount of `/proc`, so its code (and every Python worker under it) sees only the
//! session's processes. `/proc/<server pid>/environ` or `cmdline` (a database URL, a cloud key),
//! and other sessions' agents, are not there to be read; Landlock does not cover `/proc`. The
//! same step gives it an IPC namespace and a `/dev/shm` of its own, so no session reaches
//! another's shared memory.
//!
//! The agent calls [`enter_own_pid_namespace`] while it has one thread, after it has read what
//! the server hands it on stdin and before it seals itself (a sealed process cannot mount). The
//! process the server started stays outside as a small waiter: it forwards the signals it gets
//! and exits as the agent exits, so the server's view (its pid, its exit status, its process
//! group) is unchanged. Where the kernel refuses (no privilege for namespaces), the agent runs
//! as before and its log says so.

use std::sync::atomic::{AtomicI32, Ordering};

/// Make this process's memory and environment unreadable to other processes of the same user:
/// a non-dumpable process's `/proc/PID/environ`, `mem`, `maps` and `fd` pass only a caller with
/// `CAP_SYS_PTRACE`, so a session's code (the same user when the server is not root, or no PID
/// namespace) cannot read the server's environment or an agent's memory. Reset by `execve`, so
/// the processes this one starts (user code) are not affected.
pub fn hide_from_same_user() -> std::io::Result<()> {
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) takes integer arguments only and changes a flag of the
    // calling process; no memory is passed.
    let r = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether this process runs as root (and may so give a session's processes another user).
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Become user and group `uid` for good, with no supplementary groups: a session's processes then
/// hold none of the server's file permissions (its folder is handed to `uid`), whether or not
/// the kernel can seal them. Changing credentials makes the process dumpable again: call
/// [`hide_from_same_user`] after it.
pub fn become_user(uid: u32) -> std::io::Result<()> {
    let check = |r: libc::c_int| {
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    // SAFETY: setgroups(2) with a count of 0 reads no memory; setresgid(2) and setresuid(2) take
    // integers only. Groups first: once the user id is dropped, the groups can no longer change.
    unsafe {
        check(libc::setgroups(0, std::ptr::null()))?;
        check(libc::setresgid(uid, uid, uid))?;
        check(libc::setresuid(uid, uid, uid))?;
    }
    // SAFETY: getuid(2), geteuid(2), getgid(2) and getegid(2) have no preconditions.
    let (ruid, euid, rgid, egid) = unsafe {
        (
            libc::getuid(),
            libc::geteuid(),
            libc::getgid(),
            libc::getegid(),
        )
    };
    if (ruid, euid, rgid, egid) != (uid, uid, uid, uid) {
        return Err(std::io::Error::other(format!(
            "asked to become user {uid}, still uid {ruid}/{euid}, gid {rgid}/{egid}"
        )));
    }
    Ok(())
}

/// How the agent's processes are seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessView {
    /// In a PID namespace of its own, with its own `/proc`, and an IPC namespace and
    /// `/dev/shm` of its own (`false`: the machine's `/dev/shm`, the tmpfs mount was refused).
    Own { private_shm: bool },
    /// As every process of the machine (the kernel refused a namespace), with the reason.
    Shared(i32),
}

impl ProcessView {
    pub fn describe(self) -> String {
        match self {
            ProcessView::Own { private_shm: true } => "processes: a PID namespace of its own (other processes unseen), with its own IPC namespace and /dev/shm".into(),
            ProcessView::Own { private_shm: false } => "processes: a PID namespace of its own (other processes unseen), with its own IPC namespace; /dev/shm is the machine's (a tmpfs could not be mounted)".into(),
            ProcessView::Shared(errno) => format!(
                "processes: shared with the machine (no PID namespace: {}; run the server as root to isolate sessions' processes)",
                std::io::Error::from_raw_os_error(errno)
            ),
        }
    }
}

/// The agent inside the namespace, for the waiter's signal handler.
static AGENT: AtomicI32 = AtomicI32::new(0);

/// The waiter's pid: the process the server started, as the machine sees it.
static OUTER_PID: AtomicI32 = AtomicI32::new(0);

/// This agent's process id as the server sees it: the waiter's when the agent is in a namespace
/// of its own (where its own id is 1), else its own.
pub fn visible_pid() -> u32 {
    match OUTER_PID.load(Ordering::SeqCst) {
        p if p > 0 => p as u32,
        _ => std::process::id(),
    }
}

extern "C" fn forward(sig: libc::c_int) {
    let pid = AGENT.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe and takes plain integers.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Move this (single-threaded) process's future into a PID namespace of its own. Returns in the
/// agent, now PID 1 of the namespace with its own `/proc`; the original process never returns
/// (it waits for the agent and exits with its status). Returns [`ProcessView::Shared`] where the
/// kernel refuses.
pub fn enter_own_pid_namespace() -> std::io::Result<ProcessView> {
    // SAFETY: unshare(2) takes flags only. The caller has one thread, as CLONE_NEWNS requires.
    // The IPC namespace keeps System V IPC and POSIX message queues to the session.
    if unsafe { libc::unshare(libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWIPC) } != 0 {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        return Ok(ProcessView::Shared(errno));
    }
    OUTER_PID.store(std::process::id() as i32, Ordering::SeqCst);
    // SAFETY: the process has one thread (the caller's contract), so the child's copy of the
    // address space holds no lock another thread owned; both sides go on with plain system calls.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if child > 0 {
        wait_and_exit(child);
    }
    // The agent, PID 1 of the new namespace. It dies with the waiter (a SIGKILLed waiter leaves
    // no agent behind), and mounts a /proc that shows only this namespace.
    // SAFETY: prctl(2) and mount(2) take integers and NUL-terminated strings that outlive them.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        let root = c"/";
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        let proc_ = c"proc";
        let target = c"/proc";
        if libc::mount(
            proc_.as_ptr(),
            target.as_ptr(),
            proc_.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    // POSIX shared memory and semaphores (multiprocessing's) are files in /dev/shm, which every
    // session may write: a tmpfs of its own keeps one session's out of another's reach. Its pages
    // are charged to the session's memory cgroup.
    let shm = c"/dev/shm";
    let tmpfs = c"tmpfs";
    let options = c"mode=1777";
    // SAFETY: mount(2) with NUL-terminated strings that outlive the call.
    let private_shm = std::path::Path::new("/dev/shm").is_dir()
        && unsafe {
            libc::mount(
                tmpfs.as_ptr(),
                shm.as_ptr(),
                tmpfs.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                options.as_ptr().cast(),
            )
        } == 0;
    Ok(ProcessView::Own { private_shm })
}

/// The waiter: forward SIGTERM, SIGINT and SIGHUP to the agent, and exit as it exits.
fn wait_and_exit(agent: libc::pid_t) -> ! {
    AGENT.store(agent, Ordering::SeqCst);
    // SAFETY: installing a handler that only calls kill(2) (async-signal-safe) on a pid read from
    // an atomic; waitpid(2) and _exit(2) take plain integers and a pointer to a local.
    unsafe {
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::signal(
                sig,
                forward as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
        let mut status: libc::c_int = 0;
        loop {
            let r = libc::waitpid(agent, &mut status, 0);
            if r == agent {
                break;
            }
            if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                libc::_exit(1);
            }
        }
        if libc::WIFEXITED(status) {
            libc::_exit(libc::WEXITSTATUS(status));
        }
        // Killed: die the same way, so the server reads the same reason.
        let sig = libc::WTERMSIG(status);
        libc::signal(sig, libc::SIG_DFL);
        libc::kill(libc::getpid(), sig);
        libc::_exit(128 + sig);
    }
}
