//! The command action (in progress).
