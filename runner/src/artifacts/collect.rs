//! Which files an artifact holds: globs, base directories, exclusions, discard-paths, links.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use buildagent_spec::ArtifactSet;
use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use super::{ArtifactError, Entry, EntryKind, Note};

/// Where [`collect`] looks.
#[derive(Clone, Debug)]
pub struct CollectOptions {
    source_dir: PathBuf,
    skip: Option<PathBuf>,
    keep_mtime: bool,
}

impl CollectOptions {
    /// Collection relative to `source_dir` (`CODEBUILD_SRC_DIR`). Variables in `base-directory`
    /// must already be expanded (see [`expand_vars`]).
    pub fn new(source_dir: impl Into<PathBuf>) -> CollectOptions {
        CollectOptions {
            source_dir: source_dir.into(),
            skip: None,
            keep_mtime: false,
        }
    }

    /// Records each file's modification time in [`Entry::mtime`] (default: no, every entry gets
    /// the fixed 1980-01-01 and zips are reproducible).
    pub fn keep_mtime(&mut self, yes: bool) -> &mut Self {
        self.keep_mtime = yes;
        self
    }

    /// Never collects anything under `dir` (default: nothing skipped). The engine passes the
    /// artifacts directory, so that `-a` inside the source tree does not pack earlier artifacts
    /// or the one being written.
    pub fn skip(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.skip = Some(dir.into());
        self
    }
}

/// Expands `$NAME` and `${NAME}` in `text` with `lookup` (unset: empty). Anything else is kept.
pub fn expand_vars(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, len) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) if is_name(&braced[..end]) => (&braced[..end], end + 2),
                _ => ("", 0),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if is_name(&after[..end]) {
                (&after[..end], end)
            } else {
                ("", 0)
            }
        };
        if len == 0 {
            out.push('$');
            rest = after;
        } else {
            out.push_str(&lookup(name).unwrap_or_default());
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    out
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A glob with the artifact rules: `*` stays in one segment, `**` spans segments, dot-files match.
pub(crate) fn glob(pattern: &str) -> Result<Glob, ArtifactError> {
    GlobBuilder::new(normalize(pattern))
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|source| ArtifactError::Pattern {
            pattern: pattern.to_string(),
            source,
        })
}

/// `./a/b` is `a/b`.
pub(crate) fn normalize(pattern: &str) -> &str {
    let mut p = pattern;
    while let Some(rest) = p.strip_prefix("./") {
        p = rest.trim_start_matches('/');
    }
    p
}

fn glob_set(patterns: &[&str]) -> Result<GlobSet, ArtifactError> {
    let mut builder = GlobSetBuilder::new();
    for p in patterns {
        builder.add(glob(p)?);
    }
    builder.build().map_err(|source| ArtifactError::Pattern {
        pattern: patterns.join(", "),
        source,
    })
}

fn has_glob_chars(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

/// Collects the files of one artifact, sorted by their name in the artifact, reporting CodeBuild's
/// log lines (`Expanding ...`, `Found N file(s)`) and warnings to `notes`.
pub fn collect(
    set: &ArtifactSet,
    options: &CollectOptions,
    notes: &mut dyn FnMut(Note),
) -> Result<Vec<Entry>, ArtifactError> {
    let source_dir = &options.source_dir;
    let skip = options
        .skip
        .as_ref()
        .map(|d| d.canonicalize().unwrap_or_else(|_| d.clone()))
        .and_then(|d| {
            // Compare in the walk's terms: the source directory as given, not canonical.
            let canonical_src = source_dir.canonicalize().ok()?;
            d.strip_prefix(&canonical_src)
                .ok()
                .map(|rel| source_dir.join(rel))
        });
    let patterns: Vec<&str> = set.files.iter().map(|f| f.value.as_str()).collect();
    let files = glob_set(&patterns)?;
    let excludes: Vec<&str> = set.exclude_paths.iter().map(|f| f.value.as_str()).collect();
    let excludes = glob_set(&excludes)?;

    let base_text = match &set.base_directory {
        Some(b) => b.value.clone(),
        None => ".".to_string(),
    };
    notes(Note::Info(format!(
        "Expanding base directory path: {base_text}"
    )));
    notes(Note::Info("Assembling file list".into()));
    notes(Note::Info(format!("Expanding {base_text}")));
    let bases = base_directories(source_dir, &base_text)?;
    if bases.is_empty() {
        notes(Note::Warning(format!(
            "Skipping invalid base directory path {base_text}"
        )));
    }

    // The roots a followed link must stay inside: the source tree and each base directory.
    let mut roots = Vec::new();
    for dir in std::iter::once(source_dir).chain(bases.iter()) {
        if let Ok(c) = dir.canonicalize() {
            roots.push(c);
        }
    }

    let mut matched = vec![false; patterns.len()];
    let mut hits = Vec::new();
    let mut by_name: BTreeMap<String, Entry> = BTreeMap::new();
    for base in &bases {
        notes(Note::Info(format!(
            "Expanding file paths for base directory {}",
            shown(source_dir, base)
        )));
        let walks = walk_roots(base, &patterns).into_iter().map(|root| {
            walkdir::WalkDir::new(root)
                .min_depth(1)
                .follow_links(false)
                .sort_by_file_name()
                .into_iter()
                .filter_entry(|e| skip.as_deref() != Some(e.path()))
        });
        for item in walks.flatten() {
            let item = item.map_err(|e| {
                let path = e.path().unwrap_or(base).to_path_buf();
                let source = e
                    .into_io_error()
                    .unwrap_or_else(|| std::io::Error::other("file system loop"));
                ArtifactError::io("cannot read", path, source)
            })?;
            let file_type = item.file_type();
            if file_type.is_dir() {
                continue;
            }
            let path = item.path();
            let Ok(relative) = path.strip_prefix(base) else {
                continue;
            };
            let Some(relative) = slash_path(relative) else {
                notes(Note::Warning(format!(
                    "Skipping {}: its name is not valid UTF-8",
                    path.display()
                )));
                continue;
            };
            files.matches_into(relative.as_str(), &mut hits);
            if hits.is_empty() {
                continue;
            }
            for &i in &hits {
                matched[i] = true;
            }
            if excludes.is_match(relative.as_str()) {
                continue;
            }
            let kind = if file_type.is_symlink() {
                match link_entry(path, &relative, set.enable_symlinks, &roots) {
                    Ok(kind) => kind,
                    Err(warning) => {
                        notes(Note::Warning(warning));
                        continue;
                    }
                }
            } else if file_type.is_file() {
                let meta = item
                    .metadata()
                    .map_err(|e| ArtifactError::io("cannot read", path, e.into()))?;
                EntryKind::File {
                    mode: meta.permissions().mode() & 0o7777,
                    size: meta.len(),
                }
            } else {
                notes(Note::Warning(format!(
                    "Skipping {relative}: not a regular file"
                )));
                continue;
            };
            let name = if set.discard_paths {
                relative.rsplit('/').next().unwrap_or(&relative).to_string()
            } else {
                relative.clone()
            };
            let mtime = if options.keep_mtime {
                // A followed link stores its target's time, a kept link its own.
                match &kind {
                    EntryKind::File { .. } => std::fs::metadata(path),
                    EntryKind::Symlink { .. } => std::fs::symlink_metadata(path),
                }
                .and_then(|m| m.modified())
                .ok()
            } else {
                None
            };
            let entry = Entry {
                name: name.clone(),
                path: path.to_path_buf(),
                kind,
                mtime,
            };
            if let Some(first) = by_name.get(&name) {
                return Err(ArtifactError::NameCollision {
                    name,
                    first: shown(source_dir, &first.path),
                    second: shown(source_dir, path),
                    hint: if set.discard_paths {
                        " (discard-paths: yes)"
                    } else {
                        ""
                    },
                });
            }
            by_name.insert(name, entry);
        }
    }
    notes(Note::Info("Assembling file list".into()));
    for (pattern, matched) in patterns.iter().zip(&matched) {
        notes(Note::Info(format!("Expanding {pattern}")));
        if !matched {
            notes(Note::Warning(format!(
                "Skipping invalid file path {pattern}"
            )));
        }
    }
    notes(Note::Info(format!("Found {} file(s)", by_name.len())));
    if by_name.is_empty() {
        return Err(ArtifactError::NoMatchingPaths);
    }
    Ok(by_name.into_values().collect())
}

/// The directories to walk under `base` for `patterns`: only the literal directory prefixes of
/// the patterns (`target/` for `target/*.jar`) when every pattern has one, so that naming one file
/// does not walk the whole tree; else `base` itself. A prefix that is not a real directory (missing,
/// or a link) is left out: a full walk would not find files under it either.
pub(crate) fn walk_roots(base: &Path, patterns: &[&str]) -> Vec<PathBuf> {
    let mut prefixes = Vec::new();
    for pattern in patterns {
        let pattern = normalize(pattern);
        let segments: Vec<&str> = pattern.split('/').collect();
        let literal: Vec<&str> = segments[..segments.len() - 1]
            .iter()
            .take_while(|s| !has_glob_chars(s) && !s.contains('\\') && !s.is_empty())
            .copied()
            .filter(|s| *s != ".")
            .collect();
        if literal.is_empty() || literal.contains(&"..") {
            return vec![base.to_path_buf()];
        }
        prefixes.push(literal.join("/"));
    }
    prefixes.sort();
    prefixes.dedup();
    // Drop prefixes inside another one (`a/b` when `a` is walked).
    let mut kept: Vec<String> = Vec::new();
    for p in prefixes {
        if !kept.iter().any(|k| p.starts_with(&format!("{k}/"))) {
            kept.push(p);
        }
    }
    kept.into_iter()
        .filter(|p| {
            let mut dir = base.to_path_buf();
            p.split('/').all(|segment| {
                dir.push(segment);
                dir.symlink_metadata().is_ok_and(|m| m.is_dir())
            })
        })
        .map(|p| base.join(p))
        .collect()
}

/// What to store for the link at `path`, or why it is skipped.
fn link_entry(
    path: &Path,
    relative: &str,
    keep_links: bool,
    roots: &[PathBuf],
) -> Result<EntryKind, String> {
    if keep_links {
        let target = std::fs::read_link(path)
            .map_err(|e| format!("Skipping symbolic link {relative}: {e}"))?;
        return Ok(EntryKind::Symlink { target });
    }
    let resolved = path
        .canonicalize()
        .map_err(|_| format!("Skipping symbolic link {relative}: its target does not exist"))?;
    if !roots.iter().any(|root| resolved.starts_with(root)) {
        return Err(format!(
            "Skipping symbolic link {relative}: it points outside the source tree (to {})",
            resolved.display()
        ));
    }
    let meta = std::fs::metadata(&resolved)
        .map_err(|e| format!("Skipping symbolic link {relative}: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "Skipping symbolic link {relative}: it points to a directory (enable-symlinks: yes stores it as a link)"
        ));
    }
    Ok(EntryKind::File {
        mode: meta.permissions().mode() & 0o7777,
        size: meta.len(),
    })
}

/// The base directories `text` names: one directory, or every directory a glob matches, sorted.
fn base_directories(source_dir: &Path, text: &str) -> Result<Vec<PathBuf>, ArtifactError> {
    let path = Path::new(normalize(text));
    let full = if text == "." || text.is_empty() {
        source_dir.to_path_buf()
    } else {
        source_dir.join(path)
    };
    if !has_glob_chars(text) {
        return Ok(if full.is_dir() {
            vec![full]
        } else {
            Vec::new()
        });
    }
    // Walk from the longest literal prefix, matching directories against the rest.
    let mut root = PathBuf::new();
    let mut rest = Vec::new();
    for component in full.components() {
        let part = component.as_os_str().to_string_lossy();
        if rest.is_empty() && !has_glob_chars(&part) {
            root.push(component);
        } else if !matches!(component, Component::CurDir) {
            rest.push(part.into_owned());
        }
    }
    let pattern = rest.join("/");
    let matcher = glob(&pattern)?.compile_matcher();
    let depth = if pattern.contains("**") {
        usize::MAX
    } else {
        rest.len()
    };
    let mut found = Vec::new();
    if !root.is_dir() {
        return Ok(found);
    }
    for item in walkdir::WalkDir::new(&root)
        .min_depth(1)
        .max_depth(depth)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_map(Result::ok)
    {
        if !item.file_type().is_dir() {
            continue;
        }
        let Ok(relative) = item.path().strip_prefix(&root) else {
            continue;
        };
        if let Some(relative) = slash_path(relative) {
            if matcher.is_match(relative.as_str()) {
                found.push(item.path().to_path_buf());
            }
        }
    }
    Ok(found)
}

/// `a/b/c` from a relative path, or `None` when a component is not UTF-8.
fn slash_path(path: &Path) -> Option<String> {
    let mut out = String::new();
    for component in path.components() {
        if !out.is_empty() {
            out.push('/');
        }
        out.push_str(component.as_os_str().to_str()?);
    }
    Some(out)
}

/// A path relative to the source directory when it is inside it, else the full path.
fn shown(source_dir: &Path, path: &Path) -> String {
    match path.strip_prefix(source_dir) {
        Ok(p) if p.as_os_str().is_empty() => ".".to_string(),
        Ok(p) => p.display().to_string(),
        Err(_) => path.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use buildagent_spec::Spanned;

    fn is_match(pattern: &str, path: &str) -> bool {
        glob(pattern).unwrap().compile_matcher().is_match(path)
    }

    #[test]
    fn star_stays_inside_one_segment() {
        assert!(is_match("*.txt", "a.txt"));
        assert!(!is_match("*.txt", "dir/a.txt"));
        assert!(is_match("*/my-file-3.txt", "my-subdirectory/my-file-3.txt"));
        assert!(!is_match("*/my-file-3.txt", "a/b/my-file-3.txt"));
        assert!(is_match("dist/*", "dist/app.js"));
        assert!(!is_match("dist/*", "dist/css/site.css"));
        assert!(!is_match("?/x", "a/b/x"));
    }

    #[test]
    fn double_star_spans_segments_including_none() {
        assert!(is_match("**/*", "README.md"));
        assert!(is_match("**/*", "a/b/c/d.txt"));
        assert!(is_match("dist/**/*", "dist/app.js"));
        assert!(is_match("dist/**/*", "dist/css/site.css"));
        assert!(!is_match("dist/**/*", "distx/app.js"));
        assert!(is_match("**/*.jar", "target/app-1.0.jar"));
        assert!(is_match("**/*.jar", "app.jar"));
    }

    #[test]
    fn dot_files_match_like_any_name() {
        assert!(is_match("**/*", ".env"));
        assert!(is_match("*", ".env"));
        assert!(is_match("**/.*", "a/.hidden"));
        assert!(is_match("**/.*/**/*", ".git/objects/ab"));
        assert!(!is_match("**/.*", "a/visible"));
    }

    #[test]
    fn a_leading_dot_slash_is_ignored() {
        assert!(is_match("./dist/*", "dist/app.js"));
        assert!(is_match("././README.md", "README.md"));
    }

    #[test]
    fn only_literal_prefixes_are_walked() {
        let src = tree();
        let base = src.path();
        assert_eq!(walk_roots(base, &["**/*"]), [base.to_path_buf()]);
        assert_eq!(
            walk_roots(base, &["target/app-1.0.jar", "dist/css/*.css", "dist/*"]),
            [base.join("dist"), base.join("target")]
        );
        assert_eq!(
            walk_roots(base, &["nothere/x", "dist/*"]),
            [base.join("dist")]
        );
        assert_eq!(walk_roots(base, &["README.md"]), [base.to_path_buf()]);
        assert_eq!(walk_roots(base, &["../x/y"]), [base.to_path_buf()]);
    }

    #[test]
    fn variables_expand_in_both_forms() {
        let lookup = |name: &str| (name == "SRC").then(|| "/src".to_string());
        assert_eq!(expand_vars("$SRC/out", &lookup), "/src/out");
        assert_eq!(expand_vars("${SRC}x", &lookup), "/srcx");
        assert_eq!(expand_vars("$NOPE/a", &lookup), "/a");
        assert_eq!(expand_vars("cost$ 5 ${", &lookup), "cost$ 5 ${");
    }

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "README.md",
            ".env",
            "dist/app.js",
            "dist/css/site.css",
            "my-build-1/my-file-1.txt",
            "my-build-2/my-file-2.txt",
            "my-build-2/my-subdirectory/my-file-3.txt",
            "target/app-1.0.jar",
        ] {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, f).unwrap();
        }
        dir
    }

    fn set(files: &[&str]) -> ArtifactSet {
        ArtifactSet {
            files: files
                .iter()
                .map(|f| Spanned::synthetic(f.to_string()))
                .collect(),
            ..ArtifactSet::default()
        }
    }

    fn names(set: &ArtifactSet, src: &Path) -> Result<Vec<String>, ArtifactError> {
        let entries = collect(set, &CollectOptions::new(src), &mut |_| {})?;
        Ok(entries.into_iter().map(|e| e.name).collect())
    }

    #[test]
    fn base_directory_globs_merge_their_contents() {
        let src = tree();
        let mut s = set(&["**/*"]);
        s.base_directory = Some(Spanned::synthetic("my-build*".into()));
        assert_eq!(
            names(&s, src.path()).unwrap(),
            [
                "my-file-1.txt",
                "my-file-2.txt",
                "my-subdirectory/my-file-3.txt"
            ]
        );
    }

    #[test]
    fn the_skipped_directory_is_not_collected() {
        let src = tree();
        std::fs::create_dir_all(src.path().join("out")).unwrap();
        std::fs::write(src.path().join("out/artifacts.zip"), "old").unwrap();
        let mut options = CollectOptions::new(src.path());
        options.skip(src.path().join("out"));
        let entries = collect(&set(&["**/*"]), &options, &mut |_| {}).unwrap();
        assert_eq!(entries.len(), 8);
        assert!(entries.iter().all(|e| !e.name.starts_with("out/")));
    }

    #[test]
    fn collisions_name_both_files() {
        let src = tree();
        std::fs::create_dir_all(src.path().join("b")).unwrap();
        std::fs::write(src.path().join("b/app.js"), "x").unwrap();
        let mut s = set(&["dist/*", "b/*"]);
        s.discard_paths = true;
        let err = names(&s, src.path()).unwrap_err().to_string();
        assert_eq!(
            err,
            "`b/app.js` and `dist/app.js` would both be stored as `app.js` in the artifact (discard-paths: yes)"
        );
    }

    #[test]
    fn misses_warn_and_nothing_at_all_fails() {
        let src = tree();
        let mut notes = Vec::new();
        let entries = collect(
            &set(&["target/app-1.0.jar", "nothere.txt"]),
            &CollectOptions::new(src.path()),
            &mut |n| notes.push(n),
        )
        .unwrap();
        assert_eq!(entries.len(), 1);
        assert!(notes.contains(&Note::Warning(
            "Skipping invalid file path nothere.txt".into()
        )));
        assert!(notes.contains(&Note::Info("Found 1 file(s)".into())));
        assert!(matches!(
            names(&set(&["nothere.txt"]), src.path()),
            Err(ArtifactError::NoMatchingPaths)
        ));
    }

    #[test]
    fn bad_patterns_are_errors() {
        let src = tree();
        let err = names(&set(&["a[b"]), src.path()).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("invalid artifact path pattern `a[b`"));
    }
}
