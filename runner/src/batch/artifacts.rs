//! Where a batch's artifacts go: each child writes into a staging directory of its own under the
//! `-a` directory; when it ends, its artifacts are renamed to `<identifier>.zip` (primary) and
//! `<identifier>_<artifactId>.zip` (secondary), or directories of those names with packaging
//! `none`. With `--combine-artifacts` the primary artifacts stay staged until the batch ends and
//! become one `artifacts.zip` holding a folder per identifier (`artifacts/<identifier>/` with
//! packaging `none`).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::artifacts::Packaging;

/// The staging directory of child `identifier` in the artifacts directory `dir`.
pub(super) fn staging(dir: &Path, identifier: &str) -> PathBuf {
    dir.join(format!(".{identifier}.batch"))
}

/// The engine's name for an artifact (`artifacts` for the primary one) and the stem it gets in
/// a batch.
fn final_stem(identifier: &str, artifact: Option<&str>) -> String {
    match artifact {
        None => identifier.to_string(),
        Some(a) => format!("{identifier}_{a}"),
    }
}

/// Where an artifact of child `identifier` ends up (what its `artifact_uploaded` event shows).
pub(super) fn final_path(
    dir: &Path,
    identifier: &str,
    artifact: Option<&str>,
    packaging: Packaging,
    combine: bool,
) -> PathBuf {
    match (artifact, combine, packaging) {
        (None, true, Packaging::Zip) => dir.join("artifacts.zip"),
        (None, true, Packaging::None) => dir.join("artifacts").join(identifier),
        (_, _, Packaging::Zip) => dir.join(format!("{}.zip", final_stem(identifier, artifact))),
        (_, _, Packaging::None) => dir.join(final_stem(identifier, artifact)),
    }
}

/// Moves what child `identifier` wrote in its staging directory to the final names (the primary
/// artifact stays when `combine` is set). Returns the problems, one line each.
pub(super) fn settle(
    dir: &Path,
    identifier: &str,
    packaging: Packaging,
    combine: bool,
) -> Vec<String> {
    let stage = staging(dir, identifier);
    let mut problems = Vec::new();
    let Ok(entries) = std::fs::read_dir(&stage) else {
        return problems;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let stem = match packaging {
            Packaging::Zip => match name.strip_suffix(".zip") {
                Some(stem) => stem.to_string(),
                None => continue,
            },
            Packaging::None => name.clone(),
        };
        let artifact = (stem != "artifacts").then_some(stem.as_str());
        if artifact.is_none() && combine {
            continue;
        }
        let to = final_path(dir, identifier, artifact, packaging, false);
        if let Err(e) = replace(&entry.path(), &to) {
            problems.push(format!("cannot move {name} to {}: {e}", to.display()));
        }
    }
    if !combine {
        let _ = std::fs::remove_dir_all(&stage);
    }
    problems
}

/// Renames `from` to `to`, replacing a directory that is there.
fn replace(from: &Path, to: &Path) -> io::Result<()> {
    if to.is_dir() && !to.is_symlink() {
        std::fs::remove_dir_all(to)?;
    }
    std::fs::rename(from, to)
}

/// Combines the staged primary artifacts of `identifiers` (in that order) into
/// `dir/artifacts.zip` (or `dir/artifacts/<identifier>/`) and removes the staging directories.
/// Returns the path written and how many builds it holds, or `None` when no child had one.
pub(super) fn combine(
    dir: &Path,
    identifiers: &[String],
    packaging: Packaging,
) -> io::Result<Option<(PathBuf, usize)>> {
    let mut builds = 0;
    let result = match packaging {
        Packaging::Zip => {
            let target = dir.join("artifacts.zip");
            let temp = tempfile::Builder::new()
                .prefix(".artifacts.zip.")
                .suffix(".partial")
                .tempfile_in(dir)?;
            let mut writer = zip::ZipWriter::new(temp.reopen()?);
            for id in identifiers {
                let path = staging(dir, id).join("artifacts.zip");
                let Ok(file) = File::open(&path) else {
                    continue;
                };
                builds += 1;
                let mut archive = zip::ZipArchive::new(file).map_err(io::Error::other)?;
                for i in 0..archive.len() {
                    let entry = archive.by_index_raw(i).map_err(io::Error::other)?;
                    let name = format!("{id}/{}", entry.name().map_err(io::Error::other)?);
                    writer
                        .raw_copy_file_rename(entry, name)
                        .map_err(io::Error::other)?;
                }
            }
            writer.finish().map_err(io::Error::other)?;
            if builds > 0 {
                temp.persist(&target).map_err(|e| e.error)?;
                Some((target, builds))
            } else {
                None
            }
        }
        Packaging::None => {
            let target = dir.join("artifacts");
            for id in identifiers {
                let from = staging(dir, id).join("artifacts");
                if !from.is_dir() {
                    continue;
                }
                builds += 1;
                std::fs::create_dir_all(&target)?;
                replace(&from, &target.join(id))?;
            }
            (builds > 0).then_some((target, builds))
        }
    };
    for id in identifiers {
        let _ = std::fs::remove_dir_all(staging(dir, id));
    }
    Ok(result)
}
