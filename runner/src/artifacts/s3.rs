//! Artifacts uploaded to an S3 location (`-a s3://bucket/prefix`).
//!
//! Object keys follow CodeBuild's rule, `[path/][<build-id>/ if namespaceType=BUILD_ID]<name>`
//! (buildspec-reference.md §5.3), with the buildspec's `s3-prefix` in front of the build id
//! (§5.4 A13). Here the `s3://` location's prefix is the project's `path`, `--artifacts-namespace
//! build-id` is `namespaceType=BUILD_ID` (the id is the UUID part of `CODEBUILD_BUILD_ID`), and
//! the name is the artifact's `name` expanded by the build's shell, else `artifacts` for the
//! primary artifact and the identifier for a secondary one:
//!
//! ```text
//! <prefix>/[<s3-prefix>/][<build uuid>/]<name>[.zip]      zip packaging (.zip added if missing)
//! <prefix>/[<s3-prefix>/][<build uuid>/]<name>/<file>     --artifacts-packaging none
//! ```
//!
//! With packaging `none` a `name` of `/` puts the files directly under the prefix. Every object
//! carries `x-amz-meta-codebuild-buildarn` (the build's ARN), as CodeBuild's do. A zip is one
//! object (it appears whole or not at all); a folder's files are uploaded in parallel, and when
//! one fails the ones already stored are deleted again.

use futures::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use super::{Entry, EntryKind, Packaging};
use crate::s3::{join_key, S3Client, S3Error, S3Url, Uploaded};

/// Where artifacts go under an S3 location: CodeBuild's `namespaceType`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Namespace {
    /// Straight under the prefix (and `s3-prefix`).
    #[default]
    None,
    /// Under a directory named after the build (`BUILD_ID`).
    BuildId,
}

/// How many files of a folder artifact are uploaded at once.
const PARALLEL_FILES: usize = 8;

/// The object key of a zip artifact, or the key prefix of a folder artifact's files.
///
/// `name` is the expanded `name` of the artifact (`None`: `default_name`); `s3_prefix` its
/// `s3-prefix`; `build` the build id's UUID when the namespace is [`Namespace::BuildId`].
pub fn artifact_key(
    url: &S3Url,
    s3_prefix: Option<&str>,
    build: Option<&str>,
    name: Option<&str>,
    default_name: &str,
    packaging: Packaging,
) -> String {
    let name = name.map(str::trim).filter(|n| !n.is_empty());
    let root = join_key(&[&url.prefix, s3_prefix.unwrap_or(""), build.unwrap_or("")]);
    match packaging {
        Packaging::Zip => {
            let name = name
                .map(|n| n.trim_matches('/'))
                .filter(|n| !n.is_empty())
                .unwrap_or(default_name);
            let file = if name.ends_with(".zip") {
                name.to_string()
            } else {
                format!("{name}.zip")
            };
            join_key(&[&root, &file])
        }
        Packaging::None => join_key(&[&root, name.unwrap_or(default_name)]),
    }
}

/// Uploads a folder artifact: each entry to `<base>/<entry name>`, with `metadata`. A symbolic
/// link is uploaded as the file it points to (S3 has no links). Returns the number of objects and
/// bytes. When an upload fails or `cancel` fires, the objects already stored are deleted.
pub async fn upload_folder(
    client: &S3Client,
    bucket: &str,
    base: &str,
    entries: &[Entry],
    metadata: &[(&str, &str)],
    cancel: &CancellationToken,
) -> Result<(usize, u64), S3Error> {
    let stored = std::sync::Mutex::new(Vec::new());
    let result = futures::stream::iter(entries)
        .map(|entry| {
            let key = join_key(&[base, &entry.name]);
            let stored = &stored;
            async move {
                let uploaded = client
                    .upload(bucket, &key, &entry.path, metadata, false, cancel)
                    .await?;
                stored.lock().unwrap_or_else(|e| e.into_inner()).push(key);
                Ok::<_, S3Error>(match uploaded {
                    Uploaded::Stored(bytes) => bytes,
                    Uploaded::AlreadyExists => 0,
                })
            }
        })
        .buffer_unordered(PARALLEL_FILES)
        .try_fold(0u64, |total, bytes| async move { Ok(total + bytes) })
        .await;
    match result {
        Ok(bytes) => Ok((entries.len(), bytes)),
        Err(e) => {
            let stored = stored.into_inner().unwrap_or_else(|e| e.into_inner());
            for key in stored {
                let _ = client.delete(bucket, &key).await;
            }
            Err(e)
        }
    }
}

/// The entries of a folder artifact that can be uploaded: links are followed, and a link that
/// does not lead to a file is left out with a warning (S3 stores no links).
pub fn uploadable(entries: Vec<Entry>, warn: &mut dyn FnMut(String)) -> Vec<Entry> {
    entries
        .into_iter()
        .filter(|entry| match &entry.kind {
            EntryKind::File { .. } => true,
            EntryKind::Symlink { .. } => {
                let file = std::fs::metadata(&entry.path).is_ok_and(|m| m.is_file());
                if !file {
                    warn(format!(
                        "Skipping symbolic link {}: it does not lead to a file, and S3 stores no links",
                        entry.name
                    ));
                }
                file
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_codebuilds_rule() {
        let url: S3Url = "s3://bucket/MyArtifacts".parse().unwrap();
        let zip = Packaging::Zip;
        // §5.4 A11: path, BUILD_ID namespace, name out.zip.
        assert_eq!(
            artifact_key(&url, None, Some("id"), Some("out.zip"), "artifacts", zip),
            "MyArtifacts/id/out.zip"
        );
        // A13: s3-prefix team, BUILD_ID, name app.
        let bare: S3Url = "s3://bucket".parse().unwrap();
        assert_eq!(
            artifact_key(
                &bare,
                Some("team"),
                Some("id"),
                Some("app"),
                "artifacts",
                zip
            ),
            "team/id/app.zip"
        );
        // A12: a name with folders.
        assert_eq!(
            artifact_key(&url, None, None, Some("builds/7/my-artifacts"), "x", zip),
            "MyArtifacts/builds/7/my-artifacts.zip"
        );
        // Defaults, and `/` for a folder.
        assert_eq!(
            artifact_key(&url, None, None, None, "artifacts", zip),
            "MyArtifacts/artifacts.zip"
        );
        assert_eq!(
            artifact_key(&url, None, None, Some("/"), "a1", Packaging::None),
            "MyArtifacts"
        );
        assert_eq!(
            artifact_key(&url, None, None, None, "a1", Packaging::None),
            "MyArtifacts/a1"
        );
    }
}
