//! Source positions: where in the buildspec a value came from.

use std::fmt;
use std::ops::Deref;

use serde::{Serialize, Serializer};

/// A region of the buildspec source.
///
/// Positions are stored 0-based and shown 1-based (see [`Span::line_number`] and
/// [`Span::column_number`]), the way rustc and `just` keep them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Span {
    /// Byte offset of the first byte of the region.
    pub offset: usize,
    /// Length of the region in bytes (may be 0 for a point, such as the end of the file).
    pub len: usize,
    /// Line of the first byte, 0-based.
    pub line: usize,
    /// Column of the first byte in characters, 0-based.
    pub col: usize,
}

impl Span {
    /// The 1-based line number, as shown to people.
    pub fn line_number(&self) -> usize {
        self.line + 1
    }

    /// The 1-based column number (in characters), as shown to people.
    pub fn column_number(&self) -> usize {
        self.col + 1
    }
}

/// A value together with the place in the source it was read from.
///
/// Two `Spanned` values compare equal when their values are equal: the span is where a value
/// came from, not part of what it is. This lets a model parsed from one file be compared with
/// a model built in code or parsed from another rendering of the same buildspec.
#[derive(Clone, Debug, Default)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub span: Span,
}

impl<T> Spanned<T> {
    /// Wraps a value with a span.
    pub fn new(value: T, span: Span) -> Spanned<T> {
        Spanned { value, span }
    }

    /// Wraps a value that was not read from any source (its span is empty).
    pub fn synthetic(value: T) -> Spanned<T> {
        Spanned {
            value,
            span: Span::default(),
        }
    }

    /// Maps the value, keeping the span.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Spanned<U> {
        Spanned {
            value: f(self.value),
            span: self.span,
        }
    }
}

impl<T: PartialEq> PartialEq for Spanned<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<T: Eq> Eq for Spanned<T> {}

impl<T> Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: fmt::Display> fmt::Display for Spanned<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

impl<T: Serialize> Serialize for Spanned<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(serializer)
    }
}

impl From<&str> for Spanned<String> {
    fn from(value: &str) -> Self {
        Spanned::synthetic(value.to_string())
    }
}

/// Maps the parser's (line, character column) positions to byte offsets.
#[derive(Debug)]
pub(crate) struct LineIndex<'a> {
    source: &'a str,
    /// Byte offset at which each line starts.
    starts: Vec<usize>,
    /// Whether each line is ASCII, where a character column is a byte offset: looking a column
    /// up is then O(1), not a walk along the line (which made a 200 KB line with thousands of
    /// tokens quadratic).
    ascii: Vec<bool>,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(source: &'a str) -> LineIndex<'a> {
        let mut starts = vec![0];
        let mut ascii = vec![true];
        let bytes = source.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\n' => {
                    starts.push(i + 1);
                    ascii.push(true);
                }
                // A lone CR ends a line too (YAML counts it as a line break).
                b'\r' if bytes.get(i + 1) != Some(&b'\n') => {
                    starts.push(i + 1);
                    ascii.push(true);
                }
                b if b >= 0x80 => {
                    if let Some(last) = ascii.last_mut() {
                        *last = false;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        LineIndex {
            source,
            starts,
            ascii,
        }
    }

    /// Byte offset of 0-based `line` and character column `col`, clamped to the source.
    pub(crate) fn offset(&self, line: usize, col: usize) -> usize {
        let Some(&start) = self.starts.get(line) else {
            return self.source.len();
        };
        let end = self.line_end(line);
        if self.ascii[line] {
            return (start + col).min(end);
        }
        let text = &self.source[start..end];
        match text.char_indices().nth(col) {
            Some((i, _)) => start + i,
            None => end,
        }
    }

    /// The text of 0-based `line` without its line break; `None` past the last line.
    pub(crate) fn line_text(&self, line: usize) -> Option<&'a str> {
        let start = *self.starts.get(line)?;
        Some(&self.source[start..self.line_end(line)])
    }

    /// Byte offset where the content of 0-based `line` ends (before its line break).
    fn line_end(&self, line: usize) -> usize {
        let next = self
            .starts
            .get(line + 1)
            .copied()
            .unwrap_or(self.source.len());
        let mut end = next;
        let bytes = self.source.as_bytes();
        while end > self.starts[line] && matches!(bytes[end - 1], b'\n' | b'\r') {
            end -= 1;
        }
        end
    }

    /// A span from (line, col) to (end_line, end_col), all 0-based, columns in characters.
    pub(crate) fn span(&self, line: usize, col: usize, end_line: usize, end_col: usize) -> Span {
        // The parser reports the end of a file without a final line break as the start of the
        // line after it: that position is the end of the source.
        if line >= self.starts.len() {
            return self.end();
        }
        let offset = self.offset(line, col);
        let end = self.offset(end_line, end_col).max(offset);
        Span {
            offset,
            len: end - offset,
            line,
            col,
        }
    }

    /// A point span at the end of the source.
    pub(crate) fn end(&self) -> Span {
        let line = self.starts.len() - 1;
        let col = self.source[self.starts[line]..].chars().count();
        Span {
            offset: self.source.len(),
            len: 0,
            line,
            col,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_count_characters_not_bytes() {
        let index = LineIndex::new("a: é\nb: x\r\nc: y");
        assert_eq!(index.offset(0, 3), 3);
        assert_eq!(index.offset(0, 4), 5); // 'é' is two bytes
        assert_eq!(index.offset(1, 0), 6);
        assert_eq!(index.offset(2, 3), 15);
        let span = index.span(1, 3, 1, 4);
        assert_eq!((span.offset, span.len, span.line, span.col), (9, 1, 1, 3));
    }

    #[test]
    fn a_position_past_the_last_line_is_the_end_of_the_source() {
        let index = LineIndex::new("%a ");
        let span = index.span(1, 0, 1, 1);
        assert_eq!((span.offset, span.len, span.line, span.col), (3, 0, 0, 3));
    }

    #[test]
    fn lines_break_at_lf_crlf_and_a_lone_cr() {
        let index = LineIndex::new("a: 1\r\r\nb: 2\rc: 3\n");
        let lines: Vec<_> = (0..6).map(|l| index.line_text(l)).collect();
        assert_eq!(
            lines,
            [
                Some("a: 1"),
                Some(""),
                Some("b: 2"),
                Some("c: 3"),
                Some(""),
                None
            ]
        );
    }

    #[test]
    fn spanned_equality_ignores_the_span() {
        let a = Spanned::new(1, Span::default());
        let b = Spanned::new(
            1,
            Span {
                offset: 4,
                len: 1,
                line: 1,
                col: 2,
            },
        );
        assert_eq!(a, b);
        assert_ne!(a, Spanned::synthetic(2));
    }
}
