//! [`HostExecutor`]: runs commands as process groups on this machine.
//!
//! # Processes
//!
//! Each command is `program script_path`, spawned with stdin on `/dev/null`, stdout and stderr on
//! two fresh pipes, exactly [`CommandSpec::env`] as its environment, and in a new process group
//! whose id is the shell's pid. The executor remembers every group it created. `kill_on_drop` and
//! a guard that SIGKILLs the group are only backstops for a `run` future that is dropped early.
//! The setup of the last command without run-as is kept and reused while the next spec is the
//! same, so that an unchanged environment is not rebuilt for every command.
//!
//! # Output, and the processes a command leaves running
//!
//! A command ends when its shell exits, not when its pipes close: `sleep 600 &` keeps the write ends
//! of the pipes open, and waiting for end-of-file would hang the build. So `run` reads both pipes
//! while the shell runs, and once the shell has exited it reads what is already buffered in the
//! pipes (everything the shell and its foreground children wrote, since those writes completed
//! before the exit) without waiting for end-of-file.
//!
//! A pipe that is still open after that belongs to background processes. It is kept (not closed,
//! so those processes never get `SIGPIPE`) and its later output is **attributed to the next
//! command**: every `run` reads the pipes left over by earlier commands along with its own, and
//! forwards their bytes to its sink. Between commands nobody reads them; a background process that
//! writes more than a pipe buffer (64 KiB) in that gap blocks until the next command starts, and
//! loses nothing. After the last command, [`Executor::sweep`] forwards what remains to the sink it
//! is given while it ends those processes, then closes the pipes.
//!
//! This keeps every `Output` between a `CommandStarted` and a `CommandFinished` event, in read
//! order, with no second task writing events behind the engine's back.
//!
//! # Stopping
//!
//! When [`CommandControl::stop`] fires, the whole group gets SIGTERM; output is still read; after
//! the grace period whatever is left of the group (the shell or any member that ignored SIGTERM)
//! gets SIGKILL. [`CommandControl::kill_now`] sends SIGKILL at once.
//!
//! # Leaked processes: the build's cgroup
//!
//! Where the machine lets this process make child cgroups of its own cgroup v2 (root on a host
//! that mounts cgroup2, or a delegated subtree), each executor makes one for its build
//! ([`Containment::Cgroup`]) and every command joins it before it runs (one `write` between fork
//! and exec). [`Executor::sweep`] then takes the build's processes from the cgroup's
//! `cgroup.procs`, daemons included wherever they were reparented, without reading the process
//! table: the cost does not grow with other processes on the host, and two builds in one process
//! never see each other's processes. SIGTERM goes to each, SIGKILL to all at once through
//! `cgroup.kill`. Dropping the executor ends whatever is still in the cgroup and removes it.
//!
//! # Leaked processes without a cgroup, and the subreaper
//!
//! Otherwise ([`Containment::ProcessTable`]) [`Executor::sweep`] finds the processes the build
//! left behind in the process table: every live member of the groups the executor created, every
//! descendant of those, and, when this process is a child subreaper (see
//! [`enable_child_subreaper`]), the daemons among its descendants: processes that left its
//! session (`setsid`, double-forked or not), and their descendants. Those get SIGTERM, up to the
//! grace period, then SIGKILL, and are reaped.
//!
//! Which daemons are the build's depends on how the executor was made:
//! - [`HostExecutor::new`], the only build of the process: every daemon that did not exist when
//!   the executor was made.
//! - [`HostExecutor::for_one_of_many`], one of several builds running at once (a batch, a worker):
//!   a daemon is this build's only if the environment it was started with
//!   (`/proc/<pid>/environ`) has `CODEBUILD_BUILD_ID` set to a value this executor's commands ran
//!   with ([`CommandSpec::env`]; the engine sets it for every command). Daemons inherit it from
//!   the command that started them, whatever they reparent to: the same attribution as Jenkins'
//!   `ProcessTreeKiller` with its cookie variable. A daemon with another build's id is never
//!   touched. One with no id (it was exec'ed with a cleared environment) or whose environment
//!   cannot be read is nobody's: it is left for the program to end once all builds are done (a
//!   [`HostExecutor::new`] made before the builds sweeps it). Two builds given the same
//!   `CODEBUILD_BUILD_ID` (pinned by an override) are one build to this attribution, and a
//!   command that rewrites its `CODEBUILD_BUILD_ID` before starting a daemon hands it to that
//!   build: only a cgroup contains a build against its own commands.
//!
//! Zombies that left the session and were reparented here are reaped by any executor's sweep,
//! whoever's they were (a zombie's environment can no longer be read, and reaping ends nothing).
//!
//! Without the subreaper, a daemon that escapes its group and its parent is reparented to init
//! and cannot be told apart from any other process, so it is not swept.
//!
//! This fallback reads every process's `/proc/<pid>/stat` at each sweep (and the environment of
//! the daemons among this process's descendants): its cost grows with the processes on the host
//! (about 130 reads on a quiet machine). That is acceptable only as the fallback: with a cgroup
//! the sweep reads the build's own `cgroup.procs` and nothing else. `BUILDAGENT_CGROUPS=off` in
//! the agent's environment (read once per process) forces this mode, for machines whose cgroups
//! must not be touched and for tests.
//!
//! The executor never calls `waitpid(-1)`: it reaps only specific zombies that are its own
//! reparented orphans (never a shell that tokio owns), so other parts of the program that spawn
//! children are not disturbed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use nix::sys::signal::Signal;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::process::Command;
use tokio::time::{sleep, sleep_until, Instant};

use super::cgroup::{self, BuildCgroup};
use super::{CommandControl, CommandSpec, ExecError, Executor, OutputSink};
use crate::events::{CancelReason, CommandOutcome, LeakedProcess, Stream};
use crate::os::{self, ProcStat};

/// How much one read takes from a pipe.
const READ_CHUNK: usize = 64 * 1024;
/// How often the group and the process table are polled while waiting for processes to die.
const POLL: Duration = Duration::from_millis(10);
/// How long a stopped command's group may take to die after SIGKILL before `run` gives up waiting.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How long output is still collected after SIGKILL, for pipes to reach end-of-file.
const SETTLE: Duration = Duration::from_millis(250);

/// Makes this process a child subreaper (Linux `PR_SET_CHILD_SUBREAPER`), so that processes a build
/// daemonizes (`setsid`, double fork) are reparented to it instead of to init, and
/// [`HostExecutor`]'s sweep can find and end them.
///
/// This changes process-wide state, so the library never does it on its own: call it once, early,
/// from the program (the CLI does). Reparented children that exit become zombies of this process
/// until the executor reaps them.
pub fn enable_child_subreaper() -> io::Result<()> {
    os::set_child_subreaper()
}

/// Runs commands on this machine; see the [module documentation](self).
#[derive(Debug)]
pub struct HostExecutor {
    shared: Mutex<Shared>,
    me: i32,
    my_session: i32,
    /// Descendants of this process that existed before the executor: never swept.
    baseline: HashSet<(i32, u64)>,
    /// Which daemons (descendants that left this process's session) the sweep ends.
    daemons: Daemons,
    /// The build's own cgroup, when the machine lets this process make one: then the build's
    /// processes are its members, daemons included, and nothing else is scanned.
    cgroup: Option<BuildCgroup>,
}

/// Which daemons a process-table sweep takes as the build's (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Daemons {
    /// All of them but those in the baseline: the only build of the process.
    All,
    /// Those whose environment has one of the build ids its commands ran with.
    Marked,
}

/// The variable whose value in a daemon's environment says which build started it.
const BUILD_MARK: &str = "CODEBUILD_BUILD_ID";

/// How an executor finds the processes a build left running.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Containment {
    /// The build's own cgroup v2 (this directory): its members, daemons included, whatever
    /// else runs on the host, and `cgroup.kill` to end them.
    Cgroup(std::path::PathBuf),
    /// The process table: members of the build's process groups and their descendants, plus
    /// daemons reparented to this process when it is a child subreaper (all new ones for the
    /// only build of the process, those carrying the build's `CODEBUILD_BUILD_ID` for one of
    /// many).
    ProcessTable,
}

#[derive(Debug, Default)]
struct Shared {
    /// Process groups (the ids of the shells that lead them) that may still have members.
    groups: BTreeSet<i32>,
    /// Output pipes kept open by background processes of earlier commands.
    orphans: Vec<Pipe>,
    /// The read buffer of the last `run`, reused by the next one (allocating and zeroing 64 KiB
    /// per command shows in the per-command benchmark).
    spare_buf: Option<Box<[u8]>>,
    /// The last spawn's command setup (program, argument, environment, directory) with the spec
    /// it was built from, reused while specs without a user stay the same: building the
    /// environment anew per command shows in the per-command benchmark too.
    last_command: Option<(CommandSpec, Command)>,
    /// The `CODEBUILD_BUILD_ID` values this executor's commands ran with (kept only for
    /// [`Daemons::Marked`] without a cgroup; one, for a build the engine runs).
    marks: Vec<std::ffi::OsString>,
}

#[derive(Debug)]
struct Pipe {
    fd: AsyncFd<OwnedFd>,
    stream: Stream,
    /// The process group of the command that created it.
    owner: i32,
}

impl Default for HostExecutor {
    fn default() -> Self {
        HostExecutor::new()
    }
}

impl HostExecutor {
    /// An executor with no processes yet, for the only build of this process: its sweep ends
    /// every daemon started after it was made (see the [module documentation](self)).
    pub fn new() -> HostExecutor {
        HostExecutor::make(Daemons::All, BuildCgroup::create())
    }

    /// An executor for one of several builds running at once in this process (a batch, a
    /// worker). With its own cgroup ([`Containment::Cgroup`]) it is the same as
    /// [`HostExecutor::new`]: its sweep ends exactly its build's processes, daemons included.
    /// Without one, its sweep ends what its own commands' process groups left and, under the
    /// child subreaper, the daemons that carry its build's `CODEBUILD_BUILD_ID`; daemons with
    /// no id are left to a plain [`HostExecutor::new`] made before the builds started, swept
    /// once they have all ended.
    pub fn for_one_of_many() -> HostExecutor {
        HostExecutor::make(Daemons::Marked, BuildCgroup::create())
    }

    /// The same executor without a cgroup of its own ([`Containment::ProcessTable`]), whatever
    /// the machine allows: for tests of the fallback, and for programs that must not move their
    /// builds between cgroups. Call it before the first command.
    pub fn without_cgroup(self) -> HostExecutor {
        HostExecutor::make(self.daemons, None)
    }

    fn make(daemons: Daemons, cgroup: Option<BuildCgroup>) -> HostExecutor {
        let me = os::getpid();
        // The process table is read only for the only build without a cgroup: with one, nothing
        // made before the executor is in it; one of many knows its daemons by their build id.
        let scan = cgroup.is_none() && daemons == Daemons::All;
        let baseline = match scan.then(os::scan_processes) {
            Some(Ok(procs)) => descendants(&procs, &[me])
                .into_iter()
                .map(|p| (p.pid, p.start_time))
                .collect(),
            _ => HashSet::new(),
        };
        HostExecutor {
            shared: Mutex::new(Shared::default()),
            me,
            my_session: os::getsid(),
            baseline,
            daemons,
            cgroup,
        }
    }

    /// Remembers the build id `cmd` runs with, for the sweep to know the build's daemons by.
    fn note_mark(&self, cmd: &CommandSpec) {
        if self.cgroup.is_some() || self.daemons != Daemons::Marked {
            return;
        }
        if let Some((_, value)) = cmd.env.iter().find(|(k, _)| k == BUILD_MARK) {
            let mut shared = self.lock();
            if !shared.marks.contains(value) {
                shared.marks.push(value.clone());
            }
        }
    }

    /// How this executor finds what the build leaves running.
    pub fn containment(&self) -> Containment {
        match &self.cgroup {
            Some(cgroup) => Containment::Cgroup(cgroup.dir().to_path_buf()),
            None => Containment::ProcessTable,
        }
    }

    /// Whether executors made now get a cgroup of their own ([`Containment::Cgroup`]). A
    /// program that finds this true need not become a child subreaper
    /// ([`enable_child_subreaper`]): daemons stay in their build's cgroup wherever they are
    /// reparented.
    pub fn cgroups_available() -> bool {
        BuildCgroup::create().is_some()
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock leaves consistent data (sets and a vector): keep going.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A reader with the spare buffer, if there is one.
    fn reader(&self) -> Reader {
        match self.lock().spare_buf.take() {
            Some(buf) => Reader { buf, next: 0 },
            None => Reader::new(),
        }
    }

    /// Takes the orphan pipes out for the duration of a `run` or `sweep`.
    fn lease(&self) -> Lease<'_> {
        let pipes = std::mem::take(&mut self.lock().orphans);
        Lease { exec: self, pipes }
    }

    async fn run_command(
        &self,
        cmd: &CommandSpec,
        control: CommandControl,
        sink: &mut (dyn OutputSink + Send),
    ) -> Result<CommandOutcome, ExecError> {
        if let Some(reason) = control.stop().reason() {
            return Ok(stopped(reason));
        }
        if control.kill_now().is_cancelled() {
            return Ok(stopped(CancelReason::Signal));
        }
        self.note_mark(cmd);
        let switch_user = match &cmd.user {
            Some(user) if user.uid() != os::geteuid() => {
                if os::geteuid() != 0 {
                    return Err(ExecError::RunAsRequiresRoot {
                        user: user.name().to_owned(),
                    });
                }
                Some(os::switch_user_hook(
                    user.uid(),
                    user.gid(),
                    user.groups().to_vec(),
                ))
            }
            _ => None,
        };

        let (out_read, out_write) = os::pipe().map_err(ExecError::Pipe)?;
        let (err_read, err_write) = os::pipe().map_err(ExecError::Pipe)?;
        let out_read = watch(out_read)?;
        let err_read = watch(err_read)?;

        // Only a command without a user switch is kept for reuse (the hook is not cloneable, and
        // it is cheap enough to rebuild for run-as).
        let reusable = switch_user.is_none();
        let last = match reusable {
            true => self
                .lock()
                .last_command
                .take()
                .filter(|(spec, _)| same_setup(spec, cmd)),
            false => None,
        };
        let (spec, mut command) = match last {
            Some((spec, command)) => (Some(spec), command),
            None => (
                reusable.then(|| cmd.clone()),
                new_command(cmd, self.cgroup.as_ref().map(BuildCgroup::procs_fd)),
            ),
        };
        command
            .stdout(Stdio::from(out_write))
            .stderr(Stdio::from(err_write));
        if let Some(hook) = switch_user {
            // SAFETY: the hook only calls setgroups, setgid and setuid (async-signal-safe) on data
            // prepared before the fork; it allocates nothing.
            unsafe {
                command.pre_exec(hook);
            }
        }
        let spawned = command.spawn();
        // The command holds our copies of the pipes' write ends: close them now, or the pipes
        // would never reach end-of-file.
        command.stdout(Stdio::null()).stderr(Stdio::null());
        if let Some(spec) = spec {
            self.lock().last_command = Some((spec, command));
        }
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                return Ok(CommandOutcome::SpawnFailed(format!(
                    "cannot run `{}`: {e}",
                    cmd.program.display()
                )))
            }
        };
        let Some(pid) = child.id() else {
            // Only possible if the child was already reaped, which nothing here does.
            return Err(ExecError::Wait {
                pid: -1,
                source: io::Error::other("the spawned shell has no pid"),
            });
        };
        let pgid = pid as i32;
        self.lock().groups.insert(pgid);
        let mut guard = KillGuard { pgid, armed: true };

        let mut lease = self.lease();
        lease.pipes.insert(
            0,
            Pipe {
                fd: out_read,
                stream: Stream::Stdout,
                owner: pgid,
            },
        );
        lease.pipes.insert(
            1,
            Pipe {
                fd: err_read,
                stream: Stream::Stderr,
                owner: pgid,
            },
        );
        let mut reader = self.reader();

        let mut signalled: Option<CancelReason> = None;
        let mut killed = false;
        let mut deadline = Instant::now();
        let status: ExitStatus = loop {
            tokio::select! {
                res = child.wait() => {
                    break res.map_err(|source| ExecError::Wait { pid: pgid, source })?;
                }
                reason = control.stop().requested(), if signalled.is_none() => {
                    signalled = Some(reason);
                    deadline = Instant::now() + control.grace();
                    if control.kill_now().is_cancelled() || control.grace().is_zero() {
                        signal_group(pgid, Signal::SIGKILL)?;
                        killed = true;
                    } else {
                        signal_group(pgid, Signal::SIGTERM)?;
                    }
                }
                _ = control.kill_now().cancelled(), if !killed => {
                    signalled.get_or_insert(control.stop().reason().unwrap_or(CancelReason::Signal));
                    signal_group(pgid, Signal::SIGKILL)?;
                    killed = true;
                }
                _ = sleep_until(deadline), if signalled.is_some() && !killed => {
                    signal_group(pgid, Signal::SIGKILL)?;
                    killed = true;
                }
                (i, res) = reader.next(&lease.pipes) => {
                    reader.deliver(&mut lease.pipes, i, res, sink);
                }
            }
        };

        // Everything the shell wrote is in the pipes now: take it without waiting for EOF.
        reader.drain_available(&mut lease.pipes, sink);

        if signalled.is_some() {
            if !killed {
                // The shell is gone; other members of its group may still be handling SIGTERM.
                while self.group_alive(pgid) {
                    if control.kill_now().is_cancelled() || Instant::now() >= deadline {
                        signal_group(pgid, Signal::SIGKILL)?;
                        break;
                    }
                    tokio::select! {
                        _ = sleep(POLL) => {}
                        _ = control.kill_now().cancelled() => {}
                        (i, res) = reader.next(&lease.pipes) => {
                            reader.deliver(&mut lease.pipes, i, res, sink);
                        }
                    }
                }
            }
            // SIGKILL is delivered asynchronously: wait until the group is really gone (bounded),
            // so that a stopped command never outlives `run`, forwarding its last words meanwhile.
            let give_up = Instant::now() + KILL_WAIT;
            while self.group_alive(pgid) && Instant::now() < give_up {
                reader
                    .pump(&mut lease.pipes, sink, Instant::now() + POLL, |_| false)
                    .await;
            }
            // Let the pipes of the killed group reach end-of-file so nothing it wrote is lost.
            let settle = Instant::now() + SETTLE;
            reader
                .pump(&mut lease.pipes, sink, settle, |pipes| {
                    pipes.iter().all(|p| p.owner != pgid)
                })
                .await;
        }
        guard.armed = false;
        drop(lease);
        self.lock().spare_buf = Some(reader.buf);
        self.housekeeping();

        Ok(match signalled {
            Some(reason) => stopped(reason),
            None => outcome_of(status),
        })
    }

    async fn sweep_all(
        &self,
        grace: Duration,
        sink: &mut (dyn OutputSink + Send),
    ) -> Result<Vec<LeakedProcess>, ExecError> {
        let mut lease = self.lease();
        let mut reader = Reader::new();
        let mut leaked: Vec<LeakedProcess> = Vec::new();
        let mut seen: HashSet<(i32, u64)> = HashSet::new();
        let mut record = |procs: &[ProcStat], leaked: &mut Vec<LeakedProcess>| {
            for p in procs {
                if seen.insert((p.pid, p.start_time)) {
                    leaked.push(LeakedProcess {
                        pid: p.pid,
                        command_line: os::command_line(p.pid),
                    });
                }
            }
        };

        let alive = self.find_leaked()?;
        record(&alive, &mut leaked);
        if !alive.is_empty() {
            self.signal_all(&alive, Signal::SIGTERM)?;
            let deadline = Instant::now() + grace;
            loop {
                let alive = self.find_leaked()?;
                record(&alive, &mut leaked);
                if alive.is_empty() || Instant::now() >= deadline {
                    break;
                }
                reader
                    .pump(&mut lease.pipes, sink, Instant::now() + POLL, |_| false)
                    .await;
            }
            // SIGKILL whatever is left, including anything forked in the meantime, until the
            // table is clean (bounded: a fork bomb outside our reach must not hang the agent).
            for _ in 0..100 {
                let alive = self.find_leaked()?;
                record(&alive, &mut leaked);
                if alive.is_empty() {
                    break;
                }
                self.signal_all(&alive, Signal::SIGKILL)?;
                reader
                    .pump(&mut lease.pipes, sink, Instant::now() + POLL, |_| false)
                    .await;
            }
        }
        self.housekeeping();
        if self.cgroup.is_some() && os::is_child_subreaper() {
            // Daemons that exited after they were reparented here left the cgroup as zombies
            // of this process: one pass over the table, only when it adopts orphans at all.
            self.reap_adopted_zombies();
        }
        reader.drain_available(&mut lease.pipes, sink);
        let settle = Instant::now() + SETTLE;
        reader
            .pump(&mut lease.pipes, sink, settle, |pipes| pipes.is_empty())
            .await;
        // Whatever still holds these pipes is not ours to wait for.
        lease.pipes.clear();
        Ok(leaked)
    }

    fn signal_all(&self, procs: &[ProcStat], signal: Signal) -> Result<(), ExecError> {
        if let (Some(cgroup), Signal::SIGKILL) = (&self.cgroup, signal) {
            // Everything in the cgroup at once, including what forks meanwhile.
            if cgroup.kill().unwrap_or(false) {
                return Ok(());
            }
        }
        let groups: Vec<i32> = self.lock().groups.iter().copied().collect();
        for g in groups {
            signal_group(g, signal)?;
        }
        for p in procs {
            // Processes outside our groups (daemons) are signalled one by one.
            os::signal_process(p.pid, signal).map_err(|source| ExecError::Signal {
                pgid: p.pgrp,
                source,
            })?;
        }
        Ok(())
    }

    /// The live (non-zombie) processes the build left behind; reaps the zombies among them that
    /// are this process's reparented orphans.
    fn find_leaked(&self) -> Result<Vec<ProcStat>, ExecError> {
        if let Some(cgroup) = &self.cgroup {
            let members = cgroup.members().map_err(ExecError::ProcessTable)?;
            // Exited processes leave the cgroup; a zombie left is at most an orphan of ours.
            let groups = self.lock().groups.clone();
            let mut alive = Vec::new();
            for p in members.into_iter().filter_map(os::proc_stat) {
                if p.is_zombie() {
                    self.reap_orphan(&p, &groups);
                } else if p.pid != self.me {
                    alive.push(p);
                }
            }
            return Ok(alive);
        }
        let procs = os::scan_processes().map_err(ExecError::ProcessTable)?;
        let groups = self.lock().groups.clone();
        let mut roots: Vec<i32> = procs
            .iter()
            .filter(|p| groups.contains(&p.pgrp) && p.pid != self.me)
            .map(|p| p.pid)
            .collect();
        let marks: Vec<Vec<u8>> = match self.daemons {
            Daemons::All => Vec::new(),
            Daemons::Marked => self
                .lock()
                .marks
                .iter()
                .map(|m| m.as_encoded_bytes().to_vec())
                .collect(),
        };
        for p in descendants(&procs, &[self.me]) {
            if p.session == self.my_session {
                continue;
            }
            let ours = match self.daemons {
                Daemons::All => !self.baseline.contains(&(p.pid, p.start_time)),
                // A zombie's environment is gone: reap it if it was reparented here, whoever's.
                Daemons::Marked if p.is_zombie() => {
                    if p.ppid == self.me {
                        os::reap(p.pid);
                    }
                    false
                }
                Daemons::Marked => {
                    !marks.is_empty()
                        && os::environ_value(p.pid, BUILD_MARK.as_bytes())
                            .is_some_and(|v| marks.contains(&v))
                }
            };
            if ours {
                roots.push(p.pid);
            }
        }
        let by_pid: HashMap<i32, &ProcStat> = procs.iter().map(|p| (p.pid, p)).collect();
        let mut selected: Vec<ProcStat> = roots
            .iter()
            .filter_map(|pid| by_pid.get(pid).map(|p| (*p).clone()))
            .collect();
        selected.extend(descendants(&procs, &roots));
        let mut unique = HashSet::new();
        selected.retain(|p| p.pid != self.me && unique.insert(p.pid));

        let mut alive = Vec::new();
        for p in selected {
            if p.is_zombie() {
                self.reap_orphan(&p, &groups);
            } else {
                alive.push(p);
            }
        }
        Ok(alive)
    }

    /// Reaps `p` if it is a zombie child of this process that tokio does not own (a shell we
    /// spawned is the leader of its group; anything else in our groups, or a daemon, was
    /// reparented to us).
    fn reap_orphan(&self, p: &ProcStat, groups: &BTreeSet<i32>) {
        let is_our_shell = p.pid == p.pgrp && groups.contains(&p.pgrp);
        if p.ppid == self.me && !is_our_shell {
            os::reap(p.pid);
        }
    }

    /// Reaps the zombies among this process's children that left its session: daemons that were
    /// reparented here (nothing this program spawns leaves the session, so no one else waits
    /// for them).
    fn reap_adopted_zombies(&self) {
        if let Ok(procs) = os::scan_processes() {
            for p in procs
                .iter()
                .filter(|p| p.is_zombie() && p.ppid == self.me && p.session != self.my_session)
            {
                os::reap(p.pid);
            }
        }
    }

    /// Whether group `pgid` has a member that is not a zombie (reaping our zombie orphans in it).
    fn group_alive(&self, pgid: i32) -> bool {
        if !os::group_exists(pgid) {
            return false;
        }
        let Ok(procs) = os::scan_processes() else {
            return true;
        };
        let groups = self.lock().groups.clone();
        let mut alive = false;
        for p in procs.iter().filter(|p| p.pgrp == pgid) {
            if p.is_zombie() {
                self.reap_orphan(p, &groups);
            } else {
                alive = true;
            }
        }
        alive
    }

    /// Forgets groups that are empty, after reaping the zombie orphans that keep them alive.
    fn housekeeping(&self) {
        // Usually the group of the command that just ended is gone: one probe, under the lock
        // (so no group added meanwhile is dropped unprobed), and done.
        let groups = {
            let mut shared = self.lock();
            shared.groups.retain(|g| os::group_exists(*g));
            if shared.groups.is_empty() {
                return;
            }
            shared.groups.clone()
        };
        if let Ok(procs) = os::scan_processes() {
            for p in procs
                .iter()
                .filter(|p| p.is_zombie() && groups.contains(&p.pgrp))
            {
                self.reap_orphan(p, &groups);
            }
        }
        // Groups added since the snapshot are kept; the snapshot's are probed again.
        self.lock()
            .groups
            .retain(|g| !groups.contains(g) || os::group_exists(*g));
    }
}

impl Executor for HostExecutor {
    fn run<'a>(
        &'a self,
        cmd: &'a CommandSpec,
        control: CommandControl,
        sink: &'a mut (dyn OutputSink + Send),
    ) -> BoxFuture<'a, Result<CommandOutcome, ExecError>> {
        Box::pin(self.run_command(cmd, control, sink))
    }

    fn sweep<'a>(
        &'a self,
        grace: Duration,
        sink: &'a mut (dyn OutputSink + Send),
    ) -> BoxFuture<'a, Result<Vec<LeakedProcess>, ExecError>> {
        Box::pin(self.sweep_all(grace, sink))
    }
}

fn stopped(reason: CancelReason) -> CommandOutcome {
    match reason {
        CancelReason::Timeout => CommandOutcome::TimedOut,
        CancelReason::Signal => CommandOutcome::Stopped,
    }
}

fn outcome_of(status: ExitStatus) -> CommandOutcome {
    match (status.code(), status.signal()) {
        (Some(0), _) => CommandOutcome::Success,
        (Some(code), _) => CommandOutcome::Exited(code),
        (None, Some(sig)) => CommandOutcome::Signaled(sig),
        (None, None) => CommandOutcome::Exited(-1),
    }
}

/// The command setup for `cmd` (its stdout and stderr are set per spawn); with `cgroup`, the
/// `cgroup.procs` descriptor of the build's cgroup, which the command joins before it runs.
fn new_command(cmd: &CommandSpec, cgroup: Option<std::os::fd::RawFd>) -> Command {
    let mut command = Command::new(&cmd.program);
    command
        .arg(&cmd.script_path)
        .env_clear()
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&cmd.cwd)
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: the hook makes only async-signal-safe calls and allocates nothing.
    unsafe {
        command.pre_exec(crate::os::reset_signals);
    }
    if let Some(fd) = cgroup {
        // SAFETY: one write(2) on a descriptor the executor keeps open while commands run.
        unsafe {
            command.pre_exec(move || cgroup::join(fd));
        }
    }
    command
}

/// Whether a command built for `a` runs `b` the same way (neither switches users).
fn same_setup(a: &CommandSpec, b: &CommandSpec) -> bool {
    a.user.is_none()
        && b.user.is_none()
        && a.program == b.program
        && a.script_path == b.script_path
        && a.cwd == b.cwd
        && (std::sync::Arc::ptr_eq(&a.env, &b.env) || a.env == b.env)
}

/// Registers a pipe's read end with the reactor.
fn watch(fd: OwnedFd) -> Result<AsyncFd<OwnedFd>, ExecError> {
    // SAFETY: the `OwnedFd` is a valid, open descriptor that the `AsyncFd` owns from now on; it is
    // never closed or replaced while registered.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
        .map_err(|e| ExecError::Pipe(e.into_parts().1))
}

fn signal_group(pgid: i32, signal: Signal) -> Result<bool, ExecError> {
    os::signal_group(pgid, signal).map_err(|source| ExecError::Signal { pgid, source })
}

/// Every process below `roots` in the parent tree (the roots themselves excluded).
fn descendants(procs: &[ProcStat], roots: &[i32]) -> Vec<ProcStat> {
    let mut children: HashMap<i32, Vec<&ProcStat>> = HashMap::new();
    for p in procs {
        children.entry(p.ppid).or_default().push(p);
    }
    let mut out = Vec::new();
    let mut seen: HashSet<i32> = roots.iter().copied().collect();
    let mut stack: Vec<i32> = roots.to_vec();
    while let Some(pid) = stack.pop() {
        for child in children.get(&pid).into_iter().flatten() {
            if seen.insert(child.pid) {
                out.push((*child).clone());
                stack.push(child.pid);
            }
        }
    }
    out
}

/// Puts the pipes back among the executor's orphans, also when a `run` future is dropped.
struct Lease<'a> {
    exec: &'a HostExecutor,
    pipes: Vec<Pipe>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let pipes = std::mem::take(&mut self.pipes);
        self.exec.lock().orphans.extend(pipes);
    }
}

/// SIGKILLs a command's group if its `run` future is dropped before the command ended.
struct KillGuard {
    pgid: i32,
    armed: bool,
}

impl Drop for KillGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = os::signal_group(self.pgid, Signal::SIGKILL);
        }
    }
}

/// Reads from a set of non-blocking pipes into one buffer.
struct Reader {
    buf: Box<[u8]>,
    /// Where the next poll starts, so that one busy pipe cannot starve the others.
    next: usize,
}

impl Reader {
    fn new() -> Reader {
        Reader {
            buf: vec![0; READ_CHUNK].into_boxed_slice(),
            next: 0,
        }
    }

    /// Waits until one pipe has data or is closed, and reads once from it: `(index, bytes read)`.
    /// Never completes when there are no pipes. Cancel-safe: a read only happens inside a poll
    /// that then returns it.
    fn next<'p>(
        &'p mut self,
        pipes: &'p [Pipe],
    ) -> impl std::future::Future<Output = (usize, io::Result<usize>)> + 'p {
        std::future::poll_fn(move |cx| self.poll_next(pipes, cx))
    }

    fn poll_next(
        &mut self,
        pipes: &[Pipe],
        cx: &mut Context<'_>,
    ) -> Poll<(usize, io::Result<usize>)> {
        let n = pipes.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            loop {
                match pipes[i].fd.poll_read_ready(cx) {
                    Poll::Pending => break,
                    Poll::Ready(Err(e)) => return Poll::Ready((i, Err(e))),
                    Poll::Ready(Ok(mut guard)) => {
                        let buf = &mut self.buf;
                        match guard.try_io(|fd| os::read(fd.get_ref().as_fd(), buf)) {
                            Ok(res) => {
                                self.next = i + 1;
                                return Poll::Ready((i, res));
                            }
                            // Spurious readiness: cleared by try_io; poll again to register.
                            Err(_would_block) => continue,
                        }
                    }
                }
            }
        }
        Poll::Pending
    }

    /// Hands a read to the sink, or drops the pipe at end-of-file or on error.
    fn deliver(
        &self,
        pipes: &mut Vec<Pipe>,
        i: usize,
        res: io::Result<usize>,
        sink: &mut (dyn OutputSink + Send),
    ) {
        match res {
            Ok(0) => {
                pipes.remove(i);
            }
            Ok(n) => sink.output(pipes[i].stream, &self.buf[..n]),
            Err(e) => {
                tracing::warn!(error = %e, "reading command output failed; closing the pipe");
                pipes.remove(i);
            }
        }
    }

    /// Reads whatever is buffered in every pipe right now, without waiting, and drops the pipes
    /// that reached end-of-file. Reads at most the pipe's capacity from each, so a background
    /// process that writes without pause cannot keep it here forever.
    fn drain_available(&mut self, pipes: &mut Vec<Pipe>, sink: &mut (dyn OutputSink + Send)) {
        let mut i = 0;
        while i < pipes.len() {
            let fd = pipes[i].fd.get_ref().as_fd();
            let mut budget = os::pipe_capacity(fd);
            let mut open = true;
            while budget > 0 {
                match os::read(fd, &mut self.buf) {
                    Ok(0) => {
                        open = false;
                        break;
                    }
                    Ok(n) => {
                        sink.output(pipes[i].stream, &self.buf[..n]);
                        budget = budget.saturating_sub(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading command output failed; closing the pipe");
                        open = false;
                        break;
                    }
                }
            }
            if open {
                i += 1;
            } else {
                pipes.remove(i);
            }
        }
    }

    /// Forwards output until `deadline`, or until `done(pipes)` holds.
    async fn pump(
        &mut self,
        pipes: &mut Vec<Pipe>,
        sink: &mut (dyn OutputSink + Send),
        deadline: Instant,
        done: impl Fn(&[Pipe]) -> bool,
    ) {
        while !done(pipes) {
            tokio::select! {
                _ = sleep_until(deadline) => return,
                (i, res) = self.next(pipes) => self.deliver(pipes, i, res, sink),
            }
        }
    }
}
