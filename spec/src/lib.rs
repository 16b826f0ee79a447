//! Parse and validate AWS CodeBuild buildspec files (versions 0.1 and 0.2).
//!
//! `buildagent-spec` turns the text of a `buildspec.yml` into a typed [`Buildspec`] and a list
//! of [`Diagnostic`]s. Every diagnostic names the key path (`phases.build.commands[2]`), the
//! line and column, and renders the offending line with a caret and a hint, the way rustc and
//! cargo do. The crate does no I/O beyond [`parse_file`] reading one file, starts no threads,
//! and never panics, whatever the input.
//!
//! # Example
//!
//! ```
//! use buildagent_spec::{parse, ParseOptions, PhaseName};
//!
//! let source = "version: 0.2\nphases:\n  build:\n    commands:\n      - make test\n";
//! let parsed = parse(source, &ParseOptions::default());
//! let spec = parsed.buildspec.expect("valid");
//! let build = spec.phase(PhaseName::Build).unwrap();
//! assert_eq!(build.commands[0].value, "make test");
//! assert_eq!(build.commands[0].span.line_number(), 5);
//! ```
//!
//! A buildspec with a problem yields no model and a diagnostic that says where and why:
//!
//! ```
//! use buildagent_spec::{parse, ParseOptions};
//!
//! let source = "version: 0.2\nphases:\n  build:\n    commands:\n      - echo Step 1: build\n";
//! let parsed = parse(source, &ParseOptions::default());
//! assert!(parsed.buildspec.is_none());
//! let error = parsed.errors().next().unwrap();
//! assert_eq!(error.path, "phases.build.commands[0]");
//! assert_eq!((error.span.line_number(), error.span.column_number()), (5, 9));
//! print!("{}", error.render(source, "buildspec.yml", false));
//! ```
//!
//! # What is decided here
//!
//! The parsing rules follow the project's `decisions.md`: unknown keys are warnings (errors
//! with [`ParseOptions::strict`]); a single string where a list is expected is a one-item list;
//! a bare `-` in a command list is skipped with a warning; a repeated key is an error naming
//! both lines; booleans accept yes/no/true/false/on/off in any case; `env.variables` values keep
//! the scalar's source text (`V: 1.10` is `1.10`).
#![deny(missing_docs)]

pub mod batch;
mod diagnostic;
mod model;
mod parse;
pub mod runtimes;
pub mod schema;
mod span;
mod yaml;

pub use diagnostic::{Diagnostic, Related, Severity};
pub use model::*;
pub use parse::{parse, parse_secrets_file, ParseOptions, Parsed, ParsedSecretsFile, SecretsFile};
pub use span::{Span, Spanned};

use std::path::Path;

/// True for names a POSIX shell can export (`[A-Za-z_][A-Za-z0-9_]*`): the rule the validator
/// applies to `env` variable names, and the agent to every variable it passes to a build.
pub fn is_variable_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'A'..=b'Z' | b'a'..=b'z' | b'_'))
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Why a buildspec file could not be read at all.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReadError {
    /// The file could not be opened or read.
    Io(std::io::Error),
    /// The file is not UTF-8 text.
    NotUtf8 {
        /// Byte offset of the first invalid byte.
        offset: usize,
    },
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "cannot read the buildspec: {e}"),
            ReadError::NotUtf8 { offset } => write!(
                f,
                "the buildspec is not UTF-8 text (invalid byte at offset {offset})"
            ),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::Io(e) => Some(e),
            ReadError::NotUtf8 { .. } => None,
        }
    }
}

/// Reads a buildspec file and parses it. Returns the text too, for rendering diagnostics.
pub fn parse_file(path: &Path, options: &ParseOptions) -> Result<(String, Parsed), ReadError> {
    let bytes = std::fs::read(path).map_err(ReadError::Io)?;
    let source = String::from_utf8(bytes).map_err(|e| ReadError::NotUtf8 {
        offset: e.utf8_error().valid_up_to(),
    })?;
    let parsed = parse(&source, options);
    Ok((source, parsed))
}

#[cfg(test)]
mod tests {
    use super::is_variable_name;

    #[test]
    fn variable_names() {
        assert!(is_variable_name("_"));
        assert!(is_variable_name("CODEBUILD_SRC_DIR"));
        assert!(is_variable_name("a1"));
        assert!(!is_variable_name("1a"));
        assert!(!is_variable_name("A-B"));
        assert!(!is_variable_name(""));
        assert!(!is_variable_name("É"));
    }
}
