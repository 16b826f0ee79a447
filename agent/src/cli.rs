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
    /// Print a JSON Schema of the buildspec, for editors' YAML language servers.
    Schema,
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
