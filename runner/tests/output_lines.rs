//! A command's stdout and stderr lines are never spliced into each other, whatever the writes
//! that make them up; a partial line (a prompt) still shows while the command waits. Real shells
//! through the engine's API, the events as a reporter receives them.

use std::sync::Arc;

use buildagent_runner::engine::{Build, BuildOptions};
use buildagent_runner::events::{BuildStatus, EventKind, Stream};
use buildagent_runner::executor::{HostExecutor, StopRequest};
use buildagent_spec::{parse, ParseOptions};

/// Runs `commands` (one BUILD command each) and returns the Output events in order.
async fn outputs(commands: &[&str]) -> Vec<(Stream, String)> {
    let mut yaml = String::from("version: 0.2\nphases:\n  build:\n    commands:\n");
    for command in commands {
        yaml.push_str(&format!(
            "      - {}\n",
            serde_json::to_string(command).unwrap()
        ));
    }
    let spec = parse(&yaml, &ParseOptions::default()).buildspec.unwrap();
    let src = tempfile::tempdir().unwrap();
    let build = Build::new(
        spec,
        BuildOptions::new(src.path()),
        Arc::new(HostExecutor::new()),
    );
    let mut events = Vec::new();
    let result = build
        .run(StopRequest::new(), Default::default(), |event| {
            if let EventKind::Output { stream, bytes } = event.kind {
                events.push((stream, String::from_utf8(bytes).unwrap()));
            }
        })
        .await;
    assert_eq!(result.status, BuildStatus::Succeeded, "{events:?}");
    events
}

#[tokio::test]
async fn lines_written_in_pieces_on_both_streams_arrive_whole() {
    // Each line is three writes, and the other stream writes between them.
    let events = outputs(&[
        "for i in $(seq 1 200); do printf \"out-$i \"; printf \"err-$i \" >&2; printf 'a '; printf 'b ' >&2; echo end; echo end >&2; done",
    ])
    .await;
    let mut lines = [Vec::new(), Vec::new()];
    for (stream, text) in &events {
        assert!(
            text.ends_with('\n'),
            "a partial line was passed on: {text:?}"
        );
        let (name, index) = match stream {
            Stream::Stdout => ("out-{} a end", 0),
            Stream::Stderr => ("err-{} b end", 1),
        };
        for line in text.lines() {
            let number = lines[index].len() + 1;
            assert_eq!(line, name.replace("{}", &number.to_string()), "{stream:?}");
            lines[index].push(line.to_string());
        }
    }
    assert_eq!(lines[0].len(), 200);
    assert_eq!(lines[1].len(), 200);
}

#[tokio::test]
async fn a_prompt_without_a_newline_shows_while_the_command_waits() {
    let events =
        outputs(&["printf 'Continue? '; sleep 1; echo yes; printf 'no newline at the end'"]).await;
    let texts: Vec<&str> = events.iter().map(|(_, t)| t.as_str()).collect();
    // Held until the newline, the prompt would have come in one event with `yes`.
    assert_eq!(texts, ["Continue? ", "yes\n", "no newline at the end"]);
}

#[tokio::test]
async fn a_long_line_without_a_newline_is_passed_on_in_pieces_and_whole_in_sum() {
    let events = outputs(&["head -c 300000 /dev/zero | tr '\\0' x; echo"]).await;
    let all: String = events.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(all.len(), 300_001);
    assert!(
        events.len() >= 300_000 / buildagent_runner::lines::MAX_PARTIAL,
        "{}",
        events.len()
    );
    assert!(events.iter().all(|(s, _)| *s == Stream::Stdout));
}
