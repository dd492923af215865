//! End-to-end tests of the `dr` binary and its engine, as one test binary.

mod cli;
mod crash;
mod support;
