//! The buildagent engine: runs a parsed buildspec with CodeBuild's semantics.
//!
//! This crate is a library: it never prints, it reports [`events::Event`]s to a callback. Other
//! CI tools and self-hosted runners embed it; the `buildagent` binary is one caller.
//!
//! - [`engine`]: [`engine::Build`], the phase machine (DOWNLOAD_SOURCE to FINALIZING, `finally`,
//!   `on-failure`, retries, timeout and stop) that turns a buildspec into a [`engine::BuildResult`].
//! - [`batch`]: [`batch::Batch`], a buildspec's `batch` section (build-list, build-graph,
//!   build-matrix, build-fanout) run as concurrent builds on one machine, with
//!   [`batch::BatchResult`] and the batch's events.
//! - [`plan`]: the build's environment, layer by layer, and the agent's `CODEBUILD_*` variables.
//! - [`source`]: staging the source in a fresh copy (git-aware).
//! - [`fetch`]: sources from Git (the `git` command line, a clone cache of bare mirrors) and S3
//!   (a zip, safely extracted, or a folder), fetched at the start of DOWNLOAD_SOURCE.
//! - [`command`]: the per-command script model of buildspec 0.2 (each command is a new shell whose
//!   first three lines restore the previous command's working directory and exported
//!   environment, with the user's code on line 4), version 0.1's fresh start, and the
//!   [`command::StateDir`] that carries the state between commands.
//! - [`executor`]: the [`executor::Executor`] seam (run one command, stop it, sweep what the build
//!   left running) and [`executor::HostExecutor`], which runs commands as process groups on this
//!   machine.
//! - [`artifacts`]: UPLOAD_ARTIFACTS on local disk: collecting files with CodeBuild's glob rules
//!   and writing them as deterministic zips (or directories), atomically.
//! - [`hash_files`]: `codebuild-hash-files`, one SHA-256 for the files some globs match (cache
//!   keys such as `npm-$(codebuild-hash-files package-lock.json)`).
//! - [`sharding`]: `codebuild-tests-run` and `codebuild-glob-search`, the test sharding of
//!   build-fanout batches (equal-distribution and stability).
//! - [`oci`]: daemonless images: deterministic layers, OCI layouts, docker archives, a registry
//!   client, and the Dockerfile subset that needs no container (`image build --engine oci`,
//!   `image append`).
//! - [`credentials`], [`ecr`]: registry credentials, from the Docker configuration or, for
//!   Amazon ECR registries, from `GetAuthorizationToken`.
//! - [`secrets`]: the buildspec's `parameter-store` and `secrets-manager` entries, resolved
//!   before INSTALL from AWS or from offline values (`--secrets-file`).
//! - [`aws`]: the one loader of the AWS SDK configuration (credentials, region, endpoints).
//! - [`lines`]: whole lines per stream, so a command's stdout and stderr are never spliced into
//!   each other.
//! - [`mask`]: the streaming secret [`mask::Masker`] that output goes through before it becomes an
//!   event.
//! - [`events`]: the [`events::Event`] type and its versioned JSON form.
//!
//! # Running a build
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use buildagent_runner::engine::{Build, BuildOptions};
//! use buildagent_runner::events::{BuildPhase, BuildStatus, EventKind, PhaseStatus};
//! use buildagent_runner::executor::{HostExecutor, StopRequest};
//! use buildagent_spec::{parse, ParseOptions};
//! use tokio_util::sync::CancellationToken;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let yaml = "version: 0.2\nphases:\n  build:\n    commands:\n      - echo \"hello $WHO\"\n      - 'false'\n  post_build:\n    commands: [echo succeeding=$CODEBUILD_BUILD_SUCCEEDING]\n";
//! let spec = parse(yaml, &ParseOptions::default()).buildspec.expect("a valid buildspec");
//! // Every option has a default (see `BuildOptions::new`); these are the common ones.
//! let mut options = BuildOptions::new(std::env::temp_dir()); // runs in the directory itself (`-m`)
//! options
//!     .base_env([("PATH", "/usr/bin:/bin")]) // default: this process's environment
//!     .env_var("WHO", "world") // `--env-var`; `.secret(name, value)` for masked ones
//!     .timeout(Duration::from_secs(60)) // default: 60 minutes
//!     .grace(Duration::from_secs(10)); // SIGTERM to SIGKILL when stopped
//! // Also: `.stage_from(dir)` builds in a fresh copy, `.artifacts(Location::Dir(dir))` writes
//! // dir/artifacts.zip, `.reports_dir(dir)`, `.cache(location)`, `.helper_bin(exe)` puts
//! // `codebuild-hash-files` on the commands' PATH, `.identity(..)` sets CODEBUILD_BUILD_ID.
//! options.identity.project = "demo".into();
//! let mut output = Vec::new();
//! let build = Build::new(spec, options, Arc::new(HostExecutor::new()));
//! let result = build
//!     .run(StopRequest::new(), CancellationToken::new(), |event| {
//!         if let EventKind::Output { bytes, .. } = event.kind {
//!             output.extend(bytes);
//!         }
//!     })
//!     .await;
//! // BUILD failed on `false`, POST_BUILD still ran and saw the failure; the build is FAILED.
//! assert_eq!(result.status, BuildStatus::Failed);
//! assert_eq!(String::from_utf8_lossy(&output), "hello world\nsucceeding=0\n");
//! let build_phase = result.phases.iter().find(|p| p.phase == BuildPhase::Build).unwrap();
//! assert_eq!(build_phase.status, PhaseStatus::Failed);
//! # }
//! ```
//!
//! A ten-line program that embeds the engine is `examples/embed.rs` (`cargo run -p
//! buildagent-runner --example embed`).
//!
//! # Running commands the way the engine does
//!
//! ```
//! use std::path::Path;
//! use buildagent_runner::command::{ScriptMode, StateDir};
//! use buildagent_runner::events::{CommandOutcome, Stream};
//! use buildagent_runner::executor::{CommandControl, Executor, HostExecutor};
//! use buildagent_runner::mask::Masker;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let src = std::env::temp_dir();
//! let env = vec![
//!     ("PATH".to_string(), "/usr/bin:/bin".to_string()),
//!     ("TOKEN".to_string(), "hunter2".to_string()),
//! ];
//! let mut state = StateDir::new(&env, &src)?;
//! let executor = HostExecutor::new();
//! let mut masker = Masker::new(["hunter2"])?;
//! let mut log = Vec::new();
//!
//! for command in ["GREETING=hello", "echo \"$GREETING, token=$TOKEN\""] {
//!     let spec = state.prepare(command, ScriptMode::V02, Path::new("/bin/sh"), None)?;
//!     let mut sink = |stream: Stream, bytes: &[u8]| {
//!         if stream == Stream::Stdout {
//!             log.extend_from_slice(&masker.push(bytes));
//!         }
//!     };
//!     let outcome = executor.run(&spec, CommandControl::none(), &mut sink).await?;
//!     assert_eq!(outcome, CommandOutcome::Success);
//!     state.finish()?; // commit the environment and directory the command left
//! }
//! log.extend_from_slice(&masker.finish());
//! assert_eq!(log, b"hello, token=***\n");
//!
//! // At the end of the build: end whatever the commands left running.
//! let leaked = executor.sweep(CommandControl::DEFAULT_GRACE, &mut |_: Stream, _: &[u8]| {}).await?;
//! assert!(leaked.is_empty());
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! All on by default; an embedder that runs builds on the host only can leave them out
//! (`default-features = false`) and compile none of the AWS SDK, bollard or reqwest.
//!
//! - `aws`: S3 artifacts, caches, sources and build logs, Parameter Store and Secrets Manager
//!   values, ECR tokens, CloudWatch Logs. Without it a build that names one of them fails with an
//!   error that says the feature is missing.
//! - `docker`: builds in containers ([`executor::ContainerExecutor`]) and the Docker Engine's
//!   image build and push (`docker::image`).
//! - `oci`: daemonless images (`oci`).
#![deny(missing_docs)]

pub mod artifacts;
#[cfg(feature = "aws")]
pub mod aws;
pub mod batch;
pub mod cache;
pub mod command;
pub mod credentials;
pub mod deflate;
pub mod docker;
pub mod ecr;
pub mod engine;
pub mod events;
pub mod executor;
pub mod fetch;
pub mod hash_files;
pub mod lines;
pub mod location;
pub mod logs;
pub mod mask;
pub mod net;
#[cfg(feature = "oci")]
pub mod oci;
mod os;
pub mod plan;
pub mod reports;
pub mod s3;
pub mod secrets;
pub mod sharding;
pub mod source;
pub mod utc;
