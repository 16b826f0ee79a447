//! A build image's runtime catalogue, `/codebuild/image/config/runtimes.yml`, and how a buildspec's
//! `runtime-versions` entry picks one of its versions.
//!
//! CodeBuild's standard images ship the file (aws-codebuild-docker-images, e.g.
//! `ubuntu/standard/7.0/runtimes.yml`):
//!
//! ```yaml
//! version: 0.1
//! runtimes:
//!   java:
//!     versions:
//!       corretto17:
//!         commands:
//!           - export JAVA_HOME="$JAVA_17_HOME"
//!       default:                      # any other version, as $VERSION
//!         commands:
//!           - echo "Installing custom Corretto version $VERSION ..."
//!   android:
//!     versions:
//!       29:
//!         requires:
//!           java: ["corretto8"]
//!         commands: [...]
//! ```
//!
//! [`RuntimeCatalog::select`] applies CodeBuild's documented rules for the version a buildspec
//! names: the exact name; `latest`; a major version alone or `<major>.x` (the highest version of
//! that major, `17` also finding `corretto17`); else the runtime's `default` entry with the version
//! as `$VERSION`; else an error that lists what the image offers. Version names keep their source
//! text (`3.10` is not `3.1`).
//!
//! ```
//! use buildagent_spec::runtimes::RuntimeCatalog;
//!
//! let catalog = RuntimeCatalog::parse(
//!     "runtimes:\n  python:\n    versions:\n      3.11:\n        commands: [pyenv global 3.11]\n      3.12:\n        commands: [pyenv global 3.12]\n",
//! ).unwrap();
//! let picked = catalog.select("python", "3").unwrap();
//! assert_eq!(picked.version, "3.12");
//! assert_eq!(picked.commands, ["pyenv global 3.12"]);
//! assert!(catalog.select("nodejs", "20").unwrap_err().to_string().contains("python"));
//! ```

use std::cmp::Ordering;

use crate::span::LineIndex;
use crate::yaml::{self, Node, NodeKind};

/// Where CodeBuild's images keep the catalogue.
pub const RUNTIMES_FILE: &str = "/codebuild/image/config/runtimes.yml";

/// The runtimes an image offers, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeCatalog {
    runtimes: Vec<Runtime>,
}

/// One runtime (`java`) and its versions, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Runtime {
    name: String,
    versions: Vec<Version>,
}

/// One version entry (`corretto17`, or `default`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Version {
    name: String,
    commands: Vec<String>,
    requires: Vec<(String, Vec<String>)>,
}

/// The version a `runtime-versions` entry selected, and what installing it takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// The runtime.
    pub runtime: String,
    /// The version's name in the catalogue (`corretto17`), or the requested version when the
    /// runtime's `default` entry installs it.
    pub version: String,
    /// The commands to run, in order.
    pub commands: Vec<String>,
    /// For a `default` entry: the value its commands find in `$VERSION`.
    pub custom_version: Option<String>,
    /// Runtimes this version needs, each with the versions that satisfy it (the first is the
    /// one to install when the buildspec does not select that runtime itself).
    pub requires: Vec<(String, Vec<String>)>,
}

/// Why `runtimes.yml` could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct CatalogError {
    /// The 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Why a `runtime-versions` entry cannot be satisfied. The messages are CodeBuild's, with the
/// list of versions added to the second.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectError {
    /// The image has no such runtime.
    #[error("Unknown runtime named '{runtime}'. This build image has the following runtimes: {}", .available.join(", "))]
    UnknownRuntime {
        /// The runtime asked for.
        runtime: String,
        /// The image's runtimes, sorted.
        available: Vec<String>,
    },
    /// The runtime has no such version (and no `default` entry).
    #[error("Unknown runtime version named '{version}' of {runtime}. This build image has the following versions of {runtime}: {}", .available.join(", "))]
    UnknownVersion {
        /// The runtime.
        runtime: String,
        /// The version asked for.
        version: String,
        /// The runtime's versions, in file order.
        available: Vec<String>,
    },
}

impl RuntimeCatalog {
    /// Reads the text of a `runtimes.yml`. Never panics, whatever the input.
    pub fn parse(source: &str) -> Result<RuntimeCatalog, CatalogError> {
        let index = LineIndex::new(source);
        let error = |node: &Node, message: String| CatalogError {
            line: node.span.line_number(),
            message,
        };
        let root = match yaml::parse(source, &index) {
            Ok(Some(root)) => root,
            Ok(None) => return Ok(RuntimeCatalog::default()),
            Err(e) => {
                return Err(CatalogError {
                    line: e.span.line_number(),
                    message: e.message,
                })
            }
        };
        let Some(runtimes) = entry(&root, "runtimes") else {
            return Err(error(&root, "no `runtimes` mapping".into()));
        };
        let mut catalog = RuntimeCatalog::default();
        for (name, body) in mapping(runtimes, "runtimes").map_err(|m| error(runtimes, m))? {
            let Some(versions) = entry(body, "versions") else {
                return Err(error(body, format!("runtime `{name}` has no `versions`")));
            };
            let mut runtime = Runtime {
                name: name.to_string(),
                versions: Vec::new(),
            };
            let what = format!("runtimes.{name}.versions");
            for (version, body) in mapping(versions, &what).map_err(|m| error(versions, m))? {
                let at = format!("runtimes.{name}.versions.{version}");
                let commands = match entry(body, "commands") {
                    None => Vec::new(),
                    Some(list) => {
                        strings(list, &format!("{at}.commands")).map_err(|m| error(list, m))?
                    }
                };
                let mut requires = Vec::new();
                if let Some(node) = entry(body, "requires") {
                    for (needed, versions) in
                        mapping(node, &format!("{at}.requires")).map_err(|m| error(node, m))?
                    {
                        let list = strings(versions, &format!("{at}.requires.{needed}"))
                            .map_err(|m| error(versions, m))?;
                        requires.push((needed.to_string(), list));
                    }
                }
                runtime.versions.push(Version {
                    name: version.to_string(),
                    commands,
                    requires,
                });
            }
            catalog.runtimes.push(runtime);
        }
        Ok(catalog)
    }

    /// The runtimes' names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.runtimes.iter().map(|r| r.name.clone()).collect();
        names.sort();
        names
    }

    /// Picks the version of `runtime` that `requested` names (see the module docs for the rules).
    pub fn select(&self, runtime: &str, requested: &str) -> Result<Selection, SelectError> {
        let Some(entry) = self.runtimes.iter().find(|r| r.name == runtime) else {
            return Err(SelectError::UnknownRuntime {
                runtime: runtime.to_string(),
                available: self.names(),
            });
        };
        let named = || entry.versions.iter().filter(|v| v.name != "default");
        let chosen = named().find(|v| v.name == requested).or_else(|| {
            if requested == "latest" {
                return named().max_by(|a, b| compare(&a.name, &b.name));
            }
            let wanted = major_prefix(requested)?;
            named()
                .filter(|v| {
                    let (_, numbers) = split_version(&v.name);
                    numbers.len() >= wanted.len() && numbers[..wanted.len()] == wanted[..]
                })
                .max_by(|a, b| compare(&a.name, &b.name))
        });
        let selection = |v: &Version, custom: Option<String>| Selection {
            runtime: runtime.to_string(),
            version: custom.clone().unwrap_or_else(|| v.name.clone()),
            commands: v.commands.clone(),
            custom_version: custom,
            requires: v.requires.clone(),
        };
        if let Some(v) = chosen {
            return Ok(selection(v, None));
        }
        match entry.versions.iter().find(|v| v.name == "default") {
            Some(default) => Ok(selection(default, Some(requested.to_string()))),
            None => Err(SelectError::UnknownVersion {
                runtime: runtime.to_string(),
                version: requested.to_string(),
                available: named().map(|v| v.name.clone()).collect(),
            }),
        }
    }
}

/// The value of `key` in a mapping node.
fn entry<'n>(node: &'n Node, key: &str) -> Option<&'n Node> {
    match &node.kind {
        NodeKind::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v),
        _ => None,
    }
}

/// The entries of a mapping whose keys are scalars, in file order.
fn mapping<'n>(node: &'n Node, what: &str) -> Result<Vec<(&'n str, &'n Node)>, String> {
    match &node.kind {
        NodeKind::Map(pairs) => pairs
            .iter()
            .map(|(k, v)| {
                k.as_str()
                    .map(|k| (k, v))
                    .ok_or_else(|| format!("`{what}` has a key that is not a name"))
            })
            .collect(),
        _ => Err(format!(
            "`{what}` must be a mapping, not {}",
            node.describe()
        )),
    }
}

/// A list of strings (a single string is a one-item list, as in buildspecs).
fn strings(node: &Node, what: &str) -> Result<Vec<String>, String> {
    match &node.kind {
        NodeKind::Seq(items) => items
            .iter()
            .filter(|i| !i.is_null())
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("`{what}` must hold strings, not {}", i.describe()))
            })
            .collect(),
        NodeKind::Scalar { .. } if node.is_null() => Ok(Vec::new()),
        NodeKind::Scalar { .. } => Ok(node.as_str().map(str::to_string).into_iter().collect()),
        NodeKind::Map(_) => Err(format!("`{what}` must be a list, not a mapping")),
    }
}

/// `17`, `3.x`, `3.X` or `3.1`: the numbers a version must start with to match; `None` for
/// anything else (`corretto17`, `lts`).
fn major_prefix(requested: &str) -> Option<Vec<u64>> {
    let text = requested
        .strip_suffix(".x")
        .or_else(|| requested.strip_suffix(".X"))
        .unwrap_or(requested);
    text.split('.').map(|p| p.parse().ok()).collect()
}

/// A version name as its leading letters and its dot-separated numbers (`corretto17` is
/// `("corretto", [17])`, `1.20` is `("", [1, 20])`); a part that is not a number ends the list.
fn split_version(name: &str) -> (&str, Vec<u64>) {
    let digits = name
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or(name.len());
    let (letters, rest) = name.split_at(digits);
    let numbers = rest.split('.').map_while(|p| p.parse().ok()).collect();
    (letters, numbers)
}

/// Orders versions by their numbers (`1.9` < `1.20`, `corretto8` < `corretto17`), then by name.
fn compare(a: &str, b: &str) -> Ordering {
    let (la, na) = split_version(a);
    let (lb, nb) = split_version(b);
    na.cmp(&nb).then_with(|| la.cmp(lb)).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMAGE: &str = "version: 0.1\n\
runtimes:\n\
\x20 java:\n\
\x20   versions:\n\
\x20     corretto8:\n\
\x20       commands: [echo 8]\n\
\x20     corretto17:\n\
\x20       commands:\n\
\x20         - echo 17\n\
\x20         - export JAVA_HOME=/jdk17\n\
\x20     corretto21:\n\
\x20       commands: echo 21\n\
\x20 golang:\n\
\x20   versions:\n\
\x20     1.9:\n\
\x20       commands: [echo 1.9]\n\
\x20     1.20:\n\
\x20       commands: [echo 1.20]\n\
\x20     default:\n\
\x20       commands: [goenv install $VERSION]\n\
\x20 android:\n\
\x20   versions:\n\
\x20     29:\n\
\x20       requires:\n\
\x20         java: [\"corretto8\"]\n\
\x20       commands: [echo android]\n";

    fn catalog() -> RuntimeCatalog {
        RuntimeCatalog::parse(IMAGE).unwrap()
    }

    #[test]
    fn exact_names_keep_their_source_text() {
        let c = catalog();
        let s = c.select("golang", "1.20").unwrap();
        assert_eq!(s.version, "1.20");
        assert_eq!(s.commands, ["echo 1.20"]);
        assert_eq!(
            c.select("java", "corretto21").unwrap().commands,
            ["echo 21"]
        );
    }

    #[test]
    fn latest_is_the_highest_number() {
        let c = catalog();
        assert_eq!(c.select("golang", "latest").unwrap().version, "1.20");
        assert_eq!(c.select("java", "latest").unwrap().version, "corretto21");
    }

    #[test]
    fn a_major_version_finds_the_highest_of_that_major() {
        let c = catalog();
        assert_eq!(c.select("java", "17").unwrap().version, "corretto17");
        assert_eq!(c.select("java", "8").unwrap().version, "corretto8");
        assert_eq!(c.select("golang", "1").unwrap().version, "1.20");
        assert_eq!(c.select("golang", "1.x").unwrap().version, "1.20");
        assert_eq!(c.select("android", "29").unwrap().version, "29");
    }

    #[test]
    fn other_versions_go_to_the_default_entry_with_version_set() {
        let s = catalog().select("golang", "1.22.3").unwrap();
        assert_eq!(s.version, "1.22.3");
        assert_eq!(s.custom_version.as_deref(), Some("1.22.3"));
        assert_eq!(s.commands, ["goenv install $VERSION"]);
    }

    #[test]
    fn unknown_runtimes_and_versions_list_what_the_image_has() {
        let c = catalog();
        assert_eq!(
            c.select("nodejs", "20").unwrap_err().to_string(),
            "Unknown runtime named 'nodejs'. This build image has the following runtimes: android, golang, java"
        );
        assert_eq!(
            c.select("java", "11").unwrap_err().to_string(),
            "Unknown runtime version named '11' of java. This build image has the following versions of java: corretto8, corretto17, corretto21"
        );
    }

    #[test]
    fn requires_are_kept() {
        let s = catalog().select("android", "29").unwrap();
        assert_eq!(
            s.requires,
            [("java".to_string(), vec!["corretto8".to_string()])]
        );
    }

    #[test]
    fn broken_files_name_the_line() {
        let e = RuntimeCatalog::parse("runtimes:\n  java:\n    versions: [a]\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("runtimes.java.versions"), "{e}");
        let e = RuntimeCatalog::parse("runtimes:\n  java: {}\n").unwrap_err();
        assert!(e.message.contains("no `versions`"), "{e}");
        assert!(RuntimeCatalog::parse("runtimes: [\n").is_err());
        assert_eq!(
            RuntimeCatalog::parse("").unwrap(),
            RuntimeCatalog::default()
        );
    }
}
