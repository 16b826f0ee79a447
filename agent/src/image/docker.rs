//! `image build --engine docker` and `image push`: through the Docker Engine API.

use std::process::ExitCode;

use super::{BuildArgs, PushArgs};

/// `image build --engine docker`.
pub fn build(_args: &BuildArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`image build --engine docker` is not available in this version yet")
}

/// `image push`.
pub fn push(_args: &PushArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`image push` is not available in this version yet")
}
