//! Any bytes, read as a buildspec strictly and leniently: the reader must not panic, every
//! diagnostic's spans must lie inside the text (on character boundaries) with a line and column
//! that agree with the offset, and every diagnostic must render, showing the line it is on.

#![no_main]

use buildagent_spec::{parse, Diagnostic, ParseOptions, Span};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for strict in [false, true] {
        let parsed = parse(&text, &ParseOptions { strict });
        for diagnostic in &parsed.diagnostics {
            check(&text, diagnostic);
        }
        assert_eq!(
            parsed.is_valid(),
            parsed.errors().next().is_none(),
            "a model is returned exactly when there is no error"
        );
    }
});

fn check(text: &str, diagnostic: &Diagnostic) {
    check_span(text, diagnostic.span, diagnostic);
    if let Some(related) = &diagnostic.related {
        check_span(text, related.span, diagnostic);
    }
    let plain = diagnostic.render(text, "buildspec.yml", false);
    assert!(plain.contains(&diagnostic.message));
    let (start, end) = line_bounds(text, diagnostic.span.offset);
    let shown = format!(
        "{} | {}\n",
        diagnostic.span.line_number(),
        text[start..end].replace('\t', "    ")
    );
    assert!(
        plain.contains(&shown),
        "the snippet is not the span's line {shown:?}:\n{plain}"
    );
    let _ = diagnostic.render(text, "buildspec.yml", true);
    let _ = diagnostic.to_string();
}

fn check_span(text: &str, span: Span, diagnostic: &Diagnostic) {
    let end = span.offset.checked_add(span.len);
    assert!(
        end.is_some_and(|end| end <= text.len()),
        "span {span:?} is outside the text ({} bytes): {diagnostic:?}",
        text.len()
    );
    assert!(
        text.is_char_boundary(span.offset) && text.is_char_boundary(span.offset + span.len),
        "span {span:?} cuts a character: {diagnostic:?}"
    );
    // The line and column say where the offset is (a column past the end of its line is
    // clamped to the line's end by the offset).
    let (start, end) = line_bounds(text, span.offset);
    let line = text.as_bytes()[..start]
        .iter()
        .enumerate()
        .filter(|&(i, &b)| is_break(text.as_bytes(), i, b))
        .count();
    assert_eq!(
        line, span.line,
        "span {span:?} is not on its line: {diagnostic:?}"
    );
    let col = text[start..span.offset].chars().count();
    assert!(
        col == span.col || (span.offset == end && span.col > col),
        "span {span:?} is not at its column {col}: {diagnostic:?}"
    );
}

/// YAML line breaks: LF, and CR when no LF follows it (CRLF counts once, at its LF).
fn is_break(bytes: &[u8], i: usize, b: u8) -> bool {
    b == b'\n' || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n'))
}

/// The byte range of the line that holds `offset`, without its line break.
fn line_bounds(text: &str, offset: usize) -> (usize, usize) {
    let bytes = text.as_bytes();
    let start = (0..offset)
        .rev()
        .find(|&i| is_break(bytes, i, bytes[i]))
        .map_or(0, |i| i + 1);
    let end = (start..bytes.len())
        .find(|&i| matches!(bytes[i], b'\n' | b'\r'))
        .unwrap_or(bytes.len());
    (start, end)
}
