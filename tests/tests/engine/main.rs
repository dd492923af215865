//! End-to-end tests of the `dr` binary and its engine, as one test binary.

// Tests wait for processes and read the clock; their helpers may unwrap.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

mod cli;
mod config;
mod crash;
mod model;
mod package;
mod powercut;
mod recoveries;
mod report;
mod serve;
mod store;
mod support;
