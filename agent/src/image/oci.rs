//! `image build --engine oci` and `image append`: daemonless, writing OCI layers directly.

use std::process::ExitCode;

use super::{AppendArgs, BuildArgs};

/// `image build --engine oci`.
pub fn build(_args: &BuildArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`image build --engine oci` is not available in this version yet")
}

/// `image append`.
pub fn append(_args: &AppendArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`image append` is not available in this version yet")
}
