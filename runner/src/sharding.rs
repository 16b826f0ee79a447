//! Test sharding for build-fanout batches: which test files a shard runs
//! (`codebuild-tests-run`), and the file search that lists them (`codebuild-glob-search`).
//!
//! A fanout child learns its shard from [`SHARD_INDEX_VAR`] (1 to the count) and
//! [`SHARD_COUNT_VAR`] (see [`crate::batch::plan`]); outside a fanout there is one shard, which
//! runs every file. Two strategies, as CodeBuild names them:
//!
//! - **equal-distribution** (the default): the file names are sorted byte by byte and cut into
//!   `count` consecutive chunks whose sizes differ by at most one (the first `n % count` shards
//!   get the extra file). Adding a file can move many others.
//! - **stability**: each file goes to the shard with the highest SHA-256 of
//!   `"<shard>\0<file name>"` (rendezvous hashing): adding or removing a file moves only that
//!   file, and changing the count moves only the files whose best shard appeared or vanished.
//!   Shards are near-equal, not equal.
//!
//! ```
//! use buildagent_runner::sharding::{shard_files, Strategy};
//!
//! let files: Vec<String> = ["d", "a", "c", "b", "e"].iter().map(|s| s.to_string()).collect();
//! assert_eq!(shard_files(&files, 1, 2, Strategy::EqualDistribution), ["a", "b", "c"]);
//! assert_eq!(shard_files(&files, 2, 2, Strategy::EqualDistribution), ["d", "e"]);
//! let one = shard_files(&files, 1, 2, Strategy::Stability);
//! let two = shard_files(&files, 2, 2, Strategy::Stability);
//! assert_eq!(one.len() + two.len(), 5);
//! ```

use std::str::FromStr;

use sha2::{Digest, Sha256};

pub use crate::batch::plan::{SHARD_COUNT_VAR, SHARD_INDEX_VAR};

/// `codebuild-tests-run`'s name on a build's `PATH`.
pub const TESTS_RUN_NAME: &str = "codebuild-tests-run";

/// `codebuild-glob-search`'s name on a build's `PATH`.
pub const GLOB_SEARCH_NAME: &str = "codebuild-glob-search";

/// The variable `codebuild-tests-run` exports while the test command runs: this shard's files,
/// one per line (CodeBuild's name).
pub const SHARD_FILES_VAR: &str = "CODEBUILD_CURRENT_SHARD_FILES";

/// How files are split between shards (`--sharding-strategy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Sorted, consecutive chunks of sizes that differ by at most one.
    #[default]
    EqualDistribution,
    /// Each file by a stable hash of its name.
    Stability,
}

impl FromStr for Strategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Strategy, String> {
        match s {
            "equal-distribution" => Ok(Strategy::EqualDistribution),
            "stability" => Ok(Strategy::Stability),
            other => Err(format!(
                "unknown sharding strategy `{other}` (equal-distribution or stability)"
            )),
        }
    }
}

/// This build's shard (1-based index, count) from its environment: `None` outside a fanout
/// (neither variable set); an error names a variable that is set but not valid.
pub fn shard_from_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<(u32, u32)>, String> {
    let index = get(SHARD_INDEX_VAR).filter(|v| !v.is_empty());
    let count = get(SHARD_COUNT_VAR).filter(|v| !v.is_empty());
    let (index, count) = match (index, count) {
        (None, None) => return Ok(None),
        (Some(i), Some(c)) => (i, c),
        _ => {
            return Err(format!(
                "{SHARD_INDEX_VAR} and {SHARD_COUNT_VAR} must be set together"
            ))
        }
    };
    let count: u32 = count
        .parse()
        .ok()
        .filter(|c| *c >= 1)
        .ok_or_else(|| format!("{SHARD_COUNT_VAR}=`{count}` is not a number of at least 1"))?;
    let index: u32 = index
        .parse()
        .ok()
        .filter(|i| (1..=count).contains(i))
        .ok_or_else(|| format!("{SHARD_INDEX_VAR}=`{index}` is not between 1 and {count}"))?;
    Ok(Some((index, count)))
}

/// The files of shard `index` (1 to `count`) among `files` (duplicates count once), in sorted
/// order.
pub fn shard_files(files: &[String], index: u32, count: u32, strategy: Strategy) -> Vec<String> {
    let mut sorted: Vec<&String> = files.iter().collect();
    sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    sorted.dedup();
    let count = count.max(1) as usize;
    let index = (index.max(1) as usize - 1).min(count - 1);
    match strategy {
        Strategy::EqualDistribution => {
            let base = sorted.len() / count;
            let extra = sorted.len() % count;
            let start = index * base + index.min(extra);
            let len = base + usize::from(index < extra);
            sorted[start..start + len]
                .iter()
                .map(|s| s.to_string())
                .collect()
        }
        Strategy::Stability => sorted
            .into_iter()
            .filter(|file| best_shard(file, count) == index)
            .map(|s| s.to_string())
            .collect(),
    }
}

/// The 0-based shard with the highest score for `file` (rendezvous hashing).
fn best_shard(file: &str, count: usize) -> usize {
    (0..count)
        .max_by_key(|shard| {
            let mut h = Sha256::new();
            h.update((shard + 1).to_string().as_bytes());
            h.update([0]);
            h.update(file.as_bytes());
            let digest = h.finalize();
            let mut first = [0u8; 8];
            first.copy_from_slice(&digest[..8]);
            (u64::from_be_bytes(first), std::cmp::Reverse(*shard))
        })
        .unwrap_or(0)
}

/// Quotes `word` for a POSIX shell when it needs it (test file names appended to a command).
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@%".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("tests/t{i:03}.py")).collect()
    }

    #[test]
    fn every_file_lands_in_exactly_one_shard_with_both_strategies() {
        for strategy in [Strategy::EqualDistribution, Strategy::Stability] {
            for count in 1..=7u32 {
                let files = names(23);
                let mut all: Vec<String> = (1..=count)
                    .flat_map(|i| shard_files(&files, i, count, strategy))
                    .collect();
                all.sort();
                assert_eq!(all, files, "{strategy:?} count {count}");
            }
        }
    }

    #[test]
    fn equal_distribution_sizes_differ_by_at_most_one() {
        let files = names(23);
        let sizes: Vec<usize> = (1..=5)
            .map(|i| shard_files(&files, i, 5, Strategy::EqualDistribution).len())
            .collect();
        assert_eq!(sizes, [5, 5, 5, 4, 4]);
    }

    #[test]
    fn stability_moves_only_the_added_file() {
        let files = names(40);
        let mut more = files.clone();
        more.push("tests/new.py".to_string());
        for i in 1..=4 {
            let before = shard_files(&files, i, 4, Strategy::Stability);
            let mut after = shard_files(&more, i, 4, Strategy::Stability);
            after.retain(|f| f != "tests/new.py");
            assert_eq!(before, after);
        }
    }

    #[test]
    fn shards_come_from_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(shard_from_env(env(&[])), Ok(None));
        assert_eq!(
            shard_from_env(env(&[(SHARD_INDEX_VAR, "2"), (SHARD_COUNT_VAR, "3")])),
            Ok(Some((2, 3)))
        );
        assert!(shard_from_env(env(&[(SHARD_INDEX_VAR, "4"), (SHARD_COUNT_VAR, "3")])).is_err());
        assert!(shard_from_env(env(&[(SHARD_INDEX_VAR, "1")])).is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("tests/a_b.py"), "tests/a_b.py");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
