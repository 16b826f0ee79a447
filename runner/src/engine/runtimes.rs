//! INSTALL's `runtime-versions`, from the build image's own catalogue
//! ([`RUNTIMES_FILE`], read where the commands run: in the container with `-i`, on this machine
//! otherwise).
//!
//! Every entry is resolved before anything is installed (an unknown runtime or version fails the
//! phase at once, with what the image offers); a version that `requires` another runtime's
//! version gets it installed first when the buildspec does not select that runtime, and fails
//! when it selects another version. Each runtime's commands then run like the phase's own, with
//! the same shell, environment, `run-as` user and per-command state, before the phase's
//! `commands`. CodeBuild's current agents do this at the end of DOWNLOAD_SOURCE; older ones (and
//! this agent) at the top of INSTALL, where a failure is INSTALL's and `finally` still runs.

use std::path::Path;

use buildagent_spec::runtimes::{RuntimeCatalog, Selection, RUNTIMES_FILE};
use buildagent_spec::{PhaseName, Spanned};

use super::{Attempt, PhaseRun};
use crate::command::{ScriptMode, StateDir};
use crate::events::{Block, Event, EventKind, PhaseContext, PhaseStatus};
use crate::executor::RunAs;

/// The warning when the image has no catalogue (CodeBuild's text, and the file it looked for).
const NOT_SUPPORTED: &str =
    "Skipping install of runtimes. Runtime version selection is not supported by this build image";

impl Attempt<'_> {
    /// Installs the INSTALL phase's `runtime-versions`. Returns how the phase failed, if it did.
    pub(super) async fn install_runtimes(
        &mut self,
        report: &mut (impl FnMut(Event) + Send),
        state: &mut StateDir,
        shell: &Path,
        mode: ScriptMode,
        user: Option<&RunAs>,
    ) -> Option<PhaseRun> {
        let wanted: Vec<(String, String)> = self
            .build
            .spec
            .phase(PhaseName::Install)?
            .runtime_versions
            .iter()
            .map(|r| (r.runtime.value.clone(), r.version.value.clone()))
            .collect();
        if wanted.is_empty() {
            return None;
        }
        let text = match self
            .build
            .executor
            .read_file(Path::new(RUNTIMES_FILE))
            .await
        {
            Ok(Some(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
            Ok(None) => {
                self.emit(
                    report,
                    EventKind::Warning {
                        message: format!("{NOT_SUPPORTED} (it has no {RUNTIMES_FILE})"),
                    },
                );
                return None;
            }
            Err(e) => {
                return Some(failure(
                    "CLIENT_ERROR",
                    format!("cannot read the build image's {RUNTIMES_FILE}: {e}"),
                ))
            }
        };
        let catalog = match RuntimeCatalog::parse(&text) {
            Ok(catalog) => catalog,
            Err(e) => {
                return Some(failure(
                    "CLIENT_ERROR",
                    format!("the build image's {RUNTIMES_FILE} cannot be read: {e}"),
                ))
            }
        };
        let mut selected = Vec::new();
        for (runtime, version) in &wanted {
            // Versions are shell-expanded (`nodejs: $NODE_VERSION`), as CodeBuild does.
            let version = if version.contains('$') {
                match self.expand_with_shell(state, shell, version).await {
                    Ok(v) => v,
                    Err(e) => {
                        return Some(failure(
                            "YAML_FILE_ERROR",
                            format!("cannot expand the version `{version}` of {runtime}: {e}"),
                        ))
                    }
                }
            } else {
                version.clone()
            };
            match catalog.select(runtime, &version) {
                Ok(selection) => selected.push(selection),
                Err(e) => return Some(failure("YAML_FILE_ERROR", e.to_string())),
            }
        }
        let mut plan: Vec<Selection> = Vec::new();
        for selection in &selected {
            for (needed, versions) in &selection.requires {
                match selected.iter().find(|s| &s.runtime == needed) {
                    Some(other) if versions.contains(&other.version) => {}
                    Some(other) => {
                        return Some(failure(
                            "YAML_FILE_ERROR",
                            format!(
                                "runtime '{}' version '{}' requires {needed} {}, not '{}'",
                                selection.runtime,
                                selection.version,
                                versions.join(" or "),
                                other.version
                            ),
                        ))
                    }
                    None if plan.iter().any(|p| &p.runtime == needed) => {}
                    None => {
                        let first = versions.first().map(String::as_str).unwrap_or("latest");
                        match catalog.select(needed, first) {
                            Ok(s) => plan.push(s),
                            Err(e) => return Some(failure("YAML_FILE_ERROR", e.to_string())),
                        }
                    }
                }
            }
        }
        plan.extend(selected);
        for selection in plan {
            let message = format!(
                "Selecting '{}' runtime version '{}' based on manual selections...",
                selection.runtime, selection.version
            );
            let message = self.masker.mask_str(&message);
            self.emit(report, EventKind::Info { message });
            // A `default` entry's commands read the version from `$VERSION`; the build's own
            // `VERSION`, if any, is put back afterwards.
            let previous = state.env().get_lossy("VERSION");
            if let Some(version) = &selection.custom_version {
                if let Err(e) = state.set_var("VERSION", version) {
                    return Some(failure("CLIENT_ERROR", format!("cannot set VERSION: {e}")));
                }
            }
            for (index, command) in selection.commands.iter().enumerate() {
                let command = Spanned::synthetic(command.clone());
                let (outcome, tail) = self
                    .run_command(
                        report,
                        state,
                        shell,
                        mode,
                        user,
                        PhaseName::Install,
                        Block::Runtime,
                        index,
                        &command,
                    )
                    .await;
                if let Some(failed) = self.command_failure(&command, outcome, &tail) {
                    return Some(failed);
                }
            }
            if selection.custom_version.is_some() {
                let restored = match &previous {
                    Some(value) => state.set_var("VERSION", value),
                    None => state.unset_var("VERSION"),
                };
                if let Err(e) = restored {
                    self.emit(
                        report,
                        EventKind::Warning {
                            message: format!("cannot restore VERSION: {e}"),
                        },
                    );
                }
            }
        }
        None
    }
}

/// INSTALL failed before any command ran.
fn failure(code: &str, message: String) -> PhaseRun {
    PhaseRun {
        status: PhaseStatus::Failed,
        failure_text: message.clone(),
        context: Some(PhaseContext {
            code: code.into(),
            message,
        }),
    }
}
