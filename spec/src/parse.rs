//! Reading the node tree into the typed model, collecting every diagnostic on the way.
//!
//! The reader never stops at the first problem: each section is read as far as it can be, so
//! one run of `buildagent validate` shows everything that is wrong. A section that is wrong
//! as a whole (a list where a mapping belongs) is left out of the model with an error.

use std::collections::HashMap;

use crate::diagnostic::Diagnostic;
use crate::is_variable_name;
use crate::model::*;
use crate::span::{LineIndex, Span, Spanned};
use crate::yaml::{self, Node, NodeKind};

mod secrets_file;
pub use secrets_file::{parse_secrets_file, ParsedSecretsFile, SecretsFile};

/// How to read a buildspec.
#[derive(Clone, Copy, Debug, Default)]
pub struct ParseOptions {
    /// Treat unknown keys as errors instead of warnings (default false).
    pub strict: bool,
}

/// The result of reading a buildspec: the model if it is usable, and everything found.
#[derive(Clone, Debug)]
pub struct Parsed {
    /// The model; `None` when the buildspec has errors.
    pub buildspec: Option<Buildspec>,
    /// Errors and warnings, in source order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Parsed {
    /// True when the buildspec has no errors (warnings allowed).
    pub fn is_valid(&self) -> bool {
        self.buildspec.is_some()
    }

    /// The errors.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }

    /// The warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| !d.is_error())
    }
}

/// Reads and validates a buildspec from its text. Never panics, whatever the input.
pub fn parse(source: &str, options: &ParseOptions) -> Parsed {
    let index = LineIndex::new(source);
    let mut reader = Reader {
        source,
        diagnostics: Vec::new(),
        strict: options.strict,
    };
    let buildspec = match yaml::parse(source, &index) {
        Err(e) => {
            reader.push(yaml_error(e.message, e.span));
            None
        }
        Ok(None) => {
            reader.push(
                Diagnostic::error("empty", "", index.end(), "the buildspec is empty")
                    .with_help("a buildspec starts with `version: 0.2` and has a `phases` section"),
            );
            None
        }
        Ok(Some(root)) => reader.buildspec(&root),
    };
    let mut diagnostics = reader.diagnostics;
    diagnostics.sort_by_key(|d| (d.span.offset, d.is_error()));
    let buildspec = buildspec.filter(|_| !diagnostics.iter().any(Diagnostic::is_error));
    Parsed {
        buildspec,
        diagnostics,
    }
}

fn yaml_error(message: String, span: Span) -> Diagnostic {
    let help = if message.contains("mapping values are not allowed") {
        Some(
            "a `: ` (colon and space) inside an unquoted value starts a mapping: \
             quote the whole value, or check the indentation of this line",
        )
    } else if message.contains("'\\t'") || message.contains("tab") {
        Some("YAML indentation must use spaces, not tabs")
    } else if message.contains("unknown escape") {
        Some(
            "inside double quotes a backslash starts an escape: use single quotes, or write `\\\\`",
        )
    } else if message.contains("could not find expected ':'") {
        Some("a key is missing its `:`, or a multi-line value is not indented under its key")
    } else {
        None
    };
    let d = Diagnostic::error("yaml", "", span, format!("invalid YAML: {message}"));
    match help {
        Some(h) => d.with_help(h),
        None => d,
    }
}

/// A dotted key path: `phases.build.commands[2]`.
#[derive(Clone, Debug, Default)]
struct KeyPath(String);

impl KeyPath {
    fn key(&self, key: &str) -> KeyPath {
        let plain = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        let mut s = self.0.clone();
        if plain {
            if !s.is_empty() {
                s.push('.');
            }
            s.push_str(key);
        } else {
            s.push_str(&format!("[{key:?}]"));
        }
        KeyPath(s)
    }

    fn index(&self, i: usize) -> KeyPath {
        KeyPath(format!("{}[{i}]", self.0))
    }

    fn as_str(&self) -> &str {
        &self.0
    }
}

/// The entries of one mapping, after unknown and repeated keys were reported.
struct Fields<'n> {
    entries: Vec<(&'n str, &'n Node, &'n Node)>,
}

impl<'n> Fields<'n> {
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, _, v)| *v)
    }

    fn key_span(&self, key: &str) -> Option<Span> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, k, _)| k.span)
    }
}

/// The keys of the top level.
const TOP_LEVEL: &[&str] = &[
    "version",
    "run-as",
    "env",
    "environment_variables",
    "proxy",
    "batch",
    "phases",
    "reports",
    "artifacts",
    "cache",
];

/// A hint for a top-level key found nested somewhere.
fn misplaced_top_level(name: &str) -> Option<String> {
    TOP_LEVEL.contains(&name).then(|| {
        format!(
            "`{name}` is a top-level key: move it out to the start of the line (no indentation)"
        )
    })
}

/// Where keys that are unknown in one place belong instead, for the hint.
const HOMES: &[(&str, &str)] = &[
    ("install", "phases"),
    ("pre_build", "phases"),
    ("build", "phases"),
    ("post_build", "phases"),
    ("commands", "a phase (`phases.build.commands`)"),
    ("finally", "a phase (`phases.build.finally`)"),
    ("runtime-versions", "`phases.install`"),
    ("on-failure", "a phase"),
    ("variables", "env"),
    ("parameter-store", "env"),
    ("secrets-manager", "env"),
    ("exported-variables", "env"),
    ("shell", "env"),
    ("git-credential-helper", "env"),
    (
        "files",
        "artifacts, reports.<group> or secondary-artifacts.<id>",
    ),
    ("base-directory", "artifacts or reports.<group>"),
    ("discard-paths", "artifacts or reports.<group>"),
    ("paths", "cache"),
];

struct Reader<'s> {
    source: &'s str,
    diagnostics: Vec<Diagnostic>,
    strict: bool,
}

impl Reader<'_> {
    fn push(&mut self, d: Diagnostic) {
        self.diagnostics.push(d);
    }

    fn error(
        &mut self,
        code: &'static str,
        path: &KeyPath,
        span: Span,
        message: impl Into<String>,
    ) {
        self.push(Diagnostic::error(code, path.as_str(), span, message));
    }

    fn warn(&mut self, code: &'static str, path: &KeyPath, span: Span, message: impl Into<String>) {
        self.push(Diagnostic::warning(code, path.as_str(), span, message));
    }

    fn wrong_type(&mut self, node: &Node, path: &KeyPath, expected: &str) {
        let found = node.describe();
        let mut d = Diagnostic::error(
            "wrong-type",
            path.as_str(),
            node.span,
            format!("expected {expected}, found {found}"),
        );
        if let (NodeKind::Map(_), true) = (&node.kind, expected.contains("string")) {
            d = d
                .with_label("YAML reads this as a mapping")
                .with_help(quote_hint(self.source, node.span));
        }
        self.push(d);
    }

    /// Reads a mapping, reporting repeated keys, non-string keys and keys not in `known`.
    /// `tolerated` keys are accepted without a word and without being read.
    fn fields<'n>(
        &mut self,
        node: &'n Node,
        path: &KeyPath,
        known: &[&str],
        tolerated: &[&str],
    ) -> Option<Fields<'n>> {
        let NodeKind::Map(entries) = &node.kind else {
            self.wrong_type(node, path, "a mapping");
            return None;
        };
        let mut seen: HashMap<&str, Span> = HashMap::new();
        let mut fields = Fields {
            entries: Vec::new(),
        };
        for (key, value) in entries {
            let Some(name) = key.as_str() else {
                self.error(
                    "wrong-type",
                    path,
                    key.span,
                    format!("expected a string key, found {}", key.describe()),
                );
                continue;
            };
            if let Some(first) = seen.get(name) {
                self.repeated("key", name, path, key.span, *first, "remove one of them; if they belong to different sections, check the indentation");
                continue;
            }
            seen.insert(name, key.span);
            if tolerated.contains(&name) {
                continue;
            }
            if known.contains(&name) {
                fields.entries.push((name, key, value));
            } else {
                self.unknown_key(name, key.span, path, known);
            }
        }
        Some(fields)
    }

    /// Reports the `what` called `name`, defined again at `again` after `first`: an error that
    /// names both lines.
    fn repeated(
        &mut self,
        what: &str,
        name: &str,
        path: &KeyPath,
        again: Span,
        first: Span,
        help: &str,
    ) {
        self.push(
            Diagnostic::error(
                "duplicate-key",
                path.key(name).as_str(),
                again,
                format!(
                    "{what} `{name}` is defined twice (first on line {})",
                    first.line_number()
                ),
            )
            .with_label("defined again here")
            .with_related(first, "first defined here")
            .with_help(help),
        );
    }

    fn unknown_key(&mut self, name: &str, span: Span, path: &KeyPath, known: &[&str]) {
        let at = if path.as_str().is_empty() {
            "at the top level".to_string()
        } else {
            format!("in `{}`", path.as_str())
        };
        let mut d = if self.strict {
            Diagnostic::error(
                "unknown-key",
                path.key(name).as_str(),
                span,
                format!("unknown key `{name}` {at}"),
            )
        } else {
            Diagnostic::warning(
                "unknown-key",
                path.key(name).as_str(),
                span,
                format!("unknown key `{name}` {at}"),
            )
        };
        d = d.with_label("not a buildspec key here");
        if let Some(s) = suggest(name, known) {
            d = d.with_help(format!("did you mean `{s}`?"));
        } else if let (false, Some(hint)) = (path.as_str().is_empty(), misplaced_top_level(name)) {
            d = d.with_help(hint);
        } else if let Some((_, home)) = HOMES.iter().find(|(k, _)| *k == name) {
            d = d.with_help(format!(
                "`{name}` belongs under {home}: check the indentation of this line"
            ));
        } else {
            d = d.with_help(format!("the keys allowed here are: {}", known.join(", ")));
        }
        self.push(d);
    }

    /// A non-empty scalar as text.
    fn string(&mut self, node: &Node, path: &KeyPath) -> Option<Spanned<String>> {
        match node.as_str() {
            Some(s) if matches!(node.kind, NodeKind::Scalar { .. }) => {
                Some(Spanned::new(s.to_string(), node.span))
            }
            _ => {
                self.wrong_type(node, path, "a string");
                None
            }
        }
    }

    /// A scalar as text, where an empty value is the empty string.
    fn text(&mut self, node: &Node, path: &KeyPath) -> Option<Spanned<String>> {
        self.text_or(
            node,
            path,
            "a variable holds one string: quote the value, or join several values into one string",
        )
    }

    /// [`Reader::text`] with `help` for a value that is not a scalar. The error describes the
    /// node's kind and never quotes it (the secrets file relies on that).
    fn text_or(&mut self, node: &Node, path: &KeyPath, help: &str) -> Option<Spanned<String>> {
        match &node.kind {
            NodeKind::Scalar { text, .. } => {
                let text = if node.is_null() && (text == "~" || text.is_empty()) {
                    String::new()
                } else {
                    text.clone()
                };
                Some(Spanned::new(text, node.span))
            }
            _ => {
                self.push(
                    Diagnostic::error(
                        "wrong-type",
                        path.as_str(),
                        node.span,
                        format!("expected a string value, found {}", node.describe()),
                    )
                    .with_help(help),
                );
                None
            }
        }
    }

    fn bool(&mut self, node: &Node, path: &KeyPath) -> Option<bool> {
        let text = node.as_str().unwrap_or("");
        match text.to_ascii_lowercase().as_str() {
            "yes" | "true" | "on" => Some(true),
            "no" | "false" | "off" => Some(false),
            _ => {
                self.push(
                    Diagnostic::error(
                        "wrong-type",
                        path.as_str(),
                        node.span,
                        format!("expected yes or no, found {}", describe_value(node)),
                    )
                    .with_help("use one of yes, no, true, false, on, off"),
                );
                None
            }
        }
    }

    fn optional_bool(&mut self, fields: &Fields<'_>, key: &str, path: &KeyPath) -> bool {
        fields
            .get(key)
            .and_then(|n| self.bool(n, &path.key(key)))
            .unwrap_or(false)
    }

    fn optional_string(
        &mut self,
        fields: &Fields<'_>,
        key: &str,
        path: &KeyPath,
    ) -> Option<Spanned<String>> {
        fields.get(key).and_then(|n| self.string(n, &path.key(key)))
    }

    /// A list of strings; a single string is a one-item list, an empty value an empty list.
    fn string_list(&mut self, node: &Node, path: &KeyPath) -> Vec<Spanned<String>> {
        match &node.kind {
            _ if node.is_null() => Vec::new(),
            NodeKind::Scalar { .. } => self.string(node, path).into_iter().collect(),
            NodeKind::Seq(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| {
                    if item.is_null() {
                        self.warn(
                            "null-item",
                            &path.index(i),
                            item.span,
                            "empty list item is skipped",
                        );
                        None
                    } else {
                        self.string(item, &path.index(i))
                    }
                })
                .collect(),
            NodeKind::Map(_) => {
                self.wrong_type(node, path, "a list of strings");
                Vec::new()
            }
        }
    }

    fn optional_list(
        &mut self,
        fields: &Fields<'_>,
        key: &str,
        path: &KeyPath,
    ) -> Vec<Spanned<String>> {
        fields
            .get(key)
            .map(|n| self.string_list(n, &path.key(key)))
            .unwrap_or_default()
    }

    /// `commands` or `finally`.
    fn commands(&mut self, node: &Node, path: &KeyPath) -> Vec<Spanned<String>> {
        if node.is_null() {
            self.warn(
                "empty-commands",
                path,
                node.span,
                "empty command list: the phase runs no commands",
            );
            return Vec::new();
        }
        let items: Vec<&Node> = match &node.kind {
            NodeKind::Seq(items) => items.iter().collect(),
            NodeKind::Scalar { .. } => vec![node],
            NodeKind::Map(_) => {
                self.wrong_type(node, path, "a list of commands");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let at = if matches!(node.kind, NodeKind::Seq(_)) {
                path.index(i)
            } else {
                path.clone()
            };
            match &item.kind {
                _ if item.is_null() => self.push(
                    Diagnostic::warning(
                        "null-command",
                        at.as_str(),
                        item.span,
                        "empty command (a bare `-`) is skipped",
                    )
                    .with_help("remove the line, or put the command on the same line as its `-`"),
                ),
                NodeKind::Scalar { text, .. } => out.push(Spanned::new(text.clone(), item.span)),
                NodeKind::Map(_) => {
                    self.push(
                        Diagnostic::error(
                            "command-not-string",
                            at.as_str(),
                            item.span,
                            "expected a command string, found a mapping",
                        )
                        .with_label("YAML reads this command as a mapping")
                        .with_help(quote_hint(self.source, item.span)),
                    );
                }
                NodeKind::Seq(_) => self.push(
                    Diagnostic::error(
                        "command-not-string",
                        at.as_str(),
                        item.span,
                        "expected a command string, found a list",
                    )
                    .with_help("a command is one string: check the indentation and the `-` marks"),
                ),
            }
        }
        out
    }

    fn buildspec(&mut self, root: &Node) -> Option<Buildspec> {
        let path = KeyPath::default();
        let NodeKind::Map(_) = &root.kind else {
            self.push(
                Diagnostic::error(
                    "wrong-type",
                    "",
                    root.span,
                    format!("a buildspec is a YAML mapping, found {}", root.describe()),
                )
                .with_help("a buildspec starts with `version: 0.2` and has a `phases` section"),
            );
            return None;
        };
        let fields = self.fields(root, &path, TOP_LEVEL, &[])?;
        let version = self.version(&fields, root.span);
        let run_as = self.optional_string(&fields, "run-as", &path);
        let mut env = match fields.get("env") {
            Some(node) if node.is_null() => {
                self.warn(
                    "empty-section",
                    &path.key("env"),
                    node.span,
                    "`env` is empty",
                );
                Env::default()
            }
            Some(node) => self.env(node, &path.key("env")).unwrap_or_default(),
            None => Env::default(),
        };
        if let Some(node) = fields.get("environment_variables") {
            self.environment_variables(node, &mut env, &fields, version);
        }
        let proxy = fields
            .get("proxy")
            .and_then(|n| self.proxy(n, &path.key("proxy")))
            .unwrap_or_default();
        let batch = fields
            .get("batch")
            .and_then(|n| self.batch(n, &path.key("batch")));
        let phases = self.phases(&fields, root.span, fields.get("batch").is_some());
        let reports = fields
            .get("reports")
            .map(|n| self.reports(n, &path.key("reports")))
            .unwrap_or_default();
        let artifacts = fields
            .get("artifacts")
            .and_then(|n| self.artifacts(n, &path.key("artifacts")));
        let cache = fields
            .get("cache")
            .and_then(|n| self.cache(n, &path.key("cache")));
        Some(Buildspec {
            version: version.unwrap_or_default(),
            run_as,
            env,
            proxy,
            batch,
            phases,
            reports,
            artifacts,
            cache,
        })
    }

    fn version(&mut self, fields: &Fields<'_>, root: Span) -> Option<Version> {
        let path = KeyPath::default().key("version");
        let Some(node) = fields.get("version") else {
            self.push(
                Diagnostic::error(
                    "missing-version",
                    "version",
                    Span { len: 0, ..root },
                    "missing `version`",
                )
                .with_help("add `version: 0.2` as the first line"),
            );
            return None;
        };
        let version = match &node.kind {
            NodeKind::Scalar {
                text,
                style: saphyr_parser::ScalarStyle::Plain,
            } => match text.parse::<f64>() {
                Ok(0.1) => Some(Version::V0_1),
                Ok(0.2) => Some(Version::V0_2),
                _ => None,
            },
            NodeKind::Scalar { text, .. } => match text.as_str() {
                "0.1" => Some(Version::V0_1),
                "0.2" => Some(Version::V0_2),
                _ => None,
            },
            _ => None,
        };
        if version.is_none() {
            self.push(
                Diagnostic::error(
                    "invalid-version",
                    path.as_str(),
                    node.span,
                    format!(
                        "invalid buildspec version `{}`: expected 0.1 or 0.2",
                        describe_text(node)
                    ),
                )
                .with_help("use `version: 0.2`"),
            );
        }
        version
    }

    fn env(&mut self, node: &Node, path: &KeyPath) -> Option<Env> {
        let fields = self.fields(
            node,
            path,
            &[
                "shell",
                "variables",
                "parameter-store",
                "secrets-manager",
                "exported-variables",
                "git-credential-helper",
            ],
            &[],
        )?;
        let shell = fields.get("shell").and_then(|n| {
            let text = self.string(n, &path.key("shell"))?;
            match Shell::from_name(&text) {
                Some(shell) => Some(Spanned::new(shell, text.span)),
                None => {
                    self.push(
                        Diagnostic::error(
                            "unknown-shell",
                            path.key("shell").as_str(),
                            text.span,
                            format!("unknown shell `{}`", text.value),
                        )
                        .with_help(
                            "use `bash` or `/bin/sh` (Windows images: `powershell.exe`, `cmd.exe`)",
                        ),
                    );
                    None
                }
            }
        });
        let variables = fields
            .get("variables")
            .map(|n| self.variables(n, &path.key("variables")))
            .unwrap_or_default();
        let parameter_store: Vec<ParameterVariable> = fields
            .get("parameter-store")
            .map(|n| {
                let path = path.key("parameter-store");
                self.named_values(n, &path)
                    .into_iter()
                    .filter_map(|(name, value)| {
                        let parameter = self.string(value, &path.key(&name))?;
                        Some(ParameterVariable { name, parameter })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let secrets_manager: Vec<SecretVariable> = fields
            .get("secrets-manager")
            .map(|n| {
                let path = path.key("secrets-manager");
                self.named_values(n, &path)
                    .into_iter()
                    .filter_map(|(name, value)| {
                        let text = self.string(value, &path.key(&name))?;
                        match SecretReference::parse(&text) {
                            Ok(reference) => Some(SecretVariable {
                                name,
                                reference: Spanned::new(reference, text.span),
                            }),
                            Err(message) => {
                                self.push(
                                    Diagnostic::error(
                                        "invalid-secret-reference",
                                        path.key(&name.value).as_str(),
                                        text.span,
                                        message,
                                    )
                                    .with_help(
                                        "write secret-id[:json-key[:version-stage[:version-id]]]",
                                    ),
                                );
                                None
                            }
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let exported_variables = self.optional_list(&fields, "exported-variables", path);
        for (i, name) in exported_variables.iter().enumerate() {
            let at = path.key("exported-variables").index(i);
            if !is_variable_name(name) {
                self.push(invalid_name(&at, name));
            } else if name.starts_with("AWS_") {
                self.warn(
                    "unexported-variable",
                    &at,
                    name.span,
                    format!(
                        "CodeBuild does not export variables whose names start with `AWS_` (`{}`)",
                        name.value
                    ),
                );
            }
        }
        let git_credential_helper = self.optional_bool(&fields, "git-credential-helper", path);
        let mut names: HashMap<String, Span> = HashMap::new();
        let all = variables
            .iter()
            .map(|v| ("variables", &v.name))
            .chain(parameter_store.iter().map(|p| ("parameter-store", &p.name)))
            .chain(secrets_manager.iter().map(|s| ("secrets-manager", &s.name)));
        let mut repeated = Vec::new();
        for (section, name) in all {
            if let Some(first) = names.insert(name.value.clone(), name.span) {
                repeated.push((section, name.clone(), first));
            }
        }
        for (section, name, first) in repeated {
            self.push(
                Diagnostic::error(
                    "duplicate-variable",
                    path.key(section).key(&name.value).as_str(),
                    name.span,
                    format!("variable `{}` is set in two places", name.value),
                )
                .with_related(first, "first set here")
                .with_help(
                    "a name may appear once across variables, parameter-store and secrets-manager",
                ),
            );
        }
        Some(Env {
            shell,
            variables,
            parameter_store,
            secrets_manager,
            exported_variables,
            git_credential_helper,
        })
    }

    /// The entries of a `NAME: value` mapping with checked names.
    /// The entries of a mapping keyed by names (variables, phases, runtimes, report groups,
    /// artifact identifiers), as (name, key, value): an empty value is a warning and no entries,
    /// anything but a mapping an error; a key that is not a string, or a name given twice, is
    /// reported and left out. `what` names one entry in messages (`phase`, `runtime`).
    fn named_entries<'n>(
        &mut self,
        node: &'n Node,
        path: &KeyPath,
        what: &str,
        expected: &str,
        repeat_help: &str,
    ) -> Vec<(&'n str, &'n Node, &'n Node)> {
        if node.is_null() {
            self.warn(
                "empty-section",
                path,
                node.span,
                format!("`{}` is empty", path.as_str()),
            );
            return Vec::new();
        }
        let NodeKind::Map(entries) = &node.kind else {
            self.wrong_type(node, path, expected);
            return Vec::new();
        };
        let mut seen: HashMap<&str, Span> = HashMap::new();
        let mut out = Vec::new();
        for (key, value) in entries {
            let Some(name) = key.as_str() else {
                let message = format!("expected a {what} name, found {}", key.describe());
                self.error("wrong-type", path, key.span, message);
                continue;
            };
            if let Some(first) = seen.insert(name, key.span) {
                self.repeated(what, name, path, key.span, first, repeat_help);
                continue;
            }
            out.push((name, key, value));
        }
        out
    }

    fn named_values<'n>(
        &mut self,
        node: &'n Node,
        path: &KeyPath,
    ) -> Vec<(Spanned<String>, &'n Node)> {
        let mut out = Vec::new();
        for (name, key, value) in self.named_entries(
            node,
            path,
            "variable",
            "a mapping of NAME: value",
            "remove one of them",
        ) {
            let name = Spanned::new(name.to_string(), key.span);
            if !is_variable_name(&name) {
                self.push(invalid_name(&path.key(&name.value), &name));
                continue;
            }
            if name.starts_with("CODEBUILD_") {
                self.warn(
                    "reserved-variable",
                    &path.key(&name.value),
                    name.span,
                    format!("`{}` uses the reserved `CODEBUILD_` prefix", name.value),
                );
            }
            out.push((name, value));
        }
        out
    }

    fn variables(&mut self, node: &Node, path: &KeyPath) -> Vec<Variable> {
        self.named_values(node, path)
            .into_iter()
            .filter_map(|(name, value)| {
                let text = self.text(value, &path.key(&name.value))?;
                Some(Variable { name, value: text })
            })
            .collect()
    }

    /// Version 0.1's `environment_variables: { plaintext: {...} }`.
    fn environment_variables(
        &mut self,
        node: &Node,
        env: &mut Env,
        top: &Fields<'_>,
        version: Option<Version>,
    ) {
        let path = KeyPath::default().key("environment_variables");
        if version == Some(Version::V0_2) {
            if let Some(span) = top.key_span("environment_variables") {
                self.push(
                    Diagnostic::warning(
                        "version-0.1-key",
                        path.as_str(),
                        span,
                        "`environment_variables` is the version 0.1 spelling",
                    )
                    .with_help("in version 0.2 write `env:` with `variables:` under it"),
                );
            }
        }
        if node.is_null() {
            return;
        }
        let Some(fields) = self.fields(node, &path, &["plaintext"], &[]) else {
            return;
        };
        let Some(plain) = fields.get("plaintext") else {
            return;
        };
        let vars = self.variables(plain, &path.key("plaintext"));
        if !env.variables.is_empty() && !vars.is_empty() {
            self.push(
                Diagnostic::error(
                    "conflicting-keys",
                    path.as_str(),
                    node.span,
                    "both `env.variables` and `environment_variables` are set",
                )
                .with_help("keep one of them: `env.variables` is the version 0.2 spelling"),
            );
        }
        env.variables.extend(vars);
    }

    fn proxy(&mut self, node: &Node, path: &KeyPath) -> Option<Proxy> {
        if node.is_null() {
            return None;
        }
        let fields = self.fields(node, path, &["upload-artifacts", "logs"], &[])?;
        Some(Proxy {
            upload_artifacts: self.optional_bool(&fields, "upload-artifacts", path),
            logs: self.optional_bool(&fields, "logs", path),
        })
    }

    fn phases(&mut self, top: &Fields<'_>, root: Span, has_batch: bool) -> Vec<Phase> {
        let path = KeyPath::default().key("phases");
        let node = match top.get("phases") {
            Some(node) if !node.is_null() => node,
            found => {
                if !has_batch {
                    let (span, message) = match (found, top.key_span("phases")) {
                        (Some(_), Some(key)) => (key, "`phases` is empty"),
                        _ => (Span { len: 0, ..root }, "missing `phases`"),
                    };
                    self.push(
                        Diagnostic::error("missing-phases", path.as_str(), span, message)
                            .with_help(
                                "add a `phases:` section and indent at least one of install, \
                             pre_build, build, post_build under it",
                            ),
                    );
                }
                return Vec::new();
            }
        };
        let mut phases: Vec<Phase> = Vec::new();
        let entries = self.named_entries(
            node,
            &path,
            "phase",
            "a mapping of phases",
            "merge the two phases into one",
        );
        for (name, key, value) in entries {
            let Some(phase_name) = PhaseName::from_key(name) else {
                let keys: Vec<&str> = PhaseName::ALL.iter().map(|p| p.key()).collect();
                let mut d = Diagnostic::error(
                    "invalid-phase",
                    path.key(name).as_str(),
                    key.span,
                    format!("invalid buildspec phase name `{name}`"),
                )
                .with_label("not a phase");
                d = match (suggest(name, &keys), HOMES.iter().find(|(k, _)| *k == name)) {
                    (Some(s), _) => d.with_help(format!("did you mean `{s}`? phases are build, install, post_build, pre_build")),
                    (None, _) if misplaced_top_level(name).is_some() => {
                        d.with_help(misplaced_top_level(name).unwrap_or_default())
                    }
                    (None, Some((_, home))) => d.with_help(format!(
                        "`{name}` belongs under {home}, not directly under `phases`: check the indentation"
                    )),
                    _ => d.with_help("phases are build, install, post_build, pre_build"),
                };
                self.push(d);
                continue;
            };
            let phase_path = path.key(name);
            let named = Spanned::new(phase_name, key.span);
            if value.is_null() {
                self.warn(
                    "empty-phase",
                    &phase_path,
                    key.span,
                    format!("phase `{name}` is empty"),
                );
                let mut phase = Phase::new(phase_name);
                phase.name = named;
                phases.push(phase);
                continue;
            }
            if let Some(phase) = self.phase(value, &phase_path, named) {
                phases.push(phase);
            }
        }
        phases
    }

    fn phase(&mut self, node: &Node, path: &KeyPath, name: Spanned<PhaseName>) -> Option<Phase> {
        let fields = self.fields(
            node,
            path,
            &[
                "run-as",
                "on-failure",
                "runtime-versions",
                "commands",
                "finally",
            ],
            &[],
        )?;
        let run_as = self.optional_string(&fields, "run-as", path);
        let on_failure = fields.get("on-failure").and_then(|n| {
            let text = self.string(n, &path.key("on-failure"))?;
            match OnFailure::parse(&text) {
                Ok(v) => Some(Spanned::new(v, text.span)),
                Err(message) => {
                    self.error(
                        "invalid-on-failure",
                        &path.key("on-failure"),
                        text.span,
                        message,
                    );
                    None
                }
            }
        });
        let mut runtime_versions = Vec::new();
        if let Some(node) = fields.get("runtime-versions") {
            let rpath = path.key("runtime-versions");
            if name.value != PhaseName::Install {
                self.push(
                    Diagnostic::error(
                        "runtime-versions-outside-install",
                        rpath.as_str(),
                        fields.key_span("runtime-versions").unwrap_or(node.span),
                        format!(
                            "`runtime-versions` is allowed only in the install phase, not in `{}`",
                            name.value
                        ),
                    )
                    .with_help("move it to `phases.install`"),
                );
            } else {
                runtime_versions = self.runtime_versions(node, &rpath);
            }
        }
        let commands = fields
            .get("commands")
            .map(|n| self.commands(n, &path.key("commands")))
            .unwrap_or_default();
        let finally = fields
            .get("finally")
            .map(|n| self.commands(n, &path.key("finally")))
            .unwrap_or_default();
        Some(Phase {
            name,
            run_as,
            on_failure,
            runtime_versions,
            commands,
            finally,
        })
    }

    fn runtime_versions(&mut self, node: &Node, path: &KeyPath) -> Vec<RuntimeVersion> {
        let mut out: Vec<RuntimeVersion> = Vec::new();
        let entries = self.named_entries(
            node,
            path,
            "runtime",
            "a mapping of runtime: version",
            "keep one version per runtime",
        );
        for (runtime, key, value) in entries {
            if value.is_null() {
                self.error(
                    "missing-value",
                    &path.key(runtime),
                    key.span,
                    format!("runtime `{runtime}` has no version"),
                );
                continue;
            }
            let Some(version) = self.string(value, &path.key(runtime)) else {
                continue;
            };
            out.push(RuntimeVersion {
                runtime: Spanned::new(runtime.to_string(), key.span),
                version,
            });
        }
        out
    }

    fn reports(&mut self, node: &Node, path: &KeyPath) -> Vec<ReportGroup> {
        let mut groups: Vec<ReportGroup> = Vec::new();
        let entries = self.named_entries(
            node,
            path,
            "report group",
            "a mapping of report groups",
            "give the groups different names, or merge them",
        );
        for (name, key, value) in entries {
            let gpath = path.key(name);
            let Some(fields) = self.fields(
                value,
                &gpath,
                &["files", "base-directory", "discard-paths", "file-format"],
                &[],
            ) else {
                continue;
            };
            if fields.get("files").is_none() {
                self.push(
                    Diagnostic::error(
                        "missing-key",
                        gpath.as_str(),
                        key.span,
                        format!("report group `{name}` has no `files`"),
                    )
                    .with_help(
                        "add `files:` with globs of the report files, e.g. `- 'reports/*.xml'`",
                    ),
                );
                continue;
            }
            let file_format = fields.get("file-format").and_then(|n| {
                let text = self.string(n, &gpath.key("file-format"))?;
                match ReportFormat::from_name(&text) {
                    Some(f) => Some(Spanned::new(f, text.span)),
                    None => {
                        let all: Vec<&str> = ReportFormat::ALL.iter().map(|f| f.as_str()).collect();
                        self.push(
                            Diagnostic::error(
                                "unknown-report-format",
                                gpath.key("file-format").as_str(),
                                text.span,
                                format!("unknown report file format `{}`", text.value),
                            )
                            .with_help(format!("use one of {}", all.join(", "))),
                        );
                        None
                    }
                }
            });
            groups.push(ReportGroup {
                name: Spanned::new(name.to_string(), key.span),
                files: self.optional_list(&fields, "files", &gpath),
                base_directory: self.optional_string(&fields, "base-directory", &gpath),
                discard_paths: self.optional_bool(&fields, "discard-paths", &gpath),
                file_format,
            });
        }
        if groups.len() > 5 {
            self.warn(
                "too-many-report-groups",
                path,
                groups[5].name.span,
                format!(
                    "{} report groups: CodeBuild accepts at most 5 per project",
                    groups.len()
                ),
            );
        }
        groups
    }

    fn artifact_set(&mut self, fields: &Fields<'_>, path: &KeyPath) -> ArtifactSet {
        ArtifactSet {
            files: self.optional_list(fields, "files", path),
            name: self.optional_string(fields, "name", path),
            discard_paths: self.optional_bool(fields, "discard-paths", path),
            base_directory: self.optional_string(fields, "base-directory", path),
            exclude_paths: self.optional_list(fields, "exclude-paths", path),
            enable_symlinks: self.optional_bool(fields, "enable-symlinks", path),
            s3_prefix: self.optional_string(fields, "s3-prefix", path),
        }
    }

    fn artifacts(&mut self, node: &Node, path: &KeyPath) -> Option<Artifacts> {
        const SET: [&str; 7] = [
            "files",
            "name",
            "discard-paths",
            "base-directory",
            "exclude-paths",
            "enable-symlinks",
            "s3-prefix",
        ];
        if node.is_null() {
            self.warn(
                "empty-section",
                path,
                node.span,
                "`artifacts` is empty: no artifact is produced",
            );
            return None;
        }
        let mut known = SET.to_vec();
        known.push("secondary-artifacts");
        // `type` is a version 0.1 leftover that many 0.2 files still carry.
        let fields = self.fields(node, path, &known, &["type"])?;
        let primary = self.artifact_set(&fields, path);
        let mut secondary: Vec<SecondaryArtifact> = Vec::new();
        if let Some(snode) = fields.get("secondary-artifacts") {
            let spath = path.key("secondary-artifacts");
            let entries = self.named_entries(
                snode,
                &spath,
                "secondary artifact",
                "a mapping of artifact identifiers",
                "give the artifacts different identifiers",
            );
            for (id, key, value) in entries {
                let ipath = spath.key(id);
                if id.is_empty()
                    || id.len() > 127
                    || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    self.push(
                        Diagnostic::error(
                            "invalid-identifier",
                            ipath.as_str(),
                            key.span,
                            format!("invalid artifact identifier `{id}`"),
                        )
                        .with_help(
                            "identifiers use letters, digits and `_`, at most 127 characters",
                        ),
                    );
                    continue;
                }
                let Some(f) = self.fields(value, &ipath, &SET, &["type"]) else {
                    continue;
                };
                let artifact = self.artifact_set(&f, &ipath);
                if artifact.files.is_empty() {
                    self.warn(
                        "no-files",
                        &ipath,
                        key.span,
                        format!("secondary artifact `{id}` has no `files`: it will be empty"),
                    );
                }
                secondary.push(SecondaryArtifact {
                    identifier: Spanned::new(id.to_string(), key.span),
                    artifact,
                });
            }
        }
        if primary.files.is_empty() {
            let span = fields.key_span("files").unwrap_or(node.span);
            self.push(
                Diagnostic::warning(
                    "no-files",
                    path.key("files").as_str(),
                    span,
                    "`artifacts` has no `files`: UPLOAD_ARTIFACTS will fail",
                )
                .with_help("add `files:` with the globs of what to keep, e.g. `- '**/*'`"),
            );
        }
        Some(Artifacts { primary, secondary })
    }

    fn cache(&mut self, node: &Node, path: &KeyPath) -> Option<Cache> {
        if node.is_null() {
            self.warn(
                "empty-section",
                path,
                node.span,
                "`cache` is empty: nothing is cached",
            );
            return None;
        }
        let fields = self.fields(
            node,
            path,
            &["paths", "key", "fallback-keys", "action"],
            &[],
        )?;
        let key = self.optional_string(&fields, "key", path);
        let fallback_keys = self.optional_list(&fields, "fallback-keys", path);
        if fallback_keys.len() > Cache::MAX_FALLBACK_KEYS {
            self.push(
                Diagnostic::error(
                    "too-many-fallback-keys",
                    path.key("fallback-keys")
                        .index(Cache::MAX_FALLBACK_KEYS)
                        .as_str(),
                    fallback_keys[Cache::MAX_FALLBACK_KEYS].span,
                    format!(
                        "{} fallback keys: at most {} are allowed",
                        fallback_keys.len(),
                        Cache::MAX_FALLBACK_KEYS
                    ),
                )
                .with_help("keep the five most specific prefixes"),
            );
        }
        if !fallback_keys.is_empty() && key.is_none() {
            self.warn(
                "fallback-without-key",
                &path.key("fallback-keys"),
                fields.key_span("fallback-keys").unwrap_or(node.span),
                "`fallback-keys` are ignored without a `key`",
            );
        }
        let action = fields.get("action").and_then(|n| {
            let text = self.string(n, &path.key("action"))?;
            match text.to_ascii_lowercase().as_str() {
                "restore" => Some(Spanned::new(CacheAction::Restore, text.span)),
                "save" => Some(Spanned::new(CacheAction::Save, text.span)),
                _ => {
                    self.push(
                        Diagnostic::error(
                            "invalid-cache-action",
                            path.key("action").as_str(),
                            text.span,
                            format!("unknown cache action `{}`", text.value),
                        )
                        .with_help("use `restore` or `save`, or leave `action` out to do both"),
                    );
                    None
                }
            }
        });
        let paths = self.optional_list(&fields, "paths", path);
        if paths.is_empty() {
            self.warn(
                "no-paths",
                &path.key("paths"),
                fields.key_span("paths").unwrap_or(node.span),
                "`cache` has no `paths`: nothing is cached",
            );
        }
        Some(Cache {
            key,
            fallback_keys,
            action,
            paths,
        })
    }

    fn batch(&mut self, node: &Node, path: &KeyPath) -> Option<Batch> {
        const KINDS: [&str; 4] = ["build-list", "build-graph", "build-matrix", "build-fanout"];
        if node.is_null() {
            self.warn("empty-section", path, node.span, "`batch` is empty");
            return None;
        }
        let mut known = vec!["fast-fail"];
        known.extend(KINDS);
        let fields = self.fields(node, path, &known, &[])?;
        let fast_fail = self.optional_bool(&fields, "fast-fail", path);
        let present: Vec<&str> = KINDS
            .iter()
            .copied()
            .filter(|k| fields.get(k).is_some())
            .collect();
        if present.len() > 1 {
            self.push(
                Diagnostic::error(
                    "conflicting-keys",
                    path.key(present[1]).as_str(),
                    fields.key_span(present[1]).unwrap_or(node.span),
                    format!("a batch is one of build-list, build-graph, build-matrix or build-fanout; found both `{}` and `{}`", present[0], present[1]),
                )
                .with_related(fields.key_span(present[0]).unwrap_or(node.span), "first kind here"),
            );
            return None;
        }
        let builds = match present.first().copied() {
            None => {
                self.push(
                    Diagnostic::warning(
                        "empty-batch",
                        path.as_str(),
                        node.span,
                        "`batch` defines no builds",
                    )
                    .with_help("add one of build-list, build-graph, build-matrix or build-fanout"),
                );
                None
            }
            Some(kind) => {
                let value = fields.get(kind)?;
                let kpath = path.key(kind);
                match kind {
                    "build-list" => Some(BatchBuilds::BuildList(
                        self.batch_tasks(value, &kpath, false),
                    )),
                    "build-graph" => Some(BatchBuilds::BuildGraph(
                        self.batch_tasks(value, &kpath, true),
                    )),
                    "build-matrix" => self
                        .build_matrix(value, &kpath)
                        .map(BatchBuilds::BuildMatrix),
                    _ => self
                        .build_fanout(value, &kpath)
                        .map(BatchBuilds::BuildFanout),
                }
            }
        };
        Some(Batch { fast_fail, builds })
    }

    fn batch_tasks(&mut self, node: &Node, path: &KeyPath, graph: bool) -> Vec<BatchTask> {
        let NodeKind::Seq(items) = &node.kind else {
            self.wrong_type(node, path, "a list of builds");
            return Vec::new();
        };
        let mut known = vec![
            "identifier",
            "buildspec",
            "debug-session",
            "env",
            "ignore-failure",
        ];
        if graph {
            known.push("depend-on");
        }
        let mut tasks: Vec<BatchTask> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let ipath = path.index(i);
            let Some(fields) = self.fields(item, &ipath, &known, &[]) else {
                continue;
            };
            let Some(identifier) = fields
                .get("identifier")
                .and_then(|n| self.string(n, &ipath.key("identifier")))
            else {
                if fields.get("identifier").is_none() {
                    self.push(
                        Diagnostic::error(
                            "missing-key",
                            ipath.as_str(),
                            item.span,
                            "a batch build needs an `identifier`",
                        )
                        .with_help("add `identifier: my_build` (letters, digits and `_`)"),
                    );
                }
                continue;
            };
            if let Some(why) = crate::batch::identifier_problem(&identifier.value) {
                self.push(
                    Diagnostic::error(
                        "invalid-identifier",
                        ipath.key("identifier").as_str(),
                        identifier.span,
                        format!(
                            "invalid batch build identifier `{}`: {why}",
                            identifier.value
                        ),
                    )
                    .with_help(
                        "identifiers use letters, digits and `_`, fewer than 128 characters",
                    ),
                );
            }
            if let Some(first) = tasks
                .iter()
                .find(|t| t.identifier.value == identifier.value)
            {
                let first = first.identifier.span;
                self.push(
                    Diagnostic::error(
                        "duplicate-identifier",
                        ipath.key("identifier").as_str(),
                        identifier.span,
                        format!(
                            "batch build identifier `{}` is used twice",
                            identifier.value
                        ),
                    )
                    .with_related(first, "first used here"),
                );
                continue;
            }
            let env = fields
                .get("env")
                .and_then(|n| self.batch_env(n, &ipath.key("env")));
            tasks.push(BatchTask {
                identifier,
                buildspec: self.optional_string(&fields, "buildspec", &ipath),
                debug_session: self.optional_bool(&fields, "debug-session", &ipath),
                ignore_failure: self.optional_bool(&fields, "ignore-failure", &ipath),
                env,
                depend_on: self.optional_list(&fields, "depend-on", &ipath),
            });
        }
        if graph {
            self.check_graph(&tasks, path);
        }
        tasks
    }

    /// Every `depend-on` names a build of the graph, and the graph has no cycle.
    fn check_graph(&mut self, tasks: &[BatchTask], path: &KeyPath) {
        let ids: HashMap<&str, usize> = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.identifier.value.as_str(), i))
            .collect();
        let mut edges: Vec<Vec<usize>> = vec![Vec::new(); tasks.len()];
        for (i, task) in tasks.iter().enumerate() {
            for dep in &task.depend_on {
                match ids.get(dep.value.as_str()) {
                    Some(&j) => edges[i].push(j),
                    None => {
                        let names: Vec<&str> = ids.keys().copied().collect();
                        let mut d = Diagnostic::error(
                            "unknown-dependency",
                            path.index(i).key("depend-on").as_str(),
                            dep.span,
                            format!(
                                "`{}` depends on `{}`, which is not a build of this graph",
                                task.identifier.value, dep.value
                            ),
                        );
                        if let Some(s) = suggest(dep, &names) {
                            d = d.with_help(format!("did you mean `{s}`?"));
                        }
                        self.push(d);
                    }
                }
            }
        }
        // Depth-first search with colours: 0 new, 1 on the stack, 2 done.
        let mut colour = vec![0u8; tasks.len()];
        for start in 0..tasks.len() {
            if colour[start] != 0 {
                continue;
            }
            let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
            colour[start] = 1;
            while let Some(&mut (node, ref mut next)) = stack.last_mut() {
                if let Some(&to) = edges[node].get(*next) {
                    *next += 1;
                    match colour[to] {
                        0 => {
                            colour[to] = 1;
                            stack.push((to, 0));
                        }
                        1 => {
                            let from = stack.iter().position(|(n, _)| *n == to).unwrap_or(0);
                            let cycle: Vec<&str> = stack[from..]
                                .iter()
                                .map(|(n, _)| tasks[*n].identifier.value.as_str())
                                .chain(std::iter::once(tasks[to].identifier.value.as_str()))
                                .collect();
                            self.push(
                                Diagnostic::error(
                                    "dependency-cycle",
                                    path.index(node).key("depend-on").as_str(),
                                    tasks[node].identifier.span,
                                    format!("the build graph has a cycle: {}", cycle.join(" -> ")),
                                )
                                .with_help("remove one of the `depend-on` entries in the cycle"),
                            );
                            return;
                        }
                        _ => {}
                    }
                } else {
                    colour[node] = 2;
                    stack.pop();
                }
            }
        }
    }

    fn batch_env(&mut self, node: &Node, path: &KeyPath) -> Option<BatchEnv> {
        if node.is_null() {
            return None;
        }
        let fields = self.fields(
            node,
            path,
            &[
                "compute-type",
                "fleet",
                "image",
                "privileged-mode",
                "type",
                "variables",
            ],
            &[],
        )?;
        if let (Some(_), Some(span)) = (fields.get("compute-type"), fields.key_span("fleet")) {
            self.push(
                Diagnostic::error(
                    "conflicting-keys",
                    path.key("fleet").as_str(),
                    span,
                    "`compute-type` and `fleet` cannot both be set",
                )
                .with_help("keep one of them"),
            );
        }
        Some(BatchEnv {
            compute_type: self.optional_string(&fields, "compute-type", path),
            fleet: self.optional_string(&fields, "fleet", path),
            image: self.optional_string(&fields, "image", path),
            privileged_mode: fields
                .get("privileged-mode")
                .and_then(|n| self.bool(n, &path.key("privileged-mode"))),
            kind: self.optional_string(&fields, "type", path),
            variables: fields
                .get("variables")
                .map(|n| self.variables(n, &path.key("variables")))
                .unwrap_or_default(),
        })
    }

    fn build_matrix(&mut self, node: &Node, path: &KeyPath) -> Option<BuildMatrix> {
        let fields = self.fields(node, path, &["static", "dynamic"], &[])?;
        let fixed = fields.get("static").and_then(|n| {
            let spath = path.key("static");
            let f = self.fields(n, &spath, &["ignore-failure", "env"], &[])?;
            Some(MatrixStatic {
                ignore_failure: self.optional_bool(&f, "ignore-failure", &spath),
                env: f
                    .get("env")
                    .and_then(|e| self.batch_env(e, &spath.key("env"))),
            })
        });
        let dynamic = fields.get("dynamic").and_then(|n| {
            let dpath = path.key("dynamic");
            let f = self.fields(n, &dpath, &["buildspec", "env"], &[])?;
            let buildspec = self.optional_list(&f, "buildspec", &dpath);
            let env = f
                .get("env")
                .and_then(|e| {
                    let epath = dpath.key("env");
                    let ef =
                        self.fields(e, &epath, &["compute-type", "image", "variables"], &[])?;
                    let variables = ef
                        .get("variables")
                        .map(|v| {
                            let vpath = epath.key("variables");
                            self.named_values(v, &vpath)
                                .into_iter()
                                .map(|(name, values)| {
                                    let values = self.string_list(values, &vpath.key(&name.value));
                                    MatrixVariable { name, values }
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    Some(MatrixEnv {
                        compute_type: self.optional_list(&ef, "compute-type", &epath),
                        image: self.optional_list(&ef, "image", &epath),
                        variables,
                    })
                })
                .unwrap_or_default();
            Some(MatrixDynamic { buildspec, env })
        });
        Some(BuildMatrix { fixed, dynamic })
    }

    fn build_fanout(&mut self, node: &Node, path: &KeyPath) -> Option<BuildFanout> {
        let fields = self.fields(node, path, &["parallelism", "ignore-failure"], &[])?;
        let Some(pnode) = fields.get("parallelism") else {
            self.push(
                Diagnostic::error(
                    "missing-key",
                    path.as_str(),
                    node.span,
                    "`build-fanout` needs `parallelism`",
                )
                .with_help("add `parallelism: N`, the number of shards"),
            );
            return None;
        };
        let text = self.string(pnode, &path.key("parallelism"))?;
        let Some(n) = text.parse::<u32>().ok().filter(|n| *n >= 1) else {
            self.error(
                "wrong-type",
                &path.key("parallelism"),
                text.span,
                format!(
                    "`parallelism` must be a whole number of at least 1, found `{}`",
                    text.value
                ),
            );
            return None;
        };
        Some(BuildFanout {
            parallelism: Spanned::new(n, text.span),
            ignore_failure: self.optional_bool(&fields, "ignore-failure", path),
        })
    }
}

fn invalid_name(path: &KeyPath, name: &Spanned<String>) -> Diagnostic {
    Diagnostic::error(
        "invalid-name",
        path.as_str(),
        name.span,
        format!("invalid variable name `{}`", name.value),
    )
    .with_help("variable names use letters, digits and `_`, and do not start with a digit")
}

/// The closest known key, when it is close enough to be a likely typo.
fn suggest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    let normalized = name.to_ascii_lowercase().replace('_', "-");
    known
        .iter()
        .map(|k| {
            let kn = k.replace('_', "-");
            (strsim::damerau_levenshtein(&normalized, &kn), *k)
        })
        .filter(|(d, k)| *d <= 2.max(k.len() / 4) && *d < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// A hint that shows the line's value quoted, for a command YAML read as a mapping.
fn quote_hint(source: &str, span: Span) -> String {
    let text = source
        .get(span.offset..span.offset + span.len)
        .unwrap_or("");
    let generic = "quote the whole value: a `: ` (colon and space) inside an unquoted string makes YAML read it as a key";
    // A block mapping's span runs to where the next token starts; the command is its first line.
    let text = text.lines().next().unwrap_or("").trim_end();
    if text.is_empty() {
        return generic.to_string();
    }
    if text.contains('\'') {
        format!(
            "{generic}, e.g. \"{}\"",
            text.replace('\\', "\\\\").replace('"', "\\\"")
        )
    } else {
        format!("{generic}, e.g. '{text}'")
    }
}

fn describe_value(node: &Node) -> String {
    match node.as_str() {
        Some(s) => format!("`{s}`"),
        None => node.describe().to_string(),
    }
}

fn describe_text(node: &Node) -> String {
    match node.as_str() {
        Some(s) => s.to_string(),
        None => node.describe().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_catch_typos_and_dashes() {
        assert_eq!(
            suggest("pre-build", &["install", "pre_build"]),
            Some("pre_build")
        );
        assert_eq!(
            suggest("depends-on", &["identifier", "depend-on"]),
            Some("depend-on")
        );
        assert_eq!(
            suggest("comands", &["commands", "finally"]),
            Some("commands")
        );
        assert_eq!(suggest("zzz", &["commands", "finally"]), None);
    }

    #[test]
    fn key_paths_quote_odd_keys() {
        let p = KeyPath::default().key("reports").key("arn:aws:x/y");
        assert_eq!(p.as_str(), "reports[\"arn:aws:x/y\"]");
        let p = KeyPath::default()
            .key("phases")
            .key("build")
            .key("commands")
            .index(2);
        assert_eq!(p.as_str(), "phases.build.commands[2]");
    }

    #[test]
    fn quote_hint_shows_the_fix() {
        let source = "  - echo Step 1: build\n";
        let hint = quote_hint(
            source,
            Span {
                offset: 4,
                len: 18,
                line: 0,
                col: 4,
            },
        );
        assert!(hint.ends_with("e.g. 'echo Step 1: build'"), "{hint}");
    }
}
