//! A JSON Schema of the buildspec, for editors.
//!
//! Point an editor's YAML language server at the output of `buildagent schema` (for example
//! with a `# yaml-language-server: $schema=./buildspec.schema.json` comment) to get completion
//! and checking while typing. The schema follows the same rules as the parser: booleans accept
//! yes/no/true/false/on/off, a single string is accepted where a list is, and unknown keys are
//! allowed (the parser warns about them; the schema cannot tell typos from extensions).

use serde_json::{json, Value};

use crate::model::ReportFormat;

/// The JSON Schema (draft 2020-12) of a buildspec.
pub fn json_schema() -> Value {
    let boolean = json!({
        "description": "yes/no, true/false or on/off, in any case",
        "anyOf": [
            {"type": "boolean"},
            {"type": "string", "pattern": "^(?i)(yes|no|true|false|on|off)$"}
        ]
    });
    let strings = json!({
        "description": "a list of strings, or one string",
        "anyOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "string"}}
        ]
    });
    let commands = json!({
        "description": "commands run one at a time by the build's shell; a `: ` inside a command needs quotes",
        "anyOf": [
            {"type": "string"},
            {"type": "null"},
            {"type": "array", "items": {"type": ["string", "null"]}}
        ]
    });
    let scalar = json!({"type": ["string", "number", "boolean", "null"]});
    let variables = json!({
        "type": ["object", "null"],
        "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
        "additionalProperties": scalar
    });
    let artifact_set = json!({
        "type": "object",
        "properties": {
            "files": {"$ref": "#/$defs/strings"},
            "name": {"type": "string", "description": "expanded by the build's shell"},
            "discard-paths": {"$ref": "#/$defs/boolean"},
            "base-directory": {"type": "string", "description": "a directory or a glob of directories"},
            "exclude-paths": {"$ref": "#/$defs/strings"},
            "enable-symlinks": {"$ref": "#/$defs/boolean"},
            "s3-prefix": {"type": "string"},
            "type": {"type": "string", "description": "version 0.1 leftover, ignored"}
        }
    });
    let mut artifacts = artifact_set.clone();
    artifacts["properties"]["secondary-artifacts"] = json!({
        "type": ["object", "null"],
        "propertyNames": {"pattern": "^[A-Za-z0-9_]{1,127}$"},
        "additionalProperties": {"$ref": "#/$defs/artifactSet"}
    });
    let phase = json!({
        "type": ["object", "null"],
        "properties": {
            "run-as": {"type": "string"},
            "on-failure": {
                "type": "string",
                "pattern": "^(?i)(ABORT|CONTINUE|RETRY(-.*)?)$",
                "description": "ABORT, CONTINUE, RETRY, RETRY-<count>, RETRY-<regex> or RETRY-<count>-<regex>"
            },
            "commands": {"$ref": "#/$defs/commands"},
            "finally": {"$ref": "#/$defs/commands"}
        }
    });
    let mut install = phase.clone();
    install["properties"]["runtime-versions"] = json!({
        "type": "object",
        "additionalProperties": scalar
    });
    let batch_env = json!({
        "type": ["object", "null"],
        "properties": {
            "compute-type": {"type": "string"},
            "fleet": {"type": "string"},
            "image": {"type": "string"},
            "privileged-mode": {"$ref": "#/$defs/boolean"},
            "type": {"type": "string"},
            "variables": {"$ref": "#/$defs/variables"}
        }
    });
    let task = |graph: bool| {
        let mut t = json!({
            "type": "object",
            "required": ["identifier"],
            "properties": {
                "identifier": {"type": "string", "pattern": "^[A-Za-z0-9_]+$"},
                "buildspec": {"type": "string"},
                "debug-session": {"$ref": "#/$defs/boolean"},
                "ignore-failure": {"$ref": "#/$defs/boolean"},
                "env": {"$ref": "#/$defs/batchEnv"}
            }
        });
        if graph {
            t["properties"]["depend-on"] = json!({"$ref": "#/$defs/strings"});
        }
        json!({"type": "array", "items": t})
    };
    let formats: Vec<&str> = ReportFormat::ALL.iter().map(|f| f.as_str()).collect();
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://buildagent.invalid/buildspec.schema.json",
        "title": "AWS CodeBuild buildspec",
        "description": "A buildspec as buildagent reads it (versions 0.1 and 0.2).",
        "type": "object",
        "required": ["version"],
        "anyOf": [{"required": ["phases"]}, {"required": ["batch"]}],
        "properties": {
            "version": {"enum": [0.1, 0.2, "0.1", "0.2"]},
            "run-as": {"type": "string"},
            "env": {
                "type": ["object", "null"],
                "properties": {
                    "shell": {"enum": ["sh", "/bin/sh", "bash", "/bin/bash", "/usr/bin/bash", "powershell.exe", "powershell", "pwsh", "cmd.exe"]},
                    "variables": {"$ref": "#/$defs/variables"},
                    "parameter-store": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
                    "secrets-manager": {
                        "type": ["object", "null"],
                        "additionalProperties": {
                            "type": "string",
                            "description": "secret-id[:json-key[:version-stage[:version-id]]]"
                        }
                    },
                    "exported-variables": {"$ref": "#/$defs/strings"},
                    "git-credential-helper": {"$ref": "#/$defs/boolean"}
                }
            },
            "environment_variables": {
                "type": ["object", "null"],
                "description": "version 0.1 spelling of env.variables",
                "properties": {"plaintext": {"$ref": "#/$defs/variables"}}
            },
            "proxy": {
                "type": ["object", "null"],
                "properties": {
                    "upload-artifacts": {"$ref": "#/$defs/boolean"},
                    "logs": {"$ref": "#/$defs/boolean"}
                }
            },
            "batch": {
                "type": ["object", "null"],
                "properties": {
                    "fast-fail": {"$ref": "#/$defs/boolean"},
                    "build-list": task(false),
                    "build-graph": task(true),
                    "build-matrix": {
                        "type": "object",
                        "properties": {
                            "static": {
                                "type": "object",
                                "properties": {
                                    "ignore-failure": {"$ref": "#/$defs/boolean"},
                                    "env": {"$ref": "#/$defs/batchEnv"}
                                }
                            },
                            "dynamic": {
                                "type": "object",
                                "properties": {
                                    "buildspec": {"$ref": "#/$defs/strings"},
                                    "env": {
                                        "type": "object",
                                        "properties": {
                                            "compute-type": {"$ref": "#/$defs/strings"},
                                            "image": {"$ref": "#/$defs/strings"},
                                            "variables": {
                                                "type": "object",
                                                "additionalProperties": {"$ref": "#/$defs/strings"}
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    },
                    "build-fanout": {
                        "type": "object",
                        "required": ["parallelism"],
                        "properties": {
                            "parallelism": {"type": "integer", "minimum": 1},
                            "ignore-failure": {"$ref": "#/$defs/boolean"}
                        }
                    }
                }
            },
            "phases": {
                "type": "object",
                "properties": {
                    "install": install,
                    "pre_build": phase,
                    "build": phase,
                    "post_build": phase
                },
                "additionalProperties": false
            },
            "reports": {
                "type": ["object", "null"],
                "additionalProperties": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {"$ref": "#/$defs/strings"},
                        "base-directory": {"type": "string"},
                        "discard-paths": {"$ref": "#/$defs/boolean"},
                        "file-format": {
                            "type": "string",
                            "description": format!("one of {} (any case)", formats.join(", "))
                        }
                    }
                }
            },
            "artifacts": artifacts,
            "cache": {
                "type": ["object", "null"],
                "properties": {
                    "paths": {"$ref": "#/$defs/strings"},
                    "key": {"type": "string", "description": "expanded by the build's shell"},
                    "fallback-keys": {
                        "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 5}]
                    },
                    "action": {"enum": ["restore", "save"]}
                }
            }
        },
        "$defs": {
            "boolean": boolean,
            "strings": strings,
            "commands": commands,
            "variables": variables,
            "artifactSet": artifact_set,
            "batchEnv": batch_env
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_resolves() {
        let schema = json_schema();
        let text = schema.to_string();
        for piece in text.split("\"$ref\":\"#/$defs/").skip(1) {
            let name = piece.split('"').next().unwrap();
            assert!(schema["$defs"].get(name).is_some(), "missing $defs/{name}");
        }
    }

    #[test]
    fn phases_are_closed_and_install_alone_has_runtime_versions() {
        let schema = json_schema();
        let phases = &schema["properties"]["phases"];
        assert_eq!(phases["additionalProperties"], json!(false));
        assert!(phases["properties"]["install"]["properties"]["runtime-versions"].is_object());
        assert!(phases["properties"]["build"]["properties"]
            .get("runtime-versions")
            .is_none());
    }
}
