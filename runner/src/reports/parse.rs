//! Reading report files: test results (JUnit, TestNG, NUnit 2 and 3, TRX, Cucumber JSON) and the
//! line coverage of coverage reports (Cobertura, JaCoCo, Clover, SimpleCov).

use std::collections::HashMap;

use buildagent_spec::ReportFormat;
use quick_xml::events::Event as Xml;
use quick_xml::Reader;
use serde::Serialize;

/// How one test case ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// It passed.
    Passed,
    /// An assertion failed.
    Failed,
    /// It was skipped (ignored, not executed, pending).
    Skipped,
    /// It ended with an unexpected error.
    Error,
}

/// One test case of a report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TestCase {
    /// Its name.
    pub name: String,
    /// Its class, suite or feature, when the format names one.
    pub class: Option<String>,
    /// How it ended.
    pub status: Status,
    /// Its duration in seconds, when the report gives one.
    pub duration: Option<f64>,
    /// The failure, error or skip message, when there is one.
    pub message: Option<String>,
}

/// What a report file holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Parsed {
    /// Test cases (empty for coverage reports).
    pub cases: Vec<TestCase>,
    /// Line coverage in percent (coverage reports only, when the format gives it simply).
    pub line_coverage: Option<f64>,
}

/// Why a report file could not be read: the 1-based line and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// The line of the problem (1-based).
    pub line: u64,
    /// What is wrong.
    pub message: String,
}

/// Parses `bytes` as a report of `format`.
pub fn parse(format: ReportFormat, bytes: &[u8]) -> Result<Parsed, ParseError> {
    match format {
        ReportFormat::CucumberJson => cucumber(bytes),
        ReportFormat::SimpleCov => simplecov(bytes),
        _ => {
            let nodes = read_xml(bytes)?;
            Ok(match format {
                ReportFormat::JunitXml => junit(&nodes),
                ReportFormat::TestngXml => testng(&nodes),
                ReportFormat::NunitXml => nunit2(&nodes),
                ReportFormat::Nunit3Xml => nunit3(&nodes),
                ReportFormat::VisualStudioTrx => trx(&nodes),
                ReportFormat::CoberturaXml => cobertura(&nodes),
                ReportFormat::JacocoXml => jacoco(&nodes),
                ReportFormat::CloverXml => clover(&nodes),
                ReportFormat::CucumberJson | ReportFormat::SimpleCov => unreachable!(),
            })
        }
    }
}

/// One XML event, owned, with its element depth (the root element is at depth 0).
#[derive(Debug)]
enum Node {
    Open {
        name: String,
        attrs: Vec<(String, String)>,
        depth: usize,
    },
    Close,
    Text(String),
}

impl Node {
    fn attr(&self, key: &str) -> Option<&str> {
        match self {
            Node::Open { attrs, .. } => attrs
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str()),
            _ => None,
        }
    }
}

fn line_of(bytes: &[u8], pos: u64) -> u64 {
    let end = (pos as usize).min(bytes.len());
    bytes[..end].iter().filter(|&&b| b == b'\n').count() as u64 + 1
}

fn local(name: &[u8]) -> String {
    let name = match name.iter().rposition(|&b| b == b':') {
        Some(i) => &name[i + 1..],
        None => name,
    };
    String::from_utf8_lossy(name).into_owned()
}

/// Reads a whole XML document (elements are closed in order, one root).
fn read_xml(bytes: &[u8]) -> Result<Vec<Node>, ParseError> {
    let mut reader = Reader::from_reader(bytes);
    let mut nodes = Vec::new();
    let mut open: Vec<String> = Vec::new();
    let mut roots = 0;
    let err = |reader: &Reader<&[u8]>, pos: Option<u64>, message: String| ParseError {
        line: line_of(bytes, pos.unwrap_or_else(|| reader.error_position())),
        message,
    };
    loop {
        let before = reader.buffer_position();
        let event = reader
            .read_event()
            .map_err(|e| err(&reader, None, e.to_string()))?;
        let (start, empty) = match &event {
            Xml::Start(s) => (Some(s), false),
            Xml::Empty(s) => (Some(s), true),
            _ => (None, false),
        };
        if let Some(s) = start {
            if open.is_empty() {
                roots += 1;
                if roots > 1 {
                    return Err(err(
                        &reader,
                        Some(before),
                        "more than one root element".into(),
                    ));
                }
            }
            let name = local(s.name().as_ref());
            let mut attrs = Vec::new();
            for a in s.attributes() {
                let a = a.map_err(|e| err(&reader, Some(before), e.to_string()))?;
                let value = a
                    .unescape_value()
                    .map_err(|e| err(&reader, Some(before), e.to_string()))?;
                attrs.push((local(a.key.as_ref()), value.into_owned()));
            }
            nodes.push(Node::Open {
                name: name.clone(),
                attrs,
                depth: open.len(),
            });
            if empty {
                nodes.push(Node::Close);
            } else {
                open.push(name);
            }
            continue;
        }
        match event {
            Xml::End(_) => {
                open.pop();
                nodes.push(Node::Close);
            }
            Xml::Text(t) => {
                let text = t
                    .decode()
                    .map_err(|e| err(&reader, Some(before), e.to_string()))?;
                if !open.is_empty() {
                    nodes.push(Node::Text(text.into_owned()));
                } else if let Some(skip) = text.find(|c: char| !c.is_whitespace()) {
                    let at = before + skip as u64;
                    return Err(err(
                        &reader,
                        Some(at),
                        "text outside the root element".into(),
                    ));
                }
            }
            Xml::CData(t) => nodes.push(Node::Text(String::from_utf8_lossy(&t).into_owned())),
            Xml::GeneralRef(r) => {
                let name = r
                    .decode()
                    .map_err(|e| err(&reader, Some(before), e.to_string()))?;
                let text = match name.as_ref() {
                    "lt" => "<".to_string(),
                    "gt" => ">".to_string(),
                    "amp" => "&".to_string(),
                    "quot" => "\"".to_string(),
                    "apos" => "'".to_string(),
                    n => n
                        .strip_prefix("#x")
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                        .or_else(|| n.strip_prefix('#').and_then(|d| d.parse().ok()))
                        .and_then(char::from_u32)
                        .map(String::from)
                        .unwrap_or_default(),
                };
                nodes.push(Node::Text(text));
            }
            Xml::Eof => break,
            _ => {}
        }
    }
    if let Some(name) = open.last() {
        return Err(ParseError {
            line: line_of(bytes, bytes.len() as u64),
            message: format!("unexpected end of file: <{name}> is not closed"),
        });
    }
    if roots == 0 {
        return Err(ParseError {
            line: line_of(bytes, bytes.len() as u64),
            message: "no root element".into(),
        });
    }
    Ok(nodes)
}

/// The text of the element opened at `nodes[i]` (all its text, trimmed), or `None` when empty.
fn text_of(nodes: &[Node], i: usize) -> Option<String> {
    let mut depth = 0usize;
    let mut out = String::new();
    for node in &nodes[i..] {
        match node {
            Node::Open { .. } => depth += 1,
            Node::Close => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            Node::Text(t) => out.push_str(t),
        }
    }
    let out = out.trim();
    (!out.is_empty()).then(|| out.to_string())
}

fn secs(text: Option<&str>) -> Option<f64> {
    text.and_then(|t| t.trim().replace(',', "").parse::<f64>().ok())
        .filter(|d| d.is_finite() && *d >= 0.0)
}

/// The index of the element closing the one opened at `i`.
fn end_of(nodes: &[Node], i: usize) -> usize {
    let mut depth = 0usize;
    for (j, node) in nodes.iter().enumerate().skip(i) {
        match node {
            Node::Open { .. } => depth += 1,
            Node::Close => {
                depth -= 1;
                if depth == 0 {
                    return j;
                }
            }
            Node::Text(_) => {}
        }
    }
    nodes.len()
}

fn is(node: &Node, wanted: &str) -> bool {
    matches!(node, Node::Open { name, .. } if name == wanted)
}

/// The message of a failure-like element: its `message` attribute, else its text.
fn message_at(nodes: &[Node], i: usize) -> Option<String> {
    nodes[i]
        .attr("message")
        .filter(|m| !m.trim().is_empty())
        .map(str::to_string)
        .or_else(|| text_of(nodes, i))
}

/// JUnit XML: `testcase` (name, classname, time) with `failure`, `error` or `skipped` children.
fn junit(nodes: &[Node]) -> Parsed {
    let mut cases = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        if !is(node, "testcase") {
            continue;
        }
        let end = end_of(nodes, i);
        let mut status = Status::Passed;
        let mut message = None;
        for j in i + 1..end {
            let found = match &nodes[j] {
                Node::Open { name, .. } if name == "failure" => Status::Failed,
                Node::Open { name, .. } if name == "error" => Status::Error,
                Node::Open { name, .. } if name == "skipped" => Status::Skipped,
                _ => continue,
            };
            if status == Status::Passed || found == Status::Error {
                status = found;
                message = message_at(nodes, j);
            }
        }
        cases.push(TestCase {
            name: node.attr("name").unwrap_or_default().to_string(),
            class: node.attr("classname").map(str::to_string),
            status,
            duration: secs(node.attr("time")),
            message,
        });
    }
    Parsed {
        cases,
        line_coverage: None,
    }
}

/// TestNG XML: `class` (name) holding `test-method` (name, status PASS/FAIL/SKIP, duration-ms);
/// configuration methods (`is-config="true"`) are not tests.
fn testng(nodes: &[Node]) -> Parsed {
    let mut cases = Vec::new();
    let mut class: Option<String> = None;
    for (i, node) in nodes.iter().enumerate() {
        if is(node, "class") {
            class = node.attr("name").map(str::to_string);
        }
        if !is(node, "test-method") || node.attr("is-config") == Some("true") {
            continue;
        }
        let status = match node.attr("status").unwrap_or("") {
            "PASS" => Status::Passed,
            "FAIL" => Status::Failed,
            "SKIP" => Status::Skipped,
            _ => Status::Error,
        };
        let end = end_of(nodes, i);
        let message = (i + 1..end)
            .find(|&j| is(&nodes[j], "message"))
            .and_then(|j| text_of(nodes, j));
        cases.push(TestCase {
            name: node.attr("name").unwrap_or_default().to_string(),
            class: class.clone(),
            status,
            duration: secs(node.attr("duration-ms")).map(|ms| ms / 1000.0),
            message,
        });
    }
    Parsed {
        cases,
        line_coverage: None,
    }
}

/// The text of the first `message` element inside the element at `i`.
fn inner_message(nodes: &[Node], i: usize) -> Option<String> {
    let end = end_of(nodes, i);
    (i + 1..end)
        .find(|&j| matches!(&nodes[j], Node::Open { name, .. } if name.eq_ignore_ascii_case("message")))
        .and_then(|j| text_of(nodes, j))
}

/// NUnit 2 XML: `test-case` (name, executed, result Success/Failure/Error/Ignored/..., time).
fn nunit2(nodes: &[Node]) -> Parsed {
    let mut cases = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        if !is(node, "test-case") {
            continue;
        }
        let status = match node.attr("result").unwrap_or("") {
            "Success" => Status::Passed,
            "Failure" => Status::Failed,
            "Error" | "Cancelled" => Status::Error,
            _ if node.attr("executed") == Some("False") => Status::Skipped,
            _ => match node.attr("success") {
                Some("True") => Status::Passed,
                Some("False") => Status::Failed,
                _ => Status::Skipped,
            },
        };
        let name = node.attr("name").unwrap_or_default().to_string();
        let class = name.rsplit_once('.').map(|(c, _)| c.to_string());
        cases.push(TestCase {
            name,
            class,
            status,
            duration: secs(node.attr("time")),
            message: inner_message(nodes, i),
        });
    }
    Parsed {
        cases,
        line_coverage: None,
    }
}

/// NUnit 3 XML: `test-case` (name, classname, result Passed/Failed/Skipped/Inconclusive/Warning,
/// label Error/Cancelled..., duration).
fn nunit3(nodes: &[Node]) -> Parsed {
    let mut cases = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        if !is(node, "test-case") {
            continue;
        }
        let status = match (node.attr("result").unwrap_or(""), node.attr("label")) {
            ("Passed", _) => Status::Passed,
            ("Failed", Some("Error" | "Cancelled" | "Invalid")) => Status::Error,
            ("Failed", _) => Status::Failed,
            _ => Status::Skipped,
        };
        cases.push(TestCase {
            name: node.attr("name").unwrap_or_default().to_string(),
            class: node.attr("classname").map(str::to_string),
            status,
            duration: secs(node.attr("duration")),
            message: inner_message(nodes, i),
        });
    }
    Parsed {
        cases,
        line_coverage: None,
    }
}

/// `hh:mm:ss.fffffff` in seconds.
fn timespan(text: &str) -> Option<f64> {
    let mut parts = text.trim().split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    let h: f64 = h.rsplit('.').next()?.parse().ok()?;
    let total = h * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?;
    total.is_finite().then_some(total)
}

/// Visual Studio TRX: `UnitTestResult` (testId, testName, outcome, duration) and, for the class,
/// `UnitTest` (id) holding `TestMethod` (className).
fn trx(nodes: &[Node]) -> Parsed {
    let mut classes = HashMap::new();
    let mut unit_test: Option<String> = None;
    for node in nodes {
        if is(node, "UnitTest") {
            unit_test = node.attr("id").map(str::to_string);
        } else if is(node, "TestMethod") {
            if let (Some(id), Some(class)) = (&unit_test, node.attr("className")) {
                classes.insert(id.clone(), class.to_string());
            }
        }
    }
    let mut cases = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        if !is(node, "UnitTestResult") {
            continue;
        }
        let status = match node.attr("outcome").unwrap_or("") {
            "Passed" | "PassedButRunAborted" | "Warning" => Status::Passed,
            "Failed" => Status::Failed,
            "Error" | "Timeout" | "Aborted" => Status::Error,
            _ => Status::Skipped,
        };
        cases.push(TestCase {
            name: node.attr("testName").unwrap_or_default().to_string(),
            class: node.attr("testId").and_then(|id| classes.get(id)).cloned(),
            status,
            duration: node.attr("duration").and_then(timespan),
            message: inner_message(nodes, i),
        });
    }
    Parsed {
        cases,
        line_coverage: None,
    }
}

fn coverage(percent: Option<f64>) -> Parsed {
    Parsed {
        cases: Vec::new(),
        line_coverage: percent.filter(|p| p.is_finite()),
    }
}

/// Cobertura: the root `coverage` element's `line-rate` (0 to 1).
fn cobertura(nodes: &[Node]) -> Parsed {
    let rate = nodes
        .iter()
        .find(|n| is(n, "coverage"))
        .and_then(|n| secs(n.attr("line-rate")));
    coverage(rate.map(|r| r * 100.0))
}

fn ratio(covered: Option<&str>, total: Option<f64>) -> Option<f64> {
    let covered = secs(covered)?;
    let total = total?;
    (total > 0.0).then(|| covered / total * 100.0)
}

/// JaCoCo: the `counter type="LINE"` directly under the root `report` (covered / (covered + missed)).
fn jacoco(nodes: &[Node]) -> Parsed {
    let percent = nodes
        .iter()
        .find(|n| {
            matches!(n, Node::Open { name, depth: 1, .. } if name == "counter")
                && n.attr("type") == Some("LINE")
        })
        .and_then(|n| {
            let covered = secs(n.attr("covered"))?;
            let missed = secs(n.attr("missed"))?;
            ratio(n.attr("covered"), Some(covered + missed))
        });
    coverage(percent)
}

/// Clover: the project's `metrics` (coveredstatements / statements).
fn clover(nodes: &[Node]) -> Parsed {
    let percent = nodes
        .iter()
        .find(|n| matches!(n, Node::Open { name, depth: 2, .. } if name == "metrics"))
        .and_then(|n| ratio(n.attr("coveredstatements"), secs(n.attr("statements"))));
    coverage(percent)
}

fn json(bytes: &[u8]) -> Result<serde_json::Value, ParseError> {
    serde_json::from_slice(bytes).map_err(|e| ParseError {
        line: e.line().max(1) as u64,
        message: e.to_string(),
    })
}

/// SimpleCov JSON: `metrics.covered_percent` (simplecov-json), or `result.line` /
/// `result.covered_percent` (`.last_run.json`).
fn simplecov(bytes: &[u8]) -> Result<Parsed, ParseError> {
    let v = json(bytes)?;
    let percent = v["metrics"]["covered_percent"]
        .as_f64()
        .or_else(|| v["result"]["line"].as_f64())
        .or_else(|| v["result"]["covered_percent"].as_f64());
    Ok(coverage(percent))
}

/// Cucumber JSON: an array of features (`name`) with `elements` (scenarios: `name`, `type`) whose
/// `steps` have a `result` (`status`, `duration` in nanoseconds, `error_message`). A scenario
/// failed if a step failed, was skipped if a step was skipped, pending or undefined, else passed.
fn cucumber(bytes: &[u8]) -> Result<Parsed, ParseError> {
    let v = json(bytes)?;
    let features = v.as_array().ok_or(ParseError {
        line: 1,
        message: "expected an array of features".into(),
    })?;
    let mut cases = Vec::new();
    for feature in features {
        let class = feature["name"].as_str().map(str::to_string);
        for element in feature["elements"].as_array().into_iter().flatten() {
            if element["type"].as_str() == Some("background") {
                continue;
            }
            let mut status = Status::Passed;
            let mut message = None;
            let mut nanos = 0.0;
            let steps = element["steps"].as_array().into_iter().flatten();
            let hooks = element["before"]
                .as_array()
                .into_iter()
                .chain(element["after"].as_array())
                .flatten();
            for step in steps.chain(hooks) {
                let result = &step["result"];
                nanos += result["duration"].as_f64().unwrap_or(0.0);
                match result["status"].as_str().unwrap_or("") {
                    "passed" => {}
                    "failed" => {
                        if status != Status::Failed {
                            message = result["error_message"].as_str().map(str::to_string);
                        }
                        status = Status::Failed;
                    }
                    _ if status == Status::Passed => status = Status::Skipped,
                    _ => {}
                }
            }
            cases.push(TestCase {
                name: element["name"].as_str().unwrap_or_default().to_string(),
                class: class.clone(),
                status,
                duration: Some(nanos / 1e9),
                message,
            });
        }
    }
    Ok(Parsed {
        cases,
        line_coverage: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statuses(p: &Parsed) -> Vec<(&str, Status)> {
        p.cases
            .iter()
            .map(|c| (c.name.as_str(), c.status))
            .collect()
    }

    #[test]
    fn junit() {
        let doc = br#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites>
  <testsuite name="math" tests="4" time="1.5">
    <testcase name="adds" classname="math.Add" time="0.5"/>
    <testcase name="divides" classname="math.Div" time="0.25">
      <failure message="expected 2 &amp; got 3" type="AssertionError">trace</failure>
    </testcase>
    <testcase name="later" classname="math.Div"><skipped/></testcase>
    <testcase name="explodes" classname="math.Div" time="1"><error>boom &lt;here&gt;</error></testcase>
  </testsuite>
</testsuites>"#;
        let p = parse(ReportFormat::JunitXml, doc).unwrap();
        assert_eq!(
            statuses(&p),
            [
                ("adds", Status::Passed),
                ("divides", Status::Failed),
                ("later", Status::Skipped),
                ("explodes", Status::Error)
            ]
        );
        assert_eq!(p.cases[1].message.as_deref(), Some("expected 2 & got 3"));
        assert_eq!(p.cases[1].class.as_deref(), Some("math.Div"));
        assert_eq!(p.cases[1].duration, Some(0.25));
        assert_eq!(p.cases[2].duration, None);
        assert_eq!(p.cases[3].message.as_deref(), Some("boom <here>"));
    }

    #[test]
    fn junit_single_suite_root() {
        let doc = br#"<testsuite name="s"><testcase name="a" time="2"/></testsuite>"#;
        let p = parse(ReportFormat::JunitXml, doc).unwrap();
        assert_eq!(statuses(&p), [("a", Status::Passed)]);
    }

    #[test]
    fn malformed_xml_names_the_line() {
        let doc = b"<testsuites>\n  <testsuite>\n    <testcase name=\"a\">\n  </testsuite>\n</testsuites>\n";
        let e = parse(ReportFormat::JunitXml, doc).unwrap_err();
        assert_eq!(e.line, 4, "{e:?}");
        let e = parse(
            ReportFormat::JunitXml,
            b"<testsuites>\n<testcase name=\"a\"/>\n",
        )
        .unwrap_err();
        assert_eq!(e.line, 3, "{e:?}");
        assert!(e.message.contains("not closed"), "{e:?}");
        let e = parse(ReportFormat::JunitXml, b"\n\nnot xml at all").unwrap_err();
        assert_eq!(e.line, 3, "{e:?}");
        let e = parse(ReportFormat::JunitXml, b"<a>\n<b x=\"1\" x></b></a>").unwrap_err();
        assert_eq!(e.line, 2, "{e:?}");
    }

    #[test]
    fn testng() {
        let doc = br#"<testng-results skipped="1" failed="1" total="3" passed="1">
  <suite name="S"><test name="T">
    <class name="com.example.MathTest">
      <test-method status="PASS" name="setUp" is-config="true" duration-ms="1"/>
      <test-method status="PASS" name="adds" duration-ms="1500"/>
      <test-method status="FAIL" name="divides" duration-ms="20">
        <exception class="java.lang.AssertionError"><message><![CDATA[expected [2]]]></message></exception>
      </test-method>
      <test-method status="SKIP" name="later" duration-ms="0"/>
    </class>
  </test></suite>
</testng-results>"#;
        let p = parse(ReportFormat::TestngXml, doc).unwrap();
        assert_eq!(
            statuses(&p),
            [
                ("adds", Status::Passed),
                ("divides", Status::Failed),
                ("later", Status::Skipped)
            ]
        );
        assert_eq!(p.cases[0].duration, Some(1.5));
        assert_eq!(p.cases[1].class.as_deref(), Some("com.example.MathTest"));
        assert_eq!(p.cases[1].message.as_deref(), Some("expected [2]"));
    }

    #[test]
    fn nunit2() {
        let doc = br#"<test-results name="x.dll" total="3">
  <test-suite type="TestFixture" name="MathTest"><results>
    <test-case name="Ns.MathTest.Adds" executed="True" result="Success" success="True" time="0.010"/>
    <test-case name="Ns.MathTest.Divides" executed="True" result="Failure" success="False" time="0.020">
      <failure><message><![CDATA[Expected: 2]]></message></failure>
    </test-case>
    <test-case name="Ns.MathTest.Later" executed="False" result="Ignored"><reason><message>not yet</message></reason></test-case>
  </results></test-suite>
</test-results>"#;
        let p = parse(ReportFormat::NunitXml, doc).unwrap();
        assert_eq!(
            statuses(&p),
            [
                ("Ns.MathTest.Adds", Status::Passed),
                ("Ns.MathTest.Divides", Status::Failed),
                ("Ns.MathTest.Later", Status::Skipped)
            ]
        );
        assert_eq!(p.cases[1].class.as_deref(), Some("Ns.MathTest"));
        assert_eq!(p.cases[1].message.as_deref(), Some("Expected: 2"));
        assert_eq!(p.cases[2].message.as_deref(), Some("not yet"));
    }

    #[test]
    fn nunit3() {
        let doc = br#"<test-run id="2" total="4">
  <test-suite type="TestFixture" name="MathTest" fullname="Ns.MathTest">
    <test-case id="1" name="Adds" fullname="Ns.MathTest.Adds" classname="Ns.MathTest" result="Passed" duration="0.5"/>
    <test-case id="2" name="Divides" classname="Ns.MathTest" result="Failed" duration="0.1"><failure><message>Expected 2</message></failure></test-case>
    <test-case id="3" name="Throws" classname="Ns.MathTest" result="Failed" label="Error"/>
    <test-case id="4" name="Later" classname="Ns.MathTest" result="Skipped" label="Ignored"/>
  </test-suite>
</test-run>"#;
        let p = parse(ReportFormat::Nunit3Xml, doc).unwrap();
        assert_eq!(
            statuses(&p),
            [
                ("Adds", Status::Passed),
                ("Divides", Status::Failed),
                ("Throws", Status::Error),
                ("Later", Status::Skipped)
            ]
        );
        assert_eq!(p.cases[0].duration, Some(0.5));
        assert_eq!(p.cases[1].message.as_deref(), Some("Expected 2"));
    }

    #[test]
    fn trx() {
        let doc = br#"<?xml version="1.0" encoding="utf-8"?>
<TestRun id="r" xmlns="http://microsoft.com/schemas/VisualStudio/TeamTest/2010">
  <Results>
    <UnitTestResult testId="t1" testName="Adds" outcome="Passed" duration="00:00:01.5000000"/>
    <UnitTestResult testId="t2" testName="Divides" outcome="Failed" duration="00:00:00.2500000">
      <Output><ErrorInfo><Message>Assert.AreEqual failed</Message></ErrorInfo></Output>
    </UnitTestResult>
    <UnitTestResult testId="t3" testName="Later" outcome="NotExecuted"/>
  </Results>
  <TestDefinitions>
    <UnitTest name="Adds" id="t1"><TestMethod className="Ns.MathTest" name="Adds"/></UnitTest>
  </TestDefinitions>
</TestRun>"#;
        let p = parse(ReportFormat::VisualStudioTrx, doc).unwrap();
        assert_eq!(
            statuses(&p),
            [
                ("Adds", Status::Passed),
                ("Divides", Status::Failed),
                ("Later", Status::Skipped)
            ]
        );
        assert_eq!(p.cases[0].duration, Some(1.5));
        assert_eq!(p.cases[0].class.as_deref(), Some("Ns.MathTest"));
        assert_eq!(
            p.cases[1].message.as_deref(),
            Some("Assert.AreEqual failed")
        );
    }

    #[test]
    fn cucumber() {
        let doc = br#"[{"name":"Math","elements":[
  {"type":"background","name":"bg","steps":[{"result":{"status":"passed"}}]},
  {"type":"scenario","name":"adds","steps":[{"result":{"status":"passed","duration":500000000}}]},
  {"type":"scenario","name":"divides","steps":[{"result":{"status":"passed"}},{"result":{"status":"failed","error_message":"boom"}},{"result":{"status":"skipped"}}]},
  {"type":"scenario","name":"later","steps":[{"result":{"status":"undefined"}}]}
]}]"#;
        let p = parse(ReportFormat::CucumberJson, doc).unwrap();
        assert_eq!(
            statuses(&p),
            [
                ("adds", Status::Passed),
                ("divides", Status::Failed),
                ("later", Status::Skipped)
            ]
        );
        assert_eq!(p.cases[0].duration, Some(0.5));
        assert_eq!(p.cases[1].class.as_deref(), Some("Math"));
        assert_eq!(p.cases[1].message.as_deref(), Some("boom"));
        let e = parse(ReportFormat::CucumberJson, b"[\n{\"name\": }\n]").unwrap_err();
        assert_eq!(e.line, 2, "{e:?}");
    }

    #[test]
    fn coverage_formats() {
        let cobertura = br#"<?xml version="1.0"?>
<!DOCTYPE coverage SYSTEM "http://cobertura.sourceforge.net/xml/coverage-04.dtd">
<coverage line-rate="0.875" branch-rate="0.5" version="1.9"><packages/></coverage>"#;
        let p = parse(ReportFormat::CoberturaXml, cobertura).unwrap();
        assert_eq!(p.line_coverage, Some(87.5));
        assert!(p.cases.is_empty());

        let jacoco = br#"<report name="r"><package name="p"><counter type="LINE" missed="9" covered="1"/></package>
<counter type="INSTRUCTION" missed="1" covered="1"/><counter type="LINE" missed="1" covered="3"/></report>"#;
        let p = parse(ReportFormat::JacocoXml, jacoco).unwrap();
        assert_eq!(p.line_coverage, Some(75.0));

        let clover = br#"<coverage generated="1"><project timestamp="1"><metrics statements="8" coveredstatements="2"/>
<file name="a"><metrics statements="1" coveredstatements="1"/></file></project></coverage>"#;
        let p = parse(ReportFormat::CloverXml, clover).unwrap();
        assert_eq!(p.line_coverage, Some(25.0));

        let p = parse(
            ReportFormat::SimpleCov,
            br#"{"metrics":{"covered_percent":91.5}}"#,
        )
        .unwrap();
        assert_eq!(p.line_coverage, Some(91.5));
        let p = parse(ReportFormat::SimpleCov, br#"{"result":{"line":80.0}}"#).unwrap();
        assert_eq!(p.line_coverage, Some(80.0));
        let p = parse(ReportFormat::SimpleCov, b"{}").unwrap();
        assert_eq!(p.line_coverage, None);
    }
}
