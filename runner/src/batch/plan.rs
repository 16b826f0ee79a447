//! Expanding a `batch` section into its builds, each with a deterministic identifier.
//!
//! - `build-list` and `build-graph`: one build per task, with the task's `identifier`.
//! - `build-matrix`: one build per combination of the dynamic values, the first axis outermost
//!   (`dynamic.buildspec`, then `dynamic.env.image`, then `dynamic.env.compute-type`, then each
//!   of `dynamic.env.variables` in file order). Builds are named `matrix_1` ... `matrix_<N>` in
//!   that order; [`ChildPlan::description`] names the combination (`buildspec=a.yml V=1`).
//! - `build-fanout`: `parallelism` identical builds named `shard_1` ... `shard_<N>`, each told
//!   its shard in [`SHARD_INDEX_VAR`] (1-based, the identifier's number) and
//!   [`SHARD_COUNT_VAR`].
//!
//! ```
//! use buildagent_runner::batch::plan::expand;
//! use buildagent_spec::{parse, ParseOptions};
//!
//! let yaml = "version: 0.2\nbatch:\n  build-matrix:\n    dynamic:\n      buildspec: [a.yml, b.yml]\n      env:\n        variables:\n          V: ['1', '2', '3']\n";
//! let spec = parse(yaml, &ParseOptions::default()).buildspec.unwrap();
//! let children = expand(spec.batch.as_ref().unwrap());
//! assert_eq!(children.len(), 6);
//! assert_eq!(children[0].identifier, "matrix_1");
//! assert_eq!(children[0].description, "buildspec=a.yml V=1");
//! assert_eq!(children[5].description, "buildspec=b.yml V=3");
//! ```

use buildagent_spec::{Batch, BatchBuilds, BatchEnv, BatchTask};
use serde::Serialize;

/// The variable that tells a fanout build its shard, 1 to [`SHARD_COUNT_VAR`] (buildagent's own
/// name: CodeBuild does not publish one). `codebuild-tests-run` reads it.
pub const SHARD_INDEX_VAR: &str = "BUILDAGENT_SHARD_INDEX";

/// The variable that tells a fanout build how many shards there are (buildagent's own name).
pub const SHARD_COUNT_VAR: &str = "BUILDAGENT_SHARD_COUNT";

/// `CODEBUILD_BATCH_BUILD_IDENTIFIER`: the build's identifier in its batch.
pub const IDENTIFIER_VAR: &str = "CODEBUILD_BATCH_BUILD_IDENTIFIER";

/// Which kind of batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BatchKind {
    /// `build-list`.
    BuildList,
    /// `build-graph`.
    BuildGraph,
    /// `build-matrix`.
    BuildMatrix,
    /// `build-fanout`.
    BuildFanout,
}

impl BatchKind {
    /// The buildspec key (`build-graph`...).
    pub fn as_str(self) -> &'static str {
        match self {
            BatchKind::BuildList => "build-list",
            BatchKind::BuildGraph => "build-graph",
            BatchKind::BuildMatrix => "build-matrix",
            BatchKind::BuildFanout => "build-fanout",
        }
    }

    /// The kind of `batch`, if it defines builds.
    pub fn of(batch: &Batch) -> Option<BatchKind> {
        Some(match batch.builds.as_ref()? {
            BatchBuilds::BuildList(_) => BatchKind::BuildList,
            BatchBuilds::BuildGraph(_) => BatchKind::BuildGraph,
            BatchBuilds::BuildMatrix(_) => BatchKind::BuildMatrix,
            BatchBuilds::BuildFanout(_) => BatchKind::BuildFanout,
        })
    }
}

/// A fanout build's shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Shard {
    /// 1 to `count`.
    pub index: u32,
    /// How many shards.
    pub count: u32,
}

/// One build of a batch, as the `batch` section describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ChildPlan {
    /// Its identifier (`CODEBUILD_BATCH_BUILD_IDENTIFIER`).
    pub identifier: String,
    /// Its own buildspec, relative to the source directory; `None`: the batch's buildspec.
    pub buildspec: Option<String>,
    /// Variables set like `--env-var` overrides, in order (a later one wins).
    pub variables: Vec<(String, String)>,
    /// The build image (`env.image`), for builds in containers.
    pub image: Option<String>,
    /// `env.privileged-mode`, for builds in containers.
    pub privileged: Option<bool>,
    /// Whether its failure leaves the batch's status alone.
    pub ignore_failure: bool,
    /// Identifiers it waits for (build-graph): it starts once they all SUCCEEDED.
    pub depend_on: Vec<String>,
    /// Its shard (build-fanout).
    pub shard: Option<Shard>,
    /// What makes it differ from its siblings: the matrix combination, or `shard 2/5`; empty for
    /// list and graph tasks.
    pub description: String,
    /// Settings that have no local meaning (`compute-type`, `fleet`, `type`, `debug-session`),
    /// as `key=value`, to report.
    pub not_applicable: Vec<String>,
}

/// The builds of `batch`, in order (none when it defines no builds).
pub fn expand(batch: &Batch) -> Vec<ChildPlan> {
    match &batch.builds {
        None => Vec::new(),
        Some(BatchBuilds::BuildList(tasks) | BatchBuilds::BuildGraph(tasks)) => {
            tasks.iter().map(task).collect()
        }
        Some(BatchBuilds::BuildMatrix(matrix)) => {
            let mut base = ChildPlan::default();
            if let Some(fixed) = &matrix.fixed {
                base.ignore_failure = fixed.ignore_failure;
                if let Some(env) = &fixed.env {
                    apply_env(&mut base, env);
                }
            }
            // Each axis: its label and its values, as (how to apply, text).
            let mut axes: Vec<Vec<(Axis, String)>> = Vec::new();
            if let Some(dynamic) = &matrix.dynamic {
                let values = |axis: Axis, list: &[buildagent_spec::Spanned<String>]| {
                    list.iter()
                        .map(|v| (axis.clone(), v.value.clone()))
                        .collect::<Vec<_>>()
                };
                for (axis, list) in [
                    (Axis::Buildspec, &dynamic.buildspec),
                    (Axis::Image, &dynamic.env.image),
                    (Axis::ComputeType, &dynamic.env.compute_type),
                ] {
                    if !list.is_empty() {
                        axes.push(values(axis, list.as_slice()));
                    }
                }
                for v in &dynamic.env.variables {
                    axes.push(values(
                        Axis::Variable(v.name.value.clone()),
                        v.values.as_slice(),
                    ));
                }
            }
            let mut combos: Vec<Vec<(Axis, String)>> = vec![Vec::new()];
            for axis in &axes {
                combos = combos
                    .iter()
                    .flat_map(|combo| {
                        axis.iter().map(move |value| {
                            let mut next = combo.clone();
                            next.push(value.clone());
                            next
                        })
                    })
                    .collect();
            }
            combos
                .into_iter()
                .enumerate()
                .map(|(i, combo)| {
                    let mut child = base.clone();
                    child.identifier = format!("matrix_{}", i + 1);
                    let mut labels = Vec::new();
                    for (axis, value) in combo {
                        match &axis {
                            Axis::Buildspec => child.buildspec = Some(value.clone()),
                            Axis::Image => child.image = Some(value.clone()),
                            Axis::ComputeType => {
                                child.not_applicable.push(format!("compute-type={value}"))
                            }
                            Axis::Variable(name) => {
                                child.variables.push((name.clone(), value.clone()))
                            }
                        }
                        labels.push(format!("{}={value}", axis.label()));
                    }
                    child.description = labels.join(" ");
                    child
                })
                .collect()
        }
        Some(BatchBuilds::BuildFanout(fanout)) => {
            let count = fanout.parallelism.value;
            (1..=count)
                .map(|index| ChildPlan {
                    identifier: format!("shard_{index}"),
                    ignore_failure: fanout.ignore_failure,
                    shard: Some(Shard { index, count }),
                    variables: vec![
                        (SHARD_INDEX_VAR.to_string(), index.to_string()),
                        (SHARD_COUNT_VAR.to_string(), count.to_string()),
                    ],
                    description: format!("shard {index}/{count}"),
                    ..ChildPlan::default()
                })
                .collect()
        }
    }
}

#[derive(Clone, Debug)]
enum Axis {
    Buildspec,
    Image,
    ComputeType,
    Variable(String),
}

impl Axis {
    fn label(&self) -> &str {
        match self {
            Axis::Buildspec => "buildspec",
            Axis::Image => "image",
            Axis::ComputeType => "compute-type",
            Axis::Variable(name) => name,
        }
    }
}

fn task(t: &BatchTask) -> ChildPlan {
    let mut child = ChildPlan {
        identifier: t.identifier.value.clone(),
        buildspec: t.buildspec.as_ref().map(|b| b.value.clone()),
        ignore_failure: t.ignore_failure,
        depend_on: t.depend_on.iter().map(|d| d.value.clone()).collect(),
        ..ChildPlan::default()
    };
    if t.debug_session {
        child.not_applicable.push("debug-session=true".to_string());
    }
    if let Some(env) = &t.env {
        apply_env(&mut child, env);
    }
    child
}

fn apply_env(child: &mut ChildPlan, env: &BatchEnv) {
    if let Some(image) = &env.image {
        child.image = Some(image.value.clone());
    }
    if let Some(privileged) = env.privileged_mode {
        child.privileged = Some(privileged);
    }
    for (key, value) in [
        ("compute-type", &env.compute_type),
        ("fleet", &env.fleet),
        ("type", &env.kind),
    ] {
        if let Some(value) = value {
            child.not_applicable.push(format!("{key}={}", value.value));
        }
    }
    child.variables.extend(
        env.variables
            .iter()
            .map(|v| (v.name.value.clone(), v.value.value.clone())),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use buildagent_spec::{parse, ParseOptions};

    fn children(yaml: &str) -> Vec<ChildPlan> {
        let parsed = parse(yaml, &ParseOptions::default());
        let spec = parsed.buildspec.expect("valid");
        expand(spec.batch.as_ref().unwrap())
    }

    #[test]
    fn matrix_is_the_product_with_the_first_axis_outermost() {
        let c = children(
            "version: 0.2\nbatch:\n  build-matrix:\n    static:\n      ignore-failure: yes\n      env:\n        privileged-mode: yes\n    dynamic:\n      env:\n        image: [i1, i2]\n        variables:\n          A: [x, y]\n          B: ['1', '2', '3']\n",
        );
        assert_eq!(c.len(), 12);
        let ids: Vec<&str> = c.iter().map(|c| c.identifier.as_str()).collect();
        assert_eq!(ids[0], "matrix_1");
        assert_eq!(ids[11], "matrix_12");
        assert_eq!(c[0].description, "image=i1 A=x B=1");
        assert_eq!(c[1].description, "image=i1 A=x B=2");
        assert_eq!(c[3].description, "image=i1 A=y B=1");
        assert_eq!(c[6].description, "image=i2 A=x B=1");
        assert_eq!(c[6].image.as_deref(), Some("i2"));
        assert_eq!(
            c[6].variables,
            [("A".into(), "x".into()), ("B".into(), "1".into())]
        );
        assert!(c
            .iter()
            .all(|c| c.ignore_failure && c.privileged == Some(true)));
    }

    #[test]
    fn fanout_shards_are_numbered_from_one() {
        let c = children("version: 0.2\nbatch:\n  build-fanout:\n    parallelism: 3\n");
        assert_eq!(c.len(), 3);
        assert_eq!(c[2].identifier, "shard_3");
        assert_eq!(c[2].shard, Some(Shard { index: 3, count: 3 }));
        assert!(c[2]
            .variables
            .contains(&(SHARD_INDEX_VAR.to_string(), "3".to_string())));
    }

    #[test]
    fn tasks_keep_their_settings_and_report_the_rest() {
        let c = children(
            "version: 0.2\nbatch:\n  build-graph:\n    - identifier: a\n      env:\n        compute-type: BUILD_GENERAL1_LARGE\n        variables:\n          V: '1'\n    - identifier: b\n      buildspec: b.yml\n      depend-on: [a]\n      ignore-failure: true\n",
        );
        assert_eq!(c[0].not_applicable, ["compute-type=BUILD_GENERAL1_LARGE"]);
        assert_eq!(c[0].variables, [("V".into(), "1".into())]);
        assert_eq!(c[1].buildspec.as_deref(), Some("b.yml"));
        assert_eq!(c[1].depend_on, ["a"]);
        assert!(c[1].ignore_failure);
    }
}
