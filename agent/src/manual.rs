//! `buildagent completions SHELL` and `buildagent man`: generated from the same clap definition
//! as the parser ([`crate::cli::Cli`]), so they never fall behind the flags.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

/// Prints the completion script for `shell`.
pub fn completions(shell: Shell) -> anyhow::Result<ExitCode> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "buildagent", &mut script);
    // Written at once so that a closed pipe is an error here, which main treats as success.
    io::stdout().lock().write_all(&script)?;
    Ok(ExitCode::SUCCESS)
}

/// Prints buildagent.1, or writes it and a page per command into `out_dir`.
pub fn man(out_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let command = Cli::command();
    match out_dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command).render(&mut page)?;
            io::stdout().lock().write_all(&page)?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("--out-dir {}", dir.display()))?;
            clap_mangen::generate_to(command, dir)
                .with_context(|| format!("writing manual pages into {}", dir.display()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
