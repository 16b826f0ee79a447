//! Test reports: each report group's files are collected after POST_BUILD (with the artifact glob
//! rules: [`crate::artifacts::collect`]), parsed ([`parse`]) and summarised; with a reports
//! directory the raw files are copied to `DIR/<group>/...` and `DIR/summary.json` is written.
//!
//! Test formats: JUNITXML, CUCUMBERJSON, TESTNGXML, NUNITXML, NUNIT3XML, VISUALSTUDIOTRX. Coverage
//! formats (CLOVERXML, COBERTURAXML, JACOCOXML, SIMPLECOV) are copied and their line coverage is
//! read. A missing or unreadable report file is a warning, never a failed build; neither are
//! failed tests.

pub mod parse;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use buildagent_spec::{ArtifactSet, ReportFormat, ReportGroup};
use serde::Serialize;

use crate::artifacts::{self, CollectOptions, Note};
pub use parse::{Parsed, Status, TestCase};

/// The counts of one report group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Test cases.
    pub total: usize,
    /// Passed ones.
    pub passed: usize,
    /// Failed ones.
    pub failed: usize,
    /// Skipped ones.
    pub skipped: usize,
    /// Ones that ended with an error.
    pub errors: usize,
    /// The sum of the test cases' durations, in seconds.
    pub duration: f64,
}

impl Totals {
    fn add(&mut self, case: &TestCase) {
        self.total += 1;
        match case.status {
            Status::Passed => self.passed += 1,
            Status::Failed => self.failed += 1,
            Status::Skipped => self.skipped += 1,
            Status::Error => self.errors += 1,
        }
        self.duration += case.duration.unwrap_or(0.0);
    }

    /// The duration as a [`Duration`].
    pub fn duration(&self) -> Duration {
        Duration::try_from_secs_f64(self.duration).unwrap_or_default()
    }
}

/// One processed report group.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GroupReport {
    /// The group's name (the key under `reports`).
    pub name: String,
    /// The file format (`JUNITXML`...).
    #[serde(serialize_with = "ser_format")]
    pub format: ReportFormat,
    /// The counts.
    #[serde(flatten)]
    pub totals: Totals,
    /// Line coverage in percent (coverage formats), averaged over the files that give it.
    pub line_coverage: Option<f64>,
    /// The group's directory in the reports directory (see [`dir_name`]).
    pub directory: String,
    /// The report files, as named in the group (relative to the base directory).
    pub files: Vec<String>,
    /// Every test case, file after file.
    pub cases: Vec<TestCase>,
}

fn ser_format<S: serde::Serializer>(f: &ReportFormat, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(f.as_str())
}

/// The directory name of a group in the reports directory: the name with characters other than
/// letters, digits, `.`, `_` and `-` replaced by `_` (an ARN keeps its last `/` part).
pub fn dir_name(group: &str) -> String {
    let last = group.rsplit('/').next().unwrap_or(group);
    let name: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name == "." || name == ".." {
        "_".to_string()
    } else {
        name
    }
}

/// Collects, parses and summarises every group; warnings go to `warn`. With `out`, copies the
/// files to `out/<group>/` and writes `out/summary.json` (each atomically).
pub fn process(
    groups: &[ReportGroup],
    source_dir: &Path,
    out: Option<&Path>,
    lookup: &dyn Fn(&str) -> Option<String>,
    warn: &mut dyn FnMut(String),
) -> Vec<GroupReport> {
    let mut reports = Vec::new();
    for group in groups {
        let name = group.name.value.clone();
        let format = group
            .file_format
            .as_ref()
            .map(|f| f.value)
            .unwrap_or(ReportFormat::JunitXml);
        let mut base_directory = group.base_directory.clone();
        if let Some(base) = &mut base_directory {
            base.value = artifacts::expand_vars(&base.value, lookup);
        }
        let set = ArtifactSet {
            files: group.files.clone(),
            base_directory,
            discard_paths: group.discard_paths,
            ..ArtifactSet::default()
        };
        let mut options = CollectOptions::new(source_dir);
        if let Some(out) = out {
            options.skip(out);
        }
        let entries = artifacts::collect(&set, &options, &mut |note| {
            if let Note::Warning(w) = note {
                warn(format!("report group {name}: {w}"));
            }
        });
        let entries = match entries {
            Ok(entries) => entries,
            Err(artifacts::ArtifactError::NoMatchingPaths) => {
                warn(format!("report group {name}: no report files found"));
                Vec::new()
            }
            Err(e) => {
                warn(format!("report group {name}: {e}"));
                Vec::new()
            }
        };
        let mut report = GroupReport {
            name: name.clone(),
            format,
            totals: Totals::default(),
            line_coverage: None,
            directory: dir_name(&name),
            files: Vec::new(),
            cases: Vec::new(),
        };
        let mut coverages = Vec::new();
        let group_dir = out.map(|o| o.join(dir_name(&name)));
        // The group's directory holds this build's files only: what an earlier run left there
        // (files since deleted or renamed) would otherwise pass for this build's reports.
        if let Some(dir) = &group_dir {
            match std::fs::remove_dir_all(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => warn(format!(
                    "report group {name}: cannot clear {} from an earlier run: {e}",
                    dir.display()
                )),
            }
        }
        for entry in entries {
            let bytes = match std::fs::read(&entry.path) {
                Ok(b) => b,
                Err(e) => {
                    warn(format!(
                        "report group {name}: cannot read {}: {e}",
                        entry.path.display()
                    ));
                    continue;
                }
            };
            match parse::parse(format, &bytes) {
                Ok(parsed) => {
                    for case in &parsed.cases {
                        report.totals.add(case);
                    }
                    report.cases.extend(parsed.cases);
                    coverages.extend(parsed.line_coverage);
                }
                Err(e) => warn(format!(
                    "report group {name}: cannot parse {} as {} at line {}: {}",
                    entry.name,
                    format.as_str(),
                    e.line,
                    e.message
                )),
            }
            if let Some(dir) = &group_dir {
                if let Err(e) = write_atomic(&dir.join(&entry.name), &bytes) {
                    warn(format!(
                        "report group {name}: cannot copy {} to {}: {e}",
                        entry.name,
                        dir.display()
                    ));
                }
            }
            report.files.push(entry.name);
        }
        if !coverages.is_empty() {
            report.line_coverage = Some(coverages.iter().sum::<f64>() / coverages.len() as f64);
        }
        reports.push(report);
    }
    if let Some(out) = out {
        let summary = Summary { groups: &reports };
        let written = serde_json::to_vec_pretty(&summary)
            .map_err(std::io::Error::other)
            .and_then(|mut json| {
                json.push(b'\n');
                write_atomic(&out.join("summary.json"), &json)
            });
        if let Err(e) = written {
            warn(format!(
                "cannot write {}: {e}",
                out.join("summary.json").display()
            ));
        }
    }
    reports
}

/// The shape of `summary.json`.
#[derive(Serialize)]
struct Summary<'a> {
    groups: &'a [GroupReport],
}

/// Writes `path` through a temporary file in its directory and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The log line of a group: `Report group unit: 12 tests, 11 passed, 1 failed, 0 skipped, 0 errors (1.23 s)`.
pub fn summary_line(
    group: &str,
    totals: &Totals,
    line_coverage: Option<f64>,
    coverage_format: bool,
) -> String {
    if coverage_format {
        return match line_coverage {
            Some(p) => format!("Report group {group}: line coverage {p:.2}%"),
            None => format!("Report group {group}: coverage report (line coverage not read)"),
        };
    }
    format!(
        "Report group {group}: {} tests, {} passed, {} failed, {} skipped, {} errors ({:.2} s)",
        totals.total, totals.passed, totals.failed, totals.skipped, totals.errors, totals.duration
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use buildagent_spec::Spanned;

    fn group(name: &str, files: &[&str], base: Option<&str>, discard: bool) -> ReportGroup {
        ReportGroup {
            name: Spanned::new(name.to_string(), Default::default()),
            files: files
                .iter()
                .map(|f| Spanned::new(f.to_string(), Default::default()))
                .collect(),
            base_directory: base.map(|b| Spanned::new(b.to_string(), Default::default())),
            discard_paths: discard,
            file_format: None,
        }
    }

    #[test]
    fn dir_names() {
        assert_eq!(dir_name("unit"), "unit");
        assert_eq!(
            dir_name("arn:aws:codebuild:us-east-1:123:report-group/my-tests"),
            "my-tests"
        );
        assert_eq!(dir_name("a b:c"), "a_b_c");
        assert_eq!(dir_name(".."), "_");
    }

    #[test]
    fn groups_are_collected_parsed_and_written() {
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("build/a")).unwrap();
        std::fs::write(
            src.path().join("build/a/one.xml"),
            r#"<testsuite><testcase name="x" time="1"/><testcase name="y"><error/></testcase></testsuite>"#,
        )
        .unwrap();
        std::fs::write(src.path().join("build/bad.xml"), "<testsuite>\n<testcase>").unwrap();
        let groups = [
            group("unit", &["**/*.xml"], Some("$DIR"), true),
            group("none", &["missing.xml"], None, false),
        ];
        let lookup = |name: &str| (name == "DIR").then(|| "build".to_string());
        let mut warnings = Vec::new();
        let reports = process(&groups, src.path(), Some(out.path()), &lookup, &mut |w| {
            warnings.push(w)
        });
        assert_eq!(reports.len(), 2);
        let unit = &reports[0];
        assert_eq!(unit.files, ["bad.xml", "one.xml"]);
        assert_eq!(
            (unit.totals.total, unit.totals.passed, unit.totals.errors),
            (2, 1, 1)
        );
        assert_eq!(unit.totals.duration, 1.0);
        assert_eq!(reports[1].totals, Totals::default());
        assert!(
            warnings
                .iter()
                .any(|w| w
                    .starts_with("report group unit: cannot parse bad.xml as JUNITXML at line 2")),
            "{warnings:?}"
        );
        assert!(
            warnings
                .iter()
                .any(|w| w == "report group none: no report files found"),
            "{warnings:?}"
        );
        assert!(out.path().join("unit/one.xml").is_file());
        assert!(out.path().join("unit/bad.xml").is_file());
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.path().join("summary.json")).unwrap())
                .unwrap();
        assert_eq!(summary["groups"][0]["cases"][1]["status"], "error");
        assert_eq!(summary["groups"][1]["name"], "none");
    }

    #[test]
    fn a_groups_directory_holds_only_this_runs_files() {
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("new.xml"), "<testsuite/>").unwrap();
        std::fs::create_dir_all(out.path().join("unit")).unwrap();
        std::fs::write(out.path().join("unit/old.xml"), "<testsuite/>").unwrap();
        std::fs::write(out.path().join("other.txt"), "kept").unwrap();
        let groups = [group("unit", &["*.xml"], None, false)];
        let reports = process(
            &groups,
            src.path(),
            Some(out.path()),
            &|_| None,
            &mut |_| {},
        );
        assert_eq!(reports[0].files, ["new.xml"]);
        assert!(out.path().join("unit/new.xml").is_file());
        assert!(!out.path().join("unit/old.xml").exists());
        // Only the group's own directory is cleared.
        assert!(out.path().join("other.txt").is_file());
    }

    #[test]
    fn summary_lines() {
        let totals = Totals {
            total: 12,
            passed: 11,
            failed: 1,
            duration: 1.234,
            ..Totals::default()
        };
        assert_eq!(
            summary_line("unit", &totals, None, false),
            "Report group unit: 12 tests, 11 passed, 1 failed, 0 skipped, 0 errors (1.23 s)"
        );
        assert_eq!(
            summary_line("cov", &Totals::default(), Some(87.5), true),
            "Report group cov: line coverage 87.50%"
        );
    }
}
