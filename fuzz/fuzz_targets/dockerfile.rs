//! Any bytes, read as a Dockerfile by the daemonless engine's parser: it must not panic, and a
//! refusal must say what is wrong.

#![no_main]

use buildagent_runner::oci::dockerfile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match dockerfile::parse("Dockerfile", &text) {
        Ok((instructions, escape)) => {
            assert!(escape == '\\' || escape == '`', "escape {escape:?}");
            // Every instruction came from the text: never more than its lines.
            assert!(instructions.len() <= text.lines().count());
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
