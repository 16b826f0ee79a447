//! The per-command script model: how buildspec 0.2 makes a series of separate shell processes
//! behave like one shell session.
//!
//! CodeBuild runs each command as a new shell process (`/bin/sh` or `bash`) on a generated script.
//! The script's first three lines restore the working directory and the exported environment that
//! the previous command left, so the user's code starts on **line 4** (shell error messages say
//! `script.sh: 4: ...` or `script.sh: line 4: ...`). After the user's code, the script saves the
//! environment (`export -p`) and the working directory for the next command. A version 0.2
//! script looks like this:
//!
//! ```sh
//! cd '/src/subdir'
//! set -a
//! export OLDPWD='/src'; export PWD='/src/subdir'; export SHLVL='1'; : '/tmp/buildagent-XXXX/env.sh'
//! <the user's command, verbatim, any number of lines>
//! export CODEBUILD_LAST_EXIT=$?
//! { command export -p && command echo '# buildagent: end of export -p' && command pwd; } >| '/tmp/buildagent-XXXX/out/state.out'
//! exit "$CODEBUILD_LAST_EXIT"
//! ```
//!
//! Line 3 restores the committed environment. The process already starts with exactly that
//! environment, byte for byte (see [`StateDir::prepare`]), so line 3 only re-exports what the
//! shell itself may have changed since it started: the variables a shell sets at startup or on
//! `cd` (`PWD`, `OLDPWD`, `SHLVL`, `IFS`, `OPTIND`, `RANDOM`, ...; see `shell_may_change`) and the
//! variables exported without a value (`export NAME`), which a process environment cannot hold,
//! one `export` statement each, as `env.sh` has them. It ends with `: '<env.sh>'`, so bash's `$_`
//! is the same as after sourcing. When the environment holds something a shell acts on at startup
//! (`BASH_ENV`, `ENV`, `SHELLOPTS`, `BASHOPTS`) or a read-only special (`PPID`, `UID`, `EUID`), or
//! when a value to re-export holds a newline (which would move the user's code off line 4), line 3
//! sources the whole file instead: `. '/tmp/buildagent-XXXX/env.sh'`. Either way the user's code
//! starts with the same variables as if line 3 had sourced `env.sh`, which is cheaper to skip:
//! opening and reading the file costs the shell about 0.1 ms per command.
//!
//! The consequences, which the tests check with dash and bash:
//! - `cd`, plain assignments (exported by `set -a`), `export` and `unset` carry over to the next
//!   command; shell functions, aliases, traps and options such as `set -e` do not.
//! - `exit N` ends only that command, with status N, and its changes to the environment and the
//!   working directory are lost (the saving lines never run).
//! - The status is the last statement's: no implicit `set -e`, no `pipefail`.
//!
//! # The state directory
//!
//! A [`StateDir`] is a private directory (mode 0700) per build that holds:
//! - `env.sh`: the committed exported environment, in the format described in [`mod@env`]; line 3
//!   of a script re-exports the part of it the shell may have changed, or sources it in full.
//! - `dir.txt`: the committed working directory (one line).
//! - `script.sh`: the current command's script, rewritten for each command (see below).
//! - `out/state.out`: what the last command's epilogue saved (the output of `export -p`, the
//!   marker line, then the output of `pwd`), until [`StateDir::finish`] reads it. `out/` is the
//!   only place a command writes to.
//!
//! The agent, not the shell, commits the state: after the command, [`StateDir::finish`] parses
//! `state.out` (whatever the shell's `export -p` prints) and, only if it is complete (the marker
//! line follows it), rewrites `env.sh` in its own format (written to a temporary file and renamed,
//! so it is never half-written) and updates `dir.txt` from what follows the marker. So a command
//! killed halfway, or one that ran `exit`, leaves the state exactly as it was, and the epilogue
//! needs no external program (`mv`, `cat`) that a user's `PATH` could hide. When `export -p`
//! printed the same bytes as the last time they were committed, `finish` does not parse them
//! again; `env.sh` and `dir.txt` are rewritten only when they change.
//!
//! Until a command runs as another user, the agent overwrites `script.sh` in place and empties
//! `out/state.out` after reading it (an empty file commits nothing), which saves creating,
//! renaming and removing files per command. From the first run-as command on, it only creates,
//! renames and removes them, as described under Run-as.
//!
//! Differences from the shape in CodeBuild's logs, on purpose:
//! - Line 1 is `cd '<dir>'` with the directory written into the script rather than
//!   `cd "$(cat dir.txt)"`: no fork, no dependence on `cat` being on the user's `PATH`, and exact
//!   bytes for directory names that end in a newline.
//! - The process starts with exactly the committed environment (see [`StateDir::prepare`]), so a
//!   variable the user `unset` stays unset, even one that came from the initial environment.
//!
//! # Version 0.1
//!
//! With [`ScriptMode::V01`], every command starts from the start directory with the initial
//! environment (plus the agent's [`StateDir::set_var`] changes) and nothing is saved; the user's
//! code still starts on line 4.
//!
//! # Run-as
//!
//! When a command runs as another user, [`StateDir::prepare`] gives that user what the command
//! needs and nothing more: the state directory stays owned by the agent (root, in that case) and
//! becomes mode 0711 (searchable, not listable or writable); `env.sh`, `dir.txt` and `script.sh`
//! (mode 0600) and the `out/` directory (mode 0700) are `chown`ed to the user's uid and gid. No
//! third user can read the environment, and the user cannot replace the agent's files or plant
//! symlinks where the agent writes: the agent writes only new files it creates in its own
//! directory and renames into place, and reads `out/` without following symlinks. The parent
//! directory must be searchable by the user (the default, the system temporary directory, is).

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::executor::{CommandSpec, RunAs};

pub mod env;

pub use env::{EnvError, ExportedEnv, ParseEnvError};

/// The line of the generated script on which the user's command starts.
pub const USER_CODE_LINE: usize = 4;

/// The comment line the epilogue writes after `export -p` completed.
const END_MARKER: &[u8] = b"# buildagent: end of export -p";

const ENV_FILE: &str = "env.sh";
const DIR_FILE: &str = "dir.txt";
const SCRIPT_FILE: &str = "script.sh";
const OUT_DIR: &str = "out";
const STATE_OUT: &str = "out/state.out";

/// Whether a shell (dash, bash, busybox ash, ksh, zsh) may give `name` a value of its own between
/// its start and line 3 (at startup, or in line 1's `cd`), or gives an assignment to it a side
/// effect (reseeding `RANDOM`, restarting `SECONDS`, ...): line 3 re-exports these, as sourcing
/// `env.sh` would.
fn shell_may_change(name: &str) -> bool {
    matches!(
        name,
        "_" | "BASH"
            | "BASHPID"
            | "BASH_ARGV0"
            | "BASH_COMMAND"
            | "BASH_SUBSHELL"
            | "BASH_VERSION"
            | "BASH_XTRACEFD"
            | "BB_ASH_VERSION"
            | "CDPATH"
            | "COLUMNS"
            | "DIRSTACK"
            | "EPOCHREALTIME"
            | "EPOCHSECONDS"
            | "FUNCNAME"
            | "GROUPS"
            | "HISTCMD"
            | "HISTFILE"
            | "HISTSIZE"
            | "HOSTNAME"
            | "HOSTTYPE"
            | "IFS"
            | "KSH_VERSION"
            | "LINENO"
            | "LINES"
            | "MACHTYPE"
            | "MAIL"
            | "MAILCHECK"
            | "OLDPWD"
            | "OPTARG"
            | "OPTERR"
            | "OPTIND"
            | "OSTYPE"
            | "PS1"
            | "PS2"
            | "PS3"
            | "PS4"
            | "PWD"
            | "RANDOM"
            | "SECONDS"
            | "SHLVL"
            | "SRANDOM"
            | "TMOUT"
            | "ZSH_NAME"
            | "ZSH_SUBSHELL"
            | "ZSH_VERSION"
    )
}

/// Whether `name` in the environment makes line 3 source `env.sh` in full: the shell acts on it
/// at startup (a startup file, options), or it is read-only in bash (sourcing reports an error).
fn needs_sourcing(name: &str) -> bool {
    matches!(
        name,
        "BASH_ENV" | "ENV" | "SHELLOPTS" | "BASHOPTS" | "PPID" | "UID" | "EUID"
    )
}

/// Line 3 when the process environment holds `env` (see the [module documentation](self)), or
/// `None` when line 3 must source `env_file`.
fn env_line(env: &ExportedEnv, env_file: &Path) -> Option<Vec<u8>> {
    let mut line = Vec::new();
    for (name, value) in env.iter() {
        if needs_sourcing(name) {
            return None;
        }
        match value {
            Some(v) if shell_may_change(name) => {
                if v.contains(&b'\n') {
                    return None;
                }
                line.extend_from_slice(b"export ");
                line.extend_from_slice(name.as_bytes());
                line.push(b'=');
                env::push_single_quoted(&mut line, v);
                line.extend_from_slice(b"; ");
            }
            Some(_) => {}
            None => {
                line.extend_from_slice(b"export ");
                line.extend_from_slice(name.as_bytes());
                line.extend_from_slice(b"; ");
            }
        }
    }
    line.extend_from_slice(b": ");
    quote_path(&mut line, env_file);
    Some(line)
}

/// How commands relate to each other: buildspec version 0.2 or 0.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScriptMode {
    /// Version 0.2: each command continues from the working directory and the exported
    /// environment the previous one left.
    V02,
    /// Version 0.1: each command starts afresh from the start directory and the initial
    /// environment.
    V01,
}

/// Why the state directory could not do its job.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The directory could not be created.
    #[error("cannot create the build's state directory in {}", parent.display())]
    Create {
        /// Where it was to be created.
        parent: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A state file could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A state file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The environment saved by a command could not be parsed.
    #[error("cannot parse the environment saved in {}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: ParseEnvError,
    },
    /// A variable cannot be part of the environment.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// The run-as user could not be given the state files.
    #[error("cannot give run-as user `{user}` access to {}", path.display())]
    Chown {
        /// The user.
        user: String,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The directory could not be removed.
    #[error("cannot remove the build's state directory {}", path.display())]
    Remove {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// A rendered command script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandScript {
    text: Vec<u8>,
}

/// Where a script finds its state: paths as the shell sees them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptPaths {
    /// The directory to start from (line 1).
    pub cwd: PathBuf,
    /// The environment file (line 3, version 0.2).
    pub env_file: PathBuf,
    /// Line 3 (version 0.2) when the process environment already holds the committed
    /// environment: the few `export` statements described in the
    /// [module documentation](self); `None` sources `env_file`. Must not hold a newline.
    pub env_line: Option<Vec<u8>>,
    /// Where the epilogue saves `export -p`, the marker and `pwd` (version 0.2).
    pub state_out: PathBuf,
}

impl CommandScript {
    /// Renders the script for `user_command` (inserted verbatim from line [`USER_CODE_LINE`]).
    pub fn render(user_command: &str, mode: ScriptMode, paths: &ScriptPaths) -> CommandScript {
        let mut s = Vec::with_capacity(user_command.len() + 512);
        // Line 1.
        s.extend_from_slice(b"cd ");
        quote_path(&mut s, &paths.cwd);
        s.push(b'\n');
        match mode {
            ScriptMode::V02 => {
                // Lines 2 and 3.
                s.extend_from_slice(b"set -a\n");
                match &paths.env_line {
                    Some(line) => s.extend_from_slice(line),
                    None => {
                        s.extend_from_slice(b". ");
                        quote_path(&mut s, &paths.env_file);
                    }
                }
                s.push(b'\n');
            }
            ScriptMode::V01 => {
                s.extend_from_slice(
                    b"# buildagent: version 0.1: every command starts from the source directory\n\
                      # with the build's initial environment, and saves nothing.\n",
                );
            }
        }
        // Line 4 on: the user's code.
        s.extend_from_slice(user_command.as_bytes());
        if !user_command.ends_with('\n') {
            s.push(b'\n');
        }
        if mode == ScriptMode::V02 {
            s.extend_from_slice(
                b"export CODEBUILD_LAST_EXIT=$?\n{ command export -p && command echo '",
            );
            s.extend_from_slice(END_MARKER);
            s.extend_from_slice(b"' && command pwd; } >| ");
            quote_path(&mut s, &paths.state_out);
            s.extend_from_slice(b"\nexit \"$CODEBUILD_LAST_EXIT\"\n");
        }
        CommandScript { text: s }
    }

    /// The script's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.text
    }
}

fn quote_path(out: &mut Vec<u8>, path: &Path) {
    env::push_single_quoted(out, path.as_os_str().as_bytes());
}

/// The per-build state directory; see the [module documentation](self).
#[derive(Debug)]
pub struct StateDir {
    dir: tempfile::TempDir,
    visible: PathBuf,
    start_dir: PathBuf,
    initial: ExportedEnv,
    current: ExportedEnv,
    cwd: PathBuf,
    /// The start of `state.out` up to and including the marker line, as last committed: its
    /// `export -p` output parses to `current`. Empty when unknown.
    committed_prefix: Vec<u8>,
    /// The buffer `finish` reads `state.out` into, kept from command to command.
    read_buf: Vec<u8>,
    /// Whether a command has run as another user (see [`StateDir::grant`]): from then on the
    /// files a command can touch are only ever replaced or removed, never written in place.
    granted: bool,
    /// Whether `state.out` is known to be absent or empty (`finish` emptied it).
    out_clean: bool,
    /// `current` and `initial` as process environments, shared by the specs `prepare` returns.
    current_process_env: Arc<[(OsString, OsString)]>,
    initial_process_env: Arc<[(OsString, OsString)]>,
    /// Line 3 of a version 0.2 script for `current` (see [`env_line`]).
    env_line: Option<Vec<u8>>,
}

impl StateDir {
    /// Creates the state directory in the system temporary directory, seeded with the build's
    /// initial environment and start directory (the primary source directory).
    pub fn new(initial_env: &[(String, String)], start_dir: &Path) -> Result<StateDir, StateError> {
        StateDir::new_in(&std::env::temp_dir(), initial_env, start_dir)
    }

    /// Like [`new`](Self::new), in `parent`.
    ///
    /// Fails if a name is not a valid shell variable name or a value contains a NUL byte.
    pub fn new_in(
        parent: &Path,
        initial_env: &[(String, String)],
        start_dir: &Path,
    ) -> Result<StateDir, StateError> {
        let initial = ExportedEnv::from_pairs(initial_env.iter().map(|(k, v)| (k, v)))?;
        let dir = tempfile::Builder::new()
            .prefix("buildagent-")
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir_in(parent)
            .map_err(|source| StateError::Create {
                parent: parent.to_owned(),
                source,
            })?;
        let visible = dir.path().to_owned();
        let out = dir.path().join(OUT_DIR);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&out)
            .map_err(|source| StateError::Write { path: out, source })?;
        let mut state = StateDir {
            dir,
            visible,
            start_dir: start_dir.to_owned(),
            current: initial.clone(),
            initial,
            cwd: start_dir.to_owned(),
            committed_prefix: Vec::new(),
            read_buf: Vec::new(),
            granted: false,
            out_clean: true,
            current_process_env: Arc::new([]),
            initial_process_env: Arc::new([]),
            env_line: None,
        };
        state.initial_process_env = state.initial.to_process_env().into();
        state.write_env()?;
        state.write_dir()?;
        Ok(state)
    }

    /// The directory on this machine.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Sets the path at which the commands' shells see this directory (default: the same path).
    /// A Docker executor that bind-mounts it elsewhere sets the mount point here.
    pub fn set_visible_path(&mut self, path: impl Into<PathBuf>) {
        self.visible = path.into();
        self.env_line = env_line(&self.current, &self.visible.join(ENV_FILE));
    }

    /// The exported environment as the last completed command left it (for `exported-variables`).
    pub fn env(&self) -> &ExportedEnv {
        &self.current
    }

    /// The initial environment (with [`set_var`](Self::set_var) changes).
    pub fn initial_env(&self) -> &ExportedEnv {
        &self.initial
    }

    /// The working directory as the last completed command left it.
    pub fn cwd(&self) -> &Path {
        &self.cwd
    }

    /// The start directory (where version 0.1 commands start, and where every process is spawned).
    pub fn start_dir(&self) -> &Path {
        &self.start_dir
    }

    /// Sets a variable for every later command, over whatever the commands saved (the engine sets
    /// `CODEBUILD_BUILD_SUCCEEDING=0` this way after the first failure). Applies to both modes.
    pub fn set_var(&mut self, name: &str, value: &str) -> Result<(), StateError> {
        self.current.set(name, value)?;
        self.initial.set(name, value)?;
        self.initial_process_env = self.initial.to_process_env().into();
        self.write_env()
    }

    /// Removes a variable for every later command (both modes).
    pub fn unset_var(&mut self, name: &str) -> Result<(), StateError> {
        self.current.remove(name);
        self.initial.remove(name);
        self.initial_process_env = self.initial.to_process_env().into();
        self.write_env()
    }

    /// The paths a script uses, as its shell sees them.
    pub fn script_paths(&self, mode: ScriptMode) -> ScriptPaths {
        let env_file = self.visible.join(ENV_FILE);
        ScriptPaths {
            cwd: match mode {
                ScriptMode::V02 => self.cwd.clone(),
                ScriptMode::V01 => self.start_dir.clone(),
            },
            env_line: match mode {
                ScriptMode::V02 => self.env_line.clone(),
                ScriptMode::V01 => None,
            },
            env_file,
            state_out: self.visible.join(STATE_OUT),
        }
    }

    /// Writes the script for `user_command` and returns what to run: `shell script.sh`, started in
    /// the start directory, with exactly the committed environment (version 0.2) or the initial
    /// one (version 0.1), byte for byte (except variables exported without a value, which
    /// line 3 exports), as `user`.
    pub fn prepare(
        &mut self,
        user_command: &str,
        mode: ScriptMode,
        shell: &Path,
        user: Option<&RunAs>,
    ) -> Result<CommandSpec, StateError> {
        self.granted |= user.is_some();
        if self.granted || !self.out_clean {
            let stale = self.path().join(STATE_OUT);
            match fs::remove_file(&stale) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(StateError::Write {
                        path: stale,
                        source,
                    })
                }
            }
        }
        self.out_clean = false;
        let script = CommandScript::render(user_command, mode, &self.script_paths(mode));
        let script_path = self.path().join(SCRIPT_FILE);
        if self.granted {
            write_atomic(&script_path, script.as_bytes())?;
        } else {
            // Only the agent's user runs commands: overwriting the file in place saves creating
            // a file and renaming it per command. (Nothing reads it until the shell starts.)
            write_in_place(&script_path, script.as_bytes())?;
        }
        if let Some(user) = user {
            self.grant(user)?;
        }
        let env = match mode {
            ScriptMode::V02 => &self.current_process_env,
            ScriptMode::V01 => &self.initial_process_env,
        };
        Ok(CommandSpec {
            program: shell.to_owned(),
            script_path: self.visible.join(SCRIPT_FILE),
            env: Arc::clone(env),
            cwd: self.start_dir.clone(),
            user: user.cloned(),
        })
    }

    /// Commits what the command that just ran saved, if its epilogue ran to the end (version 0.2):
    /// the new exported environment and working directory become the next command's. Returns
    /// whether anything was committed (`false` after `exit`, a kill, or in version 0.1).
    pub fn finish(&mut self) -> Result<bool, StateError> {
        let path = self.path().join(STATE_OUT);
        // Without run-as, the file is the agent's own: emptied in place once read, so that the
        // next epilogue need not create it anew nor `prepare` remove it. A run-as user's file is
        // removed (the agent never writes to a file that user could have replaced).
        let mut in_place = !self.granted;
        let mut opened = open_no_follow(&path, in_place);
        if in_place && matches!(&opened, Err(e) if e.kind() == io::ErrorKind::PermissionDenied) {
            // Not writable after all (a shell running as another uid wrote it): remove it.
            in_place = false;
            opened = open_no_follow(&path, false);
        }
        let mut file = match opened {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.out_clean = true;
                return Ok(false);
            }
            Err(source) => return Err(StateError::Read { path, source }),
        };
        let mut text = std::mem::take(&mut self.read_buf);
        let committed = match read_into(&mut file, &mut text) {
            Ok(()) => self.commit(&text, &path),
            Err(source) => Err(StateError::Read {
                path: path.clone(),
                source,
            }),
        };
        self.read_buf = text;
        if committed? {
            self.out_clean = if in_place {
                file.set_len(0).is_ok()
            } else {
                fs::remove_file(&path).is_ok()
            };
            return Ok(true);
        }
        Ok(false)
    }

    /// Commits `text`, what the epilogue saved in `path`, if it is complete.
    fn commit(&mut self, text: &[u8], path: &Path) -> Result<bool, StateError> {
        let after_marker =
            if !self.committed_prefix.is_empty() && text.starts_with(&self.committed_prefix) {
                // The same `export -p` output as committed last: the environment did not change.
                self.committed_prefix.len()
            } else {
                let (env, after_marker) = ExportedEnv::parse_with_marker(text, END_MARKER)
                    .map_err(|source| StateError::Parse {
                        path: path.to_owned(),
                        source,
                    })?;
                let Some(after_marker) = after_marker else {
                    return Ok(false);
                };
                // Most commands change nothing: rewriting the file only on change saves an atomic
                // write per command (measured by the per-command benchmark).
                if env != self.current {
                    self.current = env;
                    self.write_env()?;
                }
                let prefix = &text[..after_marker];
                if prefix.ends_with(b"\n") {
                    self.committed_prefix.clear();
                    self.committed_prefix.extend_from_slice(prefix);
                }
                after_marker
            };
        let mut dir = &text[after_marker..];
        if let Some(line) = dir.strip_suffix(b"\n") {
            dir = line;
        }
        if !dir.is_empty() && dir != self.cwd.as_os_str().as_bytes() {
            self.cwd = PathBuf::from(OsStr::from_bytes(dir));
            self.write_dir()?;
        }
        Ok(true)
    }

    /// Removes the directory. (Dropping the `StateDir` removes it too, ignoring errors.)
    pub fn close(self) -> Result<(), StateError> {
        let path = self.dir.path().to_owned();
        self.dir
            .close()
            .map_err(|source| StateError::Remove { path, source })
    }

    fn write_env(&mut self) -> Result<(), StateError> {
        // `current` changed: no `export -p` output is known to parse to it.
        self.committed_prefix.clear();
        self.current_process_env = self.current.to_process_env().into();
        self.env_line = env_line(&self.current, &self.visible.join(ENV_FILE));
        write_atomic(&self.path().join(ENV_FILE), &self.current.to_script())
    }

    fn write_dir(&self) -> Result<(), StateError> {
        let mut line = self.cwd.as_os_str().as_bytes().to_vec();
        line.push(b'\n');
        write_atomic(&self.path().join(DIR_FILE), &line)
    }

    /// Gives `user` the files a command reads and the directory it writes to.
    fn grant(&self, user: &RunAs) -> Result<(), StateError> {
        let dir = self.path();
        fs::set_permissions(dir, fs::Permissions::from_mode(0o711)).map_err(|source| {
            StateError::Write {
                path: dir.to_owned(),
                source,
            }
        })?;
        for path in [
            dir.join(ENV_FILE),
            dir.join(DIR_FILE),
            dir.join(SCRIPT_FILE),
            dir.join(OUT_DIR),
        ] {
            crate::os::chown(&path, user.uid(), user.gid()).map_err(|source| {
                StateError::Chown {
                    user: user.name().to_owned(),
                    path: path.clone(),
                    source,
                }
            })?;
        }
        Ok(())
    }
}

/// Opens a file a command wrote, without following a symlink planted in its place; for writing
/// too with `write`.
fn open_no_follow(path: &Path, write: bool) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
}

/// Reads `file` into `buf`, the buffer the last command's output was read into: no size probing,
/// no allocation.
fn read_into(file: &mut fs::File, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize((len * 2).max(8192), 0);
        }
        match io::Read::read(file, &mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                buf.clear();
                return Err(e);
            }
        }
    }
    buf.truncate(len);
    Ok(())
}

/// Overwrites `path` with `bytes` (creating it with mode 0600), without following a symlink.
fn write_in_place(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let result = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .and_then(|mut file| file.write_all(bytes));
    result.map_err(|source| StateError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Writes `bytes` to a new temporary file next to `path` (mode 0600) and renames it over `path`.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let create = || {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
    };
    let result = (|| {
        let mut file = match create() {
            // Left over from a write that failed halfway: replace it.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                fs::remove_file(&tmp)?;
                create()?
            }
            other => other?,
        };
        file.write_all(bytes)?;
        file.flush()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    result.map_err(|source| StateError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> ScriptPaths {
        ScriptPaths {
            cwd: "/src/it's here".into(),
            env_file: "/s/env.sh".into(),
            env_line: None,
            state_out: "/s/state.out".into(),
        }
    }

    #[test]
    fn v02_script_shape() {
        let s = CommandScript::render("echo one\necho two", ScriptMode::V02, &paths());
        let text = String::from_utf8(s.as_bytes().to_vec()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "cd '/src/it'\\''s here'");
        assert_eq!(lines[1], "set -a");
        assert_eq!(lines[2], ". '/s/env.sh'");
        assert_eq!(lines[USER_CODE_LINE - 1], "echo one");
        assert_eq!(lines[USER_CODE_LINE], "echo two");
        assert_eq!(lines[5], "export CODEBUILD_LAST_EXIT=$?");
        assert!(lines[6].contains("export -p") && lines[6].ends_with(">| '/s/state.out'"));
        assert!(lines[6].contains("&& command pwd;"));
        assert_eq!(lines[7], "exit \"$CODEBUILD_LAST_EXIT\"");
        assert_eq!(lines.len(), 8);
    }

    #[test]
    fn line_3_exports_only_what_the_shell_may_change() {
        let env =
            ExportedEnv::from_pairs([("A", "plain"), ("OLDPWD", "/o"), ("PWD", "/p'q")]).unwrap();
        let file = Path::new("/s/env.sh");
        assert_eq!(
            env_line(&env, file).unwrap(),
            b"export OLDPWD='/o'; export PWD='/p'\\''q'; : '/s/env.sh'"
        );
        let valueless = ExportedEnv::parse(
            b"export A='plain'\nexport NOVALUE\nexport OLDPWD='/o'\nexport PWD='/p'\\''q'\n",
        )
        .unwrap();
        assert_eq!(
            env_line(&valueless, file).unwrap(),
            b"export NOVALUE; export OLDPWD='/o'; export PWD='/p'\\''q'; : '/s/env.sh'"
        );
        // Sourced in full: a newline in a re-exported value, or something the shell acts on.
        let mut nl = env.clone();
        nl.set("IFS", " \t\n").unwrap();
        assert_eq!(env_line(&nl, file), None);
        let mut bash_env = env.clone();
        bash_env.set("BASH_ENV", "/x").unwrap();
        assert_eq!(env_line(&bash_env, file), None);
        // A newline elsewhere is no problem: the process environment carries it.
        let mut other = env;
        other.set("A", "two\nlines").unwrap();
        assert!(env_line(&other, file).is_some());

        let script = CommandScript::render(
            "true",
            ScriptMode::V02,
            &ScriptPaths {
                env_line: Some(b"export PWD='/p'; : '/s/env.sh'".to_vec()),
                ..paths()
            },
        );
        let text = String::from_utf8(script.as_bytes().to_vec()).unwrap();
        assert_eq!(
            text.lines().nth(2).unwrap(),
            "export PWD='/p'; : '/s/env.sh'"
        );
        assert_eq!(text.lines().nth(USER_CODE_LINE - 1).unwrap(), "true");
    }

    #[test]
    fn v01_script_shape() {
        let s = CommandScript::render("false\n", ScriptMode::V01, &paths());
        let text = String::from_utf8(s.as_bytes().to_vec()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "cd '/src/it'\\''s here'");
        assert!(lines[1].starts_with('#') && lines[2].starts_with('#'));
        assert_eq!(lines[USER_CODE_LINE - 1], "false");
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn state_files_and_set_var() {
        let parent = tempfile::tempdir().unwrap();
        let env = vec![("A".to_string(), "1".to_string())];
        let mut state = StateDir::new_in(parent.path(), &env, Path::new("/src")).unwrap();
        let mode = fs::metadata(state.path()).unwrap();
        assert_eq!(mode.permissions().mode() & 0o777, 0o700);
        assert_eq!(
            fs::read(state.path().join(ENV_FILE)).unwrap(),
            b"export A='1'\n"
        );
        assert_eq!(fs::read(state.path().join(DIR_FILE)).unwrap(), b"/src\n");
        state.set_var("CODEBUILD_BUILD_SUCCEEDING", "0").unwrap();
        assert_eq!(
            fs::read(state.path().join(ENV_FILE)).unwrap(),
            b"export A='1'\nexport CODEBUILD_BUILD_SUCCEEDING='0'\n"
        );
        let spec = state
            .prepare("true", ScriptMode::V02, Path::new("/bin/sh"), None)
            .unwrap();
        assert_eq!(spec.script_path, state.path().join(SCRIPT_FILE));
        assert_eq!(spec.cwd, Path::new("/src"));
        assert_eq!(
            *spec.env,
            [
                ("A".into(), "1".into()),
                ("CODEBUILD_BUILD_SUCCEEDING".into(), "0".into())
            ]
        );
        // Nothing saved yet: nothing committed.
        assert!(!state.finish().unwrap());
        // A truncated save (no marker) is ignored.
        fs::write(state.path().join(STATE_OUT), b"export A='2'\n").unwrap();
        assert!(!state.finish().unwrap());
        assert_eq!(state.env().get("A").unwrap(), b"1");
        // A complete one is committed.
        let saved = [b"declare -x A=\"2\"\n".as_slice(), END_MARKER, b"\n"].concat();
        fs::write(
            state.path().join(STATE_OUT),
            [saved.as_slice(), b"/src/sub\n"].concat(),
        )
        .unwrap();
        assert!(state.finish().unwrap());
        // Emptied, not removed: the agent's own file, reused by the next epilogue.
        assert_eq!(fs::read(state.path().join(STATE_OUT)).unwrap(), b"");
        assert_eq!(state.env().get("A").unwrap(), b"2");
        assert!(!state.env().contains("CODEBUILD_BUILD_SUCCEEDING"));
        assert_eq!(state.cwd(), Path::new("/src/sub"));
        assert_eq!(
            fs::read(state.path().join(ENV_FILE)).unwrap(),
            b"export A='2'\n"
        );
        // The same save again (taken without parsing), with another directory.
        fs::write(
            state.path().join(STATE_OUT),
            [saved.as_slice(), b"/src/other\n"].concat(),
        )
        .unwrap();
        assert!(state.finish().unwrap());
        assert_eq!(state.env().get("A").unwrap(), b"2");
        assert_eq!(state.cwd(), Path::new("/src/other"));
        // After set_var, the same save is parsed again and undoes the change.
        state.set_var("B", "3").unwrap();
        fs::write(state.path().join(STATE_OUT), &saved).unwrap();
        assert!(state.finish().unwrap());
        assert!(!state.env().contains("B"));
        assert_eq!(state.cwd(), Path::new("/src/other"));
        assert_eq!(
            fs::read(state.path().join(DIR_FILE)).unwrap(),
            b"/src/other\n"
        );
        let path = state.path().to_owned();
        state.close().unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn line_3_follows_the_visible_path() {
        let parent = tempfile::tempdir().unwrap();
        let env = vec![("PWD".to_string(), "/src".to_string())];
        let mut state = StateDir::new_in(parent.path(), &env, Path::new("/src")).unwrap();
        let line_3 = |state: &mut StateDir| {
            state
                .prepare("true", ScriptMode::V02, Path::new("/bin/sh"), None)
                .unwrap();
            let script = fs::read(state.path().join(SCRIPT_FILE)).unwrap();
            String::from_utf8(script)
                .unwrap()
                .lines()
                .nth(2)
                .unwrap()
                .to_owned()
        };
        let own = format!("export PWD='/src'; : '{}/env.sh'", state.path().display());
        assert_eq!(line_3(&mut state), own);
        state.set_visible_path("/mnt/state");
        assert_eq!(
            line_3(&mut state),
            "export PWD='/src'; : '/mnt/state/env.sh'"
        );
        state.set_var("IFS", " \t\n").unwrap();
        assert_eq!(line_3(&mut state), ". '/mnt/state/env.sh'");
    }

    #[test]
    fn invalid_initial_names_are_rejected() {
        let env = vec![("NOT-VALID".to_string(), "1".to_string())];
        let err = StateDir::new(&env, Path::new("/")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid environment variable name `NOT-VALID`: names are letters, digits and `_`, not starting with a digit"
        );
    }
}
