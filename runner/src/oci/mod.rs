//! Daemonless images: OCI layers assembled directly from files, written to an OCI layout, a
//! `docker load` archive, or pushed to any registry, with no container engine.
//!
//! - [`layer`]: a [`layer::LayerTree`] of entries and [`layer::write_layer`], the one-pass
//!   deterministic tar → diff id → parallel gzip/zstd → digest → [`store::Store`] pipeline.
//! - [`lower`]: what the base's layers hold, so that a new layer fits on them as Docker's would
//!   (parent directories keep their mode and owner, links among them are followed).
//! - [`image`]: an [`image::Image`] being assembled (base layers wherever their bytes are, new
//!   layers, configuration) and its manifest.
//! - [`layout`]: OCI image layouts (`oci:DIR[:TAG]`) as bases and outputs; `docker-archive:`.
//! - [`registry`]: a client for the OCI distribution API (auth, HEAD before upload, mounts,
//!   streamed uploads, retries).
//! - [`dockerfile`]: the Dockerfile subset that needs no container (no `RUN`).
//! - [`Session`]: what ties them together for `buildagent image build --engine oci` and
//!   `buildagent image append`.
//!
//! ```
//! use buildagent_runner::oci::{AppendLayer, ConfigEdits, Output, Session, SessionOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let files = tempfile::tempdir()?;
//! std::fs::write(files.path().join("hello.txt"), "hello\n")?;
//! let out = tempfile::tempdir()?;
//! let session = Session::new(SessionOptions {
//!     store: out.path().join("store"),
//!     ..SessionOptions::default()
//! })?;
//! let layers = [AppendLayer { source: files.path().to_path_buf(), dest: "/srv".into() }];
//! let edits = ConfigEdits { cmd: Some(vec!["cat".into(), "/srv/hello.txt".into()]), ..ConfigEdits::default() };
//! let image = session.append("scratch", &layers, &edits).await?;
//! let layout = out.path().join("layout");
//! let written = session.output(&image, &Output::parse(&format!("oci:{}:v1", layout.display()))?).await?;
//! assert!(layout.join("index.json").is_file());
//! assert!(written.digest.as_str().starts_with("sha256:"));
//! # Ok(())
//! # }
//! ```

pub mod compress;
pub mod dockerfile;
pub mod image;
pub mod layer;
pub mod layout;
pub mod lower;
pub mod registry;
pub mod spec;
pub mod store;
mod tarwriter;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

pub use compress::Compression;
pub use image::{BlobOrigin, Finished, Image, ImageLayer, ManifestFormat};
pub use layer::{AddOptions, LayerBlob, LayerTree};
pub use spec::{Digest, Platform};
pub use store::Store;

use registry::{Client, ClientOptions, Reference};

/// Why an image could not be assembled or written.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum OciError {
    /// The user's input is wrong (a flag, a reference, a path): exit status 2.
    #[error("{0}")]
    Invalid(String),
    /// Something the input names does not exist (a base image, a tag): exit status 2.
    #[error("{0}")]
    NotFound(String),
    /// A Dockerfile line this engine cannot build.
    #[error("{file}:{line}: {message}")]
    Dockerfile {
        /// The Dockerfile as given.
        file: String,
        /// The 1-based line of the instruction.
        line: usize,
        /// What is wrong, and what to do.
        message: String,
    },
    /// A local file could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done (`read`, `write`, `create`).
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Arc<io::Error>,
    },
    /// A registry refused a request or could not be reached.
    #[error("{registry}: {message}")]
    Registry {
        /// The registry host.
        registry: String,
        /// The HTTP status, when there was an answer.
        status: Option<u16>,
        /// What went wrong (the registry's error code and message when it gave them).
        message: String,
    },
    /// The registry refused the credentials (or there were none and it needs some).
    #[error("{registry}: authentication failed: {message}")]
    Auth {
        /// The registry host.
        registry: String,
        /// Why.
        message: String,
    },
}

impl OciError {
    /// An I/O error on `path`.
    pub fn io(action: &'static str, path: &Path, source: io::Error) -> OciError {
        OciError::Io {
            action,
            path: path.to_path_buf(),
            source: Arc::new(source),
        }
    }

    /// True when the input is at fault (exit status 2), false for a registry, authentication or
    /// local I/O failure (exit status 3).
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            OciError::Invalid(_) | OciError::NotFound(_) | OciError::Dockerfile { .. }
        )
    }
}

/// What the session reports as it goes.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Progress {
    /// A base image's manifest was read.
    BaseResolved {
        /// The base as given.
        base: String,
        /// Its manifest digest.
        digest: Digest,
    },
    /// A layer was written into the store.
    LayerWritten {
        /// The blob's digest.
        digest: Digest,
        /// The blob's size.
        size: u64,
        /// The tar's size.
        tar_size: u64,
        /// Seconds it took.
        seconds: f64,
    },
    /// A blob was fetched from a registry into the store.
    BlobFetched {
        /// Its digest.
        digest: Digest,
        /// Its size.
        size: u64,
    },
    /// A blob is already in the target repository (no upload).
    BlobExists {
        /// Its digest.
        digest: Digest,
    },
    /// A blob was mounted from another repository of the same registry (no upload).
    BlobMounted {
        /// Its digest.
        digest: Digest,
        /// The source repository.
        from: String,
    },
    /// A blob was uploaded.
    BlobUploaded {
        /// Its digest.
        digest: Digest,
        /// Its size.
        size: u64,
        /// Seconds it took.
        seconds: f64,
    },
    /// A request is tried again.
    Retrying {
        /// The request (`PUT /v2/...`).
        request: String,
        /// The attempt about to be made (2 for the first retry).
        attempt: u32,
        /// Why the previous one failed.
        reason: String,
    },
    /// The manifest was pushed.
    ManifestPushed {
        /// The reference pushed to.
        reference: String,
        /// The manifest digest.
        digest: Digest,
    },
}

/// A progress callback (called from several tasks).
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Options of a [`Session`].
#[derive(Clone)]
pub struct SessionOptions {
    /// The content store (default [`Store::default_dir`]).
    pub store: PathBuf,
    /// The platform of bases chosen from an index, and of `scratch` (default: this machine's).
    pub platform: Platform,
    /// Layer compression (default gzip level 1).
    pub compression: Compression,
    /// Every entry's modification time and the image's creation time (default:
    /// `SOURCE_DATE_EPOCH`, else 0).
    pub mtime: u64,
    /// Compression threads (default: one per core).
    pub workers: usize,
    /// The registry client's options (credentials, retries, parallel uploads).
    pub client: ClientOptions,
    /// Progress reports (default: none).
    pub progress: Option<ProgressFn>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            store: Store::default_dir(),
            platform: Platform::host(),
            compression: Compression::default(),
            mtime: layer::source_date_epoch(),
            workers: compress::workers(),
            client: ClientOptions::default(),
            progress: None,
        }
    }
}

/// A directory added as one layer by `image append`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendLayer {
    /// The directory (its contents are added; the directory itself is not).
    pub source: PathBuf,
    /// Where its contents go in the image (`/` by default).
    pub dest: String,
}

/// Configuration changes of `image append`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigEdits {
    /// The entrypoint (replacing the base's; an empty list clears it).
    pub entrypoint: Option<Vec<String>>,
    /// The command.
    pub cmd: Option<Vec<String>>,
    /// Variables set (replacing a base value of the same name).
    pub env: Vec<(String, String)>,
    /// Labels set.
    pub labels: Vec<(String, String)>,
    /// The working directory.
    pub workdir: Option<String>,
    /// The user.
    pub user: Option<String>,
}

/// Where an image goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Pushed to a registry.
    Registry(String),
    /// An OCI image layout directory, with an optional tag.
    Layout {
        /// The directory.
        dir: PathBuf,
        /// The tag (`org.opencontainers.image.ref.name`).
        tag: Option<String>,
    },
    /// A `docker load` archive.
    DockerArchive {
        /// The file.
        path: PathBuf,
        /// The names `docker load` gives the image.
        tags: Vec<String>,
    },
}

impl Output {
    /// Parses `oci:DIR[:TAG]` or `docker-archive:FILE[:NAME]`.
    pub fn parse(text: &str) -> Result<Output, OciError> {
        if let Some(rest) = text.strip_prefix("oci:") {
            let (dir, tag) = layout::split_layout_ref(rest);
            if dir.as_os_str().is_empty() {
                return Err(OciError::Invalid(format!(
                    "`{text}`: oci: needs a directory"
                )));
            }
            return Ok(Output::Layout { dir, tag });
        }
        if let Some(rest) = text.strip_prefix("docker-archive:") {
            // skopeo's form: `docker-archive:FILE[:NAME]`.
            let (path, name) = match rest.split_once(':') {
                Some((p, n)) => (p, Some(n)),
                None => (rest, None),
            };
            if path.is_empty() {
                return Err(OciError::Invalid(format!(
                    "`{text}`: docker-archive: needs a file"
                )));
            }
            if let Some(n) = name {
                registry::Reference::parse(n)?;
            }
            return Ok(Output::DockerArchive {
                path: PathBuf::from(path),
                tags: name.map(|n| vec![n.to_string()]).unwrap_or_default(),
            });
        }
        Err(OciError::Invalid(format!(
            "`{text}` is not an output: use oci:DIR[:TAG] or docker-archive:FILE (and -t REF to push)"
        )))
    }
}

/// What an output received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// The manifest digest.
    pub digest: Digest,
    /// The manifest's size.
    pub size: u64,
    /// The manifest's media type.
    pub media_type: &'static str,
}

/// Assembles images and writes them: a store, a registry client and the build's settings.
pub struct Session {
    store: Store,
    options: SessionOptions,
    client: Client,
}

impl Session {
    /// Opens the store and makes the registry client.
    pub fn new(options: SessionOptions) -> Result<Session, OciError> {
        let store = Store::open(&options.store)?;
        let mut client_options = options.client.clone();
        if client_options.progress.is_none() {
            client_options.progress = options.progress.clone();
        }
        let client = Client::new(client_options)?;
        Ok(Session {
            store,
            options,
            client,
        })
    }

    /// The content store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The registry client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The options.
    pub fn options(&self) -> &SessionOptions {
        &self.options
    }

    fn report(&self, p: Progress) {
        if let Some(f) = &self.options.progress {
            f(&p);
        }
    }

    /// RFC 3339 of the session's time (history entries, `created`).
    pub fn created(&self) -> String {
        image::rfc3339(self.options.mtime)
    }

    /// The base image `spec`: `scratch`, `oci:DIR[:TAG]`, or a registry reference (its manifest
    /// and configuration are read; the layers stay where they are until an output needs them).
    pub async fn base(&self, spec: &str) -> Result<Image, OciError> {
        self.base_for(spec, &self.options.platform.clone()).await
    }

    /// [`Session::base`] for another platform (`FROM --platform=...`).
    pub async fn base_for(&self, spec: &str, platform: &Platform) -> Result<Image, OciError> {
        if spec == "scratch" {
            return Ok(Image::scratch(platform));
        }
        if let Some(rest) = spec.strip_prefix("oci:") {
            let (dir, tag) = layout::split_layout_ref(rest);
            let image = layout::read(&dir, tag.as_deref(), platform)?;
            return Ok(image);
        }
        let reference = Reference::parse(spec)?;
        let (image, digest) = self.client.pull_image(&reference, platform).await?;
        self.report(Progress::BaseResolved {
            base: spec.to_string(),
            digest,
        });
        Ok(image)
    }

    /// Writes `tree` as a layer into the store (on the blocking pool) and adds it to `image`
    /// with the history entry `created_by`.
    pub async fn add_layer(
        &self,
        image: &mut Image,
        tree: LayerTree,
        created_by: &str,
    ) -> Result<LayerBlob, OciError> {
        let store = self.store.clone();
        let (compression, mtime, workers) = (
            self.options.compression,
            self.options.mtime,
            self.options.workers,
        );
        let started = Instant::now();
        let blob = tokio::task::spawn_blocking(move || {
            layer::write_layer(&tree, &store, compression, mtime, workers)
        })
        .await
        .map_err(|e| OciError::Invalid(format!("the layer writer failed: {e}")))??;
        self.report(Progress::LayerWritten {
            digest: blob.digest.clone(),
            size: blob.size,
            tar_size: blob.tar_size,
            seconds: started.elapsed().as_secs_f64(),
        });
        image.add_layer(&blob, created_by, &self.created());
        Ok(blob)
    }

    /// `image append`: `layers` on top of `base`, then `edits`.
    pub async fn append(
        &self,
        base: &str,
        layers: &[AppendLayer],
        edits: &ConfigEdits,
    ) -> Result<Image, OciError> {
        let mut image = self.base(base).await?;
        for l in layers {
            let meta = std::fs::metadata(&l.source).map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    OciError::Invalid(format!("--layer {}: no such directory", l.source.display()))
                } else {
                    OciError::io("read", &l.source, e)
                }
            })?;
            if !meta.is_dir() {
                return Err(OciError::Invalid(format!(
                    "--layer {}: not a directory",
                    l.source.display()
                )));
            }
            let mut tree = LayerTree::on(Arc::new(self.lower(&image).await?));
            tree.add_contents(&l.source, &l.dest, &AddOptions::default(), &mut |_| true)?;
            let dest = if l.dest.is_empty() { "/" } else { &l.dest };
            let created_by = format!("buildagent image append --layer {}", dest);
            self.add_layer(&mut image, tree, &created_by).await?;
        }
        apply_edits(&mut image, edits);
        image.config.created = Some(self.created());
        Ok(image)
    }

    /// What the layers of `image` hold (their blobs are fetched into the store when they are
    /// only in a registry; each layer's headers are read once and indexed).
    pub async fn lower(&self, image: &Image) -> Result<lower::Lower, OciError> {
        let files = self.layer_files(&image.layers).await?;
        let store = self.store.clone();
        let layers: Vec<(Digest, PathBuf, String)> = image
            .layers
            .iter()
            .zip(files)
            .map(|(l, f)| (l.diff_id.clone(), f, l.descriptor.media_type.clone()))
            .collect();
        tokio::task::spawn_blocking(move || {
            let mut view = lower::Lower::empty();
            for (diff_id, file, media_type) in layers {
                view.apply(lower::layer_entries(&store, &diff_id, &file, &media_type)?);
            }
            Ok(view)
        })
        .await
        .map_err(|e| OciError::Invalid(format!("the layer reader failed: {e}")))?
    }

    /// The local files holding the layers of `finished`, fetching from registries what is
    /// neither in the store nor in a layout.
    pub async fn local_layers(&self, finished: &Finished) -> Result<Vec<PathBuf>, OciError> {
        self.layer_files(&finished.layers).await
    }

    async fn layer_files(&self, layers: &[ImageLayer]) -> Result<Vec<PathBuf>, OciError> {
        let mut files = Vec::new();
        for layer in layers {
            let digest = &layer.descriptor.digest;
            let path = match &layer.origin {
                BlobOrigin::Layout(dir) => dir.join("blobs/sha256").join(digest.hex()),
                _ if self.store.has(digest) => self.store.path(digest),
                BlobOrigin::Store => {
                    return Err(OciError::NotFound(format!(
                        "the blob {digest} is missing from the store {}",
                        self.store.root().display()
                    )))
                }
                BlobOrigin::Registry {
                    registry,
                    repository,
                } => {
                    let size = self
                        .client
                        .fetch_blob(registry, repository, &layer.descriptor, &self.store)
                        .await?;
                    self.report(Progress::BlobFetched {
                        digest: digest.clone(),
                        size,
                    });
                    self.store.path(digest)
                }
            };
            files.push(path);
        }
        Ok(files)
    }

    /// Writes `image` to `output`.
    pub async fn output(&self, image: &Image, output: &Output) -> Result<Written, OciError> {
        let finished = image.finish();
        let written = Written {
            digest: finished.digest.clone(),
            size: finished.manifest.len() as u64,
            media_type: finished.media_type,
        };
        match output {
            Output::Registry(reference) => {
                let reference = Reference::parse(reference)?;
                self.client.push(&reference, &finished, &self.store).await?;
                self.report(Progress::ManifestPushed {
                    reference: reference.to_string(),
                    digest: finished.digest.clone(),
                });
            }
            Output::Layout { dir, tag } => {
                let files = self.local_layers(&finished).await?;
                let (dir, tag) = (dir.clone(), tag.clone());
                tokio::task::spawn_blocking(move || {
                    layout::write(&dir, tag.as_deref(), &finished, &files)
                })
                .await
                .map_err(|e| OciError::Invalid(format!("the layout writer failed: {e}")))??;
            }
            Output::DockerArchive { path, tags } => {
                let files = self.local_layers(&finished).await?;
                let (path, tags) = (path.clone(), tags.clone());
                tokio::task::spawn_blocking(move || {
                    layout::write_docker_archive(&path, &tags, &finished, &files)
                })
                .await
                .map_err(|e| OciError::Invalid(format!("the archive writer failed: {e}")))??;
            }
        }
        Ok(written)
    }
}

/// Applies `image append`'s configuration changes.
pub fn apply_edits(image: &mut Image, edits: &ConfigEdits) {
    let c = image.container();
    if let Some(e) = &edits.entrypoint {
        c.entrypoint = (!e.is_empty()).then(|| e.clone());
    }
    if let Some(cmd) = &edits.cmd {
        c.cmd = (!cmd.is_empty()).then(|| cmd.clone());
    }
    for (k, v) in &edits.env {
        set_env(&mut c.env, k, v);
    }
    for (k, v) in &edits.labels {
        c.labels.insert(k.clone(), v.clone());
    }
    if let Some(w) = &edits.workdir {
        c.working_dir = Some(w.clone());
    }
    if let Some(u) = &edits.user {
        c.user = Some(u.clone());
    }
}

/// Sets `name=value` in an environment list, replacing an earlier value.
pub fn set_env(env: &mut Vec<String>, name: &str, value: &str) {
    let entry = format!("{name}={value}");
    match env
        .iter_mut()
        .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == name)
    {
        Some(e) => *e = entry,
        None => env.push(entry),
    }
}

/// The value of `name` in an environment list.
pub fn get_env<'a>(env: &'a [String], name: &str) -> Option<&'a str> {
    env.iter().find_map(|e| {
        e.split_once('=')
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v)
    })
}
