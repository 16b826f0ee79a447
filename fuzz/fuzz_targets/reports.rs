//! Any bytes as a test or coverage report of each format (the first byte picks it): the parsers
//! must not panic, a refusal names a line inside the text, and a coverage figure is a percentage.

#![no_main]

use buildagent_runner::reports::parse::parse;
use buildagent_spec::ReportFormat;
use libfuzzer_sys::fuzz_target;

const FORMATS: [ReportFormat; 10] = [
    ReportFormat::JunitXml,
    ReportFormat::TestngXml,
    ReportFormat::NunitXml,
    ReportFormat::Nunit3Xml,
    ReportFormat::VisualStudioTrx,
    ReportFormat::CucumberJson,
    ReportFormat::CoberturaXml,
    ReportFormat::JacocoXml,
    ReportFormat::CloverXml,
    ReportFormat::SimpleCov,
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let format = FORMATS[pick as usize % FORMATS.len()];
    match parse(format, bytes) {
        Ok(parsed) => {
            if let Some(coverage) = parsed.line_coverage {
                assert!(coverage.is_finite(), "{format:?}: coverage {coverage}");
            }
        }
        Err(e) => {
            let lines = bytes.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
            assert!(e.line <= lines, "{format:?}: line {} of {lines}", e.line);
            assert!(!e.message.is_empty());
        }
    }
});
