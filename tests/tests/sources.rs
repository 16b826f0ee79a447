//! Sources fetched by the agent (`-s URL`): Git over HTTP (git's smart HTTP backend behind the
//! tests' small server, with and without basic auth) and `file://`, S3 zips and folders in moto.
//! Every repository is generated here: a `main` branch of four commits, a lightweight tag `v1`
//! (second commit), an annotated tag `v2` (third commit), a `dev` branch, a pull-request ref
//! `refs/pull/12/head`, and a repository with a submodule. Each test has its own clone cache
//! (`XDG_CACHE_HOME` in its sandbox).

use std::path::Path;

use buildagent_tests::git_server::{git, GitServer, WorkTree};
use buildagent_tests::s3_bucket;
use buildagent_tests::services;
use buildagent_tests::{Run, Sandbox};

/// The buildspec of the fixture repositories: prints the source variables and the checkout.
const SPEC: &str = "version: 0.2\n\
phases:\n  build:\n    commands:\n\
\x20     - echo \"version=$CODEBUILD_SOURCE_VERSION\"\n\
\x20     - echo \"resolved=$CODEBUILD_RESOLVED_SOURCE_VERSION\"\n\
\x20     - echo \"url=$CODEBUILD_SOURCE_REPO_URL\"\n\
\x20     - echo \"marker=$(cat marker.txt)\"\n\
\x20     - echo \"head=$(git rev-parse HEAD)\"\n\
\x20     - echo \"depth=$(git rev-list --count HEAD)\"\n\
\x20     - echo \"origin=$(git remote get-url origin)\"\n";

/// The served repositories and their commits.
struct Fixture {
    server: GitServer,
    /// `main`'s commits, oldest first.
    commits: Vec<String>,
    /// The pull request's commit.
    pr: String,
    work: WorkTree,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::on(GitServer::start())
    }

    fn on(server: GitServer) -> Fixture {
        let work = WorkTree::new();
        let mut commits = Vec::new();
        for n in 1..=4 {
            commits.push(work.commit(
                &format!("commit {n}"),
                &[("buildspec.yml", SPEC), ("marker.txt", &format!("c{n}"))],
            ));
            match n {
                2 => {
                    work.git(&["tag", "v1"]);
                }
                3 => {
                    work.git(&["tag", "-a", "v2", "-m", "release 2"]);
                }
                _ => {}
            }
        }
        work.git(&["checkout", "-q", "-b", "dev", &commits[1]]);
        work.commit("dev", &[("marker.txt", "dev")]);
        work.git(&["checkout", "-q", "-b", "feature", &commits[3]]);
        let pr = work.commit("feature", &[("marker.txt", "pr")]);
        work.git(&["checkout", "-q", "main"]);
        work.git(&["branch", "-D", "-q", "feature"]);
        let bare = server.root().join("app.git");
        work.push_to(&bare);
        // The pull request's commit is reachable from its ref alone, as on a forge.
        let target = bare.to_string_lossy().into_owned();
        work.git(&["push", "-q", &target, &format!("{pr}:refs/pull/12/head")]);
        Fixture {
            server,
            commits,
            pr,
            work,
        }
    }

    fn url(&self) -> String {
        self.server.url("app.git")
    }
}

/// `buildagent run` with its clone cache in the sandbox and `args`.
fn build(s: &Sandbox, args: &[&str]) -> Run {
    let mut cmd = s.command(["run", "--log-format", "codebuild", "--no-cache"]);
    cmd.args(args).env("XDG_CACHE_HOME", s.path().join("cache"));
    Run::from(cmd.output().expect("run buildagent"))
}

fn line<'a>(run: &'a Run, key: &str) -> &'a str {
    let prefix = format!("{key}=");
    run.stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key}= line in\n{}\n{}", run.stdout, run.stderr))
}

#[test]
fn the_default_branch_is_cloned_at_depth_one_with_codebuild_variables() {
    let f = Fixture::new();
    let s = Sandbox::new();
    let run = build(&s, &["-s", &f.url()]);
    run.expect_code(0);
    assert_eq!(line(&run, "version"), "main");
    assert_eq!(line(&run, "resolved"), f.commits[3]);
    assert_eq!(line(&run, "head"), f.commits[3]);
    assert_eq!(line(&run, "marker"), "c4");
    assert_eq!(line(&run, "depth"), "1");
    assert_eq!(line(&run, "url"), f.url());
    assert_eq!(line(&run, "origin"), f.url());
    assert!(
        run.stdout.contains(&format!(
            "Resolved source {} version to {}",
            f.url(),
            f.commits[3]
        )),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("Fetched source"), "{}", run.stdout);
}

#[test]
fn tags_branches_commits_and_pull_requests_are_checked_out() {
    let f = Fixture::new();
    let s = Sandbox::new();
    let cases = [
        ("v1", "c2"),
        ("v2", "c3"),
        ("dev", "dev"),
        ("refs/heads/dev", "dev"),
        ("pr/12", "pr"),
        ("refs/pull/12/head", "pr"),
    ];
    for (version, marker) in cases {
        let run = build(&s, &["-s", &f.url(), "--source-version", version]);
        run.expect_code(0);
        assert_eq!(line(&run, "marker"), marker, "{version}");
        assert_eq!(line(&run, "version"), version);
        assert_eq!(line(&run, "resolved"), line(&run, "head"));
    }
    assert_eq!(
        line(
            &build(&s, &["-s", &f.url(), "--source-version", "pr/12"]),
            "resolved"
        ),
        f.pr
    );
}

#[test]
fn commits_inside_and_outside_the_shallow_window_and_abbreviated_ones() {
    let f = Fixture::new();
    let s = Sandbox::new();
    for (commit, marker) in [(&f.commits[3], "c4"), (&f.commits[1], "c2")] {
        let run = build(&s, &["-s", &f.url(), "--source-version", commit]);
        run.expect_code(0);
        assert_eq!(line(&run, "marker"), marker);
        assert_eq!(line(&run, "resolved"), commit.as_str());
        assert_eq!(line(&run, "depth"), "1");
    }
    let short = &f.commits[0][..8];
    let run = build(&s, &["-s", &f.url(), "--source-version", short]);
    run.expect_code(0);
    assert_eq!(line(&run, "marker"), "c1");
    assert_eq!(line(&run, "resolved"), f.commits[0]);
    // Full history on request, without the cache too.
    let run = build(
        &s,
        &[
            "-s",
            &f.url(),
            "--git-clone-depth",
            "0",
            "--no-source-cache",
        ],
    );
    run.expect_code(0);
    assert_eq!(line(&run, "depth"), "4");
}

#[test]
fn a_second_build_updates_the_clone_cache_and_sees_new_commits() {
    let f = Fixture::new();
    let s = Sandbox::new();
    let first = build(&s, &["-s", &f.url()]);
    first.expect_code(0);
    assert!(
        first.stdout.contains("Creating the clone cache"),
        "{}",
        first.stdout
    );
    let mirrors: Vec<_> = std::fs::read_dir(s.path().join("cache/buildagent/git"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".git"))
        .collect();
    assert_eq!(mirrors.len(), 1, "{mirrors:?}");
    let mirror = s.path().join("cache/buildagent/git").join(&mirrors[0]);
    assert_eq!(
        git(&mirror, &["rev-parse", "refs/heads/main"]),
        f.commits[3]
    );

    let new = f.work.commit("commit 5", &[("marker.txt", "c5")]);
    f.work.push_to(&f.server.root().join("app.git"));
    let second = build(&s, &["-s", &f.url()]);
    second.expect_code(0);
    assert!(
        second.stdout.contains("Updating the clone cache"),
        "{}",
        second.stdout
    );
    assert_eq!(line(&second, "marker"), "c5");
    assert_eq!(git(&mirror, &["rev-parse", "refs/heads/main"]), new);

    // --no-source-cache leaves the cache alone.
    let other = Sandbox::new();
    let run = build(&other, &["-s", &f.url(), "--no-source-cache"]);
    run.expect_code(0);
    assert!(!run.stdout.contains("clone cache"), "{}", run.stdout);
    assert!(!other.path().join("cache/buildagent/git").exists());
}

#[test]
fn submodules_are_fetched_on_request() {
    let server = GitServer::start();
    let lib = WorkTree::new();
    lib.commit("lib", &[("lib.txt", "from the submodule")]);
    lib.push_to(&server.root().join("lib.git"));
    let app = WorkTree::new();
    app.commit(
        "app",
        &[(
            "buildspec.yml",
            "version: 0.2\nphases:\n  build:\n    commands:\n      - echo \"lib=$(cat lib/lib.txt 2>/dev/null)\"\n",
        )],
    );
    app.git(&[
        "-c",
        "protocol.file.allow=always",
        "submodule",
        "add",
        "-q",
        &server.url("lib.git"),
        "lib",
    ]);
    // A relative URL: resolved against the source's own URL, as on CodeBuild.
    app.git(&[
        "config",
        "-f",
        ".gitmodules",
        "submodule.lib.url",
        "../lib.git",
    ]);
    app.commit("with the submodule", &[]);
    app.push_to(&server.root().join("app.git"));
    let s = Sandbox::new();
    let run = build(&s, &["-s", &server.url("app.git"), "--git-submodules"]);
    run.expect_code(0);
    assert_eq!(line(&run, "lib"), "from the submodule");
    let run = build(&s, &["-s", &server.url("app.git")]);
    run.expect_code(0);
    assert_eq!(line(&run, "lib"), "");
}

#[test]
fn a_secondary_git_source_gets_its_directory_and_variables() {
    let f = Fixture::new();
    let s = Sandbox::new();
    s.write(
        "src/buildspec.yml",
        "version: 0.2\nphases:\n  build:\n    commands:\n\
         \x20     - echo \"lib=$(cat $CODEBUILD_SRC_DIR_lib/marker.txt)\"\n\
         \x20     - echo \"libversion=$CODEBUILD_SOURCE_VERSION_lib\"\n\
         \x20     - echo \"liburl=$CODEBUILD_SOURCE_REPO_URL_lib\"\n\
         \x20     - echo \"libresolved=$CODEBUILD_RESOLVED_SOURCE_VERSION_lib\"\n",
    );
    let lib = format!("lib:{}", f.url());
    let run = build(&s, &["-s", "src", "-s", &lib]);
    run.expect_code(0);
    assert_eq!(line(&run, "lib"), "c4");
    assert_eq!(line(&run, "libversion"), "main");
    assert_eq!(line(&run, "liburl"), f.url());
    assert_eq!(line(&run, "libresolved"), f.commits[3]);

    // --secondary-source-version ID=REF, as CodeBuild's secondarySourcesVersionOverride.
    let run = build(
        &s,
        &[
            "-s",
            "src",
            "-s",
            &lib,
            "--secondary-source-version",
            "lib=v1",
        ],
    );
    run.expect_code(0);
    assert_eq!(line(&run, "lib"), "c2");
    assert_eq!(line(&run, "libversion"), "v1");
    assert_eq!(line(&run, "libresolved"), f.commits[1]);

    // An unknown identifier, a directory and a missing `=` are refused before anything runs.
    for (value, says) in [
        ("other=v1", "there is no secondary source `other`"),
        ("dir=v1", "secondary source `dir` is a directory"),
        ("v1", "expected ID=REF"),
    ] {
        let run = build(
            &s,
            &[
                "-s",
                "src",
                "-s",
                &lib,
                "-s",
                "dir:src",
                "--secondary-source-version",
                value,
            ],
        );
        run.expect_code(2);
        assert!(run.stderr.contains(says), "{value}: {}", run.stderr);
        assert!(!run.stdout.contains("lib="), "{value}: {}", run.stdout);
    }
}

#[test]
fn file_urls_and_a_given_buildspec_work() {
    let f = Fixture::new();
    let s = Sandbox::new();
    let url = format!("file://{}", f.server.root().join("app.git").display());
    let run = build(&s, &["-s", &url]);
    run.expect_code(0);
    assert_eq!(line(&run, "marker"), "c4");
    s.write(
        "mine.yml",
        "version: 0.2\nphases:\n  build:\n    commands:\n      - echo \"mine=$(cat marker.txt)\"\n",
    );
    let run = build(
        &s,
        &["-s", &url, "-b", "mine.yml", "--source-version", "v1"],
    );
    run.expect_code(0);
    assert_eq!(line(&run, "mine"), "c2");
}

#[test]
fn basic_auth_credentials_work_and_wrong_ones_fail_without_being_shown() {
    let (user, password) = ("builder", "s3cr3t-t0ken-value");
    let f = Fixture::on(GitServer::start_with_auth(user, password));
    let s = Sandbox::new();
    let good = f.server.url_with(user, password, "app.git");
    let run = build(&s, &["-s", &good]);
    run.expect_code(0);
    let redacted = f.server.url_with(user, "***", "app.git");
    assert_eq!(line(&run, "url"), redacted);
    assert_eq!(line(&run, "origin"), f.url());
    assert!(!run.stdout.contains(password) && !run.stderr.contains(password));
    // The mirror's configuration does not hold the password either.
    let cache = s.path().join("cache");
    let grep = std::process::Command::new("grep")
        .args(["-r", "-l", password])
        .arg(&cache)
        .output()
        .unwrap();
    assert!(
        grep.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&grep.stdout)
    );

    let wrong_password = "wr0ng-pa55word-xyz";
    let wrong = f.server.url_with(user, wrong_password, "app.git");
    let log = s.path().join("build.log");
    let mut cmd = s.command(["run", "--log-format", "json", "--no-cache", "-s", &wrong]);
    cmd.arg("--log-file").arg(&log);
    cmd.env("XDG_CACHE_HOME", s.path().join("cache"));
    let run = Run::from(cmd.output().unwrap());
    run.expect_code(1);
    let log = std::fs::read_to_string(&log).unwrap();
    for text in [&run.stdout, &run.stderr, &log] {
        assert!(!text.contains(wrong_password), "{text}");
    }
    assert!(log.contains("Authentication failed"), "{log}");
    assert!(
        log.contains(&f.server.url_with(user, "***", "app.git")),
        "{log}"
    );
    assert!(!log.contains("marker="), "{log}");
    // Without any credentials: git may not ask, so it fails too.
    let run = build(&s, &["-s", &f.url()]);
    run.expect_code(1);
}

#[test]
fn an_unknown_version_fails_download_source_and_runs_nothing() {
    let f = Fixture::new();
    let s = Sandbox::new();
    let run = build(&s, &["-s", &f.url(), "--source-version", "no-such-branch"]);
    run.expect_code(1);
    assert!(
        run.stdout.contains(
            "`no-such-branch` is not a branch, tag, pull request or commit of the repository"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("Phase complete: DOWNLOAD_SOURCE State: FAILED"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("marker="), "{}", run.stdout);
    let missing = "0123456789abcdef0123456789abcdef01234567";
    let run = build(&s, &["-s", &f.url(), "--source-version", missing]);
    run.expect_code(1);
    assert!(
        run.stdout.contains(&format!("`{missing}` is not a branch")),
        "{}",
        run.stdout
    );
}

#[test]
fn an_unreachable_host_is_a_clear_failure() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/app.git");
    let s = Sandbox::new();
    let run = build(&s, &["-s", &url]);
    run.expect_code(1);
    assert!(
        run.stdout.contains(&format!("cannot fetch source {url}")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("Failed to connect") || run.stdout.contains("Could not connect"),
        "{}",
        run.stdout
    );
}

#[test]
fn bad_source_arguments_are_invalid_input() {
    let s = Sandbox::new();
    let run = build(&s, &["-s", "gs://bucket/app.zip"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("`gs://` sources are not supported"),
        "{}",
        run.stderr
    );
    let run = build(&s, &["-s", "s3://bucket/app.tar"]);
    run.expect_code(2);
    s.write("src/buildspec.yml", "version: 0.2\nphases: {}\n");
    let run = build(&s, &["-s", "src", "--source-version", "main"]);
    run.expect_code(2);
    assert!(run.stderr.contains("--source-version"), "{}", run.stderr);
    let run = build(&s, &["-s", "https://127.0.0.1:9/app.git", "-m"]);
    run.expect_code(2);
}

// ---- S3 ----

struct Bucket(s3_bucket::Bucket);

impl std::ops::Deref for Bucket {
    type Target = s3_bucket::Bucket;

    fn deref(&self) -> &s3_bucket::Bucket {
        &self.0
    }
}

impl Bucket {
    fn new(test: &str) -> Bucket {
        Bucket(s3_bucket::Bucket::new(&format!("src-{test}")))
    }

    fn enable_versioning(&self) {
        use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
        self.runtime
            .block_on(
                self.client
                    .put_bucket_versioning()
                    .bucket(&self.name)
                    .versioning_configuration(
                        VersioningConfiguration::builder()
                            .status(BucketVersioningStatus::Enabled)
                            .build(),
                    )
                    .send(),
            )
            .unwrap();
    }

    /// Stores `body` at `key`; returns the version id, if any.
    fn put(&self, key: &str, body: Vec<u8>) -> Option<String> {
        let out = self
            .runtime
            .block_on(
                self.client
                    .put_object()
                    .bucket(&self.name)
                    .key(key)
                    .body(body.into())
                    .send(),
            )
            .unwrap();
        out.version_id().map(str::to_string)
    }
}

/// A zip of `(name, symlink target or None, contents)` entries.
fn zip_of(entries: &[(&str, Option<&str>, &str)]) -> Vec<u8> {
    use std::io::Write;
    let mut out = std::io::Cursor::new(Vec::new());
    let mut w = zip::ZipWriter::new(&mut out);
    for (name, link, data) in entries {
        let options = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
        match link {
            Some(target) => w.add_symlink(*name, *target, options).unwrap(),
            None => {
                w.start_file(*name, options).unwrap();
                w.write_all(data.as_bytes()).unwrap();
            }
        }
    }
    w.finish().unwrap();
    out.into_inner()
}

const ZIP_SPEC: &str = "version: 0.2\nphases:\n  build:\n    commands:\n\
\x20     - echo \"marker=$(cat marker.txt)\"\n\
\x20     - echo \"resolved=$CODEBUILD_RESOLVED_SOURCE_VERSION\"\n\
\x20     - echo \"url=$CODEBUILD_SOURCE_REPO_URL\"\n\
\x20     - ./run.sh\n";

fn s3_build(s: &Sandbox, args: &[&str]) -> Run {
    let mut cmd = s.command(["run", "--log-format", "codebuild", "--no-cache"]);
    cmd.args(args)
        .envs(services::aws_env())
        .env_remove("AWS_PROFILE")
        .env("XDG_CACHE_HOME", s.path().join("cache"));
    Run::from(cmd.output().expect("run buildagent"))
}

#[test]
fn an_s3_zip_is_extracted_at_the_asked_object_version() {
    let bucket = Bucket::new("zip");
    bucket.enable_versioning();
    let zip = |marker: &str| {
        zip_of(&[
            ("buildspec.yml", None, ZIP_SPEC),
            ("marker.txt", None, marker),
            ("run.sh", None, "#!/bin/sh\necho script-ran\n"),
        ])
    };
    let first = bucket
        .put("apps/app.zip", zip("one"))
        .expect("a version id");
    let second = bucket
        .put("apps/app.zip", zip("two"))
        .expect("a version id");
    let s = Sandbox::new();
    let url = format!("s3://{}/apps/app.zip", bucket.name);
    let run = s3_build(&s, &["-s", &url]);
    run.expect_code(0);
    assert_eq!(line(&run, "marker"), "two");
    assert_eq!(line(&run, "resolved"), second);
    assert_eq!(line(&run, "url"), url);
    assert!(run.stdout.contains("script-ran"), "{}", run.stdout);
    let run = s3_build(&s, &["-s", &url, "--source-version", &first]);
    run.expect_code(0);
    assert_eq!(line(&run, "marker"), "one");
    assert_eq!(line(&run, "resolved"), first);
}

#[test]
fn an_s3_folder_is_downloaded() {
    let bucket = Bucket::new("folder");
    bucket.put("site/buildspec.yml", ZIP_SPEC.as_bytes().to_vec());
    bucket.put("site/marker.txt", b"folder".to_vec());
    bucket.put("site/run.sh", b"echo folder-script".to_vec());
    bucket.put("other/marker.txt", b"not this".to_vec());
    let s = Sandbox::new();
    let url = format!("s3://{}/site/", bucket.name);
    let mut cmd = s.command(["run", "--log-format", "codebuild", "--no-cache", "-s", &url]);
    cmd.envs(services::aws_env()).env_remove("AWS_PROFILE");
    // run.sh has no executable bit in S3: run it with sh.
    let spec = s.write(
        "spec.yml",
        "version: 0.2\nphases:\n  build:\n    commands:\n      - echo \"marker=$(cat marker.txt)\"\n      - sh run.sh\n",
    );
    cmd.arg("-b").arg(&spec);
    let run = Run::from(cmd.output().unwrap());
    run.expect_code(0);
    assert_eq!(line(&run, "marker"), "folder");
    assert!(run.stdout.contains("folder-script"), "{}", run.stdout);
}

#[test]
fn zip_entries_escaping_the_source_are_rejected() {
    let bucket = Bucket::new("slip");
    let s = Sandbox::new();
    // A zip's name and its entries: (name, symlink target, contents).
    type Entries<'a> = &'a [(&'a str, Option<&'a str>, &'a str)];
    let cases: [(&str, Entries); 3] = [
        (
            "dotdot.zip",
            &[
                ("buildspec.yml", None, ZIP_SPEC),
                ("../../evil.txt", None, "x"),
            ],
        ),
        ("absolute.zip", &[("/tmp/buildagent-evil.txt", None, "x")]),
        (
            "link.zip",
            &[
                ("buildspec.yml", None, ZIP_SPEC),
                ("escape", Some("../../../../etc"), ""),
            ],
        ),
    ];
    for (key, entries) in cases {
        bucket.put(key, zip_of(entries));
        let url = format!("s3://{}/{key}", bucket.name);
        let run = s3_build(&s, &["-s", &url]);
        run.expect_code(1);
        assert!(
            run.stdout.contains("outside the source directory"),
            "{key}: {}",
            run.stdout
        );
        assert!(
            run.stdout.contains(&format!("cannot fetch source {url}")),
            "{}",
            run.stdout
        );
        assert!(!run.stdout.contains("marker="), "{}", run.stdout);
    }
    assert!(!Path::new("/tmp/buildagent-evil.txt").exists());
    bucket.put("corrupt.zip", b"PK\x03\x04 not really".to_vec());
    let run = s3_build(&s, &["-s", &format!("s3://{}/corrupt.zip", bucket.name)]);
    run.expect_code(1);
    assert!(
        run.stdout.contains("not a valid zip file"),
        "{}",
        run.stdout
    );
}
