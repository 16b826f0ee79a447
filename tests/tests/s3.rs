//! Artifacts and caches on S3 (`-a s3://...`, `--cache s3://...`) against the S3-compatible
//! server the test script starts (moto in server mode on 127.0.0.1). Each test makes its own
//! bucket and checks what is there with the AWS SDK, independently of the agent.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use buildagent_tests::s3_bucket;
use buildagent_tests::{Run, Sandbox};

/// A fresh bucket on the test server, and an SDK client to look into it.
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

    /// Every object: key -> size.
    fn objects(&self) -> BTreeMap<String, i64> {
        let out = self
            .runtime
            .block_on(self.client.list_objects_v2().bucket(&self.name).send())
            .unwrap();
        out.contents()
            .iter()
            .map(|o| (o.key().unwrap().to_string(), o.size().unwrap()))
            .collect()
    }

    fn keys(&self) -> Vec<String> {
        self.objects().into_keys().collect()
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

    fn head(&self, key: &str) -> aws_sdk_s3::operation::head_object::HeadObjectOutput {
        self.runtime
            .block_on(self.client.head_object().bucket(&self.name).key(key).send())
            .unwrap()
    }

    fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.name)
    }

    /// Runs `spec` in `dir/` (in place) with the test server's AWS settings and `args`.
    fn build(&self, s: &Sandbox, dir: &str, spec: &str, args: &[&str]) -> Run {
        s.write(&format!("{dir}/buildspec.yml"), spec);
        let src = s.path().join(dir);
        let mut cmd = s.command(["run", "-m", "--log-format", "codebuild", "-s"]);
        cmd.arg(&src).args(args).envs(self.aws.env());
        cmd.env_remove("AWS_PROFILE");
        Run::from(cmd.output().expect("run buildagent"))
    }
}

/// The names and contents of the files in a zip.
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

/// Bytes that do not compress (so a zip of them is as large as they are).
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

const ARTIFACTS: &str = "version: 0.2\n\
phases:\n  build:\n    commands:\n      - mkdir -p dist/css && echo app > dist/app.js && echo css > dist/css/site.css\n\
artifacts:\n  files: ['**/*']\n  base-directory: dist\n  name: app-$(echo 7)\n  s3-prefix: team\n\
\x20 secondary-artifacts:\n    extra:\n      files: ['dist/app.js']\n      discard-paths: yes\n";

#[test]
fn zip_artifacts_follow_the_key_rules_and_carry_the_build_arn() {
    let bucket = Bucket::new("zips");
    let s = Sandbox::new();
    let run = bucket.build(
        &s,
        "src",
        ARTIFACTS,
        &[
            "-a",
            &bucket.url("builds"),
            "--artifacts-namespace",
            "build-id",
        ],
    );
    run.expect_code(0);
    let keys = bucket.keys();
    assert_eq!(keys.len(), 2, "{keys:?}");
    // builds/<uuid>/extra.zip (no s3-prefix of its own) and builds/team/<uuid>/app-7.zip
    let uuid = keys[0]
        .strip_prefix("builds/")
        .and_then(|rest| rest.split_once('/'))
        .map(|(uuid, _)| uuid.to_string())
        .unwrap_or_else(|| panic!("{keys:?}"));
    assert_eq!(uuid.len(), 36, "{keys:?}");
    assert_eq!(
        keys,
        [
            format!("builds/{uuid}/extra.zip"),
            format!("builds/team/{uuid}/app-7.zip"),
        ]
    );
    let keys = [keys[1].clone(), keys[0].clone()];
    let primary = unzip(&bucket.get(&keys[0]));
    assert_eq!(
        primary.keys().collect::<Vec<_>>(),
        ["app.js", "css/site.css"]
    );
    assert_eq!(primary["app.js"], b"app\n");
    let extra = unzip(&bucket.get(&keys[1]));
    assert_eq!(extra.keys().collect::<Vec<_>>(), ["app.js"]);
    for key in &keys {
        let arn = bucket.head(key).metadata().unwrap()["codebuild-buildarn"].clone();
        assert!(
            arn.starts_with("arn:aws:codebuild:us-east-1:") && arn.ends_with(&format!(":{uuid}")),
            "{arn}"
        );
    }
    assert!(
        run.stdout.contains(&format!(
            "s3://{}/builds/team/{uuid}/app-7.zip",
            bucket.name
        )),
        "{}",
        run.stdout
    );
}

#[test]
fn artifacts_name_names_the_primary_artifact_unless_the_buildspec_does() {
    let bucket = Bucket::new("named");
    let s = Sandbox::new();
    let unnamed = "version: 0.2\nphases:\n  build:\n    commands:\n      - echo app > app.js\n\
artifacts:\n  files: [app.js]\n";
    let run = bucket.build(
        &s,
        "src",
        unnamed,
        &["-a", &bucket.url("web"), "--artifacts-name", "site"],
    );
    run.expect_code(0);
    assert_eq!(bucket.keys(), ["web/site.zip"]);
    assert_eq!(unzip(&bucket.get("web/site.zip"))["app.js"], b"app\n");
    // The buildspec's own name wins (as CodeBuild's overrideArtifactName).
    let named = format!("{unnamed}  name: own\n");
    bucket
        .build(
            &s,
            "src2",
            &named,
            &["-a", &bucket.url("web"), "--artifacts-name", "site"],
        )
        .expect_code(0);
    assert_eq!(bucket.keys(), ["web/own.zip", "web/site.zip"]);
    // A directory's artifacts keep their fixed names: the flag is refused there.
    let out = s.path().join("out");
    let refused = bucket.build(
        &s,
        "src3",
        unnamed,
        &["-a", out.to_str().unwrap(), "--artifacts-name", "site"],
    );
    refused.expect_code(2);
    assert!(
        refused
            .stderr
            .contains("--artifacts-name names the artifact in an S3 location"),
        "{}",
        refused.stderr
    );
    assert!(!out.exists());
}

#[test]
fn a_large_artifact_goes_up_in_parts_and_comes_back_whole() {
    let bucket = Bucket::new("multipart");
    let s = Sandbox::new();
    // 20 MiB that do not compress: above the 16 MiB single-request limit.
    let data = noise(20 * 1024 * 1024);
    s.write("src/big.bin", &data);
    let spec = "version: 0.2\nphases:\n  build:\n    commands:\n      - 'true'\n\
                artifacts:\n  files: [big.bin]\n";
    bucket
        .build(&s, "src", spec, &["-a", &bucket.url("")])
        .expect_code(0);
    let objects = bucket.objects();
    assert_eq!(objects.keys().collect::<Vec<_>>(), ["artifacts.zip"]);
    assert!(objects["artifacts.zip"] > 16 * 1024 * 1024);
    let zip = unzip(&bucket.get("artifacts.zip"));
    assert!(zip["big.bin"] == data, "the downloaded file differs");
    let head = bucket.head("artifacts.zip");
    assert!(head.metadata().unwrap().contains_key("codebuild-buildarn"));
    // A multipart upload's ETag is `"<md5 of the parts' md5s>-<parts>"`.
    assert!(head.e_tag().unwrap().contains("-"), "{:?}", head.e_tag());
}

#[test]
fn folder_artifacts_are_one_object_per_file() {
    let bucket = Bucket::new("folders");
    let s = Sandbox::new();
    let spec = "version: 0.2\nphases:\n  build:\n    commands:\n      - mkdir -p out/sub && echo a > out/a.txt && echo b > out/sub/b.txt\n\
                artifacts:\n  files: ['**/*']\n  base-directory: out\n  name: /\n\
                \x20 secondary-artifacts:\n    two:\n      files: ['out/a.txt']\n";
    bucket
        .build(
            &s,
            "src",
            spec,
            &["-a", &bucket.url("p"), "--artifacts-packaging", "none"],
        )
        .expect_code(0);
    assert_eq!(bucket.keys(), ["p/a.txt", "p/sub/b.txt", "p/two/out/a.txt"]);
    assert_eq!(bucket.get("p/sub/b.txt"), b"b\n");
    assert!(bucket
        .head("p/two/out/a.txt")
        .metadata()
        .unwrap()
        .contains_key("codebuild-buildarn"));
}

#[test]
fn a_missing_bucket_fails_upload_artifacts_with_the_service_error() {
    let bucket = Bucket::new("missing");
    let s = Sandbox::new();
    let url = format!("s3://{}-nope/x", bucket.name);
    let run = bucket.build(&s, "src", ARTIFACTS, &["-a", &url]);
    run.expect_code(1);
    assert!(
        run.stdout
            .contains("Phase complete: UPLOAD_ARTIFACTS State: FAILED"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("NoSuchBucket"), "{}", run.stdout);
}

/// A spec whose BUILD reports whether `deps/file` was restored, then writes it with `$V`.
fn cache_spec(cache: &str) -> String {
    format!(
        "version: 0.2\n\
         phases:\n  build:\n    commands:\n\
         \x20     - if [ -f deps/file ]; then echo \"restored=$(cat deps/file)\"; else echo 'restored=nothing'; fi\n\
         \x20     - mkdir -p deps && echo \"$V\" > deps/file\n\
         cache:\n{cache}"
    )
}

fn restored(run: &Run) -> &str {
    run.stdout
        .lines()
        .find_map(|l| l.strip_prefix("restored="))
        .unwrap_or_else(|| panic!("no `restored=` line\n{}", run.stdout))
}

#[test]
fn a_keyed_cache_round_trips_through_s3_and_is_written_once() {
    let bucket = Bucket::new("cache");
    let spec = cache_spec("  key: deps-$(echo one)\n  paths: ['deps/**/*']\n");
    let store = bucket.url("c");
    // The two builds use two different source directories: only S3 links them.
    let s = Sandbox::new();
    let first = bucket.build(&s, "src", &spec, &["--cache", &store, "--env-var", "V=1"]);
    first.expect_code(0);
    assert_eq!(restored(&first), "nothing");
    assert!(
        first.stdout.contains("Uploading S3 cache..."),
        "{}",
        first.stdout
    );
    let keys = bucket.keys();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        keys[0].starts_with("c/src/") && keys[0].ends_with("/keys/deps-one.tar.zst"),
        "{keys:?}"
    );
    let etag = bucket.head(&keys[0]).e_tag().map(str::to_string);

    let second = bucket.build(&s, "src", &spec, &["--cache", &store, "--env-var", "V=2"]);
    second.expect_code(0);
    // The source directory kept its file: remove it to see the restore.
    std::fs::remove_dir_all(s.path().join("src/deps")).unwrap();
    let third = bucket.build(&s, "src", &spec, &["--cache", &store, "--env-var", "V=3"]);
    third.expect_code(0);
    assert_eq!(restored(&third), "1", "{}", third.stdout);
    assert!(
        third.stdout.contains("Downloading S3 cache..."),
        "{}",
        third.stdout
    );
    assert!(
        third.stdout.contains("already exists: not saved again"),
        "{}",
        third.stdout
    );
    // Never rewritten.
    assert_eq!(bucket.keys(), keys);
    assert_eq!(bucket.head(&keys[0]).e_tag().map(str::to_string), etag);
}

#[test]
fn a_fallback_key_finds_the_newest_matching_entry_on_s3() {
    let bucket = Bucket::new("fallback");
    let store = bucket.url("");
    let s = Sandbox::new();
    for (key, value) in [("npm-a", "A"), ("npm-b", "B")] {
        let spec = cache_spec(&format!("  key: {key}\n  paths: ['deps/**/*']\n"));
        bucket
            .build(
                &s,
                "src",
                &spec,
                &["--cache", &store, "--env-var", &format!("V={value}")],
            )
            .expect_code(0);
        std::fs::remove_dir_all(s.path().join("src/deps")).unwrap();
        // S3 times have one-second precision: make "newest" unambiguous.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let spec = cache_spec("  key: npm-c\n  fallback-keys: [npm-]\n  paths: ['deps/**/*']\n");
    let run = bucket.build(&s, "src", &spec, &["--cache", &store, "--env-var", "V=C"]);
    run.expect_code(0);
    assert_eq!(restored(&run), "B", "{}", run.stdout);
}

#[test]
fn the_unkeyed_entry_is_refreshed_on_s3() {
    let bucket = Bucket::new("unkeyed");
    let store = bucket.url("x");
    let spec = cache_spec("  paths: ['deps/**/*']\n");
    let s = Sandbox::new();
    for value in ["1", "2"] {
        bucket
            .build(
                &s,
                "src",
                &spec,
                &["--cache", &store, "--env-var", &format!("V={value}")],
            )
            .expect_code(0);
        std::fs::remove_dir_all(s.path().join("src/deps")).unwrap();
    }
    let run = bucket.build(&s, "src", &spec, &["--cache", &store, "--env-var", "V=3"]);
    run.expect_code(0);
    assert_eq!(restored(&run), "2", "{}", run.stdout);
    let keys = bucket.keys();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].ends_with("/default.tar.zst"), "{keys:?}");
}

#[test]
fn a_corrupt_entry_on_s3_is_a_warning_and_a_miss() {
    let bucket = Bucket::new("corrupt");
    let store = bucket.url("");
    let spec = cache_spec("  key: k\n  paths: ['deps/**/*']\n");
    let s = Sandbox::new();
    bucket
        .build(&s, "src", &spec, &["--cache", &store, "--env-var", "V=1"])
        .expect_code(0);
    std::fs::remove_dir_all(s.path().join("src/deps")).unwrap();
    let key = bucket.keys().remove(0);
    // Cut the entry short, in place.
    let bytes = bucket.get(&key);
    bucket
        .runtime
        .block_on(
            bucket
                .client
                .put_object()
                .bucket(&bucket.name)
                .key(&key)
                .body(bytes[..bytes.len() / 2].to_vec().into())
                .send(),
        )
        .unwrap();
    let run = bucket.build(&s, "src", &spec, &["--cache", &store, "--env-var", "V=2"]);
    run.expect_code(0);
    assert_eq!(restored(&run), "nothing", "{}", run.stdout);
    assert!(
        run.stdout.contains("cannot restore the cache entry"),
        "{}",
        run.stdout
    );
    assert!(!Path::new(&s.path().join("src/deps/file.partial")).exists());
}
