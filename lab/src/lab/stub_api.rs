//! A stand-in for the lab control API (`/lab/v1/...`) that records every
//! request: lets the etcd/ssh/terraform parts of the lab be tested without the
//! simulated Kubernetes API server. Health is healthy until `cluster/wipe`,
//! and healthy again after `platform/deploy`. Owns no cluster model.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use serde_json::json;

use super::http::{HttpServer, Request, Response};

#[derive(Debug, Default)]
struct StubState {
    requests: Vec<Request>,
    healthy: bool,
}

/// The recording stub server.
#[derive(Debug)]
pub struct StubApi {
    server: HttpServer,
    state: Arc<Mutex<StubState>>,
}

impl StubApi {
    pub fn start() -> Result<Self> {
        let state = Arc::new(Mutex::new(StubState { requests: Vec::new(), healthy: true }));
        let shared = state.clone();
        let server = HttpServer::start(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            Arc::new(move |request: &Request| {
                let mut state = match shared.lock() {
                    Ok(s) => s,
                    Err(poisoned) => poisoned.into_inner(),
                };
                if request.method == "GET" && request.path == "/lab/v1/health" {
                    return Response::json(200, json!({ "healthy": state.healthy }));
                }
                if !request.path.starts_with("/lab/v1/") {
                    return Response::json(404, json!({ "error": "not found" }));
                }
                match request.path.as_str() {
                    "/lab/v1/cluster/wipe" => state.healthy = false,
                    "/lab/v1/platform/deploy" => state.healthy = true,
                    _ => {}
                }
                state.requests.push(request.clone());
                Response::json(200, json!({ "ok": true }))
            }),
        )?;
        Ok(Self { server, state })
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Every control request received so far (health probes excluded).
    pub fn requests(&self) -> Vec<Request> {
        match self.state.lock() {
            Ok(s) => s.requests.clone(),
            Err(poisoned) => poisoned.into_inner().requests.clone(),
        }
    }

    pub fn set_healthy(&self, healthy: bool) {
        match self.state.lock() {
            Ok(mut s) => s.healthy = healthy,
            Err(poisoned) => poisoned.into_inner().healthy = healthy,
        }
    }
}
