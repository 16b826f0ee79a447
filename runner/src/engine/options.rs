//! [`BuildOptions::new`] and its setters: what an embedder fills in, with every default stated.

use std::path::PathBuf;
use std::time::Duration;

use super::BuildOptions;
use crate::artifacts::s3::Namespace;
use crate::artifacts::Packaging;
use crate::location::Location;
use crate::plan::{BuildIdentity, SourceInfo};
use crate::secrets::OfflineValues;

impl BuildOptions {
    /// The default build timeout: 60 minutes, CodeBuild's default.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60 * 60);
    /// The default time between SIGTERM and SIGKILL when a command is stopped: 10 seconds.
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

    /// Options for a build that runs in `source_dir` as it is, with these defaults:
    ///
    /// - no staging copy (`stage_from` `None`: the build runs in `source_dir`, as `-m` does) and
    ///   no secondary sources;
    /// - `buildspec_path` `buildspec.yml` (only shown in the log);
    /// - `base_env`: this process's environment (variables whose name or value is not UTF-8 are
    ///   left out), as [`std::process::Command`] passes it on;
    /// - no `codebuild-hash-files` helper, no environment file, overrides, secrets or offline
    ///   values;
    /// - `identity`: [`BuildIdentity::new`] with the project named after `source_dir`'s last
    ///   component (`local` when it has none);
    /// - no source versions ([`SourceInfo::default`]);
    /// - timeout [`BuildOptions::DEFAULT_TIMEOUT`], grace [`BuildOptions::DEFAULT_GRACE`];
    /// - artifacts collected and counted but not written (`artifacts` `None`), namespace
    ///   [`Namespace::None`], packaging [`Packaging::Zip`], fixed modification times;
    /// - reports parsed and summarised but not copied (`reports_dir` `None`);
    /// - no cache (`cache` `None`);
    /// - nothing to fetch (an empty [`crate::fetch::FetchPlan`]: the source is a directory).
    pub fn new(source_dir: impl Into<PathBuf>) -> BuildOptions {
        let source_dir = source_dir.into();
        let project = source_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "local".to_string());
        BuildOptions {
            source_dir,
            stage_from: None,
            secondary_sources: Vec::new(),
            buildspec_path: PathBuf::from("buildspec.yml"),
            base_env: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
            helper_bin: None,
            env_file: Vec::new(),
            overrides: Vec::new(),
            secrets: Vec::new(),
            secrets_file: OfflineValues::default(),
            identity: BuildIdentity::new(project),
            source_info: SourceInfo::default(),
            timeout: BuildOptions::DEFAULT_TIMEOUT,
            grace: BuildOptions::DEFAULT_GRACE,
            artifacts: None,
            artifacts_namespace: Namespace::default(),
            artifacts_packaging: Packaging::default(),
            artifacts_keep_mtime: false,
            artifacts_name: None,
            reports_dir: None,
            cache: None,
            fetch: Default::default(),
        }
    }

    /// Copies `dir` into the source directory in DOWNLOAD_SOURCE and runs the build in the copy
    /// (see [`crate::source::stage`]). Default: none, the build runs in the source directory.
    pub fn stage_from(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.stage_from = Some(dir.into());
        self
    }

    /// Adds a secondary source `id` in `dir` (`CODEBUILD_SRC_DIR_<id>`). Default: none.
    pub fn secondary_source(
        &mut self,
        id: impl Into<String>,
        dir: impl Into<PathBuf>,
    ) -> &mut Self {
        self.secondary_sources.push((id.into(), dir.into()));
        self
    }

    /// Where the buildspec was read from, as the log shows it. Default: `buildspec.yml`.
    pub fn buildspec_path(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.buildspec_path = path.into();
        self
    }

    /// Replaces the executor's own environment, the lowest layer. Default: this process's
    /// environment.
    pub fn base_env<I, K, V>(&mut self, vars: I) -> &mut Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.base_env = pairs(vars);
        self
    }

    /// The executable that implements `codebuild-hash-files`, linked onto the commands' `PATH`
    /// for the build. Default: none.
    pub fn helper_bin(&mut self, exe: impl Into<PathBuf>) -> &mut Self {
        self.helper_bin = Some(exe.into());
        self
    }

    /// Replaces the project environment file's variables (`-e FILE`). Default: none.
    pub fn env_file<I, K, V>(&mut self, vars: I) -> &mut Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.env_file = pairs(vars);
        self
    }

    /// Adds a start-build override (`--env-var NAME=VALUE`), the highest layer. Default: none.
    pub fn env_var(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.overrides.push((name.into(), value.into()));
        self
    }

    /// Adds a masked override (`--secret NAME=VALUE`): the value never appears in output.
    /// Default: none.
    pub fn secret(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.secrets.push((name.into(), value.into()));
        self
    }

    /// Values that stand in for the buildspec's `parameter-store` and `secrets-manager` entries
    /// (`--secrets-file`). Default: none, every entry is asked of AWS.
    pub fn secrets_file(&mut self, values: OfflineValues) -> &mut Self {
        self.secrets_file = values;
        self
    }

    /// The build's identity (`CODEBUILD_BUILD_ID` and friends). Default: [`BuildIdentity::new`]
    /// named after the source directory.
    pub fn identity(&mut self, identity: BuildIdentity) -> &mut Self {
        self.identity = identity;
        self
    }

    /// What is known of the source (git versions). Default: nothing.
    pub fn source_info(&mut self, info: SourceInfo) -> &mut Self {
        self.source_info = info;
        self
    }

    /// The build timeout. Default: [`BuildOptions::DEFAULT_TIMEOUT`] (60 minutes).
    pub fn timeout(&mut self, timeout: Duration) -> &mut Self {
        self.timeout = timeout;
        self
    }

    /// Time between SIGTERM and SIGKILL when a command is stopped. Default:
    /// [`BuildOptions::DEFAULT_GRACE`] (10 seconds).
    pub fn grace(&mut self, grace: Duration) -> &mut Self {
        self.grace = grace;
        self
    }

    /// Where UPLOAD_ARTIFACTS writes: a directory or an S3 location. Default: none, artifacts
    /// are collected and counted (a missing file still fails the phase) but not written.
    pub fn artifacts(&mut self, location: Location) -> &mut Self {
        self.artifacts = Some(location);
        self
    }

    /// Where artifacts go under an S3 location. Default: [`Namespace::None`].
    pub fn artifacts_namespace(&mut self, namespace: Namespace) -> &mut Self {
        self.artifacts_namespace = namespace;
        self
    }

    /// Zip files or directories. Default: [`Packaging::Zip`].
    pub fn artifacts_packaging(&mut self, packaging: Packaging) -> &mut Self {
        self.artifacts_packaging = packaging;
        self
    }

    /// Stores files' own modification times in artifacts when `yes`. Default: false (the fixed
    /// 1980-01-01, reproducible zips).
    pub fn artifacts_keep_mtime(&mut self, yes: bool) -> &mut Self {
        self.artifacts_keep_mtime = yes;
        self
    }

    /// The primary artifact's name in an S3 location when the buildspec names none. Default:
    /// `artifacts` (`artifacts.zip`).
    pub fn artifacts_name(&mut self, name: impl Into<String>) -> &mut Self {
        self.artifacts_name = Some(name.into());
        self
    }

    /// Where report groups' files and `summary.json` are written. Default: none, reports are
    /// parsed and summarised in the log but not copied.
    pub fn reports_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.reports_dir = Some(dir.into());
        self
    }

    /// Where the buildspec's `cache` is kept: a directory or an S3 location. Default: none, no
    /// cache is restored or saved.
    pub fn cache(&mut self, location: Location) -> &mut Self {
        self.cache = Some(location);
        self
    }
}

fn pairs<I, K, V>(vars: I) -> Vec<(String, String)>
where
    I: IntoIterator<Item = (K, V)>,
    K: Into<String>,
    V: Into<String>,
{
    vars.into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
}
