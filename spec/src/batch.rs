//! Checks of a `batch` section that depend on how the batch is run: how many builds it makes
//! against the most a run allows (`--max-builds`, CodeBuild's `maximumBuildsAllowed`).
//!
//! The parser already checks what the file alone decides (one kind of batch, identifiers,
//! `depend-on` targets, cycles); [`check`] adds the build count, which needs the limit of the run.
//!
//! ```
//! use buildagent_spec::{batch, parse, ParseOptions};
//!
//! let source = "version: 0.2\nbatch:\n  build-fanout:\n    parallelism: 150\n";
//! let spec = parse(source, &ParseOptions::default()).buildspec.unwrap();
//! let batch = spec.batch.as_ref().unwrap();
//! assert_eq!(batch::build_count(batch), 150);
//! let problems = batch::check(batch, batch::DEFAULT_MAX_BUILDS);
//! assert_eq!(problems[0].code, "too-many-builds");
//! assert_eq!((problems[0].span.line_number(), problems[0].span.column_number()), (4, 18));
//! assert!(batch::check(batch, 150).is_empty());
//! ```

use crate::diagnostic::Diagnostic;
use crate::model::{Batch, BatchBuilds, BuildMatrix};
use crate::span::Span;

/// The most builds a batch may make unless the run allows more (CodeBuild's example
/// `maximumBuildsAllowed`).
pub const DEFAULT_MAX_BUILDS: usize = 100;

/// The longest identifier allowed is one character shorter than this (CodeBuild: "less than 128
/// characters in length").
pub const IDENTIFIER_LIMIT: usize = 128;

/// Why `identifier` cannot name a batch build, or `None` when it can: letters, digits and `_`,
/// at least one and fewer than [`IDENTIFIER_LIMIT`] characters.
pub fn identifier_problem(identifier: &str) -> Option<String> {
    if identifier.is_empty() {
        return Some("it is empty".to_string());
    }
    if let Some(c) = identifier
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
    {
        return Some(format!("`{c}` is not a letter, digit or `_`"));
    }
    if identifier.len() >= IDENTIFIER_LIMIT {
        return Some(format!(
            "it has {} characters, the limit is {}",
            identifier.len(),
            IDENTIFIER_LIMIT - 1
        ));
    }
    None
}

/// How many builds the batch makes: the tasks of a list or graph, the product of a matrix's
/// dynamic values, a fanout's `parallelism`. A batch without builds makes none.
pub fn build_count(batch: &Batch) -> usize {
    match &batch.builds {
        None => 0,
        Some(BatchBuilds::BuildList(tasks) | BatchBuilds::BuildGraph(tasks)) => tasks.len(),
        Some(BatchBuilds::BuildMatrix(matrix)) => matrix_axes(matrix)
            .iter()
            .map(|(_, values, _)| *values)
            .fold(1usize, |n, v| n.saturating_mul(v)),
        Some(BatchBuilds::BuildFanout(fanout)) => fanout.parallelism.value as usize,
    }
}

/// Each dynamic axis of a matrix: its key path, how many values it has, and the span of its
/// first value (or `None` when it has none).
fn matrix_axes(matrix: &BuildMatrix) -> Vec<(String, usize, Option<Span>)> {
    let mut axes = Vec::new();
    let Some(dynamic) = &matrix.dynamic else {
        return axes;
    };
    let first = |values: &[crate::span::Spanned<String>]| values.first().map(|v| v.span);
    if !dynamic.buildspec.is_empty() {
        axes.push((
            "dynamic.buildspec".to_string(),
            dynamic.buildspec.len(),
            first(&dynamic.buildspec),
        ));
    }
    if !dynamic.env.image.is_empty() {
        axes.push((
            "dynamic.env.image".to_string(),
            dynamic.env.image.len(),
            first(&dynamic.env.image),
        ));
    }
    if !dynamic.env.compute_type.is_empty() {
        axes.push((
            "dynamic.env.compute-type".to_string(),
            dynamic.env.compute_type.len(),
            first(&dynamic.env.compute_type),
        ));
    }
    for v in &dynamic.env.variables {
        axes.push((
            format!("dynamic.env.variables.{}", v.name.value),
            v.values.len(),
            first(&v.values).or(Some(v.name.span)),
        ));
    }
    axes
}

/// The problems of running `batch` with at most `max_builds` builds: more builds than that, or a
/// matrix whose product is empty (a dynamic list without values). Errors point at the value that
/// makes the count: the first task past the limit, `parallelism`, or a matrix's first axis.
pub fn check(batch: &Batch, max_builds: usize) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    let count = build_count(batch);
    let help = format!(
        "split the batch, or allow more builds with `--max-builds {count}` (the default limit is {DEFAULT_MAX_BUILDS})"
    );
    match &batch.builds {
        None => {}
        Some(BatchBuilds::BuildList(tasks) | BatchBuilds::BuildGraph(tasks)) => {
            let kind = match &batch.builds {
                Some(BatchBuilds::BuildList(_)) => "build-list",
                _ => "build-graph",
            };
            if count > max_builds {
                let over = &tasks[max_builds];
                problems.push(
                    Diagnostic::error(
                        "too-many-builds",
                        format!("batch.{kind}[{max_builds}]"),
                        over.identifier.span,
                        format!("the batch has {count} builds, more than the {max_builds} allowed"),
                    )
                    .with_label(format!("build {} of {count}", max_builds + 1))
                    .with_help(help),
                );
            }
        }
        Some(BatchBuilds::BuildMatrix(matrix)) => {
            let axes = matrix_axes(matrix);
            if let Some((path, _, span)) = axes.iter().find(|(_, n, _)| *n == 0) {
                problems.push(Diagnostic::error(
                    "empty-matrix",
                    format!("batch.build-matrix.{path}"),
                    span.unwrap_or_default(),
                    format!("`{path}` has no values, so the matrix has no builds"),
                ));
            } else if count > max_builds {
                let sizes: Vec<String> = axes.iter().map(|(_, n, _)| n.to_string()).collect();
                let (path, _, span) = &axes[0];
                problems.push(
                    Diagnostic::error(
                        "too-many-builds",
                        format!("batch.build-matrix.{path}"),
                        span.unwrap_or_default(),
                        format!(
                            "the matrix makes {} = {count} builds, more than the {max_builds} allowed",
                            sizes.join(" x ")
                        ),
                    )
                    .with_help(help),
                );
            }
        }
        Some(BatchBuilds::BuildFanout(fanout)) if count > max_builds => {
            problems.push(
                Diagnostic::error(
                    "too-many-builds",
                    "batch.build-fanout.parallelism",
                    fanout.parallelism.span,
                    format!(
                        "`parallelism` {count} makes more builds than the {max_builds} allowed"
                    ),
                )
                .with_help(help),
            );
        }
        Some(BatchBuilds::BuildFanout(_)) => {}
    }
    problems
}
