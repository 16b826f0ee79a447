//! `image build --engine oci` and `image append`: daemonless, writing OCI layers directly
//! ([`buildagent_runner::oci`]). This module reads the flags, renders progress on standard error
//! and prints the manifest digest on standard output; bad input exits 2, a registry,
//! authentication or file failure 3.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use buildagent_runner::credentials::{self, Credentials};
use buildagent_runner::ecr;
use buildagent_runner::oci::dockerfile::{self, BuildOptions};
use buildagent_runner::oci::registry::{ClientOptions, Reference};
use buildagent_runner::oci::{
    AppendLayer, Compression as OciCompression, ConfigEdits, Image, OciError, Output, Platform,
    Progress, Session, SessionOptions,
};

use super::{AppendArgs, BuildArgs, Compression};
use crate::run::InvalidInput;

/// `image build --engine oci`.
pub fn build(args: &BuildArgs) -> anyhow::Result<ExitCode> {
    let dockerfile = args
        .file
        .clone()
        .unwrap_or_else(|| args.context.join("Dockerfile"));
    let text = std::fs::read_to_string(&dockerfile).map_err(|e| {
        invalid(format!(
            "cannot read the Dockerfile {}: {e}",
            dockerfile.display()
        ))
    })?;
    if !args.context.is_dir() {
        return Err(invalid(format!(
            "the build context {} is not a directory",
            args.context.display()
        )));
    }
    // BuildKit's rule: `<Dockerfile>.dockerignore` beside the Dockerfile wins over the
    // context's `.dockerignore`.
    let beside = PathBuf::from(format!("{}.dockerignore", dockerfile.display()));
    let ignore = [beside, args.context.join(".dockerignore")]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok());
    let build_args = args
        .build_args
        .iter()
        .map(|a| match a.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            // `--build-arg NAME` takes the value from the environment, as docker does.
            None => std::env::var(a)
                .map(|v| (a.clone(), v))
                .map_err(|_| invalid(format!("--build-arg {a}: no value and no such variable"))),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let labels = pairs(&args.labels, "--label")?;
    let platform = match &args.platform {
        Some(p) => Platform::parse(p).map_err(|e| invalid(format!("--platform: {e}")))?,
        None => Platform::host(),
    };
    let outputs = outputs(&args.tags, &args.output)?;
    let session = session(
        platform,
        args.compression,
        args.username.as_deref(),
        args.password_stdin,
        args.tags.first().map(String::as_str),
    )?;
    let options = BuildOptions {
        file: dockerfile.display().to_string(),
        text,
        context: args.context.clone(),
        ignore,
        build_args,
        target: args.target.clone(),
        labels,
    };
    let runtime = runtime()?;
    runtime.block_on(async {
        let image = dockerfile::build(&session, &options)
            .await
            .map_err(oci_error)?;
        write_outputs(&session, &image, &outputs).await
    })
}

/// `image append`.
pub fn append(args: &AppendArgs) -> anyhow::Result<ExitCode> {
    let layers = args
        .layers
        .iter()
        .map(|l| {
            // DIR[:DEST], DEST absolute: the last `:/` splits.
            let (dir, dest) = match l.rfind(":/") {
                Some(i) if i > 0 => (&l[..i], &l[i + 1..]),
                _ => (l.as_str(), "/"),
            };
            AppendLayer {
                source: PathBuf::from(dir),
                dest: dest.to_string(),
            }
        })
        .collect::<Vec<_>>();
    let edits = ConfigEdits {
        entrypoint: args.entrypoint.as_deref().map(command).transpose()?,
        cmd: args.cmd.as_deref().map(command).transpose()?,
        env: pairs(&args.env, "--env")?,
        labels: pairs(&args.labels, "--label")?,
        workdir: args.workdir.clone(),
        user: args.user.clone(),
    };
    let outputs = outputs(&args.tags, &args.output)?;
    let session = session(
        Platform::host(),
        args.compression,
        args.username.as_deref(),
        args.password_stdin,
        args.tags.first().map(String::as_str),
    )?;
    let runtime = runtime()?;
    runtime.block_on(async {
        let image = session
            .append(&args.base, &layers, &edits)
            .await
            .map_err(oci_error)?;
        write_outputs(&session, &image, &outputs).await
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn invalid(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(InvalidInput(message.into()))
}

/// Bad input (and missing bases) exit 2; registry, authentication and I/O failures 3.
fn oci_error(e: OciError) -> anyhow::Error {
    if e.is_input() {
        invalid(e.to_string())
    } else {
        anyhow::anyhow!("{e}")
    }
}

/// `K=V` flags.
fn pairs(values: &[String], flag: &str) -> anyhow::Result<Vec<(String, String)>> {
    values
        .iter()
        .map(|v| {
            v.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| invalid(format!("{flag} {v}: expected NAME=VALUE")))
        })
        .collect()
}

/// `--entrypoint`/`--cmd`: a JSON array, or a plain command run by `/bin/sh -c`; empty clears.
fn command(text: &str) -> anyhow::Result<Vec<String>> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(Vec::new());
    }
    if t.starts_with('[') {
        return serde_json::from_str(t)
            .map_err(|e| invalid(format!("`{t}` is not a JSON array of strings: {e}")));
    }
    Ok(vec!["/bin/sh".into(), "-c".into(), t.to_string()])
}

fn outputs(tags: &[String], extra: &[String]) -> anyhow::Result<Vec<Output>> {
    let mut out = Vec::new();
    for t in tags {
        Reference::parse(t).map_err(oci_error)?;
        out.push(Output::Registry(t.clone()));
    }
    for o in extra {
        let mut output = Output::parse(o).map_err(oci_error)?;
        if let Output::DockerArchive { tags: names, .. } = &mut output {
            names.extend(tags.iter().cloned());
        }
        out.push(output);
    }
    if out.is_empty() {
        return Err(invalid(
            "nothing to write the image to: give -t REF (push) or --output oci:DIR / docker-archive:FILE",
        ));
    }
    Ok(out)
}

fn session(
    platform: Platform,
    compression: Compression,
    username: Option<&str>,
    password_stdin: bool,
    first_tag: Option<&str>,
) -> anyhow::Result<Session> {
    let mut client = ClientOptions {
        endpoints: ecr::Endpoints::from_env().map_err(|e| invalid(e.to_string()))?,
        timeout: buildagent_runner::net::timeout().map_err(invalid)?,
        ..ClientOptions::default()
    };
    if let Some(user) = username {
        let mut password = String::new();
        if password_stdin {
            std::io::stdin()
                .read_to_string(&mut password)
                .context("cannot read the password from standard input")?;
        }
        let host = first_tag.map(credentials::registry_host).ok_or_else(|| {
            invalid("--username needs a -t REF: the credentials are for its registry")
        })?;
        client.credentials = Some((
            host.to_string(),
            Credentials {
                username: user.to_string(),
                password: password.trim_end_matches(['\n', '\r']).to_string(),
                identity_token: None,
            },
        ));
    }
    let progress: Arc<dyn Fn(&Progress) + Send + Sync> = Arc::new(render);
    let options = SessionOptions {
        platform,
        compression: match compression {
            Compression::Gzip => OciCompression::Gzip { level: 1 },
            Compression::Zstd => OciCompression::Zstd { level: 3 },
        },
        client,
        progress: Some(progress),
        ..SessionOptions::default()
    };
    Session::new(options).map_err(oci_error)
}

fn short(d: &buildagent_runner::oci::Digest) -> &str {
    &d.as_str()[..19]
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// One line on standard error per step.
fn render(p: &Progress) {
    let line = match p {
        Progress::BaseResolved { base, digest } => format!("base {base} {digest}"),
        Progress::LayerWritten {
            digest,
            size,
            tar_size,
            seconds,
        } => format!(
            "layer {} {} ({} uncompressed) in {seconds:.2} s",
            short(digest),
            mib(*size),
            mib(*tar_size)
        ),
        Progress::BlobFetched { digest, size } => {
            format!("fetched {} {}", short(digest), mib(*size))
        }
        Progress::BlobExists { digest } => format!("exists {}", short(digest)),
        Progress::BlobMounted { digest, from } => format!("mounted {} from {from}", short(digest)),
        Progress::BlobUploaded {
            digest,
            size,
            seconds,
        } => format!(
            "uploaded {} {} in {seconds:.2} s",
            short(digest),
            mib(*size)
        ),
        Progress::Retrying {
            request,
            attempt,
            reason,
        } => format!("retrying {request} (attempt {attempt}): {reason}"),
        Progress::ManifestPushed { reference, digest } => format!("pushed {reference} {digest}"),
        _ => return,
    };
    eprintln!("{line}");
}

async fn write_outputs(
    session: &Session,
    image: &Image,
    outputs: &[Output],
) -> anyhow::Result<ExitCode> {
    let mut digest = None;
    for output in outputs {
        let written = session.output(image, output).await.map_err(oci_error)?;
        match output {
            Output::Layout { dir, tag } => eprintln!(
                "wrote oci:{}{}",
                display(dir),
                tag.as_deref().map(|t| format!(":{t}")).unwrap_or_default()
            ),
            Output::DockerArchive { path, .. } => {
                eprintln!("wrote docker-archive:{}", display(path))
            }
            Output::Registry(_) => {}
        }
        digest = Some(written.digest);
    }
    if let Some(d) = digest {
        println!("{d}");
    }
    Ok(ExitCode::SUCCESS)
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
