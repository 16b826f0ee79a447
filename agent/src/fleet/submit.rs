//! `buildagent submit`: a job on the fleet's queue, its record in the table, and with
//! `--follow` the build's log until it ends.
//!
//! Everything the user gave is checked before anything is sent; then the build gets its number,
//! a local source directory is zipped to the source bucket, the record is written (`QUEUED`)
//! and the message sent. The record comes first so that a worker always finds it.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use buildagent_fleet::job::{
    Artifacts, CloudWatchLogsConfig, EnvironmentVariable, GitSubmodulesConfig, Job, LogsConfig,
    S3LogsConfig, SecondarySource, SecondaryVersion, VariableType, TIMEOUT_MINUTES,
};
use buildagent_fleet::record::{BuildRecord, RecordError, RecordStore};
use buildagent_fleet::setup::Clients;
use buildagent_runner::artifacts::{Entry, EntryKind};
use buildagent_runner::fetch::SourceLocation;
use buildagent_runner::plan;
use tokio_util::sync::CancellationToken;

use super::{Namespace, Packaging, SubmitArgs};
use crate::cli::ColorChoice;
use crate::run::invalid;

/// A source as the job names it, and the local directory to upload first, if it is one.
struct Source {
    location: Option<String>,
    upload: Option<PathBuf>,
}

/// How long an idempotency token names its build (CodeBuild's 5 minutes).
const TOKEN_VALIDITY: std::time::Duration = std::time::Duration::from_secs(300);

/// A local directory to upload: `None` for the primary source, else the secondary source's id.
type Upload = (Option<String>, PathBuf);

/// Submits the job; prints its id; with `--follow`, its log, and exits with its status.
pub fn run(args: &SubmitArgs, color: ColorChoice) -> anyhow::Result<ExitCode> {
    let queue = super::queue(&args.queue)?.to_string();
    let table = super::table(&args.table)?.to_string();
    let (mut job, uploads) = job(args)?;
    let color = crate::color::enabled(color, std::io::stdout().is_terminal());
    super::runtime()?.block_on(async {
        let clients = Clients::from_env(super::DEFAULT_REGION).await;
        let queue = super::open_queue(&clients, &queue).await?;
        let store = super::store(&clients, &table);
        if let Some(token) = &job.idempotency_token {
            // The request without its new build id: what a repeat must match.
            let fingerprint = Job {
                id: String::new(),
                ..job.clone()
            }
            .to_json();
            let first = store
                .reserve_token(token, &job.id, &fingerprint, TOKEN_VALIDITY)
                .await
                .map_err(|e| match e {
                    RecordError::TokenMismatch { .. } => invalid(e.to_string()),
                    other => super::record_error(other),
                })?;
            if let Some(id) = first {
                // CodeBuild's answer to a repeated StartBuild: the build it started.
                println!("{id}");
                return follow(args, &clients, &store, &id, color).await;
            }
        }
        let number = store
            .next_build_number(&job.project_name)
            .await
            .map_err(super::record_error)?;
        // The zips are named after the build (ids are new), so nothing is ever replaced.
        let s3 = buildagent_runner::s3::S3Client::from_sdk(clients.s3.clone());
        for (which, dir) in &uploads {
            let bucket = args
                .source_bucket
                .as_deref()
                .expect("checked: local sources have a bucket");
            let key = match which {
                None => format!("sources/{}.zip", job.uuid()),
                Some(id) => format!("sources/{}-{id}.zip", job.uuid()),
            };
            upload_dir(&s3, dir, bucket, &key).await?;
            let url = format!("s3://{bucket}/{key}");
            match which {
                None => job.source_location_override = Some(url),
                Some(id) => {
                    if let Some(source) = job
                        .secondary_sources_override
                        .iter_mut()
                        .find(|s| &s.source_identifier == id)
                    {
                        source.location = url;
                    }
                }
            }
        }
        let body = job.to_json();
        let record = BuildRecord::queued(&job.id, &job.project_name, number, Some(body.clone()));
        store
            .create_queued(&record)
            .await
            .map_err(super::record_error)?;
        if let Err(e) = queue.send(&body).await {
            // No worker will ever see it: say so in the record rather than leave it QUEUED.
            let reason = format!("submit: the job could not be sent: {e}");
            store
                .fail_invalid(Some(&job.id), Some(&job.project_name), &reason, &body)
                .await
                .ok();
            return Err(anyhow::Error::new(e));
        }
        println!("{}", job.id);
        follow(args, &clients, &store, &job.id, color).await
    })
}

/// With `--follow`, prints the build's log until it ends and gives its exit status.
async fn follow(
    args: &SubmitArgs,
    clients: &Clients,
    store: &RecordStore,
    id: &str,
    color: bool,
) -> anyhow::Result<ExitCode> {
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    let last = super::follow::print_log(&clients.logs, store, id, true, color).await?;
    Ok(
        match last.and_then(|r| r.status.finished().map(|s| (r, s))) {
            Some((record, status)) => {
                match &record.status_reason {
                    Some(reason) => eprintln!("build {}: {status}: {reason}", record.id),
                    None => eprintln!("build {}: {status}", record.id),
                }
                crate::run::exit_code(status)
            }
            None => {
                eprintln!("stopped following; the build goes on (`buildagent stop {id}` stops it)");
                ExitCode::from(130)
            }
        },
    )
}

/// The job the arguments describe, and the local directories to upload (`None`: the primary
/// source; `Some(id)`: a secondary one). Every problem is bad input.
fn job(args: &SubmitArgs) -> anyhow::Result<(Job, Vec<Upload>)> {
    let (primary, secondary) = crate::run::sources(&args.sources)?;
    let project = match &args.project {
        Some(project) => project.clone(),
        None => project_of(&primary)?,
    };
    let mut job = Job::new(&project);
    let mut uploads = Vec::new();
    let shown = args.sources.first().map_or(".", String::as_str);
    let source = source_of(&primary, shown, args)?;
    job.source_location_override = source.location;
    if let Some(dir) = source.upload {
        uploads.push((None, dir));
    }
    for (id, location) in &secondary {
        let source = source_of(location, &format!("{id}:{location}"), args)?;
        if let Some(dir) = source.upload {
            uploads.push((Some(id.clone()), dir));
        }
        job.secondary_sources_override.push(SecondarySource {
            source_identifier: id.clone(),
            location: source.location.unwrap_or_default(),
            source_type: None,
        });
    }
    job.source_version = args.source_version.clone();
    for arg in &args.secondary_source_version {
        let (id, version) = arg
            .split_once('=')
            .filter(|(id, v)| !id.is_empty() && !v.is_empty())
            .ok_or_else(|| invalid(format!("--secondary-source-version {arg}: expected ID=REF")))?;
        if !secondary.iter().any(|(name, _)| name == id) {
            return Err(invalid(format!(
                "--secondary-source-version {arg}: there is no secondary source `{id}` (give it with -s {id}:SOURCE)"
            )));
        }
        job.secondary_sources_version_override
            .push(SecondaryVersion {
                source_identifier: id.to_string(),
                source_version: version.to_string(),
            });
    }
    if let Some(path) = &args.buildspec {
        job.buildspec_override = Some(buildspec(path)?);
    }
    for (flag, values, kind) in [
        ("--env-var", &args.env_vars, VariableType::Plaintext),
        (
            "--parameter-store-var",
            &args.parameter_store_vars,
            VariableType::ParameterStore,
        ),
        (
            "--secrets-manager-var",
            &args.secrets_manager_vars,
            VariableType::SecretsManager,
        ),
    ] {
        for value in values {
            let (name, value) = value
                .split_once('=')
                .filter(|(name, _)| !name.is_empty())
                .ok_or_else(|| invalid(format!("{flag} {value}: expected NAME=VALUE")))?;
            job.environment_variables_override
                .push(EnvironmentVariable {
                    name: name.to_string(),
                    value: value.to_string(),
                    kind,
                });
        }
    }
    job.image_override = args.image.clone();
    job.privileged_mode_override = args.privileged.then_some(true);
    if let Some(text) = &args.timeout {
        let timeout = plan::parse_duration(text).map_err(|e| invalid(format!("--timeout: {e}")))?;
        let minutes = u32::try_from(timeout.as_secs().div_ceil(60)).unwrap_or(u32::MAX);
        if !TIMEOUT_MINUTES.contains(&minutes) {
            return Err(invalid(format!(
                "--timeout {text}: a fleet build's timeout is {} to {} minutes, as CodeBuild's",
                TIMEOUT_MINUTES.start(),
                TIMEOUT_MINUTES.end()
            )));
        }
        job.timeout_in_minutes_override = Some(minutes);
    }
    if let Some(text) = &args.artifacts {
        let rest = text.strip_prefix("s3://").ok_or_else(|| {
            invalid(format!(
                "-a {text}: a fleet build's artifacts go to s3://BUCKET/PREFIX (the build runs on a worker)"
            ))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid(format!("-a {text}: no bucket")));
        }
        job.artifacts_override = Some(Artifacts {
            kind: "S3".into(),
            location: Some(bucket.to_string()),
            path: (!prefix.trim_matches('/').is_empty())
                .then(|| prefix.trim_matches('/').to_string()),
            name: None,
            namespace_type: Some(
                match args.artifacts_namespace {
                    Namespace::None => "NONE",
                    Namespace::BuildId => "BUILD_ID",
                }
                .into(),
            ),
            packaging: Some(
                match args.artifacts_packaging {
                    Packaging::Zip => "ZIP",
                    Packaging::None => "NONE",
                }
                .into(),
            ),
        });
    }
    job.git_clone_depth_override = args.git_clone_depth;
    job.git_submodules_config_override = args.git_submodules.then_some(GitSubmodulesConfig {
        fetch_submodules: true,
    });
    if args.log_group.is_some() || args.s3_logs.is_some() {
        job.logs_config_override = Some(LogsConfig {
            cloud_watch_logs: args.log_group.as_ref().map(|group| CloudWatchLogsConfig {
                status: "ENABLED".into(),
                group_name: Some(group.clone()),
                stream_name: None,
            }),
            s3_logs: args.s3_logs.as_ref().map(|location| S3LogsConfig {
                status: "ENABLED".into(),
                location: Some(location.clone()),
            }),
        });
    }
    job.idempotency_token = args.idempotency_token.clone();
    job.validate().map_err(|e| invalid(e.to_string()))?;
    Ok((job, uploads))
}

/// The project named after the primary source, with the characters CodeBuild refuses as `-`.
fn project_of(primary: &SourceLocation) -> anyhow::Result<String> {
    let named = match primary {
        SourceLocation::Dir(dir) => std::path::absolute(dir)
            .ok()
            .and_then(|d| d.canonicalize().ok().or(Some(d)))
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned())),
        other => other.project_name(),
    };
    let name: String = named
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_matches('-').to_string();
    if name.is_empty() {
        return Err(invalid(
            "the source gives no project name: name it with --project",
        ));
    }
    Ok(name)
}

/// How the job names `location`: a Git URL without its credentials (they would sit in the
/// queue and the table; the workers have their own), an S3 URL, or a directory to upload.
fn source_of(location: &SourceLocation, shown: &str, args: &SubmitArgs) -> anyhow::Result<Source> {
    Ok(match location {
        SourceLocation::Dir(dir) => {
            if !dir.is_dir() {
                return Err(invalid(format!(
                    "-s {shown}: {} is not a directory",
                    dir.display()
                )));
            }
            if args.source_bucket.is_none() {
                return Err(invalid(format!(
                    "-s {shown}: a local directory is uploaded for the workers: give --source-bucket BUCKET (or a Git URL or an s3:// source)"
                )));
            }
            Source {
                location: None,
                upload: Some(dir.clone()),
            }
        }
        SourceLocation::Git(url) => Source {
            location: Some(url.clean()),
            upload: None,
        },
        other => Source {
            location: Some(other.to_string()),
            upload: None,
        },
    })
}

/// `-b`: a local file's text (sent in the job), else a path in the source.
fn buildspec(path: &Path) -> anyhow::Result<String> {
    if path.is_file() {
        let mut text = std::fs::read_to_string(path)
            .map_err(|e| invalid(format!("-b {}: {e}", path.display())))?;
        // A buildspec override is text, not a path, because it has a newline (CodeBuild's rule).
        if !text.contains('\n') {
            text.push('\n');
        }
        return Ok(text);
    }
    let text = path.to_string_lossy().into_owned();
    if text.is_empty() || text.contains('\n') {
        return Err(invalid(format!("-b {text:?}: not a buildspec path")));
    }
    Ok(text)
}

/// Zips the directory as `run` copies it (a Git work tree's tracked and untracked files and
/// `.git`, not what it ignores) and uploads the zip to `s3://bucket/key`.
async fn upload_dir(
    s3: &buildagent_runner::s3::S3Client,
    dir: &Path,
    bucket: &str,
    key: &str,
) -> anyhow::Result<()> {
    let dir = dir.to_path_buf();
    let temp = tempfile::Builder::new()
        .prefix("buildagent-submit-")
        .tempdir()
        .context("a temporary directory for the source's zip")?;
    let zip_path = temp.path().join("source.zip");
    {
        let zip_path = zip_path.clone();
        let temp_dir = temp.path().to_path_buf();
        tokio::task::spawn_blocking(move || zip_dir(&dir, &zip_path, &temp_dir))
            .await
            .context("zipping the source")??;
    }
    s3.upload(
        bucket,
        key,
        &zip_path,
        &[],
        false,
        &CancellationToken::new(),
    )
    .await
    .with_context(|| format!("uploading the source to s3://{bucket}/{key}"))?;
    Ok(())
}

fn zip_dir(dir: &Path, zip_path: &Path, temp: &Path) -> anyhow::Result<()> {
    let staged = temp.join("staged");
    buildagent_runner::source::stage(dir, &staged)
        .with_context(|| format!("reading the source {}", dir.display()))?;
    let mut entries = Vec::new();
    walk(&staged, &staged, &mut entries)
        .with_context(|| format!("reading the source {}", dir.display()))?;
    entries.sort_by(|a: &Entry, b| a.name.cmp(&b.name));
    let file = std::fs::File::create(zip_path)
        .with_context(|| format!("creating {}", zip_path.display()))?;
    let cancel = std::sync::atomic::AtomicBool::new(false);
    buildagent_runner::artifacts::write_zip(&entries, file, temp, &cancel)
        .context("zipping the source")?;
    Ok(())
}

fn walk(root: &Path, dir: &Path, entries: &mut Vec<Entry>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        let path = item.path();
        let meta = std::fs::symlink_metadata(&path)?;
        let name = path
            .strip_prefix(root)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if meta.file_type().is_symlink() {
            entries.push(Entry {
                name,
                kind: EntryKind::Symlink {
                    target: std::fs::read_link(&path)?,
                },
                path,
                mtime: None,
            });
        } else if meta.is_dir() {
            walk(root, &path, entries)?;
        } else if meta.is_file() {
            entries.push(Entry {
                name,
                kind: EntryKind::File {
                    mode: meta.permissions().mode() & 0o7777,
                    size: meta.len(),
                },
                path,
                mtime: None,
            });
        }
    }
    Ok(())
}
