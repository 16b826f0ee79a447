//! `.dockerignore` patterns, matched as Docker matches them (moby's patternmatcher).
//!
//! Each line is a pattern, `#` lines are comments; a pattern is cleaned like a path (a leading
//! `/` and `./` dropped, `a//b` and `a/./b` folded); `*` and `?` stay inside one path segment,
//! `[...]` is a character class, `**` spans any number of segments, `\` escapes; a leading `!`
//! makes an exception. A path is excluded when the last pattern that matches it, or one of its
//! parent directories, is not an exception.

use regex::Regex;

/// The patterns of one `.dockerignore`.
#[derive(Clone, Debug, Default)]
pub struct Ignore {
    patterns: Vec<(Regex, bool)>,
}

impl Ignore {
    /// Parses the text of a `.dockerignore`.
    pub fn parse(text: &str) -> Result<Ignore, String> {
        let mut patterns = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exception, pattern) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let pattern = clean(pattern);
            if pattern.is_empty() {
                continue;
            }
            let regex = to_regex(&pattern)
                .map_err(|e| format!("bad .dockerignore pattern `{line}`: {e}"))?;
            patterns.push((regex, exception));
        }
        Ok(Ignore { patterns })
    }

    /// True when nothing is excluded.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether the context path `path` (relative, `/`-separated) is excluded.
    pub fn excluded(&self, path: &str) -> bool {
        let path = clean(path);
        let mut excluded = false;
        // The path and each of its parents: a pattern that matches a directory excludes
        // everything below it.
        let mut candidates = vec![path.as_str()];
        let mut end = path.len();
        while let Some(i) = path[..end].rfind('/') {
            candidates.push(&path[..i]);
            end = i;
        }
        for (regex, exception) in &self.patterns {
            if candidates.iter().any(|c| regex.is_match(c)) {
                excluded = !exception;
            }
        }
        excluded
    }
}

/// Cleans a pattern or path like Go's filepath.Clean, relative to the context root.
fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            x => parts.push(x),
        }
    }
    parts.join("/")
}

/// The anchored regular expression of a Docker path pattern (`*`, `?`, `[...]`, `**`, `\\`).
pub(crate) fn to_regex(pattern: &str) -> Result<Regex, regex::Error> {
    let mut re = String::from("^");
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '*' => {
                if chars.get(i + 1) == Some(&'*') {
                    i += 1;
                    // `**/` matches zero or more directories; a trailing `**` anything.
                    if chars.get(i + 1) == Some(&'/') {
                        i += 1;
                        re.push_str("(.*/)?");
                    } else {
                        re.push_str(".*");
                    }
                } else {
                    re.push_str("[^/]*");
                }
            }
            '?' => re.push_str("[^/]"),
            '[' => {
                let mut j = i + 1;
                let mut class = String::from("[");
                if chars.get(j) == Some(&'^') || chars.get(j) == Some(&'!') {
                    class.push('^');
                    j += 1;
                }
                while j < chars.len() && chars[j] != ']' {
                    if chars[j] == '\\' && j + 1 < chars.len() {
                        j += 1;
                    }
                    if "\\[]^".contains(chars[j]) {
                        class.push('\\');
                    }
                    class.push(chars[j]);
                    j += 1;
                }
                class.push(']');
                re.push_str(&class);
                i = j;
            }
            '\\' if i + 1 < chars.len() => {
                i += 1;
                re.push_str(&regex::escape(&chars[i].to_string()));
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
        i += 1;
    }
    re.push('$');
    Regex::new(&re)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_rules() {
        let ig = Ignore::parse(
            "# comment\n*.log\n!keep.log\n/build\nnode_modules\n**/*.tmp\ndocs/**/draft?\n",
        )
        .unwrap();
        assert!(ig.excluded("a.log"));
        assert!(!ig.excluded("keep.log"));
        assert!(!ig.excluded("sub/a.log")); // `*` does not cross `/`
        assert!(ig.excluded("build/out/x"));
        assert!(ig.excluded("node_modules/x/y.js"));
        assert!(!ig.excluded("src/node_modules/x")); // anchored at the root
        assert!(ig.excluded("x.tmp"));
        assert!(ig.excluded("a/b/x.tmp"));
        assert!(ig.excluded("docs/draft1"));
        assert!(ig.excluded("docs/a/b/draft2"));
        assert!(!ig.excluded("src/main.rs"));
    }

    #[test]
    fn an_exception_inside_an_excluded_directory() {
        let ig = Ignore::parse("vendor\n!vendor/keep\n").unwrap();
        assert!(ig.excluded("vendor/x"));
        assert!(!ig.excluded("vendor/keep"));
        assert!(!ig.excluded("vendor/keep/file"));
    }
}
