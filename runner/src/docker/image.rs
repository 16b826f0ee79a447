//! Building and pushing images through the Docker Engine API: [`build`] streams a
//! [`BuildContext`] to `/build` (the engine's classic builder) and reports what the engine says
//! as [`BuildProgress`]; [`push`] pushes an image the engine has, with credentials, reporting
//! [`PushProgress`]. Neither prints; callers render the progress.
//!
//! ```no_run
//! use buildagent_runner::docker::{connect, context::BuildContext, image};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let docker = connect().await?;
//! let context = BuildContext::scan("app".as_ref(), None)?;
//! let mut options = image::BuildOptions::default(); // network mode `host`
//! options.tags.push("127.0.0.1:5000/app:1".to_string());
//! let built = image::build(&docker, context, &options, |p| println!("{p:?}")).await?;
//! let pushed = image::push(&docker, &built.tags[0], None, |p| println!("{p:?}")).await?;
//! println!("{} {:?}", built.id, pushed.digest);
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{self, Write};
use std::time::Duration;

use bollard::auth::DockerCredentials;
use bollard::errors::Error as EngineError;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, PushImageOptionsBuilder, RemoveImageOptionsBuilder,
    TagImageOptionsBuilder,
};
use bollard::Docker;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::context::{BuildContext, ContextError};
use crate::credentials::{registry_host, Credentials};

/// How long a build or push may take before the client gives up waiting for the engine's
/// answer (bollard's own default is two minutes, too short for a large context).
const LONG_REQUEST: Duration = Duration::from_secs(24 * 60 * 60);

/// The size of the pieces the context archive is sent in.
const CHUNK: usize = 256 * 1024;

/// What to build, besides the context.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BuildOptions {
    /// The references to tag the image as (default none: the image is known by its id).
    pub tags: Vec<String>,
    /// `ARG` values (default none).
    pub build_args: Vec<(String, String)>,
    /// Labels on the image (default none).
    pub labels: Vec<(String, String)>,
    /// The stage of a multi-stage Dockerfile to stop at (default: the last).
    pub target: Option<String>,
    /// The platform to build for, `os[/arch[/variant]]` (default: the engine's).
    pub platform: Option<String>,
    /// The network of the `RUN` containers (default `host`: engines without a bridge network,
    /// and builds that reach services on the host, work).
    pub network_mode: String,
    /// Build every step afresh instead of reusing the engine's cached layers (default false).
    pub no_cache: bool,
    /// Credentials for the registries `FROM` images are pulled from, by registry host (see
    /// [`base_images`]; default none).
    pub registry_credentials: Vec<(String, Credentials)>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            tags: Vec::new(),
            build_args: Vec::new(),
            labels: Vec::new(),
            target: None,
            platform: None,
            network_mode: "host".to_string(),
            no_cache: false,
            registry_credentials: Vec::new(),
        }
    }
}

/// A step of the Dockerfile, as the engine announces it (`Step 2/5 : RUN make`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// 1-based.
    pub number: u32,
    /// How many steps the build has.
    pub total: u32,
    /// The instruction, as the engine shows it (`RUN make`).
    pub instruction: String,
}

impl Step {
    /// Reads the engine's `Step N/M : INSTRUCTION` line.
    pub fn parse(line: &str) -> Option<Step> {
        let rest = line.strip_prefix("Step ")?;
        let (counts, instruction) = rest.split_once(" : ")?;
        let (number, total) = counts.split_once('/')?;
        Some(Step {
            number: number.parse().ok()?,
            total: total.parse().ok()?,
            instruction: instruction.to_string(),
        })
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "step {}/{} `{}`",
            self.number, self.total, self.instruction
        )
    }
}

/// What a build is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildProgress {
    /// The context is being sent: how many files, and their size in bytes.
    SendingContext {
        /// Files (not directories or links).
        files: usize,
        /// Their total size.
        bytes: u64,
    },
    /// The engine started a step.
    Step(Step),
    /// A line the engine wrote, without its newline: a step's result (` ---> 5a1b...`), the
    /// output of a `RUN` command, `Successfully built ...`.
    Output(String),
    /// A progress message, as while a base image is pulled (`id` is then the layer).
    Status {
        /// What the message is about, when the engine says.
        id: Option<String>,
        /// The message (`Downloading`, `Pull complete`).
        status: String,
        /// Bytes done, when the message counts them.
        current: Option<u64>,
        /// Bytes in all, when known.
        total: Option<u64>,
    },
    /// The image is built.
    Built {
        /// Its id (`sha256:...`).
        id: String,
    },
    /// The image got one of the tags after the first (the engine reports the first itself, as
    /// `Successfully tagged ...` output).
    Tagged {
        /// The reference.
        reference: String,
    },
}

/// A built image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// Its id (`sha256:...`).
    pub id: String,
    /// The references it is tagged as.
    pub tags: Vec<String>,
}

/// Why a build did not produce an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The context cannot be sent (before anything reached the engine).
    #[error(transparent)]
    Context(#[from] ContextError),
    /// A file of the context could not be read while the archive was sent.
    #[error("cannot send the build context: {0}")]
    ContextRead(#[source] io::Error),
    /// A tag is not an image reference that can be tagged.
    #[error("`{reference}` is not a reference to tag an image as: {reason}")]
    BadReference {
        /// The reference.
        reference: String,
        /// Why.
        reason: String,
    },
    /// The engine refused the request before building: a Dockerfile that does not parse, an
    /// unknown `--target`, an invalid tag.
    #[error("the engine refused the build: {message}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The engine's message.
        message: String,
    },
    /// A step failed: a `RUN` command exited non-zero, a `COPY` source is missing, a base
    /// image cannot be pulled.
    #[error("{}", step_message(.step.as_ref(), .message))]
    StepFailed {
        /// The step that was running, when the engine had announced one.
        step: Option<Step>,
        /// The engine's message.
        message: String,
        /// The command's exit status, for a `RUN` that exited non-zero.
        exit_code: Option<i32>,
    },
    /// The engine could not be talked to, or failed otherwise.
    #[error("the Docker engine failed: {0}")]
    Engine(#[source] EngineError),
}

fn step_message(step: Option<&Step>, message: &str) -> String {
    match step {
        Some(step) => format!("{step} failed: {message}"),
        None => format!("the build failed: {message}"),
    }
}

/// The image references a Dockerfile's `FROM` lines pull (not `scratch`, not earlier stages,
/// not references with `$` variables), each once, for [`BuildOptions::registry_credentials`].
pub fn base_images(dockerfile: &str) -> Vec<String> {
    let mut stages = HashSet::new();
    let mut images = Vec::new();
    for line in dockerfile.lines() {
        let mut words = line.split_whitespace();
        if !words.next().is_some_and(|w| w.eq_ignore_ascii_case("FROM")) {
            continue;
        }
        let mut words = words.skip_while(|w| w.starts_with("--"));
        let Some(image) = words.next() else { continue };
        if let (Some(as_word), Some(name)) = (words.next(), words.next()) {
            if as_word.eq_ignore_ascii_case("AS") {
                stages.insert(name.to_ascii_lowercase());
            }
        }
        let lower = image.to_ascii_lowercase();
        if lower == "scratch" || image.contains('$') || stages.contains(&lower) {
            continue;
        }
        if !images.iter().any(|i| i == image) {
            images.push(image.to_string());
        }
    }
    images
}

/// Builds the image: sends `context` as a tar stream (on a blocking thread, as it is read),
/// reports the engine's messages to `progress` line by line, then adds the tags after the
/// first. `RUN` containers use [`BuildOptions::network_mode`]; intermediate containers are
/// removed, also when a step fails.
pub async fn build(
    docker: &Docker,
    context: BuildContext,
    options: &BuildOptions,
    mut progress: impl FnMut(BuildProgress),
) -> Result<BuiltImage, BuildError> {
    let mut references = Vec::new();
    for tag in &options.tags {
        let (repo, name) = split_reference(tag).map_err(|reason| BuildError::BadReference {
            reference: tag.clone(),
            reason,
        })?;
        references.push((repo, name));
    }
    let mut query = BuildImageOptionsBuilder::new()
        .dockerfile(context.dockerfile_name())
        .rm(true)
        .forcerm(true)
        .nocache(options.no_cache)
        .networkmode(&options.network_mode);
    if let Some(first) = options.tags.first() {
        query = query.t(first);
    }
    if !options.build_args.is_empty() {
        let args: HashMap<&str, &str> = options
            .build_args
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        query = query.buildargs(&args);
    }
    if !options.labels.is_empty() {
        let labels: HashMap<&str, &str> = options
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        query = query.labels(&labels);
    }
    if let Some(target) = &options.target {
        query = query.target(target);
    }
    if let Some(platform) = &options.platform {
        query = query.platform(platform);
    }
    let credentials: HashMap<String, DockerCredentials> = options
        .registry_credentials
        .iter()
        .map(|(host, c)| (server_address(host), docker_credentials(c, host)))
        .collect();
    let credentials = (!credentials.is_empty()).then_some(credentials);

    let (files, bytes) = context.size();
    progress(BuildProgress::SendingContext { files, bytes });
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(8);
    let writer = tokio::task::spawn_blocking(move || send_tar(&context, tx));
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });

    let docker = docker.clone().with_timeout(LONG_REQUEST);
    let mut stream = docker.build_image(
        query.build(),
        credentials,
        Some(bollard::body_try_stream(body)),
    );
    let mut lines = Lines::default();
    let mut step = None;
    let mut id = None;
    let mut failure = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(text) = info.stream {
                    for l in lines.push(&text) {
                        progress(line_event(l, &mut step));
                    }
                }
                if let Some(status) = info.status {
                    let detail = info.progress_detail.unwrap_or_default();
                    progress(BuildProgress::Status {
                        id: info.id,
                        status,
                        current: detail.current.and_then(|n| u64::try_from(n).ok()),
                        total: detail.total.and_then(|n| u64::try_from(n).ok()),
                    });
                }
                if let Some(built) = info.aux.and_then(|aux| aux.id) {
                    id = Some(built);
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if let Some(rest) = lines.finish() {
        progress(line_event(rest, &mut step));
    }
    drop(stream);
    // A file that could not be read explains whatever the engine said about the archive.
    match writer.await {
        Ok(Err(e)) if e.kind() != io::ErrorKind::BrokenPipe => {
            return Err(BuildError::ContextRead(e))
        }
        _ => {}
    }
    if let Some(e) = failure {
        return Err(match e {
            EngineError::DockerResponseServerError {
                status_code,
                message,
            } if (400..500).contains(&status_code) => BuildError::Rejected {
                status: status_code,
                message,
            },
            EngineError::DockerStreamError { error } => BuildError::StepFailed {
                exit_code: exit_code(&error),
                step,
                message: error,
            },
            other => BuildError::Engine(other),
        });
    }
    let id = match id {
        Some(id) => id,
        None => match options.tags.first() {
            Some(tag) => docker
                .inspect_image(tag)
                .await
                .map_err(BuildError::Engine)?
                .id
                .unwrap_or_default(),
            None => String::new(),
        },
    };
    progress(BuildProgress::Built { id: id.clone() });
    for (tag, (repo, name)) in options.tags.iter().zip(&references).skip(1) {
        let tag_options = TagImageOptionsBuilder::new().repo(repo).tag(name).build();
        docker
            .tag_image(&id, Some(tag_options))
            .await
            .map_err(|e| match e {
                EngineError::DockerResponseServerError {
                    status_code,
                    message,
                } if (400..500).contains(&status_code) => BuildError::Rejected {
                    status: status_code,
                    message,
                },
                other => BuildError::Engine(other),
            })?;
        progress(BuildProgress::Tagged {
            reference: tag.clone(),
        });
    }
    Ok(BuiltImage {
        id,
        tags: options.tags.clone(),
    })
}

/// A line of the engine's output: a step when it announces one (which becomes the current step).
fn line_event(text: String, step: &mut Option<Step>) -> BuildProgress {
    match Step::parse(&text) {
        Some(s) => {
            *step = Some(s.clone());
            BuildProgress::Step(s)
        }
        None => BuildProgress::Output(text),
    }
}

/// Writes the archive into the channel; the error is the archive's (a file that cannot be
/// read), or `BrokenPipe` when the engine stopped reading.
fn send_tar(context: &BuildContext, tx: mpsc::Sender<io::Result<Bytes>>) -> io::Result<()> {
    let writer = ChannelWriter {
        tx: tx.clone(),
        buf: Vec::with_capacity(CHUNK),
    };
    match context.write_tar(writer) {
        Ok(mut writer) => writer.send(),
        Err(e) => {
            // The body fails too, so the engine does not take a cut archive for a whole one.
            let _ = tx.blocking_send(Err(io::Error::new(e.kind(), e.to_string())));
            Err(e)
        }
    }
}

/// A writer that sends what it is given, in pieces of [`CHUNK`] bytes, into the request body.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx.blocking_send(Ok(Bytes::from(chunk))).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the engine stopped reading the build context",
            )
        })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Splits the engine's `stream` texts into lines (they arrive in pieces: `Step 1/2 : FROM x`
/// and its newline are two messages).
#[derive(Default)]
struct Lines {
    partial: String,
}

impl Lines {
    fn push(&mut self, text: &str) -> Vec<String> {
        self.partial.push_str(text);
        let mut out = Vec::new();
        while let Some(end) = self.partial.find('\n') {
            let mut line: String = self.partial.drain(..=end).collect();
            line.pop();
            if line.ends_with('\r') {
                line.pop();
            }
            out.push(line);
        }
        out
    }

    fn finish(&mut self) -> Option<String> {
        (!self.partial.is_empty()).then(|| std::mem::take(&mut self.partial))
    }
}

/// The exit status in the classic builder's `The command '...' returned a non-zero code: N`.
fn exit_code(message: &str) -> Option<i32> {
    message
        .rsplit_once("returned a non-zero code: ")
        .and_then(|(_, code)| code.trim().parse().ok())
}

/// Splits `name[:tag]` into the repository and the tag (default `latest`). A digest
/// (`name@sha256:...`) cannot be tagged or pushed by name, and is refused.
pub fn split_reference(reference: &str) -> Result<(String, String), String> {
    if reference.is_empty() {
        return Err("it is empty".to_string());
    }
    if reference.chars().any(char::is_whitespace) {
        return Err("it contains white space".to_string());
    }
    if reference.contains('@') {
        return Err("a digest reference names content, not a tag".to_string());
    }
    let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[last_slash..].rfind(':') {
        Some(i) => {
            let colon = last_slash + i;
            let (repo, tag) = (&reference[..colon], &reference[colon + 1..]);
            if repo.is_empty() || tag.is_empty() {
                return Err("the name or the tag is empty".to_string());
            }
            Ok((repo.to_string(), tag.to_string()))
        }
        None => Ok((reference.to_string(), "latest".to_string())),
    }
}

/// The server name the engine files a registry's credentials under.
fn server_address(host: &str) -> String {
    if host == "docker.io" {
        "https://index.docker.io/v1/".to_string()
    } else {
        host.to_string()
    }
}

/// The engine's form of credentials for `host`.
fn docker_credentials(c: &Credentials, host: &str) -> DockerCredentials {
    match &c.identity_token {
        Some(token) => DockerCredentials {
            identitytoken: Some(token.clone()),
            serveraddress: Some(server_address(host)),
            ..Default::default()
        },
        None => DockerCredentials {
            username: Some(c.username.clone()),
            password: Some(c.password.clone()),
            serveraddress: Some(server_address(host)),
            ..Default::default()
        },
    }
}

/// What a push is doing. The engine's messages do not say which layer a message is about in
/// a form its API documents (bollard drops the field), so layers are counted, not named.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PushProgress {
    /// The push of `reference` starts; the image has `layers` distinct layers.
    Started {
        /// `repository:tag`.
        reference: String,
        /// How many layers the registry must have.
        layers: usize,
    },
    /// A layer is uploading: bytes sent of that layer, and its size.
    Uploading {
        /// Bytes sent.
        current: u64,
        /// The layer's size (the engine's count; it may end above it).
        total: u64,
    },
    /// One more layer is in the registry.
    Layer {
        /// How it got there.
        outcome: LayerOutcome,
        /// How many layers are done, this one included.
        done: usize,
        /// How many there are ([`PushProgress::Started`]'s `layers`).
        total: usize,
    },
    /// Any other message of the engine.
    Status(String),
    /// The manifest is in the registry.
    Pushed {
        /// The tag.
        tag: String,
        /// The manifest's digest (`sha256:...`).
        digest: String,
        /// The manifest's size in bytes.
        size: u64,
    },
}

/// How a layer got into the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayerOutcome {
    /// Uploaded.
    Pushed,
    /// The registry had it.
    AlreadyExists,
    /// Mounted from another repository of the registry.
    Mounted {
        /// The repository.
        from: String,
    },
}

/// A pushed image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedImage {
    /// `repository:tag`.
    pub reference: String,
    /// The manifest's digest, when the engine reported it.
    pub digest: Option<String>,
}

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The reference cannot be pushed by name.
    #[error("`{reference}` cannot be pushed: {reason}")]
    BadReference {
        /// The reference.
        reference: String,
        /// Why.
        reason: String,
    },
    /// The engine has no image of that name.
    #[error("the Docker engine has no image `{reference}`")]
    NotFound {
        /// The reference.
        reference: String,
    },
    /// The registry refused the credentials, or wants some and got none.
    #[error("registry {registry} refused the push: {message}")]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// The registry's message, through the engine.
        message: String,
    },
    /// The registry could not be reached, or failed otherwise.
    #[error("pushing to registry {registry} failed: {message}")]
    Registry {
        /// The registry host.
        registry: String,
        /// The message, through the engine.
        message: String,
    },
    /// The engine could not be talked to, or failed otherwise.
    #[error("the Docker engine failed: {0}")]
    Engine(#[source] EngineError),
}

impl PushError {
    /// Whether the registry turned the credentials (or their absence) down.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, PushError::Unauthorized { .. })
    }
}

/// Pushes `reference` (`name[:tag]`, tag `latest` by default), which the engine must have,
/// with `credentials` for its registry (`None`: anonymous).
pub async fn push(
    docker: &Docker,
    reference: &str,
    credentials: Option<&Credentials>,
    mut progress: impl FnMut(PushProgress),
) -> Result<PushedImage, PushError> {
    let (repo, tag) = split_reference(reference).map_err(|reason| PushError::BadReference {
        reference: reference.to_string(),
        reason,
    })?;
    let full = format!("{repo}:{tag}");
    let registry = registry_host(&repo).to_string();
    let image = docker.inspect_image(&full).await.map_err(|e| match e {
        EngineError::DockerResponseServerError {
            status_code: 404, ..
        } => PushError::NotFound {
            reference: full.clone(),
        },
        other => PushError::Engine(other),
    })?;
    let layers: HashSet<String> = image
        .root_fs
        .and_then(|fs| fs.layers)
        .unwrap_or_default()
        .into_iter()
        .collect();
    let total = layers.len();
    progress(PushProgress::Started {
        reference: full.clone(),
        layers: total,
    });
    let credentials = credentials.map(|c| docker_credentials(c, &registry));
    let docker = docker.clone().with_timeout(LONG_REQUEST);
    let options = PushImageOptionsBuilder::new().tag(&tag).build();
    let mut stream = docker.push_image(&repo, Some(options), credentials);
    let mut done = 0;
    let mut digest = None;
    while let Some(item) = stream.next().await {
        let info = match item {
            Ok(info) => info,
            Err(EngineError::DockerStreamError { error }) => {
                return Err(classify_push_error(&full, registry, error))
            }
            Err(other) => return Err(PushError::Engine(other)),
        };
        let Some(status) = info.status else { continue };
        let mut layer = |outcome| {
            done += 1;
            PushProgress::Layer {
                outcome,
                done,
                total: total.max(done),
            }
        };
        let event = match status.as_str() {
            "Preparing" | "Waiting" => continue,
            "Pushing" => {
                let detail = info.progress_detail.unwrap_or_default();
                PushProgress::Uploading {
                    current: detail.current.unwrap_or(0).max(0) as u64,
                    total: detail.total.unwrap_or(0).max(0) as u64,
                }
            }
            "Pushed" => layer(LayerOutcome::Pushed),
            "Layer already exists" => layer(LayerOutcome::AlreadyExists),
            s if s.starts_with("Mounted from ") => layer(LayerOutcome::Mounted {
                from: s["Mounted from ".len()..].to_string(),
            }),
            s if s.starts_with("The push refers to repository") => continue,
            s => match parse_digest_line(s) {
                Some((tag, d, size)) => {
                    digest = Some(d.clone());
                    PushProgress::Pushed {
                        tag,
                        digest: d,
                        size,
                    }
                }
                None => PushProgress::Status(s.to_string()),
            },
        };
        progress(event);
    }
    Ok(PushedImage {
        reference: full,
        digest,
    })
}

/// Pushes `reference` to the registry at `address` instead of its own host (an ECR name mapped by
/// [`crate::ecr::Endpoints`]), with `credentials` (those of the reference's own host). The engine
/// pushes only names it has, so the image is tagged `<address>/<repository>:<tag>` for the push;
/// that tag is removed afterwards unless the engine had it before.
pub async fn push_to(
    docker: &Docker,
    reference: &str,
    address: &str,
    credentials: Option<&Credentials>,
    progress: impl FnMut(PushProgress),
) -> Result<PushedImage, PushError> {
    let bad = |reason: String| PushError::BadReference {
        reference: reference.to_string(),
        reason,
    };
    let (repo, tag) = split_reference(reference).map_err(bad)?;
    let Some((_, path)) = repo.split_once('/') else {
        return Err(bad("it names no registry host".to_string()));
    };
    let routed_repo = format!("{address}/{path}");
    let routed = format!("{routed_repo}:{tag}");
    let had = docker.inspect_image(&routed).await.is_ok();
    let options = TagImageOptionsBuilder::new()
        .repo(&routed_repo)
        .tag(&tag)
        .build();
    docker
        .tag_image(&format!("{repo}:{tag}"), Some(options))
        .await
        .map_err(|e| match e {
            EngineError::DockerResponseServerError {
                status_code: 404, ..
            } => PushError::NotFound {
                reference: format!("{repo}:{tag}"),
            },
            other => PushError::Engine(other),
        })?;
    let result = push(docker, &routed, credentials, progress).await;
    if !had {
        // Only the tag goes (the image keeps its own name); a failure leaves a stray tag, which
        // is not worth failing a push for.
        let options = RemoveImageOptionsBuilder::new().noprune(true).build();
        let _ = docker.remove_image(&routed, Some(options), None).await;
    }
    result
}

/// Sorts a push's stream error: the registry's refusals of credentials apart from the rest.
fn classify_push_error(reference: &str, registry: String, message: String) -> PushError {
    let lower = message.to_ascii_lowercase();
    if lower.contains("does not exist locally") {
        return PushError::NotFound {
            reference: reference.to_string(),
        };
    }
    let unauthorized = [
        "unauthorized",
        "authentication required",
        "no basic auth credentials",
        "denied",
        "incorrect username or password",
    ];
    if unauthorized.iter().any(|u| lower.contains(u)) {
        PushError::Unauthorized { registry, message }
    } else {
        PushError::Registry { registry, message }
    }
}

/// The engine's closing line, `TAG: digest: sha256:... size: N`.
fn parse_digest_line(line: &str) -> Option<(String, String, u64)> {
    let (tag, rest) = line.split_once(": digest: ")?;
    let (digest, size) = rest.split_once(" size: ")?;
    Some((
        tag.to_string(),
        digest.to_string(),
        size.trim().parse().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_parse() {
        assert_eq!(
            Step::parse("Step 2/5 : RUN echo a : b"),
            Some(Step {
                number: 2,
                total: 5,
                instruction: "RUN echo a : b".into()
            })
        );
        assert_eq!(Step::parse(" ---> Running in 1234"), None);
        assert_eq!(Step::parse("Step x/5 : RUN"), None);
        let step = Step::parse("Step 3/3 : RUN exit 3").unwrap();
        assert_eq!(step.to_string(), "step 3/3 `RUN exit 3`");
    }

    #[test]
    fn stream_pieces_become_lines() {
        let mut lines = Lines::default();
        assert!(lines.push("Step 1/2 : FROM x").is_empty());
        assert_eq!(
            lines.push("\n ---> abc\r\nhal"),
            ["Step 1/2 : FROM x", " ---> abc"]
        );
        assert_eq!(lines.push("f\n"), ["half"]);
        assert_eq!(lines.finish(), None);
        lines.push("tail");
        assert_eq!(lines.finish().as_deref(), Some("tail"));
    }

    #[test]
    fn failures_name_the_step_and_the_exit_status() {
        let message = "The command '/bin/sh -c exit 3' returned a non-zero code: 3";
        assert_eq!(exit_code(message), Some(3));
        assert_eq!(exit_code("COPY failed: no such file"), None);
        let e = BuildError::StepFailed {
            step: Step::parse("Step 3/3 : RUN exit 3"),
            message: message.into(),
            exit_code: Some(3),
        };
        assert_eq!(
            e.to_string(),
            "step 3/3 `RUN exit 3` failed: The command '/bin/sh -c exit 3' returned a non-zero code: 3"
        );
    }

    #[test]
    fn references_split() {
        let ok = |r: &str| split_reference(r).unwrap();
        assert_eq!(ok("app"), ("app".into(), "latest".into()));
        assert_eq!(ok("app:1"), ("app".into(), "1".into()));
        assert_eq!(
            ok("127.0.0.1:45001/x/app"),
            ("127.0.0.1:45001/x/app".into(), "latest".into())
        );
        assert_eq!(
            ok("127.0.0.1:45001/x/app:v2"),
            ("127.0.0.1:45001/x/app".into(), "v2".into())
        );
        assert!(split_reference("app@sha256:abc").is_err());
        assert!(split_reference("app:").is_err());
        assert!(split_reference("").is_err());
        assert!(split_reference("a b").is_err());
    }

    #[test]
    fn base_images_of_a_dockerfile() {
        let dockerfile = "# syntax\nFROM --platform=linux/amd64 golang:1.22 AS build\nRUN x\n\
                          from build as test\nFROM scratch\nFROM $BASE\n\
                          FROM 127.0.0.1:45002/base:1\nFROM golang:1.22\n";
        assert_eq!(
            base_images(dockerfile),
            ["golang:1.22", "127.0.0.1:45002/base:1"]
        );
    }

    #[test]
    fn push_errors_are_sorted() {
        let e = classify_push_error(
            "r:1",
            "h".into(),
            "unauthorized: authentication required".into(),
        );
        assert!(e.is_unauthorized());
        let e = classify_push_error("r:1", "h".into(), "no basic auth credentials".into());
        assert!(e.is_unauthorized());
        let e = classify_push_error(
            "r:1",
            "h".into(),
            "Get \"http://h/v2/\": dial tcp h: connect: connection refused".into(),
        );
        assert!(matches!(e, PushError::Registry { .. }));
        let e = classify_push_error(
            "r:1",
            "h".into(),
            "An image does not exist locally with the tag: r".into(),
        );
        assert!(matches!(e, PushError::NotFound { .. }));
        assert_eq!(
            parse_digest_line("1: digest: sha256:7d7b size: 527"),
            Some(("1".into(), "sha256:7d7b".into(), 527))
        );
    }
}
