//! The executor seam: how a command's script becomes a running process and a stream of bytes.
//!
//! An [`Executor`] knows how to start one command (a shell running a generated script, see
//! [`command`](crate::command)) somewhere, stream its output to an [`OutputSink`], stop it on
//! request, and at the end of the build find and end the processes the build left behind. It knows
//! nothing about phases, masking or events: the engine does that with what `run` returns.
//!
//! [`HostExecutor`] runs commands on this machine; [`ContainerExecutor`] runs the same scripts in a
//! container of a build image through the Docker Engine API's exec calls (the build's directories
//! bind-mounted at their own paths).

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::events::{CancelReason, CommandOutcome, LeakedProcess, Stream};

mod cgroup;
#[cfg(feature = "docker")]
pub mod container;
pub mod host;

#[cfg(feature = "docker")]
pub use container::{ContainerExecutor, ContainerOptions};
pub use host::{enable_child_subreaper, Containment, HostExecutor};

/// What to run: `program script_path`, with exactly `env` as its environment, from `cwd`, as `user`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandSpec {
    /// The shell (`/bin/sh`, `bash`, ...). A name without a `/` is searched in the `PATH` of
    /// [`env`](Self::env); prefer an absolute path.
    pub program: PathBuf,
    /// The script the shell runs (its only argument).
    pub script_path: PathBuf,
    /// The whole environment of the process, byte for byte: nothing else is inherited. (Shared:
    /// a state directory hands out the same one while it does not change.)
    pub env: Arc<[(OsString, OsString)]>,
    /// The directory the process starts in.
    pub cwd: PathBuf,
    /// The user to run as; `None` runs as the agent's user.
    pub user: Option<RunAs>,
}

/// A user to run commands as (buildspec `run-as`), resolved from the user database.
///
/// Running as another user needs the agent to be root; see [`ExecError::RunAsRequiresRoot`].
/// The environment is not changed: set `HOME`, `USER` and `LOGNAME` from this value when building
/// [`CommandSpec::env`] if the build should see them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    home: PathBuf,
}

impl RunAs {
    /// Looks `name` up in the user database (with its primary and supplementary groups).
    pub fn resolve(name: &str) -> Result<RunAs, RunAsError> {
        let lookup = |source| RunAsError::Lookup {
            name: name.to_owned(),
            source,
        };
        let (uid, gid, home) = crate::os::lookup_user(name)
            .map_err(lookup)?
            .ok_or_else(|| RunAsError::UnknownUser {
                name: name.to_owned(),
            })?;
        let groups = crate::os::group_list(name, gid).map_err(|source| RunAsError::Groups {
            name: name.to_owned(),
            source,
        })?;
        Ok(RunAs {
            name: name.to_owned(),
            uid,
            gid,
            groups,
            home,
        })
    }

    /// A user given by its ids (for executors or tests that do not use this machine's database).
    pub fn from_ids(
        name: impl Into<String>,
        uid: u32,
        gid: u32,
        groups: Vec<u32>,
        home: impl Into<PathBuf>,
    ) -> RunAs {
        RunAs {
            name: name.into(),
            uid,
            gid,
            groups,
            home: home.into(),
        }
    }

    /// The user name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The user id.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The primary group id.
    pub fn gid(&self) -> u32 {
        self.gid
    }

    /// Every group the process gets (the primary one included).
    pub fn groups(&self) -> &[u32] {
        &self.groups
    }

    /// The home directory.
    pub fn home(&self) -> &Path {
        &self.home
    }
}

/// Why a `run-as` user could not be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunAsError {
    /// No such user.
    #[error("unknown run-as user `{name}`")]
    UnknownUser {
        /// The name that was looked up.
        name: String,
    },
    /// The user database could not be read.
    #[error("cannot look up run-as user `{name}`")]
    Lookup {
        /// The name that was looked up.
        name: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The user's groups could not be listed.
    #[error("cannot list the groups of run-as user `{name}`")]
    Groups {
        /// The user.
        name: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Why an executor could not do its job (as opposed to a command failing, which is a
/// [`CommandOutcome`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// A command must run as another user but the agent is not root.
    #[error("run-as requires the agent to run as root")]
    RunAsRequiresRoot {
        /// The user the command should have run as.
        user: String,
    },
    /// The output pipes could not be created or watched.
    #[error("cannot set up the command's output pipes")]
    Pipe(#[source] io::Error),
    /// Waiting for the command's shell failed.
    #[error("cannot wait for the command's shell (pid {pid})")]
    Wait {
        /// The shell's pid.
        pid: i32,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A process group could not be signalled.
    #[error("cannot signal process group {pgid}")]
    Signal {
        /// The process group.
        pgid: i32,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The process table could not be read.
    #[error("cannot read the process table")]
    ProcessTable(#[source] io::Error),
}

/// Receives a command's output, chunk by chunk, in the order it was read.
///
/// The engine masks secrets and turns chunks into events; a chunk may end in the middle of a line
/// or of a UTF-8 character.
pub trait OutputSink {
    /// One chunk read from `stream`.
    fn output(&mut self, stream: Stream, bytes: &[u8]);
}

impl<F: FnMut(Stream, &[u8])> OutputSink for F {
    fn output(&mut self, stream: Stream, bytes: &[u8]) {
        self(stream, bytes)
    }
}

/// An [`OutputSink`] that keeps everything in memory (tests, small captures).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CapturedOutput {
    /// Everything written to stdout.
    pub stdout: Vec<u8>,
    /// Everything written to stderr.
    pub stderr: Vec<u8>,
    /// Every chunk with its stream, in arrival order.
    pub chunks: Vec<(Stream, Vec<u8>)>,
}

impl CapturedOutput {
    /// stdout as text (lossy).
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stderr as text (lossy).
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

impl OutputSink for CapturedOutput {
    fn output(&mut self, stream: Stream, bytes: &[u8]) {
        match stream {
            Stream::Stdout => self.stdout.extend_from_slice(bytes),
            Stream::Stderr => self.stderr.extend_from_slice(bytes),
        }
        self.chunks.push((stream, bytes.to_vec()));
    }
}

/// A request to stop the build, with its reason; cheap to clone and shared by every command.
///
/// The first reason wins: a timeout that fires while a stop is already under way does not turn a
/// `Stopped` command into a `TimedOut` one.
#[derive(Clone, Default)]
pub struct StopRequest {
    token: CancellationToken,
    reason: Arc<OnceLock<CancelReason>>,
}

impl StopRequest {
    /// A request that has not been made yet.
    pub fn new() -> StopRequest {
        StopRequest::default()
    }

    /// Requests the stop. Returns `false` if it had already been requested (the reason stays the
    /// first one).
    pub fn request(&self, reason: CancelReason) -> bool {
        let first = self.reason.set(reason).is_ok();
        self.token.cancel();
        first
    }

    /// The reason, once requested.
    pub fn reason(&self) -> Option<CancelReason> {
        if self.token.is_cancelled() {
            self.reason.get().copied()
        } else {
            None
        }
    }

    /// Whether the stop has been requested.
    pub fn is_requested(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes when the stop is requested, with its reason.
    pub async fn requested(&self) -> CancelReason {
        self.token.cancelled().await;
        self.reason.get().copied().unwrap_or(CancelReason::Signal)
    }

    /// Runs `work` to its end. A stop requested meanwhile calls `give_up` once (which should make
    /// `work` end soon, say by cancelling a token it watches) and the wait goes on: `work` is
    /// never dropped half-way, so it can still clean up after itself (abort an upload, remove a
    /// staging file). Returns `work`'s output and the stop's reason, if one came.
    pub async fn finish<F: std::future::Future>(
        &self,
        work: F,
        give_up: impl FnOnce(),
    ) -> (F::Output, Option<CancelReason>) {
        tokio::pin!(work);
        let mut give_up = Some(give_up);
        let mut stopped = None;
        loop {
            tokio::select! {
                output = &mut work => return (output, stopped),
                reason = self.requested(), if stopped.is_none() => {
                    if let Some(give_up) = give_up.take() {
                        give_up();
                    }
                    stopped = Some(reason);
                }
            }
        }
    }
}

impl fmt::Debug for StopRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StopRequest")
            .field("reason", &self.reason())
            .finish()
    }
}

/// How a running command may be ended: a graceful stop (SIGTERM to its process group, then SIGKILL
/// after `grace`) and an immediate kill (the second Ctrl-C).
#[derive(Clone, Debug)]
pub struct CommandControl {
    stop: StopRequest,
    kill_now: CancellationToken,
    grace: Duration,
}

impl CommandControl {
    /// The default grace period between SIGTERM and SIGKILL (10 seconds).
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

    /// A control driven by `stop` and `kill_now`, with `grace` between SIGTERM and SIGKILL.
    ///
    /// Cancelling `kill_now` sends SIGKILL at once; it also counts as a stop request (reason
    /// [`CancelReason::Signal`]) when none was made.
    pub fn new(stop: StopRequest, kill_now: CancellationToken, grace: Duration) -> CommandControl {
        CommandControl {
            stop,
            kill_now,
            grace,
        }
    }

    /// A control that is never triggered (grace: [`DEFAULT_GRACE`](Self::DEFAULT_GRACE)).
    pub fn none() -> CommandControl {
        CommandControl::new(
            StopRequest::new(),
            CancellationToken::new(),
            Self::DEFAULT_GRACE,
        )
    }

    /// The stop request.
    pub fn stop(&self) -> &StopRequest {
        &self.stop
    }

    /// The "kill now" token.
    pub fn kill_now(&self) -> &CancellationToken {
        &self.kill_now
    }

    /// The grace period between SIGTERM and SIGKILL.
    pub fn grace(&self) -> Duration {
        self.grace
    }
}

impl Default for CommandControl {
    fn default() -> Self {
        CommandControl::none()
    }
}

/// Where the build's commands find `codebuild-hash-files` (see [`Executor::hash_files_helper`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HashFilesHelper {
    /// On this machine: the engine links the helper into a temporary directory of its own.
    Host,
    /// Already in this directory, as the commands see it (put in front of their `PATH`).
    Directory(PathBuf),
    /// Not available where the commands run, and why (the engine warns).
    Unavailable(String),
}

/// Runs commands somewhere. Object-safe: the engine holds a `Box<dyn Executor>` or `Arc<dyn Executor>`.
///
/// Calls to [`run`](Executor::run) are sequential (one command at a time); [`sweep`](Executor::sweep)
/// is called after the last command (also after a stop or timeout, which ends only the running
/// command's process group). Use one executor per build, within one tokio runtime.
pub trait Executor: Send + Sync {
    /// Runs one command to completion and returns how it ended.
    ///
    /// Output is passed to `sink` as it is read, until the command's shell exits; bytes the shell
    /// wrote before exiting are never lost. The command is stopped when `control` says so (its
    /// whole process group: SIGTERM, grace period, SIGKILL), and the outcome is then
    /// [`CommandOutcome::TimedOut`] or [`CommandOutcome::Stopped`] after the request's reason. A
    /// shell that cannot be started is [`CommandOutcome::SpawnFailed`], not an error. If the stop
    /// was requested before the call, nothing is started.
    fn run<'a>(
        &'a self,
        cmd: &'a CommandSpec,
        control: CommandControl,
        sink: &'a mut (dyn OutputSink + Send),
    ) -> BoxFuture<'a, Result<CommandOutcome, ExecError>>;

    /// Ends every process the build's commands left running: SIGTERM, up to `grace` to exit,
    /// SIGKILL. Output those processes still write is passed to `sink`. Returns what was running.
    fn sweep<'a>(
        &'a self,
        grace: Duration,
        sink: &'a mut (dyn OutputSink + Send),
    ) -> BoxFuture<'a, Result<Vec<LeakedProcess>, ExecError>>;

    /// Where the build's command-state directory is created: a directory the commands see at the
    /// same path. `None` (the default): the engine's choice on this machine.
    fn state_parent(&self) -> Option<PathBuf> {
        None
    }

    /// Where the commands find `codebuild-hash-files`. Default: [`HashFilesHelper::Host`].
    fn hash_files_helper(&self) -> HashFilesHelper {
        HashFilesHelper::Host
    }

    /// Reads a file as the commands see it (the build image's `runtimes.yml`): its bytes, or
    /// `None` when there is no such file. Default: this machine's file at that path.
    fn read_file<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, io::Result<Option<Vec<u8>>>> {
        Box::pin(async move {
            match tokio::fs::read(path).await {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    /// Resolves a `run-as` user where the commands run (default: this machine's user database).
    fn resolve_user<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<RunAs, RunAsError>> {
        Box::pin(std::future::ready(RunAs::resolve(name)))
    }
}
