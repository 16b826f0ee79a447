//! Whether to colour a stream.

use std::io::IsTerminal;

use crate::cli::ColorChoice;

/// True when output to a stream that `is_terminal` describes should be coloured.
pub fn enabled(choice: ColorChoice, is_terminal: bool) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    }
}

/// True when standard error should be coloured.
pub fn stderr(choice: ColorChoice) -> bool {
    enabled(choice, std::io::stderr().is_terminal())
}
