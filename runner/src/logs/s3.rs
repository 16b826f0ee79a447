//! The S3 sink: the build's whole log as one gzip object, `<prefix>/<build-uuid>.gz`.
//!
//! The log is queued in chunks in a [`LogBuffer`] and cut into lines and compressed by a thread
//! of its own into a local file, so neither runs on the build's time. At the end the file is
//! uploaded ([`crate::s3::S3Client::upload`]: one request, or a multipart upload for a large
//! log). With `stream`, the compressed log is sent while the build runs instead: a multipart
//! upload whose parts ([`crate::s3::PART_SIZE`] each) go as soon as they are full, completed at
//! the end; the object appears when the build ends either way (S3 has no append).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use flate2::write::GzEncoder;
use tokio_util::sync::CancellationToken;

use super::buffer::{LineCutter, LogBuffer};
use super::Delivery;
use crate::s3::{S3Client, PART_SIZE};

/// Where and how the sink writes.
#[derive(Clone, Debug)]
pub struct S3Options {
    /// The bucket.
    pub bucket: String,
    /// The object's key (`<prefix>/<build-uuid>.gz`).
    pub key: String,
    /// Upload parts while the build runs (a multipart upload), not only at the end.
    pub stream: bool,
    /// Bytes of the log kept in memory before spilling to a file (default 8 MiB).
    pub memory_limit: usize,
    /// Where the spill file and the compressed log are kept (default: the temporary directory).
    pub work_dir: PathBuf,
}

impl S3Options {
    /// Options for the object `key` in `bucket`, with the defaults.
    pub fn new(bucket: &str, key: &str) -> S3Options {
        S3Options {
            bucket: bucket.to_string(),
            key: key.to_string(),
            stream: false,
            memory_limit: 8 * 1024 * 1024,
            work_dir: std::env::temp_dir(),
        }
    }

    /// `s3://bucket/key`.
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }
}

#[derive(Default)]
struct Shared {
    deadline: Mutex<Option<Instant>>,
    written: AtomicU64,
    stored: AtomicU64,
    error: Mutex<Option<String>>,
}

impl Shared {
    fn error(&self, message: String) {
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(message);
    }
}

/// A running S3 sink (see the module docs).
pub struct S3Sink {
    url: String,
    buffer: Arc<LogBuffer>,
    shared: Arc<Shared>,
    done: mpsc::Receiver<()>,
}

impl S3Sink {
    /// Starts the sink's thread with `client`.
    pub fn start(client: S3Client, options: S3Options) -> std::io::Result<S3Sink> {
        let buffer = Arc::new(LogBuffer::new(
            options.memory_limit,
            1 << 20,
            &options.work_dir,
        ));
        let shared = Arc::new(Shared::default());
        let named = tempfile::NamedTempFile::new_in(&options.work_dir)?;
        let file = named.reopen()?;
        let (tx, done) = mpsc::channel();
        let url = options.url();
        {
            let buffer = buffer.clone();
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("s3-logs".into())
                .spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => {
                            let mut writer = Writer {
                                client,
                                options,
                                buffer,
                                shared: shared.clone(),
                                gzip: Some(GzEncoder::new(file, flate2::Compression::default())),
                                named,
                                upload_id: None,
                                parts: Vec::new(),
                                sent: 0,
                                cutter: LineCutter::new(usize::MAX),
                            };
                            if let Err(e) = writer.run(&runtime) {
                                shared.error(e);
                            }
                        }
                        Err(e) => shared.error(format!("cannot start the sink's runtime: {e}")),
                    }
                    let _ = tx.send(());
                })?;
        }
        Ok(S3Sink {
            url,
            buffer,
            shared,
            done,
        })
    }

    /// `s3://bucket/key` of the object.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Queues a chunk of the log read at `timestamp` (milliseconds since the Unix epoch); never
    /// waits.
    pub fn push(&self, timestamp: i64, bytes: &[u8]) {
        self.buffer.push(timestamp, bytes);
    }

    /// Compresses and uploads what waits, for at most `timeout`, and says what arrived.
    pub fn finish(self, timeout: Duration) -> Delivery {
        *self
            .shared
            .deadline
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + timeout);
        self.buffer.close();
        let _ = self.done.recv_timeout(timeout + Duration::from_millis(200));
        let pushed = self.buffer.stats().pushed;
        let stored = self.shared.stored.load(Ordering::Relaxed);
        let undelivered = pushed.saturating_sub(stored);
        let error = self
            .shared
            .error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .or_else(|| self.buffer.spill_error());
        Delivery {
            delivered: stored,
            undelivered,
            error: (undelivered > 0).then(|| {
                error.unwrap_or_else(|| format!("not uploaded within {}s", timeout.as_secs_f64()))
            }),
        }
    }
}

struct Writer {
    client: S3Client,
    options: S3Options,
    buffer: Arc<LogBuffer>,
    shared: Arc<Shared>,
    gzip: Option<GzEncoder<File>>,
    /// The compressed log's file (removed when the sink ends).
    named: tempfile::NamedTempFile,
    upload_id: Option<String>,
    parts: Vec<CompletedPart>,
    /// Compressed bytes already sent as parts.
    sent: u64,
    /// Cuts the chunks into lines (as the other sinks see them: invalid UTF-8 replaced).
    cutter: LineCutter,
}

impl Writer {
    fn run(&mut self, runtime: &tokio::runtime::Runtime) -> Result<(), String> {
        let io = |e: std::io::Error| format!("cannot write the compressed log: {e}");
        loop {
            self.buffer.wait(Instant::now() + Duration::from_secs(1));
            let closing = self.buffer.is_closed();
            loop {
                if !self.buffer.take(&mut self.cutter) {
                    if closing && self.buffer.is_empty() {
                        self.cutter.finish();
                    }
                    if self.cutter.is_empty() {
                        break;
                    }
                }
                let gzip = self.gzip.as_mut().expect("open until the end");
                while let Some(entry) = self.cutter.pop() {
                    gzip.write_all(entry.text.as_bytes()).map_err(io)?;
                }
                self.shared
                    .written
                    .store(self.cutter.lines_cut(), Ordering::Relaxed);
                if self.options.stream {
                    let size = gzip.get_ref().metadata().map_err(io)?.len();
                    if size - self.sent >= PART_SIZE {
                        let deadline = self.deadline();
                        let result = runtime.block_on(bounded(deadline, self.send_part(size)));
                        result.ok_or("gave up at the end of the build".to_string())??;
                    }
                }
            }
            if closing && self.buffer.is_empty() && self.cutter.is_empty() {
                break;
            }
        }
        let file = self
            .gzip
            .take()
            .expect("open until the end")
            .finish()
            .map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        let written = self.shared.written.load(Ordering::Relaxed);
        let deadline = self.deadline();
        let result = runtime.block_on(bounded(deadline, self.store(file, size)));
        result.ok_or("gave up at the end of the build".to_string())??;
        self.shared.stored.store(written, Ordering::Relaxed);
        Ok(())
    }

    fn deadline(&self) -> Option<Instant> {
        *self
            .shared
            .deadline
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn error(&self, action: &str, e: impl ProvideErrorMetadata + std::error::Error) -> String {
        let detail = match (e.code(), e.message()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            _ => aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
        };
        format!("cannot {action} {}: {detail}", self.options.url())
    }

    /// Sends the compressed bytes from `self.sent` up to `size` as the next part.
    async fn send_part(&mut self, size: u64) -> Result<(), String> {
        let sdk = self.client.sdk().clone();
        if self.upload_id.is_none() {
            let created = sdk
                .create_multipart_upload()
                .bucket(&self.options.bucket)
                .key(&self.options.key)
                .content_type("application/gzip")
                .send()
                .await
                .map_err(|e| self.error("start uploading", e.into_service_error()))?;
            self.upload_id = created.upload_id().map(str::to_string);
        }
        let upload_id = self
            .upload_id
            .clone()
            .ok_or_else(|| format!("cannot upload {}: no upload id", self.options.url()))?;
        self.upload_part(&upload_id, size, "upload a part of")
            .await?;
        self.sent = size;
        Ok(())
    }

    /// Uploads the compressed bytes from `self.sent` up to `size` as the next part of the
    /// multipart upload `upload_id`, and records it for the completion.
    async fn upload_part(
        &mut self,
        upload_id: &str,
        size: u64,
        action: &str,
    ) -> Result<(), String> {
        let bytes = read_range(self.named.as_file(), self.sent, size - self.sent)
            .map_err(|e| format!("cannot read the compressed log: {e}"))?;
        let number = self.parts.len() as i32 + 1;
        let part = self
            .client
            .sdk()
            .upload_part()
            .bucket(&self.options.bucket)
            .key(&self.options.key)
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| self.error(action, e.into_service_error()))?;
        self.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(part.e_tag().map(str::to_string))
                .build(),
        );
        Ok(())
    }

    /// The finished compressed log: the last part and the completion, or the whole file.
    async fn store(&mut self, file: File, size: u64) -> Result<(), String> {
        if self.upload_id.is_none() {
            drop(file);
            self.client
                .upload(
                    &self.options.bucket,
                    &self.options.key,
                    self.named.path(),
                    &[],
                    false,
                    &CancellationToken::new(),
                )
                .await
                .map_err(|e| e.to_string())?;
            return Ok(());
        }
        let sdk = self.client.sdk().clone();
        if size > self.sent || self.parts.is_empty() {
            drop(file);
            let upload_id = self.upload_id.clone().unwrap_or_default();
            self.upload_part(&upload_id, size, "upload the last part of")
                .await?;
        }
        sdk.complete_multipart_upload()
            .bucket(&self.options.bucket)
            .key(&self.options.key)
            .upload_id(self.upload_id.as_deref().unwrap_or_default())
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(self.parts.clone()))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.error("complete the upload of", e.into_service_error()))?;
        Ok(())
    }
}

/// `future`, unless `deadline` passes first (`None`).
async fn bounded<T>(
    deadline: Option<Instant>,
    future: impl std::future::Future<Output = T>,
) -> Option<T> {
    match deadline {
        None => Some(future.await),
        Some(deadline) => tokio::time::timeout_at(deadline.into(), future).await.ok(),
    }
}

/// `len` bytes of `file` from `offset` (positioned reads: the encoder's offset is untouched).
fn read_range(file: &File, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = vec![0; len as usize];
    file.read_exact_at(&mut bytes, offset)?;
    Ok(bytes)
}
