//! `dr serve`, the bastion service: the long-running owner of the store.
//!
//! - `journal.rs`: small durable records beside the store (one file each,
//!   written atomically and fsynced): the Alertmanager dedup state and the
//!   notification outbox.
//!
//! The daemon itself (open the store, resume what was running, serve the
//! control socket, stop on SIGTERM) is wired in `dr-cli`'s `serve` command.

pub mod journal;
