//! Runs commands inside one container of a build image, through the Docker Engine API's exec
//! calls ([`bollard`]), with the same script model as on the host.
//!
//! The container is created once per build ([`ContainerExecutor::start`]) from the image with its
//! entrypoint replaced by a keeper loop (CodeBuild ignores an image's `ENTRYPOINT` too), on the
//! host network (the engine may have no bridge), and with the build's directories bind-mounted *at
//! their own paths*: the source, secondary sources and the command-state directory. The engine's
//! paths are therefore the same inside the container and on the host, so artifacts, reports and
//! caches are collected from the host as usual. Each command is one exec of `shell script` with
//! the build's environment, working directory and `run-as` user.
//!
//! Stopping a command ends its process tree (found through the host's `/proc` from the exec's
//! host pid: SIGTERM, the grace period, SIGKILL); the sweep ends every other process of the
//! container. [`ContainerExecutor::remove`] removes the container, whatever happened; the agent
//! calls it on every exit path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, DownloadFromContainerOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder, TagImageOptionsBuilder,
    TopOptionsBuilder,
};
use bollard::Docker;
use futures::future::BoxFuture;
use futures::StreamExt;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{
    CommandControl, CommandSpec, ExecError, Executor, HashFilesHelper, OutputSink, RunAs,
    RunAsError,
};
use crate::docker::EngineError;
use crate::events::{CancelReason, CommandOutcome, LeakedProcess, Stream};

/// How the build container is made.
#[derive(Clone, Debug, Default)]
pub struct ContainerOptions {
    /// The build image.
    pub image: String,
    /// Host directories mounted at the same path inside the container (the source, secondary
    /// sources).
    pub mounts: Vec<PathBuf>,
    /// A privileged container with the engine's socket mounted, so that `docker build` works in
    /// the buildspec (`-d`).
    pub privileged: bool,
    /// The executable that implements `codebuild-hash-files` (the agent's own): mounted
    /// read-only into the container at [`HELPER_DIR`] under each of
    /// [`crate::hash_files::HELPER_NAMES`] (`codebuild-hash-files`...) and tried once at
    /// start; `None`: no helper.
    pub helper_bin: Option<PathBuf>,
    /// This machine's AWS configuration directory (`~/.aws`), mounted read-only at
    /// [`AWS_CONFIG_MOUNT`], as CodeBuild's local agent does with `-c`; `None`: not mounted.
    pub aws_config_dir: Option<PathBuf>,
}

/// Where `-c` mounts this machine's `~/.aws` in the build container (the local agent's path:
/// the AWS tools of a build running as root find it there).
pub const AWS_CONFIG_MOUNT: &str = "/root/.aws";

/// Where the container has `codebuild-hash-files` (a directory of the container only; it goes in
/// front of the commands' `PATH` when the helper runs there).
pub const HELPER_DIR: &str = "/buildagent/bin";

/// What [`ContainerExecutor::start`] reports while it works.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartProgress {
    /// The image is not in the engine: it is being pulled.
    Pulling(String),
    /// A pull progress line (`<layer>: Downloading 12.3MB/40MB`).
    PullStatus(String),
    /// The container was created.
    Created {
        /// Its id.
        id: String,
    },
}

/// The largest file [`Executor::read_file`] reads from the container (a `runtimes.yml` is a few KiB).
const MAX_READ: usize = 4 << 20;

/// The command that keeps the container alive between execs (the image's entrypoint is ignored).
const KEEPER: &str = "while :; do sleep 3600; done";

/// An executor running every command in one container (see the module docs).
pub struct ContainerExecutor {
    docker: Docker,
    id: String,
    /// The host pid of the container's first process (the keeper).
    keeper: Option<i32>,
    state: tempfile::TempDir,
    image_env: Vec<(String, String)>,
    helper: HashFilesHelper,
}

impl ContainerExecutor {
    /// Pulls `options.image` if the engine does not have it (credentials from the Docker
    /// configuration, or an ECR token: [`crate::credentials::lookup`]), then creates and
    /// starts the build container.
    pub async fn start(
        docker: Docker,
        options: &ContainerOptions,
        progress: &mut (dyn FnMut(StartProgress) + Send),
    ) -> Result<ContainerExecutor, EngineError> {
        let image = &options.image;
        let inspect = match docker.inspect_image(image).await {
            Ok(inspect) => inspect,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                progress(StartProgress::Pulling(image.clone()));
                pull(&docker, image, progress).await?;
                docker.inspect_image(image).await.map_err(|e| {
                    EngineError(format!("cannot inspect the build image {image}: {e}"))
                })?
            }
            Err(e) => {
                return Err(EngineError(format!(
                    "cannot inspect the build image {image}: {e}"
                )))
            }
        };
        let image_env = inspect
            .config
            .and_then(|c| c.env)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        // Not under /dev/shm: the container has a /dev/shm of its own.
        let state = tempfile::Builder::new()
            .prefix("buildagent-state-")
            .tempdir()
            .map_err(|e| EngineError(format!("cannot create the command-state directory: {e}")))?;
        let mut binds: Vec<String> = options
            .mounts
            .iter()
            .chain(std::iter::once(&state.path().to_path_buf()))
            .map(|p| format!("{0}:{0}", p.display()))
            .collect();
        if options.privileged {
            binds.push("/var/run/docker.sock:/var/run/docker.sock".to_string());
        }
        if let Some(exe) = &options.helper_bin {
            // The file itself, not a link to it: the host's path means nothing in the container.
            for name in crate::hash_files::HELPER_NAMES {
                binds.push(format!("{}:{HELPER_DIR}/{name}:ro", exe.display()));
            }
        }
        if let Some(dir) = &options.aws_config_dir {
            binds.push(format!("{}:{AWS_CONFIG_MOUNT}:ro", dir.display()));
        }
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            entrypoint: Some(vec!["/bin/sh".into(), "-c".into(), KEEPER.into()]),
            cmd: Some(Vec::new()),
            labels: Some(HashMap::from([(
                "buildagent.build".to_string(),
                "true".to_string(),
            )])),
            host_config: Some(HostConfig {
                binds: Some(binds),
                network_mode: Some("host".into()),
                privileged: Some(options.privileged),
                ..Default::default()
            }),
            ..Default::default()
        };
        let name = format!("buildagent-{}", uuid_like());
        let created = docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                body,
            )
            .await
            .map_err(|e| EngineError(format!("cannot create the build container: {e}")))?;
        let executor = ContainerExecutor {
            docker,
            id: created.id.clone(),
            keeper: None,
            state,
            image_env,
            helper: HashFilesHelper::Host,
        };
        if let Err(e) = executor.docker.start_container(&created.id, None).await {
            executor.remove().await;
            let hint = if options.privileged {
                " (-d asks for a privileged container: the engine must be able to grant every \
                 capability, which an engine that itself runs with fewer, in a container or a \
                 restricted sandbox, cannot)"
            } else {
                ""
            };
            return Err(EngineError(format!(
                "cannot start the build container from {image}: {e}{hint}"
            )));
        }
        let keeper = executor
            .docker
            .inspect_container(&created.id, None)
            .await
            .ok()
            .and_then(|c| c.state)
            .and_then(|s| s.pid)
            .and_then(|p| i32::try_from(p).ok())
            .filter(|p| *p > 0);
        progress(StartProgress::Created {
            id: created.id.clone(),
        });
        let helper = match &options.helper_bin {
            Some(exe) => executor.try_helper(exe, image).await,
            None => HashFilesHelper::Host,
        };
        Ok(ContainerExecutor {
            keeper,
            helper,
            ..executor
        })
    }

    /// Runs the mounted `codebuild-hash-files` once without arguments (its usage, exit status
    /// 2): an agent linked against the host's C library does not start in an image without a
    /// compatible one (busybox, Alpine), and the build should say so rather than fail on it later.
    async fn try_helper(&self, exe: &Path, image: &str) -> HashFilesHelper {
        let helper = format!("{HELPER_DIR}/{}", crate::hash_files::HELPER_NAME);
        match self.capture(vec![helper], None).await {
            Ok((2, _)) => HashFilesHelper::Directory(PathBuf::from(HELPER_DIR)),
            Ok((code, out)) => HashFilesHelper::Unavailable(format!(
                "the agent's executable ({}) does not run in the image {image} (exit status \
                 {code}{}); it needs the dynamic loader and C library it was linked against \
                 (glibc); use an image that has them, or a statically linked agent \
                 (x86_64-unknown-linux-musl)",
                exe.display(),
                match out.trim() {
                    "" => String::new(),
                    text => format!(": {text}"),
                }
            )),
            Err(e) => HashFilesHelper::Unavailable(format!(
                "cannot try the agent's executable in the build container: {e}"
            )),
        }
    }

    /// The container's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The image's own environment (`Config.Env`), the base of the build's environment.
    pub fn image_env(&self) -> &[(String, String)] {
        &self.image_env
    }

    /// Removes the container (and whatever still runs in it). Safe to call more than once.
    pub async fn remove(&self) {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        let _ = self.docker.remove_container(&self.id, Some(options)).await;
    }

    /// The host pids of an exec's process and everything it started (empty once it has ended).
    async fn exec_tree(&self, exec_id: &str) -> Vec<i32> {
        let pid = self
            .docker
            .inspect_exec(exec_id)
            .await
            .ok()
            .and_then(|i| i.pid)
            .and_then(|p| i32::try_from(p).ok())
            .filter(|p| *p > 0);
        match pid {
            Some(pid) => {
                let mut tree = descendants(pid);
                tree.push(pid);
                tree
            }
            None => Vec::new(),
        }
    }

    /// Runs `cmd` (as `user`) in the container and returns its exit code and standard output.
    async fn capture(&self, cmd: Vec<String>, user: Option<&str>) -> Result<(i64, String), String> {
        let exec = self
            .docker
            .create_exec(
                &self.id,
                CreateExecOptions {
                    cmd: Some(cmd),
                    user: user.map(str::to_string),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        let mut stdout = Vec::new();
        if let StartExecResults::Attached { mut output, .. } = self
            .docker
            .start_exec(&exec.id, None)
            .await
            .map_err(|e| e.to_string())?
        {
            while let Some(item) = output.next().await {
                if let bollard::container::LogOutput::StdOut { message } =
                    item.map_err(|e| e.to_string())?
                {
                    stdout.extend_from_slice(&message);
                }
            }
        }
        let code = self
            .docker
            .inspect_exec(&exec.id)
            .await
            .map_err(|e| e.to_string())?
            .exit_code
            .unwrap_or(-1);
        Ok((code, String::from_utf8_lossy(&stdout).into_owned()))
    }
}

/// A short random name part for the container (the build id is not known here).
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}-{}", nanos, std::process::id())
}

/// Pulls `image`, with its registry's credentials ([`crate::credentials::lookup`]: the Docker
/// configuration, an ECR token). An ECR name mapped by `BUILDAGENT_ECR_ENDPOINTS` is pulled from
/// the address it maps to (with the ECR name's token), tagged as the ECR name, and the address's
/// tag removed: the engine only pulls the names it is given.
async fn pull(
    docker: &Docker,
    image: &str,
    progress: &mut (dyn FnMut(StartProgress) + Send),
) -> Result<(), EngineError> {
    let host = crate::credentials::registry_host(image);
    let routed = crate::ecr::Endpoints::from_env()
        .map_err(|e| EngineError(e.to_string()))?
        .route(image);
    let source = routed.as_deref().unwrap_or(image);
    if routed.is_some() && image.contains('@') {
        return Err(EngineError(format!(
            "cannot pull the build image {image} through {}: a digest reference cannot be              tagged as the ECR name; use a tag",
            crate::ecr::ENDPOINTS_VARIABLE
        )));
    }
    let credentials = crate::credentials::lookup(host)
        .await
        .map_err(|e| EngineError(format!("cannot pull {image}: {e}")))?
        .map(|(c, _)| bollard::auth::DockerCredentials {
            username: Some(c.username),
            password: Some(c.password),
            identitytoken: c.identity_token,
            serveraddress: Some(crate::credentials::registry_host(source).to_string()),
            ..Default::default()
        });
    let (name, tag) = split_tag(source);
    let options = CreateImageOptionsBuilder::default()
        .from_image(name)
        .tag(tag)
        .build();
    // The engine retries a layer download itself; a pull it gives up on (a manifest request
    // answered 5xx, a connection reset, a registry not answering) is tried again here, as the
    // daemonless client retries its requests. A refusal that will not change (no such image,
    // credentials refused) is not.
    let mut attempt = 1;
    loop {
        let stream = docker.create_image(Some(options.clone()), None, credentials.clone());
        match pull_stream(stream, image, progress).await {
            Err(e) if attempt < PULL_ATTEMPTS && is_transient(&e.0) => {
                let wait = PULL_BACKOFF * 2u32.pow(attempt - 1);
                attempt += 1;
                progress(StartProgress::PullStatus(format!(
                    "{e}; trying again in {} s (attempt {attempt} of {PULL_ATTEMPTS})",
                    wait.as_secs()
                )));
                tokio::time::sleep(wait).await;
            }
            result => break result?,
        }
    }
    if let Some(routed) = routed {
        let (repo, tag) = split_tag(image);
        let options = TagImageOptionsBuilder::new().repo(repo).tag(tag).build();
        docker
            .tag_image(&routed, Some(options))
            .await
            .map_err(|e| EngineError(format!("cannot tag {routed} as {image}: {e}")))?;
        let options = RemoveImageOptionsBuilder::new().noprune(true).build();
        let _ = docker.remove_image(&routed, Some(options), None).await;
    }
    Ok(())
}

/// How many times a pull the engine gave up on is tried in all.
const PULL_ATTEMPTS: u32 = 4;
/// The wait before the second try, doubled for each further one.
const PULL_BACKOFF: Duration = Duration::from_secs(1);

/// Whether a failed pull may succeed if tried again: anything but a refusal that names the image
/// or the credentials.
fn is_transient(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    ![
        "not found",
        "manifest unknown",
        "does not exist",
        "unauthorized",
        "denied",
        "authentication required",
        "no basic auth credentials",
        "invalid reference",
    ]
    .iter()
    .any(|refusal| message.contains(refusal))
}

/// Follows one pull's progress stream to its end, passing its lines on.
async fn pull_stream(
    mut stream: impl futures::Stream<Item = Result<bollard::models::CreateImageInfo, bollard::errors::Error>>
        + Unpin,
    image: &str,
    progress: &mut (dyn FnMut(StartProgress) + Send),
) -> Result<(), EngineError> {
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| EngineError(format!("cannot pull {image}: {e}")))?;
        if let Some(error) = info.error_detail.and_then(|d| d.message) {
            return Err(EngineError(format!("cannot pull {image}: {error}")));
        }
        let detail = info
            .progress_detail
            .and_then(|d| match (d.current, d.total) {
                (Some(current), Some(total)) if total > 0 => Some(format!("{current}/{total}")),
                _ => None,
            });
        let line = [info.id, info.status, detail]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        if !line.is_empty() {
            progress(StartProgress::PullStatus(line));
        }
    }
    Ok(())
}

/// `name[:tag]` or `name@digest` split for the pull API (default tag `latest`).
fn split_tag(image: &str) -> (&str, &str) {
    if let Some((name, digest)) = image.split_once('@') {
        return (name, digest);
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) => (&image[..image.len() - tag.len() - 1], tag),
        None => (image, "latest"),
    }
}

/// The descendants of `pid` (not `pid` itself), from the host's process table.
fn descendants(pid: i32) -> Vec<i32> {
    let mut parents: HashMap<i32, Vec<i32>> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            if let Some(ppid) = parent_of(child) {
                parents.entry(ppid).or_default().push(child);
            }
        }
    }
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(p) = queue.pop() {
        for &c in parents.get(&p).map(Vec::as_slice).unwrap_or_default() {
            found.push(c);
            queue.push(c);
        }
    }
    found
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(1)?.parse().ok()
}

fn signal_all(pids: &[i32], signal: Signal) {
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

fn alive(pid: i32) -> bool {
    // A zombie has no /proc/<pid>/cmdline content; treat it as gone.
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

/// Ends `pids`: SIGTERM, up to `grace` for them to exit, SIGKILL.
async fn end(pids: Vec<i32>, grace: Duration) {
    if pids.is_empty() {
        return;
    }
    signal_all(&pids, Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline && pids.iter().any(|&p| alive(p)) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal_all(&pids, Signal::SIGKILL);
}

impl Executor for ContainerExecutor {
    fn run<'a>(
        &'a self,
        cmd: &'a CommandSpec,
        control: CommandControl,
        sink: &'a mut (dyn OutputSink + Send),
    ) -> BoxFuture<'a, Result<CommandOutcome, ExecError>> {
        Box::pin(async move {
            let reason_outcome = |reason: CancelReason| match reason {
                CancelReason::Timeout => CommandOutcome::TimedOut,
                CancelReason::Signal => CommandOutcome::Stopped,
            };
            if let Some(reason) = control.stop().reason() {
                return Ok(reason_outcome(reason));
            }
            let env = cmd
                .env
                .iter()
                .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
                .collect();
            let exec = self
                .docker
                .create_exec(
                    &self.id,
                    CreateExecOptions {
                        cmd: Some(vec![
                            cmd.program.display().to_string(),
                            cmd.script_path.display().to_string(),
                        ]),
                        env: Some(env),
                        working_dir: Some(cmd.cwd.display().to_string()),
                        user: cmd.user.as_ref().map(|u| u.name().to_string()),
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        ..Default::default()
                    },
                )
                .await;
            let exec = match exec {
                Ok(exec) => exec,
                Err(e) => return Ok(CommandOutcome::SpawnFailed(e.to_string())),
            };
            let mut output = match self.docker.start_exec(&exec.id, None).await {
                Ok(StartExecResults::Attached { output, .. }) => output,
                Ok(StartExecResults::Detached) => {
                    return Ok(CommandOutcome::SpawnFailed(
                        "the exec started detached".into(),
                    ))
                }
                Err(e) => return Ok(CommandOutcome::SpawnFailed(e.to_string())),
            };
            let mut stopped: Option<CancelReason> = None;
            let mut killer: Option<tokio::task::JoinHandle<()>> = None;
            let mut killed = false;
            loop {
                tokio::select! {
                    item = output.next() => match item {
                        Some(Ok(bollard::container::LogOutput::StdOut { message })) => {
                            sink.output(Stream::Stdout, &message)
                        }
                        Some(Ok(bollard::container::LogOutput::StdErr { message })) => {
                            sink.output(Stream::Stderr, &message)
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => break,
                    },
                    reason = control.stop().requested(), if stopped.is_none() => {
                        stopped = Some(reason);
                        let tree = self.exec_tree(&exec.id).await;
                        killer = Some(tokio::spawn(end(tree, control.grace())));
                    }
                    () = control.kill_now().cancelled(), if stopped.is_some() && !killed => {
                        killed = true;
                        signal_all(&self.exec_tree(&exec.id).await, Signal::SIGKILL);
                    }
                }
            }
            if let Some(killer) = killer {
                killer.abort();
            }
            if let Some(reason) = stopped {
                return Ok(reason_outcome(reason));
            }
            let code = self
                .docker
                .inspect_exec(&exec.id)
                .await
                .ok()
                .and_then(|i| i.exit_code)
                .unwrap_or(-1);
            Ok(match code {
                0 => CommandOutcome::Success,
                c => CommandOutcome::Exited(i32::try_from(c).unwrap_or(-1)),
            })
        })
    }

    fn sweep<'a>(
        &'a self,
        grace: Duration,
        _sink: &'a mut (dyn OutputSink + Send),
    ) -> BoxFuture<'a, Result<Vec<LeakedProcess>, ExecError>> {
        Box::pin(async move {
            let options = TopOptionsBuilder::default()
                .ps_args("-o pid,ppid,args")
                .build();
            let Ok(top) = self.docker.top_processes(&self.id, Some(options)).await else {
                return Ok(Vec::new());
            };
            let keeper = self.keeper;
            let mut leaked = Vec::new();
            for row in top.processes.unwrap_or_default() {
                let (Some(pid), Some(ppid)) = (
                    row.first().and_then(|p| p.trim().parse::<i32>().ok()),
                    row.get(1).and_then(|p| p.trim().parse::<i32>().ok()),
                ) else {
                    continue;
                };
                let args = row.get(2..).map(|a| a.join(" ")).unwrap_or_default();
                // The keeper and its `sleep` are the container's own.
                if Some(pid) == keeper || (Some(ppid) == keeper && args.starts_with("sleep")) {
                    continue;
                }
                leaked.push(LeakedProcess {
                    pid,
                    command_line: args,
                });
            }
            end(leaked.iter().map(|p| p.pid).collect(), grace).await;
            Ok(leaked)
        })
    }

    fn hash_files_helper(&self) -> HashFilesHelper {
        self.helper.clone()
    }

    fn state_parent(&self) -> Option<PathBuf> {
        Some(self.state.path().to_path_buf())
    }

    fn read_file<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, std::io::Result<Option<Vec<u8>>>> {
        Box::pin(async move {
            // The engine's archive call: no tool (`cat`) needed in the image.
            let options = DownloadFromContainerOptionsBuilder::default()
                .path(&path.display().to_string())
                .build();
            let mut stream = self.docker.download_from_container(&self.id, Some(options));
            let mut archive = Vec::new();
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(bytes) => archive.extend_from_slice(&bytes),
                    Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 404,
                        ..
                    }) => return Ok(None),
                    Err(e) => {
                        return Err(std::io::Error::other(format!(
                            "cannot read {} in the build container: {e}",
                            path.display()
                        )))
                    }
                }
                if archive.len() > MAX_READ {
                    return Err(std::io::Error::other(format!(
                        "{} in the build container is larger than {} MiB",
                        path.display(),
                        MAX_READ >> 20
                    )));
                }
            }
            let mut tar = tar::Archive::new(archive.as_slice());
            let mut entries = tar.entries()?;
            match entries.next() {
                Some(entry) => {
                    let mut entry = entry?;
                    if entry.header().entry_type() != tar::EntryType::Regular {
                        return Err(std::io::Error::other(format!(
                            "{} in the build container is not a regular file",
                            path.display()
                        )));
                    }
                    let mut bytes = Vec::new();
                    std::io::Read::read_to_end(&mut entry, &mut bytes)?;
                    Ok(Some(bytes))
                }
                None => Ok(None),
            }
        })
    }

    fn resolve_user<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<RunAs, RunAsError>> {
        Box::pin(async move {
            // The image's user database, not the host's: `id` and the passwd entry in the
            // container.
            let script = "id -u \"$1\" && id -g \"$1\" && id -G \"$1\" && \
                          (getent passwd \"$1\" 2>/dev/null || grep \"^$1:\" /etc/passwd)";
            let cmd = ["/bin/sh", "-c", script, "sh", name]
                .map(String::from)
                .to_vec();
            match self.capture(cmd, Some("0")).await {
                Ok((0, out)) => {
                    let lines: Vec<&str> = out.lines().collect();
                    let number = |i: usize| lines.get(i).and_then(|l| l.trim().parse::<u32>().ok());
                    let (Some(uid), Some(gid)) = (number(0), number(1)) else {
                        return Err(RunAsError::UnknownUser { name: name.into() });
                    };
                    let groups = lines
                        .get(2)
                        .map(|l| {
                            l.split_whitespace()
                                .filter_map(|g| g.parse().ok())
                                .collect()
                        })
                        .unwrap_or_default();
                    let home = lines
                        .get(3)
                        .and_then(|l| l.split(':').nth(5))
                        .map(Path::new)
                        .unwrap_or(Path::new("/"));
                    Ok(RunAs::from_ids(name, uid, gid, groups, home))
                }
                Ok(_) => Err(RunAsError::UnknownUser { name: name.into() }),
                Err(e) => Err(RunAsError::Lookup {
                    name: name.into(),
                    source: std::io::Error::other(e),
                }),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_split_for_the_pull_api() {
        assert_eq!(split_tag("ubuntu"), ("ubuntu", "latest"));
        assert_eq!(split_tag("ubuntu:22.04"), ("ubuntu", "22.04"));
        assert_eq!(
            split_tag("127.0.0.1:5000/x/y"),
            ("127.0.0.1:5000/x/y", "latest")
        );
        assert_eq!(
            split_tag("127.0.0.1:5000/x/y:1"),
            ("127.0.0.1:5000/x/y", "1")
        );
        assert_eq!(split_tag("x@sha256:ab"), ("x", "sha256:ab"));
    }

    #[test]
    fn parents_are_read_from_proc() {
        let me = std::process::id() as i32;
        let parent = nix::unistd::getppid().as_raw();
        assert_eq!(parent_of(me), Some(parent));
        assert!(descendants(parent).contains(&me));
    }
}
