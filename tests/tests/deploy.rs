//! The deployment files under `deploy/` (Kubernetes manifests, IAM policies, the systemd unit)
//! read as their tools read them, and checked against the worker's flags and against each other:
//! probes on the port the worker listens on, grace periods longer than the drain, KEDA's trigger
//! sized to the slots, IAM statements well formed and without wildcard actions. No cluster, no
//! AWS and no build of the agent are needed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml_ng::Value;

/// The repository's `deploy/` directory (read when the test runs; see `buildagent_tests::testdata`).
fn deploy_dir() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .expect("run by cargo, which sets CARGO_MANIFEST_DIR");
    Path::new(&manifest).join("../deploy")
}

/// Every file under `dir` (recursively) whose name ends with one of `extensions`, sorted.
fn files(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| extensions.contains(&e))
            {
                found.push(path);
            }
        }
    }
    found.sort();
    assert!(
        !found.is_empty(),
        "no {extensions:?} file under {}",
        dir.display()
    );
    found
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// One document of a manifest file, with where it came from for messages.
struct Manifest {
    file: String,
    doc: Value,
}

impl Manifest {
    fn kind(&self) -> &str {
        self.str("kind")
    }

    fn name(&self) -> &str {
        self.str("metadata.name")
    }

    /// The value at a dotted path (`spec.template.spec.containers.0.args`), if there is one.
    fn get(&self, path: &str) -> Option<&Value> {
        at(&self.doc, path)
    }

    /// The string at `path`; a missing key or another type fails the test, naming both.
    fn str(&self, path: &str) -> &str {
        self.get(path)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{}: no string at `{path}`", self.file))
    }

    fn u64(&self, path: &str) -> u64 {
        self.get(path)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("{}: no whole number at `{path}`", self.file))
    }
}

fn at<'a>(mut value: &'a Value, path: &str) -> Option<&'a Value> {
    for key in path.split('.') {
        value = match key.parse::<usize>() {
            Ok(index) => value.as_sequence()?.get(index)?,
            Err(_) => value.as_mapping()?.get(key)?,
        };
    }
    Some(value)
}

/// The documents of a YAML stream: the text between `---` lines.
fn documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else {
            let doc = docs.last_mut().expect("one document at least");
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs
}

/// Every document of every YAML file under `deploy/kubernetes`.
fn manifests() -> Vec<Manifest> {
    let dir = deploy_dir().join("kubernetes");
    let mut all = Vec::new();
    for path in files(&dir, &["yaml", "yml"]) {
        let text = read(&path);
        let file = path
            .strip_prefix(&dir)
            .unwrap_or(&path)
            .display()
            .to_string();
        for document in documents(&text) {
            let blank = document
                .lines()
                .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
            if blank {
                continue; // an empty document (a trailing `---`)
            }
            let doc: Value = serde_yaml_ng::from_str(&document)
                .unwrap_or_else(|e| panic!("{file}: not valid YAML: {e}"));
            let manifest = Manifest {
                file: file.clone(),
                doc,
            };
            assert!(
                manifest.get("apiVersion").is_some_and(Value::is_string),
                "{file}: a document without apiVersion"
            );
            assert!(
                manifest.get("metadata.namespace").is_none(),
                "{file}: {} {} names a namespace; the set is meant for `kubectl apply -n`",
                manifest.kind(),
                manifest.name()
            );
            all.push(manifest);
        }
    }
    all
}

/// The value of `--name VALUE` or `--name=VALUE` in `args`.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let with_equals = format!("{name}=");
    args.iter().enumerate().find_map(|(i, arg)| {
        if arg == name {
            Some(args.get(i + 1).map(String::as_str).unwrap_or(""))
        } else {
            arg.strip_prefix(&with_equals)
        }
    })
}

/// A duration as the worker's flags (`30m`, `1h30m`, `90s`, `45`) and systemd (`35min`, `2100`)
/// write them.
fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("an empty duration".into());
    }
    let mut total = 0u64;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("`{text}`: a number was expected at `{rest}`"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}`: too large"))?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = match &rest[..unit_len] {
            "" | "s" | "sec" => 1,
            "m" | "min" => 60,
            "h" | "hr" => 3600,
            other => return Err(format!("`{text}`: unknown unit `{other}`")),
        };
        rest = rest[unit_len..].trim_start();
        total += n * unit;
    }
    Ok(Duration::from_secs(total))
}

/// [`duration`], failing the test with `what` named.
fn duration_of(what: &str, text: &str) -> Duration {
    duration(text).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The worker's default `--drain-timeout` (the fleet contract).
const DEFAULT_DRAIN: Duration = Duration::from_secs(30 * 60);

/// What a Deployment of workers says, for the checks across manifests.
struct Worker {
    slots: u64,
    queue: String,
    region: String,
}

fn strings(manifest: &Manifest, path: &str) -> Vec<String> {
    manifest
        .get(path)
        .and_then(Value::as_sequence)
        .unwrap_or_else(|| panic!("{}: no list at `{path}`", manifest.file))
        .iter()
        .map(|v| {
            // Numbers written unquoted are still arguments.
            match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => panic!("{}: `{path}` holds {other:?}", manifest.file),
            }
        })
        .collect()
}

/// Checks one worker Deployment and returns what the ScaledObject must agree with.
fn check_worker_deployment(d: &Manifest) -> Worker {
    let containers = d
        .get("spec.template.spec.containers")
        .and_then(Value::as_sequence)
        .unwrap_or_else(|| panic!("{}: no containers", d.file));
    let index = containers
        .iter()
        .position(|c| at(c, "name").and_then(Value::as_str) == Some("worker"))
        .unwrap_or_else(|| panic!("{}: no container named `worker`", d.file));
    let c = |rest: &str| format!("spec.template.spec.containers.{index}.{rest}");
    let args = strings(d, &c("args"));
    assert_eq!(
        args.first().map(String::as_str),
        Some("worker"),
        "{}: the container's args must start with the `worker` command",
        d.file
    );

    // The probes reach the port the worker listens on, from outside the pod's loopback.
    let listen = flag(&args, "--listen").unwrap_or_else(|| panic!("{}: no --listen", d.file));
    let (host, port) = listen
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{}: --listen `{listen}` is not HOST:PORT", d.file));
    let port: u64 = port
        .parse()
        .unwrap_or_else(|_| panic!("{}: --listen `{listen}` has no port number", d.file));
    assert!(
        matches!(host, "0.0.0.0" | "[::]" | ""),
        "{}: --listen `{listen}`: the kubelet probes the pod's IP, so the worker must listen on \
         every interface",
        d.file
    );
    let named_ports: BTreeMap<String, u64> = d
        .get(&c("ports"))
        .and_then(Value::as_sequence)
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| {
                    Some((
                        at(p, "name")?.as_str()?.to_string(),
                        at(p, "containerPort")?.as_u64()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(
            d.str(&c(&format!("{probe}.httpGet.path"))),
            path,
            "{}: {probe}",
            d.file
        );
        let probe_port = match d.get(&c(&format!("{probe}.httpGet.port"))) {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(name)) => named_ports.get(name).copied(),
            _ => None,
        };
        assert_eq!(
            probe_port,
            Some(port),
            "{}: {probe} must probe the port of --listen `{listen}`",
            d.file
        );
    }

    // Kubernetes' SIGKILL comes after the drain, never during it.
    let drain = flag(&args, "--drain-timeout").map_or(DEFAULT_DRAIN, |t| {
        duration_of(&format!("{}: --drain-timeout", d.file), t)
    });
    let grace = Duration::from_secs(d.u64("spec.template.spec.terminationGracePeriodSeconds"));
    assert!(
        grace > drain,
        "{}: terminationGracePeriodSeconds ({grace:?}) must be longer than --drain-timeout \
         ({drain:?})",
        d.file
    );
    assert!(
        flag(&args, "--idle-exit").is_none(),
        "{}: --idle-exit in a Deployment: the kubelet restarts a container that exits",
        d.file
    );

    // Queue, table and region from the environment the worker reads.
    let env: BTreeMap<String, String> = d
        .get(&c("env"))
        .and_then(Value::as_sequence)
        .unwrap_or_else(|| panic!("{}: no env", d.file))
        .iter()
        .filter_map(|e| {
            Some((
                at(e, "name")?.as_str()?.to_string(),
                at(e, "value")?.as_str()?.to_string(),
            ))
        })
        .collect();
    for name in ["BUILDAGENT_QUEUE", "BUILDAGENT_TABLE", "AWS_REGION"] {
        assert!(
            env.get(name).is_some_and(|v| !v.is_empty()),
            "{}: no {name} in the worker's env",
            d.file
        );
    }

    // The docker executor needs the engine's socket, and host pids to stop commands; the host
    // executor must not have the node's engine.
    let executor = flag(&args, "--executor").unwrap_or("host");
    let mounts: BTreeMap<String, String> = d
        .get(&c("volumeMounts"))
        .and_then(Value::as_sequence)
        .map(|mounts| {
            mounts
                .iter()
                .filter_map(|m| {
                    Some((
                        at(m, "name")?.as_str()?.to_string(),
                        at(m, "mountPath")?.as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let host_paths: BTreeMap<String, String> = d
        .get("spec.template.spec.volumes")
        .and_then(Value::as_sequence)
        .map(|volumes| {
            volumes
                .iter()
                .filter_map(|v| {
                    Some((
                        at(v, "name")?.as_str()?.to_string(),
                        at(v, "hostPath.path")?.as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let socket_mounted = mounts.iter().any(|(name, path)| {
        path == "/var/run/docker.sock"
            && host_paths.get(name).map(String::as_str) == Some("/var/run/docker.sock")
    });
    let host_pid = d.get("spec.template.spec.hostPID").and_then(Value::as_bool) == Some(true);
    match executor {
        "docker" => {
            assert!(
                socket_mounted,
                "{}: --executor docker without the node's /var/run/docker.sock mounted at the \
                 same path",
                d.file
            );
            assert!(host_pid, "{}: --executor docker needs hostPID", d.file);
            // Every hostPath the engine resolves must be mounted at its own path.
            for (name, path) in &mounts {
                if let Some(host) = host_paths.get(name) {
                    assert_eq!(
                        host, path,
                        "{}: hostPath volume `{name}` is mounted at another path",
                        d.file
                    );
                }
            }
        }
        "host" => assert!(
            !socket_mounted && !host_pid && host_paths.is_empty(),
            "{}: the host executor needs nothing of the node (no hostPath, no hostPID)",
            d.file
        ),
        other => panic!("{}: unknown --executor `{other}`", d.file),
    }

    let slots: u64 = flag(&args, "--slots").map_or(1, |s| {
        s.parse()
            .unwrap_or_else(|_| panic!("{}: --slots `{s}`", d.file))
    });
    Worker {
        slots,
        queue: env["BUILDAGENT_QUEUE"].clone(),
        region: env["AWS_REGION"].clone(),
    }
}

#[test]
fn kubernetes_manifests_agree_with_the_worker_and_with_each_other() {
    let all = manifests();
    let of_kind = |kind: &'static str| all.iter().filter(move |m| m.kind() == kind);

    let service_accounts: BTreeSet<&str> = of_kind("ServiceAccount").map(|m| m.name()).collect();
    for sa in of_kind("ServiceAccount") {
        let role = sa
            .get("metadata.annotations")
            .and_then(|a| a.get("eks.amazonaws.com/role-arn"))
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{}: no eks.amazonaws.com/role-arn annotation", sa.file));
        assert!(
            role.starts_with("arn:aws:iam::"),
            "{}: role ARN `{role}`",
            sa.file
        );
    }

    let mut workers: BTreeMap<&str, Vec<Worker>> = BTreeMap::new();
    for d in of_kind("Deployment") {
        let sa = d.str("spec.template.spec.serviceAccountName");
        assert!(
            service_accounts.contains(sa),
            "{}: service account `{sa}` is not among the manifests",
            d.file
        );
        workers
            .entry(d.name())
            .or_default()
            .push(check_worker_deployment(d));
    }
    assert!(!workers.is_empty(), "no Deployment among the manifests");

    let trigger_auths: BTreeSet<&str> =
        of_kind("TriggerAuthentication").map(|m| m.name()).collect();
    let scaled: Vec<&Manifest> = of_kind("ScaledObject").collect();
    assert!(
        !scaled.is_empty(),
        "no KEDA ScaledObject among the manifests"
    );
    for so in scaled {
        let target = so.str("spec.scaleTargetRef.name");
        let targets = workers
            .get(target)
            .unwrap_or_else(|| panic!("{}: scales `{target}`, which is no Deployment", so.file));
        assert_eq!(
            so.u64("spec.minReplicaCount"),
            0,
            "{}: minReplicaCount",
            so.file
        );
        let triggers = so
            .get("spec.triggers")
            .and_then(Value::as_sequence)
            .unwrap_or_else(|| panic!("{}: no triggers", so.file));
        assert!(!triggers.is_empty(), "{}: no triggers", so.file);
        for trigger in triggers {
            let t = Manifest {
                file: so.file.clone(),
                doc: trigger.clone(),
            };
            assert_eq!(t.str("type"), "aws-sqs-queue", "{}: trigger type", so.file);
            let queue_length: u64 = t.str("metadata.queueLength").parse().unwrap_or_else(|_| {
                panic!("{}: queueLength must be a number in a string", so.file)
            });
            for worker in targets {
                assert_eq!(
                    t.str("metadata.queueURL"),
                    worker.queue,
                    "{}: queueURL is not the workers' BUILDAGENT_QUEUE",
                    so.file
                );
                assert_eq!(
                    t.str("metadata.awsRegion"),
                    worker.region,
                    "{}: awsRegion is not the workers' AWS_REGION",
                    so.file
                );
                assert_eq!(
                    queue_length, worker.slots,
                    "{}: queueLength (builds per pod) must be the workers' --slots",
                    so.file
                );
            }
            if let Some(auth) = t.get("authenticationRef.name").and_then(Value::as_str) {
                assert!(
                    trigger_auths.contains(auth),
                    "{}: TriggerAuthentication `{auth}` is not among the manifests",
                    so.file
                );
            }
        }
    }
}

/// Actions that have no resource-level permissions, so `"Resource": "*"` is their only form.
const RESOURCE_STAR_ONLY: &[&str] = &["ecr:GetAuthorizationToken"];

/// A well-formed IAM action: `service:Action`, no wildcard.
fn well_formed_action(action: &str) -> bool {
    let Some((service, name)) = action.split_once(':') else {
        return false;
    };
    !service.is_empty()
        && service
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.starts_with(|c: char| c.is_ascii_uppercase())
        && name.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The actions of each policy file, after checking every statement's shape.
fn policy_actions(path: &Path) -> BTreeSet<String> {
    let file = path.file_name().unwrap().to_string_lossy().to_string();
    let policy: serde_json::Value =
        serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{file}: not valid JSON: {e}"));
    assert_eq!(policy["Version"], "2012-10-17", "{file}: Version");
    let statements = policy["Statement"]
        .as_array()
        .unwrap_or_else(|| panic!("{file}: Statement must be a list"));
    assert!(!statements.is_empty(), "{file}: no statement");
    let mut sids = BTreeSet::new();
    let mut all = BTreeSet::new();
    for (i, statement) in statements.iter().enumerate() {
        let at = match statement["Sid"].as_str() {
            Some(sid) => {
                assert!(sids.insert(sid.to_string()), "{file}: Sid `{sid}` twice");
                format!("{file}: statement `{sid}`")
            }
            None => format!("{file}: statement {i}"),
        };
        assert_eq!(statement["Effect"], "Allow", "{at}: Effect");
        assert!(
            statement.get("NotAction").is_none() && statement.get("NotResource").is_none(),
            "{at}: NotAction/NotResource grant everything else"
        );
        let list = |key: &str| -> Vec<String> {
            match &statement[key] {
                serde_json::Value::String(s) => vec![s.clone()],
                serde_json::Value::Array(items) => items
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .unwrap_or_else(|| panic!("{at}: {key} holds {v}"))
                            .to_string()
                    })
                    .collect(),
                other => panic!("{at}: {key} is {other}"),
            }
        };
        let actions = list("Action");
        assert!(!actions.is_empty(), "{at}: an empty Action list");
        for action in &actions {
            assert_ne!(action, "*", "{at}: Action \"*\"");
            assert!(
                well_formed_action(action),
                "{at}: `{action}` is not a `service:Action` name (wildcards are not allowed)"
            );
            assert!(
                all.insert(action.clone()),
                "{file}: `{action}` granted twice"
            );
        }
        let resources = list("Resource");
        assert!(!resources.is_empty(), "{at}: an empty Resource list");
        for resource in &resources {
            if resource == "*" {
                assert!(
                    actions
                        .iter()
                        .all(|a| RESOURCE_STAR_ONLY.contains(&a.as_str())),
                    "{at}: Resource \"*\" for actions that can name their resources"
                );
            } else {
                assert!(
                    resource.starts_with("arn:aws:"),
                    "{at}: `{resource}` is not an ARN"
                );
            }
        }
    }
    all
}

#[test]
fn iam_policies_are_least_privilege_and_grant_what_the_fleet_calls() {
    let dir = deploy_dir().join("iam");
    let required: BTreeMap<&str, &[&str]> = BTreeMap::from([
        (
            "worker-policy.json",
            &[
                "sqs:ReceiveMessage",
                "sqs:ChangeMessageVisibility",
                "sqs:DeleteMessage",
                "sqs:GetQueueUrl",
                "sqs:GetQueueAttributes",
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "logs:CreateLogGroup",
                "logs:CreateLogStream",
                "logs:PutLogEvents",
                "logs:DescribeLogStreams",
                "s3:GetObject",
                "s3:PutObject",
                "s3:AbortMultipartUpload",
                "ssm:GetParameters",
                "secretsmanager:GetSecretValue",
                "ecr:GetAuthorizationToken",
                "ecr:BatchGetImage",
                "ecr:GetDownloadUrlForLayer",
            ][..],
        ),
        (
            "submitter-policy.json",
            &[
                "sqs:SendMessage",
                "sqs:GetQueueUrl",
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "dynamodb:GetItem",
                "dynamodb:BatchGetItem",
                "dynamodb:Scan",
                "s3:PutObject",
                "logs:GetLogEvents",
                "logs:FilterLogEvents",
                "logs:DescribeLogStreams",
            ][..],
        ),
        (
            "fleet-init-policy.json",
            &[
                "sqs:CreateQueue",
                "sqs:SetQueueAttributes",
                "dynamodb:CreateTable",
                "s3:CreateBucket",
                "logs:CreateLogGroup",
            ][..],
        ),
    ]);
    let paths = files(&dir, &["json"]);
    let names: BTreeSet<String> = paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    for (name, actions) in &required {
        assert!(names.contains(*name), "deploy/iam/{name} is missing");
        let granted = policy_actions(&dir.join(name));
        for action in *actions {
            assert!(
                granted.contains(*action),
                "{name}: `{action}` is not granted"
            );
        }
    }
    // Any other policy file is checked for shape too.
    for path in &paths {
        policy_actions(path);
    }
    // The worker never manages the fleet's resources, and the submitter never takes jobs.
    let worker = policy_actions(&dir.join("worker-policy.json"));
    let submitter = policy_actions(&dir.join("submitter-policy.json"));
    for action in [
        "sqs:CreateQueue",
        "sqs:SendMessage",
        "dynamodb:Scan",
        "dynamodb:CreateTable",
    ] {
        assert!(!worker.contains(action), "worker-policy.json: `{action}`");
    }
    for action in ["sqs:ReceiveMessage", "sqs:DeleteMessage", "s3:GetObject"] {
        assert!(
            !submitter.contains(action),
            "submitter-policy.json: `{action}`"
        );
    }
}

/// A systemd unit's settings: section -> key -> values (a key may repeat), continuation lines
/// joined, comments dropped.
fn unit_settings(text: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut sections: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = String::new();
    let mut pending = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with(';'))
        {
            continue;
        }
        if let Some(continued) = line.strip_suffix('\\') {
            pending.push_str(continued);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let logical = std::mem::take(&mut pending);
        if logical.starts_with('[') && logical.ends_with(']') {
            section = logical[1..logical.len() - 1].to_string();
            continue;
        }
        let (key, value) = logical
            .split_once('=')
            .unwrap_or_else(|| panic!("systemd unit: `{logical}` is not KEY=VALUE"));
        assert!(
            !section.is_empty(),
            "systemd unit: `{logical}` before any section"
        );
        sections
            .entry(section.clone())
            .or_default()
            .entry(key.trim().to_string())
            .or_default()
            .push(value.trim().to_string());
    }
    sections
}

#[test]
fn the_systemd_unit_drains_on_sigterm_and_delegates_cgroups() {
    let dir = deploy_dir().join("systemd");
    let unit = unit_settings(&read(&dir.join("buildagent-worker.service")));
    let service = unit.get("Service").expect("a [Service] section");
    let one = |key: &str| -> &str {
        match service.get(key).map(Vec::as_slice) {
            Some([value]) => value,
            other => panic!("[Service] {key}: expected one value, found {other:?}"),
        }
    };
    assert_eq!(one("Type"), "exec", "the worker does not speak sd_notify");
    assert_eq!(one("KillSignal"), "SIGTERM");
    assert_eq!(one("KillMode"), "mixed");
    assert_eq!(one("Delegate"), "yes");
    assert_eq!(one("Restart"), "on-failure");
    assert!(
        !matches!(one("User"), "" | "root" | "0"),
        "a dedicated user, not root"
    );
    assert!(
        !service.contains_key("ProtectControlGroups"),
        "ProtectControlGroups makes /sys/fs/cgroup read-only: no per-build cgroups"
    );
    assert!(
        unit.get("Install")
            .and_then(|i| i.get("WantedBy"))
            .is_some(),
        "[Install] WantedBy"
    );

    let exec = one("ExecStart");
    let args: Vec<String> = exec.split_whitespace().map(str::to_string).collect();
    assert!(
        args.first().is_some_and(|a| a.starts_with('/'))
            && args.get(1).map(String::as_str) == Some("worker"),
        "ExecStart `{exec}`: an absolute path to buildagent, then `worker`"
    );
    assert_eq!(flag(&args, "--listen"), Some("127.0.0.1:9252"));
    assert!(
        flag(&args, "--idle-exit").is_none(),
        "--idle-exit with Restart=on-failure: an idle worker would leave for good"
    );
    let drain = flag(&args, "--drain-timeout").map_or(DEFAULT_DRAIN, |t| {
        duration_of("ExecStart --drain-timeout", t)
    });
    let stop = duration_of("TimeoutStopSec", one("TimeoutStopSec"));
    assert!(
        stop > drain,
        "TimeoutStopSec ({stop:?}) must be longer than --drain-timeout ({drain:?})"
    );

    // Every variable ExecStart uses, and the queue and table, come from the environment file,
    // whose example sets them.
    let env_file = one("EnvironmentFile");
    assert!(
        !env_file.starts_with('-'),
        "EnvironmentFile `{env_file}`: a missing file must stop the start"
    );
    let example = read(&dir.join("buildagent-worker.env"));
    let defined: BTreeSet<&str> = example
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
        .collect();
    let mut used: Vec<&str> = vec!["BUILDAGENT_QUEUE", "BUILDAGENT_TABLE"];
    let mut rest = exec;
    while let Some(start) = rest.find("${") {
        let end = rest[start..]
            .find('}')
            .unwrap_or_else(|| panic!("ExecStart: an unclosed `${{`"));
        used.push(&rest[start + 2..start + end]);
        rest = &rest[start + end..];
    }
    for name in used {
        assert!(
            defined.contains(name),
            "buildagent-worker.env does not set {name}"
        );
    }
}

#[test]
fn durations_read_as_the_worker_and_systemd_write_them() {
    assert_eq!(duration("30m"), Ok(Duration::from_secs(1800)));
    assert_eq!(duration("35min"), Ok(Duration::from_secs(2100)));
    assert_eq!(duration("1h30m"), Ok(Duration::from_secs(5400)));
    assert_eq!(duration("1h 30min"), Ok(Duration::from_secs(5400)));
    assert_eq!(duration("2100"), Ok(Duration::from_secs(2100)));
    assert_eq!(duration("90s"), Ok(Duration::from_secs(90)));
    assert_eq!(
        duration("5 fortnights"),
        Err("`5 fortnights`: unknown unit `fortnights`".to_string())
    );
    assert!(duration("").is_err());
    assert!(duration("m").is_err());
}
