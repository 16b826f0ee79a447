//! The build's `cache`: restored at the end of DOWNLOAD_SOURCE, saved after POST_BUILD (see
//! [`crate::cache`] for entries and the store). Nothing here fails the build: a problem is a
//! warning and, on restore, a miss.

use std::path::{Path, PathBuf};

use buildagent_spec::{CacheAction, Spanned};

use super::Attempt;
use crate::artifacts::collect::expand_vars;
use crate::cache::{self, CachePaths, CacheStore, LocalStore, Slot};
use crate::command::{ScriptMode, StateDir};
use crate::events::{Event, EventKind};
use crate::executor::{CapturedOutput, CommandControl};

/// When a cache step runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    Restore,
    Save,
}

impl Attempt<'_> {
    fn info(&self, report: &mut (impl FnMut(Event) + Send), message: String) {
        let message = self.masker.mask_str(&message);
        self.emit(report, EventKind::Info { message });
    }

    fn warn(&self, report: &mut (impl FnMut(Event) + Send), message: String) {
        let message = self.masker.mask_str(&message);
        self.emit(report, EventKind::Warning { message });
    }

    /// Expands `key` with the build's shell and environment (`printf %s "<key>"` run like a
    /// command, so variables and `$(...)` work) and checks it.
    async fn expand_key(
        &mut self,
        state: &mut StateDir,
        shell: &Path,
        key: &Spanned<String>,
    ) -> Result<String, String> {
        let mode = match self.build.spec.version {
            buildagent_spec::Version::V0_1 => ScriptMode::V01,
            buildagent_spec::Version::V0_2 => ScriptMode::V02,
        };
        let written = &key.value;
        let script = format!("printf %s \"{written}\"");
        let spec = state
            .prepare(&script, mode, shell, None)
            .map_err(|e| format!("cannot expand cache key {written:?}: {e}"))?;
        let control = CommandControl::new(
            self.stop.clone(),
            self.kill_now.clone(),
            self.build.options.grace,
        );
        let mut out = CapturedOutput::default();
        let outcome = self.build.executor.run(&spec, control, &mut out).await;
        if mode == ScriptMode::V02 {
            let _ = state.finish();
        }
        match outcome {
            Ok(outcome) if outcome.is_success() => {}
            Ok(outcome) => {
                return Err(format!(
                    "cannot expand cache key {written:?}: {outcome:?}: {}",
                    out.stderr_str().trim()
                ))
            }
            Err(e) => return Err(format!("cannot expand cache key {written:?}: {e}")),
        }
        let expanded = out.stdout_str();
        cache::check_key(written, &expanded)?;
        Ok(expanded)
    }

    /// The cached paths (variables expanded with the build's environment), logged as CodeBuild
    /// does; `None` (with the log line saying why) when there is nothing to do for `step`.
    fn cache_paths(
        &self,
        report: &mut (impl FnMut(Event) + Send),
        state: &StateDir,
        step: Step,
    ) -> Option<(CachePaths, String, PathBuf)> {
        let Some(spec) = self.build.spec.cache.as_ref() else {
            if step == Step::Restore {
                self.info(report, "Cache is not defined in the buildspec".into());
            }
            return None;
        };
        if spec.paths.is_empty() {
            if step == Step::Restore {
                self.info(
                    report,
                    "Skip cache due to: no paths specified to be cached".into(),
                );
            }
            return None;
        }
        let Some(dir) = self.build.options.cache_dir.clone() else {
            if step == Step::Restore {
                self.info(
                    report,
                    "Skip cache due to: caching is disabled (--no-cache)".into(),
                );
            }
            return None;
        };
        let skip = match (step, spec.action.as_ref().map(|a| a.value)) {
            (Step::Restore, Some(CacheAction::Save)) => Some("action: save never restores"),
            (Step::Save, Some(CacheAction::Restore)) => Some("action: restore never saves"),
            _ => None,
        };
        if let Some(why) = skip {
            self.info(report, format!("Skip cache due to: {why}"));
            return None;
        }
        let env = state.env();
        let lookup = |name: &str| env.get_lossy(name);
        let expanded: Vec<String> = spec
            .paths
            .iter()
            .map(|p| expand_vars(&p.value, &lookup))
            .collect();
        if step == Step::Restore {
            for path in &expanded {
                self.info(report, format!("Expanded cache path {path}"));
            }
        }
        match CachePaths::new(&self.build.options.source_dir, &expanded) {
            Ok(mut paths) => {
                paths.skip(&dir);
                Some((paths, cache::version(&expanded), dir))
            }
            Err(e) => {
                self.warn(report, format!("Skip cache due to: {e}"));
                None
            }
        }
    }

    /// Restores the newest matching entry: the key, then each fallback key as a prefix, or the
    /// project's one entry without a key.
    pub(super) async fn restore_cache(
        &mut self,
        report: &mut (impl FnMut(Event) + Send),
        state: &mut StateDir,
        shell: &Path,
    ) {
        let Some((paths, version, dir)) = self.cache_paths(report, state, Step::Restore) else {
            return;
        };
        let spec = self.build.spec.cache.clone().unwrap_or_default();
        let store = LocalStore::new(dir);
        let slot = |key: Option<String>| Slot {
            project: self.build.options.identity.project.clone(),
            version: version.clone(),
            key,
        };
        let mut tried = Vec::new();
        let mut found = None;
        match &spec.key {
            None => {
                tried.push("(no key)".to_string());
                found = store.get(&slot(None)).unwrap_or_else(|e| {
                    self.warn(report, format!("cannot read the cache store: {e}"));
                    None
                });
            }
            Some(key) => {
                match self.expand_key(state, shell, key).await {
                    Ok(key) => {
                        tried.push(key.clone());
                        found = store.get(&slot(Some(key))).unwrap_or_else(|e| {
                            self.warn(report, format!("cannot read the cache store: {e}"));
                            None
                        });
                    }
                    Err(e) => self.warn(report, e),
                }
                for fallback in &spec.fallback_keys {
                    if found.is_some() {
                        break;
                    }
                    let prefix = match self.expand_key(state, shell, fallback).await {
                        Ok(prefix) => prefix,
                        Err(e) => {
                            self.warn(report, e);
                            continue;
                        }
                    };
                    tried.push(format!("{prefix}*"));
                    found = store
                        .newest_with_prefix(&slot(None), &prefix)
                        .unwrap_or_else(|e| {
                            self.warn(report, format!("cannot read the cache store: {e}"));
                            None
                        });
                }
            }
        }
        let Some(entry) = found else {
            self.emit(
                report,
                EventKind::CacheMissed {
                    keys: tried.iter().map(|k| self.masker.mask_str(k)).collect(),
                },
            );
            return;
        };
        self.info(report, format!("Restoring cache from {}", entry.location));
        self.info(report, "Unarchiving cache...".into());
        let job = {
            let entry = entry.clone();
            tokio::task::spawn_blocking(move || {
                cache::archive::verify(&paths, store.open(&entry)?)?;
                cache::archive::unpack(&paths, store.open(&entry)?)
            })
        };
        match job.await.map_err(std::io::Error::other).and_then(|r| r) {
            Ok(stats) => self.emit(
                report,
                EventKind::CacheRestored {
                    key: entry.key.map(|k| self.masker.mask_str(&k)),
                    entry: self.masker.mask_str(&entry.location),
                    files: stats.files,
                    bytes: stats.bytes,
                },
            ),
            Err(e) => {
                self.warn(
                    report,
                    format!("cannot restore the cache entry {}: {e}", entry.location),
                );
                self.emit(
                    report,
                    EventKind::CacheMissed {
                        keys: tried.iter().map(|k| self.masker.mask_str(k)).collect(),
                    },
                );
            }
        }
    }

    /// Saves the cached paths after POST_BUILD: a keyed entry once, the unkeyed one each build.
    pub(super) async fn save_cache(
        &mut self,
        report: &mut (impl FnMut(Event) + Send),
        state: &mut StateDir,
        shell: &Path,
    ) {
        let Some((paths, version, dir)) = self.cache_paths(report, state, Step::Save) else {
            return;
        };
        let spec = self.build.spec.cache.clone().unwrap_or_default();
        let key = match &spec.key {
            None => None,
            Some(key) => match self.expand_key(state, shell, key).await {
                Ok(key) => Some(key),
                Err(e) => {
                    self.warn(report, format!("cache not saved: {e}"));
                    return;
                }
            },
        };
        let store = LocalStore::new(dir);
        let slot = Slot {
            project: self.build.options.identity.project.clone(),
            version,
            key: key.clone(),
        };
        if key.is_some() && matches!(store.get(&slot), Ok(Some(_))) {
            self.info(
                report,
                format!(
                    "Cache entry {} already exists: not saved again",
                    key.as_deref().unwrap_or_default()
                ),
            );
            return;
        }
        self.info(report, "Archiving cache...".into());
        let job = tokio::task::spawn_blocking(move || {
            let mut stats = cache::Stats::default();
            let mut notes = Vec::new();
            let saved = store.put(&slot, &mut |out| {
                stats = cache::archive::pack(&paths, out, &mut |n| notes.push(n))?;
                Ok(())
            })?;
            let location = store.get(&slot)?.map(|e| e.location).unwrap_or_default();
            Ok::<_, std::io::Error>((saved, stats, notes, location))
        });
        match job.await.map_err(std::io::Error::other).and_then(|r| r) {
            Ok((saved, stats, notes, location)) => {
                for note in notes {
                    self.warn(report, note);
                }
                if saved {
                    self.emit(
                        report,
                        EventKind::CacheSaved {
                            key: key.map(|k| self.masker.mask_str(&k)),
                            entry: self.masker.mask_str(&location),
                            files: stats.files,
                            bytes: stats.bytes,
                        },
                    );
                } else {
                    self.info(report, "Cache entry already exists: not saved again".into());
                }
            }
            Err(e) => self.warn(report, format!("cannot save the cache: {e}")),
        }
    }
}
