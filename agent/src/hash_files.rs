//! `codebuild-hash-files GLOB...`: the agent's executable run under that name.
//!
//! A build's commands find a link of that name to the agent on their `PATH` (the engine makes it
//! from `BuildOptions::helper_bin`), so `npm-$(codebuild-hash-files package-lock.json)` works in a
//! cache key or a command as on CodeBuild. What is hashed: [`buildagent_runner::hash_files`].
//!
//! Standard output gets the hash and a newline (an empty line when no file matches; each pattern
//! that matched nothing is a warning on standard error). Exit status: 0 with a hash (or the empty
//! line), 1 when a matched file cannot be read or a pattern is invalid, 2 for a usage error.

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use buildagent_runner::hash_files::hash_files;

/// The name the helper is called by.
pub const NAME: &str = "codebuild-hash-files";

const USAGE: &str = "\
usage: codebuild-hash-files GLOB...

Prints one SHA-256 (64 lowercase hex digits) for the files the globs match, relative to the
current directory: the SHA-256 of the concatenated SHA-256 digests of the files' contents, files
sorted by path. `*` stays in one path segment, `**` spans segments, dot-files match. Prints an
empty line when no file matches.
";

/// Whether the program was started as `codebuild-hash-files` (its `argv[0]`'s last component).
pub fn invoked_as_helper(argv0: Option<&OsString>) -> bool {
    argv0
        .map(Path::new)
        .and_then(Path::file_name)
        .is_some_and(|name| name == NAME)
}

/// Runs the helper with its arguments (without `argv[0]`) in the current directory.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let mut args: Vec<OsString> = args.into_iter().collect();
    match args.first().and_then(|a| a.to_str()) {
        Some("-h" | "--help") => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some("--") => {
            args.remove(0);
        }
        _ => {}
    }
    if args.is_empty() {
        let _ = std::io::stderr().write_all(USAGE.as_bytes());
        return ExitCode::from(2);
    }
    let mut patterns = Vec::with_capacity(args.len());
    for arg in &args {
        match arg.to_str() {
            Some(pattern) => patterns.push(pattern),
            None => {
                complain(format_args!("the pattern {arg:?} is not valid UTF-8"));
                return ExitCode::from(2);
            }
        }
    }
    let dir = match std::env::current_dir() {
        Ok(dir) => dir,
        Err(e) => {
            complain(format_args!("cannot read the current directory: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match hash_files(&dir, &patterns) {
        Ok(hashed) => {
            for pattern in &hashed.unmatched {
                complain(format_args!("warning: no file matches {pattern}"));
            }
            let mut out = std::io::stdout().lock();
            match writeln!(out, "{}", hashed.hex).and_then(|()| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    complain(format_args!("cannot write the hash: {e}"));
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            complain(format_args!("{e}"));
            ExitCode::FAILURE
        }
    }
}

/// Prints `codebuild-hash-files: <message>` on stderr in one write, so that the agent, which
/// reads a command's stdout and stderr separately, never gets half of the line before the
/// command's next stdout line (`eprintln!` writes each formatted piece on its own).
fn complain(message: std::fmt::Arguments<'_>) {
    let line = format!("{NAME}: {message}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_is_the_last_component_of_argv0() {
        for (argv0, yes) in [
            ("codebuild-hash-files", true),
            ("/tmp/buildagent-bin-x/codebuild-hash-files", true),
            ("./codebuild-hash-files", true),
            ("buildagent", false),
            ("/usr/bin/codebuild-hash-files-2", false),
            ("codebuild-hash-files/x", false),
        ] {
            assert_eq!(invoked_as_helper(Some(&argv0.into())), yes, "{argv0}");
        }
        assert!(!invoked_as_helper(None));
    }
}
