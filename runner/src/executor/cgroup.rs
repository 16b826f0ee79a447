//! A cgroup v2 per build: where the machine lets this process create child cgroups of its own
//! cgroup (root, or a delegated subtree), every command of a build joins the build's cgroup before
//! it runs, and everything it starts stays there, daemons that call `setsid` or double-fork
//! included. The build's processes are then exactly `cgroup.procs` (no scan of the process table,
//! whatever else runs on the host), and `cgroup.kill` ends them all at once, forks in flight
//! included. Two builds in one process each have their own cgroup and never see each other's
//! processes.
//!
//! The cgroup is `<own cgroup>/buildagent-<pid>-<n>`, made when the executor is made and removed
//! when it is dropped (after ending whatever is still in it). Cgroups that an agent killed with
//! SIGKILL left behind (their pid is gone and they are empty) are removed by the next agent that
//! makes one beside them.
//!
//! `BUILDAGENT_CGROUPS=off` in the agent's environment (read once per process) turns cgroups off:
//! executors then fall back to the process table, as on a machine without delegation.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// Cgroups made by this process so far (the `<n>` of their names).
static MADE: AtomicU64 = AtomicU64::new(0);

/// A build's cgroup; see the [module documentation](self).
#[derive(Debug)]
pub(crate) struct BuildCgroup {
    dir: PathBuf,
    /// `cgroup.procs`, open for writing, so that a child joins with one `write` between fork and
    /// exec (no allocation, no path lookup there). Close-on-exec: commands never inherit it.
    procs: File,
}

impl BuildCgroup {
    /// A new cgroup under this process's own, or `None` when there is no cgroup v2 hierarchy this
    /// process may write to (cgroup v1 only, a read-only mount in a container, no delegation).
    pub(crate) fn create() -> Option<BuildCgroup> {
        if !allowed() {
            return None;
        }
        let own = own_cgroup_dir()?;
        remove_stale(&own);
        let n = MADE.fetch_add(1, Ordering::Relaxed);
        let dir = own.join(format!("buildagent-{}-{n}", std::process::id()));
        fs::create_dir(&dir).ok()?;
        let procs = match OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))
        {
            Ok(file) => file,
            Err(_) => {
                let _ = fs::remove_dir(&dir);
                return None;
            }
        };
        // Moving a process in also needs write access to the `cgroup.procs` of the common
        // ancestor of where it is and where it goes: this process's own cgroup (the kernel's
        // delegation rule; root has it on a writable mount).
        if nix::unistd::access(&own.join("cgroup.procs"), nix::unistd::AccessFlags::W_OK).is_err() {
            let _ = fs::remove_dir(&dir);
            return None;
        }
        Some(BuildCgroup { dir, procs })
    }

    /// Where the cgroup is.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The descriptor a child writes `0` to, to join (see [`join`]).
    pub(crate) fn procs_fd(&self) -> RawFd {
        self.procs.as_raw_fd()
    }

    /// The processes in the cgroup and in any cgroup a build made inside it.
    pub(crate) fn members(&self) -> io::Result<Vec<i32>> {
        let mut pids = Vec::new();
        let mut dirs = vec![self.dir.clone()];
        while let Some(dir) = dirs.pop() {
            let text = match fs::read_to_string(dir.join("cgroup.procs")) {
                Ok(text) => text,
                // A nested cgroup removed meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound && dir != self.dir => continue,
                Err(e) => return Err(e),
            };
            pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            for entry in fs::read_dir(&dir)?.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(entry.path());
                }
            }
        }
        Ok(pids)
    }

    /// SIGKILLs every process in the cgroup (and nested ones) at once, with `cgroup.kill`
    /// (Linux 5.14); `false` when the kernel has no such file, for the caller to signal the
    /// members one by one.
    pub(crate) fn kill(&self) -> io::Result<bool> {
        match OpenOptions::new()
            .write(true)
            .open(self.dir.join("cgroup.kill"))
        {
            Ok(mut file) => file.write_all(b"1").map(|()| true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl Drop for BuildCgroup {
    fn drop(&mut self) {
        // Whatever the sweep did not end (or no sweep ran) must not outlive the build.
        if self.members().is_ok_and(|m| !m.is_empty()) && !self.kill().unwrap_or(false) {
            for pid in self.members().unwrap_or_default() {
                let _ = crate::os::signal_process(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        // Removal fails while killed processes are still exiting: a few short tries.
        for _ in 0..50 {
            if remove_tree(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Whether cgroups may be used: not when `BUILDAGENT_CGROUPS` is `off` (or `0`, `false`, `no`).
fn allowed() -> bool {
    static ALLOWED: OnceLock<bool> = OnceLock::new();
    *ALLOWED.get_or_init(|| {
        !std::env::var("BUILDAGENT_CGROUPS").is_ok_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "off" | "0" | "false" | "no"
            )
        })
    })
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is open as `fd`. For
/// `pre_exec`: one async-signal-safe `write(2)`, no allocation.
pub(crate) fn join(fd: RawFd) -> io::Result<()> {
    // SAFETY: `fd` is open (the cgroup outlives every command spawned with it) and the buffer is
    // static.
    let written = unsafe { nix::libc::write(fd, b"0".as_ptr().cast(), 1) };
    if written == 1 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// This process's cgroup v2 directory: the `0::` line of `/proc/self/cgroup` under the mount
/// point of the cgroup2 file system (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid
/// systems).
fn own_cgroup_dir() -> Option<PathBuf> {
    let cgroups = fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mountinfo.lines().find_map(|line| {
        // `... mount-point options - fstype source super-options`
        let (before, after) = line.split_once(" - ")?;
        if after.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let fields: Vec<&str> = before.split_whitespace().collect();
        let root = fields.get(3)?;
        let point = fields.get(4)?;
        // Only a mount of the hierarchy's root (or of this process's own part of it, as in a
        // container with its own cgroup namespace) maps the path directly.
        (*root == "/").then(|| PathBuf::from(point))
    })?;
    let dir = mount.join(path.trim_start_matches('/'));
    dir.is_dir().then_some(dir)
}

/// Removes `buildagent-<pid>-<n>` cgroups under `parent` whose agent is gone and that are empty.
fn remove_stale(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("buildagent-"))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
        else {
            continue;
        };
        if crate::os::proc_stat(pid).is_none() {
            // Fails harmlessly while the cgroup still has processes.
            let _ = remove_tree(&entry.path());
        }
    }
}

/// Removes a cgroup and the cgroups inside it, deepest first (cgroup directories are removed
/// with rmdir; their files go with them).
fn remove_tree(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)?.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path())?;
        }
    }
    fs::remove_dir(dir)
}
