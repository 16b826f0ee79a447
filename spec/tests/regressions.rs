//! Inputs the fuzzer (`fuzz/`, target `parse`) found to break the reader's promises, minimised.
//! Each must parse without a panic, with spans inside the text whose line and column agree
//! with their offset, and with diagnostics that show the line they are on.

use buildagent_spec::{parse, Diagnostic, ParseOptions};

/// Parses `source` strictly and leniently, checks every diagnostic the way the fuzz target
/// does, and returns the lenient diagnostics.
fn diagnostics(source: &str) -> Vec<Diagnostic> {
    let strict = parse(source, &ParseOptions { strict: true });
    let lenient = parse(source, &ParseOptions::default());
    for d in strict.diagnostics.iter().chain(&lenient.diagnostics) {
        let span = d.span;
        assert!(span.offset + span.len <= source.len(), "{d:?}");
        let before = &source[..span.offset];
        let line = before.matches('\n').count() + before.matches('\r').count()
            - before.matches("\r\n").count();
        assert_eq!(line, span.line, "{d:?}");
        let line_start = before.rfind(['\n', '\r']).map_or(0, |i| i + 1);
        assert_eq!(before[line_start..].chars().count(), span.col, "{d:?}");
        let text = d.render(source, "buildspec.yml", false);
        let line_end = source[line_start..]
            .find(['\n', '\r'])
            .map_or(source.len(), |i| line_start + i);
        let shown = format!(
            "{} | {}\n",
            span.line_number(),
            &source[line_start..line_end]
        );
        assert!(text.contains(&shown), "expected {shown:?} in\n{text}");
    }
    lenient.diagnostics
}

/// A YAML error at the end of a file without a final line break: the parser puts it on the
/// line after the last one, which the span must clamp to the end of the text.
#[test]
fn yaml_error_at_the_end_of_a_file_without_a_final_line_break() {
    let d = diagnostics("%a ");
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].code, "yaml");
    assert_eq!((d[0].span.line_number(), d[0].span.column_number()), (1, 4));
}
