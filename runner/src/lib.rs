//! The buildagent engine: runs a parsed buildspec with CodeBuild's semantics.
#![deny(missing_docs)]

pub mod events;
pub mod mask;
