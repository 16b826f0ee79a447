//! Faults between the agent and its services: the fault proxy of the tests crate
//! ([`buildagent_tests::fault_proxy`]) stands in front of the registry (both image engines) and
//! moto's S3, and answers 5xx, 429 with `Retry-After`, resets connections in the middle of a
//! body, stalls longer than the agent's timeout (`BUILDAGENT_NETWORK_TIMEOUT`, short here) and
//! cuts bodies short. Each test checks that:
//!
//! - the command succeeds through transient faults (every scheduled fault injected);
//! - with faults that persist past the retry budget it fails with its documented exit status,
//!   and nothing partial is left: no manifest whose blobs are missing, no object under its final
//!   key, no multipart upload left open;
//! - after the faults stop, the same command succeeds;
//! - what arrived is what was sent (every blob and object checked against its source).
//!
//! Each prints `faults: injected=N survived=M lost=0 (<what>; K after the faults stopped)`: the
//! faults the proxies injected, the operations (pushes, pulls, uploaded objects, cache saves and
//! restores) that succeeded through them, the blobs or objects that arrived wrong or not at all
//! (asserted to be 0), and the operations that succeeded once persistent faults stopped.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use buildagent_tests::fault_proxy::{Fault, FaultProxy, Until};
use buildagent_tests::images::{docker, RemoveImages};
use buildagent_tests::{s3_bucket, services, Run, Sandbox};

/// The agent's network timeout in these tests (`BUILDAGENT_NETWORK_TIMEOUT`), in seconds.
const TIMEOUT: &str = "3";

/// A stall: longer than [`TIMEOUT`].
const STALL: Duration = Duration::from_secs(5);

/// One fault, then `n` requests passed (so that no single request meets every fault in a row).
fn once(fault: Fault) -> (Fault, Until) {
    (fault, Until::Requests(1))
}

fn pass(n: u64) -> (Fault, Until) {
    (Fault::Pass, Until::Requests(n))
}

/// A fault for every request from now on (until [`FaultProxy::stop_faults`]).
fn always(fault: Fault) -> (Fault, Until) {
    (fault, Until::Elapsed(Duration::from_secs(600)))
}

/// Prints the line the report collects, after checking that nothing was lost.
fn report(what: &str, injected: u64, survived: u64, recovered: u64, lost: u64) {
    println!(
        "faults: injected={injected} survived={survived} lost={lost} ({what}; {recovered} after the faults stopped)"
    );
    assert_eq!(lost, 0, "{what}: data lost");
}

/// A name no other test (or earlier run) uses.
fn unique(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

/// Bytes that do not compress.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sh(script: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", script])
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{script}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sha256(path: &Path) -> String {
    let out = sh(&format!("sha256sum '{}'", path.display()));
    format!("sha256:{}", &out[..64])
}

fn last_line(text: &str) -> String {
    text.lines().last().unwrap_or("").trim().to_string()
}

// ---------------------------------------------------------------------------------------------
// Registries

/// The base image in `registry` as `REPO:latest` (pushed from the engine by skopeo, directly).
fn push_base(registry: &str, repo: &str) -> String {
    let image = services::base_image();
    services::tool("skopeo");
    let reference = format!("{registry}/{repo}:latest");
    sh(&format!(
        "skopeo copy -q --dest-tls-verify=false docker-daemon:{image} docker://{reference}"
    ));
    reference
}

/// The daemonless agent in `s` (its own content store), with the short network timeout.
fn oci_agent(s: &Sandbox, args: &[&str]) -> Run {
    let out = s
        .command(args)
        .env("XDG_CACHE_HOME", s.path().join("cache"))
        .env("BUILDAGENT_NETWORK_TIMEOUT", TIMEOUT)
        .env_remove("SOURCE_DATE_EPOCH")
        .stdin(Stdio::null())
        .output()
        .expect("run buildagent");
    Run::from(out)
}

/// The status of `GET /v2/REPO/manifests/TAG` on the registry itself (not through a proxy).
fn manifest_status(registry: &str, repo: &str, tag: &str) -> u16 {
    services::http_get(
        registry,
        &format!("/v2/{repo}/manifests/{tag}"),
        &[(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, \
             application/vnd.docker.distribution.manifest.v2+json",
        )],
    )
    .expect("the registry answers")
    .status
}

/// Copies `reference` (on the registry itself) into an OCI layout with skopeo, which checks every
/// blob's digest and size on the way; returns the manifest digest and how many blobs of the
/// manifest are missing from the copy or differ from their digest.
fn verify_image(s: &Sandbox, reference: &str, creds: Option<&(String, String)>) -> (String, u64) {
    let dir = s.path().join(unique("verify"));
    let creds = creds
        .map(|(u, p)| format!("--src-creds '{u}:{p}'"))
        .unwrap_or_default();
    sh(&format!(
        "skopeo copy -q --src-tls-verify=false {creds} --preserve-digests docker://{reference} oci:{}:x",
        dir.display()
    ));
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = |d: &str| dir.join("blobs/sha256").join(&d[7..]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(&digest)).unwrap()).unwrap();
    let mut wanted = vec![manifest["config"]["digest"].as_str().unwrap().to_string()];
    for layer in manifest["layers"].as_array().unwrap() {
        wanted.push(layer["digest"].as_str().unwrap().to_string());
    }
    let lost = wanted
        .iter()
        .filter(|d| !blob(d).is_file() || sha256(&blob(d)) != **d)
        .count() as u64;
    (digest, lost)
}

/// Files in the agent's content store whose name is not the digest of their bytes.
fn corrupt_store_blobs(s: &Sandbox) -> u64 {
    let mut bad = 0;
    let mut dirs = vec![s.path().join("cache")];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if dir.ends_with("sha256") {
                let name = entry.file_name().to_string_lossy().into_owned();
                if sha256(&path) != format!("sha256:{name}") {
                    bad += 1;
                }
            }
        }
    }
    bad
}

#[test]
fn oci_push_survives_faults_and_sends_no_manifest_before_its_blobs() {
    let registry = services::registry();
    let s = Sandbox::new();
    let base = push_base(&registry, &unique("faults/oci-push-base"));
    s.write("layer/big.bin", noise(3 << 20, 1));
    s.write("layer/small.txt", "small\n");
    let layer = format!("{}:/app", s.path().join("layer").display());
    let repo = unique("faults/oci-push");
    let manifests = format!("PUT /v2/{repo}/manifests/");
    // The base lives in the registry under its own address: through the proxy, another registry,
    // so its blobs are uploaded too (not mounted).
    let proxy = FaultProxy::start_schedules(
        &registry,
        vec![
            (
                Some(&manifests),
                vec![
                    once(Fault::registry_error(500, "UNKNOWN")),
                    once(Fault::Stall(STALL)),
                ],
            ),
            (
                Some("PATCH /v2/"),
                vec![once(Fault::Reset), pass(1), once(Fault::Reset)],
            ),
            (
                Some("HEAD /v2/"),
                vec![once(Fault::status(503)), once(Fault::too_many_requests(1))],
            ),
            (Some("POST /v2/"), vec![once(Fault::Drop)]),
            (Some("PUT /v2/"), vec![once(Fault::Truncate)]),
        ],
    );
    let target = format!("{}/{repo}:v1", proxy.addr());
    let run = oci_agent(
        &s,
        &[
            "image", "append", "--base", &base, "--layer", &layer, "-t", &target,
        ],
    );
    run.expect_code(0);
    assert!(proxy.faults_over(), "not every fault was injected: {run:?}");
    let stats = proxy.stats();
    assert_eq!(stats.injected(), 8, "{stats:?}");
    assert!(run.stderr.contains("retrying"), "{}", run.stderr);
    let (digest, lost) = verify_image(&s, &format!("{registry}/{repo}:v1"), None);
    assert_eq!(last_line(&run.stdout), digest);
    let mut injected = stats.injected();
    let survived = 1;

    // Faults that persist: every blob upload is reset. The push fails (status 3) after its
    // retries, and the registry never gets the manifest.
    let repo2 = unique("faults/oci-push-persistent");
    let proxy = FaultProxy::start_schedules(
        &registry,
        vec![(Some("PATCH /v2/"), vec![always(Fault::Reset)])],
    );
    let target = format!("{}/{repo2}:v1", proxy.addr());
    let args = [
        "image", "append", "--base", &base, "--layer", &layer, "-t", &target,
    ];
    let failed = oci_agent(&s, &args);
    failed.expect_code(3);
    assert!(
        failed.stderr.contains("failed after 5 attempts"),
        "{}",
        failed.stderr
    );
    assert_eq!(manifest_status(&registry, &repo2, "v1"), 404);
    injected += proxy.stats().injected();
    // The faults stop: the same command succeeds.
    proxy.stop_faults();
    let again = oci_agent(&s, &args);
    again.expect_code(0);
    let (digest2, lost2) = verify_image(&s, &format!("{registry}/{repo2}:v1"), None);
    assert_eq!(last_line(&again.stdout), digest2);
    assert_eq!(digest2, digest, "the same inputs give the same image");
    report("oci push", injected, survived, 1, lost + lost2);
}

#[test]
fn oci_base_image_pulls_survive_faults_and_cut_bodies() {
    let registry = services::registry();
    let s = Sandbox::new();
    let base_repo = unique("faults/oci-pull-base");
    push_base(&registry, &base_repo);
    s.write("layer/a.txt", "a\n");
    let layer = format!("{}:/app", s.path().join("layer").display());
    let manifests = format!("GET /v2/{base_repo}/manifests/");
    let blobs = format!("GET /v2/{base_repo}/blobs/");
    let proxy = FaultProxy::start_schedules(
        &registry,
        vec![
            (Some("GET /v2/ HTTP"), vec![once(Fault::status(503))]),
            (
                Some(&manifests),
                vec![
                    once(Fault::Truncate),
                    once(Fault::too_many_requests(1)),
                    once(Fault::status(502)),
                ],
            ),
            // The configuration (read whole), then the layer (into the content store).
            (
                Some(&blobs),
                vec![
                    once(Fault::Reset),
                    once(Fault::Truncate),
                    once(Fault::Stall(STALL)),
                    pass(1),
                    once(Fault::Reset),
                    once(Fault::Truncate),
                ],
            ),
        ],
    );
    // The base through the proxy; the result to the registry itself (another registry name, so
    // the base layer is fetched through the proxy and uploaded).
    let base = format!("{}/{base_repo}:latest", proxy.addr());
    let repo = unique("faults/oci-pull");
    let target = format!("{registry}/{repo}:v1");
    let args = [
        "image", "append", "--base", &base, "--layer", &layer, "-t", &target,
    ];
    let run = oci_agent(&s, &args);
    run.expect_code(0);
    assert!(proxy.faults_over(), "not every fault was injected: {run:?}");
    let stats = proxy.stats();
    assert_eq!(stats.injected(), 9, "{stats:?}");
    let (digest, lost) = verify_image(&s, &target, None);
    assert_eq!(last_line(&run.stdout), digest);
    let mut lost = lost + corrupt_store_blobs(&s);
    let mut injected = stats.injected();
    let survived = 1;

    // Every blob download reset, for good: status 3, no manifest pushed.
    let s2 = Sandbox::new();
    s2.write("layer/a.txt", "a\n");
    let layer2 = format!("{}:/app", s2.path().join("layer").display());
    let proxy =
        FaultProxy::start_schedules(&registry, vec![(Some(&blobs), vec![always(Fault::Reset)])]);
    let repo2 = unique("faults/oci-pull-persistent");
    let base = format!("{}/{base_repo}:latest", proxy.addr());
    let target2 = format!("{registry}/{repo2}:v1");
    let args = [
        "image", "append", "--base", &base, "--layer", &layer2, "-t", &target2,
    ];
    let failed = oci_agent(&s2, &args);
    failed.expect_code(3);
    assert!(
        failed.stderr.contains("failed after 5 attempts"),
        "{}",
        failed.stderr
    );
    assert_eq!(manifest_status(&registry, &repo2, "v1"), 404);
    assert_eq!(corrupt_store_blobs(&s2), 0);
    injected += proxy.stats().injected();
    proxy.stop_faults();
    let again = oci_agent(&s2, &args);
    again.expect_code(0);
    let (digest2, lost2) = verify_image(&s2, &target2, None);
    assert_eq!(last_line(&again.stdout), digest2);
    lost += lost2 + corrupt_store_blobs(&s2);
    report("oci pull (base image)", injected, survived, 1, lost);
}

/// A Docker build context whose image holds 1 MiB of noise and prints `token`.
fn docker_context(s: &Sandbox, token: &str) {
    s.write("ctx/noise.bin", noise(1 << 20, 7));
    s.write(
        "ctx/Dockerfile",
        format!(
            "FROM {}\nCOPY noise.bin /noise.bin\nRUN echo {token} > /token\nCMD [\"cat\", \"/token\"]\n",
            services::base_image()
        ),
    );
}

#[test]
fn docker_pushes_are_tried_again_through_registry_faults() {
    let registry = services::registry();
    let s = Sandbox::new();
    let token = unique("faults-docker");
    docker_context(&s, &token);
    let repo = unique("buildagent-test/faults-docker");
    let manifests = format!("PUT /v2/{repo}/manifests/");
    // The engine talks to the registry itself: it pushes to the proxy's loopback address
    // (127.0.0.0/8 is an insecure registry by default). It retries a layer upload on its own
    // (after 5 s); a manifest or a failed ping fails its push, which the agent tries again.
    let proxy = FaultProxy::start_schedules(
        &registry,
        vec![
            (
                Some(&manifests),
                vec![
                    once(Fault::registry_error(500, "UNKNOWN")),
                    once(Fault::Reset),
                ],
            ),
            (Some("GET /v2/ HTTP"), vec![once(Fault::status(503))]),
        ],
    );
    let image = format!("{}/{repo}:1", proxy.addr());
    let image2 = format!("{}/{repo}:2", proxy.addr());
    let _cleanup = RemoveImages(vec![image.clone(), image2.clone()]);
    let run = Run::from(
        s.command([
            "image", "build", "--engine", "docker", "-t", &image, "--push", "ctx",
        ])
        .env("BUILDAGENT_NETWORK_TIMEOUT", TIMEOUT)
        .output()
        .unwrap(),
    );
    run.expect_code(0);
    assert!(proxy.faults_over(), "not every fault was injected: {run:?}");
    let stats = proxy.stats();
    assert_eq!(stats.injected(), 3, "{stats:?}");
    assert!(run.stdout.contains("trying again"), "{}", run.stdout);
    let (digest, lost) = verify_image(&s, &format!("{registry}/{repo}:1"), None);
    assert!(
        run.stdout.contains(&format!("1: digest: {digest} ")),
        "{}",
        run.stdout
    );
    let mut injected = stats.injected();
    let survived = 1;

    // The manifest refused for good: status 3 after 4 tries, no manifest in the registry.
    let proxy = FaultProxy::start_schedules(
        &registry,
        vec![(
            Some(&manifests),
            vec![always(Fault::registry_error(503, "UNAVAILABLE"))],
        )],
    );
    let image2 = format!("{}/{repo}:2", proxy.addr());
    let _cleanup2 = RemoveImages(vec![image2.clone()]);
    docker(["tag", &image, &image2]).expect_code(0);
    let push = || {
        Run::from(
            s.command(["image", "push", &image2])
                .env("BUILDAGENT_NETWORK_TIMEOUT", TIMEOUT)
                .output()
                .unwrap(),
        )
    };
    let failed = push();
    failed.expect_code(3);
    assert!(
        failed.stdout.contains("(attempt 4 of 4)"),
        "{}",
        failed.stdout
    );
    assert!(
        failed.stderr.contains("pushing to registry"),
        "{}",
        failed.stderr
    );
    assert_eq!(manifest_status(&registry, &repo, "2"), 404);
    assert_eq!(proxy.stats().injected(), 4);
    injected += proxy.stats().injected();
    proxy.stop_faults();
    push().expect_code(0);
    let (digest2, lost2) = verify_image(&s, &format!("{registry}/{repo}:2"), None);
    assert_eq!(digest2, digest);
    // The image runs: what the engine pulls back is what was built.
    let ran = docker(["run", "--rm", "--network", "host", &image2]);
    ran.expect_code(0);
    assert_eq!(ran.stdout, format!("{token}\n"));
    report("docker push", injected, survived, 1, lost + lost2);
}

#[test]
fn docker_pulls_of_the_build_image_are_tried_again_through_registry_faults() {
    let registry = services::registry();
    let repo = unique("buildagent-test/faults-pull");
    push_base(&registry, &repo);
    let s = Sandbox::new();
    s.write(
        "buildspec.yml",
        "version: 0.2\nphases:\n  build:\n    commands:\n      - echo ran-in-the-pulled-image\n",
    );
    // Every manifest request, HEAD included: the engine resolves a tag with HEAD, and may have
    // the manifest itself already (its content store keeps blobs by digest).
    let manifests = format!("/v2/{repo}/manifests/");
    let build = |image: &str| {
        Run::from(
            s.command(["run", "-m", "--log-format", "codebuild", "-i", image])
                .env("BUILDAGENT_NETWORK_TIMEOUT", TIMEOUT)
                .output()
                .unwrap(),
        )
    };
    // The engine pulls from the proxy's loopback address (an insecure registry by default); a
    // manifest request it is refused or cut off on fails its pull, which the agent tries again.
    let proxy = FaultProxy::start_schedules(
        &registry,
        vec![(
            Some(&manifests),
            vec![
                once(Fault::registry_error(503, "UNAVAILABLE")),
                once(Fault::Reset),
            ],
        )],
    );
    let image = format!("{}/{repo}:latest", proxy.addr());
    let _cleanup = RemoveImages(vec![image.clone()]);
    let run = build(&image);
    run.expect_code(0);
    assert!(
        run.stdout.contains("ran-in-the-pulled-image"),
        "{}",
        run.stdout
    );
    assert!(proxy.faults_over(), "not every fault was injected: {run:?}");
    let mut injected = proxy.stats().injected();
    // The engine may ride these out itself (it falls back from HEAD to GET); either way the
    // build ran in the image.
    assert_eq!(injected, 2);

    // Refused for good: exit status 3 after 4 tries, the build never started; then it works.
    drop(_cleanup);
    let proxy = FaultProxy::start_schedules(
        &registry,
        vec![(
            Some(&manifests),
            vec![always(Fault::registry_error(503, "UNAVAILABLE"))],
        )],
    );
    let image = format!("{}/{repo}:latest", proxy.addr());
    let _cleanup2 = RemoveImages(vec![image.clone()]);
    let failed = build(&image);
    failed.expect_code(3);
    let all = format!("{}{}", failed.stdout, failed.stderr);
    assert!(all.contains("(attempt 4 of 4)"), "{all}");
    assert!(!failed.stdout.contains("ran-in-the-pulled-image"));
    injected += proxy.stats().injected();
    proxy.stop_faults();
    let run = build(&image);
    run.expect_code(0);
    assert!(
        run.stdout.contains("ran-in-the-pulled-image"),
        "{}",
        run.stdout
    );
    report("docker pull", injected, 1, 1, 0);
}

/// moto's default account, which its ECR token is for.
const ACCOUNT: &str = "123456789012";

#[test]
fn a_refused_ecr_token_is_fetched_again_once_on_the_docker_path() {
    let aws = services::aws();
    let registry = services::registry_auth();
    let creds = services::registry_ecr_credentials();
    let s = Sandbox::new();
    let token = unique("faults-ecr");
    docker_context(&s, &token);
    let ecr = format!("{ACCOUNT}.dkr.ecr.{}.amazonaws.com", aws.region);
    let repo = unique("buildagent-test/faults-ecr");
    // The registry refuses the token for the manifest, as it does one that expired during the
    // push (the engine retries a refused layer upload itself, with the same token, for 15 s;
    // a refused manifest fails its push at once).
    let manifests = format!("PUT /v2/{repo}/manifests/");
    let refused = Fault::Answer {
        status: 401,
        headers: vec![
            (
                "WWW-Authenticate".into(),
                "Basic realm=\"Registry Realm\"".into(),
            ),
            ("Content-Type".into(), "application/json".into()),
        ],
        body: br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#
            .to_vec(),
    };
    // Every ECR call goes through a second proxy, which counts them (GetAuthorizationToken).
    let ecr_api = FaultProxy::start(&aws.endpoint, vec![]);
    let run_with = |proxy: &FaultProxy, args: &[&str]| {
        let mut cmd = s.command(args);
        for (name, _) in std::env::vars() {
            if name.starts_with("AWS_") {
                cmd.env_remove(name);
            }
        }
        cmd.envs(aws.env())
            .env("AWS_ENDPOINT_URL_ECR", ecr_api.url())
            .env(
                "BUILDAGENT_ECR_ENDPOINTS",
                format!("{ecr}={}", proxy.addr()),
            )
            .env("DOCKER_CONFIG", s.path().join("no-docker-config"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", s.path().join("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                s.path().join("no-aws-credentials"),
            );
        Run::from(cmd.output().unwrap())
    };
    let proxy = FaultProxy::start_schedules(
        &registry,
        vec![(Some(&manifests), vec![once(refused.clone())])],
    );
    let image = format!("{ecr}/{repo}:1");
    let _cleanup = RemoveImages(vec![
        image.clone(),
        format!("{ecr}/{repo}:2"),
        format!("{}/{repo}:1", proxy.addr()),
    ]);
    let run = run_with(
        &proxy,
        &[
            "image", "build", "--engine", "docker", "-t", &image, "--push", "ctx",
        ],
    );
    run.expect_code(0);
    assert!(
        run.stdout.contains(&format!(
            "Registry {ecr} refused the ECR authorization token; fetching a new one"
        )),
        "{}",
        run.stdout
    );
    assert_eq!(ecr_api.stats().passed, 2, "one token, then one more");
    assert!(!run.stdout.contains(&creds.1) && !run.stderr.contains(&creds.1));
    let (_, lost) = verify_image(&s, &format!("{registry}/{repo}:1"), Some(&creds));
    let mut injected = proxy.stats().injected();

    // Refused for good: fetched again once only, then status 3 naming the token.
    let proxy =
        FaultProxy::start_schedules(&registry, vec![(Some(&manifests), vec![always(refused)])]);
    let image2 = format!("{ecr}/{repo}:2");
    let _cleanup2 = RemoveImages(vec![format!("{}/{repo}:2", proxy.addr())]);
    docker(["tag", &image, &image2]).expect_code(0);
    let before = ecr_api.stats().passed;
    let failed = run_with(&proxy, &["image", "push", &image2]);
    failed.expect_code(3);
    assert_eq!(ecr_api.stats().passed - before, 2, "fetched again once");
    assert!(
        failed
            .stderr
            .contains("fetched again once and refused again"),
        "{}",
        failed.stderr
    );
    assert_eq!(proxy.stats().injected(), 2);
    injected += proxy.stats().injected();
    proxy.stop_faults();
    run_with(&proxy, &["image", "push", &image2]).expect_code(0);
    report("ecr token on the docker path", injected, 1, 1, lost);
}

// ---------------------------------------------------------------------------------------------
// S3

/// A fresh bucket on moto, and an SDK client (straight to moto) to look into it.
struct Bucket(s3_bucket::Bucket);

impl std::ops::Deref for Bucket {
    type Target = s3_bucket::Bucket;

    fn deref(&self) -> &s3_bucket::Bucket {
        &self.0
    }
}

impl Bucket {
    fn new(test: &str) -> Bucket {
        Bucket(s3_bucket::Bucket::new(test))
    }

    /// Every object under `prefix`: key -> size.
    fn objects(&self, prefix: &str) -> BTreeMap<String, i64> {
        let out = self
            .runtime
            .block_on(
                self.client
                    .list_objects_v2()
                    .bucket(&self.name)
                    .prefix(prefix)
                    .send(),
            )
            .unwrap();
        out.contents()
            .iter()
            .map(|o| (o.key().unwrap().to_string(), o.size().unwrap()))
            .collect()
    }

    /// Multipart uploads begun and neither completed nor aborted.
    fn open_uploads(&self) -> usize {
        let out = self
            .runtime
            .block_on(
                self.client
                    .list_multipart_uploads()
                    .bucket(&self.name)
                    .send(),
            )
            .unwrap();
        out.uploads().len()
    }

    fn get(&self, key: &str) -> Vec<u8> {
        self.runtime.block_on(async {
            let out = self
                .client
                .get_object()
                .bucket(&self.name)
                .key(key)
                .send()
                .await
                .unwrap();
            out.body.collect().await.unwrap().into_bytes().to_vec()
        })
    }

    /// Runs `spec` in `dir/` (in place) with S3 requests through `proxy` and `args`.
    fn build(&self, s: &Sandbox, proxy: &FaultProxy, spec: &str, args: &[&str]) -> Run {
        s.write("src/buildspec.yml", spec);
        let mut cmd = s.command(["run", "-m", "--log-format", "codebuild", "-s"]);
        cmd.arg(s.path().join("src"))
            .args(args)
            .envs(self.aws.env())
            .env("AWS_ENDPOINT_URL_S3", proxy.url())
            .env("BUILDAGENT_NETWORK_TIMEOUT", TIMEOUT)
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_MAX_ATTEMPTS")
            .env_remove("AWS_RETRY_MODE");
        Run::from(cmd.output().expect("run buildagent"))
    }
}

/// The files of a zip: name -> bytes.
fn unzip(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a zip");
    (0..archive.len())
        .map(|i| {
            let mut file = archive.by_index(i).unwrap();
            let mut data = Vec::new();
            file.read_to_end(&mut data).unwrap();
            (file.name().unwrap().into_owned(), data)
        })
        .collect()
}

/// Files of `dir` named in a zip that differ from the zip's copy, or are missing from it.
fn zip_differences(zip: &BTreeMap<String, Vec<u8>>, dir: &Path, names: &[&str]) -> u64 {
    names
        .iter()
        .filter(|name| zip.get(**name) != std::fs::read(dir.join(name)).ok().as_ref())
        .count() as u64
}

/// 20 MiB that do not compress (a multipart upload: more than 16 MiB) and a small file, as the
/// primary artifact; the small file alone as a secondary one.
const ARTIFACTS: &str = "version: 0.2\n\
phases:\n  build:\n    commands:\n      - mkdir -p dist && head -c 20971520 /dev/urandom > dist/big.bin && echo small > dist/small.txt\n\
artifacts:\n  files: ['**/*']\n  base-directory: dist\n  name: app\n\
\x20 secondary-artifacts:\n    extra:\n      files: ['dist/small.txt']\n      discard-paths: yes\n      name: extra\n";

#[test]
fn s3_artifact_uploads_survive_faults_and_leave_nothing_half_written() {
    let bucket = Bucket::new("faults-artifacts");
    let s = Sandbox::new();
    let puts = format!("PUT /{}/", bucket.name);
    let posts = format!("POST /{}/", bucket.name);
    let proxy = FaultProxy::start_schedules(
        &bucket.aws.endpoint,
        vec![
            // CreateMultipartUpload, CompleteMultipartUpload.
            (Some(&posts), vec![once(Fault::s3_error(503, "SlowDown"))]),
            // The parts and the small object.
            (
                Some(&puts),
                vec![
                    once(Fault::Reset),
                    pass(1),
                    once(Fault::too_many_requests(1)),
                    pass(1),
                    once(Fault::Stall(STALL)),
                    pass(1),
                    once(Fault::s3_error(500, "InternalError")),
                ],
            ),
        ],
    );
    let url = format!("s3://{}/builds", bucket.name);
    let run = bucket.build(&s, &proxy, ARTIFACTS, &["-a", &url]);
    run.expect_code(0);
    assert!(proxy.faults_over(), "not every fault was injected: {run:?}");
    let stats = proxy.stats();
    assert_eq!(stats.injected(), 5, "{stats:?}");
    let objects = bucket.objects("builds/");
    assert_eq!(
        objects.keys().collect::<Vec<_>>(),
        ["builds/app.zip", "builds/extra.zip"],
        "{objects:?}"
    );
    assert_eq!(bucket.open_uploads(), 0);
    let dist = s.path().join("src/dist");
    let mut lost = zip_differences(
        &unzip(&bucket.get("builds/app.zip")),
        &dist,
        &["big.bin", "small.txt"],
    );
    lost += zip_differences(
        &unzip(&bucket.get("builds/extra.zip")),
        &dist,
        &["small.txt"],
    );
    let mut injected = stats.injected();
    let survived = 2;

    // Every upload reset, for good: the build fails (status 1, UPLOAD_ARTIFACTS), nothing is
    // under the prefix, no multipart upload is left open.
    let proxy = FaultProxy::start_schedules(
        &bucket.aws.endpoint,
        vec![(Some(&puts), vec![always(Fault::Reset)])],
    );
    let url = format!("s3://{}/persistent", bucket.name);
    let failed = bucket.build(&s, &proxy, ARTIFACTS, &["-a", &url]);
    failed.expect_code(1);
    assert!(
        failed.stdout.contains("UPLOAD_ARTIFACTS"),
        "{}",
        failed.stdout
    );
    assert_eq!(bucket.objects("persistent/"), BTreeMap::new());
    assert_eq!(bucket.open_uploads(), 0);
    injected += proxy.stats().injected();
    proxy.stop_faults();
    bucket
        .build(&s, &proxy, ARTIFACTS, &["-a", &url])
        .expect_code(0);
    lost += zip_differences(
        &unzip(&bucket.get("persistent/app.zip")),
        &dist,
        &["big.bin", "small.txt"],
    );
    lost += zip_differences(
        &unzip(&bucket.get("persistent/extra.zip")),
        &dist,
        &["small.txt"],
    );
    report("s3 artifact upload", injected, survived, 2, lost);
}

/// A spec whose BUILD reports whether `deps/` was restored (and the hash of its 3 MiB of noise),
/// then writes it afresh.
const CACHE: &str = "version: 0.2\n\
phases:\n  build:\n    commands:\n\
\x20     - if [ -f deps/blob ]; then echo \"restored=$(sha256sum < deps/blob | cut -c1-64)\"; else echo 'restored=nothing'; fi\n\
\x20     - rm -rf deps && mkdir -p deps && head -c 3145728 /dev/urandom > deps/blob && echo \"saved=$(sha256sum < deps/blob | cut -c1-64)\"\n\
cache:\n  key: deps-one\n  paths: ['deps/**/*']\n";

fn line_value<'a>(run: &'a Run, name: &str) -> &'a str {
    run.stdout
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("no `{name}` line\n{}", run.stdout))
}

#[test]
fn s3_cache_saves_and_restores_survive_faults() {
    let bucket = Bucket::new("faults-cache");
    let s = Sandbox::new();
    let store = format!("s3://{}/c", bucket.name);
    let puts = format!("PUT /{}/c/", bucket.name);
    let gets = format!("GET /{}/c/", bucket.name);
    // The save: one upload, refused three ways before it goes through.
    let proxy = FaultProxy::start_schedules(
        &bucket.aws.endpoint,
        vec![(
            Some(&puts),
            vec![
                once(Fault::Reset),
                once(Fault::too_many_requests(1)),
                once(Fault::Stall(STALL)),
            ],
        )],
    );
    let saved = bucket.build(&s, &proxy, CACHE, &["--cache", &store]);
    saved.expect_code(0);
    assert!(
        proxy.faults_over(),
        "not every fault was injected: {saved:?}"
    );
    assert_eq!(line_value(&saved, "restored="), "nothing");
    let hash = line_value(&saved, "saved=").to_string();
    let objects = bucket.objects("c/");
    assert_eq!(objects.len(), 1, "{objects:?}");
    let mut injected = proxy.stats().injected();
    assert_eq!(injected, 3);
    let mut survived = 1;

    // The restore: the download breaks off (a reset, a short body, a stall), then is throttled,
    // and still arrives whole.
    let proxy = FaultProxy::start_schedules(
        &bucket.aws.endpoint,
        vec![(
            Some(&gets),
            vec![
                once(Fault::Reset),
                once(Fault::Truncate),
                once(Fault::Stall(STALL)),
                once(Fault::s3_error(503, "SlowDown")),
            ],
        )],
    );
    std::fs::remove_dir_all(s.path().join("src/deps")).unwrap();
    let restored = bucket.build(&s, &proxy, CACHE, &["--cache", &store]);
    restored.expect_code(0);
    assert!(
        proxy.faults_over(),
        "not every fault was injected: {restored:?}"
    );
    assert_eq!(proxy.stats().injected(), 4);
    injected += 4;
    let mut lost = u64::from(line_value(&restored, "restored=") != hash);
    survived += 1;

    // Downloads that always break off: a warning and a miss (the build goes on, status 0), and
    // nothing half-restored.
    let proxy = FaultProxy::start_schedules(
        &bucket.aws.endpoint,
        vec![(Some(&gets), vec![always(Fault::Reset)])],
    );
    std::fs::remove_dir_all(s.path().join("src/deps")).unwrap();
    let missed = bucket.build(&s, &proxy, CACHE, &["--cache", &store]);
    missed.expect_code(0);
    assert_eq!(line_value(&missed, "restored="), "nothing");
    assert!(missed.stdout.contains("broke off"), "{}", missed.stdout);
    injected += proxy.stats().injected();
    // The entry was not touched, and restores once the faults stop.
    assert_eq!(bucket.objects("c/"), objects);
    proxy.stop_faults();
    std::fs::remove_dir_all(s.path().join("src/deps")).unwrap();
    let again = bucket.build(&s, &proxy, CACHE, &["--cache", &store]);
    again.expect_code(0);
    lost += u64::from(line_value(&again, "restored=") != hash);

    // Saves that always fail: a warning, nothing under the key, no upload left open.
    let store2 = format!("s3://{}/c2", bucket.name);
    let puts2 = format!("PUT /{}/c2/", bucket.name);
    let proxy = FaultProxy::start_schedules(
        &bucket.aws.endpoint,
        vec![(Some(&puts2), vec![always(Fault::Reset)])],
    );
    let unsaved = bucket.build(&s, &proxy, CACHE, &["--cache", &store2]);
    unsaved.expect_code(0);
    assert_eq!(bucket.objects("c2/"), BTreeMap::new());
    assert_eq!(bucket.open_uploads(), 0);
    injected += proxy.stats().injected();
    proxy.stop_faults();
    bucket
        .build(&s, &proxy, CACHE, &["--cache", &store2])
        .expect_code(0);
    assert_eq!(bucket.objects("c2/").len(), 1);
    report("s3 cache save and restore", injected, survived, 2, lost);
}

#[test]
fn a_bad_network_timeout_is_refused_up_front() {
    let s = Sandbox::new();
    for bad in ["soon", "0", "-3"] {
        let run = Run::from(
            s.command(["schema"])
                .env("BUILDAGENT_NETWORK_TIMEOUT", bad)
                .output()
                .unwrap(),
        );
        run.expect_code(2);
        assert!(
            run.stderr
                .contains(&format!("BUILDAGENT_NETWORK_TIMEOUT=`{bad}`")),
            "{}",
            run.stderr
        );
        assert!(run.stdout.is_empty());
    }
}
