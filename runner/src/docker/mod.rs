//! The Docker Engine, through its HTTP API ([`bollard`]).
//!
//! [`connect`] reaches the engine the way the docker CLI does (`DOCKER_HOST`, else the local
//! socket) and negotiates the API version: bollard's own default version is newer than many
//! engines in use (Debian's docker.io 20.10 speaks API 1.41 at most), and an engine answers a
//! request for a version it does not know with an error.
//!
//! - [`context`]: the build context sent to the engine, chosen by [`dockerignore`] rules, as a
//!   tar archive.
//! - [`image`]: `image build` and `image push` through the engine's API, with typed progress.

pub mod context;
pub mod dockerignore;
#[cfg(feature = "docker")]
pub mod image;

#[cfg(feature = "docker")]
pub use bollard::Docker;

/// Why the engine could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EngineError(pub String);

/// Where the engine is, as shown in messages: `DOCKER_HOST`, else the local socket.
pub fn engine_address() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string())
}

/// A client of the engine, with the API version both sides speak.
#[cfg(feature = "docker")]
pub async fn connect() -> Result<Docker, EngineError> {
    let address = engine_address();
    let unreachable = |e: bollard::errors::Error| {
        EngineError(format!(
            "cannot reach the Docker engine at {address}: {e} (is dockerd running? set DOCKER_HOST \
             to use another engine)"
        ))
    };
    let docker = Docker::connect_with_defaults().map_err(unreachable)?;
    let docker = docker.negotiate_version().await.map_err(unreachable)?;
    docker.ping().await.map_err(unreachable)?;
    Ok(docker)
}
