//! One test per key, default and rule of `decisions.md` "Parsing".

use buildagent_spec::*;

fn parse_ok(source: &str) -> (Buildspec, Vec<Diagnostic>) {
    let parsed = parse(source, &ParseOptions::default());
    let diagnostics = parsed.diagnostics.clone();
    match parsed.buildspec {
        Some(spec) => (spec, diagnostics),
        None => panic!("expected valid, got {:#?}", diagnostics),
    }
}

fn spec(source: &str) -> Buildspec {
    let (spec, diagnostics) = parse_ok(source);
    assert!(
        diagnostics.is_empty(),
        "unexpected diagnostics: {diagnostics:#?}"
    );
    spec
}

fn errors(source: &str) -> Vec<Diagnostic> {
    let parsed = parse(source, &ParseOptions::default());
    assert!(!parsed.is_valid(), "expected errors for:\n{source}");
    parsed.errors().cloned().collect()
}

fn warnings(source: &str) -> Vec<Diagnostic> {
    parse_ok(source).1
}

const BUILD: &str = "phases:\n  build:\n    commands:\n      - make\n";

fn with_build(head: &str) -> String {
    format!("version: 0.2\n{head}{BUILD}")
}

#[test]
fn version_accepts_0_1_and_0_2_as_float_or_string() {
    for (text, version) in [
        ("0.2", Version::V0_2),
        ("\"0.2\"", Version::V0_2),
        ("'0.1'", Version::V0_1),
        ("0.1", Version::V0_1),
        ("0.20", Version::V0_2),
    ] {
        let s = spec(&format!("version: {text}\n{BUILD}"));
        assert_eq!(s.version, version, "{text}");
    }
}

#[test]
fn version_errors_quote_the_value() {
    let e = errors(&format!("version: 1.0\n{BUILD}"));
    assert_eq!(
        e[0].message,
        "invalid buildspec version `1.0`: expected 0.1 or 0.2"
    );
    assert_eq!(
        (e[0].span.line_number(), e[0].span.column_number()),
        (1, 10)
    );
    let e = errors(&format!("version: \"0.3\"\n{BUILD}"));
    assert!(e[0].message.contains("`0.3`"));
    let e = errors(BUILD);
    assert_eq!(e[0].message, "missing `version`");
}

#[test]
fn run_as_at_top_and_in_a_phase() {
    let s = spec("version: 0.2\nrun-as: builder\nphases:\n  install:\n    run-as: root\n    commands: [id]\n");
    assert_eq!(s.run_as.as_deref().map(String::as_str), Some("builder"));
    let install = s.phase(PhaseName::Install).unwrap();
    assert_eq!(install.run_as.as_ref().unwrap().value, "root");
}

#[test]
fn env_shell_names() {
    for (text, shell) in [
        ("bash", Shell::Bash),
        ("/bin/bash", Shell::Bash),
        ("/bin/sh", Shell::Sh),
        ("sh", Shell::Sh),
        ("powershell.exe", Shell::PowerShell),
        ("cmd.exe", Shell::Cmd),
    ] {
        let s = spec(&with_build(&format!("env:\n  shell: {text}\n")));
        assert_eq!(s.env.shell.unwrap().value, shell);
    }
    assert_eq!(
        spec(&with_build("")).env.shell,
        None,
        "default: no shell named (/bin/sh)"
    );
}

#[test]
fn env_variables_keep_the_scalar_source_text() {
    let s = spec(&with_build(
        "env:\n  variables:\n    PORT: 8080\n    V: 1.10\n    FLAG: yes\n    OFF: Off\n    HEX: 0x1F\n    P: \"$PATH:/x\"\n    Q: 'it''s'\n    EMPTY:\n    TILDE: ~\n    BLOCK: |\n      a\n      b\n",
    ));
    let values: Vec<(&str, &str)> = s
        .env
        .variables
        .iter()
        .map(|v| (v.name.value.as_str(), v.value.value.as_str()))
        .collect();
    assert_eq!(
        values,
        [
            ("PORT", "8080"),
            ("V", "1.10"),
            ("FLAG", "yes"),
            ("OFF", "Off"),
            ("HEX", "0x1F"),
            ("P", "$PATH:/x"),
            ("Q", "it's"),
            ("EMPTY", ""),
            ("TILDE", ""),
            ("BLOCK", "a\nb\n"),
        ]
    );
}

#[test]
fn parameter_store_and_secrets_manager() {
    let s = spec(&with_build(
        "env:\n  parameter-store:\n    HOST: /ci/host\n  secrets-manager:\n    PW: db:password:AWSPREVIOUS\n    ARN: arn:aws:secretsmanager:eu-west-1:111122223333:secret:x-AbCdEf::AWSCURRENT\n",
    ));
    assert_eq!(s.env.parameter_store[0].parameter.value, "/ci/host");
    let pw = &s.env.secrets_manager[0].reference.value;
    assert_eq!(
        (
            pw.secret_id.as_str(),
            pw.json_key.as_deref(),
            pw.version_stage.as_deref()
        ),
        ("db", Some("password"), Some("AWSPREVIOUS"))
    );
    let arn = &s.env.secrets_manager[1].reference.value;
    assert_eq!(
        arn.secret_id,
        "arn:aws:secretsmanager:eu-west-1:111122223333:secret:x-AbCdEf"
    );
    assert_eq!(arn.json_key, None);
    assert_eq!(arn.version_stage.as_deref(), Some("AWSCURRENT"));
}

#[test]
fn exported_variables_take_a_single_string_and_warn_about_aws_names() {
    let s = spec(&with_build("env:\n  exported-variables: IMAGE_TAG\n"));
    assert_eq!(s.env.exported_variables[0].value, "IMAGE_TAG");
    let w = warnings(&with_build(
        "env:\n  exported-variables:\n    - AWS_REGION\n",
    ));
    assert!(w[0].message.contains("does not export"), "{w:?}");
}

#[test]
fn booleans_accept_yes_no_true_false_on_off_in_any_case() {
    for (text, value) in [
        ("yes", true),
        ("Yes", true),
        ("TRUE", true),
        ("on", true),
        ("no", false),
        ("False", false),
        ("OFF", false),
        ("\"yes\"", true),
    ] {
        let s = spec(&with_build(&format!(
            "env:\n  git-credential-helper: {text}\n"
        )));
        assert_eq!(s.env.git_credential_helper, value, "{text}");
    }
    assert!(
        !spec(&with_build("")).env.git_credential_helper,
        "default no"
    );
    let e = errors(&with_build("env:\n  git-credential-helper: 1\n"));
    assert_eq!(e[0].message, "expected yes or no, found `1`");
}

#[test]
fn proxy_defaults_to_no() {
    assert_eq!(spec(&with_build("")).proxy, Proxy::default());
    let s = spec(&with_build(
        "proxy:\n  upload-artifacts: yes\n  logs: yes\n",
    ));
    assert!(s.proxy.upload_artifacts && s.proxy.logs);
}

#[test]
fn phases_keep_file_order_but_are_looked_up_by_name() {
    let s = spec(
        "version: 0.2\nphases:\n  post_build:\n    commands: [b]\n  build:\n    commands: [a]\n",
    );
    let order: Vec<PhaseName> = s.phases.iter().map(|p| p.name.value).collect();
    assert_eq!(order, [PhaseName::PostBuild, PhaseName::Build]);
    assert_eq!(s.phase(PhaseName::Build).unwrap().commands[0].value, "a");
    assert!(s.phase(PhaseName::Install).is_none());
}

#[test]
fn phase_names_are_exact() {
    let e = errors("version: 0.2\nphases:\n  BUILD:\n    commands: [make]\n");
    assert_eq!(e[0].message, "invalid buildspec phase name `BUILD`");
    assert_eq!(
        e[0].help.as_deref(),
        Some("did you mean `build`? phases are build, install, post_build, pre_build")
    );
}

#[test]
fn phases_are_required_unless_batch_is_present() {
    let e = errors("version: 0.2\n");
    assert_eq!(e[0].message, "missing `phases`");
    let s = spec("version: 0.2\nbatch:\n  build-list:\n    - identifier: a\n");
    assert!(s.phases.is_empty());
    assert!(matches!(
        s.batch.unwrap().builds,
        Some(BatchBuilds::BuildList(_))
    ));
}

#[test]
fn commands_single_string_null_list_and_null_items() {
    let s = spec("version: 0.2\nphases:\n  build:\n    commands: make all\n");
    assert_eq!(s.phase(PhaseName::Build).unwrap().commands.len(), 1);
    let (s, w) = parse_ok("version: 0.2\nphases:\n  build:\n    commands:\n");
    assert!(s.phase(PhaseName::Build).unwrap().commands.is_empty());
    assert_eq!(w[0].code, "empty-commands");
    let (s, w) =
        parse_ok("version: 0.2\nphases:\n  build:\n    commands:\n      - a\n      -\n      - b\n");
    let cmds: Vec<&str> = s
        .phase(PhaseName::Build)
        .unwrap()
        .commands
        .iter()
        .map(|c| c.value.as_str())
        .collect();
    assert_eq!(cmds, ["a", "b"]);
    assert_eq!(w[0].code, "null-command");
    assert_eq!(w[0].path, "phases.build.commands[1]");
}

#[test]
fn an_unquoted_colon_in_a_command_is_an_error_with_a_hint() {
    let e = errors("version: 0.2\nphases:\n  build:\n    commands:\n      - make\n      - make\n      - echo Step 1: build\n");
    assert_eq!(e[0].path, "phases.build.commands[2]");
    assert_eq!((e[0].span.line_number(), e[0].span.column_number()), (7, 9));
    assert!(e[0]
        .help
        .as_deref()
        .unwrap()
        .contains("e.g. 'echo Step 1: build'"));
}

#[test]
fn commands_keep_block_scalars_whole() {
    let s = spec("version: 0.2\nphases:\n  build:\n    commands:\n      - |\n        a\n        b\n      - >\n        c\n        d\n");
    let cmds: Vec<&str> = s
        .phase(PhaseName::Build)
        .unwrap()
        .commands
        .iter()
        .map(|c| c.value.as_str())
        .collect();
    assert_eq!(cmds, ["a\nb\n", "c d\n"]);
}

#[test]
fn finally_and_on_failure() {
    let s = spec("version: 0.2\nphases:\n  build:\n    on-failure: RETRY-2-timed out\n    commands: [make]\n    finally: [cleanup]\n");
    let build = s.phase(PhaseName::Build).unwrap();
    assert_eq!(build.finally[0].value, "cleanup");
    assert_eq!(
        build.on_failure.as_ref().unwrap().value,
        OnFailure::Retry(Retry {
            count: 2,
            pattern: Some("timed out".into())
        })
    );
}

#[test]
fn runtime_versions_only_in_install_and_keep_text() {
    let s = spec("version: 0.2\nphases:\n  install:\n    runtime-versions:\n      python: 3.10\n      nodejs: 18\n");
    let rv: Vec<(&str, &str)> = s
        .phase(PhaseName::Install)
        .unwrap()
        .runtime_versions
        .iter()
        .map(|r| (r.runtime.value.as_str(), r.version.value.as_str()))
        .collect();
    assert_eq!(rv, [("python", "3.10"), ("nodejs", "18")]);
    let e = errors("version: 0.2\nphases:\n  build:\n    runtime-versions:\n      nodejs: 18\n");
    assert_eq!(e[0].code, "runtime-versions-outside-install");
    let e = errors("version: 0.2\nphases:\n  install:\n    runtime-versions:\n      nodejs:\n");
    assert_eq!(e[0].message, "runtime `nodejs` has no version");
}

#[test]
fn reports_formats_and_defaults() {
    let s = spec(&with_build("reports:\n  unit:\n    files: '*.xml'\n  arn:aws:codebuild:us-east-1:123:report-group/x:\n    files: [a.json]\n    file-format: cucumberjson\n    discard-paths: yes\n"));
    assert_eq!(s.reports[0].name.value, "unit");
    assert_eq!(s.reports[0].file_format, None, "default: JUNITXML");
    assert!(!s.reports[0].discard_paths);
    assert_eq!(
        s.reports[1].file_format.as_ref().unwrap().value,
        ReportFormat::CucumberJson
    );
    assert!(s.reports[1].discard_paths);
}

#[test]
fn artifacts_keys_and_the_tolerated_type() {
    let s = spec(&with_build("artifacts:\n  type: zip\n  files: dist/**/*\n  name: app\n  base-directory: 'out*'\n  exclude-paths: '**/.*'\n  discard-paths: yes\n  enable-symlinks: yes\n  s3-prefix: rel\n  secondary-artifacts:\n    docs:\n      files: [docs/**/*]\n"));
    let a = s.artifacts.unwrap();
    assert_eq!(a.primary.files[0].value, "dist/**/*");
    assert_eq!(a.primary.name.unwrap().value, "app");
    assert_eq!(a.primary.base_directory.unwrap().value, "out*");
    assert_eq!(a.primary.exclude_paths[0].value, "**/.*");
    assert!(a.primary.discard_paths && a.primary.enable_symlinks);
    assert_eq!(a.primary.s3_prefix.unwrap().value, "rel");
    assert_eq!(a.secondary[0].identifier.value, "docs");
    let d = ArtifactSet::default();
    assert!(!d.discard_paths && !d.enable_symlinks, "defaults: no");
}

#[test]
fn artifacts_without_files_warn() {
    let w = warnings(&with_build("artifacts:\n  name: x\n"));
    assert_eq!(w[0].code, "no-files");
}

#[test]
fn cache_keys_and_limits() {
    let s = spec(&with_build(
        "cache:\n  key: k-$(date)\n  fallback-keys: k-\n  action: SAVE\n  paths: [vendor/**/*]\n",
    ));
    let c = s.cache.unwrap();
    assert_eq!(c.key.unwrap().value, "k-$(date)");
    assert_eq!(c.fallback_keys.len(), 1);
    assert_eq!(c.action.unwrap().value, CacheAction::Save);
    let e = errors(&with_build(
        "cache:\n  key: k\n  fallback-keys: [a, b, c, d, e, f]\n  paths: [x]\n",
    ));
    assert_eq!(e[0].message, "6 fallback keys: at most 5 are allowed");
    let w = warnings(&with_build("cache:\n  fallback-keys: [a]\n  paths: [x]\n"));
    assert_eq!(w[0].code, "fallback-without-key");
}

#[test]
fn batch_kinds() {
    let s = spec(
        "version: 0.2\nbatch:\n  build-fanout:\n    parallelism: 5\n    ignore-failure: yes\n",
    );
    let Some(BatchBuilds::BuildFanout(f)) = s.batch.unwrap().builds else {
        panic!()
    };
    assert_eq!(f.parallelism.value, 5);
    assert!(f.ignore_failure);
    let s = spec("version: 0.2\nbatch:\n  build-matrix:\n    dynamic:\n      env:\n        variables:\n          V: [a, b]\n");
    let Some(BatchBuilds::BuildMatrix(m)) = s.batch.unwrap().builds else {
        panic!()
    };
    assert_eq!(m.dynamic.unwrap().env.variables[0].values.len(), 2);
    let w = warnings(
        "version: 0.2\nbatch:\n  build-list:\n    - identifier: a\n      depend-on: [b]\n",
    );
    assert_eq!(w[0].code, "unknown-key", "depend-on belongs to build-graph");
    assert_eq!(w[0].path, "batch.build-list[0].depend-on");
}

#[test]
fn unknown_keys_warn_and_strict_makes_them_errors() {
    let source = with_build("timeout: 5\n");
    let w = warnings(&source);
    assert_eq!(w[0].code, "unknown-key");
    assert_eq!(w[0].severity, Severity::Warning);
    let strict = parse(&source, &ParseOptions { strict: true });
    assert!(!strict.is_valid());
    assert_eq!(strict.errors().next().unwrap().code, "unknown-key");
}

#[test]
fn repeated_keys_name_both_lines() {
    let e = errors("version: 0.2\nversion: 0.2\nphases:\n  build:\n    commands: [a]\n");
    assert_eq!(
        e[0].message,
        "key `version` is defined twice (first on line 1)"
    );
    assert_eq!(e[0].span.line_number(), 2);
    assert_eq!(e[0].related.as_ref().unwrap().span.line_number(), 1);
}

#[test]
fn version_0_1_environment_variables_map_onto_env() {
    let s = spec("version: 0.1\nenvironment_variables:\n  plaintext:\n    A: x\nphases:\n  build:\n    commands: [echo]\n");
    assert_eq!(s.version, Version::V0_1);
    assert_eq!(s.env.variables[0].value.value, "x");
    let w = warnings("version: 0.2\nenvironment_variables:\n  plaintext:\n    A: x\nphases:\n  build:\n    commands: [echo]\n");
    assert_eq!(w[0].code, "version-0.1-key");
    let e = errors("version: 0.1\nenv:\n  variables:\n    A: 1\nenvironment_variables:\n  plaintext:\n    B: 2\nphases:\n  build:\n    commands: [echo]\n");
    assert_eq!(e[0].code, "conflicting-keys");
}

#[test]
fn byte_order_mark_and_crlf_line_endings() {
    let source =
        "\u{feff}version: 0.2\r\nphases:\r\n  build:\r\n    commands:\r\n      - echo a: b\r\n";
    let e = errors(source);
    assert_eq!((e[0].span.line_number(), e[0].span.column_number()), (5, 9));
    let rendered = e[0].render(source, "b.yml", false);
    assert!(rendered.contains("5 |       - echo a: b\n"), "{rendered}");
}

#[test]
fn diagnostics_never_point_past_the_text() {
    for source in [
        "version: 0.2\nphases:",
        "version: 0.2\nphases:\n  build:\n    commands: [",
        "\"",
        "a: &x\nb: *y\n",
        "- - - -",
    ] {
        let parsed = parse(source, &ParseOptions::default());
        assert!(!parsed.is_valid());
        for d in &parsed.diagnostics {
            assert!(
                d.span.offset + d.span.len <= source.len(),
                "{source:?}: {d:?}"
            );
        }
    }
}

#[test]
fn a_name_given_twice_in_any_named_mapping_names_both_lines() {
    for (source, message, line) in [
        (
            "version: 0.2\nenv:\n  variables:\n    A: 1\n    A: 2\nphases:\n  build:\n    commands: [x]\n",
            "variable `A` is defined twice (first on line 4)",
            5,
        ),
        (
            "version: 0.2\nphases:\n  install:\n    runtime-versions:\n      nodejs: 18\n      nodejs: 20\n",
            "runtime `nodejs` is defined twice (first on line 5)",
            6,
        ),
        (
            "version: 0.2\nphases:\n  build:\n    commands: [x]\nreports:\n  unit:\n    files: [a]\n  unit:\n    files: [b]\n",
            "report group `unit` is defined twice (first on line 6)",
            8,
        ),
        (
            "version: 0.2\nphases:\n  build:\n    commands: [x]\nartifacts:\n  files: [a]\n  secondary-artifacts:\n    web:\n      files: [b]\n    web:\n      files: [c]\n",
            "secondary artifact `web` is defined twice (first on line 8)",
            10,
        ),
    ] {
        let e = errors(source);
        assert_eq!(e[0].message, message);
        assert_eq!(e[0].span.line_number(), line);
        assert_eq!(e[0].related.as_ref().unwrap().label, "first defined here");
    }
}

#[test]
fn batch_identifiers_are_short_and_builds_are_counted() {
    let long = "a".repeat(128);
    let e = errors(&format!(
        "version: 0.2\nbatch:\n  build-list:\n    - identifier: {long}\n"
    ));
    assert_eq!(e[0].code, "invalid-identifier");
    assert!(e[0]
        .message
        .contains("it has 128 characters, the limit is 127"));
    assert_eq!(
        (e[0].span.line_number(), e[0].span.column_number()),
        (4, 19)
    );
    let s = spec("version: 0.2\nbatch:\n  build-matrix:\n    dynamic:\n      buildspec: [a.yml, b.yml]\n      env:\n        variables:\n          V: ['1', '2', '3']\n");
    let batch = s.batch.unwrap();
    assert_eq!(buildagent_spec::batch::build_count(&batch), 6);
    assert!(buildagent_spec::batch::check(&batch, 6).is_empty());
    let too_many = buildagent_spec::batch::check(&batch, 5);
    assert_eq!(too_many[0].code, "too-many-builds");
    assert_eq!(too_many[0].path, "batch.build-matrix.dynamic.buildspec");
    assert_eq!(
        (
            too_many[0].span.line_number(),
            too_many[0].span.column_number()
        ),
        (5, 19)
    );
}
