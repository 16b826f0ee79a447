//! Errors and warnings about a buildspec, and how they are shown to people.
//!
//! A [`Diagnostic`] is data: a severity, a stable code, a message, the key path
//! (`phases.build.commands[2]`), the span, and optionally a label under the caret, a hint, and
//! a second place (the first definition of a repeated key). [`Diagnostic::render`] turns it into
//! the layout of rustc, cargo and `just`:
//!
//! ```text
//! error: expected a string, found a mapping
//!   --> buildspec.yml:10:9
//!    |
//! 10 |       - echo Step 1: build
//!    |         ^^^^^^^^^^^^^^^^^^ this command is a mapping
//!    |
//!    = at: phases.build.commands[0]
//!    = help: quote the whole command: ...
//! ```

use std::fmt::{self, Write as _};

use serde::Serialize;

use crate::span::{LineIndex, Span};

/// How serious a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The buildspec cannot be run.
    Error,
    /// The buildspec runs, but something in it is probably not what the author meant.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// A second place a diagnostic refers to, such as the first definition of a repeated key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Related {
    /// Where.
    pub span: Span,
    /// What is there ("first defined here").
    pub label: String,
}

/// One problem found in a buildspec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// A stable, kebab-case identifier of the kind of problem (`unknown-key`, `wrong-type`, ...).
    pub code: &'static str,
    /// What is wrong, in lowercase prose; user values are quoted in backticks.
    pub message: String,
    /// The key path of the offending value (`phases.build.commands[2]`); empty for the document.
    pub path: String,
    /// Where the offending value is.
    pub span: Span,
    /// A short note shown under the caret.
    pub label: Option<String>,
    /// How to fix it.
    pub help: Option<String>,
    /// Another place that explains the problem.
    pub related: Option<Related>,
}

impl Diagnostic {
    /// A new error.
    pub fn error(
        code: &'static str,
        path: impl Into<String>,
        span: Span,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            path: path.into(),
            span,
            label: None,
            help: None,
            related: None,
        }
    }

    /// A new warning.
    pub fn warning(
        code: &'static str,
        path: impl Into<String>,
        span: Span,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, path, span, message)
        }
    }

    /// Sets the label shown under the caret.
    pub fn with_label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = Some(label.into());
        self
    }

    /// Sets the hint.
    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// Adds a second place.
    pub fn with_related(mut self, span: Span, label: impl Into<String>) -> Diagnostic {
        self.related = Some(Related {
            span,
            label: label.into(),
        });
        self
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Renders the diagnostic with a snippet of `source`, which must be the text it was found
    /// in; `file` names it in the `-->` line. ANSI colour is used only when `color` is true.
    pub fn render(&self, source: &str, file: &str, color: bool) -> String {
        let paint = Paint { on: color };
        let mut out = String::new();
        let (head, style) = match self.severity {
            Severity::Error => ("error", RED),
            Severity::Warning => ("warning", YELLOW),
        };
        let _ = writeln!(
            out,
            "{}{}",
            paint.style(&format!("{head}:"), style),
            paint.style(&format!(" {}", self.message), BOLD)
        );
        // Lines as spans count them: a lone CR ends a line too, as in YAML.
        let lines = LineIndex::new(source);
        let mut shown = vec![(self.span, self.label.clone().unwrap_or_default(), style)];
        if let Some(related) = &self.related {
            shown.push((related.span, related.label.clone(), BLUE));
        }
        let last_line = shown
            .iter()
            .map(|(s, _, _)| s.line_number())
            .max()
            .unwrap_or(1);
        let width = last_line.to_string().len();
        let pad = " ".repeat(width);
        let _ = writeln!(
            out,
            "{pad}{} {file}:{}:{}",
            paint.style("-->", BLUE),
            self.span.line_number(),
            self.span.column_number()
        );
        let _ = writeln!(out, "{pad} {}", paint.style("|", BLUE));
        shown.sort_by_key(|(s, _, _)| s.line);
        for (span, label, style) in shown {
            let text = lines.line_text(span.line).unwrap_or("");
            let (shown_text, caret_col, caret_len) = caret_geometry(text, span);
            let _ = writeln!(
                out,
                "{} {} {}",
                paint.style(&format!("{:>width$}", span.line_number()), BLUE),
                paint.style("|", BLUE),
                shown_text
            );
            let carets = "^".repeat(caret_len);
            let label = if label.is_empty() {
                String::new()
            } else {
                format!(" {label}")
            };
            let _ = writeln!(
                out,
                "{pad} {} {}{}",
                paint.style("|", BLUE),
                " ".repeat(caret_col),
                paint.style(&format!("{carets}{label}"), style)
            );
        }
        if !self.path.is_empty() || self.help.is_some() {
            let _ = writeln!(out, "{pad} {}", paint.style("|", BLUE));
        }
        if !self.path.is_empty() {
            let _ = writeln!(out, "{pad} {} at: {}", paint.style("=", BLUE), self.path);
        }
        if let Some(help) = &self.help {
            let _ = writeln!(out, "{pad} {} help: {help}", paint.style("=", BLUE));
        }
        out
    }
}

impl fmt::Display for Diagnostic {
    /// `LINE:COL: severity: message (at PATH)`, the one-line form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.span.line_number(),
            self.span.column_number(),
            self.severity,
            self.message
        )?;
        if !self.path.is_empty() {
            write!(f, " (at {})", self.path)?;
        }
        Ok(())
    }
}

/// The line as shown (tabs expanded to four spaces) and where the carets go on it.
fn caret_geometry(text: &str, span: Span) -> (String, usize, usize) {
    let mut shown = String::new();
    let mut caret_col = 0;
    let mut caret_len = 0;
    // The span's length counts bytes of the source; only the part on this line is underlined.
    let start_byte = text
        .char_indices()
        .nth(span.col)
        .map(|(i, _)| i)
        .unwrap_or(text.len());
    let end_byte = (start_byte + span.len).min(text.len());
    for (i, c) in text.char_indices() {
        let cells = if c == '\t' { 4 } else { 1 };
        if i < start_byte {
            caret_col += cells;
        } else if i < end_byte {
            caret_len += cells;
        }
        if c == '\t' {
            shown.push_str("    ");
        } else {
            shown.push(c);
        }
    }
    cut_around(shown, caret_col, caret_len.max(1))
}

/// The most cells of a line a snippet shows; a longer line is cut around the error.
const MAX_SHOWN: usize = 120;
/// How many cells before the error a cut line keeps.
const BEFORE_ERROR: usize = 40;
/// What stands for the cut-off part of a line.
const ELLIPSIS: &str = "...";

/// A line longer than [`MAX_SHOWN`] cells (a 200 KB minified line) cut to a window around the
/// carets, with `...` where it was cut; shorter lines are shown whole.
fn cut_around(shown: String, caret_col: usize, caret_len: usize) -> (String, usize, usize) {
    let cells: Vec<char> = shown.chars().collect();
    if cells.len() <= MAX_SHOWN {
        return (shown, caret_col, caret_len);
    }
    let start = caret_col.saturating_sub(BEFORE_ERROR);
    let end = (start + MAX_SHOWN).min(cells.len());
    // Near the end of the line, the window slides back to stay full.
    let start = start.min(end.saturating_sub(MAX_SHOWN));
    let mut text = String::new();
    let mut col = caret_col - start;
    if start > 0 {
        text.push_str(ELLIPSIS);
        col += ELLIPSIS.len();
    }
    text.extend(&cells[start..end]);
    if end < cells.len() {
        text.push_str(ELLIPSIS);
    }
    // Carets stop where the window does.
    let len = caret_len.min(end.saturating_sub(caret_col)).max(1);
    (text, col, len)
}

const RED: &str = "\x1b[1;31m";
const YELLOW: &str = "\x1b[1;33m";
const BLUE: &str = "\x1b[1;34m";
const BOLD: &str = "\x1b[1m";

struct Paint {
    on: bool,
}

impl Paint {
    fn style(&self, text: &str, code: &str) -> String {
        if self.on {
            format!("{code}{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_snippet_with_carets_and_hint() {
        let source = "version: 0.2\nphases:\n  build:\n    commands:\n      - echo a: b\n";
        let diagnostic = Diagnostic::error(
            "wrong-type",
            "phases.build.commands[0]",
            Span {
                offset: 44,
                len: 9,
                line: 4,
                col: 8,
            },
            "expected a string, found a mapping",
        )
        .with_label("this command is a mapping")
        .with_help("quote it");
        let text = diagnostic.render(source, "buildspec.yml", false);
        assert_eq!(
            text,
            "error: expected a string, found a mapping\n \
             --> buildspec.yml:5:9\n  \
             |\n\
             5 |       - echo a: b\n  \
             |         ^^^^^^^^^ this command is a mapping\n  \
             |\n  \
             = at: phases.build.commands[0]\n  \
             = help: quote it\n"
        );
    }

    #[test]
    fn tabs_are_expanded_and_carets_follow() {
        let (shown, col, len) = caret_geometry(
            "\tx: y",
            Span {
                offset: 1,
                len: 1,
                line: 0,
                col: 1,
            },
        );
        assert_eq!(shown, "    x: y");
        assert_eq!((col, len), (4, 1));
    }

    #[test]
    fn the_snippet_is_the_line_of_the_span_whatever_the_line_ends() {
        // A lone CR is a line break for YAML, so for the spans too (`\r\r\n` is two breaks).
        let source = "version: 0.2\r\r\nphases:\r  build:\r    commands:\r      - echo a: b\r";
        let parsed = crate::parse(source, &crate::ParseOptions::default());
        let error = parsed.errors().next().unwrap();
        assert_eq!(error.span.line_number(), 6);
        let text = error.render(source, "buildspec.yml", false);
        assert!(
            text.contains("6 |       - echo a: b\n  |         ^^^^^^^^^ "),
            "{text}"
        );
    }

    #[test]
    fn a_200_kb_line_is_cut_around_the_error_column() {
        // A flow sequence of 20,000 commands on one line, the last a mapping: the error is at
        // the far end of a 200 KB line.
        let items = "\"echo x\", ".repeat(20_000);
        let line = format!("    commands: [{items}{{a: b}}]");
        assert!(line.len() > 200_000);
        let source = format!("version: 0.2\nphases:\n  build:\n{line}\n");
        let parsed = crate::parse(&source, &crate::ParseOptions::default());
        let error = parsed.errors().next().expect("an error");
        assert_eq!(error.span.line_number(), 4);
        assert!(error.span.column_number() > 200_000);
        let text = error.render(&source, "buildspec.yml", false);
        assert!(text.len() < 1_000, "{} bytes:\n{text}", text.len());
        let snippet = text.lines().find(|l| l.starts_with("4 | ")).unwrap();
        let carets = text.lines().find(|l| l.contains('^')).unwrap();
        assert!(snippet.starts_with("4 | ..."), "{snippet}");
        assert!(snippet.contains("\"echo x\", \"echo x\", "), "{snippet}");
        assert!(snippet.ends_with("{a: b}]"), "{snippet}");
        assert!(snippet.chars().count() <= 4 + ELLIPSIS.len() + MAX_SHOWN);
        // The carets are under the mapping.
        let at = carets.find('^').unwrap();
        assert_eq!(&snippet[at..at + 6], "{a: b}", "{snippet}\n{carets}");
        // The `-->` line still gives the real column.
        assert!(text.contains(&format!(
            "--> buildspec.yml:4:{}",
            error.span.column_number()
        )));
    }

    #[test]
    fn an_error_in_the_middle_of_a_long_line_is_shown_with_both_ends_cut() {
        let text = format!("{}BAD{}", "a".repeat(100_000), "z".repeat(100_000));
        let span = Span {
            offset: 100_000,
            len: 3,
            line: 0,
            col: 100_000,
        };
        let (shown, col, len) = caret_geometry(&text, span);
        assert_eq!(shown.len(), ELLIPSIS.len() * 2 + MAX_SHOWN);
        assert!(
            shown.starts_with("...aaa") && shown.ends_with("zzz..."),
            "{shown}"
        );
        assert_eq!(&shown[col..col + len], "BAD");
        assert_eq!(col, ELLIPSIS.len() + BEFORE_ERROR);
        // A short line is whole.
        let (shown, col, len) = caret_geometry(
            "  x: BAD",
            Span {
                offset: 5,
                len: 3,
                line: 0,
                col: 5,
            },
        );
        assert_eq!((shown.as_str(), col, len), ("  x: BAD", 5, 3));
    }

    #[test]
    fn a_related_place_is_shown_too() {
        let source = "a: 1\nb: 2\na: 3\n";
        let diagnostic = Diagnostic::error(
            "duplicate-key",
            "a",
            Span {
                offset: 10,
                len: 1,
                line: 2,
                col: 0,
            },
            "duplicate key `a`",
        )
        .with_label("defined again here")
        .with_related(
            Span {
                offset: 0,
                len: 1,
                line: 0,
                col: 0,
            },
            "first defined here",
        );
        let text = diagnostic.render(source, "b.yml", false);
        assert!(
            text.contains("1 | a: 1\n  | ^ first defined here\n3 | a: 3\n  | ^ defined again here"),
            "{text}"
        );
    }
}
