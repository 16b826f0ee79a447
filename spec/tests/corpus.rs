//! The real-world corpus in `../shared/corpus` (250 buildspecs from public repositories):
//! every file is handled without a panic, every valid one is accepted, every invalid one is
//! rejected with an error on the line that is wrong. The files are read in place; they are not
//! part of this repository.

use std::path::PathBuf;

use buildagent_spec::{parse, ParseOptions};

fn corpus_dir() -> PathBuf {
    // Read when the test runs, not when it is compiled: clones sharing a target directory reuse
    // each other's test binaries, and a compiled-in path would point at the clone that built them.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .expect("run by cargo, which sets CARGO_MANIFEST_DIR");
    let dir = PathBuf::from(manifest).join("../../shared/corpus");
    assert!(
        dir.join("INDEX.tsv").is_file(),
        "the shared corpus is missing at {}: it must sit beside the repository as ../shared/corpus",
        dir.display()
    );
    dir
}

/// The line (1-based) of the error each invalid file must get, and a piece of its message.
/// YAML syntax errors take their line from INDEX.tsv (`at line N col M`); the others were
/// read off the files by hand.
fn expected_error(file: &str, notes: &str) -> (usize, &'static str) {
    if let Some(at) = notes.split(" at line ").nth(1) {
        let line = at.split_whitespace().next().unwrap().parse().unwrap();
        return (line, "invalid YAML");
    }
    match file {
        // `phases:` is empty (the phases under it are not indented).
        "020.yml" => (6, "`phases` is empty"),
        // No `phases` at all (and no `batch`).
        "040.yml" | "243.yml" => (1, "missing `phases`"),
        // `commands:` repeated at the top level (lines 4 and 7).
        "110.yml" => (7, "defined twice (first on line 4)"),
        // `key:` repeated under env.variables (lines 8 and 9).
        "153.yml" => (9, "defined twice (first on line 8)"),
        // `commands:` is not indented under `pre_build:`, so it reads as a phase name.
        "175.yml" => (5, "invalid buildspec phase name `commands`"),
        other => panic!("{other} is invalid in INDEX.tsv but has no expectation here"),
    }
}

#[test]
fn corpus_files_are_judged_as_the_index_says() {
    let dir = corpus_dir();
    let index = std::fs::read_to_string(dir.join("INDEX.tsv")).unwrap();
    let (mut valid, mut invalid, mut failures) = (0, 0, Vec::new());
    for row in index.lines().skip(1) {
        let cols: Vec<&str> = row.split('\t').collect();
        let (file, notes, expect) = (cols[0], cols[5], cols[6]);
        let source = std::fs::read_to_string(dir.join(file)).unwrap();
        let parsed = parse(&source, &ParseOptions::default());
        match expect {
            "valid" => {
                valid += 1;
                if !parsed.is_valid() {
                    let errors: Vec<String> = parsed.errors().map(|e| e.to_string()).collect();
                    failures.push(format!("{file}: valid, but rejected: {errors:?}"));
                }
            }
            "invalid" => {
                invalid += 1;
                let (line, message) = expected_error(file, notes);
                if parsed.is_valid() {
                    failures.push(format!("{file}: invalid ({notes}), but accepted"));
                } else if !parsed
                    .errors()
                    .any(|e| e.span.line_number() == line && e.message.contains(message))
                {
                    let errors: Vec<String> = parsed.errors().map(|e| e.to_string()).collect();
                    failures.push(format!(
                        "{file}: expected an error on line {line} containing {message:?}, got {errors:?}"
                    ));
                }
            }
            other => panic!("unknown expectation {other:?} for {file}"),
        }
    }
    assert_eq!(valid + invalid, 250, "the corpus should have 250 files");
    assert!(
        failures.is_empty(),
        "{} of 250 files judged wrongly:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("corpus: {valid} valid accepted, {invalid} invalid rejected at the right line");
}

#[test]
fn corpus_files_do_not_panic_in_strict_mode_or_when_cut_short() {
    let dir = corpus_dir();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    for path in files {
        let source = std::fs::read_to_string(&path).unwrap();
        let strict = parse(&source, &ParseOptions { strict: true });
        let lenient = parse(&source, &ParseOptions::default());
        // Strict mode only ever turns warnings into errors.
        assert!(
            !strict.is_valid() || lenient.is_valid(),
            "{}: strict accepted what lenient rejected",
            path.display()
        );
        // Every prefix of the file (cut at character boundaries) is handled without a panic,
        // and every diagnostic points inside the text.
        for cut in (0..source.len())
            .step_by(7)
            .filter(|i| source.is_char_boundary(*i))
        {
            let text = &source[..cut];
            for d in parse(text, &ParseOptions::default()).diagnostics {
                assert!(
                    d.span.offset <= text.len(),
                    "{}: span past the end",
                    path.display()
                );
                let _ = d.render(text, "x.yml", false);
            }
        }
    }
}
