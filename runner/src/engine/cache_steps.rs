//! The build's `cache`: restored at the end of DOWNLOAD_SOURCE, saved after POST_BUILD (see
//! [`crate::cache`] for entries and the store). Nothing here fails the build: a problem is a
//! warning and, on restore, a miss.

use std::io::Write;
use std::path::Path;

use tokio_util::sync::CancellationToken;

use buildagent_spec::{CacheAction, Spanned};

use super::Attempt;
use crate::artifacts::collect::expand_vars;
use crate::cache::{self, CachePaths, CacheStore, LocalStore, S3Store, Slot};
use crate::command::StateDir;
use crate::events::{Event, EventKind};
use crate::location::Location;
use crate::s3::S3Client;

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

    /// Expands `key` with the build's shell and checks it.
    async fn expand_key(
        &mut self,
        state: &mut StateDir,
        shell: &Path,
        key: &Spanned<String>,
    ) -> Result<String, String> {
        let expanded = self
            .expand_with_shell(state, shell, &key.value)
            .await
            .map_err(|e| format!("cannot expand cache key {:?}: {e}", key.value))?;
        cache::check_key(&key.value, &expanded)?;
        Ok(expanded)
    }

    /// The cached paths (variables expanded with the build's environment), logged as CodeBuild
    /// does; `None` (with the log line saying why) when there is nothing to do for `step`.
    fn cache_paths(
        &self,
        report: &mut (impl FnMut(Event) + Send),
        state: &StateDir,
        step: Step,
    ) -> Option<(CachePaths, String, Location)> {
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
        let Some(location) = self.build.options.cache.clone() else {
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
                if let Some(dir) = location.dir() {
                    paths.skip(dir);
                }
                Some((paths, cache::version(&expanded), location))
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
        let Some((paths, version, location)) = self.cache_paths(report, state, Step::Restore)
        else {
            return;
        };
        let spec = self.build.spec.cache.clone().unwrap_or_default();
        let remote = matches!(location, Location::S3(_));
        let store = self.cache_store(location).await;
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
                found = store.get(&slot(None)).await.unwrap_or_else(|e| {
                    self.warn(report, format!("cannot read the cache store: {e}"));
                    None
                });
            }
            Some(key) => {
                match self.expand_key(state, shell, key).await {
                    Ok(key) => {
                        tried.push(key.clone());
                        found = store.get(&slot(Some(key))).await.unwrap_or_else(|e| {
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
                        .await
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
        let restored = async {
            if remote {
                self.info(report, "Downloading S3 cache...".into());
            }
            let fetched = store.fetch(&entry).await?;
            self.info(report, "Unarchiving cache...".into());
            let job = tokio::task::spawn_blocking(move || {
                let open = || std::fs::File::open(fetched.path()).map(std::io::BufReader::new);
                cache::archive::verify(&paths, open()?)?;
                cache::archive::unpack(&paths, open()?)
            });
            job.await.map_err(std::io::Error::other).and_then(|r| r)
        };
        match restored.await {
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

    /// The store at `location`.
    async fn cache_store(&self, location: Location) -> Box<dyn CacheStore> {
        match location {
            Location::Dir(dir) => Box::new(LocalStore::new(dir)),
            Location::S3(url) => {
                let client = S3Client::from_env(&self.build.options.identity.region).await;
                Box::new(S3Store::new(client, url))
            }
        }
    }

    /// Saves the cached paths after POST_BUILD: a keyed entry once, the unkeyed one each build.
    /// A stop or timeout while it runs abandons the save, leaving the store as it was.
    pub(super) async fn save_cache(
        &mut self,
        report: &mut (impl FnMut(Event) + Send),
        state: &mut StateDir,
        shell: &Path,
    ) {
        let Some((paths, version, location)) = self.cache_paths(report, state, Step::Save) else {
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
        let remote = matches!(location, Location::S3(_));
        let store = self.cache_store(location).await;
        let slot = Slot {
            project: self.build.options.identity.project.clone(),
            version,
            key: key.clone(),
        };
        if key.is_some() && matches!(store.get(&slot).await, Ok(Some(_))) {
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
        let cancel = CancellationToken::new();
        let stop = self.stop;
        let saved = async {
            let file = store.staging(&slot)?;
            let pack = {
                let cancel = cancel.clone();
                tokio::task::spawn_blocking(move || {
                    let mut notes = Vec::new();
                    let stats = {
                        let mut out = std::io::BufWriter::with_capacity(
                            1 << 20,
                            Cancellable {
                                inner: file.as_file(),
                                cancel: &cancel,
                            },
                        );
                        let stats = cache::archive::pack(&paths, &mut out, &mut |n| notes.push(n))?;
                        out.flush()?;
                        stats
                    };
                    Ok::<_, std::io::Error>((file, stats, notes))
                })
            };
            let (file, stats, notes) = pack.await.map_err(std::io::Error::other)??;
            if remote {
                self.info(report, "Uploading S3 cache...".into());
            }
            let saved = store.put(&slot, file, &cancel).await?;
            let location = store.location(&slot);
            Ok::<_, std::io::Error>((saved, stats, notes, location))
        };
        // The packer and the upload see the cancellation and give up; the store keeps nothing.
        let (result, stopped) = stop.finish(saved, || cancel.cancel()).await;
        match result {
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
            Err(_) if stopped.is_some() => {
                self.warn(report, "cache not saved: the build was stopped".into());
            }
            Err(e) => {
                // Name the entry: a full disk or a refused bucket is then found at once.
                let entry = self.masker.mask_str(&store.location(&slot));
                self.warn(report, format!("cannot save the cache to {entry}: {e}"));
            }
        }
    }
}

/// A writer that fails once `cancel` fires, so that packing a cache entry stops promptly.
struct Cancellable<'a, W> {
    inner: W,
    cancel: &'a CancellationToken,
}

impl<W: Write> Write for Cancellable<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.cancel.is_cancelled() {
            // Not `Interrupted`: writers retry on that.
            return Err(std::io::Error::other("cancelled"));
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
