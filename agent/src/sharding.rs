//! `codebuild-tests-run` and `codebuild-glob-search`: the agent's executable run under those
//! names (links on every build's `PATH`, made like `codebuild-hash-files`'s), for the test
//! sharding of build-fanout batches. What is selected: [`buildagent_runner::sharding`].
//!
//! `codebuild-tests-run --test-command CMD --files-search CMD [--sharding-strategy S]` runs the
//! files search with `/bin/sh -c`, takes one file per line of its standard output, keeps this
//! shard's files (`BUILDAGENT_SHARD_INDEX` of `BUILDAGENT_SHARD_COUNT`, all of them outside a
//! fanout),
//! and runs `/bin/sh -c "CMD <files>"` (each file quoted for the shell when it needs it) with
//! `CODEBUILD_CURRENT_SHARD_FILES` exported (the files, one per line). Its exit status is the
//! test command's. A shard without files runs nothing, says so on standard error and exits 0: it
//! never runs the whole suite.
//!
//! `codebuild-glob-search GLOB...` prints the files the globs select, relative to the working
//! directory, one per line, sorted, each once (`*` stays in a path segment, `**` spans them,
//! directories are left out); with none it says `no files found` on standard error and exits 0.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use buildagent_runner::hash_files::match_files;
use buildagent_runner::sharding::{
    shard_files, shard_from_env, shell_quote, Strategy, GLOB_SEARCH_NAME, SHARD_FILES_VAR,
    TESTS_RUN_NAME,
};

const TESTS_RUN_USAGE: &str = "\
usage: codebuild-tests-run --test-command CMD --files-search CMD [--sharding-strategy equal-distribution|stability]

Runs CMD with this shard's test files appended (space-separated, quoted for the shell when
needed) and exported as CODEBUILD_CURRENT_SHARD_FILES (one per line). The files are the lines
the --files-search command prints. The shard is BUILDAGENT_SHARD_INDEX of BUILDAGENT_SHARD_COUNT
(set in build-fanout batches); without them every file runs. A shard without files runs nothing.
";

const GLOB_SEARCH_USAGE: &str = "\
usage: codebuild-glob-search GLOB...

Prints the files the globs select, relative to the current directory, one per line, sorted.
`*` stays in one path segment, `**` spans segments; directories are left out.
";

/// Which helper the program was started as (its `argv[0]`'s last component), if one of these.
pub fn invoked_as(argv0: Option<&OsString>) -> Option<&'static str> {
    let name = argv0.map(Path::new).and_then(Path::file_name)?;
    [TESTS_RUN_NAME, GLOB_SEARCH_NAME]
        .into_iter()
        .find(|n| name == *n)
}

/// Runs helper `name` with its arguments (without `argv[0]`).
pub fn main(name: &str, args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args: Vec<String> = match args.into_iter().map(|a| a.into_string()).collect() {
        Ok(args) => args,
        Err(bad) => {
            complain(
                name,
                format_args!("the argument {bad:?} is not valid UTF-8"),
            );
            return ExitCode::from(2);
        }
    };
    if name == GLOB_SEARCH_NAME {
        glob_search(&args)
    } else {
        tests_run(&args)
    }
}

fn glob_search(args: &[String]) -> ExitCode {
    let mut patterns: Vec<&str> = args.iter().map(String::as_str).collect();
    match patterns.first() {
        Some(&("-h" | "--help")) => {
            print!("{GLOB_SEARCH_USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(&"--") => {
            patterns.remove(0);
        }
        _ => {}
    }
    if patterns.is_empty() {
        let _ = std::io::stderr().write_all(GLOB_SEARCH_USAGE.as_bytes());
        return ExitCode::from(2);
    }
    let dir = match std::env::current_dir() {
        Ok(dir) => dir,
        Err(e) => {
            complain(
                GLOB_SEARCH_NAME,
                format_args!("cannot read the current directory: {e}"),
            );
            return ExitCode::FAILURE;
        }
    };
    match match_files(&dir, &patterns) {
        Ok(found) if found.files.is_empty() => {
            complain(GLOB_SEARCH_NAME, format_args!("no files found"));
            ExitCode::SUCCESS
        }
        Ok(found) => {
            let mut text = found.files.join("\n");
            text.push('\n');
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    complain(GLOB_SEARCH_NAME, format_args!("cannot write: {e}"));
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            complain(GLOB_SEARCH_NAME, format_args!("{e}"));
            ExitCode::FAILURE
        }
    }
}

/// The options of `codebuild-tests-run`.
struct TestsRun {
    test_command: String,
    files_search: String,
    strategy: Strategy,
}

fn parse_tests_run(args: &[String]) -> Result<Option<TestsRun>, String> {
    let mut test_command = None;
    let mut files_search = None;
    let mut strategy = Strategy::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let value = match inline {
            Some(v) => v,
            None => {
                i += 1;
                args.get(i)
                    .cloned()
                    .ok_or_else(|| format!("{flag} needs a value"))?
            }
        };
        match flag {
            "--test-command" => test_command = Some(value),
            "--files-search" => files_search = Some(value),
            "--sharding-strategy" => strategy = value.parse()?,
            other => return Err(format!("unknown option `{other}`")),
        }
        i += 1;
    }
    Ok(Some(TestsRun {
        test_command: test_command.ok_or("--test-command is required")?,
        files_search: files_search.ok_or("--files-search is required")?,
        strategy,
    }))
}

fn tests_run(args: &[String]) -> ExitCode {
    let options = match parse_tests_run(args) {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{TESTS_RUN_USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            complain(TESTS_RUN_NAME, format_args!("{e}"));
            let _ = std::io::stderr().write_all(TESTS_RUN_USAGE.as_bytes());
            return ExitCode::from(2);
        }
    };
    let shard = match shard_from_env(|name| std::env::var(name).ok()) {
        Ok(shard) => shard,
        Err(e) => {
            complain(TESTS_RUN_NAME, format_args!("{e}"));
            return ExitCode::from(2);
        }
    };
    let search = Command::new("/bin/sh")
        .arg("-c")
        .arg(&options.files_search)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output();
    let search = match search {
        Ok(output) => output,
        Err(e) => {
            complain(
                TESTS_RUN_NAME,
                format_args!("cannot run the files search: {e}"),
            );
            return ExitCode::FAILURE;
        }
    };
    if !search.status.success() {
        complain(
            TESTS_RUN_NAME,
            format_args!(
                "the files search `{}` failed ({}); no tests were run",
                options.files_search, search.status
            ),
        );
        return ExitCode::FAILURE;
    }
    let files: Vec<String> = String::from_utf8_lossy(&search.stdout)
        .lines()
        .map(|l| l.trim_end_matches('\r').to_string())
        .filter(|l| !l.trim().is_empty())
        .collect();
    let (index, count) = shard.unwrap_or((1, 1));
    let mine = shard_files(&files, index, count, options.strategy);
    if mine.is_empty() {
        complain(
            TESTS_RUN_NAME,
            format_args!(
                "no test files for shard {index} of {count} ({} file(s) in all); nothing to run",
                files.len()
            ),
        );
        return ExitCode::SUCCESS;
    }
    complain(
        TESTS_RUN_NAME,
        format_args!(
            "shard {index} of {count}: {} of {} test file(s)",
            mine.len(),
            files.len()
        ),
    );
    let quoted: Vec<String> = mine.iter().map(|f| shell_quote(f)).collect();
    let command = format!("{} {}", options.test_command, quoted.join(" "));
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(&command)
        .env(SHARD_FILES_VAR, mine.join("\n"))
        .status();
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => ExitCode::from(code.clamp(0, 255) as u8),
            (None, Some(signal)) => ExitCode::from((128 + signal).clamp(0, 255) as u8),
            _ => ExitCode::FAILURE,
        },
        Err(e) => {
            complain(
                TESTS_RUN_NAME,
                format_args!("cannot run the test command: {e}"),
            );
            ExitCode::FAILURE
        }
    }
}

/// Prints `<helper>: <message>` on stderr in one write (see `hash_files::complain`).
fn complain(name: &str, message: std::fmt::Arguments<'_>) {
    let line = format!("{name}: {message}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_in_both_spellings() {
        let o = parse_tests_run(&strings(&[
            "--test-command",
            "pytest -q",
            "--files-search=codebuild-glob-search 'tests/**/*.py'",
            "--sharding-strategy",
            "stability",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(o.test_command, "pytest -q");
        assert_eq!(o.files_search, "codebuild-glob-search 'tests/**/*.py'");
        assert_eq!(o.strategy, Strategy::Stability);
        assert!(parse_tests_run(&strings(&["--test-command", "x"])).is_err());
        assert!(parse_tests_run(&strings(&["--sharding-strategy", "random"])).is_err());
        assert!(parse_tests_run(&strings(&["--help"])).unwrap().is_none());
    }

    #[test]
    fn the_names_are_the_last_component_of_argv0() {
        assert_eq!(
            invoked_as(Some(&"/tmp/x/codebuild-tests-run".into())),
            Some(TESTS_RUN_NAME)
        );
        assert_eq!(
            invoked_as(Some(&"codebuild-glob-search".into())),
            Some(GLOB_SEARCH_NAME)
        );
        assert_eq!(invoked_as(Some(&"buildagent".into())), None);
    }
}
