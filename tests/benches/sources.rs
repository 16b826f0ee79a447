//! Speed of the agent's Git fetch against git itself, on the same generated repository (10,000
//! files of about 330 bytes in 100 directories, 200 commits of 50 changed files each, made with
//! `git fast-import`) served by the tests' Git HTTP server on 127.0.0.1. Both sides run in turn
//! in one process, so they see the same machine load; medians of several runs. Prints figures
//! and ratios; run with
//! `cargo build --release -p buildagent && cargo bench -p buildagent-tests --bench sources`
//! (`BUILDAGENT_BENCH_AGENT=/path/to/buildagent` measures another build of the agent).
//!
//! - clone: `buildagent run -s URL` (depth 1, a cold clone cache, a one-command buildspec)
//!   against `git clone --depth 1 URL`.
//! - re-fetch: after one new commit, `buildagent run -s URL` with the warm clone cache against
//!   `git fetch` in an existing depth-1 clone; also against `git fetch` followed by a fresh work
//!   tree of the fetched commit (`git worktree add`), which is what the agent delivers: a new
//!   checkout for the build. The agent's own "Fetched ... in" log line gives its fetch step
//!   alone.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use buildagent_tests::git_server::{git, GitServer};

mod common;
use common::{agent, median};

const RUNS: usize = 5;

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// A bare repository of 10,000 files and 200 commits, made with fast-import.
fn generate(bare: &Path) {
    std::fs::create_dir_all(bare).unwrap();
    git(bare, &["init", "-q", "--bare", "-b", "main"]);
    let mut child = Command::new("git")
        .arg("-C")
        .arg(bare)
        .args(["fast-import", "--quiet"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = std::io::BufWriter::new(child.stdin.take().unwrap());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let files: Vec<String> = (0..10_000)
        .map(|i| format!("d{:03}/f{i:05}.txt", i / 100))
        .collect();
    for c in 0..200u64 {
        let message = format!("commit {c}");
        write!(
            stdin,
            "commit refs/heads/main\ncommitter T <t@e> {} +0000\ndata {}\n{message}\n",
            1_700_000_000 + c,
            message.len()
        )
        .unwrap();
        let changed: Vec<&String> = if c == 0 {
            files.iter().collect()
        } else {
            (0..50)
                .map(|_| &files[(next() % 10_000) as usize])
                .collect()
        };
        for path in changed {
            let mut body = format!("{path} version {c}\n");
            while body.len() < 330 {
                body.push_str(&format!(
                    "{:016x}{}",
                    next(),
                    if next() % 4 == 0 { "\n" } else { " " }
                ));
            }
            write!(
                stdin,
                "M 100644 inline {path}\ndata {}\n{body}\n",
                body.len()
            )
            .unwrap();
        }
        writeln!(stdin).unwrap();
    }
    stdin.flush().unwrap();
    drop(stdin);
    assert!(child.wait().unwrap().success());
    git(bare, &["repack", "-adq"]);
}

/// One more commit on `main`, made in the bare repository itself.
fn add_commit(bare: &Path, n: usize) {
    let blob = {
        let mut child = Command::new("git")
            .arg("-C")
            .arg(bare)
            .args(["hash-object", "-w", "--stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("new content {n}\n").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let index = bare.join("bench-index");
    let run = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(bare)
            .args(args)
            .env("GIT_INDEX_FILE", &index)
            .env("GIT_AUTHOR_NAME", "T")
            .env("GIT_AUTHOR_EMAIL", "t@e")
            .env("GIT_COMMITTER_NAME", "T")
            .env("GIT_COMMITTER_EMAIL", "t@e")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    run(&["read-tree", "main"]);
    run(&[
        "update-index",
        "--add",
        "--cacheinfo",
        &format!("100644,{blob},d000/new.txt"),
    ]);
    let tree = run(&["write-tree"]);
    let commit = run(&[
        "commit-tree",
        &tree,
        "-p",
        "main",
        "-m",
        &format!("new {n}"),
    ]);
    run(&["update-ref", "refs/heads/main", &commit]);
}

fn time(mut f: impl FnMut()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn git_quiet(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

/// Runs the agent on `url` with `cache` as XDG_CACHE_HOME; returns the seconds of its
/// "Fetched refs/heads/main in" line (the fetch step alone).
fn run_agent(work: &Path, url: &str, cache: &Path, spec: &Path) -> f64 {
    let out = Command::new(agent())
        .current_dir(work)
        .args([
            "run",
            "--log-format",
            "codebuild",
            "--no-cache",
            "-s",
            url,
            "-b",
        ])
        .arg(spec)
        .env("XDG_CACHE_HOME", cache)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    stdout
        .lines()
        .find_map(|l| {
            let rest = l.split_once("Fetched refs/heads/main in ")?.1;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no fetch time in\n{stdout}"))
}

fn main() {
    let server = GitServer::start();
    let bare = server.root().join("bench.git");
    let t = Instant::now();
    generate(&bare);
    eprintln!(
        "generated the repository in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let url = server.url("bench.git");
    let scratch = tempfile::tempdir().unwrap();
    let spec = scratch.path().join("spec.yml");
    std::fs::write(
        &spec,
        "version: 0.2\nphases:\n  build:\n    commands: ['true']\n",
    )
    .unwrap();

    // Clone at depth 1: the agent with a cold cache against git clone --depth 1.
    let (mut agent_clone, mut git_clone) = (Vec::new(), Vec::new());
    for i in 0..RUNS {
        let cache = scratch.path().join(format!("cold-{i}"));
        agent_clone.push(time(|| {
            run_agent(scratch.path(), &url, &cache, &spec);
        }));
        let dest = scratch.path().join(format!("clone-{i}"));
        git_clone.push(time(|| {
            git_quiet(
                scratch.path(),
                &["clone", "-q", "--depth", "1", &url, &dest.to_string_lossy()],
            )
        }));
        std::fs::remove_dir_all(&cache).unwrap();
        std::fs::remove_dir_all(&dest).unwrap();
    }
    let (a, g) = (median(agent_clone), median(git_clone));
    println!(
        "clone depth 1:  agent {:.3} s   git clone --depth 1 {:.3} s   ratio {:.2}x",
        secs(a),
        secs(g),
        secs(a) / secs(g)
    );

    // Re-fetch after one new commit: the agent's warm cache against git fetch in a clone.
    let cache = scratch.path().join("warm");
    run_agent(scratch.path(), &url, &cache, &spec);
    let clone = scratch.path().join("existing");
    git_quiet(
        scratch.path(),
        &[
            "clone",
            "-q",
            "--depth",
            "1",
            &url,
            &clone.to_string_lossy(),
        ],
    );
    let (mut agent_total, mut agent_fetch, mut git_fetch, mut git_fetch_checkout) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..RUNS {
        add_commit(&bare, 2 * i);
        let mut fetch_step = 0.0;
        agent_total.push(time(|| {
            fetch_step = run_agent(scratch.path(), &url, &cache, &spec)
        }));
        agent_fetch.push(Duration::from_secs_f64(fetch_step));
        git_fetch.push(time(|| git_quiet(&clone, &["fetch", "-q"])));
        add_commit(&bare, 2 * i + 1);
        let tree = scratch.path().join(format!("tree-{i}"));
        git_fetch_checkout.push(time(|| {
            git_quiet(&clone, &["fetch", "-q"]);
            git_quiet(
                &clone,
                &[
                    "worktree",
                    "add",
                    "-q",
                    "--detach",
                    &tree.to_string_lossy(),
                    "origin/main",
                ],
            );
        }));
    }
    let (total, fetch, gf, gfc) = (
        median(agent_total),
        median(agent_fetch),
        median(git_fetch),
        median(git_fetch_checkout),
    );
    println!(
        "re-fetch, 1 new commit:  agent {:.3} s (its fetch step {:.3} s)   git fetch {:.3} s   \
         git fetch + new work tree {:.3} s",
        secs(total),
        secs(fetch),
        secs(gf),
        secs(gfc)
    );
    println!(
        "  ratios: agent fetch step / git fetch {:.2}x   agent / (git fetch + new work tree) {:.2}x   \
         agent / git fetch {:.2}x",
        secs(fetch) / secs(gf),
        secs(total) / secs(gfc),
        secs(total) / secs(gf)
    );
    println!("  (HTTP requests served: {})", server.requests());
}
