//! Sources that are not local directories: Git repositories and S3 objects, fetched at the start
//! of DOWNLOAD_SOURCE, as CodeBuild fetches a project's source itself.
//!
//! - [`SourceLocation::parse`] reads what `-s` was given: a directory, a Git URL (`https://`,
//!   `http://`, `ssh://`, `git://`, `file://`, scp-like `user@host:path`, anything ending in
//!   `.git`), `s3://bucket/key.zip` or `s3://bucket/prefix/`.
//! - [`git`] runs the `git` command line (so the user's credential helpers, `~/.git-credentials`
//!   and SSH agent and keys work as with git itself), never prompting, each git process in its
//!   own process group, killed when the build is stopped. Clones go through a bare mirror per
//!   URL under the cache directory, updated with `git fetch` under a lock, so a second build of
//!   the same repository fetches only what is new.
//! - [`s3`] downloads a zip (at an object version) and extracts it with [`zip`], which refuses
//!   entries that would land outside the target, or a folder of objects.
//!
//! [`FetchPlan::run`] is what the engine calls: it fetches every source, reads the buildspec from
//! the primary source when it was not given, and sets the source variables
//! ([`crate::plan::SourceInfo`]). A failure is a [`PhaseContext`] that names the source (its
//! credentials as `***`) and the cause.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use buildagent_spec::{Buildspec, ParseOptions};

use crate::engine::BuildOptions;
use crate::events::{EventKind, PhaseContext};
use crate::executor::StopRequest;
use crate::plan::SourceInfo;
use crate::s3::S3Url;

pub mod git;
pub mod s3;
pub mod zip;

/// Where a source comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum SourceLocation {
    /// A directory on this machine (staged as before: see [`crate::source`]).
    Dir(PathBuf),
    /// A Git repository.
    Git(GitUrl),
    /// A zip file in S3 (`s3://bucket/key.zip`), extracted into the source directory.
    S3Zip {
        /// The bucket.
        bucket: String,
        /// The zip's key.
        key: String,
    },
    /// Every object under a prefix (`s3://bucket/prefix/`), downloaded as a folder.
    S3Folder(S3Url),
}

impl fmt::Debug for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the credentials of a URL, even in a debug dump.
        write!(f, "SourceLocation({self})")
    }
}

impl fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceLocation::Dir(dir) => write!(f, "{}", dir.display()),
            SourceLocation::Git(url) => write!(f, "{url}"),
            SourceLocation::S3Zip { bucket, key } => write!(f, "s3://{bucket}/{key}"),
            SourceLocation::S3Folder(url) => write!(f, "{url}/"),
        }
    }
}

impl SourceLocation {
    /// Reads a source: `s3://` locations, Git URLs, else a directory.
    pub fn parse(text: &str) -> Result<SourceLocation, String> {
        if let Some(rest) = text.strip_prefix("s3://") {
            let url: S3Url = text.parse()?;
            if rest.ends_with('/') {
                return Ok(SourceLocation::S3Folder(url));
            }
            if url.prefix.ends_with(".zip") {
                return Ok(SourceLocation::S3Zip {
                    bucket: url.bucket,
                    key: url.prefix,
                });
            }
            return Err(format!(
                "`{text}`: an S3 source is a zip (s3://bucket/key.zip) or a folder \
                 (s3://bucket/prefix/, with the trailing `/`)"
            ));
        }
        if GitUrl::looks_like(text) {
            return Ok(SourceLocation::Git(GitUrl::new(text)));
        }
        if let Some((scheme, _)) = text.split_once("://") {
            return Err(format!(
                "`{text}`: `{scheme}://` sources are not supported (directories, Git URLs, \
                 s3://bucket/key.zip and s3://bucket/prefix/ are)"
            ));
        }
        Ok(SourceLocation::Dir(PathBuf::from(text)))
    }

    /// True for a directory on this machine.
    pub fn is_dir(&self) -> bool {
        matches!(self, SourceLocation::Dir(_))
    }

    /// A name for the project when this is the primary source: the repository's, the zip's or
    /// the folder's last path segment (`app` for `https://host/org/app.git`).
    pub fn project_name(&self) -> Option<String> {
        let path = match self {
            SourceLocation::Dir(dir) => return dir.file_name().map(|n| n.to_string_lossy().into()),
            SourceLocation::Git(url) => url.clean(),
            SourceLocation::S3Zip { key, .. } => key.clone(),
            SourceLocation::S3Folder(url) => url.prefix.clone(),
        };
        let last = path.trim_end_matches('/').rsplit(['/', ':']).next()?;
        let name = last
            .strip_suffix(".git")
            .or_else(|| last.strip_suffix(".zip"))
            .unwrap_or(last);
        (!name.is_empty()).then(|| name.to_string())
    }
}

/// A Git URL as given, which may hold credentials (`https://user:token@host/repo.git`). Shown
/// (Display, Debug, logs, errors, `CODEBUILD_SOURCE_REPO_URL`) with the secret part as `***`;
/// git itself is given the URL without them and the credentials through its environment.
#[derive(Clone, PartialEq, Eq)]
pub struct GitUrl {
    raw: String,
}

impl GitUrl {
    /// A URL or path as given to git.
    pub fn new(raw: &str) -> GitUrl {
        GitUrl {
            raw: raw.to_string(),
        }
    }

    /// True for what `-s` reads as a Git URL.
    pub fn looks_like(text: &str) -> bool {
        let schemes = [
            "https://",
            "http://",
            "ssh://",
            "git://",
            "file://",
            "git+ssh://",
        ];
        if schemes.iter().any(|s| text.starts_with(s)) {
            return true;
        }
        let trimmed = text.trim_end_matches('/');
        if trimmed.ends_with(".git") {
            return true;
        }
        // scp-like `user@host:path`: an `@` before the first `:`, and no `/` before it.
        match text.split_once(':') {
            Some((head, _)) => head.contains('@') && !head.contains('/'),
            None => false,
        }
    }

    /// The user name and password (or token) of an `scheme://user:password@host/...` URL.
    pub fn credentials(&self) -> Option<(String, String)> {
        let (_, userinfo, _) = self.split_userinfo()?;
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        Some((percent_decode(user), percent_decode(password)))
    }

    /// The URL without credentials: what git is given and what the checkout's `origin` is.
    pub fn clean(&self) -> String {
        match self.split_userinfo() {
            Some((before, _, after)) => format!("{before}{after}"),
            None => self.raw.clone(),
        }
    }

    /// The URL with the password or token as `***` (the user name is kept); a user name alone
    /// (`https://token@host`, as some services take tokens) is shown as `***` too.
    pub fn redacted(&self) -> String {
        match self.split_userinfo() {
            Some((before, userinfo, after)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{before}{user}:***@{after}"),
                None => format!("{before}***@{after}"),
            },
            None => self.raw.clone(),
        }
    }

    /// `scheme://` + host part after `@` of an URL with userinfo: (`scheme://`, `userinfo`,
    /// `host/path`). Only for URLs with a scheme: in scp-like `git@host:path` the user is no secret.
    fn split_userinfo(&self) -> Option<(&str, &str, &str)> {
        let scheme_end = self.raw.find("://")? + 3;
        let rest = &self.raw[scheme_end..];
        let authority_end = rest.find('/').unwrap_or(rest.len());
        let at = rest[..authority_end].rfind('@')?;
        Some((&self.raw[..scheme_end], &rest[..at], &rest[at + 1..]))
    }

    /// `scheme://host[:port]` of the clean URL, for scoping the credentials given to git.
    fn origin(&self) -> Option<String> {
        let clean = self.clean();
        let scheme_end = clean.find("://")? + 3;
        let rest = &clean[scheme_end..];
        let end = rest.find('/').unwrap_or(rest.len());
        Some(format!("{}{}", &clean[..scheme_end], &rest[..end]))
    }
}

impl fmt::Display for GitUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for GitUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GitUrl({})", self.redacted())
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(b) = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One source to fetch.
#[derive(Clone, Debug)]
pub struct RemoteSource {
    /// The secondary source's identifier; `None` for the primary source.
    pub id: Option<String>,
    /// Where it comes from (not [`SourceLocation::Dir`]).
    pub location: SourceLocation,
    /// `--source-version`: a branch, tag, commit, `pr/N` or ref for Git, an object version id
    /// for an S3 zip; `None`: the default branch, the latest object.
    pub version: Option<String>,
    /// The new directory it is fetched into.
    pub dest: PathBuf,
}

/// What DOWNLOAD_SOURCE fetches before anything else, and how.
#[derive(Clone, Debug, Default)]
pub struct FetchPlan {
    /// The sources, primary first when it is remote.
    pub sources: Vec<RemoteSource>,
    /// `--git-clone-depth`: how many commits of history (default 1, CodeBuild's; 0 is the whole
    /// history).
    pub git_depth: u32,
    /// `--git-submodules`: also fetch the submodules, recursively, with the same depth.
    pub git_submodules: bool,
    /// Where the bare mirrors of Git repositories are kept (`<dir>/<hash>.git`); `None`: no
    /// clone cache (`--no-source-cache`), each build clones afresh.
    pub git_cache: Option<PathBuf>,
    /// When the primary source is remote and no buildspec was given: read the buildspec from
    /// the fetched primary source (`buildspec.yml`, else `buildspec.yaml`), with `strict`
    /// parsing when the flag says so.
    pub load_buildspec: Option<ParseOptions>,
    /// With [`FetchPlan::load_buildspec`]: the buildspec's path in the primary source (a fleet
    /// job's `buildspecOverride`); `None`: `buildspec.yml`, else `buildspec.yaml`.
    pub buildspec_name: Option<PathBuf>,
}

/// What a fetch found out about its source.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fetched {
    /// The version asked, else the default branch's name (Git).
    pub version: Option<String>,
    /// The commit checked out (Git), or the zip's object version (S3).
    pub resolved: Option<String>,
}

/// Why a source could not be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// git failed.
    #[error(transparent)]
    Git(#[from] git::GitError),
    /// S3 or the zip failed.
    #[error(transparent)]
    S3(#[from] s3::S3SourceError),
    /// The build was stopped while fetching.
    #[error("stopped while fetching")]
    Stopped,
}

impl FetchPlan {
    /// True when there is nothing to fetch.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Fetches every source in turn, reporting what it does through `emit`; then reads the
    /// buildspec from the primary source when asked ([`FetchPlan::load_buildspec`]) and records
    /// the source variables in `options.source_info`. The first failure ends it.
    pub async fn run(
        &self,
        spec: &mut Buildspec,
        options: &mut BuildOptions,
        stop: &StopRequest,
        emit: &mut (dyn FnMut(EventKind) + Send),
    ) -> Result<(), PhaseContext> {
        let mut info = |message: String| emit(EventKind::Info { message });
        for source in &self.sources {
            let what = match &source.id {
                None => format!("source {}", source.location),
                Some(id) => format!("secondary source {id} ({})", source.location),
            };
            let asked = source.version.as_deref().unwrap_or("the default version");
            info(format!("Fetching {what} at {asked}"));
            let started = Instant::now();
            let fetched = match &source.location {
                SourceLocation::Git(url) => git::fetch(
                    url,
                    source.version.as_deref(),
                    &git::Settings {
                        depth: self.git_depth,
                        submodules: self.git_submodules,
                        cache: self.git_cache.clone(),
                    },
                    &source.dest,
                    stop,
                    &mut info,
                )
                .await
                .map_err(FetchError::from),
                SourceLocation::S3Zip { .. } | SourceLocation::S3Folder(_) => s3::fetch(
                    &source.location,
                    source.version.as_deref(),
                    &options.identity.region,
                    &source.dest,
                    stop,
                    &mut info,
                )
                .await
                .map_err(FetchError::from),
                SourceLocation::Dir(_) => Ok(Fetched::default()),
            };
            let fetched = match fetched {
                Ok(fetched) => fetched,
                Err(e) => {
                    return Err(PhaseContext {
                        code: "CLIENT_ERROR".into(),
                        message: format!("cannot fetch {what}: {e}"),
                    })
                }
            };
            if let Some(resolved) = &fetched.resolved {
                info(format!("Resolved {what} version to {resolved}"));
            }
            info(format!(
                "Fetched {what} in {:.2} seconds",
                started.elapsed().as_secs_f64()
            ));
            let record = SourceInfo {
                version: fetched.version,
                resolved_version: fetched.resolved,
                repo_url: Some(match &source.location {
                    SourceLocation::Git(url) => url.redacted(),
                    other => other.to_string(),
                }),
                secondary: Vec::new(),
            };
            match &source.id {
                None => {
                    let secondary = std::mem::take(&mut options.source_info.secondary);
                    options.source_info = SourceInfo {
                        secondary,
                        ..record
                    };
                }
                Some(id) => options.source_info.secondary.push((id.clone(), record)),
            }
        }
        if let Some(parse_options) = &self.load_buildspec {
            let dir = options.source_dir.clone();
            let name = self.buildspec_name.as_deref();
            *spec = load_buildspec(&dir, name, parse_options, options, emit)?;
        }
        Ok(())
    }
}

/// Reads `name` (default `buildspec.yml`, else `buildspec.yaml`) of the fetched primary source;
/// its warnings become warning events, its errors the phase's failure (YAML_FILE_ERROR, as
/// CodeBuild).
fn load_buildspec(
    dir: &Path,
    name: Option<&Path>,
    parse_options: &ParseOptions,
    options: &mut BuildOptions,
    emit: &mut (dyn FnMut(EventKind) + Send),
) -> Result<Buildspec, PhaseContext> {
    let yaml_error = |message: String| PhaseContext {
        code: "YAML_FILE_ERROR".into(),
        message,
    };
    if let Some(name) = name {
        // A path that climbs out of the source is refused: it would read the worker's files.
        if name.is_absolute()
            || name
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(yaml_error(format!(
                "buildspec `{}`: the path must stay inside the source",
                name.display()
            )));
        }
    }
    let candidates: Vec<PathBuf> = match name {
        Some(name) => vec![dir.join(name)],
        None => vec![dir.join("buildspec.yml"), dir.join("buildspec.yaml")],
    };
    let path = candidates
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| match name {
            Some(name) => yaml_error(format!(
                "YAML file does not exist: {} in the source",
                name.display()
            )),
            None => yaml_error(
                "YAML file does not exist: no buildspec.yml or buildspec.yaml in the source \
                 (name one with -b FILE)"
                    .to_string(),
            ),
        })?;
    options.buildspec_path = path.clone();
    let (text, parsed) = buildagent_spec::parse_file(&path, parse_options)
        .map_err(|e| yaml_error(format!("{}: {e}", path.display())))?;
    let shown = path.display().to_string();
    let mut errors = Vec::new();
    for d in &parsed.diagnostics {
        let rendered = d.render(&text, &shown, false);
        if parsed.buildspec.is_some() {
            emit(EventKind::Warning { message: rendered });
        } else {
            errors.push(rendered);
        }
    }
    parsed.buildspec.ok_or_else(|| {
        yaml_error(format!(
            "{shown} is not a valid buildspec:\n{}",
            errors.join("\n")
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_told_apart() {
        let git = |t: &str| matches!(SourceLocation::parse(t), Ok(SourceLocation::Git(_)));
        for t in [
            "https://github.com/org/app.git",
            "http://127.0.0.1:8080/app",
            "ssh://git@host/org/app",
            "git://host/app",
            "file:///srv/app",
            "git@github.com:org/app.git",
            "/srv/repos/app.git",
            "../app.git/",
        ] {
            assert!(git(t), "{t}");
        }
        assert!(matches!(
            SourceLocation::parse("src/app"),
            Ok(SourceLocation::Dir(_))
        ));
        assert!(matches!(
            SourceLocation::parse("s3://bucket/a/app.zip"),
            Ok(SourceLocation::S3Zip { bucket, key }) if bucket == "bucket" && key == "a/app.zip"
        ));
        assert!(matches!(
            SourceLocation::parse("s3://bucket/a/"),
            Ok(SourceLocation::S3Folder(url)) if url.prefix == "a"
        ));
        assert!(SourceLocation::parse("s3://bucket/a/app.tar").is_err());
        assert!(SourceLocation::parse("gs://bucket/a.zip").is_err());
    }

    #[test]
    fn credentials_are_never_shown() {
        let url = GitUrl::new("https://me:s%40cret@host:8443/org/app.git");
        assert_eq!(url.redacted(), "https://me:***@host:8443/org/app.git");
        assert_eq!(url.clean(), "https://host:8443/org/app.git");
        assert_eq!(
            url.credentials(),
            Some(("me".to_string(), "s@cret".to_string()))
        );
        assert_eq!(url.origin().unwrap(), "https://host:8443");
        assert!(!format!("{url} {url:?}").contains("cret"));
        let token = GitUrl::new("https://ghp_token@host/app");
        assert_eq!(token.redacted(), "https://***@host/app");
        let scp = GitUrl::new("git@host:org/app.git");
        assert_eq!(scp.redacted(), "git@host:org/app.git");
        assert_eq!(scp.credentials(), None);
    }

    #[test]
    fn project_names() {
        let name = |t: &str| SourceLocation::parse(t).unwrap().project_name();
        assert_eq!(name("https://h/org/app.git").as_deref(), Some("app"));
        assert_eq!(name("git@h:org/app.git").as_deref(), Some("app"));
        assert_eq!(name("s3://bucket/x/app.zip").as_deref(), Some("app"));
        assert_eq!(name("s3://bucket/x/site/").as_deref(), Some("site"));
    }
}
