//! OCI image layouts (`oci:DIR[:TAG]`): reading one as a base, writing an image into one, and
//! the `docker load` archive (`docker-archive:FILE`).
//!
//! A layout written here is `DIR/oci-layout`, `DIR/blobs/sha256/<hex>` (hard links to the store
//! where it is on the same file system) and `DIR/index.json`, whose entry for the tag
//! (`org.opencontainers.image.ref.name`) is replaced and whose other entries are kept.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::image::{BlobOrigin, Finished, Image, ImageLayer, ManifestFormat};
use super::spec::{media, Descriptor, Digest, ImageConfig, Index, Manifest, Platform};
use super::store::link_or_copy;
use super::tarwriter::{TarHeader, TarKind, TarWriter};
use super::OciError;

/// The annotation that names a manifest in a layout's index.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Splits `DIR[:TAG]` (the part after `oci:`): the tag is what follows the last `:` when it has
/// no `/`.
pub fn split_layout_ref(text: &str) -> (PathBuf, Option<String>) {
    match text.rsplit_once(':') {
        Some((dir, tag)) if !tag.is_empty() && !tag.contains('/') && !dir.is_empty() => {
            (PathBuf::from(dir), Some(tag.to_string()))
        }
        _ => (PathBuf::from(text), None),
    }
}

fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs/sha256").join(digest.hex())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, OciError> {
    let bytes = fs::read(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            OciError::NotFound(format!("{} does not exist", path.display()))
        } else {
            OciError::io("read", path, e)
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        OciError::Invalid(format!(
            "{} is not a valid OCI document: {e}",
            path.display()
        ))
    })
}

/// Reads the image `tag` (or the only image) of the layout `dir` for `platform`.
pub fn read(dir: &Path, tag: Option<&str>, platform: &Platform) -> Result<Image, OciError> {
    let index: Index = read_json(&dir.join("index.json"))?;
    let chosen = match tag {
        Some(tag) => index
            .manifests
            .iter()
            .find(|d| d.annotations.get(REF_NAME).map(String::as_str) == Some(tag))
            .ok_or_else(|| {
                OciError::NotFound(format!("{}: no image tagged `{tag}`", dir.display()))
            })?,
        None => match index.manifests.as_slice() {
            [one] => one,
            [] => {
                return Err(OciError::NotFound(format!(
                    "{}: the layout holds no image",
                    dir.display()
                )))
            }
            _ => {
                return Err(OciError::Invalid(format!(
                    "{}: the layout holds several images; name one as oci:{}:TAG",
                    dir.display(),
                    dir.display()
                )))
            }
        },
    };
    let mut descriptor = chosen.clone();
    if media::is_index(&descriptor.media_type) {
        let nested: Index = read_json(&blob_path(dir, &descriptor.digest))?;
        descriptor = pick_platform(&nested, platform)
            .ok_or_else(|| {
                OciError::NotFound(format!("{}: no image for {platform}", dir.display()))
            })?
            .clone();
    }
    let manifest: Manifest = read_json(&blob_path(dir, &descriptor.digest))?;
    let config: ImageConfig = read_json(&blob_path(dir, &manifest.config.digest))?;
    image_from(manifest, &descriptor.media_type, config, |_| {
        BlobOrigin::Layout(dir.to_path_buf())
    })
}

/// The entry of `index` for `platform`.
pub fn pick_platform<'a>(index: &'a Index, platform: &Platform) -> Option<&'a Descriptor> {
    index
        .manifests
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| platform.matches(p)))
}

/// An [`Image`] from a base's manifest and configuration.
pub fn image_from(
    manifest: Manifest,
    media_type: &str,
    config: ImageConfig,
    origin: impl Fn(&Descriptor) -> BlobOrigin,
) -> Result<Image, OciError> {
    if manifest.layers.len() != config.rootfs.diff_ids.len() {
        return Err(OciError::Invalid(format!(
            "the base image has {} layers but {} diff ids",
            manifest.layers.len(),
            config.rootfs.diff_ids.len()
        )));
    }
    let manifest_type = manifest.media_type.as_deref().unwrap_or(media_type);
    let format = if manifest_type == media::DOCKER_MANIFEST {
        ManifestFormat::Docker
    } else {
        ManifestFormat::Oci
    };
    let layers = manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .map(|(d, diff_id)| ImageLayer {
            descriptor: d.clone(),
            diff_id: diff_id.clone(),
            origin: origin(d),
        })
        .collect();
    Ok(Image {
        format,
        config,
        layers,
    })
}

/// Writes a finished image into the layout `dir` (made if missing) under `tag`; `layer_files`
/// are the layers' bytes, in order.
pub fn write(
    dir: &Path,
    tag: Option<&str>,
    image: &Finished,
    layer_files: &[PathBuf],
) -> Result<(), OciError> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(|e| OciError::io("create", &blobs, e))?;
    write_atomic(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    for (layer, file) in image.layers.iter().zip(layer_files) {
        let to = blob_path(dir, &layer.descriptor.digest);
        link_or_copy(file, &to).map_err(|e| OciError::io("write", &to, e))?;
    }
    write_blob(dir, &image.config_descriptor.digest, &image.config)?;
    write_blob(dir, &image.digest, &image.manifest)?;
    let index_path = dir.join("index.json");
    let mut index: Index = if index_path.is_file() {
        read_json(&index_path)?
    } else {
        Index {
            schema_version: 2,
            media_type: Some(media::OCI_INDEX.to_string()),
            manifests: Vec::new(),
            annotations: Default::default(),
            extra: Default::default(),
        }
    };
    let mut entry = Descriptor::new(
        image.media_type,
        image.digest.clone(),
        image.manifest.len() as u64,
    );
    match tag {
        Some(tag) => {
            index
                .manifests
                .retain(|d| d.annotations.get(REF_NAME).map(String::as_str) != Some(tag));
            entry
                .annotations
                .insert(REF_NAME.to_string(), tag.to_string());
        }
        None => index
            .manifests
            .retain(|d| d.annotations.contains_key(REF_NAME) || d.digest != image.digest),
    }
    index.manifests.push(entry);
    let bytes = serde_json::to_vec(&index).expect("an index serializes");
    write_atomic(&index_path, &bytes)
}

fn write_blob(dir: &Path, digest: &Digest, bytes: &[u8]) -> Result<(), OciError> {
    let path = blob_path(dir, digest);
    if path.is_file() {
        return Ok(());
    }
    write_atomic(&path, bytes)
}

/// Writes `path` through a temporary file beside it.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), OciError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp =
        tempfile::NamedTempFile::new_in(dir).map_err(|e| OciError::io("write", path, e))?;
    temp.write_all(bytes)
        .map_err(|e| OciError::io("write", path, e))?;
    let _ = temp
        .as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    temp.persist(path)
        .map_err(|e| OciError::io("write", path, e.error))?;
    Ok(())
}

/// Writes a `docker load` archive: `manifest.json` (Config, RepoTags, Layers) with the blobs at
/// `blobs/sha256/<hex>`, plus `oci-layout` and `index.json`, so engines that read OCI archives
/// (Docker 25 and later) see the same image. Every entry has mode 0644 and time 0: the same
/// image gives the same archive.
pub fn write_docker_archive(
    path: &Path,
    tags: &[String],
    image: &Finished,
    layer_files: &[PathBuf],
) -> Result<(), OciError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let temp = tempfile::NamedTempFile::new_in(dir).map_err(|e| OciError::io("write", path, e))?;
    let werr = |e: io::Error| OciError::io("write", path, e);
    let out = io::BufWriter::with_capacity(1 << 20, temp.reopen().map_err(werr)?);
    let mut tar = TarWriter::new(out);
    let mut layer_paths = Vec::new();
    let mut entries: Vec<(String, Source<'_>)> = Vec::new();
    for (layer, file) in image.layers.iter().zip(layer_files) {
        let name = format!("blobs/sha256/{}", layer.descriptor.digest.hex());
        layer_paths.push(name.clone());
        entries.push((name, Source::File(file)));
    }
    let config_name = format!("blobs/sha256/{}", image.config_descriptor.digest.hex());
    entries.push((config_name.clone(), Source::Bytes(image.config.clone())));
    entries.push((
        format!("blobs/sha256/{}", image.digest.hex()),
        Source::Bytes(image.manifest.clone()),
    ));
    let manifest_json = serde_json::json!([{
        "Config": config_name,
        "RepoTags": tags,
        "Layers": layer_paths,
    }]);
    entries.push((
        "manifest.json".to_string(),
        Source::Bytes(serde_json::to_vec(&manifest_json).expect("json")),
    ));
    let mut index_entry = Descriptor::new(
        image.media_type,
        image.digest.clone(),
        image.manifest.len() as u64,
    );
    if let Some(tag) = tags.first() {
        index_entry
            .annotations
            .insert("io.containerd.image.name".to_string(), tag.clone());
        if let Some((_, t)) = tag.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
            index_entry
                .annotations
                .insert(REF_NAME.to_string(), t.to_string());
        }
    }
    let index = Index {
        schema_version: 2,
        media_type: Some(media::OCI_INDEX.to_string()),
        manifests: vec![index_entry],
        annotations: Default::default(),
        extra: Default::default(),
    };
    entries.push((
        "index.json".to_string(),
        Source::Bytes(serde_json::to_vec(&index).expect("json")),
    ));
    entries.push((
        "oci-layout".to_string(),
        Source::Bytes(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
    ));
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries.dedup_by(|a, b| a.0 == b.0);
    for dir_name in ["blobs", "blobs/sha256"] {
        tar.append(
            &TarHeader {
                path: dir_name,
                kind: TarKind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime: 0,
            },
            None,
        )
        .map_err(werr)?;
    }
    for (name, source) in &entries {
        let (size, mut reader): (u64, Box<dyn io::Read>) = match source {
            Source::Bytes(b) => (b.len() as u64, Box::new(io::Cursor::new(b.clone()))),
            Source::File(p) => {
                let f = fs::File::open(p).map_err(|e| OciError::io("read", p, e))?;
                let len = f.metadata().map_err(|e| OciError::io("read", p, e))?.len();
                (len, Box::new(f))
            }
        };
        tar.append(
            &TarHeader {
                path: name,
                kind: TarKind::File { size },
                mode: 0o644,
                uid: 0,
                gid: 0,
                mtime: 0,
            },
            Some(&mut reader),
        )
        .map_err(werr)?;
    }
    let mut out = tar.finish().map_err(werr)?;
    out.flush().map_err(werr)?;
    drop(out);
    let _ = temp
        .as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    temp.persist(path)
        .map_err(|e| OciError::io("write", path, e.error))?;
    Ok(())
}

enum Source<'a> {
    Bytes(Vec<u8>),
    File(&'a Path),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_references_split() {
        assert_eq!(split_layout_ref("dir"), (PathBuf::from("dir"), None));
        assert_eq!(
            split_layout_ref("/a/b:v1"),
            (PathBuf::from("/a/b"), Some("v1".to_string()))
        );
        assert_eq!(split_layout_ref("a:b/c"), (PathBuf::from("a:b/c"), None));
    }
}
