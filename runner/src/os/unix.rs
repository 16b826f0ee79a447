//! Unix and Linux system calls used by the host executor and the state directory.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{Gid, Pid, Uid};

fn io_err(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// A close-on-exec pipe whose read end is non-blocking: `(read, write)`.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io_err)?;
    fcntl(&read, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(io_err)?;
    Ok((read, write))
}

/// One `read(2)` on a non-blocking descriptor; an empty pipe is `ErrorKind::WouldBlock`, EOF is 0.
pub(crate) fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match nix::unistd::read(fd.as_fd(), buf) {
            Err(Errno::EINTR) => continue,
            other => return other.map_err(io_err),
        }
    }
}

/// How many bytes the pipe behind `fd` can buffer (64 KiB when it cannot be asked).
pub(crate) fn pipe_capacity(fd: BorrowedFd<'_>) -> usize {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Ok(size) = fcntl(fd, FcntlArg::F_GETPIPE_SZ) {
        if let Ok(size) = usize::try_from(size) {
            return size.max(4096);
        }
    }
    let _ = fd;
    64 * 1024
}

/// Sends `signal` to every process of group `pgid`. `Ok(false)` when the group is empty.
pub(crate) fn signal_group(pgid: i32, signal: Signal) -> io::Result<bool> {
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) => Ok(true),
        Err(Errno::ESRCH) => Ok(false),
        Err(e) => Err(io_err(e)),
    }
}

/// Whether any process (zombies included) is in group `pgid`.
pub(crate) fn group_exists(pgid: i32) -> bool {
    !matches!(killpg(Pid::from_raw(pgid), None), Err(Errno::ESRCH))
}

/// Sends `signal` to one process. `Ok(false)` when it does not exist.
pub(crate) fn signal_process(pid: i32, signal: Signal) -> io::Result<bool> {
    match kill(Pid::from_raw(pid), signal) {
        Ok(()) => Ok(true),
        Err(Errno::ESRCH) => Ok(false),
        Err(e) => Err(io_err(e)),
    }
}

/// Reaps `pid` if it is a zombie child of this process. Never blocks, never touches other pids.
pub(crate) fn reap(pid: i32) -> bool {
    matches!(
        waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)),
        Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..))
    )
}

/// This process's id.
pub(crate) fn getpid() -> i32 {
    nix::unistd::getpid().as_raw()
}

/// This process's session id.
pub(crate) fn getsid() -> i32 {
    nix::unistd::getsid(None).map(Pid::as_raw).unwrap_or(-1)
}

/// The effective user id.
pub(crate) fn geteuid() -> u32 {
    Uid::effective().as_raw()
}

/// Makes this process the "child subreaper": orphaned descendants are reparented to it instead
/// of to init. Linux only.
pub(crate) fn set_child_subreaper() -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        nix::sys::prctl::set_child_subreaper(true).map_err(io_err)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "child subreaper is linux-only",
        ))
    }
}

/// Whether this process is a child subreaper (or init of its namespace, which adopts orphans
/// all the same).
pub(crate) fn is_child_subreaper() -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        getpid() == 1 || nix::sys::prctl::get_child_subreaper().unwrap_or(false)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        getpid() == 1
    }
}

/// One line of the process table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub(crate) pid: i32,
    pub(crate) ppid: i32,
    pub(crate) pgrp: i32,
    pub(crate) session: i32,
    /// `R`, `S`, `D`, `Z`, ...
    pub(crate) state: char,
    /// Start time in clock ticks after boot: with `pid`, identifies a process across pid reuse.
    pub(crate) start_time: u64,
}

impl ProcStat {
    pub(crate) fn is_zombie(&self) -> bool {
        self.state == 'Z' || self.state == 'X'
    }
}

/// Parses `/proc/<pid>/stat`.
fn parse_stat(text: &str) -> Option<ProcStat> {
    let pid = text.split(' ').next()?.parse().ok()?;
    // The command name is in parentheses and may itself contain spaces and parentheses.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    Some(ProcStat {
        pid,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        session: fields.get(3)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// The process table entry of `pid`, if it exists.
pub(crate) fn proc_stat(pid: i32) -> Option<ProcStat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every process visible in `/proc`.
pub(crate) fn scan_processes() -> io::Result<Vec<ProcStat>> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        // A process can exit between the listing and the read: skip it.
        if let Some(stat) = proc_stat(pid) {
            out.push(stat);
        }
    }
    Ok(out)
}

/// The value of variable `name` in the environment `pid` was started with (`/proc/<pid>/environ`,
/// which a process's later `setenv`/`unsetenv` do not change; an `exec` with a new environment
/// does). `None` when it has no such variable, or when the file cannot be read (the process is
/// gone or a zombie, or belongs to another user and this process is not root).
pub(crate) fn environ_value(pid: i32, name: &[u8]) -> Option<Vec<u8>> {
    let raw = fs::read(format!("/proc/{pid}/environ")).ok()?;
    raw.split(|b| *b == 0).find_map(|entry| {
        entry
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(b"="))
            .map(<[u8]>::to_vec)
    })
}

/// The command line of `pid` (arguments joined by spaces), or `[comm]` when it has none.
pub(crate) fn command_line(pid: i32) -> String {
    if let Ok(raw) = fs::read(format!("/proc/{pid}/cmdline")) {
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !args.is_empty() {
            return args.join(" ");
        }
    }
    match fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => format!("[{}]", comm.trim_end()),
        Err(_) => String::from("[unknown]"),
    }
}

/// A user from the password database: `(uid, gid, home)`; `None` when unknown.
pub(crate) fn lookup_user(name: &str) -> io::Result<Option<(u32, u32, std::path::PathBuf)>> {
    let user = nix::unistd::User::from_name(name).map_err(io_err)?;
    Ok(user.map(|u| (u.uid.as_raw(), u.gid.as_raw(), u.dir)))
}

/// The groups `name` belongs to, `gid` included.
pub(crate) fn group_list(name: &str, gid: u32) -> io::Result<Vec<u32>> {
    let cname = CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    #[cfg(not(target_vendor = "apple"))]
    {
        let groups = nix::unistd::getgrouplist(&cname, Gid::from_raw(gid)).map_err(io_err)?;
        Ok(groups.into_iter().map(Gid::as_raw).collect())
    }
    #[cfg(target_vendor = "apple")]
    {
        let _ = cname;
        Ok(vec![gid])
    }
}

/// Returns a `pre_exec` hook that switches the child to `uid`/`gid` with exactly `groups` as its
/// supplementary groups (in that order: groups, gid, uid, as root). It allocates nothing and makes
/// only async-signal-safe calls.
pub(crate) fn switch_user_hook(
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
) -> impl FnMut() -> io::Result<()> + Send + Sync + 'static {
    let groups: Vec<Gid> = groups.into_iter().map(Gid::from_raw).collect();
    move || {
        #[cfg(not(target_vendor = "apple"))]
        nix::unistd::setgroups(&groups).map_err(io_err)?;
        nix::unistd::setgid(Gid::from_raw(gid)).map_err(io_err)?;
        nix::unistd::setuid(Uid::from_raw(uid)).map_err(io_err)?;
        Ok(())
    }
}

/// A `pre_exec` hook that gives the child every signal's default disposition and an empty signal
/// mask. Ignored signals survive `exec`: an agent started in the background of a script (`&`
/// ignores SIGINT and SIGQUIT) or under `nohup` would otherwise pass that on, and the build's
/// commands could not be interrupted, nor would their `trap` show what a shell normally starts
/// with. Real-time signals are reset too, except the ones the C library keeps for itself (it
/// refuses them with EINVAL). Only async-signal-safe calls; nothing is allocated.
pub(crate) fn reset_signals() -> io::Result<()> {
    use nix::libc;
    // SAFETY: a zeroed sigaction is SIG_DFL with no flags and an empty mask; installing SIG_DFL
    // runs no handler code, and sigprocmask with an empty set only unblocks.
    unsafe {
        let default: libc::sigaction = std::mem::zeroed();
        for signal in 1..=libc::SIGRTMAX() {
            if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                continue;
            }
            if libc::sigaction(signal, &default, std::ptr::null_mut()) != 0
                && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL)
            {
                return Err(io::Error::last_os_error());
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        if libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `chown(2)` without following a final symlink.
pub(crate) fn chown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_command_names() {
        let line = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 \
                    1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        let s = parse_stat(line).unwrap();
        assert_eq!(
            s,
            ProcStat {
                pid: 4242,
                ppid: 1,
                pgrp: 4242,
                session: 4242,
                state: 'S',
                start_time: 987654,
            }
        );
    }

    #[test]
    fn own_process_is_visible() {
        let me = proc_stat(getpid()).unwrap();
        assert_eq!(me.session, getsid());
        assert!(command_line(getpid()).contains("buildagent_runner"));
    }

    #[test]
    fn a_variable_of_the_environment_a_process_started_with() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env_clear()
            .env("CODEBUILD_BUILD_ID_X", "no")
            .env("CODEBUILD_BUILD_ID", "demo:1=2")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // Until the exec, the child has our environment: wait for `sleep`'s.
        let mut value = None;
        for _ in 0..500 {
            value = environ_value(pid, b"CODEBUILD_BUILD_ID");
            if value.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let missing = environ_value(pid, b"PATH");
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(value.as_deref(), Some(&b"demo:1=2"[..]));
        assert_eq!(missing, None);
        // Gone processes have no environment.
        assert_eq!(environ_value(pid, b"CODEBUILD_BUILD_ID"), None);
    }
}
