//! The runner built with and without its optional features (`cargo test -p buildagent-runner
//! --no-default-features --test features` in scripts/test.sh, and with the defaults in the
//! whole suite): a host build always runs, and without `aws` whatever needs AWS fails with an
//! error that says so instead of being silently skipped.

use std::sync::Arc;

use buildagent_runner::engine::{Build, BuildOptions, BuildResult};
#[cfg(not(feature = "aws"))]
use buildagent_runner::events::{BuildPhase, PhaseStatus};
use buildagent_runner::events::{BuildStatus, EventKind};
use buildagent_runner::executor::{HostExecutor, StopRequest};

/// Runs `yaml` on the host in a new directory; returns the result and every message and line
/// of output the build reported.
async fn run(yaml: &str, setup: impl FnOnce(&mut BuildOptions)) -> (BuildResult, String) {
    let spec = buildagent_spec::parse(yaml, &Default::default())
        .buildspec
        .expect("a valid buildspec");
    let source = tempfile::tempdir().unwrap();
    let mut options = BuildOptions::new(source.path());
    setup(&mut options);
    let mut text = String::new();
    let build = Build::new(spec, options, Arc::new(HostExecutor::new()));
    let result = build
        .run(
            StopRequest::new(),
            Default::default(),
            |event| match event.kind {
                EventKind::Output { bytes, .. } => text.push_str(&String::from_utf8_lossy(&bytes)),
                other => text.push_str(&format!("{other:?}\n")),
            },
        )
        .await;
    (result, text)
}

#[cfg(not(feature = "aws"))]
fn phase(result: &BuildResult, phase: BuildPhase) -> PhaseStatus {
    result
        .phases
        .iter()
        .find(|p| p.phase == phase)
        .unwrap()
        .status
}

#[tokio::test]
async fn a_host_build_runs() {
    let (result, text) = run(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - echo built by $CODEBUILD_BUILD_ID\n",
        |_| {},
    )
    .await;
    assert_eq!(result.status, BuildStatus::Succeeded, "{text}");
    assert!(text.contains("built by "), "{text}");
}

#[cfg(not(feature = "aws"))]
#[tokio::test]
async fn without_aws_a_parameter_store_value_fails_the_build_and_says_why() {
    let (result, text) = run(
        "version: 0.2\nenv:\n  parameter-store:\n    TOKEN: /app/token\nphases:\n  build:\n    commands:\n      - echo never\n",
        |_| {},
    )
    .await;
    assert_eq!(result.status, BuildStatus::Failed, "{text}");
    assert!(!text.contains("never"), "{text}");
    assert!(
        text.contains("parameter /app/token: it is not in the secrets file, and this build of buildagent-runner has no AWS support (its `aws` feature)"),
        "{text}"
    );
}

#[cfg(not(feature = "aws"))]
#[tokio::test]
async fn without_aws_s3_artifacts_fail_the_upload_and_say_why() {
    use buildagent_runner::location::Location;
    let (result, text) = run(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - echo data > out.txt\nartifacts:\n  files: [out.txt]\n",
        |o| {
            o.artifacts(Location::S3("s3://bucket/builds".parse().unwrap()));
        },
    )
    .await;
    assert_eq!(result.status, BuildStatus::Failed, "{text}");
    assert_eq!(phase(&result, BuildPhase::Build), PhaseStatus::Succeeded);
    assert_eq!(
        phase(&result, BuildPhase::UploadArtifacts),
        PhaseStatus::Failed
    );
    assert!(
        text.contains("this build of buildagent-runner has no AWS support (its `aws` feature)"),
        "{text}"
    );
}
