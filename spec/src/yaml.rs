//! A YAML document as a tree of nodes that remember where they were written.
//!
//! The typed model is read from this tree rather than straight from a serde deserializer,
//! because every diagnostic must name the line and column of the offending value, scalars must
//! keep their source text (`V: 1.10` is `1.10`, not `1.1`), and a repeated key must be reported
//! with both of its lines. The tree is built from the event stream of `saphyr-parser`.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError};

use crate::span::{LineIndex, Span};

/// How deep collections may nest before the document is rejected. Buildspecs nest about six
/// levels; the limit keeps hostile input from exhausting the stack when the tree is dropped.
const MAX_DEPTH: usize = 64;

/// How many nodes alias expansion may produce in total (guards against "billion laughs").
const MAX_NODES: usize = 1_000_000;

/// One node of the document.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub(crate) kind: NodeKind,
    pub(crate) span: Span,
}

/// What a node holds.
#[derive(Clone, Debug)]
pub(crate) enum NodeKind {
    /// A scalar: its text after YAML unescaping, and how it was written.
    Scalar { text: String, style: ScalarStyle },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in source order, duplicates kept (the reader reports them).
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// True for an empty value, `~` or `null` written plainly.
    pub(crate) fn is_null(&self) -> bool {
        match &self.kind {
            NodeKind::Scalar {
                text,
                style: ScalarStyle::Plain,
            } => matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"),
            _ => false,
        }
    }

    /// The scalar text, if this is a scalar that is not null.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { text, .. } if !self.is_null() => Some(text),
            _ => None,
        }
    }

    /// A phrase naming the kind of node, for messages ("a mapping", "a list", ...).
    pub(crate) fn describe(&self) -> &'static str {
        match &self.kind {
            _ if self.is_null() => "an empty value",
            NodeKind::Scalar { .. } => "a string",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }
}

/// Why the document could not be turned into a tree.
#[derive(Debug)]
pub(crate) struct YamlError {
    pub(crate) message: String,
    pub(crate) span: Span,
}

/// Parses `source` into the node of its single document; `Ok(None)` for an empty document.
pub(crate) fn parse(source: &str, index: &LineIndex<'_>) -> Result<Option<Node>, YamlError> {
    let mut builder = Builder {
        index,
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        documents: 0,
        nodes: 0,
    };
    for item in Parser::new_from_str(source) {
        let (event, span) = item.map_err(|e| scan_error(e, index))?;
        let span = index.span(
            span.start.line().saturating_sub(1),
            span.start.col(),
            span.end.line().saturating_sub(1),
            span.end.col(),
        );
        builder.event(event, span)?;
    }
    Ok(builder.root)
}

fn scan_error(error: ScanError, index: &LineIndex<'_>) -> YamlError {
    let mark = error.marker();
    let line = mark.line().saturating_sub(1);
    YamlError {
        message: error.info().to_string(),
        span: index.span(line, mark.col(), line, mark.col() + 1),
    }
}

enum Frame {
    Seq {
        items: Vec<Node>,
        span: Span,
        anchor: usize,
    },
    Map {
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
        span: Span,
        anchor: usize,
    },
}

struct Builder<'i, 's> {
    index: &'i LineIndex<'s>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    documents: usize,
    nodes: usize,
}

impl Builder<'_, '_> {
    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), YamlError> {
        match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => Ok(()),
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(YamlError {
                        message: "a buildspec holds one YAML document; found a second one \
                                  (remove the `---` line or the text after it)"
                            .into(),
                        span,
                    });
                }
                Ok(())
            }
            Event::Alias(id) => {
                let Some(target) = self.anchors.get(&id) else {
                    return Err(YamlError {
                        message: "alias refers to an unknown anchor".into(),
                        span,
                    });
                };
                self.nodes += count(target);
                if self.nodes > MAX_NODES {
                    return Err(YamlError {
                        message: "aliases expand to too many nodes".into(),
                        span,
                    });
                }
                let mut node = target.clone();
                node.span = span;
                self.push(node, 0)
            }
            Event::Scalar(text, style, anchor, _tag) => {
                self.nodes += 1;
                let node = Node {
                    kind: NodeKind::Scalar {
                        text: text.into_owned(),
                        style,
                    },
                    span,
                };
                self.push(node, anchor)
            }
            Event::SequenceStart(anchor, _) => {
                self.open(span)?;
                self.stack.push(Frame::Seq {
                    items: Vec::new(),
                    span,
                    anchor,
                });
                Ok(())
            }
            Event::MappingStart(anchor, _) => {
                self.open(span)?;
                self.stack.push(Frame::Map {
                    entries: Vec::new(),
                    key: None,
                    span,
                    anchor,
                });
                Ok(())
            }
            Event::SequenceEnd => match self.stack.pop() {
                Some(Frame::Seq {
                    items,
                    span: start,
                    anchor,
                }) => {
                    let span = self.join(start, span);
                    self.push(
                        Node {
                            kind: NodeKind::Seq(items),
                            span,
                        },
                        anchor,
                    )
                }
                _ => Err(self.internal(span)),
            },
            Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Map {
                    entries,
                    span: start,
                    anchor,
                    ..
                }) => {
                    let span = self.join(start, span);
                    let entries = merge_keys(entries);
                    self.push(
                        Node {
                            kind: NodeKind::Map(entries),
                            span,
                        },
                        anchor,
                    )
                }
                _ => Err(self.internal(span)),
            },
        }
    }

    fn open(&mut self, span: Span) -> Result<(), YamlError> {
        self.nodes += 1;
        if self.stack.len() >= MAX_DEPTH {
            return Err(YamlError {
                message: format!("collections nest deeper than {MAX_DEPTH} levels"),
                span,
            });
        }
        Ok(())
    }

    /// A span covering a collection from its start event to its end event.
    fn join(&self, start: Span, end: Span) -> Span {
        let _ = self.index;
        let stop = (end.offset + end.len).max(start.offset);
        Span {
            len: stop - start.offset,
            ..start
        }
    }

    fn internal(&self, span: Span) -> YamlError {
        YamlError {
            message: "unbalanced YAML events".into(),
            span,
        }
    }

    fn push(&mut self, node: Node, anchor: usize) -> Result<(), YamlError> {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
        Ok(())
    }
}

fn count(node: &Node) -> usize {
    match &node.kind {
        NodeKind::Scalar { .. } => 1,
        NodeKind::Seq(items) => 1 + items.iter().map(count).sum::<usize>(),
        NodeKind::Map(entries) => {
            1 + entries
                .iter()
                .map(|(k, v)| count(k) + count(v))
                .sum::<usize>()
        }
    }
}

/// Applies YAML merge keys (`<<: *defaults`): the merged mappings' entries are added where the
/// mapping does not set the key itself. Users of YAML anchors in buildspecs rely on this.
fn merge_keys(entries: Vec<(Node, Node)>) -> Vec<(Node, Node)> {
    let is_merge = |k: &Node| matches!(&k.kind, NodeKind::Scalar { text, style: ScalarStyle::Plain } if text == "<<");
    if !entries.iter().any(|(k, _)| is_merge(k)) {
        return entries;
    }
    let mut out: Vec<(Node, Node)> = Vec::new();
    let mut merged: Vec<(Node, Node)> = Vec::new();
    for (key, value) in entries {
        if !is_merge(&key) {
            out.push((key, value));
            continue;
        }
        let sources = match value.kind {
            NodeKind::Map(_) => vec![value],
            NodeKind::Seq(items) => items,
            // Not a mapping: keep it so the reader reports `<<` as an unknown key.
            _ => {
                out.push((key, value));
                continue;
            }
        };
        for source in sources {
            if let NodeKind::Map(pairs) = source.kind {
                merged.extend(pairs);
            }
        }
    }
    for (key, value) in merged {
        let name = key.as_str().map(str::to_owned);
        let present = out
            .iter()
            .any(|(k, _)| k.as_str().map(str::to_owned) == name);
        if !present {
            out.push((key, value));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(source: &str) -> Node {
        let index = LineIndex::new(source);
        parse(source, &index).unwrap().unwrap()
    }

    #[test]
    fn scalars_keep_their_source_text() {
        let node = tree("a: 1.10\nb: yes\nc: 0x1F\n");
        let NodeKind::Map(entries) = node.kind else {
            panic!("not a map")
        };
        let values: Vec<_> = entries.iter().map(|(_, v)| v.as_str().unwrap()).collect();
        assert_eq!(values, ["1.10", "yes", "0x1F"]);
    }

    #[test]
    fn spans_point_at_values() {
        let node = tree("version: 0.2\nphases:\n  build:\n    commands:\n      - make\n");
        let NodeKind::Map(entries) = node.kind else {
            panic!()
        };
        let (_, phases) = &entries[1];
        assert_eq!(phases.span.line, 2);
        let NodeKind::Map(p) = &phases.kind else {
            panic!()
        };
        let NodeKind::Map(b) = &p[0].1.kind else {
            panic!()
        };
        let NodeKind::Seq(cmds) = &b[0].1.kind else {
            panic!()
        };
        assert_eq!((cmds[0].span.line, cmds[0].span.col), (4, 8));
        assert_eq!(cmds[0].span.len, 4);
    }

    #[test]
    fn merge_keys_fill_missing_entries() {
        let node = tree("base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\n");
        let NodeKind::Map(entries) = node.kind else {
            panic!()
        };
        let NodeKind::Map(used) = &entries[1].1.kind else {
            panic!()
        };
        let pairs: Vec<_> = used
            .iter()
            .map(|(k, v)| (k.as_str().unwrap(), v.as_str().unwrap()))
            .collect();
        assert_eq!(pairs, [("y", "3"), ("x", "1")]);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let source = "[".repeat(10_000);
        let index = LineIndex::new(&source);
        assert!(parse(&source, &index).is_err());
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut source = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..8 {
            let prev = if i == 0 {
                "a".to_string()
            } else {
                format!("l{}", i - 1)
            };
            source.push_str(&format!(
                "l{i}: &l{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
        }
        let index = LineIndex::new(&source);
        let err = parse(&source, &index).unwrap_err();
        assert!(err.message.contains("too many nodes"), "{}", err.message);
    }

    #[test]
    fn a_second_document_is_an_error() {
        let source = "version: 0.2\n---\nversion: 0.2\n";
        let index = LineIndex::new(source);
        let err = parse(source, &index).unwrap_err();
        assert_eq!(err.span.line, 1);
    }
}
