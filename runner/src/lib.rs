//! The buildagent engine: runs a parsed buildspec with CodeBuild's semantics.
#![deny(missing_docs)]

pub mod command;
pub mod events;
pub mod executor;
pub mod mask;
mod os;
