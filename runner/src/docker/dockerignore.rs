//! `.dockerignore`: which files of a build context are left out of the archive sent to the engine,
//! and of the layers `image build --engine oci` writes (one matcher for both engines).
//!
//! These are Docker's documented rules, as the docker CLI applies them (its `dockerignore` reader
//! and moby's `patternmatcher`), implemented here because no crate has them: gitignore matchers
//! (the `ignore` crate) differ, since a gitignore pattern without a `/` matches at any depth
//! (`*.log` ignores `a/b.log`) while a `.dockerignore` pattern is anchored at the context's root
//! (`*.log` leaves `a/b.log` in; write `**/*.log`).
//!
//! - One pattern a line. A line starting with `#` is a comment; surrounding white space is
//!   trimmed; blank lines are skipped. A UTF-8 byte order mark at the start is ignored.
//! - Each pattern is cleaned like Go's `filepath.Clean` (`./a//b/../c` is `a/c`), and a leading
//!   `/` is dropped: the context's root is both the working and the root directory.
//! - Matching follows Go's `filepath.Match`: `*` is any run of characters but `/`, `?` one
//!   character but `/`, `[a-z]`/`[^a-z]` a class, `\` escapes the next character. `**` matches
//!   any number of directories, including none (`**/*.go` also matches `main.go`).
//! - A pattern that matches a directory excludes everything below it.
//! - `!pattern` is an exception: it puts back what an earlier pattern excluded. The last pattern
//!   that matches a path decides.
//! - A directory that is excluded is not walked unless some exception pattern, read as text,
//!   starts with the directory's path followed by `/` (`!build/keep.txt` walks `build`; `!**/keep`
//!   does not), as in the docker CLI.

use regex::Regex;

/// A `.dockerignore` pattern that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: bad pattern `{pattern}`: {reason}")]
pub struct PatternError {
    /// The 1-based line of the pattern in the file (0 for a pattern not read from a file).
    pub line: usize,
    /// The pattern as written.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The patterns of one `.dockerignore` file, ready to match paths.
#[derive(Debug, Clone, Default)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone)]
struct Pattern {
    /// The cleaned pattern, without its `!`.
    text: String,
    exception: bool,
    matcher: Matcher,
}

/// moby's match kinds: the literal forms are compared as strings, the rest as a regex.
#[derive(Debug, Clone)]
enum Matcher {
    Exact,
    /// `foo/**`: every path that starts with `foo/`.
    Prefix(String),
    /// `**/foo`: every path that ends with `/foo`, and `foo` itself.
    Suffix(String),
    Regex(Regex),
}

impl DockerIgnore {
    /// Reads the text of a `.dockerignore` file. Fails on the first unusable pattern (an
    /// unclosed `[`, a lone `!`), naming its line.
    pub fn parse(text: &str) -> Result<DockerIgnore, PatternError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut ignore = DockerIgnore::default();
        for (index, line) in text.lines().enumerate() {
            if line.starts_with('#') {
                continue;
            }
            let trimmed = line.trim();
            if trimmed.is_empty() {
                continue;
            }
            ignore.push(trimmed, index + 1)?;
        }
        Ok(ignore)
    }

    /// Adds a pattern as if it were the file's next line (`line` is used in errors).
    fn push(&mut self, written: &str, line: usize) -> Result<(), PatternError> {
        let error = |reason: &str| PatternError {
            line,
            pattern: written.to_string(),
            reason: reason.to_string(),
        };
        let (exception, rest) = match written.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, written),
        };
        if rest.is_empty() {
            return Err(error("`!` needs a pattern after it"));
        }
        let mut text = clean(rest);
        if text.len() > 1 && text.starts_with('/') {
            text.remove(0);
        }
        let matcher = compile(&text).map_err(|reason| error(&reason))?;
        self.patterns.push(Pattern {
            text,
            exception,
            matcher,
        });
        Ok(())
    }

    /// True when there are no patterns at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Makes sure `path` (relative to the context, `/`-separated) is sent: when the patterns
    /// exclude it, an exception for it is added at the end. The docker CLI does this for the
    /// Dockerfile and `.dockerignore` itself, which the engine needs whatever the file says.
    pub fn keep(&mut self, path: &str) {
        if self.is_excluded(path) {
            let exception = Pattern {
                text: path.to_string(),
                exception: true,
                matcher: Matcher::Exact,
            };
            self.patterns.push(exception);
        }
    }

    /// Whether `path` (relative to the context, `/`-separated, no leading `./`) is left out:
    /// the last pattern that matches it, or one of its parent directories, decides.
    pub fn is_excluded(&self, path: &str) -> bool {
        let parents: Vec<usize> = path.match_indices('/').map(|(i, _)| i).collect();
        let mut excluded = false;
        for pattern in &self.patterns {
            // An exclusion cannot change an excluded path, nor an exception an included one.
            if pattern.exception != excluded {
                continue;
            }
            let matched =
                pattern.matches(path) || parents.iter().any(|&end| pattern.matches(&path[..end]));
            if matched {
                excluded = !pattern.exception;
            }
        }
        excluded
    }

    /// Whether the walk must go into `dir`, which [`is_excluded`](Self::is_excluded): only when
    /// an exception pattern's text starts with `dir/` (the docker CLI's rule).
    pub fn must_walk_excluded_dir(&self, dir: &str) -> bool {
        let prefix = format!("{dir}/");
        self.patterns
            .iter()
            .filter(|p| p.exception)
            .any(|p| format!("{}/", p.text).starts_with(&prefix))
    }
}

/// One path pattern with the same rules, on its own: `COPY`'s wildcard sources
/// (`image build --engine oci`) match context paths with it.
#[derive(Debug, Clone)]
pub struct Glob(Pattern);

impl Glob {
    /// Compiles `pattern` (cleaned like a path, a leading `/` dropped).
    pub fn new(pattern: &str) -> Result<Glob, String> {
        let mut text = clean(pattern);
        if text.len() > 1 && text.starts_with('/') {
            text.remove(0);
        }
        let matcher = compile(&text)?;
        Ok(Glob(Pattern {
            text,
            exception: false,
            matcher,
        }))
    }

    /// Whether `path` (relative, `/`-separated, cleaned) matches, itself (not through a parent).
    pub fn matches(&self, path: &str) -> bool {
        self.0.matches(path)
    }
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match &self.matcher {
            Matcher::Exact => path == self.text,
            Matcher::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Matcher::Suffix(suffix) => {
                path.ends_with(suffix.as_str())
                    || suffix.strip_prefix('/').is_some_and(|s| path == s)
            }
            Matcher::Regex(regex) => regex.is_match(path),
        }
    }
}

/// Go's `filepath.Clean` for `/`-separated paths.
fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            _ => parts.push(part),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// moby's `Pattern.compile`: the kind of match, and for wildcards the equivalent regex.
fn compile(pattern: &str) -> Result<Matcher, String> {
    #[derive(PartialEq)]
    enum Kind {
        Exact,
        Prefix,
        Suffix,
        Regex,
    }
    let mut kind = Kind::Exact;
    let mut re = String::from("^");
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    let mut first = true;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        match ch {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                // `**/` is `**`.
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i == chars.len() {
                    // A trailing `**` takes everything, as in .gitignore.
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        re.push_str(".*");
                        kind = Kind::Regex;
                    }
                } else {
                    // Any number of directories, even none.
                    re.push_str("(.*/)?");
                    kind = Kind::Regex;
                }
                if first {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                re.push_str("[^/]*");
                kind = Kind::Regex;
            }
            '?' => {
                re.push_str("[^/]");
                kind = Kind::Regex;
            }
            '\\' => {
                // An escape makes the pattern differ from its text, so it cannot be compared
                // literally (moby's exact match would miss `foo\*` against `foo*`).
                kind = Kind::Regex;
                match chars.get(i) {
                    Some(&next) => {
                        i += 1;
                        re.push_str(&regex::escape(&next.to_string()));
                    }
                    None => return Err("a trailing `\\` escapes nothing".to_string()),
                }
            }
            '[' => {
                // A class, copied with Go's `^` negation; `\` escapes inside it.
                kind = Kind::Regex;
                let start = i;
                let mut class = String::from("[");
                if chars.get(i) == Some(&'^') {
                    class.push('^');
                    i += 1;
                }
                let mut closed = false;
                let mut empty = true;
                while i < chars.len() {
                    let c = chars[i];
                    i += 1;
                    match c {
                        ']' if !empty => {
                            closed = true;
                            break;
                        }
                        '\\' => match chars.get(i) {
                            Some(&next) => {
                                i += 1;
                                class.push_str(&regex::escape(&next.to_string()));
                            }
                            None => break,
                        },
                        '[' | '&' | '~' | ']' => {
                            class.push('\\');
                            class.push(c);
                        }
                        _ => class.push(c),
                    }
                    empty = false;
                }
                if !closed {
                    return Err(format!(
                        "the character class at column {start} has no closing `]`"
                    ));
                }
                class.push(']');
                re.push_str(&class);
            }
            // Everything else, `]` outside a class included, is itself.
            _ => re.push_str(&regex::escape(&ch.to_string())),
        }
        first = false;
    }
    Ok(match kind {
        Kind::Exact => Matcher::Exact,
        Kind::Prefix => Matcher::Prefix(pattern[..pattern.len() - 2].to_string()),
        Kind::Suffix => Matcher::Suffix(pattern[2..].to_string()),
        Kind::Regex => {
            re.push('$');
            Matcher::Regex(Regex::new(&re).map_err(|e| e.to_string())?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignore(text: &str) -> DockerIgnore {
        DockerIgnore::parse(text).unwrap()
    }

    fn excluded(text: &str, path: &str) -> bool {
        ignore(text).is_excluded(path)
    }

    #[test]
    fn cleaning_is_go_filepath_clean() {
        assert_eq!(clean("./a//b/../c/"), "a/c");
        assert_eq!(clean("/../a"), "/a");
        assert_eq!(clean("../a"), "../a");
        assert_eq!(clean("a/.."), ".");
        assert_eq!(clean("/"), "/");
    }

    #[test]
    fn patterns_are_anchored_at_the_root() {
        assert!(excluded("*.log", "a.log"));
        assert!(!excluded("*.log", "dir/a.log"));
        assert!(excluded("**/*.log", "dir/sub/a.log"));
        assert!(excluded("**/*.log", "a.log"));
        assert!(excluded("/secret.txt", "secret.txt"));
        assert!(excluded("./dir/../secret.txt", "secret.txt"));
        assert!(excluded("*/temp*", "somedir/temporary.txt"));
        assert!(!excluded("*/temp*", "somedir/sub/temporary.txt"));
        assert!(excluded("*/*/temp*", "a/b/temp"));
        assert!(excluded("temp?", "temp1"));
        assert!(!excluded("temp?", "temp12"));
        assert!(!excluded("temp?", "temp/"));
    }

    #[test]
    fn a_matching_directory_excludes_its_contents() {
        assert!(excluded("node_modules", "node_modules/a/b.js"));
        assert!(excluded("node_modules/", "node_modules/x"));
        assert!(excluded("a/*", "a/b/c/d"));
        assert!(!excluded("node_modules", "src/node_modules/x"));
        assert!(excluded("**/node_modules", "src/node_modules/x"));
    }

    #[test]
    fn double_star_forms() {
        assert!(excluded("**", "anything/at/all"));
        assert!(excluded("build/**", "build/x/y"));
        assert!(!excluded("build/**", "builder"));
        assert!(excluded("a/**/b", "a/b"));
        assert!(excluded("a/**/b", "a/x/y/b"));
        assert!(excluded("**/b", "b"));
        assert!(excluded("**/b", "x/b"));
        assert!(!excluded("**/b", "xb"));
        assert!(excluded("a*/**", "ab/c"));
    }

    #[test]
    fn exceptions_and_the_last_match_wins() {
        let text = "*.md\n!README.md\n";
        assert!(excluded(text, "CHANGES.md"));
        assert!(!excluded(text, "README.md"));
        let text = "*.md\n!README*.md\nREADME-secret.md\n";
        assert!(excluded(text, "README-secret.md"));
        assert!(!excluded(text, "README-public.md"));
        // An exception before the exclusion does nothing.
        assert!(excluded("!a.txt\n*.txt\n", "a.txt"));
    }

    #[test]
    fn classes_escapes_and_special_characters() {
        assert!(excluded("file[0-9].txt", "file7.txt"));
        assert!(!excluded("file[^0-9].txt", "file7.txt"));
        assert!(excluded("file[^0-9].txt", "fileA.txt"));
        assert!(!excluded("file[0-9].txt", "file/.txt"));
        assert!(excluded(r"star\*", "star*"));
        assert!(!excluded(r"star\*", "starry"));
        assert!(excluded("a+b(c).{d}$", "a+b(c).{d}$"));
        assert!(!excluded("a.b", "axb"));
        assert!(excluded("[]a]", "]"));
        assert!(excluded("a]", "a]"));
        assert!(excluded("x*]", "xy]"));
    }

    /// The cases where the `--engine oci` matcher this one replaced answered differently.
    #[test]
    fn cases_the_oci_engine_got_wrong() {
        // Go's classes negate with `^` only: `[!a]` is `!` or `a`.
        assert!(!excluded("file[!0-9].txt", "fileA.txt"));
        assert!(excluded("file[!0-9].txt", "file!.txt"));
        assert!(excluded("file[!0-9].txt", "file5.txt"));
        // `#` starts a comment only in the first column.
        assert!(excluded(" #x\n", "#x"));
        // A lone `!` is an error, not a pattern to skip.
        assert!(DockerIgnore::parse("!\n").is_err());
        // A trailing `/` matches the directory and what is below it.
        assert!(excluded("build/\n", "build/a/b"));
        assert!(excluded("/build\n", "build"));
        // `**/` alone at the start also matches at the root, and an exception wins back a
        // file inside an excluded directory.
        let text = "**/*.tmp\nvendor\n!vendor/keep.tmp\n";
        assert!(excluded(text, "x.tmp"));
        assert!(excluded(text, "vendor/a"));
        assert!(!excluded(text, "vendor/keep.tmp"));
        let glob = Glob::new("/src/*.[!c]").unwrap();
        assert!(glob.matches("src/a.!") && glob.matches("src/a.c"));
        assert!(!glob.matches("src/a.h") && !glob.matches("src/d/a.!"));
    }

    #[test]
    fn comments_blank_lines_and_bom() {
        let ig = ignore("\u{feff}# a comment\n\n   \n  spaced.txt  \n #not a comment\n");
        assert!(ig.is_excluded("spaced.txt"));
        assert!(!ig.is_excluded("# a comment"));
        assert!(ig.is_excluded("#not a comment"));
        assert!(ignore("").is_empty());
    }

    #[test]
    fn bad_patterns_name_their_line() {
        let err = DockerIgnore::parse("ok\n[abc\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.to_string().contains("`[abc`"), "{err}");
        let err = DockerIgnore::parse("!\n").unwrap_err();
        assert_eq!(err.line, 1);
        assert!(DockerIgnore::parse("trailing\\").is_err());
    }

    #[test]
    fn kept_files_are_put_back() {
        let mut ig = ignore("*\n");
        assert!(ig.is_excluded("Dockerfile"));
        ig.keep("Dockerfile");
        ig.keep(".dockerignore");
        assert!(!ig.is_excluded("Dockerfile"));
        assert!(!ig.is_excluded(".dockerignore"));
        assert!(ig.is_excluded("other"));
        // A Dockerfile inside an excluded directory: the walk goes into the directory.
        let mut ig = ignore("docker\n");
        ig.keep("docker/Dockerfile");
        assert!(ig.must_walk_excluded_dir("docker"));
        assert!(!ig.is_excluded("docker/Dockerfile"));
        assert!(ig.is_excluded("docker/other"));
    }

    #[test]
    fn excluded_directories_are_walked_only_for_literal_exceptions() {
        let ig = ignore("build\n!build/keep.txt\n");
        assert!(ig.must_walk_excluded_dir("build"));
        assert!(!ig.is_excluded("build/keep.txt"));
        let ig = ignore("build\n!**/keep.txt\n");
        assert!(!ig.must_walk_excluded_dir("build"));
        assert!(!ig.must_walk_excluded_dir("buil"));
    }
}
