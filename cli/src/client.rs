//! The one client API every reading command uses, with two backends: the
//! store opened here (answered in-process by the same handler the control
//! socket uses), or the process that owns it (`dr serve`, or a foreground
//! `dr start`), asked over its socket. A command is written once, against
//! [`Client::ask`]; which backend answers is decided when the store is opened.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dr_orchestrator::control::{self, Mode, Request, Response};
use dr_state::{EventRecord, RunId, RunRecord};

use crate::{ask_owner, owner_driving, render, Access, Driving, Env};

/// A store, here or through its owner.
pub enum Client {
    Local(Env),
    Remote { dir: PathBuf, busy: dr_state::Error },
}

impl From<Access> for Client {
    fn from(access: Access) -> Self {
        match access {
            Access::Local(env) => Client::Local(env),
            Access::Remote { dir, busy } => Client::Remote { dir, busy },
        }
    }
}

impl Client {
    pub fn dir(&self) -> &Path {
        match self {
            Client::Local(env) => &env.dir,
            Client::Remote { dir, .. } => dir,
        }
    }

    pub fn is_remote(&self) -> bool {
        matches!(self, Client::Remote { .. })
    }

    /// One request, answered by whichever backend holds the store. An error
    /// answer becomes the error (with its exit code).
    pub async fn ask(&self, request: Request) -> anyhow::Result<Response> {
        let response = match self {
            Client::Local(env) => control::handle(&env.runner, request, Mode::Foreground).await,
            Client::Remote { dir, busy } => return ask_owner(dir, clone_busy(busy), &request),
        };
        match response {
            Response::Error { kind, message } => Err(crate::control_error(kind, message)),
            other => Ok(other),
        }
    }

    /// Which runs a process drives: none when the store is ours.
    pub fn driving(&self) -> Driving {
        match self {
            Client::Local(_) => Driving::nothing(),
            Client::Remote { dir, .. } => owner_driving(dir),
        }
    }

    /// Reads the histories of the runs shown (for step durations).
    pub async fn learn_histories(&self, runs: &[(RunRecord, dr_orchestrator::Rto)]) {
        for (run, _) in runs {
            if let Some(events) = self.history(run.id).await {
                render::know_history(run.id, events);
            }
        }
    }

    async fn history(&self, id: RunId) -> Option<Vec<EventRecord>> {
        match self {
            Client::Local(env) => env.runner.store().events(id).ok(),
            Client::Remote { dir, .. } => {
                match control::request(dir, &Request::History { query: id.to_string() }, Duration::from_secs(5)) {
                    Ok(Some(Response::Events(events))) => Some(events),
                    _ => None,
                }
            }
        }
    }
}

/// The store's "busy" error, kept for when the owner does not answer.
fn clone_busy(busy: &dr_state::Error) -> dr_state::Error {
    match busy {
        dr_state::Error::Busy { path, pid } => dr_state::Error::Busy { path: path.clone(), pid: *pid },
        _ => dr_state::Error::Busy { path: PathBuf::new(), pid: None },
    }
}
