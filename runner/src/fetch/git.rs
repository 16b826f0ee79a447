//! Git sources, through the `git` command line.
//!
//! Why the CLI and not a Rust library (gix, git2): it is what a machine that builds code already
//! has, it finds the credentials users already set up for it (credential helpers,
//! `~/.git-credentials`, the SSH agent and keys, `insteadOf` and proxy settings) without the agent
//! re-implementing any of them, it handles large repositories as well as git does (it is git), and
//! it adds nothing to the agent's build.
//!
//! git never prompts here: `GIT_TERMINAL_PROMPT=0`, no askpass program, SSH in batch mode (unless
//! the user chose an SSH command), stdin closed. Each git process runs in its own process group,
//! killed when the build is stopped. Credentials in the URL (`https://user:token@host/...`) are
//! given to git through its environment and a credential helper scoped to that URL's host, never
//! on a command line or in a repository's configuration, and never shown: messages are redacted.
//!
//! With a cache directory, each URL has a bare mirror (`<cache>/<hash of the URL>.git`), locked
//! while it is updated and copied (builds run in parallel), into which exactly what the source
//! version needs is fetched at the asked depth; the checkout is a local clone of the mirror
//! (hard links to its object files) detached at the resolved commit, with `origin` set to the URL
//! without credentials. Without one, the checkout is made by fetching straight into it.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use sha2::{Digest, Sha256};

use super::{Fetched, GitUrl};
use crate::executor::StopRequest;

/// How Git sources are fetched.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// Commits of history to fetch (0: all).
    pub depth: u32,
    /// Whether to fetch submodules, recursively, with the same depth.
    pub submodules: bool,
    /// The clone cache's directory (`None`: no cache).
    pub cache: Option<PathBuf>,
}

/// Why a Git source could not be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GitError {
    /// git could not be started.
    #[error("cannot run git ({message}); the agent needs git on PATH for Git sources")]
    Spawn {
        /// The cause.
        message: String,
    },
    /// A git command failed; `message` is what git said (credentials redacted).
    #[error("git {command} failed: {message}")]
    Failed {
        /// The git subcommand (`ls-remote`, `fetch`, ...).
        command: String,
        /// git's error lines.
        message: String,
    },
    /// The source version is not in the repository.
    #[error("`{version}` is not a branch, tag, pull request or commit of the repository")]
    UnknownVersion {
        /// The version asked.
        version: String,
    },
    /// The repository has no default branch (it is empty).
    #[error("the repository has no default branch (is it empty?)")]
    NoDefaultBranch,
    /// The clone cache could not be used.
    #[error("clone cache {}: {message}", path.display())]
    Cache {
        /// The mirror or its lock.
        path: PathBuf,
        /// The cause.
        message: String,
    },
    /// The build was stopped.
    #[error("stopped")]
    Stopped,
}

/// What the remote side of a source version is.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// A ref (`refs/heads/main`, `refs/tags/v1`, `refs/pull/12/head`).
    Ref(String),
    /// A full commit id, fetched by id.
    Commit(String),
    /// An abbreviated commit id: found in the history.
    Abbreviated(String),
}

/// Fetches `url` at `version` into the new directory `dest`, reporting steps through `info`.
pub async fn fetch(
    url: &GitUrl,
    version: Option<&str>,
    settings: &Settings,
    dest: &Path,
    stop: &StopRequest,
    info: &mut (dyn FnMut(String) + Send),
) -> Result<Fetched, GitError> {
    let git = Git::new(url, stop);
    let (target, branch) = resolve(&git, version).await?;
    let shown_version = version.map(str::to_string).or(branch);

    let _lock;
    let repo = match &settings.cache {
        Some(root) => {
            let (mirror, lock, existed) = open_mirror(&git, root, url, info).await?;
            _lock = Some(lock);
            info(format!(
                "{} the clone cache {}",
                if existed { "Updating" } else { "Creating" },
                mirror.display()
            ));
            mirror
        }
        None => {
            _lock = None;
            git.run(None, &["init", "-q", &path_str(dest)]).await?;
            dest.join(".git")
        }
    };
    let bare = settings.cache.is_some();
    let started = std::time::Instant::now();
    let commit = fetch_target(&git, &repo, &target, version, settings.depth, bare, info).await?;
    info(format!(
        "Fetched {} in {:.2} seconds",
        match &target {
            Target::Ref(refname) => refname.as_str(),
            Target::Commit(sha) | Target::Abbreviated(sha) => sha.as_str(),
        },
        started.elapsed().as_secs_f64()
    ));
    let started = std::time::Instant::now();

    if bare {
        // Hard links to the mirror's object files (copies across file systems): the checkout
        // stands alone, in a container too, whatever later happens to the mirror.
        git.run(
            None,
            &[
                "clone",
                "-q",
                "--no-checkout",
                &path_str(&repo),
                &path_str(dest),
            ],
        )
        .await?;
        // A clone from a shallow mirror brings what its branches and tags reach: a pull
        // request's or a lone commit's objects are fetched from the mirror too.
        let spec = format!("{commit}^{{commit}}");
        if git
            .run(Some(dest), &["cat-file", "-e", &spec])
            .await
            .is_err()
        {
            let mirror = path_str(&repo);
            let args = [
                "fetch",
                "-q",
                "--no-tags",
                "--update-shallow",
                &mirror,
                &commit,
            ];
            git.run(Some(dest), &args).await?;
        }
        drop(_lock);
        git.run(Some(dest), &["remote", "set-url", "origin", &url.clean()])
            .await?;
    } else {
        git.run(Some(dest), &["remote", "add", "origin", &url.clean()])
            .await?;
    }
    git.run(
        Some(dest),
        &[
            "-c",
            "advice.detachedHead=false",
            "checkout",
            "-q",
            "--detach",
            &commit,
        ],
    )
    .await?;
    info(format!(
        "Checked out {commit} in {:.2} seconds",
        started.elapsed().as_secs_f64()
    ));
    if settings.submodules {
        let depth = format!("--depth={}", settings.depth);
        let mut args = vec!["submodule", "update", "--init", "--recursive"];
        if settings.depth > 0 {
            args.push(&depth);
        }
        info("Fetching submodules".to_string());
        git.run(Some(dest), &args).await?;
    }
    Ok(Fetched {
        version: shown_version,
        resolved: Some(commit),
    })
}

/// The remote ref or commit a version names (one `ls-remote`, none for a full commit id), and
/// the default branch's name when no version was asked.
async fn resolve(
    git: &Git<'_>,
    version: Option<&str>,
) -> Result<(Target, Option<String>), GitError> {
    let Some(version) = version else {
        let out = git
            .run(None, &["ls-remote", "--symref", &git.clean, "HEAD"])
            .await?;
        let head = out.lines().find_map(|line| {
            line.strip_prefix("ref: ")?
                .strip_suffix("\tHEAD")
                .map(str::to_string)
        });
        return match head {
            Some(refname) => {
                let branch = refname
                    .strip_prefix("refs/heads/")
                    .unwrap_or(&refname)
                    .to_string();
                Ok((Target::Ref(refname), Some(branch)))
            }
            None => Err(GitError::NoDefaultBranch),
        };
    };
    if is_hex(version) && version.len() == 40 {
        return Ok((Target::Commit(version.to_ascii_lowercase()), None));
    }
    let candidates: Vec<String> = if let Some(n) = version.strip_prefix("pr/") {
        vec![format!("refs/pull/{n}/head")]
    } else if version.starts_with("refs/") {
        vec![version.to_string()]
    } else {
        vec![
            format!("refs/heads/{version}"),
            format!("refs/tags/{version}"),
        ]
    };
    let mut args = vec!["ls-remote", git.clean.as_str()];
    args.extend(candidates.iter().map(String::as_str));
    let out = git.run(None, &args).await?;
    let found: Vec<&str> = out
        .lines()
        .filter_map(|line| line.split_once('\t').map(|(_, name)| name))
        .collect();
    if let Some(refname) = candidates.iter().find(|c| found.contains(&c.as_str())) {
        return Ok((Target::Ref(refname.clone()), None));
    }
    if is_hex(version) && version.len() >= 4 {
        return Ok((Target::Abbreviated(version.to_ascii_lowercase()), None));
    }
    Err(GitError::UnknownVersion {
        version: version.to_string(),
    })
}

/// Fetches what `target` needs into `repo` and returns the commit to check out.
async fn fetch_target(
    git: &Git<'_>,
    repo: &Path,
    target: &Target,
    version: Option<&str>,
    depth: u32,
    bare: bool,
    info: &mut (dyn FnMut(String) + Send),
) -> Result<String, GitError> {
    let git_dir = path_str(repo);
    let depth_arg = |repo: &Path| -> Option<String> {
        if depth > 0 {
            Some(format!("--depth={depth}"))
        } else if repo.join("shallow").exists() {
            Some("--unshallow".to_string())
        } else {
            None
        }
    };
    let fetch = |refspecs: Vec<String>, deep: bool| {
        let mut args: Vec<String> = ["--git-dir", &git_dir, "fetch", "-q", "--no-tags"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let depth = if deep {
            repo.join("shallow")
                .exists()
                .then(|| "--unshallow".to_string())
        } else {
            depth_arg(repo)
        };
        args.extend(depth);
        args.push(git.clean.clone());
        args.extend(refspecs);
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            git.run(None, &args).await
        }
    };
    let everything = |bare: bool| {
        vec![
            if bare {
                "+refs/heads/*:refs/heads/*".to_string()
            } else {
                "+refs/heads/*:refs/remotes/origin/*".to_string()
            },
            "+refs/tags/*:refs/tags/*".to_string(),
        ]
    };
    let local = match target {
        Target::Ref(refname) => {
            let local = local_ref(refname, bare);
            fetch(vec![format!("+{refname}:{local}")], false).await?;
            local
        }
        Target::Commit(sha) => {
            let local = format!("refs/buildagent/commits/{sha}");
            if let Err(e) = fetch(vec![format!("+{sha}:{local}")], false).await {
                if matches!(e, GitError::Stopped) {
                    return Err(e);
                }
                // Servers that refuse fetches by commit id: the whole history, then look.
                info(format!(
                    "Fetching commit {sha} by id failed; fetching the whole history instead"
                ));
                fetch(everything(bare), true).await?;
            }
            sha.clone()
        }
        Target::Abbreviated(prefix) => {
            info(format!(
                "{prefix} is an abbreviated commit id: fetching the whole history to find it"
            ));
            fetch(everything(bare), true).await?;
            prefix.clone()
        }
    };
    let spec = format!("{local}^{{commit}}");
    match git
        .run(
            None,
            &["--git-dir", &git_dir, "rev-parse", "--verify", "-q", &spec],
        )
        .await
    {
        Ok(out) => Ok(out.trim().to_string()),
        Err(GitError::Stopped) => Err(GitError::Stopped),
        Err(_) => Err(GitError::UnknownVersion {
            version: version.unwrap_or(&local).to_string(),
        }),
    }
}

/// Where a remote ref is kept: as it is in a mirror; under `refs/remotes/origin/` for a branch
/// in a checkout, as `git clone` does.
fn local_ref(refname: &str, bare: bool) -> String {
    match refname.strip_prefix("refs/heads/") {
        Some(branch) if !bare => format!("refs/remotes/origin/{branch}"),
        _ => refname.to_string(),
    }
}

/// Locks (waiting for other builds) and opens, creating it if needed, the mirror of `url`.
async fn open_mirror(
    git: &Git<'_>,
    root: &Path,
    url: &GitUrl,
    info: &mut (dyn FnMut(String) + Send),
) -> Result<(PathBuf, std::fs::File, bool), GitError> {
    let hash = Sha256::digest(url.clean().as_bytes());
    let name: String = hash[..16].iter().map(|b| format!("{b:02x}")).collect();
    let mirror = root.join(format!("{name}.git"));
    let lock_path = root.join(format!("{name}.lock"));
    let cache_err = |path: &Path, e: &dyn std::fmt::Display| GitError::Cache {
        path: path.to_owned(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(root).map_err(|e| cache_err(root, &e))?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| cache_err(&lock_path, &e))?;
    let lock = match lock.try_lock() {
        Ok(()) => lock,
        Err(std::fs::TryLockError::WouldBlock) => {
            info(format!(
                "Waiting for another build to finish with the clone cache {}",
                mirror.display()
            ));
            let waiting = tokio::task::spawn_blocking(move || lock.lock().map(|()| lock));
            tokio::select! {
                locked = waiting => locked
                    .map_err(|e| cache_err(&lock_path, &e))?
                    .map_err(|e| cache_err(&lock_path, &e))?,
                _ = git.stop.requested() => return Err(GitError::Stopped),
            }
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(cache_err(&lock_path, &e)),
    };
    let existed = mirror.join("HEAD").is_file();
    if !existed {
        // A half-made mirror (an interrupted first build) is started again.
        let _ = std::fs::remove_dir_all(&mirror);
        git.run(None, &["init", "-q", "--bare", &path_str(&mirror)])
            .await?;
    }
    Ok((mirror, lock, existed))
}

/// Runs git for one source: its environment, its credentials, its stop.
struct Git<'a> {
    /// The URL without credentials (what git is given).
    clean: String,
    /// `-c` settings before every subcommand.
    config: Vec<String>,
    /// Variables set for every git process.
    env: Vec<(&'static str, String)>,
    /// Text that must never appear in a message: the password and the URL holding it.
    secrets: Vec<String>,
    stop: &'a StopRequest,
}

/// The credential helper for a URL's own credentials: answers `get` from the environment.
const HELPER: &str = "!f() { test \"$1\" = get || exit 0; \
    echo \"username=$BUILDAGENT_GIT_USERNAME\"; echo \"password=$BUILDAGENT_GIT_PASSWORD\"; }; f";

/// `~/.git-credentials` read (never written) after the user's own helpers.
const STORE_HELPER: &str = "!f() { test \"$1\" = get && git credential-store get; }; f";

impl<'a> Git<'a> {
    fn new(url: &GitUrl, stop: &'a StopRequest) -> Git<'a> {
        let mut config = vec!["core.askPass=".to_string()];
        let mut env = vec![
            ("GIT_TERMINAL_PROMPT", "0".to_string()),
            ("LC_ALL", "C".to_string()),
            ("GIT_HTTP_LOW_SPEED_LIMIT", "1".to_string()),
            ("GIT_HTTP_LOW_SPEED_TIME", "60".to_string()),
        ];
        let mut secrets = Vec::new();
        match (url.credentials(), url.origin()) {
            (Some((user, password)), Some(origin)) => {
                // Only for this URL's host: the list of helpers is emptied, then this one.
                config.push(format!("credential.{origin}.helper="));
                config.push(format!("credential.{origin}.helper={HELPER}"));
                secrets.push(url.raw.clone());
                if !password.is_empty() {
                    secrets.push(password.clone());
                    env.push(("BUILDAGENT_GIT_USERNAME", user));
                    env.push(("BUILDAGENT_GIT_PASSWORD", password));
                } else {
                    // `https://token@host`: the token is the user name.
                    secrets.push(user.clone());
                    env.push(("BUILDAGENT_GIT_USERNAME", user));
                    env.push(("BUILDAGENT_GIT_PASSWORD", String::new()));
                }
            }
            _ => {
                let home = std::env::var_os("HOME").map(PathBuf::from);
                if home.is_some_and(|h| h.join(".git-credentials").is_file()) {
                    config.push(format!("credential.helper={STORE_HELPER}"));
                }
            }
        }
        let ssh = url.raw.starts_with("ssh://")
            || url.raw.starts_with("git+ssh://")
            || (!url.raw.contains("://") && url.raw.contains('@'));
        if ssh
            && std::env::var_os("GIT_SSH_COMMAND").is_none()
            && std::env::var_os("GIT_SSH").is_none()
            && user_ssh_command().is_none()
        {
            // Never a passphrase or host-key question; the SSH agent and keys still work.
            config.push("core.sshCommand=ssh -o BatchMode=yes".to_string());
        }
        Git {
            clean: url.clean(),
            config,
            env,
            secrets,
            stop,
        }
    }

    /// Runs `git [-C dir] <config> args`, returning its standard output.
    async fn run(&self, dir: Option<&Path>, args: &[&str]) -> Result<String, GitError> {
        let mut cmd = tokio::process::Command::new("git");
        if let Some(dir) = dir {
            cmd.arg("-C").arg(dir);
        }
        for setting in &self.config {
            cmd.arg("-c").arg(setting);
        }
        cmd.args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("GIT_ASKPASS")
            .env_remove("SSH_ASKPASS")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("GIT_INDEX_FILE")
            .env_remove("GIT_OBJECT_DIRECTORY")
            .env_remove("GIT_ALTERNATE_OBJECT_DIRECTORIES")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let command = args
            .iter()
            .find(|a| !a.starts_with('-') && !a.contains('/') && !a.contains('='))
            .copied()
            .unwrap_or("")
            .to_string();
        let child = cmd.spawn().map_err(|e| GitError::Spawn {
            message: e.to_string(),
        })?;
        let pid = child.id();
        let output = tokio::select! {
            output = child.wait_with_output() => output.map_err(|e| GitError::Spawn { message: e.to_string() })?,
            _ = self.stop.requested() => {
                if let Some(pid) = pid {
                    // The whole group: git's helpers (remote-https, index-pack, ssh) too.
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                return Err(GitError::Stopped);
            }
        };
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        Err(GitError::Failed {
            command,
            message: self.message(&output.stderr),
        })
    }

    /// git's error lines (the last few), with every secret as `***`.
    fn message(&self, stderr: &[u8]) -> String {
        let text = String::from_utf8_lossy(stderr);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let important: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with("fatal:") || l.starts_with("error:"))
            .collect();
        let chosen = if important.is_empty() {
            &lines
        } else {
            &important
        };
        let start = chosen.len().saturating_sub(4);
        let mut message = chosen[start..].join("; ");
        if message.is_empty() {
            message = "no message".to_string();
        }
        redact(&message, &self.secrets)
    }
}

/// `text` with every non-empty secret replaced by `***`, longest first.
fn redact(text: &str, secrets: &[String]) -> String {
    let mut secrets: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets
        .iter()
        .fold(text.to_string(), |t, s| t.replace(s.as_str(), "***"))
}

/// The user's `core.sshCommand`, if set (it must win over the agent's batch-mode default).
fn user_ssh_command() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["config", "--get", "core.sshCommand"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let value = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !value.is_empty()).then_some(value)
}

fn is_hex(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit())
}

fn path_str(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_longest_first() {
        let secrets = vec!["tok".to_string(), "https://me:tok@h/r".to_string()];
        assert_eq!(
            redact("fatal: https://me:tok@h/r and tok", &secrets),
            "fatal: *** and ***"
        );
    }

    #[test]
    fn branches_are_remote_tracking_refs_in_a_checkout() {
        assert_eq!(
            local_ref("refs/heads/main", false),
            "refs/remotes/origin/main"
        );
        assert_eq!(local_ref("refs/heads/main", true), "refs/heads/main");
        assert_eq!(local_ref("refs/pull/1/head", false), "refs/pull/1/head");
    }
}
