//! The command line, as clap sees it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Exit status for invalid input: bad flags, or a buildspec that does not parse or validate.
pub const EXIT_INVALID: u8 = 2;
/// Exit status when the agent itself, or a service it needs, failed.
pub const EXIT_FAULT: u8 = 3;

/// Run AWS CodeBuild buildspec files anywhere.
#[derive(Debug, Parser)]
#[command(name = "buildagent", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// When to colour output.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check buildspec files and show every problem with its line and a hint.
    ///
    /// Exits 0 when every file is valid (warnings allowed) and 2 otherwise.
    Validate(ValidateArgs),
    /// Print a JSON Schema of the buildspec, for editors' YAML language servers (with --job:
    /// of a fleet's job message).
    Schema(SchemaArgs),
    /// Run a buildspec on this machine with CodeBuild's semantics.
    ///
    /// Exit status: 0 SUCCEEDED, 1 FAILED, 2 invalid input, 3 FAULT, 124 TIMED_OUT, 130 STOPPED.
    Run(Box<RunArgs>),
    /// Build, append to and push container images (Docker Engine API, or daemonless OCI).
    Image(Box<crate::image::ImageArgs>),
    /// Print a build's log from CloudWatch Logs (GROUP's latest stream unless STREAM is named),
    /// as the terminal shows it; with -f, follow it while the build runs.
    Logs(LogsArgs),
    /// Fleet resources: `fleet init` creates the queue, dead-letter queue, table, bucket and log
    /// group a fleet of workers needs.
    Fleet(crate::fleet::FleetArgs),
    /// Submit a build to a fleet's queue (its record QUEUED in the table); print its id. With
    /// -f, print its log and exit with its status as `run` does.
    ///
    /// Exit status: 0 submitted (with -f: 0 SUCCEEDED, 1 FAILED, 3 FAULT, 124 TIMED_OUT, 130
    /// STOPPED), 2 invalid input, 3 a service failed.
    Submit(Box<crate::fleet::SubmitArgs>),
    /// Print fleet builds' records: a table, or JSON shaped like CodeBuild's BatchGetBuilds.
    ///
    /// Exit status 1 when a build is not found.
    Status(crate::fleet::StatusArgs),
    /// Stop a fleet build: a queued one at once, a running one through its worker (within
    /// seconds; SIGTERM, grace, SIGKILL), as STOPPED.
    ///
    /// Exit status 1 when the build has already finished.
    Stop(crate::fleet::StopArgs),
    /// List a fleet's builds, newest first.
    List(crate::fleet::ListArgs),
    /// Run builds from the fleet's job queue: claim each in the table of records, run it as
    /// `run` does (several at once with --slots), keep its record current.
    ///
    /// The first SIGTERM or SIGINT drains (no new builds; running ones finish, up to
    /// --drain-timeout); the second stops them and puts them back on the queue.
    Worker(Box<crate::fleet::worker::WorkerArgs>),
    /// Print a completion script for a shell.
    ///
    /// bash: `buildagent completions bash > /etc/bash_completion.d/buildagent`; zsh: into a
    /// directory of `$fpath` as `_buildagent`; fish: `~/.config/fish/completions/buildagent.fish`.
    Completions(CompletionsArgs),
    /// Print the manual page (roff), or write one page per command into a directory.
    ///
    /// `buildagent man | man -l -` shows it; `buildagent man --out-dir /usr/local/share/man/man1`
    /// installs buildagent.1, buildagent-run.1 and the others.
    Man(ManArgs),
}

/// `buildagent logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The log group, and the stream (default: the group's stream with the latest event).
    #[arg(value_name = "GROUP[:STREAM]|ID")]
    pub stream: String,

    /// Keep printing new lines as they arrive, until interrupted (a fleet build: until it ends).
    #[arg(short, long)]
    pub follow: bool,

    /// A fleet's table: the argument is then a build id (`project:uuid`) whose record says where
    /// its log is.
    #[arg(long, value_name = "NAME", env = "BUILDAGENT_TABLE")]
    pub table: Option<String>,
}

/// `buildagent schema`.
#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// The schema of a fleet's job message (CodeBuild's StartBuild shape) instead of the
    /// buildspec's.
    #[arg(long)]
    pub job: bool,
}

/// `buildagent completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `buildagent man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write buildagent.1 and one page per command (buildagent-run.1, ...) into this directory
    /// instead of printing buildagent.1.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// `buildagent validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Treat unknown keys as errors.
    #[arg(long)]
    pub strict: bool,

    /// Output format: text diagnostics for people, or one JSON object per file.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// The buildspec files to check.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Output formats of `validate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Diagnostics with a snippet of the offending line.
    Text,
    /// One JSON object per file, one per line.
    Json,
}

/// `--color`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Colour when writing to a terminal and `NO_COLOR` is unset.
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

/// `buildagent run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The buildspec (default: `buildspec.yml`, else `buildspec.yaml`, in the source directory).
    #[arg(value_name = "BUILDSPEC", conflicts_with = "buildspec")]
    pub buildspec_arg: Option<PathBuf>,

    /// The buildspec, as a flag (same as the positional argument).
    #[arg(short = 'b', long = "buildspec", value_name = "FILE")]
    pub buildspec: Option<PathBuf>,

    /// The source (default `.`): a directory, a Git URL (`https://`, `ssh://`, `git@host:path`,
    /// `file://`, anything ending in `.git`), `s3://BUCKET/KEY.zip` or `s3://BUCKET/PREFIX/`;
    /// repeat as `-s ID:SOURCE` for secondary sources.
    #[arg(short = 's', long = "source", value_name = "SOURCE")]
    pub sources: Vec<String>,

    /// The version of the primary Git or S3 source: a branch, tag, commit (full or abbreviated),
    /// `pr/N` or a ref (`refs/pull/N/head`); for an S3 zip, an object version id (default: the
    /// remote's default branch, the latest object).
    #[arg(long, value_name = "REF")]
    pub source_version: Option<String>,

    /// The version of a secondary Git or S3 source, as `ID=REF` (CodeBuild's
    /// `secondarySourcesVersionOverride`); repeat for several. The same forms as
    /// `--source-version`.
    #[arg(long, value_name = "ID=REF")]
    pub secondary_source_version: Vec<String>,

    /// How many commits of Git history to fetch (0: all of it).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub git_clone_depth: u32,

    /// Also fetch Git submodules, recursively, with the same depth.
    #[arg(long)]
    pub git_submodules: bool,

    /// Clone Git sources afresh instead of through the clone cache (bare mirrors under
    /// `$XDG_CACHE_HOME/buildagent/git`, else `~/.cache/buildagent/git`).
    #[arg(long)]
    pub no_source_cache: bool,

    /// Write artifacts to this directory: `artifacts.zip` for the primary artifact,
    /// `<identifier>.zip` for each secondary one (created if missing; replaced atomically); or
    /// upload them to `s3://BUCKET/PREFIX` (keys: see the README). Without it, artifacts are
    /// collected and checked but not written.
    #[arg(short = 'a', long = "artifacts", value_name = "DIR|s3://BUCKET/PREFIX")]
    pub artifacts: Option<String>,

    /// Under an s3:// artifacts location, put the artifacts under a directory named after the
    /// build's id (CodeBuild's namespaceType BUILD_ID), or not.
    #[arg(
        long,
        value_enum,
        default_value_t = ArtifactsNamespace::None,
        value_name = "NAMESPACE",
        requires = "artifacts"
    )]
    pub artifacts_namespace: ArtifactsNamespace,

    /// How artifacts are written to the -a directory: zip files, or plain directories
    /// (`artifacts/`, `<identifier>/`).
    #[arg(
        long,
        value_enum,
        default_value_t = ArtifactsPackaging::Zip,
        value_name = "PACKAGING",
        requires = "artifacts"
    )]
    pub artifacts_packaging: ArtifactsPackaging,

    /// Store each file's own modification time in the artifacts instead of 1980-01-01 00:00
    /// (which makes two builds of the same tree give identical zips).
    #[arg(long, requires = "artifacts")]
    pub artifacts_keep_mtime: bool,

    /// The primary artifact's name in an S3 location (`-a s3://...`) when the buildspec's
    /// `artifacts.name` gives none (CodeBuild's project artifact name); default `artifacts`.
    #[arg(long, value_name = "NAME", requires = "artifacts")]
    pub artifacts_name: Option<String>,

    /// Copy each report group's files to DIR/GROUP/ and write DIR/summary.json (reports are
    /// parsed and summarised in the log either way).
    #[arg(short = 'r', long = "reports", value_name = "DIR")]
    pub reports: Option<PathBuf>,

    /// A project environment file: `NAME=VALUE` lines (quotes are kept).
    #[arg(short = 'e', long = "env-file", value_name = "FILE")]
    pub env_file: Option<PathBuf>,

    /// Override a variable (repeatable); wins over the buildspec and the env file.
    #[arg(long = "env-var", value_name = "NAME=VALUE")]
    pub env_vars: Vec<String>,

    /// Like --env-var, and the value is masked as `***` in everything the agent writes.
    #[arg(long = "secret", value_name = "NAME=VALUE")]
    pub secrets: Vec<String>,

    /// Values for the buildspec's `parameter-store` and `secrets-manager` entries, used instead of
    /// AWS for the names the file lists (YAML: `parameter-store: {NAME: value}`,
    /// `secrets-manager: {REFERENCE: value}`; see the README). Values are masked like secrets.
    #[arg(long, value_name = "FILE")]
    pub secrets_file: Option<PathBuf>,

    /// Print where each variable of the build comes from (secrets as `***`), resolving Parameter
    /// Store and Secrets Manager values as a build would, and run nothing: no command, no source
    /// copy, no cache, no artifact. Exit status as the build's DOWNLOAD_SOURCE would give.
    #[arg(long)]
    pub dry_run: bool,

    /// The build timeout (`30s`, `5m`, `1h30m`).
    #[arg(long, default_value = "60m", value_name = "DURATION")]
    pub timeout: String,

    /// Time a stopped command gets between SIGTERM and SIGKILL.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub grace: String,

    /// Where the buildspec's `cache` entries are kept: a directory (default:
    /// `$XDG_CACHE_HOME/buildagent`, else `~/.cache/buildagent`) or `s3://BUCKET/PREFIX`; one
    /// folder per project (the source directory's name).
    #[arg(
        long = "cache",
        visible_alias = "cache-dir",
        value_name = "DIR|s3://BUCKET/PREFIX",
        conflicts_with = "no_cache"
    )]
    pub cache: Option<String>,

    /// Neither restore nor save the buildspec's `cache`.
    #[arg(long)]
    pub no_cache: bool,

    /// Build in the source directory itself instead of a fresh copy.
    #[arg(short = 'm', long = "mount-source")]
    pub mount_source: bool,

    /// Run the build inside a container of this build image (through the Docker Engine API),
    /// instead of on this machine.
    #[arg(short = 'i', long = "image", value_name = "IMAGE")]
    pub image: Option<String>,

    /// With -i: a privileged container with the engine's socket mounted, so that `docker build`
    /// works in the buildspec.
    #[arg(short = 'd', long = "privileged", requires = "image")]
    pub privileged: bool,

    /// With -i: pass this machine's AWS_* variables into the build (the secret ones masked in
    /// everything the agent writes) and mount ~/.aws read-only at /root/.aws.
    #[arg(short = 'c', long = "aws-credentials", requires = "image")]
    pub aws_credentials: bool,

    /// How to show the build: CodeBuild's log lines, the same with colour and a summary, or JSON
    /// events (default: pretty on a terminal, codebuild otherwise).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Also write the full log (CodeBuild format) to this file.
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,

    /// Stream the log to CloudWatch Logs while the build runs, one event per line: GROUP, and
    /// STREAM (default: the build id's uuid, as CodeBuild). Both are created when missing.
    #[arg(long, value_name = "GROUP[:STREAM]")]
    pub cloudwatch_logs: Option<String>,

    /// Write the log to S3 as one gzip object, `<prefix>/<build-uuid>.gz`, at the end.
    #[arg(long, value_name = "s3://BUCKET/PREFIX")]
    pub s3_logs: Option<String>,

    /// With --s3-logs: upload the object's parts while the build runs (a multipart upload),
    /// not only at the end.
    #[arg(long, requires = "s3_logs")]
    pub s3_logs_stream: bool,

    /// How long the end of the build waits for the log sinks to deliver what they hold (then
    /// it reports how many lines did not arrive).
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub log_flush_timeout: String,

    /// Write the final values of the buildspec's `exported-variables` to this file, as a JSON
    /// object (secrets masked). The file appears whole or not at all.
    #[arg(long, value_name = "FILE")]
    pub output_env: Option<PathBuf>,

    /// Treat unknown buildspec keys as errors.
    #[arg(long)]
    pub strict: bool,

    /// Run the buildspec's `batch` section (build-list, build-graph, build-matrix or
    /// build-fanout): every build of the batch on this machine, in parallel. Without it the
    /// section is ignored, as CodeBuild's StartBuild does.
    #[arg(long, help_heading = "Batch builds")]
    pub batch: bool,

    /// With --batch: how many builds run at once (default: the number of cores).
    #[arg(
        short = 'j',
        long = "jobs",
        value_name = "N",
        requires = "batch",
        help_heading = "Batch builds"
    )]
    pub jobs: Option<usize>,

    /// With --batch: on the first failure of a build whose failure is not ignored, stop the
    /// running builds (SIGTERM, grace, SIGKILL) and start no more (also the batch's
    /// `fast-fail: true`).
    #[arg(long, requires = "batch", help_heading = "Batch builds")]
    pub fast_fail: bool,

    /// With --batch and -a DIR: one DIR/artifacts.zip holding each build's primary artifact in a
    /// folder named after its identifier, instead of DIR/IDENTIFIER.zip each.
    #[arg(long, requires_all = ["batch", "artifacts"], help_heading = "Batch builds")]
    pub combine_artifacts: bool,

    /// With --batch: the whole batch's timeout (`30m`, `2h`); past it every running build is
    /// stopped and the batch is TIMED_OUT (default: none; each build keeps --timeout).
    #[arg(
        long,
        value_name = "DURATION",
        requires = "batch",
        help_heading = "Batch builds"
    )]
    pub batch_timeout: Option<String>,

    /// With --batch: the most builds the batch may have (CodeBuild's maximumBuildsAllowed).
    #[arg(
        long,
        value_name = "N",
        default_value_t = buildagent_spec::batch::DEFAULT_MAX_BUILDS,
        requires = "batch",
        help_heading = "Batch builds"
    )]
    pub max_builds: usize,

    /// With --batch: write each build's full log (CodeBuild format) to DIR/IDENTIFIER.log.
    #[arg(
        long,
        value_name = "DIR",
        requires = "batch",
        help_heading = "Batch builds"
    )]
    pub log_dir: Option<PathBuf>,
}

/// `--artifacts-packaging`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ArtifactsPackaging {
    /// One zip file per artifact.
    Zip,
    /// One directory of files per artifact.
    None,
}

/// `--artifacts-namespace`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ArtifactsNamespace {
    /// `<prefix>/[<s3-prefix>/]<name>`.
    None,
    /// `<prefix>/[<s3-prefix>/]<build uuid>/<name>`.
    BuildId,
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `[Container] YYYY/MM/DD HH:MM:SS.ffffff ...` lines, as CodeBuild writes them.
    Codebuild,
    /// CodeBuild's lines with colour, per-phase timing and a summary table.
    Pretty,
    /// One JSON object per event (schema version in every object).
    Json,
}
