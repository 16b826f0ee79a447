//! Any bytes, read as a buildspec strictly and leniently: the reader must not panic, every
//! diagnostic's spans must lie inside the text (on character boundaries), and every diagnostic
//! must render.

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
}
