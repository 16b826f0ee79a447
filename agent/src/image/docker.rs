//! `image build --engine docker` and `image push`: through the Docker Engine API.
//!
//! The work is in `buildagent_runner::docker` (the context and its `.dockerignore`, the build
//! and push calls); this module checks the flags, finds the credentials, renders the progress on
//! standard output and maps failures to exit statuses: 0 done, 1 the build failed (a step),
//! 2 bad input (flags, context, Dockerfile, references), 3 the engine or a registry (unreachable,
//! credentials refused).

use std::collections::HashMap;
use std::io::{self, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use buildagent_runner::credentials::{self, registry_host, Credentials};
use buildagent_runner::docker::context::BuildContext;
use buildagent_runner::docker::image::{
    self, BuildError, BuildOptions, BuildProgress, LayerOutcome, PushError, PushProgress,
};
use buildagent_runner::docker::{connect, Docker};
use buildagent_runner::ecr;

use super::{BuildArgs, Engine, PushArgs};
use crate::run::InvalidInput;

/// Exit status of a build whose Dockerfile failed (a step).
const EXIT_BUILD_FAILED: u8 = 1;

fn invalid(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(InvalidInput(message.into()))
}

/// `image build --engine docker`.
pub fn build(args: &BuildArgs) -> anyhow::Result<ExitCode> {
    debug_assert_eq!(args.engine, Engine::Docker);
    if !args.output.is_empty() {
        return Err(invalid(
            "--output is for --engine oci; the docker engine keeps the image",
        ));
    }
    if args.push && args.tags.is_empty() {
        return Err(invalid("--push needs at least one -t/--tag to push"));
    }
    if args.network.is_empty() {
        return Err(invalid("--network: the mode is empty"));
    }
    let mut options = BuildOptions::default();
    options.tags = args.tags.clone();
    options.build_args = build_args(&args.build_args)?;
    options.labels = pairs("--label", &args.labels)?;
    options.target = args.target.clone();
    options.platform = args.platform.clone();
    options.network_mode = args.network.clone();
    options.no_cache = args.no_cache;
    let login = login(args.username.as_deref(), args.password_stdin)?;
    let endpoints = ecr::Endpoints::from_env().map_err(|e| invalid(e.to_string()))?;
    let context = BuildContext::scan(&args.context, args.file.as_deref())
        .map_err(|e| invalid(e.to_string()))?;

    let runtime = runtime()?;
    runtime.block_on(async {
        options.registry_credentials = base_credentials(&context, &endpoints).await;
        let docker = connect().await?;
        let mut out = Printer::stdout();
        let result = image::build(&docker, context, &options, |p| out.build(p)).await;
        out.end_transient();
        let built = match result {
            Ok(built) => built,
            Err(e @ BuildError::StepFailed { .. }) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(EXIT_BUILD_FAILED));
            }
            Err(
                e @ (BuildError::Context(_)
                | BuildError::ContextRead(_)
                | BuildError::BadReference { .. }
                | BuildError::Rejected { .. }),
            ) => return Err(invalid(e.to_string())),
            Err(e) => return Err(anyhow::Error::new(e)),
        };
        if args.push {
            let mut resolved = HashMap::new();
            for tag in &built.tags {
                push_one(&docker, tag, &login, &endpoints, &mut resolved, &mut out).await?;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `image push`.
pub fn push(args: &PushArgs) -> anyhow::Result<ExitCode> {
    let login = login(args.username.as_deref(), args.password_stdin)?;
    let endpoints = ecr::Endpoints::from_env().map_err(|e| invalid(e.to_string()))?;
    let runtime = runtime()?;
    runtime.block_on(async {
        let docker = connect().await?;
        let mut out = Printer::stdout();
        push_one(
            &docker,
            &args.reference,
            &login,
            &endpoints,
            &mut HashMap::new(),
            &mut out,
        )
        .await?;
        Ok(ExitCode::SUCCESS)
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // One thread for the API calls; the context archive is written on the blocking pool.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Where a push's credentials came from, for the message when the registry refuses them.
#[derive(Debug, Clone)]
enum Source {
    /// `--username` and `--password-stdin`.
    Flags,
    /// The Docker configuration (the file, when there is one).
    Config(Option<PathBuf>),
    /// ECR's `GetAuthorizationToken`.
    Ecr,
}

/// How many times a push that the registry failed (not refused) is tried in all: the engine
/// retries a layer upload itself, but not a manifest, nor a registry that did not answer.
const PUSH_ATTEMPTS: u32 = 4;

/// The wait before the second try of a push, doubled for each further one.
const PUSH_BACKOFF: std::time::Duration = std::time::Duration::from_secs(1);

/// Pushes `reference` with the credentials for its registry: the flags', else
/// [`credentials::lookup`]'s (the Docker configuration, an ECR token), else none; to the address
/// `endpoints` maps its registry to, if it does. `resolved` keeps each registry's answer for the
/// next tag (not an ECR token, which `ecr` caches and refreshes itself).
///
/// A push the registry failed is tried again with backoff, up to [`PUSH_ATTEMPTS`] times (a
/// push again only sends what the registry lacks); an ECR token the registry refuses is fetched
/// again once, as the daemonless client does.
async fn push_one(
    docker: &Docker,
    reference: &str,
    login: &Option<Credentials>,
    endpoints: &ecr::Endpoints,
    resolved: &mut HashMap<String, (Option<Credentials>, Source)>,
    out: &mut Printer,
) -> anyhow::Result<()> {
    let host = registry_host(reference).to_string();
    let mut attempt = 1;
    let mut token_refreshed = false;
    loop {
        // An ECR token is looked up again for each push: `ecr` caches it and fetches a new one
        // as it nears its expiry.
        let stale = matches!(resolved.get(&host), None | Some((_, Source::Ecr)));
        if stale {
            let found = match login {
                Some(c) => (Some(c.clone()), Source::Flags),
                None => match credentials::lookup(&host)
                    .await
                    .with_context(|| format!("cannot get the credentials for registry {host}"))?
                {
                    Some((c, credentials::Origin::EcrToken)) => (Some(c), Source::Ecr),
                    found => (
                        found.map(|(c, _)| c),
                        Source::Config(credentials::config_path()),
                    ),
                },
            };
            resolved.insert(host.clone(), found);
        }
        let (found, source) = &resolved[&host];
        let result = match endpoints.address(&host) {
            Some(address) => {
                if attempt == 1 && !token_refreshed {
                    out.line(&format!(
                        "Pushing {reference} through {address} ({})",
                        ecr::ENDPOINTS_VARIABLE
                    ));
                }
                image::push_to(docker, reference, address, found.as_ref(), |p| out.push(p)).await
            }
            None => image::push(docker, reference, found.as_ref(), |p| out.push(p)).await,
        };
        match &result {
            Err(PushError::Unauthorized { .. })
                if matches!(source, Source::Ecr) && !token_refreshed =>
            {
                // An expired or revoked token: the cached one goes, a new one is fetched (once).
                out.end_transient();
                out.line(&format!(
                    "Registry {host} refused the ECR authorization token; fetching a new one"
                ));
                ecr::forget(&host);
                token_refreshed = true;
                continue;
            }
            Err(e @ PushError::Registry { .. }) if attempt < PUSH_ATTEMPTS => {
                let wait = PUSH_BACKOFF * 2u32.pow(attempt - 1);
                attempt += 1;
                out.end_transient();
                out.line(&format!(
                    "Push of {reference} failed ({e}); trying again in {} s (attempt {attempt} of {PUSH_ATTEMPTS})",
                    wait.as_secs()
                ));
                tokio::time::sleep(wait).await;
                continue;
            }
            _ => {}
        }
        return finish_push(result, &host, found, source, out);
    }
}

/// The outcome of a push, with a hint naming where refused credentials came from.
fn finish_push(
    result: Result<image::PushedImage, PushError>,
    host: &str,
    found: &Option<Credentials>,
    source: &Source,
    out: &mut Printer,
) -> anyhow::Result<()> {
    out.end_transient();
    match result {
        Ok(_) => Ok(()),
        Err(e @ (PushError::BadReference { .. } | PushError::NotFound { .. })) => {
            Err(invalid(e.to_string()))
        }
        Err(e @ PushError::Unauthorized { .. }) => {
            let hint = match (found, source) {
                (Some(c), Source::Flags) => format!(
                    "the credentials of user `{}` from --username and --password-stdin; check them",
                    c.username
                ),
                (Some(_), Source::Ecr) => format!(
                    "the ECR authorization token for {host} from GetAuthorizationToken, fetched \
                     again once and refused again; check that the AWS identity may push to the \
                     repository"
                ),
                (Some(c), Source::Config(path)) => format!(
                    "the credentials of user `{}` for {host} from {}; check them, or pass \
                     --username and --password-stdin",
                    c.username,
                    shown(path)
                ),
                (None, _) => format!(
                    "no credentials were sent: none given with --username, none for {host} in {}; \
                     pass --username and --password-stdin, or log in with `docker login {host}`",
                    shown(&credentials::config_path())
                ),
            };
            Err(anyhow::anyhow!("{e} ({hint})"))
        }
        Err(e) => Err(anyhow::Error::new(e)),
    }
}

fn shown(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => p.display().to_string(),
        None => "the Docker configuration (no DOCKER_CONFIG, no HOME)".to_string(),
    }
}

/// The credentials of `--username` with the password from standard input, if given.
fn login(username: Option<&str>, password_stdin: bool) -> anyhow::Result<Option<Credentials>> {
    let Some(username) = username else {
        return Ok(None);
    };
    if username.is_empty() {
        return Err(invalid("--username: the user name is empty"));
    }
    if !password_stdin {
        return Err(invalid(
            "--username needs --password-stdin (the password is read from standard input)",
        ));
    }
    let mut password = String::new();
    io::stdin()
        .read_to_string(&mut password)
        .context("reading the password from standard input")?;
    // As `docker login --password-stdin`: one trailing newline is not part of the password.
    let password = password.strip_suffix('\n').unwrap_or(&password);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err(invalid("--password-stdin: standard input held no password"));
    }
    Ok(Some(Credentials {
        username: username.to_string(),
        password: password.to_string(),
        identity_token: None,
    }))
}

/// The credentials for the registries the Dockerfile's `FROM` lines pull from
/// ([`credentials::lookup`]: the Docker configuration, an ECR token). One that cannot be had is
/// a warning: the pull may not need it. The engine pulls `FROM` images by their own names, so
/// an ECR name that `endpoints` maps is still pulled from ECR (a warning says so).
async fn base_credentials(
    context: &BuildContext,
    endpoints: &ecr::Endpoints,
) -> Vec<(String, Credentials)> {
    let Ok(dockerfile) = std::fs::read_to_string(context.dockerfile_path()) else {
        return Vec::new();
    };
    let mut found: Vec<(String, Credentials)> = Vec::new();
    for base in image::base_images(&dockerfile) {
        let host = registry_host(&base).to_string();
        if found.iter().any(|(h, _)| *h == host) {
            continue;
        }
        if endpoints.address(&host).is_some() {
            eprintln!(
                "warning: the engine pulls {base} from {host} itself; {} does not apply to FROM \
                 images",
                ecr::ENDPOINTS_VARIABLE
            );
        }
        match credentials::lookup(&host).await {
            Ok(Some((c, _))) => found.push((host, c)),
            Ok(None) => {}
            Err(e) => eprintln!("warning: no credentials for {host} (pulling {base}): {e}"),
        }
    }
    found
}

/// `--build-arg K=V` values; `K` alone takes the value of the variable `K` of the agent's
/// environment, as docker does.
fn build_args(values: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    values
        .iter()
        .map(|v| match v.split_once('=') {
            Some(_) => pair("--build-arg", v),
            None if v.is_empty() => Err(invalid("--build-arg: empty; expected K=V")),
            None => match std::env::var(v) {
                Ok(value) => Ok((v.clone(), value)),
                Err(_) => Err(invalid(format!(
                    "--build-arg `{v}`: no `=` and no variable {v} in the environment; expected K=V"
                ))),
            },
        })
        .collect()
}

fn pairs(flag: &str, values: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    values.iter().map(|v| pair(flag, v)).collect()
}

fn pair(flag: &str, value: &str) -> anyhow::Result<(String, String)> {
    match value.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(invalid(format!(
            "{flag} `{value}`: expected K=V with a non-empty K"
        ))),
    }
}

/// Renders build and push progress: one line per message, and on a terminal a line that is
/// redrawn in place for byte counts (cleared before the next line).
struct Printer {
    out: io::Stdout,
    tty: bool,
    transient: bool,
}

impl Printer {
    fn stdout() -> Printer {
        let out = io::stdout();
        let tty = out.is_terminal();
        Printer {
            out,
            tty,
            transient: false,
        }
    }

    fn line(&mut self, text: &str) {
        self.end_transient();
        // Output is best effort: a closed stdout must not stop the build or the push.
        let _ = writeln!(self.out, "{text}");
    }

    fn transient(&mut self, text: &str) {
        if self.tty {
            let _ = write!(self.out, "\r\x1b[K{text}");
            let _ = self.out.flush();
            self.transient = true;
        }
    }

    fn end_transient(&mut self) {
        if self.transient {
            let _ = write!(self.out, "\r\x1b[K");
            let _ = self.out.flush();
            self.transient = false;
        }
    }

    fn build(&mut self, progress: BuildProgress) {
        match progress {
            BuildProgress::SendingContext { files, bytes } => self.line(&format!(
                "Sending build context to Docker daemon  {} ({files} files)",
                human_bytes(bytes)
            )),
            BuildProgress::Step(step) => self.line(&format!(
                "Step {}/{} : {}",
                step.number, step.total, step.instruction
            )),
            BuildProgress::Output(text) => self.line(&text),
            BuildProgress::Status {
                id,
                status,
                current,
                total,
            } => {
                let id = id.map(|i| format!("{i}: ")).unwrap_or_default();
                match (current, total) {
                    (Some(c), Some(t)) if t > 0 => self.transient(&format!(
                        "{id}{status} {} / {}",
                        human_bytes(c),
                        human_bytes(t)
                    )),
                    (Some(_), _) => {}
                    _ => self.line(&format!("{id}{status}")),
                }
            }
            BuildProgress::Tagged { reference } => {
                self.line(&format!("Successfully tagged {reference}"))
            }
            // The engine says `Successfully built ...` itself.
            BuildProgress::Built { .. } => {}
            _ => {}
        }
    }

    fn push(&mut self, progress: PushProgress) {
        match progress {
            PushProgress::Started { reference, layers } => self.line(&format!(
                "Pushing {reference} ({layers} layer{})",
                if layers == 1 { "" } else { "s" }
            )),
            PushProgress::Uploading { current, total } => self.transient(&format!(
                "  uploading a layer: {} / {}",
                human_bytes(current),
                human_bytes(total)
            )),
            PushProgress::Layer {
                outcome,
                done,
                total,
            } => {
                let what = match outcome {
                    LayerOutcome::Pushed => "pushed".to_string(),
                    LayerOutcome::AlreadyExists => "already exists".to_string(),
                    LayerOutcome::Mounted { from } => format!("mounted from {from}"),
                    _ => "done".to_string(),
                };
                self.line(&format!("  layer {done}/{total}: {what}"))
            }
            PushProgress::Status(text) => self.line(&format!("  {text}")),
            PushProgress::Pushed { tag, digest, size } => {
                self.line(&format!("{tag}: digest: {digest} size: {size}"))
            }
            _ => {}
        }
    }
}

/// `1.99MB`, as docker shows sizes (powers of 1000).
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n}B")
    } else {
        format!("{value:.2}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_pairs() {
        assert_eq!(
            pairs("--label", &["a=b=c".into(), "e=".into()]).unwrap(),
            [("a".into(), "b=c".into()), ("e".into(), String::new())]
        );
        for bad in ["=v", "novalue", ""] {
            let err = pairs("--label", &[bad.into()]).unwrap_err();
            assert!(err.downcast_ref::<InvalidInput>().is_some(), "{bad}: {err}");
        }
        std::env::set_var("BUILDAGENT_TEST_BUILD_ARG", "from-env");
        assert_eq!(
            build_args(&["BUILDAGENT_TEST_BUILD_ARG".into()]).unwrap(),
            [("BUILDAGENT_TEST_BUILD_ARG".into(), "from-env".into())]
        );
        assert!(build_args(&["BUILDAGENT_TEST_NO_SUCH_VARIABLE".into()]).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(human_bytes(999), "999B");
        assert_eq!(human_bytes(1_985_991), "1.99MB");
        assert_eq!(human_bytes(35_840), "35.84kB");
    }
}
