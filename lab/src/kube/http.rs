//! The HTTP surface: discovery, the one generic resource handler (get, list,
//! watch, create, update, patch, delete, deletecollection, eviction), Table
//! rendering for kubectl, and the `/lab/v1` control routes. Owns request
//! parsing and response shapes; behaviour lives in the store, controllers and
//! lab modules.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, watch};

use super::controllers::{pdb_budget, pod_ready};
use super::resources::{self as r, ResourceType};
use super::select::{json_patch, merge_patch, selector_object_matches, FieldSelector, LabelSelector};
use super::store::{labels, meta, ApiError, Change, ChangeType};
use super::{lab, proto, table, Shared};

#[derive(Clone)]
struct AppState {
    shared: Shared,
    addr: SocketAddr,
    stop: watch::Receiver<bool>,
}

/// Serve until `shutdown` fires; open watches end then too. Each connection is plain HTTP or,
/// when `tls` is given and the client opens with a TLS handshake, HTTPS: one port serves both
/// (kubeconfig clients over TLS, the lab's `curl` over plain HTTP).
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Shared,
    addr: SocketAddr,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let state = AppState { shared, addr, stop: stop_rx.clone() };
    let app = Router::new().fallback(handle).with_state(state);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let app = app.clone();
                let acceptor = acceptor.clone();
                let stop = stop_rx.clone();
                tokio::spawn(async move {
                    let mut first = [0u8; 1];
                    let handshake = matches!(stream.peek(&mut first).await, Ok(1) if first[0] == 0x16);
                    match (handshake, acceptor) {
                        (true, Some(acceptor)) => {
                            if let Ok(tls_stream) = acceptor.accept(stream).await {
                                serve_connection(hyper_util::rt::TokioIo::new(tls_stream), app, stop).await;
                            }
                        }
                        _ => serve_connection(hyper_util::rt::TokioIo::new(stream), app, stop).await,
                    }
                });
            }
        }
    }
    let _ = stop_tx.send(true);
}

async fn serve_connection<I>(io: I, app: Router, mut stop: watch::Receiver<bool>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    let conn = builder.serve_connection(io, service);
    tokio::select! {
        _ = conn => {}
        _ = stop.changed() => {}
    }
}

fn json_response(code: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.status())
}

fn ok(v: &Value) -> Response {
    json_response(200, v)
}

struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    fn parse(uri: &Uri) -> Self {
        let pairs = uri.query().and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok()).unwrap_or_default();
        Self { pairs }
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
    }
    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("1" | "true"))
    }
}

async fn handle(State(st): State<AppState>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    if std::env::var_os("DR_LAB_KUBE_TRACE").is_some() {
        eprintln!("dr-lab-kube: {method} {uri} content-type={:?} accept={:?}", headers.get(header::CONTENT_TYPE), headers.get(header::ACCEPT));
    }
    let path = uri.path().trim_end_matches('/').to_string();
    let query = Query::parse(&uri);
    if let Some(rest) = path.strip_prefix("/lab/v1/") {
        return lab_route(&st, &method, rest, &body).await;
    }
    match path.as_str() {
        "/healthz" | "/readyz" | "/livez" => {
            if !st.shared.lock().sim.api_up {
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
            let etcd = st.shared.persist.begin().await.ensure(&st.shared).await;
            return match etcd {
                Ok(()) => (StatusCode::OK, "ok").into_response(),
                Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, format!("[-]etcd failed: reason withheld\n{} check failed\n", path.trim_start_matches('/'))).into_response(),
            };
        }
        _ => {}
    }
    if !st.shared.lock().sim.api_up {
        return error_response(&ApiError::new(503, "ServiceUnavailable", "the server is currently unable to handle the request"));
    }
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (method.clone(), segs.as_slice()) {
        (Method::GET, ["version"]) => return ok(&r::version_doc()),
        (Method::GET, ["api"]) => return ok(&r::api_versions(&st.addr.to_string())),
        (Method::GET, ["apis"]) => return ok(&r::api_group_list()),
        (Method::GET, ["api", v]) => {
            return r::resource_list("", v).map_or_else(|| error_response(&ApiError::new(404, "NotFound", "not found")), |l| ok(&l));
        }
        (Method::GET, ["apis", g]) => {
            return r::api_group(g).map_or_else(|| error_response(&ApiError::new(404, "NotFound", "not found")), |l| ok(&l));
        }
        (Method::GET, ["openapi", "v3"]) => return ok(&r::openapi_v3_root()),
        (Method::GET, ["openapi", "v3", "api", v]) => {
            return r::openapi_v3_group("", v).map_or_else(|| error_response(&ApiError::new(404, "NotFound", "not found")), |d| ok(&d));
        }
        (Method::GET, ["openapi", "v3", "apis", g, v]) => {
            return r::openapi_v3_group(g, v).map_or_else(|| error_response(&ApiError::new(404, "NotFound", "not found")), |d| ok(&d));
        }
        (Method::GET, ["apis", g, v]) => {
            return r::resource_list(g, v).map_or_else(|| error_response(&ApiError::new(404, "NotFound", "not found")), |l| ok(&l));
        }
        _ => {}
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return error_response(&ApiError::new(404, "NotFound", format!("the server could not find the requested resource ({path})"))),
    };
    let (ns, plural, name, sub) = match rest {
        ["namespaces", ns, plural, tail @ ..] if r::lookup(group, version, plural).is_some_and(|t| t.namespaced) => {
            (Some(ns.to_string()), *plural, tail.first().map(|s| s.to_string()), tail.get(1).map(|s| s.to_string()))
        }
        [plural, tail @ ..] => (None, *plural, tail.first().map(|s| s.to_string()), tail.get(1).map(|s| s.to_string())),
        [] => return error_response(&ApiError::new(404, "NotFound", "not found")),
    };
    let Some(rt) = r::lookup(group, version, plural) else {
        return error_response(&ApiError::new(404, "NotFound", format!("the server could not find the requested resource ({path})")));
    };
    if rt.namespaced && name.is_some() && ns.is_none() {
        return error_response(&ApiError::new(404, "NotFound", "the server could not find the requested resource"));
    }
    let ns_str = ns.clone().unwrap_or_default();
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let mut body = body;
    let mut content_type = content_type;
    if content_type.starts_with("application/vnd.kubernetes.protobuf") {
        if let Some(decoded) = proto::decode(&body) {
            body = Bytes::from(decoded.to_string());
            content_type = "application/json".to_string();
        }
    }
    if content_type.starts_with("application/vnd.kubernetes.protobuf") {
        return error_response(&ApiError::new(415, "UnsupportedMediaType", "the body of the request was in an unknown format - accepted media types include: application/json, application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml"));
    }
    // Every resource request reads or writes etcd: it must answer, and what a request changed is
    // written there before the answer (see `persist.rs`).
    let mut io = st.shared.persist.begin().await;
    if let Err(e) = io.ensure(&st.shared).await {
        return error_response(&e);
    }
    let writes = !matches!(method, Method::GET | Method::HEAD);
    let result = match (method, name, sub.as_deref()) {
        (Method::GET, None, _) if query.flag("watch") => {
            drop(io);
            return watch_handler(&st, rt, ns, &query, wants_table(&accept));
        }
        (Method::GET, None, _) => list(&st, &rt, ns.as_deref(), &query, &accept),
        (Method::GET | Method::PUT | Method::PATCH, Some(n), Some("scale")) => scale(&st, &rt, &ns_str, &n, &body),
        (Method::GET, Some(n), _) => get(&st, &rt, &ns_str, &n, &query, &accept),
        (Method::POST, None, _) => create(&st, &rt, &ns_str, &body),
        (Method::POST, Some(n), Some("eviction")) if rt == r::PODS => evict(&st, &ns_str, &n),
        (Method::PUT, Some(n), sub) => update(&st, &rt, &ns_str, &n, sub == Some("status"), &body),
        (Method::PATCH, Some(n), sub) => patch(&st, &rt, &ns_str, &n, sub == Some("status"), &content_type, &body),
        (Method::DELETE, Some(n), None) => delete(&st, &rt, &ns_str, &n),
        (Method::DELETE, None, None) => delete_collection(&st, &rt, ns.as_deref(), &query),
        _ => Err(ApiError::new(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")),
    };
    if writes {
        if let Err(e) = io.flush(&st.shared).await {
            return error_response(&e);
        }
    }
    drop(io);
    match result {
        Ok((code, v)) => json_response(code, &v),
        Err(e) => error_response(&e),
    }
}

async fn lab_route(st: &AppState, method: &Method, rest: &str, body: &Bytes) -> Response {
    let route = rest.trim_matches('/');
    let mut io = st.shared.persist.begin().await;
    // Health reports etcd too; routes that read or write the cluster's objects need etcd.
    let etcd = io.ensure(&st.shared).await;
    if *method == Method::GET && route == "health" {
        return ok(&lab::health(&st.shared.lock()));
    }
    if let (true, Err(e)) = (lab::needs_etcd(route), etcd) {
        return error_response(&e);
    }
    if *method == Method::GET && route == "cluster/state" {
        return ok(&lab::state(&st.shared.lock()));
    }
    if *method != Method::POST {
        return error_response(&ApiError::new(405, "MethodNotAllowed", "lab routes take POST (GET only for health and cluster/state)"));
    }
    let body: Value = if body.is_empty() { json!({}) } else { serde_json::from_slice(body).unwrap_or(json!({})) };
    let result = lab::control(&mut st.shared.lock(), rest, &body);
    st.shared.changed.notify_one();
    if lab::needs_etcd(route) {
        if let Err(e) = io.flush(&st.shared).await {
            return error_response(&e);
        }
    }
    drop(io);
    match result {
        Ok(v) => ok(&v),
        Err(e) => error_response(&e),
    }
}

type HandlerResult = Result<(u16, Value), ApiError>;

fn selectors(query: &Query) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let l = LabelSelector::parse(query.get("labelSelector").unwrap_or_default()).map_err(ApiError::bad_request)?;
    let f = FieldSelector::parse(query.get("fieldSelector").unwrap_or_default()).map_err(ApiError::bad_request)?;
    Ok((l, f))
}

fn wants_table(accept: &str) -> bool {
    accept.split(',').next().is_some_and(|first| first.contains("as=Table"))
}

fn list(st: &AppState, rt: &ResourceType, ns: Option<&str>, query: &Query, accept: &str) -> HandlerResult {
    let (l, f) = selectors(query)?;
    let world = st.shared.lock();
    let items: Vec<Value> = world.store.list(rt, ns).into_iter().filter(|o| l.matches(o) && f.matches(o)).collect();
    let rv = world.store.resource_version().to_string();
    if wants_table(accept) {
        return Ok((200, table::table(rt, &items, &rv, query.get("includeObject") == Some("Object"))));
    }
    Ok((200, json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": {"resourceVersion": rv}, "items": items})))
}

fn get(st: &AppState, rt: &ResourceType, ns: &str, name: &str, query: &Query, accept: &str) -> HandlerResult {
    let world = st.shared.lock();
    let obj = world.store.get(rt, ns, name).cloned().ok_or_else(|| ApiError::not_found(rt, name))?;
    if wants_table(accept) {
        let rv = world.store.resource_version().to_string();
        return Ok((200, table::table(rt, &[obj], &rv, query.get("includeObject") == Some("Object"))));
    }
    Ok((200, obj))
}

/// The `scale` subresource (autoscaling/v1 Scale) of deployments, replicasets and statefulsets: GET, and
/// PUT/PATCH whose body carries `spec.replicas`.
fn scale(st: &AppState, rt: &ResourceType, ns: &str, name: &str, body: &Bytes) -> HandlerResult {
    if ![r::DEPLOYMENTS, r::REPLICASETS, r::STATEFULSETS].contains(rt) {
        return Err(ApiError::new(404, "NotFound", format!("{} has no scale subresource", rt.plural)));
    }
    let mut world = st.shared.lock();
    let mut obj = world.store.get(rt, ns, name).cloned().ok_or_else(|| ApiError::not_found(rt, name))?;
    if !body.is_empty() {
        let want = parse_body(body)?;
        if let Some(replicas) = want.pointer("/spec/replicas").and_then(Value::as_i64) {
            obj = world.store.modify(rt, ns, name, |o| o["spec"]["replicas"] = json!(replicas)).ok_or_else(|| ApiError::not_found(rt, name))?;
        }
    }
    let selector: Vec<String> = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect())
        .unwrap_or_default();
    Ok((200, json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": name, "namespace": ns, "uid": meta(&obj, "uid"), "resourceVersion": meta(&obj, "resourceVersion"),
                     "creationTimestamp": meta(&obj, "creationTimestamp")},
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {"replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)), "selector": selector.join(",")}
    })))
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("cannot decode the request body as JSON: {e}")))
}

fn create(st: &AppState, rt: &ResourceType, ns: &str, body: &Bytes) -> HandlerResult {
    let obj = parse_body(body)?;
    let body_ns = meta(&obj, "namespace");
    if rt.namespaced && !body_ns.is_empty() && body_ns != ns {
        return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
    }
    let mut world = st.shared.lock();
    let created = world.store.create(rt, ns, obj)?;
    Ok((201, created))
}

fn keep_status(rt: &ResourceType, old: &Value, new: &mut Value, status_only: bool) {
    if status_only {
        let status = new.get("status").cloned();
        *new = old.clone();
        match status {
            Some(s) => new["status"] = s,
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    } else if rt.status_subresource {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
}

fn update(st: &AppState, rt: &ResourceType, ns: &str, name: &str, status_only: bool, body: &Bytes) -> HandlerResult {
    let mut obj = parse_body(body)?;
    let mut world = st.shared.lock();
    let old = world.store.get(rt, ns, name).cloned().ok_or_else(|| ApiError::not_found(rt, name))?;
    let body_rv = meta(&obj, "resourceVersion");
    keep_status(rt, &old, &mut obj, status_only);
    if status_only {
        obj["metadata"]["resourceVersion"] = json!(body_rv);
    }
    Ok((200, world.store.update(rt, ns, name, obj, true)?))
}

#[allow(clippy::too_many_arguments)]
fn patch(st: &AppState, rt: &ResourceType, ns: &str, name: &str, status_only: bool, content_type: &str, body: &Bytes) -> HandlerResult {
    let patch = parse_body(body)?;
    let kind = content_type.split(';').next().unwrap_or_default().trim();
    let mut world = st.shared.lock();
    let old = match world.store.get(rt, ns, name).cloned() {
        Some(o) => o,
        None if kind == "application/apply-patch+yaml" => {
            let created = world.store.create(rt, ns, patch)?;
            return Ok((201, created));
        }
        None => return Err(ApiError::not_found(rt, name)),
    };
    let mut new = old.clone();
    match kind {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" | "application/apply-patch+yaml" => {
            merge_patch(&mut new, &patch);
        }
        "application/json-patch+json" => json_patch(&mut new, &patch).map_err(|m| ApiError::invalid(rt, name, m))?,
        other => return Err(ApiError::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"))),
    }
    keep_status(rt, &old, &mut new, status_only);
    if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    if !new.get("metadata").is_some_and(Value::is_object) || meta(&new, "name") != name {
        return Err(ApiError::invalid(rt, name, "metadata.name: Invalid value: the patch may not change the name"));
    }
    Ok((200, world.store.update(rt, ns, name, new, false)?))
}

fn delete_one(world: &mut super::World, rt: &ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
    let old = world.store.delete(rt, ns, name)?;
    if *rt == r::NAMESPACES {
        for t in r::ALL.iter().filter(|t| t.namespaced) {
            for o in world.store.list(t, Some(name)) {
                let _ = world.store.delete(t, name, &meta(&o, "name"));
            }
        }
    }
    Ok(old)
}

fn delete(st: &AppState, rt: &ResourceType, ns: &str, name: &str) -> HandlerResult {
    let mut world = st.shared.lock();
    Ok((200, delete_one(&mut world, rt, ns, name)?))
}

fn delete_collection(st: &AppState, rt: &ResourceType, ns: Option<&str>, query: &Query) -> HandlerResult {
    let (l, f) = selectors(query)?;
    let mut world = st.shared.lock();
    let doomed: Vec<Value> = world.store.list(rt, ns).into_iter().filter(|o| l.matches(o) && f.matches(o)).collect();
    let mut items = Vec::new();
    for o in doomed {
        if let Ok(d) = delete_one(&mut world, rt, &meta(&o, "namespace"), &meta(&o, "name")) {
            items.push(d);
        }
    }
    let rv = world.store.resource_version().to_string();
    Ok((200, json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": {"resourceVersion": rv}, "items": items})))
}

fn evict(st: &AppState, ns: &str, name: &str) -> HandlerResult {
    let mut world = st.shared.lock();
    let pod = world.store.get(&r::PODS, ns, name).cloned().ok_or_else(|| ApiError::not_found(&r::PODS, name))?;
    if pod_ready(&pod) {
        for pdb in world.store.list(&r::PDBS, Some(ns)) {
            let selector = pdb.pointer("/spec/selector").cloned().unwrap_or(json!({}));
            if !selector_object_matches(&selector, &labels(&pod)) {
                continue;
            }
            let (_, healthy, desired, allowed) = pdb_budget(&world, &pdb);
            if allowed <= 0 {
                let pdb_name = meta(&pdb, "name");
                let mut e = ApiError::new(429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget.");
                e.details = Some(json!({"causes": [{"reason": "DisruptionBudget",
                    "message": format!("The disruption budget {pdb_name} needs {desired} healthy pods and has {healthy} currently")}]}));
                return Err(e);
            }
        }
    }
    world.store.delete(&r::PODS, ns, name)?;
    Ok((201, json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})))
}

struct WatchFilter {
    type_key: String,
    ns: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl WatchFilter {
    fn matches(&self, obj: &Value) -> bool {
        self.ns.as_ref().is_none_or(|ns| meta(obj, "namespace") == *ns) && self.labels.matches(obj) && self.fields.matches(obj)
    }
    /// The event a watcher sees for a change, if any.
    fn event(&self, c: &Change) -> Option<Value> {
        if c.type_key != self.type_key {
            return None;
        }
        let new_ok = self.matches(&c.new);
        let old_ok = c.old.as_ref().is_some_and(|o| self.matches(o));
        let kind = match (c.change, old_ok, new_ok) {
            (ChangeType::Modified, true, true) => "MODIFIED",
            (ChangeType::Modified, false, true) => "ADDED",
            (ChangeType::Modified, true, false) => "DELETED",
            (ChangeType::Modified, false, false) => return None,
            (t, _, true) => t.as_str(),
            (_, _, false) => return None,
        };
        Some(json!({"type": kind, "object": c.new}))
    }
}

fn line(v: &Value) -> Result<Bytes, Infallible> {
    let mut s = v.to_string();
    s.push('\n');
    Ok(Bytes::from(s))
}

fn gone(rv: u64, oldest: u64) -> Value {
    json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("too old resource version: {rv} ({oldest})"), "reason": "Expired", "code": 410}})
}

fn watch_handler(st: &AppState, rt: ResourceType, ns: Option<String>, query: &Query, as_table: bool) -> Response {
    let (labels, fields) = match selectors(query) {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    let filter = WatchFilter { type_key: rt.key(), ns, labels, fields };
    let rv: Option<u64> = query.get("resourceVersion").filter(|s| !s.is_empty()).and_then(|s| s.parse().ok());
    let send_initial = query.flag("sendInitialEvents");
    let bookmarks = query.flag("allowWatchBookmarks");
    let timeout = query.get("timeoutSeconds").and_then(|s| s.parse::<u64>().ok()).map_or(Duration::from_secs(1800), Duration::from_secs);
    let bookmark = move |rv: u64, initial_end: bool| {
        let mut m = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            m["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        json!({"type": "BOOKMARK", "object": {"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": m}})
    };
    let (initial, mut rx, mut expired, snapshot_rv) = {
        let world = st.shared.lock();
        let rx = world.store.subscribe();
        let current = world.store.resource_version();
        let mut initial = Vec::new();
        let mut expired = false;
        match rv {
            Some(n) if n > 0 && !send_initial => match world.store.changes_since(n) {
                Some(changes) => initial.extend(changes.iter().filter_map(|c| filter.event(c))),
                None => {
                    initial.push(gone(n, current));
                    expired = true;
                }
            },
            _ => {
                for o in world.store.list(&rt, filter.ns.as_deref()) {
                    if filter.matches(&o) {
                        initial.push(json!({"type": "ADDED", "object": o}));
                    }
                }
                if send_initial {
                    initial.push(bookmark(current, true));
                }
            }
        }
        (initial, rx, expired, current)
    };
    // `kubectl get -w` asks for Table rows: each event then carries a one-row Table.
    let include_object = query.get("includeObject") == Some("Object");
    let render = move |ev: &Value| -> Result<Bytes, Infallible> {
        match (as_table, ev["type"].as_str()) {
            (true, Some("ADDED" | "MODIFIED" | "DELETED")) => {
                let rv = meta(&ev["object"], "resourceVersion");
                line(&json!({"type": ev["type"], "object": table::table(&rt, std::slice::from_ref(&ev["object"]), &rv, include_object)}))
            }
            _ => line(ev),
        }
    };
    let (tx, out_rx) = mpsc::channel::<Result<Bytes, Infallible>>(1024);
    let mut stop = st.stop.clone();
    let shared = st.shared.clone();
    tokio::spawn(async move {
        for ev in &initial {
            if tx.send(render(ev)).await.is_err() {
                return;
            }
        }
        if expired {
            return;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = &mut deadline => break,
                _ = stop.changed() => break,
                () = tx.closed() => break,
                _ = ticker.tick(), if bookmarks => {
                    let rv = shared.lock().store.resource_version();
                    if tx.send(line(&bookmark(rv, false))).await.is_err() { break; }
                }
                msg = rx.recv() => match msg {
                    Ok(change) => {
                        if change.rv <= snapshot_rv { continue; }
                        if let Some(ev) = filter.event(&change) {
                            if tx.send(render(&ev)).await.is_err() { break; }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        expired = true;
                        let rv = shared.lock().store.resource_version();
                        let _ = tx.send(line(&gone(snapshot_rv, rv))).await;
                        break;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        }
        let _ = expired;
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(out_rx);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
