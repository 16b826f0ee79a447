//! `image append` and `image build --engine oci` end to end: images written without a daemon,
//! checked by other tools (umoci, skopeo, docker), pushed to the test registries directly and
//! through a fault-injecting proxy written here.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use buildagent_tests::{services, Run, Sandbox};

/// Runs the agent in `s` with its own content store (`XDG_CACHE_HOME` in the sandbox).
fn agent(s: &Sandbox, args: &[&str]) -> Run {
    agent_with(s, args, &[])
}

/// [`agent`] with more environment variables.
fn agent_with(s: &Sandbox, args: &[&str], env: &[(&str, &Path)]) -> Run {
    let out = s
        .command(args)
        .envs(env.iter().copied())
        .env("XDG_CACHE_HOME", s.path().join("cache"))
        .env_remove("SOURCE_DATE_EPOCH")
        .stdin(Stdio::null())
        .output()
        .expect("run buildagent");
    Run::from(out)
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

fn sha256_file(path: &Path) -> String {
    let out = sh(&format!("sha256sum '{}'", path.display()));
    format!("sha256:{}", &out[..64])
}

/// The base image in the registry `registry` as `REPO:latest` (pushed from the engine by skopeo).
fn push_base(registry: &str, repo: &str) -> String {
    let image = services::base_image();
    services::tool("skopeo");
    let reference = format!("{registry}/{repo}:latest");
    sh(&format!(
        "skopeo copy -q --dest-tls-verify=false docker-daemon:{image} docker://{reference}"
    ));
    reference
}

/// A small tree: a script, a data file and a hard link to it, a symbolic link, a nested file.
fn files(s: &Sandbox) -> std::path::PathBuf {
    let root = s.path().join("files");
    s.write(
        "files/bin/hello.sh",
        "#!/bin/sh\necho hello from the layer\n",
    );
    std::fs::set_permissions(
        root.join("bin/hello.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    s.write("files/data/a.txt", "alpha\n");
    s.write("files/data/deep/b.txt", "beta\n");
    std::fs::hard_link(root.join("data/a.txt"), root.join("data/a-link.txt")).unwrap();
    std::os::unix::fs::symlink("a.txt", root.join("data/sym")).unwrap();
    root
}

/// `name` made unique to this run: the registries keep what earlier runs pushed, and a blob
/// already in a repository is never uploaded again.
fn unique(name: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{name}-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn last_line(text: &str) -> String {
    text.lines().last().unwrap_or("").trim().to_string()
}

#[test]
fn append_to_an_oci_layout_unpacks_with_umoci_and_diff_ids_match() {
    let umoci = services::tool("umoci");
    let s = Sandbox::new();
    let root = files(&s);
    let layout = s.path().join("layout");
    let run = agent(
        &s,
        &[
            "image",
            "append",
            "--base",
            "scratch",
            "--layer",
            &format!("{}:/app", root.display()),
            "--cmd",
            r#"["/app/bin/hello.sh"]"#,
            "--env",
            "GREETING=hi",
            "--label",
            "org.example.k=v",
            "--output",
            &format!("oci:{}:v1", layout.display()),
        ],
    );
    run.expect_code(0);
    let digest = last_line(&run.stdout);
    let index = json(&std::fs::read_to_string(layout.join("index.json")).unwrap());
    let entry = &index["manifests"][0];
    assert_eq!(entry["digest"], digest.as_str());
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        "v1"
    );
    let blob = |d: &str| layout.join("blobs/sha256").join(&d["sha256:".len()..]);
    let manifest = json(&std::fs::read_to_string(blob(&digest)).unwrap());
    let config = json(
        &std::fs::read_to_string(blob(manifest["config"]["digest"].as_str().unwrap())).unwrap(),
    );
    assert_eq!(config["config"]["Cmd"][0], "/app/bin/hello.sh");
    assert_eq!(config["config"]["Env"][0], "GREETING=hi");
    assert_eq!(config["config"]["Labels"]["org.example.k"], "v");
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    let layer = &layers[0];
    assert_eq!(
        layer["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let layer_path = blob(layer["digest"].as_str().unwrap());
    assert_eq!(sha256_file(&layer_path), layer["digest"].as_str().unwrap());
    assert_eq!(
        std::fs::metadata(&layer_path).unwrap().len(),
        layer["size"].as_u64().unwrap()
    );
    // The diff id is the SHA-256 of the uncompressed tar.
    let diff_id = sh(&format!("gzip -dc '{}' | sha256sum", layer_path.display()));
    assert_eq!(
        format!("sha256:{}", &diff_id[..64]),
        config["rootfs"]["diff_ids"][0].as_str().unwrap()
    );
    // The tar lists parents first, sorted, every time 0, owners 0.
    let listing = sh(&format!(
        "gzip -dc '{}' | tar -tv --numeric-owner --full-time",
        layer_path.display()
    ));
    let names: Vec<&str> = listing
        .lines()
        .map(|l| l.split_whitespace().nth(5).unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "app/",
            "app/bin/",
            "app/bin/hello.sh",
            "app/data/",
            "app/data/a-link.txt",
            "app/data/a.txt",
            "app/data/deep/",
            "app/data/deep/b.txt",
            "app/data/sym"
        ],
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .all(|l| l.contains(" 0/0 ") && l.contains("1970-01-01 00:00:00")),
        "{listing}"
    );
    assert!(
        listing.contains("app/data/a.txt link to app/data/a-link.txt"),
        "{listing}"
    );

    let bundle = s.path().join("bundle");
    let out = Command::new(umoci)
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:v1", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rootfs = bundle.join("rootfs/app");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("bin/hello.sh")).unwrap(),
        "#!/bin/sh\necho hello from the layer\n"
    );
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(
        std::fs::metadata(rootfs.join("bin/hello.sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    let a = std::fs::metadata(rootfs.join("data/a.txt")).unwrap();
    let link = std::fs::metadata(rootfs.join("data/a-link.txt")).unwrap();
    assert_eq!(a.ino(), link.ino(), "the hard link is kept");
    assert_eq!(
        std::fs::read_link(rootfs.join("data/sym")).unwrap(),
        Path::new("a.txt")
    );
    let runtime = json(&std::fs::read_to_string(bundle.join("config.json")).unwrap());
    assert_eq!(runtime["process"]["args"][0], "/app/bin/hello.sh");
}

/// Unpacks `oci:LAYOUT:TAG` with umoci into `bundle` and returns the root file system.
fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) -> std::path::PathBuf {
    let out = Command::new(services::tool("umoci"))
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .arg(bundle)
        .output()
        .expect("run umoci");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    bundle.join("rootfs")
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn a_copy_into_the_base_tmp_keeps_its_mode_and_goes_into_directories() {
    let registry = services::registry();
    let s = Sandbox::new();
    // An OCI base (umoci reads no Docker schema 2), pushed by skopeo.
    let base = format!("{registry}/{}:latest", unique("oci-tests/tmp-base"));
    services::tool("skopeo");
    sh(&format!(
        "skopeo copy -q --format oci --dest-tls-verify=false docker-daemon:{} docker://{base}",
        services::base_image()
    ));
    // The base's /tmp is 1777 (busybox's), /bin a plain directory.
    let base_tmp = sh(&format!(
        "docker run --rm {} stat -c %a /tmp",
        services::base_image()
    ));
    assert_eq!(base_tmp.trim(), "1777");
    s.write(
        "ctx/Dockerfile",
        format!(
            "FROM {base}\nCOPY f /tmp/f\nCOPY g /tmp\nCOPY h /var/spool/deep/h\nCOPY d/ /tmp/d/\n"
        ),
    );
    s.write("ctx/f", "f\n");
    s.write("ctx/g", "g\n");
    s.write("ctx/h", "h\n");
    s.write("ctx/d/e", "e\n");
    let layout = s.path().join("layout");
    let run = agent(
        &s,
        &[
            "image",
            "build",
            "--engine",
            "oci",
            "--output",
            &format!("oci:{}:v1", layout.display()),
            s.path().join("ctx").to_str().unwrap(),
        ],
    );
    run.expect_code(0);
    // The layer's own header for tmp/ carries the base's mode, not 0755.
    let index = json(&std::fs::read_to_string(layout.join("index.json")).unwrap());
    let blob = |d: &str| layout.join("blobs/sha256").join(&d["sha256:".len()..]);
    let manifest = json(
        &std::fs::read_to_string(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    );
    let layers = manifest["layers"].as_array().unwrap();
    let first_copy = blob(layers[layers.len() - 4]["digest"].as_str().unwrap());
    let listing = sh(&format!(
        "gzip -dc '{}' | tar -tv --numeric-owner",
        first_copy.display()
    ));
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("drwxrwxrwt") && l.ends_with(" tmp/")),
        "{listing}"
    );
    let rootfs = umoci_unpack(&layout, "v1", &s.path().join("bundle"));
    assert_eq!(mode_of(&rootfs.join("tmp")), 0o1777);
    assert_eq!(
        std::fs::read_to_string(rootfs.join("tmp/f")).unwrap(),
        "f\n"
    );
    // `COPY g /tmp` puts g into the existing directory instead of replacing it.
    assert_eq!(
        std::fs::read_to_string(rootfs.join("tmp/g")).unwrap(),
        "g\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("tmp/d/e")).unwrap(),
        "e\n"
    );
    // The base's other files are still there, and new parents are 0755.
    assert!(rootfs.join("bin/busybox").is_file());
    assert_eq!(mode_of(&rootfs.join("var/spool/deep")), 0o755);
    assert_eq!(
        std::fs::read_to_string(rootfs.join("var/spool/deep/h")).unwrap(),
        "h\n"
    );
}

#[test]
fn a_layer_replacing_a_lower_directory_with_a_file_unpacks_as_the_file() {
    let s = Sandbox::new();
    s.write("one/d/x", "lower file\n");
    s.write("one/keep", "kept\n");
    s.write("two/d", "now a file\n");
    let layout = s.path().join("layout");
    for (dir, base, tag) in [
        ("one", "scratch".to_string(), "v1"),
        ("two", format!("oci:{}:v1", layout.display()), "v2"),
    ] {
        agent(
            &s,
            &[
                "image",
                "append",
                "--base",
                &base,
                "--layer",
                &format!("{}:/", s.path().join(dir).display()),
                "--output",
                &format!("oci:{}:{tag}", layout.display()),
            ],
        )
        .expect_code(0);
    }
    let rootfs = umoci_unpack(&layout, "v2", &s.path().join("bundle"));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("d")).unwrap(),
        "now a file\n"
    );
    assert!(!rootfs.join("d/x").exists());
    assert_eq!(
        std::fs::read_to_string(rootfs.join("keep")).unwrap(),
        "kept\n"
    );
}

#[test]
fn the_same_inputs_give_byte_identical_blobs_and_the_same_digest() {
    let s = Sandbox::new();
    let root = files(&s);
    let mut digests = Vec::new();
    for (i, compression) in ["gzip", "gzip", "zstd", "zstd"].iter().enumerate() {
        // A fresh store each time: nothing is reused between the runs.
        let other = Sandbox::new();
        let layout = s.path().join(format!("out{i}"));
        let run = agent(
            &other,
            &[
                "image",
                "append",
                "--base",
                "scratch",
                "--compression",
                compression,
                "--layer",
                &format!("{}:/srv", root.display()),
                "--output",
                &format!("oci:{}", layout.display()),
            ],
        );
        run.expect_code(0);
        digests.push(last_line(&run.stdout));
        // Touching the files between runs changes nothing: times are not recorded.
        sh(&format!("touch '{}'/data/a.txt", root.display()));
    }
    assert_eq!(digests[0], digests[1]);
    assert_eq!(digests[2], digests[3]);
    assert_ne!(digests[0], digests[2]);
    let listing = |i: usize| {
        sh(&format!(
            "cd '{}/out{i}/blobs/sha256' && sha256sum *",
            s.path().display()
        ))
    };
    assert_eq!(listing(0), listing(1));
    assert_eq!(listing(2), listing(3));
    // SOURCE_DATE_EPOCH changes the times, so the digest.
    let layout = s.path().join("epoch");
    let out = s
        .command([
            "image",
            "append",
            "--base",
            "scratch",
            "--layer",
            &format!("{}:/srv", root.display()),
            "--output",
            &format!("oci:{}", layout.display()),
        ])
        .env("XDG_CACHE_HOME", s.path().join("cache"))
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    let run = Run::from(out);
    run.expect_code(0);
    assert_ne!(last_line(&run.stdout), digests[0]);
}

#[test]
fn a_push_is_what_skopeo_reads_and_copies() {
    let registry = services::registry();
    let s = Sandbox::new();
    let root = files(&s);
    let base = push_base(&registry, &unique("oci-tests/skopeo-base"));
    let target = format!("{registry}/{}:v1", unique("oci-tests/skopeo-app"));
    let run = agent(
        &s,
        &[
            "image",
            "append",
            "--base",
            &base,
            "--layer",
            &format!("{}:/app", root.display()),
            "-t",
            &target,
        ],
    );
    run.expect_code(0);
    let digest = last_line(&run.stdout);
    assert!(run.stderr.contains("mounted "), "{}", run.stderr);
    let raw = sh(&format!(
        "skopeo inspect --raw --tls-verify=false docker://{target}"
    ));
    let raw_path = s.write("raw.json", &raw);
    assert_eq!(sha256_file(&raw_path), digest);
    let manifest = json(&raw);
    let inspect = json(&sh(&format!(
        "skopeo inspect --tls-verify=false docker://{target}"
    )));
    assert_eq!(inspect["Digest"], digest.as_str());
    // The base was Docker schema 2: so is the result, and the base layer is the same blob.
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let base_raw = json(&sh(&format!(
        "skopeo inspect --raw --tls-verify=false docker://{base}"
    )));
    assert_eq!(manifest["layers"][0], base_raw["layers"][0]);
    // A copy checks every digest and size on the way.
    let copy = s.path().join("copy");
    sh(&format!(
        "skopeo copy -q --src-tls-verify=false docker://{target} oci:{}:x",
        copy.display()
    ));
    for layer in manifest["layers"].as_array().unwrap() {
        let d = layer["digest"].as_str().unwrap();
        let path = copy.join("blobs/sha256").join(&d[7..]);
        assert_eq!(sha256_file(&path), d);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            layer["size"].as_u64().unwrap()
        );
    }
}

#[test]
fn a_dockerfile_image_pulls_and_runs_in_docker() {
    let registry = services::registry();
    services::docker();
    let s = Sandbox::new();
    let base = push_base(&registry, &unique("oci-tests/run-base"));
    s.write(
        "ctx/Dockerfile",
        format!(
            "# a comment\nARG BASE={base}\nFROM $BASE AS app\nARG WHO=nobody\n\
             ENV WHO=$WHO \\\n    PLACE=\"the registry\"\nLABEL org.example.name=\"demo app\"\n\
             WORKDIR /app\nCOPY --chmod=755 greet.sh ./\nCOPY conf/ /etc/greet/\n\
             COPY --chown=1000:1000 data.txt /data/\nEXPOSE 8080 53/udp\n\
             ENTRYPOINT [\"/app/greet.sh\"]\nCMD [\"extra\"]\nSTOPSIGNAL SIGINT\n\
             HEALTHCHECK --interval=30s --retries=2 CMD [\"true\"]\n"
        ),
    );
    s.write(
        "ctx/greet.sh",
        "#!/bin/sh\necho \"hello $WHO from $PLACE, args: $*\"\ncat /etc/greet/greeting.txt\nls -ln /data/data.txt | awk '{print $3\":\"$4}'\ntest -e /app/secret.txt || echo ignored\n",
    );
    s.write("ctx/conf/greeting.txt", "greetings file\n");
    s.write("ctx/data.txt", "data\n");
    s.write("ctx/secret.txt", "secret\n");
    s.write("ctx/.dockerignore", "secret.txt\n");
    let target = format!("{registry}/{}:v1", unique("oci-tests/run-app"));
    let run = agent(
        &s,
        &[
            "image",
            "build",
            "--engine",
            "oci",
            "-t",
            &target,
            "--build-arg",
            "WHO=buildagent",
            "--label",
            "org.example.extra=1",
            s.path().join("ctx").to_str().unwrap(),
        ],
    );
    run.expect_code(0);
    sh(&format!("docker pull -q {target}"));
    let out = sh(&format!("docker run --rm --network host {target}"));
    assert_eq!(
        out,
        "hello buildagent from the registry, args: extra\ngreetings file\n1000:1000\nignored\n"
    );
    let config = json(&sh(&format!(
        "docker image inspect --format '{{{{json .Config}}}}' {target}"
    )));
    assert_eq!(config["WorkingDir"], "/app");
    assert_eq!(config["Labels"]["org.example.name"], "demo app");
    assert_eq!(config["Labels"]["org.example.extra"], "1");
    assert_eq!(config["StopSignal"], "SIGINT");
    assert_eq!(
        config["Healthcheck"]["Test"],
        serde_json::json!(["CMD", "true"])
    );
    assert_eq!(config["Healthcheck"]["Interval"], 30_000_000_000u64);
    assert!(config["ExposedPorts"]["53/udp"].is_object());
    sh(&format!("docker image rm -f {target} >/dev/null"));
}

#[test]
fn a_docker_archive_loads_into_docker_and_runs() {
    let registry = services::registry();
    services::docker();
    let s = Sandbox::new();
    let base = push_base(&registry, &unique("oci-tests/archive-base"));
    s.write(
        "ctx/Dockerfile",
        format!("FROM {base}\nCOPY hi.sh /hi.sh\nCMD [\"/hi.sh\"]\n"),
    );
    s.write("ctx/hi.sh", "#!/bin/sh\necho loaded from an archive\n");
    std::fs::set_permissions(
        s.path().join("ctx/hi.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let archive = s.path().join("image.tar");
    let name = "buildagent-test/oci-archive:v1";
    let run = agent(
        &s,
        &[
            "image",
            "build",
            "--engine",
            "oci",
            "--output",
            &format!("docker-archive:{}:{name}", archive.display()),
            s.path().join("ctx").to_str().unwrap(),
        ],
    );
    run.expect_code(0);
    assert!(run.stderr.contains("fetched "), "{}", run.stderr);
    let loaded = sh(&format!("docker load -i '{}'", archive.display()));
    assert!(loaded.contains(name), "{loaded}");
    assert_eq!(
        sh(&format!("docker run --rm --network host {name}")),
        "loaded from an archive\n"
    );
    sh(&format!("docker image rm -f {name} >/dev/null"));
}

#[test]
fn the_htpasswd_registry_takes_the_right_password_and_refuses_a_wrong_one() {
    let registry = services::registry_auth();
    let (user, password) = services::registry_credentials();
    let s = Sandbox::new();
    let root = files(&s);
    let target = format!("{registry}/{}:v1", unique("oci-tests/auth"));
    let push = |password: &str| {
        let mut child = s
            .command([
                "image",
                "append",
                "--base",
                "scratch",
                "--layer",
                root.to_str().unwrap(),
                "-t",
                &target,
                "--username",
                &user,
                "--password-stdin",
            ])
            .env("XDG_CACHE_HOME", s.path().join("cache"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{password}\n").as_bytes())
            .unwrap();
        Run::from(child.wait_with_output().unwrap())
    };
    let wrong = push("not-the-password");
    wrong.expect_code(3);
    assert!(
        wrong.stderr.contains("authentication failed")
            && wrong.stderr.contains("refused the credentials"),
        "{}",
        wrong.stderr
    );
    let right = push(&password);
    right.expect_code(0);
    let digest = last_line(&right.stdout);
    let inspect = json(&sh(&format!(
        "skopeo inspect --tls-verify=false --creds {user}:{password} docker://{target}"
    )));
    assert_eq!(inspect["Digest"], digest.as_str());
    // Without credentials at all: a clear message, status 3.
    let anonymous = agent(
        &s,
        &[
            "image",
            "append",
            "--base",
            "scratch",
            "--layer",
            root.to_str().unwrap(),
            "-t",
            &target,
        ],
    );
    anonymous.expect_code(3);
    assert!(
        anonymous.stderr.contains("needs credentials"),
        "{}",
        anonymous.stderr
    );
}

#[test]
fn bad_input_is_status_2_with_a_clear_message() {
    let registry = services::registry();
    let s = Sandbox::new();
    let root = files(&s);
    let missing = agent(
        &s,
        &[
            "image",
            "append",
            "--base",
            &format!("{registry}/oci-tests/no-such-image:1"),
            "--layer",
            root.to_str().unwrap(),
            "--output",
            &format!("oci:{}", s.path().join("out").display()),
        ],
    );
    missing.expect_code(2);
    assert!(
        missing.stderr.contains("the base image") && missing.stderr.contains("was not found"),
        "{}",
        missing.stderr
    );
    s.write("ctx/Dockerfile", "FROM scratch\nCOPY a /a\nRUN echo no\n");
    s.write("ctx/a", "a");
    let run = agent(
        &s,
        &[
            "image",
            "build",
            "--engine",
            "oci",
            "--output",
            &format!("oci:{}", s.path().join("out").display()),
            s.path().join("ctx").to_str().unwrap(),
        ],
    );
    run.expect_code(2);
    assert!(
        run.stderr.contains("Dockerfile:3: RUN needs a container")
            && run.stderr.contains("--engine docker"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("layer "),
        "nothing is built before the error: {}",
        run.stderr
    );
    s.write("ctx/Dockerfile", "FROM scratch\nCOPY nothing-here /x\n");
    let run = agent(
        &s,
        &[
            "image",
            "build",
            "--engine",
            "oci",
            "--output",
            &format!("oci:{}", s.path().join("out").display()),
            s.path().join("ctx").to_str().unwrap(),
        ],
    );
    run.expect_code(2);
    assert!(
        run.stderr.contains("Dockerfile:2: COPY nothing-here"),
        "{}",
        run.stderr
    );
    let run = agent(
        &s,
        &[
            "image",
            "append",
            "--base",
            "scratch",
            "--layer",
            root.to_str().unwrap(),
            "--output",
            "tarball:x",
        ],
    );
    run.expect_code(2);
}

/// One request the proxy saw.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    body: usize,
    /// Answered by the proxy itself (a fault, or the token front's 401s).
    answered: bool,
}

/// One request as the proxy read it, for its `answer` function.
struct Request {
    method: String,
    path: String,
    /// The header lines, `Name: value`.
    headers: Vec<String>,
    body: Vec<u8>,
}

impl Request {
    /// The value of header `name`.
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|h| {
            let (n, v) = h.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// A whole HTTP response, to answer a request with instead of forwarding it.
fn response(status: &str, headers: &[&str], body: &str) -> Vec<u8> {
    let mut text = format!("HTTP/1.1 {status}\r\n");
    for h in headers {
        text.push_str(h);
        text.push_str("\r\n");
    }
    text.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    text.into_bytes()
}

/// An HTTP proxy on 127.0.0.1 in front of `upstream`: each connection carries one request (the
/// proxy answers `Connection: close`); a request `answer` gives a response for gets that one
/// without reaching the registry, the others are forwarded. Every request is logged.
struct Proxy {
    addr: String,
    log: Arc<Mutex<Vec<Seen>>>,
}

type Answer = dyn Fn(&Request, &str) -> Option<Vec<u8>> + Send + Sync;

impl Proxy {
    /// A fault-injecting proxy: requests for which `fail(method, path)` says yes get a 500.
    fn start(upstream: &str, fail: impl Fn(&str, &str) -> bool + Send + Sync + 'static) -> Proxy {
        Proxy::answering(upstream, move |r, _| {
            fail(&r.method, &r.path).then(|| response("500 Internal Server Error", &[], ""))
        })
    }

    /// A proxy where `answer(request, own address)` decides which requests it answers itself.
    fn answering(
        upstream: &str,
        answer: impl Fn(&Request, &str) -> Option<Vec<u8>> + Send + Sync + 'static,
    ) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let log = Arc::new(Mutex::new(Vec::new()));
        let answer: Arc<Answer> = Arc::new(answer);
        let upstream = upstream.to_string();
        let thread_log = Arc::clone(&log);
        let own = addr.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let (log, answer, upstream, own) = (
                    Arc::clone(&thread_log),
                    Arc::clone(&answer),
                    upstream.clone(),
                    own.clone(),
                );
                std::thread::spawn(move || {
                    let _ = serve(conn, &upstream, &own, &*answer, &log);
                });
            }
        });
        Proxy { addr, log }
    }

    fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }
}

fn serve(
    mut client: TcpStream,
    upstream: &str,
    own: &str,
    answer: &Answer,
    log: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = client.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("").to_string();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut length = 0usize;
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse().unwrap_or(0);
        }
        if name.eq_ignore_ascii_case("connection") {
            continue;
        }
        headers.push(line.to_string());
    }
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = client.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let request = Request {
        method,
        path,
        headers,
        body,
    };
    let answered = answer(&request, own);
    log.lock().unwrap().push(Seen {
        method: request.method.clone(),
        path: request.path.clone(),
        body: request.body.len(),
        answered: answered.is_some(),
    });
    if let Some(answered) = answered {
        client.write_all(&answered)?;
        return Ok(());
    }
    let Request { headers, body, .. } = request;
    let mut server = TcpStream::connect(upstream)?;
    let mut request = format!("{request_line}\r\n");
    for h in headers {
        request.push_str(&h);
        request.push_str("\r\n");
    }
    request.push_str("Connection: close\r\n\r\n");
    server.write_all(request.as_bytes())?;
    server.write_all(&body)?;
    let mut response = Vec::new();
    server.read_to_end(&mut response)?;
    // The client reuses nothing: this connection ends with the response.
    let text_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or(response.len());
    let head = String::from_utf8_lossy(&response[..text_end])
        .replace("Connection: keep-alive", "Connection: close");
    client.write_all(head.as_bytes())?;
    client.write_all(&response[text_end..])?;
    Ok(())
}

fn uploads(seen: &[Seen]) -> Vec<&Seen> {
    seen.iter()
        .filter(|r| r.path.contains("/blobs/uploads/") && r.method != "HEAD")
        .collect()
}

#[test]
fn an_unchanged_push_sends_only_heads_and_the_manifest() {
    let registry = services::registry();
    let s = Sandbox::new();
    let root = files(&s);
    let proxy = Proxy::start(&registry, |_, _| false);
    // skopeo writes to the registry itself; the agent reads the same repository through the proxy.
    let base_repo = unique("oci-tests/unchanged-base");
    push_base(&registry, &base_repo);
    let base = format!("{}/{base_repo}:latest", proxy.addr);
    let target = format!("{}/{}:v1", proxy.addr, unique("oci-tests/unchanged"));
    let args = [
        "image",
        "append",
        "--base",
        &base,
        "--layer",
        root.to_str().unwrap(),
        "-t",
        &target,
    ];
    agent(&s, &args).expect_code(0);
    let before = proxy.seen().len();
    let started = std::time::Instant::now();
    let again = agent(&s, &args);
    let elapsed = started.elapsed();
    again.expect_code(0);
    let seen = proxy.seen()[before..].to_vec();
    assert!(uploads(&seen).is_empty(), "{seen:#?}");
    let heads = seen.iter().filter(|r| r.method == "HEAD").count();
    assert_eq!(heads, 3, "two layers and the config: {seen:#?}");
    let puts: Vec<&Seen> = seen.iter().filter(|r| r.method == "PUT").collect();
    assert_eq!(puts.len(), 1, "{seen:#?}");
    assert!(puts[0].path.ends_with("/manifests/v1"), "{seen:#?}");
    assert!(seen
        .iter()
        .all(|r| r.method != "PATCH" && (r.method != "PUT" || r.body < 2048)));
    eprintln!("an unchanged re-push (build and push, whole process): {elapsed:?}");
}

#[test]
fn a_push_to_a_second_repository_mounts_the_base_layers() {
    let registry = services::registry();
    let s = Sandbox::new();
    let root = files(&s);
    let proxy = Proxy::start(&registry, |_, _| false);
    // skopeo writes to the registry itself; the agent reads the same repository through the proxy.
    let base_repo = unique("oci-tests/mount-base");
    push_base(&registry, &base_repo);
    let base = format!("{}/{base_repo}:latest", proxy.addr);
    let target = format!("{}/{}:v1", proxy.addr, unique("oci-tests/mount-target"));
    let run = agent(
        &s,
        &[
            "image",
            "append",
            "--base",
            &base,
            "--layer",
            root.to_str().unwrap(),
            "-t",
            &target,
        ],
    );
    run.expect_code(0);
    assert!(run.stderr.contains("mounted "), "{}", run.stderr);
    let seen = proxy.seen();
    let mounts: Vec<&Seen> = seen
        .iter()
        .filter(|r| {
            r.method == "POST"
                && r.path.contains("mount=")
                && r.path
                    .contains(&format!("from={}", base_repo.replace('/', "%2F")))
        })
        .collect();
    assert_eq!(mounts.len(), 1, "{seen:#?}");
    // The base layer was read (its headers tell where the new layer goes) but never sent back:
    // only the new layer and the config were uploaded.
    let patches = seen.iter().filter(|r| r.method == "PATCH").count();
    assert_eq!(patches, 2, "{seen:#?}");
}

#[test]
fn a_registry_answering_500_twice_still_gets_the_image() {
    let registry = services::registry();
    let s = Sandbox::new();
    let root = files(&s);
    let failures = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&failures);
    let proxy = Proxy::start(&registry, move |method, path| {
        // The first two final PUTs of a blob upload fail; the third goes through (201).
        method == "PUT"
            && path.contains("/blobs/uploads/")
            && counter.fetch_add(1, Ordering::SeqCst) < 2
    });
    let flaky = unique("oci-tests/flaky");
    let target = format!("{}/{flaky}:v1", proxy.addr);
    let run = agent(
        &s,
        &[
            "image",
            "append",
            "--base",
            "scratch",
            "--layer",
            root.to_str().unwrap(),
            "-t",
            &target,
        ],
    );
    run.expect_code(0);
    assert_eq!(
        run.stderr.matches("retrying upload of").count(),
        2,
        "{}",
        run.stderr
    );
    let seen = proxy.seen();
    assert_eq!(seen.iter().filter(|r| r.answered).count(), 2);
    let digest = last_line(&run.stdout);
    let inspect = json(&sh(&format!(
        "skopeo inspect --tls-verify=false docker://{registry}/{flaky}:v1"
    )));
    assert_eq!(inspect["Digest"], digest.as_str());
    // A registry that keeps failing: status 3 after the retries, naming the request.
    let proxy = Proxy::start(&registry, |method, _| method == "PUT");
    let target = format!("{}/{}:v1", proxy.addr, unique("oci-tests/broken"));
    let run = agent(
        &s,
        &[
            "image",
            "append",
            "--base",
            "scratch",
            "--layer",
            root.to_str().unwrap(),
            "-t",
            &target,
        ],
    );
    run.expect_code(3);
    assert!(
        run.stderr.contains("failed after 5 attempts"),
        "{}",
        run.stderr
    );
}

/// `application/x-www-form-urlencoded` fields.
fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    let decode = |text: &str| {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).unwrap()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|f| !f.is_empty())
        .map(|f| {
            let (k, v) = f.split_once('=').unwrap_or((f, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// A token-auth front for `upstream` (a registry without auth), as docker/distribution's token
/// specification has it: `/v2/` requests without `Authorization: Bearer <access>` get a 401 with
/// a Bearer challenge whose realm is this proxy's `/token`; `POST /token` with the OAuth2
/// refresh-token grant for `refresh` answers `access` (a wrong grant: 400 `invalid_grant`);
/// `GET /token` is always refused with a Basic challenge, so a push through it proves the refresh
/// flow. Authorized requests go on to the registry. Every `Authorization` sent is kept in
/// `authorizations`.
fn token_front(
    upstream: &str,
    refresh: &'static str,
    access: &'static str,
    authorizations: Arc<Mutex<Vec<String>>>,
) -> Proxy {
    Proxy::answering(upstream, move |r, own| {
        if let Some(a) = r.header("authorization") {
            authorizations.lock().unwrap().push(a.to_string());
        }
        if r.path.starts_with("/token") {
            if r.method != "POST" {
                return Some(response(
                    "401 Unauthorized",
                    &["WWW-Authenticate: Basic realm=\"test\""],
                    r#"{"errors":[{"code":"UNAUTHORIZED","message":"only the refresh_token grant"}]}"#,
                ));
            }
            let form = form_fields(&r.body);
            let field = |name: &str| {
                form.iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
            };
            let granted = field("grant_type") == Some("refresh_token")
                && field("refresh_token") == Some(refresh)
                && field("client_id") == Some("buildagent")
                && field("service") == Some("test")
                && field("scope").is_some_and(|s| s.starts_with("repository:"));
            return Some(if granted {
                response(
                    "200 OK",
                    &["Content-Type: application/json"],
                    &format!(r#"{{"access_token":"{access}","expires_in":300}}"#),
                )
            } else {
                response(
                    "400 Bad Request",
                    &["Content-Type: application/json"],
                    r#"{"error":"invalid_grant"}"#,
                )
            });
        }
        if r.header("authorization") == Some(format!("Bearer {access}").as_str()) {
            return None;
        }
        let challenge =
            format!("WWW-Authenticate: Bearer realm=\"http://{own}/token\",service=\"test\"");
        Some(response(
            "401 Unauthorized",
            &[&challenge, "Content-Type: application/json"],
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        ))
    })
}

#[test]
fn an_identity_token_is_exchanged_with_the_refresh_grant_and_never_shown() {
    const REFRESH: &str = "refresh-2b7c91d4e0";
    const ACCESS: &str = "access-8f1e63a05c";
    let registry = services::registry();
    let s = Sandbox::new();
    let root = files(&s);
    let authorizations = Arc::new(Mutex::new(Vec::new()));
    let proxy = token_front(&registry, REFRESH, ACCESS, Arc::clone(&authorizations));
    let docker_config = |name: &str, token: &str| {
        let config = serde_json::json!({"auths": {proxy.addr.as_str(): {"identitytoken": token}}});
        let file = s.write(&format!("{name}/config.json"), config.to_string());
        file.parent().unwrap().to_path_buf()
    };
    let repo = unique("oci-tests/identity-token");
    let target = format!("{}/{repo}:v1", proxy.addr);
    let args = [
        "image",
        "append",
        "--base",
        "scratch",
        "--layer",
        root.to_str().unwrap(),
        "-t",
        &target,
    ];
    let good = docker_config("good", REFRESH);
    let run = agent_with(&s, &args, &[("DOCKER_CONFIG", &good)]);
    run.expect_code(0);
    let output = format!("{}{}", run.stdout, run.stderr);
    assert!(
        !output.contains(REFRESH) && !output.contains(ACCESS),
        "{output}"
    );
    // The image is in the real registry, behind the front.
    let digest = last_line(&run.stdout);
    let inspect = json(&sh(&format!(
        "skopeo inspect --tls-verify=false docker://{registry}/{repo}:v1"
    )));
    assert_eq!(inspect["Digest"], digest.as_str());
    let seen = proxy.seen();
    assert!(
        seen.iter()
            .any(|r| r.method == "POST" && r.path == "/token"),
        "{seen:#?}"
    );
    assert!(
        !seen
            .iter()
            .any(|r| r.method == "GET" && r.path.starts_with("/token")),
        "{seen:#?}"
    );
    let sent = authorizations.lock().unwrap().clone();
    assert!(
        sent.iter().any(|a| a == &format!("Bearer {ACCESS}")),
        "{sent:?}"
    );
    assert!(sent.iter().all(|a| !a.starts_with("Basic")), "{sent:?}");

    // A refresh token the service does not know: status 3, a clear message, and no token shown.
    const WRONG: &str = "refresh-not-known-5a0d";
    let bad = docker_config("bad", WRONG);
    let target = format!(
        "{}/{}:v1",
        proxy.addr,
        unique("oci-tests/identity-token-bad")
    );
    let args = [
        "image",
        "append",
        "--base",
        "scratch",
        "--layer",
        root.to_str().unwrap(),
        "-t",
        &target,
    ];
    let run = agent_with(&s, &args, &[("DOCKER_CONFIG", &bad)]);
    run.expect_code(3);
    assert!(
        run.stderr.contains("authentication failed")
            && run.stderr.contains("refused the identity token"),
        "{}",
        run.stderr
    );
    let output = format!("{}{}", run.stdout, run.stderr);
    assert!(
        !output.contains(WRONG) && !output.contains(REFRESH),
        "{output}"
    );
    let sent = authorizations.lock().unwrap().clone();
    assert!(sent.iter().all(|a| !a.starts_with("Basic")), "{sent:?}");
}
