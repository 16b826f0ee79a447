//! Round trip: any valid model, written out with serde as YAML, reads back as the same model
//! with no diagnostic at all.
//!
//! The strategies below generate arbitrary *valid* [`Buildspec`]s that cover every part of the
//! model, with awkward text wherever the buildspec takes free text (numbers-looking values,
//! YAML 1.1 booleans, `~`, empty strings, `: `, `#`, quotes, newlines, unicode, control
//! characters, `$PATH`, YAML indicators at the start of a command). Names follow the reader's
//! rules, so a model that does not come back unchanged and silent is a bug in the reader or in
//! the model's `Serialize` impls.

use std::collections::HashSet;

use buildagent_spec::*;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;

/// One of `items`.
fn pick<T: Clone + std::fmt::Debug + 'static>(items: &'static [T]) -> BoxedStrategy<T> {
    select(items).boxed()
}

fn spanned(value: String) -> Spanned<String> {
    Spanned::synthetic(value)
}

fn spanned_all(values: Vec<String>) -> Vec<Spanned<String>> {
    values.into_iter().map(spanned).collect()
}

/// Keeps the first item of each key, in order.
fn unique_by<T>(items: Vec<T>, key: impl Fn(&T) -> String) -> Vec<T> {
    let mut seen = HashSet::new();
    items.into_iter().filter(|i| seen.insert(key(i))).collect()
}

/// Text that a YAML emitter must quote, escape or put in a block scalar to keep it text.
const AWKWARD: &[&str] = &[
    "1.10",
    "1.0",
    "0.2",
    "0.1",
    "8080",
    "-1",
    "+1",
    "1e3",
    "1_000",
    "0x1F",
    "0o17",
    "017",
    "0b101",
    "1:20",
    "12:30:00",
    "2001-12-14",
    ".inf",
    "-.Inf",
    ".NaN",
    "yes",
    "no",
    "Yes",
    "NO",
    "on",
    "off",
    "y",
    "n",
    "true",
    "False",
    "TRUE",
    "~",
    "null",
    "Null",
    "NULL",
    "",
    " ",
    "  leading",
    "trailing  ",
    " both ",
    ": ",
    "a: b",
    "key:value",
    "echo Step 1: build",
    "#",
    "# not a comment",
    "a #b",
    "a#b",
    "'single'",
    "\"double\"",
    "it's",
    "say \"hi\" and 'bye'",
    "line1\nline2",
    "\n",
    "trailing newline\n",
    "two trailing newlines\n\n",
    "\nleading newline",
    "a\n\nb",
    "  indented first line\nnext",
    "line with trailing space \nnext",
    "tab\there",
    "\t",
    "日本語",
    "é",
    "emoji 🚀",
    "$PATH",
    "${HOME}/bin:$PATH",
    "$(date +%Y-%m-%d)",
    "`date`",
    "- dash",
    "-",
    "--",
    "---",
    "...",
    "* star",
    "*alias",
    "&anchor",
    "!tag",
    "!",
    "!!str x",
    "%YAML 1.2",
    "% percent",
    "@at",
    "|",
    ">",
    "|-",
    "{a: b}",
    "[1, 2]",
    "{",
    "]",
    ",",
    "?",
    "? key",
    "<<",
    "=",
    "\\",
    "C:\\path\\to",
    "\\n",
    "\r",
    "a\r\nb",
    "\u{85}",
    "\u{a0}",
    "\u{feff}bom",
    "\0",
    "\u{7f}",
    "\u{1b}[31mred",
];

/// Any text, awkward more often than not.
///
/// Without U+2028 and U+2029: serde_yaml_ng's emitter (libyaml) follows YAML 1.1, where LINE
/// SEPARATOR and PARAGRAPH SEPARATOR are line breaks, and writes them raw followed by an
/// indentation (`'\u{2028}  '`). In YAML 1.2, which the reader follows, they are ordinary
/// characters, so that text means "\u{2028}  ": the emitter's output is not YAML 1.2 for them.
/// `separators_are_content_in_yaml_1_2` below pins down the reader's side.
fn text() -> BoxedStrategy<String> {
    any_text()
        .prop_map(|s| s.replace(['\u{2028}', '\u{2029}'], "\u{b6}"))
        .boxed()
}

fn any_text() -> BoxedStrategy<String> {
    let piece = prop_oneof![
        pick(AWKWARD).prop_map(str::to_string),
        "[ -~]{1,6}",
        "\\PC{1,3}",
        any::<char>().prop_map(String::from),
    ];
    prop_oneof![
        3 => pick(AWKWARD).prop_map(str::to_string),
        2 => "[ -~]{0,16}",
        2 => vec(piece, 1..5).prop_map(|p| p.concat()),
    ]
    .boxed()
}

/// A shell command: anything [`text`] makes, and commands that start with YAML indicators.
fn command() -> BoxedStrategy<String> {
    const COMMANDS: &[&str] = &[
        "make -j4 && ./run.sh",
        "echo Step 1: build",
        "echo \"a: b\" # comment",
        "- not a list item",
        "-v",
        "* glob",
        "& background",
        "! negate",
        "% percent",
        "@ at",
        "`backtick`",
        "'quoted' rest",
        "\"quoted\" rest",
        "{ braces; }",
        "[ -f x ] && echo yes",
        "| pipe",
        "> redirect",
        "key: value",
        "if [ -f x ]; then\n  echo yes\nfi",
        "cat <<EOF\n  indented: yes\n# hash\nEOF\n",
        "  python -c 'print(1)'\n",
        "docker build -t $IMAGE:$TAG .",
    ];
    prop_oneof![
        2 => pick(COMMANDS).prop_map(str::to_string),
        3 => text(),
        1 => (pick(COMMANDS), text()).prop_map(|(c, t)| format!("{c}{t}")),
    ]
    .boxed()
}

/// A path or glob.
fn path() -> BoxedStrategy<String> {
    prop_oneof![
        pick(&[
            "**/*",
            "dist/**/*",
            "*.xml",
            "build/test-results",
            ".",
            "a b/c"
        ])
        .prop_map(str::to_string),
        "[A-Za-z0-9_./*-]{1,16}",
        text(),
    ]
    .boxed()
}

/// A name for an environment variable, as the reader accepts it.
fn variable_name() -> BoxedStrategy<String> {
    const ODD: &[&str] = &[
        "null",
        "Null",
        "NULL",
        "yes",
        "no",
        "on",
        "off",
        "y",
        "n",
        "Y",
        "true",
        "True",
        "FALSE",
        "_",
        "__",
        "inf",
        "nan",
        "E1",
        "e3",
        "x1",
        "AWS",
        "CODEBUILD",
        "AWS_REGION",
    ];
    prop_oneof![
        8 => "[A-Za-z_][A-Za-z0-9_]{0,12}",
        2 => pick(ODD).prop_map(str::to_string),
        // Longer than 128 characters: the emitter writes it as an explicit `? ` key.
        1 => "[A-Z][A-Z0-9_]{130,140}",
    ]
    .prop_filter("the CODEBUILD_ prefix is reserved", |n| {
        !n.starts_with("CODEBUILD_")
    })
    .boxed()
}

/// An identifier of a batch build or a secondary artifact.
fn identifier() -> BoxedStrategy<String> {
    prop_oneof![
        6 => "[A-Za-z0-9_]{1,16}",
        2 => pick(&["null", "yes", "no", "true", "1", "007", "1_000", "0x1F", "1e3", "_"])
            .prop_map(str::to_string),
        1 => "[A-Za-z0-9_]{127}",
    ]
    .boxed()
}

/// Any subset of `items`, in any order.
fn ordered<T: Clone + std::fmt::Debug + 'static>(items: &'static [T]) -> BoxedStrategy<Vec<T>> {
    (Just(items.to_vec()).prop_shuffle(), 0..=items.len())
        .prop_map(|(mut all, n)| {
            all.truncate(n);
            all
        })
        .boxed()
}

fn shell() -> impl Strategy<Value = Shell> {
    pick(&[Shell::Sh, Shell::Bash, Shell::PowerShell, Shell::Cmd])
}

/// A secret id or json key, version stage or version id: any text without `:`.
fn secret_field() -> BoxedStrategy<String> {
    prop_oneof![
        "[A-Za-z0-9/_+=.@-]{1,16}",
        pick(&[
            "!",
            "!x",
            "AWSCURRENT",
            "AWSPREVIOUS",
            "prod/db",
            "arn",
            "#",
            "~",
            "yes"
        ])
        .prop_map(str::to_string),
        text(),
    ]
    .prop_filter("non-empty, no colon", |s| !s.is_empty() && !s.contains(':'))
    .boxed()
}

fn secret_reference() -> BoxedStrategy<SecretReference> {
    let arn = (
        pick(&["us-east-1", "eu-west-3", "ap-southeast-2"]),
        "[0-9]{12}",
        "[A-Za-z0-9/_+=.@-]{1,16}-[A-Za-z0-9]{6}",
    )
        .prop_map(|(region, account, name)| {
            format!("arn:aws:secretsmanager:{region}:{account}:secret:{name}")
        });
    // A plain id `arn` followed by `:` would read as the start of an ARN: the syntax cannot
    // write that id with a json key, stage or version, so it is not a model to expect back.
    let plain = secret_field().prop_filter("`arn:` starts an ARN", |id| id != "arn");
    (
        prop_oneof![plain, arn],
        option::of(secret_field()),
        option::of(secret_field()),
        option::of(secret_field()),
    )
        .prop_map(
            |(secret_id, json_key, version_stage, version_id)| SecretReference {
                secret_id,
                json_key,
                version_stage,
                version_id,
            },
        )
        .boxed()
}

/// One name of `env` with where it is set.
#[derive(Clone, Debug)]
enum EnvEntry {
    Plain(String),
    Parameter(String),
    Secret(SecretReference),
}

fn env() -> BoxedStrategy<Env> {
    let entry = prop_oneof![
        text().prop_map(EnvEntry::Plain),
        prop_oneof![
            "(/[A-Za-z0-9_.-]{1,8}){1,3}",
            text().prop_filter("non-empty", |s| !s.is_empty()),
        ]
        .prop_map(EnvEntry::Parameter),
        secret_reference().prop_map(EnvEntry::Secret),
    ];
    (
        option::of(shell()),
        vec((variable_name(), entry), 0..10),
        vec(
            variable_name().prop_filter("AWS_ names are not exported", |n| !n.starts_with("AWS_")),
            0..4,
        ),
        any::<bool>(),
    )
        .prop_map(|(shell, entries, exported, git_credential_helper)| {
            let mut env = Env {
                shell: shell.map(Spanned::synthetic),
                exported_variables: spanned_all(exported),
                git_credential_helper,
                ..Env::default()
            };
            // A name may be set once across variables, parameter-store and secrets-manager.
            for (name, entry) in unique_by(entries, |(n, _)| n.clone()) {
                let name = spanned(name);
                match entry {
                    EnvEntry::Plain(value) => env.variables.push(Variable {
                        name,
                        value: spanned(value),
                    }),
                    EnvEntry::Parameter(parameter) => env.parameter_store.push(ParameterVariable {
                        name,
                        parameter: spanned(parameter),
                    }),
                    EnvEntry::Secret(reference) => env.secrets_manager.push(SecretVariable {
                        name,
                        reference: Spanned::synthetic(reference),
                    }),
                }
            }
            env
        })
        .boxed()
}

fn variables(max: usize) -> BoxedStrategy<Vec<Variable>> {
    vec((variable_name(), text()), 0..max)
        .prop_map(|vars| {
            unique_by(vars, |(n, _)| n.clone())
                .into_iter()
                .map(|(name, value)| Variable {
                    name: spanned(name),
                    value: spanned(value),
                })
                .collect()
        })
        .boxed()
}

fn proxy() -> impl Strategy<Value = Proxy> {
    (any::<bool>(), any::<bool>()).prop_map(|(upload_artifacts, logs)| Proxy {
        upload_artifacts,
        logs,
    })
}

/// A regex that the `regex` crate accepts.
fn retry_pattern() -> BoxedStrategy<String> {
    prop_oneof![
        pick(&[
            ".*Error: Unable to connect.*",
            ".*connection reset.*",
            "^timeout$",
            "[0-9]+",
            "12",
            "-x",
            "a-b-c",
            "(?i)network",
            "foo|bar",
            r"\d+: failed",
            "#x",
            "é+",
            "'quoted'",
            " spaced ",
            "yes",
        ])
        .prop_map(str::to_string),
        // Literal text: no regex metacharacters.
        "[A-Za-z0-9 _,:;#'\"-]{1,12}",
    ]
    .boxed()
}

fn on_failure() -> BoxedStrategy<OnFailure> {
    prop_oneof![
        Just(OnFailure::Abort),
        Just(OnFailure::Continue),
        (0..=Retry::MAX_COUNT, option::of(retry_pattern()))
            .prop_map(|(count, pattern)| OnFailure::Retry(Retry { count, pattern })),
        Just(OnFailure::Retry(Retry {
            count: Retry::DEFAULT_COUNT,
            pattern: None,
        })),
    ]
    .boxed()
}

fn runtime_versions() -> BoxedStrategy<Vec<RuntimeVersion>> {
    let version = prop_oneof![
        pick(&[
            "18",
            "3.10",
            "latest",
            "$MY_VERSION",
            "corretto17",
            "1.21",
            "20.x"
        ])
        .prop_map(str::to_string),
        text(),
    ];
    vec(
        (
            pick(&[
                "nodejs", "python", "java", "golang", "ruby", "php", "dotnet", "docker",
            ]),
            version,
        ),
        0..4,
    )
    .prop_map(|pairs| {
        unique_by(pairs, |(r, _)| r.to_string())
            .into_iter()
            .map(|(runtime, version)| RuntimeVersion {
                runtime: spanned(runtime.to_string()),
                version: spanned(version),
            })
            .collect()
    })
    .boxed()
}

fn user() -> BoxedStrategy<String> {
    prop_oneof![
        pick(&["root", "codebuild-user", "build_user"]).prop_map(str::to_string),
        text(),
    ]
    .boxed()
}

fn phase(name: PhaseName) -> BoxedStrategy<Phase> {
    let runtimes = if name == PhaseName::Install {
        runtime_versions()
    } else {
        Just(Vec::new()).boxed()
    };
    (
        option::of(user()),
        option::of(on_failure()),
        runtimes,
        vec(command(), 0..5),
        vec(command(), 0..3),
    )
        .prop_map(
            move |(run_as, on_failure, runtime_versions, commands, finally)| Phase {
                name: Spanned::synthetic(name),
                run_as: run_as.map(spanned),
                on_failure: on_failure.map(Spanned::synthetic),
                runtime_versions,
                commands: spanned_all(commands),
                finally: spanned_all(finally),
            },
        )
        .boxed()
}

/// Any subset of the four phases, in any order.
fn phases() -> BoxedStrategy<Vec<Phase>> {
    ordered(&PhaseName::ALL)
        .prop_flat_map(|names| names.into_iter().map(phase).collect::<Vec<_>>())
        .boxed()
}

fn report_groups() -> BoxedStrategy<Vec<ReportGroup>> {
    let name = prop_oneof![
        "[A-Za-z0-9_-]{2,24}",
        "[A-Za-z0-9_-]{2,16}"
            .prop_map(|n| { format!("arn:aws:codebuild:us-east-1:123456789012:report-group/{n}") }),
    ];
    let group = (
        name,
        vec(path(), 1..4),
        option::of(path()),
        any::<bool>(),
        option::of(pick(&ReportFormat::ALL)),
    )
        .prop_map(
            |(name, files, base_directory, discard_paths, file_format)| ReportGroup {
                name: spanned(name),
                files: spanned_all(files),
                base_directory: base_directory.map(spanned),
                discard_paths,
                file_format: file_format.map(Spanned::synthetic),
            },
        );
    // CodeBuild takes at most five report groups per project.
    vec(group, 0..=5)
        .prop_map(|groups| unique_by(groups, |g| g.name.value.clone()))
        .boxed()
}

fn artifact_set() -> BoxedStrategy<ArtifactSet> {
    (
        vec(path(), 1..4),
        option::of(text()),
        any::<bool>(),
        option::of(path()),
        vec(path(), 0..3),
        any::<bool>(),
        option::of(text()),
    )
        .prop_map(
            |(files, name, discard_paths, base_directory, exclude_paths, enable_symlinks, s3)| {
                ArtifactSet {
                    files: spanned_all(files),
                    name: name.map(spanned),
                    discard_paths,
                    base_directory: base_directory.map(spanned),
                    exclude_paths: spanned_all(exclude_paths),
                    enable_symlinks,
                    s3_prefix: s3.map(spanned),
                }
            },
        )
        .boxed()
}

fn artifacts() -> BoxedStrategy<Artifacts> {
    (artifact_set(), vec((identifier(), artifact_set()), 0..4))
        .prop_map(|(primary, secondary)| Artifacts {
            primary,
            secondary: unique_by(secondary, |(id, _)| id.clone())
                .into_iter()
                .map(|(identifier, artifact)| SecondaryArtifact {
                    identifier: spanned(identifier),
                    artifact,
                })
                .collect(),
        })
        .boxed()
}

fn cache() -> BoxedStrategy<Cache> {
    (
        option::of(text()),
        vec(text(), 0..=Cache::MAX_FALLBACK_KEYS),
        option::of(pick(&[CacheAction::Restore, CacheAction::Save])),
        vec(path(), 1..4),
    )
        .prop_map(|(key, fallback_keys, action, paths)| Cache {
            // Fallback keys are used only with a key.
            fallback_keys: if key.is_some() {
                spanned_all(fallback_keys)
            } else {
                Vec::new()
            },
            key: key.map(spanned),
            action: action.map(Spanned::synthetic),
            paths: spanned_all(paths),
        })
        .boxed()
}

fn batch_env() -> BoxedStrategy<BatchEnv> {
    let compute = prop_oneof![
        Just((None, None)),
        text().prop_map(|c| (Some(c), None)),
        text().prop_map(|f| (None, Some(f))),
    ];
    (
        compute,
        option::of(text()),
        option::of(any::<bool>()),
        option::of(text()),
        variables(4),
    )
        .prop_map(
            |((compute_type, fleet), image, privileged_mode, kind, variables)| BatchEnv {
                // `compute-type` and `fleet` exclude each other.
                compute_type: compute_type.map(spanned),
                fleet: fleet.map(spanned),
                image: image.map(spanned),
                privileged_mode,
                kind: kind.map(spanned),
                variables,
            },
        )
        .boxed()
}

fn batch_task() -> BoxedStrategy<BatchTask> {
    (
        identifier(),
        option::of(path()),
        any::<bool>(),
        any::<bool>(),
        option::of(batch_env()),
    )
        .prop_map(
            |(identifier, buildspec, debug_session, ignore_failure, env)| BatchTask {
                identifier: spanned(identifier),
                buildspec: buildspec.map(spanned),
                debug_session,
                ignore_failure,
                env,
                depend_on: Vec::new(),
            },
        )
        .boxed()
}

fn batch_tasks() -> BoxedStrategy<Vec<BatchTask>> {
    vec(batch_task(), 0..5)
        .prop_map(|tasks| unique_by(tasks, |t| t.identifier.value.clone()))
        .boxed()
}

/// A build graph: each build depends on some builds made before it (so there is no cycle),
/// then the builds are shuffled so the file order is not the dependency order.
fn build_graph() -> BoxedStrategy<Vec<BatchTask>> {
    batch_tasks()
        .prop_flat_map(|tasks| {
            let n = tasks.len();
            let picks = vec(vec(any::<prop::sample::Index>(), 0..3), n);
            (Just(tasks), picks)
        })
        .prop_map(|(mut tasks, picks)| {
            for (i, picks) in picks.into_iter().enumerate() {
                if i == 0 {
                    continue;
                }
                let deps: Vec<String> = picks
                    .iter()
                    .map(|p| tasks[p.index(i)].identifier.value.clone())
                    .collect();
                tasks[i].depend_on = spanned_all(unique_by(deps, String::clone));
            }
            tasks
        })
        .prop_shuffle()
        .boxed()
}

fn build_matrix() -> BoxedStrategy<BuildMatrix> {
    let fixed =
        (any::<bool>(), option::of(batch_env())).prop_map(|(ignore_failure, env)| MatrixStatic {
            ignore_failure,
            env,
        });
    let matrix_variables = vec((variable_name(), vec(text(), 0..4)), 0..4).prop_map(|vars| {
        unique_by(vars, |(n, _)| n.clone())
            .into_iter()
            .map(|(name, values)| MatrixVariable {
                name: spanned(name),
                values: spanned_all(values),
            })
            .collect()
    });
    let dynamic = (
        vec(path(), 0..3),
        vec(text(), 0..3),
        vec(text(), 0..3),
        matrix_variables,
    )
        .prop_map(
            |(buildspec, compute_type, image, variables)| MatrixDynamic {
                buildspec: spanned_all(buildspec),
                env: MatrixEnv {
                    compute_type: spanned_all(compute_type),
                    image: spanned_all(image),
                    variables,
                },
            },
        );
    (option::of(fixed), option::of(dynamic))
        .prop_map(|(fixed, dynamic)| BuildMatrix { fixed, dynamic })
        .boxed()
}

fn batch() -> BoxedStrategy<Batch> {
    let builds = prop_oneof![
        batch_tasks().prop_map(BatchBuilds::BuildList),
        build_graph().prop_map(BatchBuilds::BuildGraph),
        build_matrix().prop_map(BatchBuilds::BuildMatrix),
        (1..=u32::MAX, any::<bool>()).prop_map(|(parallelism, ignore_failure)| {
            BatchBuilds::BuildFanout(BuildFanout {
                parallelism: Spanned::synthetic(parallelism),
                ignore_failure,
            })
        }),
    ];
    (any::<bool>(), builds)
        .prop_map(|(fast_fail, builds)| Batch {
            fast_fail,
            // A batch without builds is valid but warned about.
            builds: Some(builds),
        })
        .boxed()
}

fn buildspec() -> BoxedStrategy<Buildspec> {
    (
        pick(&[Version::V0_1, Version::V0_2]),
        option::of(user()),
        env(),
        proxy(),
        option::of(batch()),
        phases(),
        report_groups(),
        option::of(artifacts()),
        option::of(cache()),
    )
        .prop_map(
            |(version, run_as, env, proxy, batch, mut phases, reports, artifacts, cache)| {
                // Without a batch a buildspec needs at least one phase.
                if phases.is_empty() && batch.is_none() {
                    phases.push(Phase::new(PhaseName::Build));
                }
                Buildspec {
                    version,
                    run_as: run_as.map(spanned),
                    env,
                    proxy,
                    batch,
                    phases,
                    reports,
                    artifacts,
                    cache,
                }
            },
        )
        .boxed()
}

proptest! {
    // 256 cases by default (a few seconds); `PROPTEST_CASES=20000` for a longer hunt.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_valid_model_reads_back_unchanged_and_silent(spec in buildspec()) {
        let yaml = serde_yaml_ng::to_string(&spec).expect("the model serializes");
        for strict in [false, true] {
            let parsed = parse(&yaml, &ParseOptions { strict });
            prop_assert!(
                parsed.diagnostics.is_empty(),
                "strict: {strict}\n--- yaml ---\n{yaml}--- diagnostics ---\n{}",
                parsed
                    .diagnostics
                    .iter()
                    .map(|d| d.render(&yaml, "roundtrip.yml", false))
                    .collect::<String>()
            );
            prop_assert_eq!(parsed.buildspec.as_ref(), Some(&spec), "--- yaml ---\n{}", yaml);
        }
    }
}

/// YAML 1.2 (and so the reader) takes U+2028 and U+2029 as ordinary characters, escaped or raw;
/// only a YAML 1.1 reader would fold the raw one and the indentation after it.
#[test]
fn separators_are_content_in_yaml_1_2() {
    let source = "version: 0.2\nphases:\n  build:\n    commands: []\nenv:\n  variables:\n    \
                  ESCAPED: \"a\\Lb\\Pc\"\n    RAW: 'a\u{2028}  b'\n";
    let parsed = parse(source, &ParseOptions::default());
    assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
    let spec = parsed.buildspec.unwrap();
    let values: Vec<&str> = spec
        .env
        .variables
        .iter()
        .map(|v| v.value.value.as_str())
        .collect();
    assert_eq!(values, ["a\u{2028}b\u{2029}c", "a\u{2028}  b"]);
}
