//! The fleet's commands (see `buildagent_fleet`).

pub mod worker;
