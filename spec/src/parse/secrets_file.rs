//! The `--secrets-file` format: values that stand in for Parameter Store parameters and Secrets
//! Manager secrets, so a build runs offline.
//!
//! The file uses the buildspec's own two keys, each a mapping from what the buildspec names to
//! the value it stands for:
//!
//! ```yaml
//! parameter-store:
//!   /app/db/host: db.internal
//! secrets-manager:
//!   db-creds: '{"user":"app","password":"hunter2"}'  # the whole secret string
//!   api-token:token: abc123                          # one JSON key of a secret
//!   arn:aws:secretsmanager:us-east-1:000000000000:secret:ci-AbCdEf:key:AWSPREVIOUS: old
//! ```
//!
//! Parameter names are matched exactly; secret references are read with
//! [`SecretReference::parse`] (so an `arn:` id keeps its colons) and matched field by field.
//! Values are scalars taken as written (`8080` stays `8080`; an empty value is the empty string).
//! Diagnostics never quote a value: the file holds secrets.

use std::collections::HashMap;

use super::{yaml_error, KeyPath, Reader};
use crate::diagnostic::Diagnostic;
use crate::model::SecretReference;
use crate::span::{LineIndex, Span, Spanned};
use crate::yaml::{self, Node, NodeKind};

/// The sections a secrets file may have.
const SECTIONS: [&str; 2] = ["parameter-store", "secrets-manager"];

/// A parsed `--secrets-file`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretsFile {
    /// `parameter-store`: parameter name and value, in file order.
    pub parameters: Vec<(Spanned<String>, Spanned<String>)>,
    /// `secrets-manager`: secret reference and value, in file order.
    pub secrets: Vec<(Spanned<SecretReference>, Spanned<String>)>,
}

/// The result of reading a secrets file: the values if the file is usable, and every problem
/// found (errors only: a secrets file has no warnings).
#[derive(Clone, Debug)]
pub struct ParsedSecretsFile {
    /// The values; `None` when the file has errors.
    pub file: Option<SecretsFile>,
    /// The errors, in source order.
    pub diagnostics: Vec<Diagnostic>,
}

/// Reads a secrets file from its text (see the module docs for the format). Never panics.
pub fn parse_secrets_file(source: &str) -> ParsedSecretsFile {
    let index = LineIndex::new(source);
    let mut reader = Reader {
        source,
        diagnostics: Vec::new(),
        strict: true,
    };
    let file = match yaml::parse(source, &index) {
        Err(e) => {
            reader.push(yaml_error(e.message, e.span));
            None
        }
        // An empty file lists nothing: every value comes from AWS.
        Ok(None) => Some(SecretsFile::default()),
        Ok(Some(root)) => read_file(&mut reader, &root),
    };
    let mut diagnostics: Vec<Diagnostic> = reader
        .diagnostics
        .into_iter()
        .filter(Diagnostic::is_error)
        .collect();
    diagnostics.sort_by_key(|d| d.span.offset);
    ParsedSecretsFile {
        file: file.filter(|_| diagnostics.is_empty()),
        diagnostics,
    }
}

fn read_file(reader: &mut Reader<'_>, root: &Node) -> Option<SecretsFile> {
    let NodeKind::Map(entries) = &root.kind else {
        reader.push(
            Diagnostic::error(
                "wrong-type",
                "",
                root.span,
                format!("expected a mapping, found {}", root.describe()),
            )
            .with_help("a secrets file has the keys `parameter-store` and `secrets-manager`"),
        );
        return None;
    };
    let mut file = SecretsFile::default();
    let mut seen: HashMap<&str, Span> = HashMap::new();
    for (key, value) in entries {
        let Some(name) = key.as_str().filter(|n| SECTIONS.contains(n)) else {
            let found = key
                .as_str()
                .map_or_else(|| key.describe().to_string(), |name| format!("`{name}`"));
            reader.push(
                Diagnostic::error(
                    "unknown-key",
                    "",
                    key.span,
                    format!("unknown section {found} in the secrets file"),
                )
                .with_help(
                    "the sections are `parameter-store` (parameter name: value) and \
                     `secrets-manager` (secret-id[:json-key[:version-stage[:version-id]]]: value)",
                ),
            );
            continue;
        };
        if let Some(first) = seen.insert(name, key.span) {
            reader.repeated(
                "section",
                name,
                &KeyPath::default(),
                key.span,
                first,
                "merge them into one",
            );
            continue;
        }
        let path = KeyPath::default().key(name);
        if value.is_null() {
            continue;
        }
        let what = if name == "parameter-store" {
            "parameter"
        } else {
            "secret reference"
        };
        let expected = format!("a mapping of {what}: value");
        for (text, key, value) in
            reader.named_entries(value, &path, what, &expected, "remove one of them")
        {
            let Some(value) = reader.text_or(
                value,
                &path.key(text),
                "a value is one string: quote it (a JSON secret as '{\"key\":\"value\"}'), \
                 or list each JSON key as secret-id:json-key",
            ) else {
                continue;
            };
            if name == "parameter-store" {
                file.parameters
                    .push((Spanned::new(text.to_string(), key.span), value));
                continue;
            }
            match SecretReference::parse(text) {
                Ok(reference) => file
                    .secrets
                    .push((Spanned::new(reference, key.span), value)),
                Err(message) => reader.push(
                    Diagnostic::error(
                        "invalid-secret-reference",
                        path.key(text).as_str(),
                        key.span,
                        message,
                    )
                    .with_help("write secret-id[:json-key[:version-stage[:version-id]]]"),
                ),
            }
        }
    }
    // Two spellings of one reference (`db:key` and `db:key:`) would make the choice of value
    // depend on the order of the file.
    for (i, (reference, _)) in file.secrets.iter().enumerate() {
        if let Some((first, _)) = file.secrets[..i]
            .iter()
            .find(|(r, _)| r.value == reference.value)
        {
            reader.push(
                Diagnostic::error(
                    "duplicate-key",
                    "secrets-manager",
                    reference.span,
                    format!(
                        "secret reference `{}` is listed twice (first on line {})",
                        reference.value,
                        first.span.line_number()
                    ),
                )
                .with_related(first.span, "first listed here")
                .with_help("remove one of them"),
            );
        }
    }
    Some(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sections_are_read_with_references_split() {
        let text = "parameter-store:\n  /app/host: db.internal\n  /app/port: 8080\n  /app/empty:\n\
                    secrets-manager:\n  db-creds: '{\"a\":1}'\n  db-creds:password: hunter2\n  \
                    arn:aws:secretsmanager:us-east-1:000000000000:secret:ci-AbCdEf:key:AWSPREVIOUS: old\n";
        let parsed = parse_secrets_file(text);
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        let file = parsed.file.unwrap();
        let params: Vec<(&str, &str)> = file
            .parameters
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            params,
            [
                ("/app/host", "db.internal"),
                ("/app/port", "8080"),
                ("/app/empty", "")
            ]
        );
        assert_eq!(file.secrets[0].0.secret_id, "db-creds");
        assert_eq!(file.secrets[0].1.value, "{\"a\":1}");
        assert_eq!(file.secrets[1].0.json_key.as_deref(), Some("password"));
        let arn = &file.secrets[2].0;
        assert_eq!(
            arn.secret_id,
            "arn:aws:secretsmanager:us-east-1:000000000000:secret:ci-AbCdEf"
        );
        assert_eq!(arn.json_key.as_deref(), Some("key"));
        assert_eq!(arn.version_stage.as_deref(), Some("AWSPREVIOUS"));
        assert_eq!(file.secrets[2].0.span.line_number(), 8);
    }

    #[test]
    fn an_empty_file_lists_nothing() {
        for text in ["", "# nothing\n", "parameter-store:\nsecrets-manager:\n"] {
            let parsed = parse_secrets_file(text);
            assert_eq!(parsed.file, Some(SecretsFile::default()), "{text:?}");
        }
    }

    #[test]
    fn problems_name_the_line_and_never_quote_a_value() {
        let cases = [
            (
                "parameter-stor:\n  /a: hunter2\n",
                1,
                "unknown section `parameter-stor`",
            ),
            ("- hunter2\n", 1, "expected a mapping, found a list"),
            (
                "parameter-store:\n  /a: [hunter2]\n",
                2,
                "expected a string value, found a list",
            ),
            (
                "parameter-store:\n  /a: x\n  /a: hunter2\n",
                3,
                "parameter `/a` is defined twice",
            ),
            (
                "secrets-manager:\n  'a:b:c:d:e': hunter2\n",
                2,
                "too many `:`-separated fields",
            ),
            (
                "secrets-manager:\n  db:k: x\n  'db:k:': hunter2\n",
                3,
                "listed twice (first on line 2)",
            ),
            (
                "parameter-store: hunter2\n",
                1,
                "expected a mapping of parameter: value",
            ),
            ("parameter-store:\n  /a: \"hunter2\n", 2, "invalid YAML"),
        ];
        for (text, line, message) in cases {
            let parsed = parse_secrets_file(text);
            assert!(parsed.file.is_none(), "{text:?}");
            let d = &parsed.diagnostics[0];
            assert_eq!(d.span.line_number(), line, "{text:?}: {d:?}");
            assert!(d.message.contains(message), "{text:?}: {}", d.message);
            let all = format!("{} {:?}", d.message, d.help);
            assert!(!all.contains("hunter2"), "{text:?}: {all}");
        }
    }
}
