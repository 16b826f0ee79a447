//! Operating-system calls, kept out of the executor's logic.
//!
//! Only Unix (and, for the process table and the subreaper, Linux) is supported today; a Windows
//! port would add `windows.rs` with the same function set.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::*;
