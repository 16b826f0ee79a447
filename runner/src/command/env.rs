//! The exported environment between commands: parsing `export -p` output and writing it back.
//!
//! # The format the agent writes
//!
//! One line per variable, in name order, in the subset of shell syntax that every POSIX shell
//! (dash, bash, bash as `sh`, busybox ash) reads the same way:
//!
//! ```sh
//! export NAME='value'
//! export QUOTE='it'\''s'
//! export ONLY_EXPORTED
//! ```
//!
//! Inside single quotes every byte is literal (newlines, `$`, backslashes, `"`, non-UTF-8 bytes);
//! a `'` is written as `'\''`. A variable that is exported but has no value (`export NAME`) keeps
//! that state.
//!
//! # What the agent reads
//!
//! Whatever `export -p` prints in dash (`export NAME='...'` with `'"'"'` or `'\''` for quotes), bash
//! (`declare -x NAME="..."` with backslash escapes, or `$'...'` ANSI-C quoting when the value has
//! newlines or non-printable bytes), bash in POSIX mode (`export NAME="..."`) and busybox. Arrays
//! (`declare -ax`) cannot be in an environment and are skipped. `#` lines are comments.

use buildagent_spec::is_variable_name;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::OsStringExt;

/// An exported environment: variable names (valid shell identifiers) with their values, or with
/// no value for a variable that is exported but unset (`export NAME`).
///
/// Values are bytes: a shell variable can hold any byte except NUL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportedEnv {
    vars: BTreeMap<String, Option<Vec<u8>>>,
}

/// Why a variable cannot be part of an [`ExportedEnv`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvError {
    /// The name is not a shell identifier (`[A-Za-z_][A-Za-z0-9_]*`).
    #[error("invalid environment variable name `{name}`: names are letters, digits and `_`, not starting with a digit")]
    InvalidName {
        /// The rejected name.
        name: String,
    },
    /// The value contains a NUL byte, which no environment can hold.
    #[error("environment variable `{name}` contains a NUL byte")]
    NulInValue {
        /// The variable.
        name: String,
    },
}

/// Why `export -p` output could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("at byte {offset}: {message}")]
pub struct ParseEnvError {
    /// Where in the input the problem is.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

impl ExportedEnv {
    /// An empty environment.
    pub fn new() -> ExportedEnv {
        ExportedEnv::default()
    }

    /// An environment holding `pairs` (later duplicates win).
    pub fn from_pairs<I, K, V>(pairs: I) -> Result<ExportedEnv, EnvError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<[u8]>,
    {
        let mut env = ExportedEnv::new();
        for (k, v) in pairs {
            env.set(k.as_ref(), v.as_ref())?;
        }
        Ok(env)
    }

    /// Sets `name` to `value` (and exports it).
    pub fn set(&mut self, name: &str, value: impl Into<Vec<u8>>) -> Result<(), EnvError> {
        if !is_variable_name(name) {
            return Err(EnvError::InvalidName {
                name: name.to_owned(),
            });
        }
        let value = value.into();
        if value.contains(&0) {
            return Err(EnvError::NulInValue {
                name: name.to_owned(),
            });
        }
        self.vars.insert(name.to_owned(), Some(value));
        Ok(())
    }

    /// Removes `name` (as `unset NAME` would). Returns whether it was there.
    pub fn remove(&mut self, name: &str) -> bool {
        self.vars.remove(name).is_some()
    }

    /// The value of `name`; `None` when it is absent or exported without a value.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.vars.get(name).and_then(|v| v.as_deref())
    }

    /// The value of `name` as text (invalid UTF-8 replaced by U+FFFD).
    pub fn get_lossy(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// Whether `name` is exported (with or without a value).
    pub fn contains(&self, name: &str) -> bool {
        self.vars.contains_key(name)
    }

    /// The number of exported names.
    pub fn len(&self) -> usize {
        self.vars.len()
    }

    /// Whether nothing is exported.
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// Every exported name with its value (`None`: exported without a value), in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_deref()))
    }

    /// The variables that have a value, as a process environment, byte for byte (values that are
    /// not UTF-8 included).
    pub fn to_process_env(&self) -> Vec<(OsString, OsString)> {
        self.vars
            .iter()
            .filter_map(|(k, v)| {
                v.as_ref()
                    .map(|v| (OsString::from(k), OsString::from_vec(v.clone())))
            })
            .collect()
    }

    /// The environment as a script of `export` lines that dash and bash both read back exactly.
    pub fn to_script(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in &self.vars {
            out.extend_from_slice(b"export ");
            out.extend_from_slice(name.as_bytes());
            if let Some(value) = value {
                out.push(b'=');
                push_single_quoted(&mut out, value);
            }
            out.push(b'\n');
        }
        out
    }

    /// Reads the output of `export -p` (dash, bash, bash in POSIX mode, busybox ash).
    pub fn parse(text: &[u8]) -> Result<ExportedEnv, ParseEnvError> {
        Parser::new(text, None).parse().map(|(env, _)| env)
    }

    /// Like [`parse`](Self::parse), stopping at the first top-level comment line equal to
    /// `marker` (the epilogue's proof that `export -p` completed): returns where the text after
    /// the marker line starts, or `None` if there is no marker.
    pub(crate) fn parse_with_marker(
        text: &[u8],
        marker: &[u8],
    ) -> Result<(ExportedEnv, Option<usize>), ParseEnvError> {
        Parser::new(text, Some(marker)).parse()
    }
}

impl fmt::Display for ExportedEnv {
    /// The [`to_script`](Self::to_script) form (lossy for non-UTF-8 values).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_script()))
    }
}

/// Appends `value` in single quotes, each `'` written as `'\''`.
pub(crate) fn push_single_quoted(out: &mut Vec<u8>, value: &[u8]) {
    out.push(b'\'');
    for &b in value {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
}

struct Parser<'a> {
    text: &'a [u8],
    pos: usize,
    /// The comment line that ends the input, if any.
    marker: Option<&'a [u8]>,
}

impl<'a> Parser<'a> {
    fn new(text: &'a [u8], marker: Option<&'a [u8]>) -> Parser<'a> {
        Parser {
            text,
            pos: 0,
            marker,
        }
    }

    fn err<T>(&self, message: impl Into<String>) -> Result<T, ParseEnvError> {
        Err(ParseEnvError {
            offset: self.pos,
            message: message.into(),
        })
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn peek_at(&self, k: usize) -> Option<u8> {
        self.text.get(self.pos + k).copied()
    }

    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    /// The variables, and where the text after the marker line starts (if the marker was seen).
    fn parse(mut self) -> Result<(ExportedEnv, Option<usize>), ParseEnvError> {
        let mut env = ExportedEnv::new();
        loop {
            while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r' | b';')) {
                self.pos += 1;
            }
            let Some(c) = self.peek() else { break };
            if c == b'#' {
                let start = self.pos;
                while !matches!(self.peek(), None | Some(b'\n')) {
                    self.pos += 1;
                }
                if self.marker == Some(&self.text[start..self.pos]) {
                    let after = (self.pos + 1).min(self.text.len());
                    return Ok((env, Some(after)));
                }
                continue;
            }
            let keyword = self.bare_token();
            let mut flags: Vec<u8> = Vec::new();
            match keyword {
                b"export" | b"declare" | b"typeset" | b"readonly" => {}
                _ => {
                    return self.err(format!(
                        "expected `export` or `declare`, found `{}`",
                        String::from_utf8_lossy(keyword)
                    ))
                }
            }
            loop {
                self.skip_blanks();
                if self.peek() == Some(b'-') {
                    let token = self.bare_token();
                    flags.extend_from_slice(token);
                } else {
                    break;
                }
            }
            let start = self.pos;
            while matches!(self.peek(), Some(b) if b.is_ascii_alphanumeric() || b == b'_') {
                self.pos += 1;
            }
            let name = String::from_utf8_lossy(&self.text[start..self.pos]).into_owned();
            if !is_variable_name(&name) {
                self.pos = start;
                return self.err("expected a variable name");
            }
            let is_array = flags.contains(&b'a') || flags.contains(&b'A');
            let value = if self.peek() == Some(b'=') {
                self.pos += 1;
                if is_array && self.peek() == Some(b'(') {
                    self.skip_array()?;
                    None
                } else {
                    Some(self.word()?)
                }
            } else {
                None
            };
            match self.peek() {
                None | Some(b' ' | b'\t' | b'\n' | b'\r' | b';') => {}
                Some(_) => return self.err("unexpected character after the value"),
            }
            if is_array {
                continue;
            }
            if let Some(v) = &value {
                if v.contains(&0) {
                    return self.err(format!("`{name}` contains a NUL byte"));
                }
            }
            env.vars.insert(name, value);
        }
        Ok((env, None))
    }

    /// An unquoted token up to a blank or newline.
    fn bare_token(&mut self) -> &'a [u8] {
        let start = self.pos;
        while !matches!(
            self.peek(),
            None | Some(b' ' | b'\t' | b'\n' | b'\r' | b';')
        ) {
            self.pos += 1;
        }
        &self.text[start..self.pos]
    }

    /// A shell word made of quoted and unquoted parts, up to an unquoted blank or newline.
    fn word(&mut self) -> Result<Vec<u8>, ParseEnvError> {
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None | Some(b' ' | b'\t' | b'\n' | b'\r' | b';') => return Ok(out),
                Some(b'\'') => {
                    self.pos += 1;
                    loop {
                        match self.peek() {
                            None => return self.err("unterminated single quote"),
                            Some(b'\'') => break,
                            Some(b) => {
                                out.push(b);
                                self.pos += 1;
                            }
                        }
                    }
                    self.pos += 1;
                }
                Some(b'"') => {
                    self.pos += 1;
                    loop {
                        match self.peek() {
                            None => return self.err("unterminated double quote"),
                            Some(b'"') => break,
                            Some(b'\\') => match self.peek_at(1) {
                                Some(b'\n') => self.pos += 2,
                                Some(c @ (b'$' | b'`' | b'"' | b'\\')) => {
                                    out.push(c);
                                    self.pos += 2;
                                }
                                _ => {
                                    out.push(b'\\');
                                    self.pos += 1;
                                }
                            },
                            Some(b) => {
                                out.push(b);
                                self.pos += 1;
                            }
                        }
                    }
                    self.pos += 1;
                }
                Some(b'$') if self.peek_at(1) == Some(b'\'') => {
                    self.pos += 2;
                    self.ansi_c(&mut out)?;
                }
                Some(b'\\') => match self.peek_at(1) {
                    None => return self.err("backslash at end of input"),
                    Some(b'\n') => self.pos += 2,
                    Some(c) => {
                        out.push(c);
                        self.pos += 2;
                    }
                },
                Some(b) => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
    }

    /// The body of a `$'...'` string (after the opening quote), bash's ANSI-C quoting.
    fn ansi_c(&mut self, out: &mut Vec<u8>) -> Result<(), ParseEnvError> {
        loop {
            let Some(b) = self.peek() else {
                return self.err("unterminated $'...' string");
            };
            self.pos += 1;
            match b {
                b'\'' => return Ok(()),
                b'\\' => {
                    let Some(e) = self.peek() else {
                        return self.err("unterminated $'...' string");
                    };
                    self.pos += 1;
                    match e {
                        b'a' => out.push(0x07),
                        b'b' => out.push(0x08),
                        b'e' | b'E' => out.push(0x1b),
                        b'f' => out.push(0x0c),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'v' => out.push(0x0b),
                        b'\\' | b'\'' | b'"' | b'?' => out.push(e),
                        b'0'..=b'7' => {
                            let mut v = u32::from(e - b'0');
                            for _ in 0..2 {
                                match self.peek() {
                                    Some(d @ b'0'..=b'7') => {
                                        v = v * 8 + u32::from(d - b'0');
                                        self.pos += 1;
                                    }
                                    _ => break,
                                }
                            }
                            out.push((v & 0xff) as u8);
                        }
                        b'x' => match self.hex_digits(2) {
                            Some(v) => out.push(v as u8),
                            None => out.extend_from_slice(b"\\x"),
                        },
                        b'u' | b'U' => {
                            let max = if e == b'u' { 4 } else { 8 };
                            match self.hex_digits(max) {
                                Some(v) => {
                                    let c = char::from_u32(v).unwrap_or('\u{fffd}');
                                    let mut buf = [0; 4];
                                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                                }
                                None => {
                                    out.push(b'\\');
                                    out.push(e);
                                }
                            }
                        }
                        b'c' => match self.peek() {
                            Some(c) => {
                                self.pos += 1;
                                out.push(c & 0x1f);
                            }
                            None => return self.err("unterminated $'...' string"),
                        },
                        other => {
                            out.push(b'\\');
                            out.push(other);
                        }
                    }
                }
                _ => out.push(b),
            }
        }
    }

    fn hex_digits(&mut self, max: usize) -> Option<u32> {
        let mut v: u32 = 0;
        let mut n = 0;
        while n < max {
            match self.peek().and_then(|b| (b as char).to_digit(16)) {
                Some(d) => {
                    v = v.wrapping_mul(16).wrapping_add(d);
                    self.pos += 1;
                    n += 1;
                }
                None => break,
            }
        }
        (n > 0).then_some(v)
    }

    /// Skips a bash array value `( [0]="a" [1]="b" )`.
    fn skip_array(&mut self) -> Result<(), ParseEnvError> {
        self.pos += 1;
        loop {
            while matches!(self.peek(), Some(b' ' | b'\t' | b'\n')) {
                self.pos += 1;
            }
            match self.peek() {
                None => return self.err("unterminated array value"),
                Some(b')') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(_) => {
                    // An element: a word that stops at `)` too.
                    let before = self.pos;
                    self.array_element()?;
                    if self.pos == before {
                        return self.err("malformed array value");
                    }
                }
            }
        }
    }

    fn array_element(&mut self) -> Result<(), ParseEnvError> {
        loop {
            match self.peek() {
                None | Some(b' ' | b'\t' | b'\n' | b')') => return Ok(()),
                Some(b'\'' | b'"') => {
                    // Reuse the word parser on the quoted part only.
                    let quote = self.peek();
                    let mut probe = Parser {
                        pos: self.pos,
                        ..Parser::new(self.text, None)
                    };
                    if quote == Some(b'\'') {
                        probe.pos += 1;
                        while !matches!(probe.peek(), None | Some(b'\'')) {
                            probe.pos += 1;
                        }
                        if probe.peek().is_none() {
                            return probe.err("unterminated single quote");
                        }
                        probe.pos += 1;
                    } else {
                        probe.pos += 1;
                        loop {
                            match probe.peek() {
                                None => return probe.err("unterminated double quote"),
                                Some(b'"') => break,
                                Some(b'\\') => probe.pos += 2,
                                Some(_) => probe.pos += 1,
                            }
                        }
                        probe.pos += 1;
                    }
                    self.pos = probe.pos;
                }
                Some(b'\\') => self.pos += 2,
                Some(_) => self.pos += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ExportedEnv {
        ExportedEnv::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn dash_output() {
        let env = parse(
            "export A='it'\"'\"'s \"q\" $HOME \\ `t`\nnew'\nexport D\nexport E=''\nexport PWD='/x'\n",
        );
        assert_eq!(env.get("A").unwrap(), b"it's \"q\" $HOME \\ `t`\nnew");
        assert!(env.contains("D") && env.get("D").is_none());
        assert_eq!(env.get("E").unwrap(), b"");
        assert_eq!(env.len(), 4);
    }

    #[test]
    fn bash_output() {
        let env = parse(concat!(
            "declare -x A=$'it\\'s \"q\" $HOME \\\\ back `tick` \\nnew\\nline'\n",
            "declare -x B=$'tab\\there\\001ctl\\177'\n",
            "declare -x C=$'\\303\\274n\\342\\234\\223'\n",
            "declare -x D\n",
            "declare -x E=\"\"\n",
            "declare -rx R=\"read \\\"only\\\" \\$x \\\\ \\`y\\`\"\n",
            "declare -ax ARR=([0]=\"a b\" [1]=\"c)\")\n",
            "declare -x U=$'\\u00fc \\x41\\cA\\e'\n",
        ));
        assert_eq!(
            env.get("A").unwrap(),
            b"it's \"q\" $HOME \\ back `tick` \nnew\nline"
        );
        assert_eq!(env.get("B").unwrap(), b"tab\there\x01ctl\x7f");
        assert_eq!(env.get_lossy("C").unwrap(), "ün✓");
        assert!(env.contains("D"));
        assert_eq!(env.get("E").unwrap(), b"");
        assert_eq!(env.get("R").unwrap(), b"read \"only\" $x \\ `y`");
        assert!(!env.contains("ARR"));
        assert_eq!(env.get("U").unwrap(), "ü A\x01\x1b".as_bytes());
    }

    #[test]
    fn bash_posix_output() {
        let env = parse("export A=\"x\"\nexport B=$'a\\nb'\nexport C\n");
        assert_eq!(env.get("A").unwrap(), b"x");
        assert_eq!(env.get("B").unwrap(), b"a\nb");
        assert!(env.contains("C"));
    }

    #[test]
    fn own_format_round_trips() {
        let tricky: &[(&str, &[u8])] = &[
            ("Q", b"it's 'quoted' \"twice\""),
            ("NL", b"line1\nline2\n\n"),
            ("DOLLAR", b"$HOME ${X:-y} $(id) `id`"),
            ("BS", b"back\\slash\\"),
            ("UNI", "ünïcödé ✓ 🚀".as_bytes()),
            ("BIN", b"\x01\x7f\xff\xfe"),
            ("EMPTY", b""),
            ("SPACES", b"  lead and trail  "),
        ];
        let env = ExportedEnv::from_pairs(tricky.iter().copied()).unwrap();
        let script = env.to_script();
        assert_eq!(ExportedEnv::parse(&script).unwrap(), env);
    }

    #[test]
    fn marker_and_errors() {
        let (env, seen) =
            ExportedEnv::parse_with_marker(b"export A='1'\n# end\n", b"# end").unwrap();
        assert_eq!(seen, Some(19));
        assert_eq!(env.get("A").unwrap(), b"1");
        // Parsing stops at the marker: what follows is not `export -p` output.
        let text = b"export A='1'\n# end\n/some dir\n";
        let (env, seen) = ExportedEnv::parse_with_marker(text, b"# end").unwrap();
        assert_eq!(&text[seen.unwrap()..], b"/some dir\n");
        assert_eq!(env.len(), 1);
        // A marker inside a value does not count.
        let (_, seen) =
            ExportedEnv::parse_with_marker(b"export A='x\n# end\n'\n", b"# end").unwrap();
        assert_eq!(seen, None);

        let e = ExportedEnv::parse(b"export A='unterminated\n").unwrap_err();
        assert!(e.message.contains("unterminated single quote"));
        let e = ExportedEnv::parse(b"alias x=y\n").unwrap_err();
        assert_eq!(e.offset, 5);
        assert!(ExportedEnv::parse(b"export 1A=x\n").is_err());
    }

    #[test]
    fn set_validates() {
        let mut env = ExportedEnv::new();
        assert_eq!(
            env.set("A-B", "x"),
            Err(EnvError::InvalidName { name: "A-B".into() })
        );
        assert_eq!(
            env.set("A", b"a\0b".to_vec()),
            Err(EnvError::NulInValue { name: "A".into() })
        );
        env.set("A", "1").unwrap();
        assert!(env.remove("A"));
        assert!(env.is_empty());
    }
}
