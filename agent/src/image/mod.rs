//! `buildagent image`: build, append to and push container images, through the Docker Engine API
//! ([`docker`]) or daemonless, by writing OCI layers directly ([`oci`]).

mod docker;
mod oci;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

/// `buildagent image`.
#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub command: ImageCommand,
}

/// The `image` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build an image from a Dockerfile and a context directory.
    Build(BuildArgs),
    /// Push an image that is already in the Docker engine.
    Push(PushArgs),
    /// Add directories as layers on top of a base image (no Dockerfile, no daemon).
    Append(AppendArgs),
}

/// Who builds the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    /// The Docker engine, through its API (`RUN` works).
    Docker,
    /// No daemon: layers are written directly (no `RUN`).
    Oci,
}

/// `buildagent image build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Who builds the image.
    #[arg(long, value_enum, default_value_t = Engine::Docker)]
    pub engine: Engine,
    /// The image reference to tag (and push) the result as (repeatable).
    #[arg(short = 't', long = "tag", value_name = "REF")]
    pub tags: Vec<String>,
    /// The Dockerfile (default: `CONTEXT/Dockerfile`).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// A build argument (repeatable).
    #[arg(long = "build-arg", value_name = "K=V")]
    pub build_args: Vec<String>,
    /// A label on the image (repeatable).
    #[arg(long = "label", value_name = "K=V")]
    pub labels: Vec<String>,
    /// The stage of a multi-stage Dockerfile to build.
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// The platform to build for (`linux/amd64`).
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Option<String>,
    /// Push every tag when the build succeeds.
    #[arg(long)]
    pub push: bool,
    /// Build every step afresh instead of reusing the engine's cached layers (docker engine).
    #[arg(long)]
    pub no_cache: bool,
    /// The network of the `RUN` containers (docker engine): `host` (default), `none`,
    /// `bridge`, or a network's name.
    #[arg(long, value_name = "MODE", default_value = "host")]
    pub network: String,
    /// Where the image goes besides the tags (oci engine): `oci:DIR` (an OCI image layout) or
    /// `docker-archive:FILE` (for `docker load`).
    #[arg(long, value_name = "DEST")]
    pub output: Vec<String>,
    /// Layer compression (oci engine).
    #[arg(long, value_enum, default_value_t = Compression::Gzip)]
    pub compression: Compression,
    /// Registry user name (else the Docker configuration's credentials).
    #[arg(long)]
    pub username: Option<String>,
    /// Read the registry password from standard input.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
    /// The context directory.
    #[arg(value_name = "CONTEXT")]
    pub context: PathBuf,
}

/// Layer compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    /// gzip (every registry and engine reads it).
    Gzip,
    /// zstd (smaller and faster; needs a recent engine to run).
    Zstd,
}

/// `buildagent image push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The image reference, as the engine knows it.
    #[arg(value_name = "REF")]
    pub reference: String,
    /// Registry user name (else the Docker configuration's credentials).
    #[arg(long)]
    pub username: Option<String>,
    /// Read the registry password from standard input.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
}

/// `buildagent image append`.
#[derive(Debug, Args)]
pub struct AppendArgs {
    /// The base image: a registry reference, `oci:DIR[:TAG]`, or `scratch`.
    #[arg(long, value_name = "REF")]
    pub base: String,
    /// A directory to add as one layer, at DEST (default `/`) (repeatable).
    #[arg(long = "layer", value_name = "DIR[:DEST]", required = true)]
    pub layers: Vec<String>,
    /// The image's entrypoint (a JSON array, or a plain command).
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// The image's command (a JSON array, or a plain command).
    #[arg(long)]
    pub cmd: Option<String>,
    /// An environment variable (repeatable).
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// A label (repeatable).
    #[arg(long = "label", value_name = "K=V")]
    pub labels: Vec<String>,
    /// The working directory.
    #[arg(long)]
    pub workdir: Option<String>,
    /// The user.
    #[arg(long)]
    pub user: Option<String>,
    /// The reference to push the result to (repeatable).
    #[arg(short = 't', long = "tag", value_name = "REF")]
    pub tags: Vec<String>,
    /// Where the image goes besides the tags: `oci:DIR` or `docker-archive:FILE`.
    #[arg(long, value_name = "DEST")]
    pub output: Vec<String>,
    /// Layer compression.
    #[arg(long, value_enum, default_value_t = Compression::Gzip)]
    pub compression: Compression,
    /// Registry user name (else the Docker configuration's credentials).
    #[arg(long)]
    pub username: Option<String>,
    /// Read the registry password from standard input.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
}

/// Runs an `image` subcommand.
pub fn run(args: &ImageArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        ImageCommand::Build(build) => match build.engine {
            Engine::Docker => docker::build(build),
            Engine::Oci => oci::build(build),
        },
        ImageCommand::Push(push) => docker::push(push),
        ImageCommand::Append(append) => oci::append(append),
    }
}
