//! `buildagent validate`: check buildspec files and show what is wrong.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use buildagent_spec::{parse_file, Diagnostic, ParseOptions};
use serde::Serialize;

use crate::cli::{ColorChoice, Format, ValidateArgs, EXIT_INVALID};

/// The JSON form of one file's result.
#[derive(Serialize)]
struct FileReport<'a> {
    path: &'a str,
    valid: bool,
    errors: Vec<JsonDiagnostic>,
    warnings: Vec<JsonDiagnostic>,
}

/// The JSON form of one diagnostic; line and column are 1-based (0 when there is no place).
#[derive(Serialize)]
struct JsonDiagnostic {
    path: String,
    line: usize,
    column: usize,
    message: String,
    code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    help: Option<String>,
}

impl From<&Diagnostic> for JsonDiagnostic {
    fn from(d: &Diagnostic) -> Self {
        JsonDiagnostic {
            path: d.path.clone(),
            line: d.span.line_number(),
            column: d.span.column_number(),
            message: d.message.clone(),
            code: d.code,
            help: d.help.clone(),
        }
    }
}

/// Checks every file; exit 0 when all are valid, 2 otherwise.
pub fn run(args: &ValidateArgs, color: ColorChoice) -> anyhow::Result<ExitCode> {
    let options = ParseOptions {
        strict: args.strict,
    };
    let color = crate::color::stderr(color);
    let mut all_valid = true;
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    for file in &args.files {
        let shown = file.display().to_string();
        let valid = match args.format {
            Format::Text => text(file, &shown, &options, color, &mut stdout, &mut stderr)?,
            Format::Json => json(file, &shown, &options, &mut stdout)?,
        };
        all_valid &= valid;
    }
    Ok(if all_valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INVALID)
    })
}

fn text(
    file: &Path,
    shown: &str,
    options: &ParseOptions,
    color: bool,
    stdout: &mut impl Write,
    stderr: &mut impl Write,
) -> anyhow::Result<bool> {
    let (source, parsed) = match parse_file(file, options) {
        Ok(read) => read,
        Err(e) => {
            writeln!(stderr, "error: {shown}: {e}")?;
            writeln!(stdout, "{shown}: invalid")?;
            return Ok(false);
        }
    };
    for d in &parsed.diagnostics {
        writeln!(stderr, "{}", d.render(&source, shown, color))?;
    }
    let errors = parsed.errors().count();
    let warnings = parsed.warnings().count();
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    if parsed.is_valid() {
        if warnings == 0 {
            writeln!(stdout, "{shown}: valid")?;
        } else {
            writeln!(stdout, "{shown}: valid ({})", plural(warnings, "warning"))?;
        }
    } else {
        writeln!(
            stdout,
            "{shown}: invalid ({}, {})",
            plural(errors, "error"),
            plural(warnings, "warning")
        )?;
    }
    Ok(parsed.is_valid())
}

fn json(
    file: &Path,
    shown: &str,
    options: &ParseOptions,
    stdout: &mut impl Write,
) -> anyhow::Result<bool> {
    let report = match parse_file(file, options) {
        Ok((_, parsed)) => FileReport {
            path: shown,
            valid: parsed.is_valid(),
            errors: parsed.errors().map(JsonDiagnostic::from).collect(),
            warnings: parsed.warnings().map(JsonDiagnostic::from).collect(),
        },
        Err(e) => FileReport {
            path: shown,
            valid: false,
            errors: vec![JsonDiagnostic {
                path: String::new(),
                line: 0,
                column: 0,
                message: e.to_string(),
                code: "unreadable",
                help: None,
            }],
            warnings: Vec::new(),
        },
    };
    serde_json::to_writer(&mut *stdout, &report)?;
    writeln!(stdout)?;
    Ok(report.valid)
}
