//! An image being assembled: the base's layers (wherever their bytes are), new layers in the
//! store, and the configuration; [`Image::finish`] turns it into the manifest and configuration
//! blobs every output writes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::layer::LayerBlob;
use super::spec::{
    media, ContainerConfig, Descriptor, Digest, History, ImageConfig, Manifest, Platform, RootFs,
};

/// Which manifest schema the image is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestFormat {
    /// OCI image manifest.
    Oci,
    /// Docker schema 2 (kept when the base is one, for older engines).
    Docker,
}

/// Where a layer's bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobOrigin {
    /// In the local content store.
    Store,
    /// In a repository of a registry (fetched into the store only when an output needs them).
    Registry {
        /// The registry host (`127.0.0.1:5000`, `registry-1.docker.io`).
        registry: String,
        /// The repository.
        repository: String,
    },
    /// In an OCI layout directory (`DIR/blobs/sha256/...`).
    Layout(PathBuf),
}

/// One layer of an image.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageLayer {
    /// The blob's descriptor.
    pub descriptor: Descriptor,
    /// The uncompressed digest.
    pub diff_id: Digest,
    /// Where the bytes are.
    pub origin: BlobOrigin,
}

/// An image being assembled.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    /// The manifest schema.
    pub format: ManifestFormat,
    /// The configuration.
    pub config: ImageConfig,
    /// The layers, base first.
    pub layers: Vec<ImageLayer>,
}

/// The blobs that describe a finished image.
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    /// The manifest's media type.
    pub media_type: &'static str,
    /// The manifest, as pushed.
    pub manifest: Vec<u8>,
    /// Its digest.
    pub digest: Digest,
    /// The configuration blob.
    pub config: Vec<u8>,
    /// Its descriptor.
    pub config_descriptor: Descriptor,
    /// The layers, base first.
    pub layers: Vec<ImageLayer>,
}

impl Image {
    /// An empty image (`FROM scratch`) for `platform`.
    pub fn scratch(platform: &Platform) -> Image {
        Image {
            format: ManifestFormat::Oci,
            config: ImageConfig {
                created: None,
                author: None,
                architecture: platform.architecture.clone(),
                os: platform.os.clone(),
                variant: platform.variant.clone(),
                config: Some(ContainerConfig::default()),
                rootfs: RootFs {
                    kind: "layers".to_string(),
                    diff_ids: Vec::new(),
                },
                history: Vec::new(),
                extra: BTreeMap::new(),
            },
            layers: Vec::new(),
        }
    }

    /// The container configuration, made when missing.
    pub fn container(&mut self) -> &mut ContainerConfig {
        self.config
            .config
            .get_or_insert_with(ContainerConfig::default)
    }

    /// Adds a layer written into the store, with a history entry `created_by`.
    pub fn add_layer(&mut self, blob: &LayerBlob, created_by: &str, created: &str) {
        self.layers.push(ImageLayer {
            descriptor: Descriptor::new(blob.media_type, blob.digest.clone(), blob.size),
            diff_id: blob.diff_id.clone(),
            origin: BlobOrigin::Store,
        });
        self.config.rootfs.diff_ids.push(blob.diff_id.clone());
        self.config.history.push(History {
            created: Some(created.to_string()),
            created_by: Some(created_by.to_string()),
            ..History::default()
        });
    }

    /// Adds a history entry for an instruction that made no layer.
    pub fn add_empty_history(&mut self, created_by: &str, created: &str) {
        self.config.history.push(History {
            created: Some(created.to_string()),
            created_by: Some(created_by.to_string()),
            empty_layer: true,
            ..History::default()
        });
    }

    /// The manifest and configuration. A Docker-schema image with a layer Docker's schema cannot
    /// name (zstd) is written as OCI, its Docker layer types renamed (the bytes are the same).
    pub fn finish(&self) -> Finished {
        let mut format = self.format;
        let docker_type = |t: &str| match t {
            media::OCI_LAYER_GZIP | media::DOCKER_LAYER_GZIP => Some(media::DOCKER_LAYER_GZIP),
            media::DOCKER_FOREIGN_LAYER => Some(media::DOCKER_FOREIGN_LAYER),
            _ => None,
        };
        if format == ManifestFormat::Docker
            && self
                .layers
                .iter()
                .any(|l| docker_type(&l.descriptor.media_type).is_none())
        {
            format = ManifestFormat::Oci;
        }
        let mut layers = self.layers.clone();
        for layer in &mut layers {
            let t = layer.descriptor.media_type.as_str();
            let new = match format {
                ManifestFormat::Docker => docker_type(t).unwrap_or(media::DOCKER_LAYER_GZIP),
                ManifestFormat::Oci => match t {
                    media::DOCKER_LAYER_GZIP => media::OCI_LAYER_GZIP,
                    media::DOCKER_FOREIGN_LAYER => {
                        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
                    }
                    _ => t,
                },
            };
            layer.descriptor.media_type = new.to_string();
        }
        let config = serde_json::to_vec(&self.config).expect("a configuration serializes");
        let (manifest_type, config_type) = match format {
            ManifestFormat::Oci => (media::OCI_MANIFEST, media::OCI_CONFIG),
            ManifestFormat::Docker => (media::DOCKER_MANIFEST, media::DOCKER_CONFIG),
        };
        let config_descriptor =
            Descriptor::new(config_type, Digest::of(&config), config.len() as u64);
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(manifest_type.to_string()),
            config: config_descriptor.clone(),
            layers: layers.iter().map(|l| l.descriptor.clone()).collect(),
            annotations: BTreeMap::new(),
            extra: BTreeMap::new(),
        };
        let manifest = serde_json::to_vec(&manifest).expect("a manifest serializes");
        Finished {
            media_type: manifest_type,
            digest: Digest::of(&manifest),
            manifest,
            config,
            config_descriptor,
            layers,
        }
    }
}

/// RFC 3339 (UTC, seconds) of a Unix time.
pub fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn zstd_layers_turn_a_docker_image_into_oci() {
        let mut image = Image::scratch(&Platform::host());
        image.format = ManifestFormat::Docker;
        let d = Digest::of(b"x");
        image.layers.push(ImageLayer {
            descriptor: Descriptor::new(media::DOCKER_LAYER_GZIP, d.clone(), 1),
            diff_id: d.clone(),
            origin: BlobOrigin::Store,
        });
        assert_eq!(image.finish().media_type, media::DOCKER_MANIFEST);
        image.layers.push(ImageLayer {
            descriptor: Descriptor::new(media::OCI_LAYER_ZSTD, d.clone(), 1),
            diff_id: d,
            origin: BlobOrigin::Store,
        });
        let f = image.finish();
        assert_eq!(f.media_type, media::OCI_MANIFEST);
        assert_eq!(f.layers[0].descriptor.media_type, media::OCI_LAYER_GZIP);
    }
}
