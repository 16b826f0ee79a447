//! A cache store in an S3 bucket (`--cache s3://bucket/prefix`), with the layout of the local
//! store under the prefix (see [`super::store`]).
//!
//! Entries are packed into a local temporary file and uploaded in one request (multipart when
//! large); restores download into a temporary file first, because an entry is read twice (checked
//! whole, then unpacked). A keyed entry is uploaded with `If-None-Match: *`, so it is written once
//! even when two builds save the same key at the same moment.

use std::io;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::store::{safe_name, CacheStore, EntryInfo, Fetched, Slot, SUFFIX};
use crate::s3::{join_key, S3Client, S3Error, S3Url, Uploaded};

/// A cache store under an `s3://bucket/prefix` location.
#[derive(Clone, Debug)]
pub struct S3Store {
    client: S3Client,
    url: S3Url,
}

impl S3Store {
    /// A store at `url`, reached with `client`.
    pub fn new(client: S3Client, url: S3Url) -> S3Store {
        S3Store { client, url }
    }

    fn dir(&self, slot: &Slot) -> String {
        join_key(&[&self.url.prefix, &safe_name(&slot.project), &slot.version])
    }

    fn key(&self, slot: &Slot) -> String {
        match &slot.key {
            Some(key) => format!("{}/keys/{key}{SUFFIX}", self.dir(slot)),
            None => format!("{}/default{SUFFIX}", self.dir(slot)),
        }
    }

    fn info(&self, key: Option<String>, object: &str) -> EntryInfo {
        EntryInfo {
            key,
            location: format!("s3://{}/{object}", self.url.bucket),
        }
    }
}

fn to_io(e: S3Error) -> io::Error {
    io::Error::other(e)
}

impl CacheStore for S3Store {
    fn get<'a>(&'a self, slot: &'a Slot) -> BoxFuture<'a, io::Result<Option<EntryInfo>>> {
        Box::pin(async move {
            let key = self.key(slot);
            let found = self
                .client
                .head(&self.url.bucket, &key)
                .await
                .map_err(to_io)?;
            Ok(found.map(|_| self.info(slot.key.clone(), &key)))
        })
    }

    fn newest_with_prefix<'a>(
        &'a self,
        slot: &'a Slot,
        prefix: &'a str,
    ) -> BoxFuture<'a, io::Result<Option<EntryInfo>>> {
        Box::pin(async move {
            let keys = format!("{}/keys/", self.dir(slot));
            let objects = self
                .client
                .list(&self.url.bucket, &format!("{keys}{prefix}"))
                .await
                .map_err(to_io)?;
            let newest = objects
                .into_iter()
                .filter_map(|o| {
                    let key = o.key.strip_prefix(&keys)?.strip_suffix(SUFFIX)?.to_string();
                    (!key.contains('/')).then_some((o.last_modified, key, o.key))
                })
                .max();
            Ok(newest.map(|(_, key, object)| self.info(Some(key), &object)))
        })
    }

    fn fetch<'a>(&'a self, entry: &'a EntryInfo) -> BoxFuture<'a, io::Result<Fetched>> {
        Box::pin(async move {
            let object = entry
                .location
                .strip_prefix(&format!("s3://{}/", self.url.bucket))
                .ok_or_else(|| {
                    io::Error::other(format!("{} is not in this store", entry.location))
                })?;
            let temp = tempfile::Builder::new()
                .prefix("buildagent-cache-")
                .tempfile()?;
            let file = temp.reopen()?;
            self.client
                .download(&self.url.bucket, object, file)
                .await
                .map_err(to_io)?;
            Ok(Fetched::Downloaded(temp))
        })
    }

    fn staging(&self, _slot: &Slot) -> io::Result<tempfile::NamedTempFile> {
        tempfile::Builder::new()
            .prefix("buildagent-cache-")
            .tempfile()
    }

    fn location(&self, slot: &Slot) -> String {
        format!("s3://{}/{}", self.url.bucket, self.key(slot))
    }

    fn put<'a>(
        &'a self,
        slot: &'a Slot,
        file: tempfile::NamedTempFile,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, io::Result<bool>> {
        Box::pin(async move {
            let key = self.key(slot);
            let keyed = slot.key.is_some();
            let uploaded = self
                .client
                .upload(&self.url.bucket, &key, file.path(), &[], keyed, cancel)
                .await
                .map_err(to_io)?;
            Ok(uploaded != Uploaded::AlreadyExists)
        })
    }
}
