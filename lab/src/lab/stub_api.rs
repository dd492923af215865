//! A stand-in for the lab control API (`/lab/v1/...`) that records every
//! request: lets the etcd/ssh/terraform parts of the lab be tested without the
//! simulated Kubernetes API server. Health is healthy until `cluster/wipe`,
//! and healthy again after `platform/deploy`. Keeps the Secrets of
//! `kube-system` (kubeadm's bootstrap tokens: create, get, list) and nothing
//! else of a cluster.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use serde_json::json;

use super::http::{HttpServer, Request, Response};

#[derive(Debug, Default)]
struct StubState {
    requests: Vec<Request>,
    healthy: bool,
    secrets: std::collections::BTreeMap<String, serde_json::Value>,
}

const SECRETS: &str = "/api/v1/namespaces/kube-system/secrets";

fn secrets(state: &mut StubState, request: &Request) -> Response {
    let name = request.path.strip_prefix(SECRETS).unwrap_or_default().trim_start_matches('/');
    match (request.method.as_str(), name) {
        ("POST", "") => match serde_json::from_str::<serde_json::Value>(&request.body) {
            Ok(secret) => {
                let name = secret.pointer("/metadata/name").and_then(serde_json::Value::as_str).unwrap_or_default().to_string();
                state.secrets.insert(name, secret.clone());
                Response::json(201, secret)
            }
            Err(e) => Response::json(400, json!({ "kind": "Status", "code": 400, "message": e.to_string() })),
        },
        ("GET", "") => Response::json(200, json!({ "kind": "SecretList", "items": state.secrets.values().collect::<Vec<_>>() })),
        ("GET", name) => match state.secrets.get(name) {
            Some(secret) => Response::json(200, secret.clone()),
            None => Response::json(404, json!({ "kind": "Status", "code": 404, "message": format!("secrets \"{name}\" not found") })),
        },
        _ => Response::json(405, json!({ "kind": "Status", "code": 405 })),
    }
}

/// The recording stub server.
#[derive(Debug)]
pub struct StubApi {
    server: HttpServer,
    state: Arc<Mutex<StubState>>,
}

impl StubApi {
    pub fn start() -> Result<Self> {
        let state = Arc::new(Mutex::new(StubState { requests: Vec::new(), healthy: true, secrets: Default::default() }));
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
                if request.path.starts_with(SECRETS) {
                    return secrets(&mut state, request);
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
