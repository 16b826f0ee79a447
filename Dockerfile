# The agent as an image: `docker build -t buildagent .`
# Stage 1 builds a release binary; stage 2 is a small Debian with a shell, git and CA
# certificates (builds run shell commands and talk to registries and S3 over TLS).

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p buildagent \
 && install -D -m 0755 target/release/buildagent /out/buildagent

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends bash ca-certificates git \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/buildagent /usr/local/bin/buildagent
WORKDIR /workspace
ENTRYPOINT ["/usr/local/bin/buildagent"]
CMD ["--help"]
