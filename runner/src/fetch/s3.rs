//! S3 sources: a zip (`s3://bucket/key.zip`, at an object version when one is asked), extracted
//! with [`super::zip`], or a folder (`s3://bucket/prefix/`), every object under the prefix
//! downloaded to the same relative path. The client is the agent's one S3 client
//! ([`crate::s3::S3Client`], configured by [`crate::aws`]).

use std::path::{Path, PathBuf};

use super::zip::{self, ZipError};
use super::{Fetched, SourceLocation};
use crate::executor::StopRequest;
use crate::s3::{S3Client, S3Error};

/// Why an S3 source could not be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum S3SourceError {
    /// The service refused or failed.
    #[error(transparent)]
    S3(#[from] S3Error),
    /// The zip could not be extracted.
    #[error("{key}: {source}")]
    Zip {
        /// The zip's key.
        key: String,
        /// The cause.
        #[source]
        source: ZipError,
    },
    /// A folder holds no object.
    #[error("no object under s3://{bucket}/{prefix}/")]
    EmptyFolder {
        /// The bucket.
        bucket: String,
        /// The prefix.
        prefix: String,
    },
    /// A key that cannot be a file below the source directory.
    #[error("the object `{key}` would be written outside the source directory")]
    Escapes {
        /// The key.
        key: String,
    },
    /// A folder was given a version.
    #[error("a source version (object version id) applies to a zip, not to a folder")]
    VersionOfFolder,
    /// A local file could not be written.
    #[error("cannot write `{}`: {message}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        message: String,
    },
    /// The build was stopped.
    #[error("stopped")]
    Stopped,
}

/// Fetches an S3 zip or folder into the new directory `dest`.
pub async fn fetch(
    location: &SourceLocation,
    version: Option<&str>,
    region: &str,
    dest: &Path,
    stop: &StopRequest,
    info: &mut (dyn FnMut(String) + Send),
) -> Result<Fetched, S3SourceError> {
    let client = S3Client::from_env(region).await;
    tokio::select! {
        result = download(&client, location, version, dest, info) => result,
        _ = stop.requested() => Err(S3SourceError::Stopped),
    }
}

async fn download(
    client: &S3Client,
    location: &SourceLocation,
    version: Option<&str>,
    dest: &Path,
    info: &mut (dyn FnMut(String) + Send),
) -> Result<Fetched, S3SourceError> {
    {
        match location {
            SourceLocation::S3Zip { bucket, key } => {
                let write = |e: std::io::Error| S3SourceError::Write {
                    path: dest.to_owned(),
                    message: e.to_string(),
                };
                let file = tempfile::tempfile().map_err(write)?;
                let copy = file.try_clone().map_err(write)?;
                let (size, version_id) =
                    client.download_version(bucket, key, version, copy).await?;
                info(format!("Downloaded s3://{bucket}/{key} ({size} bytes)"));
                let dest = dest.to_owned();
                let key = key.clone();
                let entries = tokio::task::spawn_blocking(move || zip::extract(file, &dest))
                    .await
                    .map_err(|e| S3SourceError::Write {
                        path: PathBuf::new(),
                        message: e.to_string(),
                    })?
                    .map_err(|source| S3SourceError::Zip { key, source })?;
                info(format!("Extracted {entries} zip entries"));
                Ok(Fetched {
                    version: version.map(str::to_string),
                    resolved: version_id,
                })
            }
            SourceLocation::S3Folder(url) => {
                if version.is_some() {
                    return Err(S3SourceError::VersionOfFolder);
                }
                let prefix = if url.prefix.is_empty() {
                    String::new()
                } else {
                    format!("{}/", url.prefix)
                };
                let objects = client.list(&url.bucket, &prefix).await?;
                let mut count = 0;
                for object in &objects {
                    let rel = &object.key[prefix.len()..];
                    if rel.is_empty() || rel.ends_with('/') {
                        continue; // a folder marker
                    }
                    if rel
                        .split('/')
                        .any(|s| s.is_empty() || s == "." || s == "..")
                    {
                        return Err(S3SourceError::Escapes {
                            key: object.key.clone(),
                        });
                    }
                    let path = dest.join(rel);
                    let write = |e: std::io::Error| S3SourceError::Write {
                        path: path.clone(),
                        message: e.to_string(),
                    };
                    if let Some(parent) = path.parent() {
                        std::fs::create_dir_all(parent).map_err(write)?;
                    }
                    let file = std::fs::File::create(&path).map_err(write)?;
                    client.download(&url.bucket, &object.key, file).await?;
                    count += 1;
                }
                if count == 0 {
                    return Err(S3SourceError::EmptyFolder {
                        bucket: url.bucket.clone(),
                        prefix: url.prefix.clone(),
                    });
                }
                info(format!("Downloaded {count} objects from {url}/"));
                Ok(Fetched::default())
            }
            _ => Ok(Fetched::default()),
        }
    }
}
