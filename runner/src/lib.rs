//! The buildagent engine: runs a parsed buildspec with CodeBuild's semantics.
//!
//! This crate is a library: it never prints, it reports [`events::Event`]s. Today it holds the
//! process layer the phase engine is built on:
//!
//! - [`command`]: the per-command script model of buildspec 0.2 (each command is a new shell whose
//!   first three lines restore the previous command's working directory and exported
//!   environment, with the user's code on line 4), version 0.1's fresh start, and the
//!   [`command::StateDir`] that carries the state between commands.
//! - [`executor`]: the [`executor::Executor`] seam (run one command, stop it, sweep what the build
//!   left running) and [`executor::HostExecutor`], which runs commands as process groups on this
//!   machine.
//! - [`mask`]: the streaming secret [`mask::Masker`] that output goes through before it becomes an
//!   event.
//! - [`events`]: the [`events::Event`] type and its versioned JSON form.
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
#![deny(missing_docs)]

pub mod command;
pub mod engine;
pub mod events;
pub mod executor;
pub mod mask;
mod os;
pub mod plan;
pub mod source;
