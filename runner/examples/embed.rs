//! Embedding the engine: run a buildspec on this machine and print what its commands write.
//! `cargo run -p buildagent-runner --example embed`; `cargo test` runs it too.
use std::sync::Arc;

use buildagent_runner::engine::{Build, BuildOptions};
use buildagent_runner::events::{BuildStatus, EventKind};
use buildagent_runner::executor::{HostExecutor, StopRequest};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let yaml = "version: 0.2\nphases:\n  build:\n    commands:\n      - echo hello from $CODEBUILD_BUILD_ID\n";
    let spec = buildagent_spec::parse(yaml, &Default::default())
        .buildspec
        .ok_or("invalid buildspec")?;
    let source = tempfile::tempdir()?;
    let build = Build::new(
        spec,
        BuildOptions::new(source.path()),
        Arc::new(HostExecutor::new()),
    );
    let result = build.run(StopRequest::new(), Default::default(), |event| {
        if let EventKind::Output { bytes, .. } = event.kind {
            print!("{}", String::from_utf8_lossy(&bytes));
        }
    });
    match result.await.status {
        BuildStatus::Succeeded => Ok(()),
        status => Err(format!("the build ended {status:?}").into()),
    }
}

#[test]
fn runs() {
    main().unwrap();
}
