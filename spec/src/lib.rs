//! Parse and validate buildspec files.
