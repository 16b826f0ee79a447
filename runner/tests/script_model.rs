//! The per-command script model (buildspec-reference §3.6), checked with real dash and bash.

mod common;

use buildagent_runner::command::ScriptMode;
use buildagent_runner::events::CommandOutcome;
use buildagent_runner::executor::{CapturedOutput, Executor};
use common::{Session, SHELLS};

#[tokio::test]
async fn cd_plain_assignments_and_export_persist() {
    for shell in SHELLS {
        let mut s = Session::new(shell, ScriptMode::V02, &[]);
        s.ok("cd sub\nPLAIN='a b'\nexport EXPORTED=2").await;
        let out = s.ok("pwd; echo \"$PLAIN|$EXPORTED\"").await;
        assert_eq!(out, format!("{}/sub\na b|2\n", s.src()), "{shell}");
        // And across "phases": any later command.
        s.ok("cd ..").await;
        assert_eq!(s.ok("pwd").await, format!("{}\n", s.src()), "{shell}");
        // The engine reads the final exported environment back.
        assert_eq!(s.state.env().get("PLAIN").unwrap(), b"a b", "{shell}");
        assert_eq!(s.state.env().get("EXPORTED").unwrap(), b"2", "{shell}");
    }
}

#[tokio::test]
async fn unset_persists_even_for_initial_variables() {
    for shell in SHELLS {
        let mut s = Session::new(shell, ScriptMode::V02, &[("KEEP", "k"), ("GONE", "g")]);
        s.ok("export LATER=x").await;
        s.ok("unset GONE LATER").await;
        let out = s.ok("echo \"${GONE-unset} ${LATER-unset} $KEEP\"").await;
        assert_eq!(out, "unset unset k\n", "{shell}");
        // dash keeps the export flag of an unset variable (`export GONE`, no value).
        assert_eq!(s.state.env().get("GONE"), None, "{shell}");
        assert!(s.state.env().contains("KEEP"), "{shell}");
    }
}

#[tokio::test]
async fn functions_traps_and_set_e_do_not_persist() {
    for shell in SHELLS {
        let mut s = Session::new(shell, ScriptMode::V02, &[]);
        let (outcome, out) = s
            .run("f() { echo from-f; }\nf\ntrap 'echo trapped' EXIT\nset -e")
            .await;
        assert_eq!(outcome, CommandOutcome::Success, "{shell}");
        assert_eq!(out.stdout_str(), "from-f\ntrapped\n", "{shell}");

        let (outcome, out) = s.run("f").await;
        assert_eq!(outcome, CommandOutcome::Exited(127), "{shell}");
        assert!(out.stdout.is_empty(), "{shell}");

        // No trap left, and no errexit: `false` does not stop the command.
        assert_eq!(s.ok("trap").await, "", "{shell}");
        assert_eq!(s.ok("false; echo after").await, "after\n", "{shell}");
    }
}

#[tokio::test]
async fn exit_ends_only_that_command_and_drops_its_changes() {
    for shell in SHELLS {
        let mut s = Session::new(shell, ScriptMode::V02, &[]);
        s.ok("export BEFORE=1").await;
        let (outcome, _) = s.run("export A=1; cd sub; exit 3").await;
        assert_eq!(outcome, CommandOutcome::Exited(3), "{shell}");
        let out = s.ok("echo \"${A:-unset} $BEFORE\"; pwd").await;
        assert_eq!(out, format!("unset 1\n{}\n", s.src()), "{shell}");

        let (outcome, _) = s.run("export B=1; exit 0").await;
        assert_eq!(outcome, CommandOutcome::Success, "{shell}");
        assert_eq!(s.ok("echo \"${B:-unset}\"").await, "unset\n", "{shell}");
    }
}

#[tokio::test]
async fn status_is_the_last_statements() {
    for shell in SHELLS {
        let mut s = Session::new(shell, ScriptMode::V02, &[]);
        for (command, expected) in [
            ("false; true", CommandOutcome::Success),
            ("false | true", CommandOutcome::Success),
            ("true | false", CommandOutcome::Exited(1)),
            ("false; echo tagged", CommandOutcome::Success),
            ("false\ntrue", CommandOutcome::Success),
            ("true\nfalse", CommandOutcome::Exited(1)),
            ("(exit 7)", CommandOutcome::Exited(7)),
        ] {
            let (outcome, _) = s.run(command).await;
            assert_eq!(outcome, expected, "{shell}: {command:?}");
        }
        // The epilogue ran after `(exit 7)`: the status was saved for the next command.
        assert_eq!(s.ok("echo $CODEBUILD_LAST_EXIT").await, "7\n", "{shell}");
    }
}

#[tokio::test]
async fn errors_in_the_first_user_line_are_reported_on_line_4() {
    for shell in SHELLS {
        for mode in [ScriptMode::V02, ScriptMode::V01] {
            let mut s = Session::new(shell, mode, &[]);
            let (outcome, out) = s.run("nosuch_command_xyz").await;
            assert_eq!(outcome, CommandOutcome::Exited(127), "{shell}");
            let expected = if shell == "dash" {
                "script.sh: 4: nosuch_command_xyz: not found"
            } else {
                "script.sh: line 4: nosuch_command_xyz: command not found"
            };
            assert!(
                out.stderr_str().contains(expected),
                "{shell} {mode:?}: {}",
                out.stderr_str()
            );

            // A multi-line block whose first line fails: line 4, and the block's status is its
            // last statement's.
            let (outcome, out) = s.run("nosuch_command_xyz\necho still-ran").await;
            assert_eq!(outcome, CommandOutcome::Success, "{shell}");
            assert_eq!(out.stdout_str(), "still-ran\n");
            assert!(out.stderr_str().contains(expected), "{shell} {mode:?}");
        }
    }
}

#[tokio::test]
async fn multi_line_blocks_run_verbatim() {
    for shell in SHELLS {
        let mut s = Session::new(shell, ScriptMode::V02, &[("WHO", "world")]);
        let block = "if true; then\n  echo yes\nfi\ncat <<EOF\nhello $WHO\nEOF\nfor i in 1 2; do\n  LAST=$i\ndone";
        assert_eq!(s.ok(block).await, "yes\nhello world\n", "{shell}");
        assert_eq!(s.ok("echo $LAST").await, "2\n", "{shell}");
        // A heredoc that ends the command without a trailing newline.
        assert_eq!(s.ok("cat <<'X'\n$HOME\nX").await, "$HOME\n", "{shell}");
    }
}

/// Values that break naive quoting.
const TRICKY: &[(&str, &str)] = &[
    ("SINGLE", "it's 'quoted'"),
    ("DOUBLE", "say \"hi\""),
    ("NEWLINES", "line1\nline2\n\n"),
    ("DOLLAR", "$HOME ${X:-y} $(id -u) `id -u` $'x'"),
    ("BACKSLASH", "back\\slash\\ \\n \\\\"),
    ("UNICODE", "ünïcödé ✓ 🚀 日本"),
    ("CONTROL", "tab\there bell\x07 del\x7f esc\x1b"),
    ("EMPTY", ""),
    ("SPACES", "  lead and trail  "),
    ("GLOB", "* ? [a-z] ~"),
    ("DASH_N", "-n"),
    ("EQUALS", "a=b=c"),
    ("QUOTE_ESCAPE", "'\\''"),
];

#[tokio::test]
async fn initial_values_round_trip_exactly_through_export_p() {
    for shell in SHELLS {
        for locale in [None, Some("C.UTF-8")] {
            let mut extra: Vec<(&str, &str)> = TRICKY.to_vec();
            if let Some(l) = locale {
                extra.push(("LANG", l));
            }
            let mut s = Session::new(shell, ScriptMode::V02, &extra);
            // Two commands: the first replays the agent's file, the second the shell's own
            // `export -p` output as parsed by the agent.
            s.ok(":").await;
            s.ok(":").await;
            for (name, value) in TRICKY {
                assert_eq!(
                    s.state.env().get(name),
                    Some(value.as_bytes()),
                    "{shell} {locale:?}: {name}"
                );
            }
            // And the shell itself sees the exact bytes.
            let dump = s.src.path().join("dump");
            std::fs::create_dir(&dump).unwrap();
            for (name, value) in TRICKY {
                s.ok(&format!(
                    "printf '%s' \"${name}\" > '{}/{name}'",
                    dump.display()
                ))
                .await;
                assert_eq!(
                    std::fs::read(dump.join(name)).unwrap(),
                    value.as_bytes(),
                    "{shell} {locale:?}: {name}"
                );
            }
            std::fs::remove_dir_all(&dump).unwrap();
        }
    }
}

#[tokio::test]
async fn values_set_by_commands_round_trip_too() {
    for shell in SHELLS {
        let mut s = Session::new(shell, ScriptMode::V02, &[]);
        s.ok("export NL='a\nb\n' Q=\"it's\" B='x\\y' D='$1 `x`' U='ü ✓'")
            .await;
        s.ok(":").await;
        let env = s.state.env();
        assert_eq!(env.get("NL").unwrap(), b"a\nb\n", "{shell}");
        assert_eq!(env.get("Q").unwrap(), b"it's", "{shell}");
        assert_eq!(env.get("B").unwrap(), b"x\\y", "{shell}");
        assert_eq!(env.get("D").unwrap(), b"$1 `x`", "{shell}");
        assert_eq!(env.get_lossy("U").unwrap(), "ü ✓", "{shell}");
    }
}

#[tokio::test]
async fn set_var_wins_over_the_replayed_environment() {
    for shell in SHELLS {
        let mut s = Session::new(
            shell,
            ScriptMode::V02,
            &[("CODEBUILD_BUILD_SUCCEEDING", "1")],
        );
        let (outcome, _) = s.run("export CODEBUILD_BUILD_SUCCEEDING=1; false").await;
        assert_eq!(outcome, CommandOutcome::Exited(1));
        s.state.set_var("CODEBUILD_BUILD_SUCCEEDING", "0").unwrap();
        assert_eq!(
            s.ok("echo $CODEBUILD_BUILD_SUCCEEDING").await,
            "0\n",
            "{shell}"
        );
        assert_eq!(s.ok("echo $CODEBUILD_LAST_EXIT").await, "0\n", "{shell}");
    }
}

#[tokio::test]
async fn version_0_1_starts_every_command_afresh() {
    for shell in SHELLS {
        let mut s = Session::new(shell, ScriptMode::V01, &[("INITIAL", "i")]);
        s.ok("cd sub; export A=1; B=2; unset INITIAL").await;
        let out = s
            .ok("pwd; echo \"${A:-unset} ${B:-unset} ${INITIAL:-unset}\"")
            .await;
        assert_eq!(out, format!("{}\nunset unset i\n", s.src()), "{shell}");
        // The agent's own changes still apply.
        s.state.set_var("CODEBUILD_BUILD_SUCCEEDING", "0").unwrap();
        assert_eq!(
            s.ok("echo $CODEBUILD_BUILD_SUCCEEDING").await,
            "0\n",
            "{shell}"
        );
        assert_eq!(s.ok("false; true").await, "", "{shell}");
    }
}

#[tokio::test]
async fn background_jobs_survive_across_commands() {
    for shell in SHELLS {
        let mut s = Session::new(shell, ScriptMode::V02, &[]);
        let started = std::time::Instant::now();
        s.ok("sleep 600 & echo $! > job.pid").await;
        assert!(
            started.elapsed().as_secs() < 10,
            "{shell}: waited for the job"
        );
        let pid: i32 = std::fs::read_to_string(s.src.path().join("job.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(common::is_alive(pid), "{shell}");
        // The next command can still see and end it (CodeBuild's `nohup dockerd &` pattern).
        assert_eq!(s.ok("kill $(cat job.pid) && echo killed").await, "killed\n");
        let mut sink = CapturedOutput::default();
        s.exec
            .sweep(std::time::Duration::from_secs(2), &mut sink)
            .await
            .unwrap();
        assert!(!common::is_alive(pid), "{shell}");
    }
}

#[tokio::test]
async fn variables_the_shell_manages_carry_over_as_committed() {
    // Line 3 re-exports only what the shell may change on its own (and what a process environment
    // cannot hold): the next command must see the committed values all the same, as when line 3
    // sourced the whole `env.sh`. (Checked against the sourcing version: same output.)
    for shell in SHELLS {
        let mut outs = Vec::new();
        for _ in 0..2 {
            let mut s = Session::new(shell, ScriptMode::V02, &[]);
            s.ok("cd sub && export IFS=, OPTIND=3 SHLVL=7 RANDOM=42 NOVAL && export BIN=\"$(printf 'a\\377b')\"")
                .await;
            let out = s
                .ok("printf '%s|' \"$OLDPWD\" \"$PWD\" \"$IFS\" \"$OPTIND\" \"$SHLVL\" \"${NOVAL-unset}\" \"$RANDOM\"; export -p | grep -c NOVAL; printf '%s' \"$BIN\" | od -An -tx1")
                .await;
            outs.push(out.replace(&s.src(), "SRC"));
        }
        let (fields, rest) = outs[0].rsplit_once('|').unwrap();
        let (fields, random) = fields.rsplit_once('|').unwrap();
        assert_eq!(fields, "SRC|SRC/sub|,|3|7|unset", "{shell}");
        assert_eq!(rest, "1\n 61 ff 62\n", "{shell}");
        if shell == "dash" {
            assert_eq!(random, "42");
        } else {
            // Reseeded with the committed value: the same number in both sessions.
            assert_eq!(outs[0], outs[1], "{shell}");
        }
    }
}
