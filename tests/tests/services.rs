//! The services `scripts/services.sh` starts answer as the other tests expect: moto, the two
//! registries, the Docker engine with the local base image, and the image tools. Each test
//! fails loudly when its service is missing.

use std::process::Command;

use buildagent_tests::services;

#[test]
fn moto_answers() {
    let aws = services::aws();
    let addr = aws.endpoint.trim_start_matches("http://");
    let dashboard = services::http_get(addr, "/moto-api/", &[]).expect("GET /moto-api/");
    assert_eq!(dashboard.status, 200);
    assert!(
        dashboard.text().contains("<title>Moto</title>"),
        "{}",
        dashboard.text()
    );
    // Moto does not check signatures: an unsigned GET / is S3's ListBuckets.
    let buckets = services::http_get(addr, "/", &[]).expect("GET /");
    assert_eq!(buckets.status, 200, "{}", buckets.text());
    assert!(
        buckets.text().contains("<ListAllMyBucketsResult"),
        "{}",
        buckets.text()
    );
}

#[test]
fn aws_env_points_a_child_at_moto() {
    let env = services::aws_env();
    let names: Vec<&str> = env.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names,
        [
            "AWS_ENDPOINT_URL",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_REGION"
        ]
    );
    let out = Command::new("sh")
        .args([
            "-c",
            "echo $AWS_ENDPOINT_URL $AWS_ACCESS_KEY_ID $AWS_SECRET_ACCESS_KEY $AWS_REGION",
        ])
        .envs(env.iter().map(|(name, value)| (name, value)))
        .output()
        .expect("run sh");
    let aws = services::aws();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!(
            "{} {} {} {}",
            aws.endpoint, aws.access_key_id, aws.secret_access_key, aws.region
        )
    );
}

#[test]
fn the_open_registry_answers_without_credentials() {
    let addr = services::registry();
    let response = services::http_get(&addr, "/v2/", &[]).expect("GET /v2/");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("Docker-Distribution-Api-Version"),
        Some("registry/2.0")
    );
}

#[test]
fn the_htpasswd_registry_asks_for_basic_credentials_and_takes_the_right_ones() {
    let addr = services::registry_auth();
    let (user, password) = services::registry_credentials();

    let anonymous = services::http_get(&addr, "/v2/", &[]).expect("GET /v2/");
    assert_eq!(anonymous.status, 401);
    let challenge = anonymous
        .header("WWW-Authenticate")
        .expect("a WWW-Authenticate header");
    assert!(challenge.starts_with("Basic "), "{challenge}");

    let right = services::basic_auth(&user, &password);
    let response = services::http_get(&addr, "/v2/", &[("Authorization", &right)])
        .expect("GET /v2/ with credentials");
    assert_eq!(response.status, 200, "{}", response.text());

    let wrong = services::basic_auth(&user, "not-the-password");
    let response = services::http_get(&addr, "/v2/", &[("Authorization", &wrong)])
        .expect("GET /v2/ with a wrong password");
    assert_eq!(response.status, 401);
}

#[test]
fn docker_runs_the_base_image_on_the_host_network() {
    let api = services::docker();
    assert!(
        api.split('.').all(|part| part.parse::<u32>().is_ok()),
        "API version {api:?}"
    );
    let image = services::base_image();
    let out = Command::new("docker")
        .args(["run", "--rm", "--network", "host", &image, "true"])
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker run {image} true: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Busybox's applets, as a build would use them.
    let out = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "host",
            &image,
            "/usr/bin/env",
            "sh",
            "-c",
            "echo $((6 * 7))",
        ])
        .output()
        .expect("run docker");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "42",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_base_rootfs_is_a_busybox_tree() {
    let tar = services::base_rootfs();
    let out = Command::new("tar")
        .arg("-tf")
        .arg(&tar)
        .output()
        .expect("run tar");
    assert!(out.status.success(), "tar -tf {}", tar.display());
    let names = String::from_utf8_lossy(&out.stdout);
    for name in ["./bin/busybox", "./bin/sh", "./etc/passwd", "./tmp/"] {
        assert!(
            names.lines().any(|line| line == name),
            "{name} is not in {}",
            tar.display()
        );
    }
}

#[test]
fn the_image_tools_are_on_path() {
    for (tool, args) in [
        ("skopeo", &["--version"][..]),
        ("umoci", &["--version"][..]),
        ("zstd", &["--version"][..]),
    ] {
        let path = services::tool(tool);
        let status = Command::new(&path)
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run the tool");
        assert!(status.success(), "{} --version failed", path.display());
    }
}
