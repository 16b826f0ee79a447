//! The Dockerfile subset of `image build --engine oci`: everything that needs no container.
//!
//! Supported: `FROM` (a registry image, `oci:DIR[:TAG]`, `scratch`, or an earlier stage;
//! `--platform`; `AS name`), `COPY` and `ADD` of local files (`--chown=UID[:GID]`, `--chmod=OCTAL`,
//! `--link` accepted; `.dockerignore`), `ENV`, `ARG` (global and per stage, `--build-arg`, the
//! `TARGET*`/`BUILD*` platform arguments), `LABEL`, `WORKDIR`, `USER`, `EXPOSE`, `VOLUME`,
//! `ENTRYPOINT`, `CMD`, `SHELL`, `STOPSIGNAL`, `HEALTHCHECK`, `ONBUILD` (recorded), `MAINTAINER`.
//! Directives `# escape=` and `# syntax=` (ignored), line continuations, comments, and `$VAR`,
//! `${VAR}`, `${VAR:-word}`, `${VAR:+word}` with Docker's quoting rules are read as Docker reads
//! them.
//!
//! Not supported, each a clear error naming the line: `RUN` (it needs a container: use
//! `--engine docker`), `COPY --from`, `ADD` of a URL, a git repository or a local archive (which
//! Docker would unpack), heredocs, `--chown` with names other than `root`.
//!
//! Each `COPY`/`ADD` is one layer, fitted on the stage's image as Docker's copy would be (see
//! [`super::lower`]): parent directories the image has keep their mode and owner (`/tmp` stays
//! `1777`), links among them are followed (`/bin/x` on a merged-`/usr` base is `/usr/bin/x`), a
//! file copied onto an existing directory goes into it; the parent directories the image lacks
//! are `0755` and owned by root. A copied directory's contents keep their modes (unless
//! `--chmod`), every owner is 0:0 (unless `--chown`), every time the session's. `--link` is
//! accepted and changes nothing (BuildKit's `--link` writes missing-looking parents as `0755`;
//! this engine knows the base, so it need not). `WORKDIR` only sets the configuration: the
//! container runtime makes the directory when a container starts.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::docker::dockerignore::{DockerIgnore, Glob};

use super::layer::{normalize, AddOptions, Entry, EntryKind, LayerTree};
use super::lower::Lower;
use super::spec::{Healthcheck, Platform};
use super::{get_env, set_env, Image, OciError, Session};

/// What to build.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// The Dockerfile's name in messages (`Dockerfile`, `docker/app.Dockerfile`).
    pub file: String,
    /// Its text.
    pub text: String,
    /// The context directory.
    pub context: PathBuf,
    /// The `.dockerignore` text (`<Dockerfile>.dockerignore`, else `CONTEXT/.dockerignore`).
    pub ignore: Option<String>,
    /// `--build-arg NAME=VALUE`.
    pub build_args: Vec<(String, String)>,
    /// `--target`: the stage to build (default the last).
    pub target: Option<String>,
    /// `--label NAME=VALUE`, applied last.
    pub labels: Vec<(String, String)>,
}

/// One instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instruction {
    /// The 1-based line it starts on.
    pub line: usize,
    /// The keyword, upper case.
    pub keyword: String,
    /// The rest of the logical line.
    pub args: String,
}

/// Reads the instructions of a Dockerfile and its escape character.
pub fn parse(file: &str, text: &str) -> Result<(Vec<Instruction>, char), OciError> {
    let mut escape = '\\';
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    // Parser directives: `# name=value` lines at the very top.
    while i < lines.len() {
        let l = lines[i].trim();
        let Some(d) = l.strip_prefix('#') else { break };
        let Some((name, value)) = d.split_once('=') else {
            break;
        };
        let name = name.trim().to_ascii_lowercase();
        if name == "escape" {
            escape = match value.trim() {
                "`" => '`',
                "\\" => '\\',
                other => {
                    return Err(OciError::Dockerfile {
                        file: file.to_string(),
                        line: i + 1,
                        message: format!("invalid escape character `{other}`: use \\ or `"),
                    })
                }
            };
        } else if name != "syntax" && name != "check" {
            break;
        }
        i += 1;
    }
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    while i < lines.len() {
        let raw = lines[i];
        i += 1;
        let trimmed = raw.trim_start();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_none()) {
            continue;
        }
        let body = raw.trim_end();
        let (text, continues) = match body.strip_suffix(escape) {
            Some(t) => (t, true),
            None => (body, false),
        };
        match &mut current {
            Some((_, acc)) => acc.push_str(text),
            None => current = Some((i, text.trim_start().to_string())),
        }
        if !continues {
            if let Some((line, logical)) = current.take() {
                push_instruction(&mut out, line, &logical);
            }
        }
    }
    if let Some((line, logical)) = current.take() {
        push_instruction(&mut out, line, &logical);
    }
    Ok((out, escape))
}

fn push_instruction(out: &mut Vec<Instruction>, line: usize, logical: &str) {
    let logical = logical.trim();
    if logical.is_empty() {
        return;
    }
    let (keyword, args) = match logical.find(char::is_whitespace) {
        Some(i) => (&logical[..i], logical[i..].trim()),
        None => (logical, ""),
    };
    out.push(Instruction {
        line,
        keyword: keyword.to_ascii_uppercase(),
        args: args.to_string(),
    });
}

/// Expands variables and removes quotes like Docker's shell lexer. With `split`, unquoted white
/// space separates words (an expanded value is never split).
pub fn lex(
    text: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
    split: bool,
) -> Result<Vec<String>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if split && c.is_whitespace() {
            if in_word {
                words.push(std::mem::take(&mut word));
                in_word = false;
            }
            i += 1;
            continue;
        }
        in_word = true;
        match c {
            '\'' => {
                i += 1;
                while i < chars.len() && chars[i] != '\'' {
                    word.push(chars[i]);
                    i += 1;
                }
                if i >= chars.len() {
                    return Err("unmatched single quote".to_string());
                }
                i += 1;
            }
            '"' => {
                i += 1;
                loop {
                    if i >= chars.len() {
                        return Err("unmatched double quote".to_string());
                    }
                    let d = chars[i];
                    if d == '"' {
                        i += 1;
                        break;
                    }
                    if d == escape && i + 1 < chars.len() && "\"$\\`".contains(chars[i + 1]) {
                        word.push(chars[i + 1]);
                        i += 2;
                        continue;
                    }
                    if d == '$' {
                        i = expand(&chars, i, lookup, &mut word)?;
                        continue;
                    }
                    word.push(d);
                    i += 1;
                }
            }
            '$' => i = expand(&chars, i, lookup, &mut word)?,
            c if c == escape => {
                if i + 1 < chars.len() {
                    word.push(chars[i + 1]);
                    i += 2;
                } else {
                    word.push(c);
                    i += 1;
                }
            }
            c => {
                word.push(c);
                i += 1;
            }
        }
    }
    if in_word || (!split && words.is_empty()) {
        words.push(word);
    }
    Ok(words)
}

/// Expands the variable at `chars[i]` (a `$`) into `out`; returns the index after it.
fn expand(
    chars: &[char],
    i: usize,
    lookup: &dyn Fn(&str) -> Option<String>,
    out: &mut String,
) -> Result<usize, String> {
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut j = i + 1;
    if chars.get(j) == Some(&'{') {
        j += 1;
        let start = j;
        while j < chars.len() && name_char(chars[j]) {
            j += 1;
        }
        let name: String = chars[start..j].iter().collect();
        if name.is_empty() {
            return Err("a ${} without a name".to_string());
        }
        let value = lookup(&name);
        match chars.get(j) {
            Some('}') => {
                out.push_str(&value.unwrap_or_default());
                Ok(j + 1)
            }
            Some(':') if matches!(chars.get(j + 1), Some('-') | Some('+')) => {
                let op = chars[j + 1];
                let mut k = j + 2;
                let mut depth = 0;
                let start = k;
                while k < chars.len() && !(chars[k] == '}' && depth == 0) {
                    if chars[k] == '{' {
                        depth += 1;
                    } else if chars[k] == '}' {
                        depth -= 1;
                    }
                    k += 1;
                }
                if k >= chars.len() {
                    return Err(format!("a ${{{name}:{op}...}} without its `}}`"));
                }
                let word: String = chars[start..k].iter().collect();
                let word = lex(&word, '\\', lookup, false)?.join("");
                let set = value.as_deref().is_some_and(|v| !v.is_empty());
                match (op, set) {
                    ('-', true) => out.push_str(&value.unwrap_or_default()),
                    ('-', false) | ('+', true) => out.push_str(&word),
                    _ => {}
                }
                Ok(k + 1)
            }
            _ => Err(format!("unsupported modifier in ${{{name}...}}")),
        }
    } else {
        let start = j;
        while j < chars.len() && name_char(chars[j]) {
            j += 1;
        }
        if j == start {
            out.push('$');
            return Ok(j);
        }
        let name: String = chars[start..j].iter().collect();
        out.push_str(&lookup(&name).unwrap_or_default());
        Ok(j)
    }
}

/// The JSON array form of an argument, if it is one.
fn json_array(args: &str) -> Option<Vec<String>> {
    let t = args.trim();
    if !t.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(t).ok()
}

/// Leading `--name=value` flags, and the rest.
fn flags(args: &str) -> (Vec<(String, String)>, &str) {
    let mut rest = args.trim_start();
    let mut out = Vec::new();
    while let Some(after) = rest.strip_prefix("--") {
        let end = after.find(char::is_whitespace).unwrap_or(after.len());
        let flag = &after[..end];
        let (name, value) = flag.split_once('=').unwrap_or((flag, ""));
        out.push((name.to_string(), value.to_string()));
        rest = after[end..].trim_start();
    }
    (out, rest)
}

/// Parses a duration such as `30s`, `1m30s`, `500ms` into nanoseconds.
fn duration_ns(text: &str) -> Option<u64> {
    let mut total = 0f64;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..n_end].parse().ok()?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..u_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += n * unit;
        rest = &rest[u_end..];
    }
    Some(total as u64)
}

const RUN_ERROR: &str = "RUN needs a container, and --engine oci assembles layers without one: build this Dockerfile with --engine docker";

struct Stage {
    name: Option<String>,
    from: Instruction,
    body: Vec<Instruction>,
}

struct Builder<'a> {
    session: &'a Session,
    options: &'a BuildOptions,
    escape: char,
    ignore: DockerIgnore,
    global_args: Vec<(String, Option<String>)>,
    build_args: HashMap<String, String>,
    stages: Vec<Stage>,
    built: HashMap<usize, Image>,
    platform: Platform,
}

/// Builds the target stage of a Dockerfile.
pub async fn build(session: &Session, options: &BuildOptions) -> Result<Image, OciError> {
    let (instructions, escape) = parse(&options.file, &options.text)?;
    let ignore = DockerIgnore::parse(options.ignore.as_deref().unwrap_or(""))
        .map_err(|e| OciError::Invalid(format!(".dockerignore: {e}")))?;
    let err = |line: usize, message: String| OciError::Dockerfile {
        file: options.file.clone(),
        line,
        message,
    };
    let mut global_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for ins in instructions {
        match (ins.keyword.as_str(), stages.last_mut()) {
            ("FROM", _) => {
                let words: Vec<&str> = ins.args.split_whitespace().collect();
                let name = match words.as_slice() {
                    [.., as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
                        Some(name.to_ascii_lowercase())
                    }
                    _ => None,
                };
                stages.push(Stage {
                    name,
                    from: ins,
                    body: Vec::new(),
                });
            }
            ("ARG", None) => {
                for (name, default) in arg_decls(&ins.args) {
                    global_args.push((name, default));
                }
            }
            (_, None) => {
                return Err(err(
                    ins.line,
                    format!(
                        "{} before the first FROM (only ARG may come before it)",
                        ins.keyword
                    ),
                ))
            }
            (_, Some(stage)) => stage.body.push(ins),
        }
    }
    if stages.is_empty() {
        return Err(err(1, "no FROM instruction".to_string()));
    }
    let target = match &options.target {
        Some(t) => stages
            .iter()
            .position(|s| s.name.as_deref() == Some(&t.to_ascii_lowercase()))
            .ok_or_else(|| OciError::Invalid(format!("--target {t}: no stage of that name")))?,
        None => stages.len() - 1,
    };
    // A RUN anywhere in the stages that will be built fails before any layer is written.
    let mut chain = vec![target];
    while let Some(&i) = chain.last() {
        let base = stages[i]
            .from
            .args
            .split_whitespace()
            .find(|w| !w.starts_with("--"));
        let earlier = base.and_then(|b| {
            stages[..i]
                .iter()
                .position(|s| s.name.as_deref() == Some(&b.to_ascii_lowercase()))
        });
        match earlier {
            Some(e) if !chain.contains(&e) => chain.push(e),
            _ => break,
        }
    }
    for &i in chain.iter().rev() {
        if let Some(run) = stages[i].body.iter().find(|ins| ins.keyword == "RUN") {
            return Err(err(run.line, RUN_ERROR.to_string()));
        }
    }
    let mut builder = Builder {
        session,
        options,
        escape,
        ignore,
        global_args,
        build_args: options.build_args.iter().cloned().collect(),
        stages,
        built: HashMap::new(),
        platform: session.options().platform.clone(),
    };
    let mut image = builder.stage(target).await?;
    for (k, v) in &options.labels {
        image.container().labels.insert(k.clone(), v.clone());
    }
    image.config.created = Some(session.created());
    Ok(image)
}

/// `ARG a=1 b c=3`: names and defaults.
fn arg_decls(args: &str) -> Vec<(String, Option<String>)> {
    let words = lex(args, '\\', &|_| None, true).unwrap_or_default();
    words
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (w, None),
        })
        .collect()
}

impl Builder<'_> {
    fn err(&self, line: usize, message: impl Into<String>) -> OciError {
        OciError::Dockerfile {
            file: self.options.file.clone(),
            line,
            message: message.into(),
        }
    }

    fn platform_args(&self) -> Vec<(String, String)> {
        let p = &self.platform;
        let host = Platform::host();
        vec![
            ("TARGETPLATFORM".into(), p.to_string()),
            ("TARGETOS".into(), p.os.clone()),
            ("TARGETARCH".into(), p.architecture.clone()),
            (
                "TARGETVARIANT".into(),
                p.variant.clone().unwrap_or_default(),
            ),
            ("BUILDPLATFORM".into(), host.to_string()),
            ("BUILDOS".into(), host.os.clone()),
            ("BUILDARCH".into(), host.architecture.clone()),
            (
                "BUILDVARIANT".into(),
                host.variant.clone().unwrap_or_default(),
            ),
        ]
    }

    /// The global scope: declared global ARGs with their values, and the platform arguments.
    fn global_scope(&self) -> HashMap<String, String> {
        let mut scope: HashMap<String, String> = self.platform_args().into_iter().collect();
        for (name, default) in &self.global_args {
            if let Some(v) = self.build_args.get(name).or(default.as_ref()) {
                scope.insert(name.clone(), v.clone());
            }
        }
        scope
    }

    fn stage(
        &mut self,
        index: usize,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Image, OciError>> + '_>> {
        Box::pin(async move {
            if let Some(image) = self.built.get(&index) {
                return Ok(image.clone());
            }
            let image = self.build_stage(index).await?;
            self.built.insert(index, image.clone());
            Ok(image)
        })
    }

    async fn build_stage(&mut self, index: usize) -> Result<Image, OciError> {
        let from = self.stages[index].from.clone();
        let body = self.stages[index].body.clone();
        let global = self.global_scope();
        let lookup_global = |n: &str| global.get(n).cloned();
        let (from_flags, from_rest) = flags(&from.args);
        let words = lex(from_rest, self.escape, &lookup_global, true)
            .map_err(|e| self.err(from.line, e))?;
        let base_name = match words.as_slice() {
            [b] | [b, _, _] => b.clone(),
            _ => return Err(self.err(from.line, "FROM takes an image, optionally `AS name`")),
        };
        let mut platform = self.platform.clone();
        for (name, value) in &from_flags {
            match name.as_str() {
                "platform" => {
                    let v = lex(value, self.escape, &lookup_global, false)
                        .map_err(|e| self.err(from.line, e))?
                        .join("");
                    platform = Platform::parse(&v).map_err(|e| self.err(from.line, e))?;
                }
                other => return Err(self.err(from.line, format!("FROM: unknown flag --{other}"))),
            }
        }
        let earlier = self.stages[..index]
            .iter()
            .position(|s| s.name.as_deref() == Some(&base_name.to_ascii_lowercase()));
        let mut image = match earlier {
            Some(i) => self.stage(i).await?,
            None => self
                .session
                .base_for(&base_name, &platform)
                .await
                .map_err(|e| match e {
                    OciError::NotFound(m) => self.err(from.line, m),
                    other => other,
                })?,
        };
        let created = self.session.created();
        let mut args: HashMap<String, String> = HashMap::new();
        let mut workdir = image
            .config
            .config
            .as_ref()
            .and_then(|c| c.working_dir.clone())
            .unwrap_or_else(|| "/".to_string());
        let mut cmd_set = false;
        let mut shell = image
            .config
            .config
            .as_ref()
            .and_then(|c| c.shell.clone())
            .unwrap_or_else(|| vec!["/bin/sh".to_string(), "-c".to_string()]);
        for ins in &body {
            let env = image
                .config
                .config
                .as_ref()
                .map(|c| c.env.clone())
                .unwrap_or_default();
            let lookup = |n: &str| {
                get_env(&env, n)
                    .map(str::to_string)
                    .or_else(|| args.get(n).cloned())
            };
            let line = ins.line;
            let history = format!("{} {}", ins.keyword, ins.args);
            let mut layer = false;
            match ins.keyword.as_str() {
                "RUN" => return Err(self.err(line, RUN_ERROR)),
                "ARG" => {
                    let mut declared = Vec::new();
                    for (name, default) in arg_decls(&ins.args) {
                        let value = self
                            .build_args
                            .get(&name)
                            .cloned()
                            .or_else(|| {
                                default.map(|d| {
                                    lex(&d, self.escape, &lookup, false)
                                        .map(|w| w.join(""))
                                        .unwrap_or(d)
                                })
                            })
                            .or_else(|| global.get(&name).cloned());
                        if let Some(v) = value {
                            declared.push((name, v));
                        }
                    }
                    args.extend(declared);
                }
                "ENV" => {
                    let pairs = self.name_values(ins, &lookup)?;
                    let c = image.container();
                    for (k, v) in pairs {
                        set_env(&mut c.env, &k, &v);
                    }
                }
                "LABEL" => {
                    let pairs = self.name_values(ins, &lookup)?;
                    let c = image.container();
                    for (k, v) in pairs {
                        c.labels.insert(k, v);
                    }
                }
                "MAINTAINER" => image.config.author = Some(ins.args.clone()),
                "WORKDIR" => {
                    let dir = self.one_word(ins, &lookup)?;
                    let joined = if dir.starts_with('/') {
                        dir
                    } else {
                        format!("{workdir}/{dir}")
                    };
                    workdir = format!("/{}", normalize(&joined)?);
                    image.container().working_dir = Some(workdir.clone());
                }
                "USER" => {
                    let user = self.one_word(ins, &lookup)?;
                    image.container().user = Some(user);
                }
                "STOPSIGNAL" => {
                    let s = self.one_word(ins, &lookup)?;
                    image.container().stop_signal = Some(s);
                }
                "EXPOSE" => {
                    let words = lex(&ins.args, self.escape, &lookup, true)
                        .map_err(|e| self.err(line, e))?;
                    for w in words {
                        let (port, proto) = w.split_once('/').unwrap_or((&w, "tcp"));
                        let proto = proto.to_ascii_lowercase();
                        let (lo, hi) = match port.split_once('-') {
                            Some((a, b)) => (a.parse::<u16>().ok(), b.parse::<u16>().ok()),
                            None => (port.parse::<u16>().ok(), port.parse::<u16>().ok()),
                        };
                        let (Some(lo), Some(hi)) = (lo, hi) else {
                            return Err(self.err(line, format!("EXPOSE: `{w}` is not a port")));
                        };
                        for p in lo..=hi.max(lo) {
                            image
                                .container()
                                .exposed_ports
                                .insert(format!("{p}/{proto}"), serde_json::json!({}));
                        }
                    }
                }
                "VOLUME" => {
                    let vols = match json_array(&ins.args) {
                        Some(v) => v,
                        None => lex(&ins.args, self.escape, &lookup, true)
                            .map_err(|e| self.err(line, e))?,
                    };
                    for v in vols {
                        image.container().volumes.insert(v, serde_json::json!({}));
                    }
                }
                "SHELL" => {
                    shell = json_array(&ins.args)
                        .filter(|v| !v.is_empty())
                        .ok_or_else(|| {
                            self.err(
                                line,
                                "SHELL takes a JSON array, e.g. [\"/bin/bash\", \"-c\"]",
                            )
                        })?;
                    image.container().shell = Some(shell.clone());
                }
                "CMD" => {
                    let cmd = self.command(&ins.args, &shell);
                    image.container().cmd = Some(cmd);
                    cmd_set = true;
                }
                "ENTRYPOINT" => {
                    let ep = self.command(&ins.args, &shell);
                    let c = image.container();
                    c.entrypoint = Some(ep);
                    if !cmd_set {
                        c.cmd = None; // an inherited CMD does not survive a new ENTRYPOINT
                    }
                }
                "HEALTHCHECK" => {
                    let hc = self.healthcheck(ins, &shell)?;
                    image.container().healthcheck = Some(hc);
                }
                "ONBUILD" => {
                    image
                        .container()
                        .on_build
                        .get_or_insert_with(Vec::new)
                        .push(ins.args.clone());
                }
                "COPY" | "ADD" => {
                    let lower = Arc::new(self.session.lower(&image).await?);
                    let tree = self.copy(ins, &lookup, &workdir, lower)?;
                    self.session.add_layer(&mut image, tree, &history).await?;
                    layer = true;
                }
                other => {
                    return Err(self.err(line, format!("unknown instruction {other}")));
                }
            }
            if !layer && ins.keyword != "ARG" {
                image.add_empty_history(&history, &created);
            }
        }
        Ok(image)
    }

    fn command(&self, args: &str, shell: &[String]) -> Vec<String> {
        match json_array(args) {
            Some(v) => v,
            None => {
                let mut v = shell.to_vec();
                v.push(args.to_string());
                v
            }
        }
    }

    fn one_word(
        &self,
        ins: &Instruction,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<String, OciError> {
        let w = lex(&ins.args, self.escape, lookup, false)
            .map_err(|e| self.err(ins.line, e))?
            .join("");
        if w.trim().is_empty() {
            return Err(self.err(ins.line, format!("{} needs a value", ins.keyword)));
        }
        Ok(w.trim().to_string())
    }

    /// `NAME=value ...` pairs, or the old `NAME value` form.
    fn name_values(
        &self,
        ins: &Instruction,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<(String, String)>, OciError> {
        let first = ins.args.split_whitespace().next().unwrap_or("");
        if !first.contains('=') {
            let (name, rest) = ins
                .args
                .split_once(char::is_whitespace)
                .ok_or_else(|| self.err(ins.line, format!("{} needs NAME=VALUE", ins.keyword)))?;
            let value = lex(rest.trim(), self.escape, lookup, false)
                .map_err(|e| self.err(ins.line, e))?
                .join("");
            return Ok(vec![(name.to_string(), value)]);
        }
        let words = lex(&ins.args, self.escape, lookup, true).map_err(|e| self.err(ins.line, e))?;
        words
            .into_iter()
            .map(|w| {
                w.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .filter(|(k, _)| !k.is_empty())
                    .ok_or_else(|| {
                        self.err(
                            ins.line,
                            format!("{}: `{w}` is not NAME=VALUE", ins.keyword),
                        )
                    })
            })
            .collect()
    }

    fn healthcheck(&self, ins: &Instruction, shell: &[String]) -> Result<Healthcheck, OciError> {
        let (fl, rest) = flags(&ins.args);
        let mut hc = Healthcheck::default();
        let (kw, cmd) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        if kw.eq_ignore_ascii_case("NONE") {
            hc.test = vec!["NONE".to_string()];
            return Ok(hc);
        }
        if !kw.eq_ignore_ascii_case("CMD") || cmd.trim().is_empty() {
            return Err(self.err(ins.line, "HEALTHCHECK takes [OPTIONS] CMD command, or NONE"));
        }
        hc.test = match json_array(cmd) {
            Some(v) => std::iter::once("CMD".to_string()).chain(v).collect(),
            None => vec!["CMD-SHELL".to_string(), cmd.trim().to_string()],
        };
        let _ = shell;
        for (name, value) in fl {
            let d = || {
                duration_ns(&value).ok_or_else(|| {
                    self.err(
                        ins.line,
                        format!("HEALTHCHECK --{name}: `{value}` is not a duration"),
                    )
                })
            };
            match name.as_str() {
                "interval" => hc.interval = Some(d()?),
                "timeout" => hc.timeout = Some(d()?),
                "start-period" => hc.start_period = Some(d()?),
                "start-interval" => hc.start_interval = Some(d()?),
                "retries" => {
                    hc.retries = Some(value.parse().map_err(|_| {
                        self.err(
                            ins.line,
                            format!("HEALTHCHECK --retries: `{value}` is not a number"),
                        )
                    })?)
                }
                other => {
                    return Err(self.err(ins.line, format!("HEALTHCHECK: unknown flag --{other}")))
                }
            }
        }
        Ok(hc)
    }

    /// The layer of a `COPY` or `ADD`.
    fn copy(
        &self,
        ins: &Instruction,
        lookup: &dyn Fn(&str) -> Option<String>,
        workdir: &str,
        lower: Arc<Lower>,
    ) -> Result<LayerTree, OciError> {
        let line = ins.line;
        let kw = ins.keyword.as_str();
        let (fl, rest) = flags(&ins.args);
        let mut options = AddOptions::default();
        for (name, value) in &fl {
            let value = lex(value, self.escape, lookup, false)
                .map_err(|e| self.err(line, e))?
                .join("");
            match name.as_str() {
                "chown" => options.chown = Some(self.chown(line, &value)?),
                "chmod" => {
                    options.chmod = Some(u32::from_str_radix(&value, 8).ok().filter(|m| *m <= 0o7777).ok_or_else(|| {
                        self.err(line, format!("{kw} --chmod={value}: an octal mode such as 755"))
                    })?)
                }
                "from" => {
                    return Err(self.err(
                        line,
                        format!("{kw} --from needs the other image's files, which --engine oci does not unpack: use --engine docker"),
                    ))
                }
                "link" => {}
                other => return Err(self.err(line, format!("{kw}: unknown flag --{other}"))),
            }
        }
        if rest.contains("<<") {
            return Err(self.err(
                line,
                format!("{kw} with a heredoc is not supported by --engine oci"),
            ));
        }
        let words = match json_array(rest) {
            Some(v) => v
                .into_iter()
                .map(|w| lex(&w, self.escape, lookup, false).map(|x| x.join("")))
                .collect::<Result<Vec<_>, _>>(),
            None => lex(rest, self.escape, lookup, true),
        }
        .map_err(|e| self.err(line, e))?;
        if words.len() < 2 {
            return Err(self.err(
                line,
                format!("{kw} needs at least one source and a destination"),
            ));
        }
        let (sources, dest) = words.split_at(words.len() - 1);
        let dest = &dest[0];
        let dest_abs = if dest.starts_with('/') {
            dest.clone()
        } else {
            format!("{}/{dest}", workdir.trim_end_matches('/'))
        };
        let mut matched: Vec<(String, PathBuf)> = Vec::new();
        for src in sources {
            if kw == "ADD" && (src.contains("://") || src.starts_with("git@")) {
                return Err(self.err(
                    line,
                    format!("ADD {src}: --engine oci adds local files only (download it first, or use --engine docker)"),
                ));
            }
            let rel = normalize(src)?;
            let found = if src.contains(['*', '?', '[']) {
                self.glob(&rel).map_err(|e| self.err(line, e))?
            } else {
                let path = self.options.context.join(&rel);
                if (!rel.is_empty() && self.ignore.is_excluded(&rel))
                    || std::fs::symlink_metadata(&path).is_err()
                {
                    Vec::new()
                } else {
                    vec![(rel.clone(), path)]
                }
            };
            if found.is_empty() {
                return Err(self.err(
                    line,
                    format!("{kw} {src}: no such file in the build context (or excluded by .dockerignore)"),
                ));
            }
            matched.extend(found);
        }
        // A file copied onto a directory of the base goes into it, as Docker's copy does.
        let dest_is_dir = dest.ends_with('/')
            || matched.len() > 1
            || dest == "."
            || lower.is_dir(&normalize(&dest_abs)?);
        let (uid, gid) = options.chown.unwrap_or((0, 0));
        let mut tree = LayerTree::on(lower);
        for (rel, path) in &matched {
            // A source that is a link is followed (Docker copies what it points to).
            let meta = std::fs::metadata(path).map_err(|e| OciError::io("read", path, e))?;
            if meta.is_dir() {
                tree.insert_dir(&dest_abs, 0o755, uid, gid)?;
                let ignore = &self.ignore;
                let prefix = rel.clone();
                let mut keep = |p: &Path| {
                    let p = p.to_string_lossy();
                    let full = if prefix.is_empty() {
                        p.to_string()
                    } else {
                        format!("{prefix}/{p}")
                    };
                    !ignore.is_excluded(&full)
                };
                tree.add_contents(path, &dest_abs, &options, &mut keep)?;
            } else {
                if kw == "ADD" && is_archive(path) {
                    return Err(self.err(
                        line,
                        format!("ADD {rel}: Docker would unpack this archive, which --engine oci does not do: unpack it into the context and COPY the files, or use --engine docker"),
                    ));
                }
                let target = if dest_is_dir {
                    let name = Path::new(rel)
                        .file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_default();
                    format!("{}/{name}", dest_abs.trim_end_matches('/'))
                } else {
                    dest_abs.clone()
                };
                if dest_is_dir {
                    tree.insert_dir(&dest_abs, 0o755, uid, gid)?;
                }
                let mode = options.chmod.unwrap_or(
                    std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777,
                );
                tree.insert(
                    &target,
                    Entry {
                        kind: EntryKind::File {
                            source: path.clone(),
                            size: meta.len(),
                            inode: None,
                        },
                        mode,
                        uid,
                        gid,
                    },
                )?;
            }
        }
        Ok(tree)
    }

    /// `--chown`: numeric `UID[:GID]` (`root` is 0).
    fn chown(&self, line: usize, value: &str) -> Result<(u32, u32), OciError> {
        let id = |s: &str| -> Option<u32> {
            if s == "root" {
                Some(0)
            } else {
                s.parse().ok()
            }
        };
        let (u, g) = value.split_once(':').unwrap_or((value, ""));
        let uid = id(u);
        let gid = if g.is_empty() { uid } else { id(g) };
        match (uid, gid) {
            (Some(u), Some(g)) => Ok((u, g)),
            _ => Err(self.err(
                line,
                format!("--chown={value}: --engine oci takes numeric ids (--chown=1000:1000), as it does not read the image's /etc/passwd"),
            )),
        }
    }

    /// The context paths matching a wildcard source, sorted, .dockerignore applied.
    fn glob(&self, pattern: &str) -> Result<Vec<(String, PathBuf)>, String> {
        let glob = Glob::new(pattern).map_err(|e| format!("bad pattern `{pattern}`: {e}"))?;
        let depth = pattern.split('/').count();
        let mut out = Vec::new();
        let context = &self.options.context;
        for entry in walkdir::WalkDir::new(context)
            .min_depth(1)
            .max_depth(depth)
            .sort_by_file_name()
            .into_iter()
            .filter_map(Result::ok)
        {
            let rel = entry.path().strip_prefix(context).unwrap_or(entry.path());
            let rel = rel.to_string_lossy().to_string();
            if glob.matches(&rel) && !self.ignore.is_excluded(&rel) {
                out.push((rel, entry.path().to_path_buf()));
            }
        }
        Ok(out)
    }
}

/// Whether a file is an archive `ADD` would unpack (tar, gzip, bzip2, xz, zstd).
fn is_archive(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 512];
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let n = f.read(&mut head).unwrap_or(0);
    let h = &head[..n];
    h.starts_with(&[0x1f, 0x8b])
        || h.starts_with(b"BZh")
        || h.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0])
        || h.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || (n >= 262 && &h[257..262] == b"ustar")
}

/// Labels and variables by name, for tests and callers that want a map.
pub fn env_map(env: &[String]) -> BTreeMap<String, String> {
    env.iter()
        .filter_map(|e| e.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(n: &str) -> Option<String> {
        match n {
            "A" => Some("a b".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn lexing_follows_docker() {
        let w = |t: &str| lex(t, '\\', &vars, true).unwrap();
        assert_eq!(w("x $A y"), ["x", "a b", "y"]);
        assert_eq!(w("'$A' \"$A\" \\$A"), ["$A", "a b", "$A"]);
        assert_eq!(
            w("${A}-${B:-dflt}-${A:+set}-${EMPTY:-e}"),
            ["a b-dflt-set-e"]
        );
        assert_eq!(w("k=\"v 1\" k2=v\\ 2"), ["k=v 1", "k2=v 2"]);
        assert!(lex("'open", '\\', &vars, true).is_err());
    }

    #[test]
    fn lines_continue_and_directives_apply() {
        let text =
            "# escape=`\n# a comment\nFROM scratch\nCOPY a `\n  # inside\n  b /x/\n\nrun echo\n";
        let (ins, escape) = parse("Dockerfile", text).unwrap();
        assert_eq!(escape, '`');
        assert_eq!(ins.len(), 3);
        assert_eq!((ins[1].line, ins[1].args.as_str()), (4, "a   b /x/"));
        assert_eq!((ins[2].line, ins[2].keyword.as_str()), (8, "RUN"));
    }

    #[test]
    fn durations_and_flags() {
        assert_eq!(duration_ns("1m30s"), Some(90_000_000_000));
        assert_eq!(duration_ns("500ms"), Some(500_000_000));
        assert_eq!(duration_ns("x"), None);
        let (f, rest) = flags("--chown=1:2 --link a b");
        assert_eq!(
            f,
            [
                ("chown".to_string(), "1:2".to_string()),
                ("link".to_string(), String::new())
            ]
        );
        assert_eq!(rest, "a b");
    }
}
