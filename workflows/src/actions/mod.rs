//! The actions DR workflows are made of, each an implementation of
//! [`dr_orchestrator::Action`]: typed parameters (serde), one attempt per
//! `run`, a bounded output summary with secrets redacted, errors that say
//! what failed, where, and what the operator can do.

pub mod backup;
pub mod command;
pub mod http;
pub mod kube;
pub mod kubeadm;
pub mod output;
pub mod etcd;
pub mod ssh;
