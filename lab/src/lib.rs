//! The test bed of `dr`: a lab that behaves like the homelab of the DR guide,
//! used by the end-to-end tests and by the `dr-lab` binary (the demo and the
//! operator). Real components wherever this machine can run them (etcd with
//! TLS, sshd nodes, tar.gz backups), a faithful simulation where it cannot
//! (the Kubernetes API server in `kube`). Owns nothing outside a lab
//! directory and loopback addresses; ships in no production binary.

// The lab stands in for machines: it waits for them and reads the clock,
// which the engine's determinism lints forbid elsewhere.
#![allow(clippy::disallowed_methods)]

pub mod kube;
pub mod lab;
