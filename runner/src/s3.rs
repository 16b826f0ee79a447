//! Amazon S3, or a server that speaks its API, as a place for artifacts and cache entries.
//!
//! The client is configured the way every AWS tool is ([`crate::aws::sdk_config`]): the
//! credentials of the environment, profile, SSO or instance role, the region of `AWS_REGION` (or
//! the profile; the build's region when neither says), and the standard endpoint settings
//! (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_S3`). With an endpoint of its own (MinIO, Ceph, moto, a
//! local proxy) requests use path-style addresses (`http://host/bucket/key`), which such servers
//! expect; against AWS itself, virtual-hosted addresses.
//!
//! Uploads stream from a file: one `PutObject` up to [`MULTIPART_THRESHOLD`], above it a multipart
//! upload with parts of at least [`PART_SIZE`] sent [`PARALLEL_PARTS`] at a time, aborted when it
//! fails or is cancelled. Either way the object appears whole or not at all.
//!
//! Retries: each request is retried by the SDK ([`crate::aws`]: connection errors, timeouts,
//! 5xx, throttling), `429 Too Many Requests` included (after its `Retry-After`, which
//! S3-compatible servers and proxies send; S3 itself throttles with 503 `SlowDown`). A download
//! whose body breaks off (a reset, a short body, a stall) is started again from its first byte,
//! up to [`DOWNLOAD_ATTEMPTS`] times, into the same file, emptied first.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::SystemTime;

#[cfg(feature = "aws")]
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata};
#[cfg(feature = "aws")]
use aws_sdk_s3::primitives::ByteStream;
#[cfg(feature = "aws")]
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
#[cfg(feature = "aws")]
use aws_smithy_types::byte_stream::Length;
#[cfg(feature = "aws")]
use futures::{StreamExt, TryStreamExt};
#[cfg(feature = "aws")]
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Files up to this size are sent in one `PutObject`.
pub const MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;
/// The smallest part of a multipart upload (S3's minimum is 5 MiB).
pub const PART_SIZE: u64 = 8 * 1024 * 1024;
/// How many parts are in flight at once.
pub const PARALLEL_PARTS: usize = 4;
/// S3 allows at most this many parts in one upload.
#[cfg(feature = "aws")]
const MAX_PARTS: u64 = 10_000;
/// How many times a download whose body breaks off is tried in all.
pub const DOWNLOAD_ATTEMPTS: u32 = 4;
/// The wait before the second try of a download, doubled for each further one.
#[cfg(feature = "aws")]
const DOWNLOAD_BACKOFF: std::time::Duration = std::time::Duration::from_millis(500);

/// Classifies `429 Too Many Requests` as throttling, to be retried after its `Retry-After` (at
/// most 30 s) when it has one. The SDK's own classifiers know 429 only with an error code.
#[cfg(feature = "aws")]
#[derive(Debug)]
struct TooManyRequests;

#[cfg(feature = "aws")]
impl aws_sdk_s3::config::retry::ClassifyRetry for TooManyRequests {
    fn classify_retry(
        &self,
        ctx: &aws_sdk_s3::config::interceptors::InterceptorContext,
    ) -> aws_sdk_s3::config::retry::RetryAction {
        use aws_sdk_s3::config::retry::RetryAction;
        let Some(response) = ctx.response() else {
            return RetryAction::NoActionIndicated;
        };
        if response.status().as_u16() != 429 {
            return RetryAction::NoActionIndicated;
        }
        let after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok());
        match after {
            Some(seconds) => RetryAction::retryable_error_with_explicit_delay(
                aws_smithy_types::retry::ErrorKind::ThrottlingError,
                std::time::Duration::from_secs(seconds.min(30)),
            ),
            None => RetryAction::throttling_error(),
        }
    }

    fn name(&self) -> &'static str {
        "TooManyRequests"
    }
}

/// An `s3://bucket/prefix` location.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct S3Url {
    /// The bucket.
    pub bucket: String,
    /// The key prefix, without leading or trailing `/` (may be empty).
    pub prefix: String,
}

impl S3Url {
    /// The key of `name` under the prefix (`prefix/name`, or `name` without a prefix).
    pub fn key(&self, name: &str) -> String {
        join_key(&[&self.prefix, name])
    }
}

/// Joins key segments with `/`, leaving out empty ones and the slashes at their ends.
pub fn join_key(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}

impl FromStr for S3Url {
    type Err = String;

    fn from_str(text: &str) -> Result<S3Url, String> {
        let rest = text
            .strip_prefix("s3://")
            .ok_or_else(|| format!("`{text}` is not an s3:// URL (s3://bucket/prefix)"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b))
            && !bucket.starts_with(['-', '.'])
            && !bucket.ends_with(['-', '.']);
        if !valid_bucket {
            return Err(format!(
                "`{text}`: `{bucket}` is not a bucket name (3 to 63 characters: lower-case \
                 letters, digits, `-` and `.`)"
            ));
        }
        if prefix.split('/').any(|s| s == "." || s == "..") {
            return Err(format!(
                "`{text}`: the prefix must not hold `.` or `..` segments"
            ));
        }
        Ok(S3Url {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        })
    }
}

impl fmt::Display for S3Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// A failed S3 request: what was being done, to which object, and what the service said.
#[derive(Clone, Debug, thiserror::Error)]
#[error("cannot {action} s3://{bucket}/{key}: {message}")]
pub struct S3Error {
    /// `upload`, `download`, `list`...
    pub action: &'static str,
    /// The bucket.
    pub bucket: String,
    /// The key or key prefix.
    pub key: String,
    /// The service's error code and message, or the transport error.
    pub message: String,
    /// The service's error code (`NoSuchBucket`, `AccessDenied`...), when it sent one.
    pub code: Option<String>,
}

impl S3Error {
    #[cfg(feature = "aws")]
    fn new<E>(action: &'static str, bucket: &str, key: &str, error: E) -> S3Error
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        S3Error {
            action,
            bucket: bucket.to_string(),
            key: key.to_string(),
            code: error.code().map(str::to_string),
            message: match (error.code(), error.message()) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code.to_string(),
                _ => DisplayErrorContext(&error).to_string(),
            },
        }
    }

    fn io(action: &'static str, bucket: &str, key: &str, error: impl fmt::Display) -> S3Error {
        S3Error {
            action,
            bucket: bucket.to_string(),
            key: key.to_string(),
            message: error.to_string(),
            code: None,
        }
    }

    #[cfg(feature = "aws")]
    fn cancelled(bucket: &str, key: &str) -> S3Error {
        S3Error::io("upload", bucket, key, "cancelled")
    }

    /// Whether the upload was cancelled (nothing was stored).
    pub fn is_cancelled(&self) -> bool {
        self.code.is_none() && self.message == "cancelled"
    }
}

/// An object found by [`S3Client::head`] or [`S3Client::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was stored.
    pub last_modified: Option<SystemTime>,
}

/// How an upload ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Uploaded {
    /// The object was stored; this many bytes.
    Stored(u64),
    /// `only_new` was asked and the object already existed: nothing was changed.
    AlreadyExists,
}

/// An S3 client (see the module docs for how it is configured).
#[cfg(feature = "aws")]
#[derive(Clone, Debug)]
pub struct S3Client {
    client: aws_sdk_s3::Client,
}

#[cfg(feature = "aws")]
impl S3Client {
    /// A client configured from the environment; `default_region` is used when neither the
    /// environment nor the profile names a region.
    pub async fn from_env(default_region: &str) -> S3Client {
        let shared = crate::aws::sdk_config(default_region).await;
        let own_endpoint = shared.endpoint_url().is_some()
            || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some_and(|v| !v.is_empty());
        let config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(own_endpoint)
            .retry_classifier(TooManyRequests)
            .build();
        S3Client {
            client: aws_sdk_s3::Client::from_conf(config),
        }
    }

    /// A client around an SDK client configured by the embedding program.
    pub fn from_sdk(client: aws_sdk_s3::Client) -> S3Client {
        S3Client { client }
    }

    /// The SDK client inside, for requests this type does not wrap (the log sink's multipart
    /// upload made while the build runs).
    pub fn sdk(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    /// The object at `key`, if there is one.
    pub async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectInfo>, S3Error> {
        match self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectInfo {
                key: key.to_string(),
                size: out.content_length().unwrap_or(0).max(0) as u64,
                last_modified: out
                    .last_modified()
                    .and_then(|t| SystemTime::try_from(*t).ok()),
            })),
            Err(e) => {
                let e = e.into_service_error();
                if e.is_not_found() || e.code() == Some("NotFound") {
                    Ok(None)
                } else {
                    Err(S3Error::new("read", bucket, key, e))
                }
            }
        }
    }

    /// Every object whose key starts with `prefix`, in key order.
    pub async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectInfo>, S3Error> {
        let pages = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let pages: Vec<_> = pages
            .try_collect()
            .await
            .map_err(|e| S3Error::new("list", bucket, prefix, e.into_service_error()))?;
        let mut objects: Vec<ObjectInfo> = pages
            .iter()
            .flat_map(|page| page.contents())
            .filter_map(|o| {
                Some(ObjectInfo {
                    key: o.key()?.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    last_modified: o
                        .last_modified()
                        .and_then(|t| SystemTime::try_from(*t).ok()),
                })
            })
            .collect();
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    /// Writes the object at `key` into `file` (from its start); returns its size.
    pub async fn download(
        &self,
        bucket: &str,
        key: &str,
        file: std::fs::File,
    ) -> Result<u64, S3Error> {
        self.download_version(bucket, key, None, file)
            .await
            .map(|(size, _)| size)
    }

    /// Writes the object at `key` into `file` (from its start), at the object version `version`
    /// (`None`: the latest); returns its size and the version id the service reported (`None`
    /// for a bucket without versioning).
    pub async fn download_version(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
        file: std::fs::File,
    ) -> Result<(u64, Option<String>), S3Error> {
        let mut file = tokio::fs::File::from_std(file);
        let mut attempt = 1;
        loop {
            match self.download_once(bucket, key, version, &mut file).await {
                Ok(done) => return Ok(done),
                Err((_, true)) if attempt < DOWNLOAD_ATTEMPTS => {
                    // The body broke off: empty the file and start again from the first byte.
                    tokio::time::sleep(DOWNLOAD_BACKOFF * 2u32.pow(attempt - 1)).await;
                    attempt += 1;
                    let restart = async {
                        file.set_len(0).await?;
                        file.seek(std::io::SeekFrom::Start(0)).await.map(|_| ())
                    };
                    restart
                        .await
                        .map_err(|e| S3Error::io("download", bucket, key, e))?;
                }
                Err((mut error, cut)) => {
                    if cut {
                        error.message = format!(
                            "{} (the body broke off {DOWNLOAD_ATTEMPTS} times)",
                            error.message
                        );
                    }
                    return Err(error);
                }
            }
        }
    }

    /// One try of a download: the error, and whether it was the body breaking off (worth
    /// another try) rather than the request failing (after the SDK's retries) or the file.
    async fn download_once(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
        file: &mut tokio::fs::File,
    ) -> Result<(u64, Option<String>), (S3Error, bool)> {
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .set_version_id(version.map(str::to_string))
            .send()
            .await
            .map_err(|e| {
                (
                    S3Error::new("download", bucket, key, e.into_service_error()),
                    false,
                )
            })?;
        let version_id = out
            .version_id()
            .filter(|v| !v.is_empty() && *v != "null")
            .map(str::to_string);
        let expected = out.content_length().filter(|n| *n >= 0).map(|n| n as u64);
        let mut body = out.body;
        let mut file = tokio::io::BufWriter::with_capacity(1 << 20, file);
        let mut size = 0u64;
        let written = |e: std::io::Error| (S3Error::io("download", bucket, key, e), false);
        loop {
            let chunk = match body.try_next().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => return Err((S3Error::io("download", bucket, key, e), true)),
            };
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(written)?;
        }
        file.flush().await.map_err(written)?;
        if let Some(expected) = expected.filter(|n| *n != size) {
            return Err((
                S3Error::io(
                    "download",
                    bucket,
                    key,
                    format!("the body ended after {size} of {expected} bytes"),
                ),
                true,
            ));
        }
        Ok((size, version_id))
    }

    /// Deletes the object at `key` (no error when there is none).
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<(), S3Error> {
        self.client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| S3Error::new("delete", bucket, key, e.into_service_error()))?;
        Ok(())
    }

    /// Uploads the file at `path` to `key` with `metadata` (`x-amz-meta-<name>` headers). With
    /// `only_new`, an object that already exists is left alone ([`Uploaded::AlreadyExists`]): the
    /// request is conditional (`If-None-Match: *`), so two builds saving the same key at once
    /// cannot replace each other's object. `cancel` ends the upload, aborting a multipart one.
    pub async fn upload(
        &self,
        bucket: &str,
        key: &str,
        path: &Path,
        metadata: &[(&str, &str)],
        only_new: bool,
        cancel: &CancellationToken,
    ) -> Result<Uploaded, S3Error> {
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|e| S3Error::io("upload", bucket, key, format!("{}: {e}", path.display())))?
            .len();
        if size <= MULTIPART_THRESHOLD {
            tokio::select! {
                result = self.put(bucket, key, path, size, metadata, only_new) => result,
                () = cancel.cancelled() => Err(S3Error::cancelled(bucket, key)),
            }
        } else {
            // It watches `cancel` itself: dropping it from outside would skip the abort.
            self.put_multipart(bucket, key, path, size, metadata, only_new, cancel)
                .await
        }
    }

    async fn put(
        &self,
        bucket: &str,
        key: &str,
        path: &Path,
        size: u64,
        metadata: &[(&str, &str)],
        only_new: bool,
    ) -> Result<Uploaded, S3Error> {
        let body = ByteStream::read_from()
            .path(path)
            .length(Length::Exact(size))
            .build()
            .await
            .map_err(|e| S3Error::io("upload", bucket, key, e))?;
        let mut request = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_length(size as i64)
            .body(body);
        for (name, value) in metadata {
            request = request.metadata(*name, *value);
        }
        if only_new {
            request = request.if_none_match("*");
        }
        match request.send().await {
            Ok(_) => Ok(Uploaded::Stored(size)),
            Err(e) => refused_or_failed(e.into_service_error(), only_new, bucket, key),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn put_multipart(
        &self,
        bucket: &str,
        key: &str,
        path: &Path,
        size: u64,
        metadata: &[(&str, &str)],
        only_new: bool,
        cancel: &CancellationToken,
    ) -> Result<Uploaded, S3Error> {
        let mut request = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key);
        for (name, value) in metadata {
            request = request.metadata(*name, *value);
        }
        let created = request
            .send()
            .await
            .map_err(|e| S3Error::new("upload", bucket, key, e.into_service_error()))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| S3Error::io("upload", bucket, key, "the server sent no upload id"))?
            .to_string();
        let parts = async {
            let part_size = part_size(size);
            let count = size.div_ceil(part_size);
            let mut parts: Vec<CompletedPart> = futures::stream::iter(0..count)
                .map(|index| {
                    let offset = index * part_size;
                    let length = part_size.min(size - offset);
                    self.put_part(bucket, key, &upload_id, path, index, offset, length)
                })
                .buffer_unordered(PARALLEL_PARTS)
                .try_collect()
                .await?;
            parts.sort_by_key(|p| p.part_number());
            let mut complete = self
                .client
                .complete_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                );
            if only_new {
                complete = complete.if_none_match("*");
            }
            match complete.send().await {
                Ok(_) => Ok(Uploaded::Stored(size)),
                Err(e) => refused_or_failed(e.into_service_error(), only_new, bucket, key),
            }
        };
        let result = tokio::select! {
            result = parts => result,
            () = cancel.cancelled() => Err(S3Error::cancelled(bucket, key)),
        };
        if !matches!(result, Ok(Uploaded::Stored(_))) {
            // Parts of an upload that is never completed are kept (and billed) until aborted.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn put_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        path: &Path,
        index: u64,
        offset: u64,
        length: u64,
    ) -> Result<CompletedPart, S3Error> {
        let number = i32::try_from(index + 1).unwrap_or(i32::MAX);
        let body = ByteStream::read_from()
            .path(path)
            .offset(offset)
            .length(Length::Exact(length))
            .build()
            .await
            .map_err(|e| S3Error::io("upload", bucket, key, e))?;
        let out = self
            .client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .content_length(length as i64)
            .body(body)
            .send()
            .await
            .map_err(|e| S3Error::new("upload", bucket, key, e.into_service_error()))?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(out.e_tag().map(str::to_string))
            .build())
    }
}

/// The part size for a file of `size` bytes: [`PART_SIZE`], or larger (whole MiB) when the file
/// would need more than S3's 10,000 parts.
#[cfg(feature = "aws")]
fn part_size(size: u64) -> u64 {
    const MIB: u64 = 1024 * 1024;
    PART_SIZE.max(size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB)
}

/// A failed write: [`Uploaded::AlreadyExists`] when it was conditional (`only_new`) and the
/// object exists, else the error.
#[cfg(feature = "aws")]
fn refused_or_failed<E>(
    error: E,
    only_new: bool,
    bucket: &str,
    key: &str,
) -> Result<Uploaded, S3Error>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let exists = matches!(
        error.code(),
        Some("PreconditionFailed") | Some("ConditionalRequestConflict")
    );
    if only_new && exists {
        Ok(Uploaded::AlreadyExists)
    } else {
        Err(S3Error::new("upload", bucket, key, error))
    }
}

/// Without the `aws` feature there is no S3 client: every request fails, saying so, and nothing
/// is read or written.
#[cfg(not(feature = "aws"))]
#[derive(Clone, Debug)]
pub struct S3Client {
    _private: (),
}

#[cfg(not(feature = "aws"))]
impl S3Client {
    const NO_AWS: &str = "this build of buildagent-runner has no AWS support (its `aws` feature)";

    /// A client whose every request fails (no `aws` feature).
    pub async fn from_env(_default_region: &str) -> S3Client {
        S3Client { _private: () }
    }

    /// Fails: no `aws` feature.
    pub async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectInfo>, S3Error> {
        Err(S3Error::io("read", bucket, key, Self::NO_AWS))
    }

    /// Fails: no `aws` feature.
    pub async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectInfo>, S3Error> {
        Err(S3Error::io("list", bucket, prefix, Self::NO_AWS))
    }

    /// Fails: no `aws` feature.
    pub async fn download(
        &self,
        bucket: &str,
        key: &str,
        _file: std::fs::File,
    ) -> Result<u64, S3Error> {
        Err(S3Error::io("download", bucket, key, Self::NO_AWS))
    }

    /// Fails: no `aws` feature.
    pub async fn download_version(
        &self,
        bucket: &str,
        key: &str,
        _version: Option<&str>,
        _file: std::fs::File,
    ) -> Result<(u64, Option<String>), S3Error> {
        Err(S3Error::io("download", bucket, key, Self::NO_AWS))
    }

    /// Fails: no `aws` feature.
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<(), S3Error> {
        Err(S3Error::io("delete", bucket, key, Self::NO_AWS))
    }

    /// Fails: no `aws` feature.
    pub async fn upload(
        &self,
        bucket: &str,
        key: &str,
        _path: &Path,
        _metadata: &[(&str, &str)],
        _only_new: bool,
        _cancel: &CancellationToken,
    ) -> Result<Uploaded, S3Error> {
        Err(S3Error::io("upload", bucket, key, Self::NO_AWS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_and_checked() {
        let url: S3Url = "s3://my-bucket/team/builds/".parse().unwrap();
        assert_eq!(url.bucket, "my-bucket");
        assert_eq!(url.prefix, "team/builds");
        assert_eq!(url.key("a.zip"), "team/builds/a.zip");
        assert_eq!(url.to_string(), "s3://my-bucket/team/builds");
        let bare: S3Url = "s3://bucket".parse().unwrap();
        assert_eq!(bare.prefix, "");
        assert_eq!(bare.key("a.zip"), "a.zip");
        for bad in [
            "bucket/x",
            "s3://",
            "s3://Upper/x",
            "s3://ab",
            "s3://b-ucket/../x",
        ] {
            assert!(bad.parse::<S3Url>().is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_join_without_empty_segments() {
        assert_eq!(join_key(&["", "team/", "/id", "a.zip"]), "team/id/a.zip");
        assert_eq!(join_key(&["", ""]), "");
    }

    #[cfg(feature = "aws")]
    #[test]
    fn parts_stay_under_the_limit() {
        assert_eq!(part_size(20 * 1024 * 1024), PART_SIZE);
        let huge = 200 * 1024 * 1024 * 1024;
        let part = part_size(huge);
        assert!(huge.div_ceil(part) <= MAX_PARTS);
        assert_eq!(part % (1024 * 1024), 0);
    }
}
