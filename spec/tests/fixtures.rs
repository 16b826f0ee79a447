//! The buildspecs in `testdata/buildspecs`: each `valid/*.yml` is accepted and each
//! `invalid/*.yml` rejected, and every file's diagnostics, rendered as `buildagent validate`
//! shows them, match its `.expected` file exactly.
//!
//! After an intended change to a message, regenerate with `BLESS=1 cargo test --test fixtures`
//! and review the diff.

use std::path::{Path, PathBuf};

use buildagent_spec::{parse, ParseOptions};

fn fixtures(kind: &str) -> Vec<PathBuf> {
    // Read when the test runs, not when it is compiled: clones sharing a target directory reuse
    // each other's test binaries, and a compiled-in path would point at the clone that built them.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .expect("run by cargo, which sets CARGO_MANIFEST_DIR");
    let dir = Path::new(&manifest)
        .join("../testdata/buildspecs")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

fn check(kind: &str, valid: bool) {
    let bless = std::env::var_os("BLESS").is_some();
    let mut failures = Vec::new();
    for file in fixtures(kind) {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let source = std::fs::read_to_string(&file).unwrap();
        let parsed = parse(&source, &ParseOptions::default());
        if parsed.is_valid() != valid {
            let all: Vec<String> = parsed.diagnostics.iter().map(|d| d.to_string()).collect();
            failures.push(format!(
                "{name}: expected valid={valid}, diagnostics: {all:?}"
            ));
            continue;
        }
        let rendered: String = parsed
            .diagnostics
            .iter()
            .map(|d| d.render(&source, &name, false) + "\n")
            .collect();
        let expected_path = file.with_extension("expected");
        if bless {
            if rendered.is_empty() {
                let _ = std::fs::remove_file(&expected_path);
            } else {
                std::fs::write(&expected_path, &rendered).unwrap();
            }
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if !valid && expected.is_empty() {
            failures.push(format!(
                "{name}: an invalid fixture needs its expected message in {}",
                expected_path.display()
            ));
        } else if rendered != expected {
            failures.push(format!(
                "{name}: diagnostics differ\n--- expected\n{expected}--- got\n{rendered}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn valid_fixtures_are_accepted_with_the_expected_warnings() {
    check("valid", true);
}

#[test]
fn invalid_fixtures_are_rejected_with_the_expected_messages() {
    check("invalid", false);
}
