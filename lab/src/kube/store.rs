//! The object store behind the simulated API server: every object as a
//! `serde_json::Value`, keyed by (resource type, namespace, name), one global
//! resourceVersion counter, and a bounded history of changes that watches
//! replay. Owns metadata bookkeeping (uid, resourceVersion, generation,
//! creationTimestamp); refuses any controller behaviour.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{json, Map, Value};
use tokio::sync::{broadcast, Notify};

use super::resources::{ResourceType, NAMESPACES};

/// An API error, rendered as a `Status` object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: u16,
    pub reason: String,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self { code, reason: reason.to_string(), message: message.into(), details: None }
    }
    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        let mut e = Self::new(404, "NotFound", format!("{} \"{name}\" not found", qualified(rt)));
        e.details = Some(json!({"name": name, "group": rt.group, "kind": rt.plural}));
        e
    }
    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        let mut e = Self::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", qualified(rt)));
        e.details = Some(json!({"name": name, "group": rt.group, "kind": rt.plural}));
        e
    }
    pub fn conflict(rt: &ResourceType, name: &str) -> Self {
        let mut e = Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                qualified(rt)
            ),
        );
        e.details = Some(json!({"name": name, "group": rt.group, "kind": rt.plural}));
        e
    }
    pub fn invalid(rt: &ResourceType, name: &str, message: impl Into<String>) -> Self {
        let mut e = Self::new(422, "Invalid", format!("{} \"{name}\" is invalid: {}", rt.kind, message.into()));
        e.details = Some(json!({"name": name, "group": rt.group, "kind": rt.kind}));
        e
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }
    /// The `Status` object.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

fn qualified(rt: &ResourceType) -> String {
    if rt.group.is_empty() {
        rt.plural.to_string()
    } else {
        format!("{}.{}", rt.plural, rt.group)
    }
}

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

impl ChangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One recorded change, as a watch sees it.
#[derive(Debug, Clone)]
pub struct Change {
    pub rv: u64,
    pub change: ChangeType,
    pub type_key: String,
    pub old: Option<Value>,
    pub new: Value,
}

/// Current time as Kubernetes writes it.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

type ObjKey = (String, String);

/// The object store.
#[derive(Debug)]
pub struct Store {
    rv: u64,
    counter: u64,
    objects: BTreeMap<String, BTreeMap<ObjKey, Value>>,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    tx: broadcast::Sender<Arc<Change>>,
    changed: Arc<Notify>,
    /// Changes not yet written to etcd, while the store is kept there (`persist.rs`).
    pending: Option<Vec<Arc<Change>>>,
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str).unwrap_or_default()
}

/// The object without the fields that change on every write.
fn comparable(obj: &Value) -> Value {
    let mut c = obj.clone();
    if let Some(m) = c.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("managedFields");
        m.remove("generation");
    }
    c
}

fn spec_part(obj: &Value) -> Value {
    let mut c = obj.clone();
    if let Some(m) = c.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    c
}

impl Store {
    pub fn new(history_limit: usize, changed: Arc<Notify>) -> Self {
        let (tx, _) = broadcast::channel(4096);
        Self { rv: 1, counter: 0, objects: BTreeMap::new(), history: VecDeque::new(), history_limit, tx, changed, pending: None }
    }

    /// From now on, collect every change for etcd ([`Store::take_pending`]); the objects already
    /// held are the first pending changes.
    pub(crate) fn start_persisting(&mut self) {
        let all: Vec<Arc<Change>> = self
            .dump()
            .into_iter()
            .map(|(type_key, obj)| Arc::new(Change { rv: self.rv, change: ChangeType::Added, type_key, old: None, new: obj }))
            .collect();
        self.pending = Some(all);
    }

    /// The changes not yet written to etcd (empty when the store is not kept there).
    pub(crate) fn take_pending(&mut self) -> Vec<Arc<Change>> {
        self.pending.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// A fresh counter value (for uids, names, IPs).
    pub fn next_counter(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.tx.subscribe()
    }

    /// Changes after `rv`, or `None` when the history no longer reaches back that far.
    pub fn changes_since(&self, rv: u64) -> Option<Vec<Arc<Change>>> {
        if rv >= self.rv {
            return Some(Vec::new());
        }
        match self.history.front() {
            Some(first) if first.rv > rv + 1 => None,
            None => None,
            _ => Some(self.history.iter().filter(|c| c.rv > rv).cloned().collect()),
        }
    }

    fn record(&mut self, change: ChangeType, type_key: &str, old: Option<Value>, new: Value) {
        let c = Arc::new(Change { rv: self.rv, change, type_key: type_key.to_string(), old, new });
        self.history.push_back(c.clone());
        while self.history.len() > self.history_limit {
            self.history.pop_front();
        }
        if let Some(pending) = self.pending.as_mut() {
            pending.push(c.clone());
        }
        let _ = self.tx.send(c);
        self.changed.notify_one();
    }

    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(&rt.key())?.get(&(ns.to_string(), name.to_string()))
    }

    /// Objects of a type, in one namespace or (`None`) all.
    pub fn list(&self, rt: &ResourceType, ns: Option<&str>) -> Vec<Value> {
        self.objects
            .get(&rt.key())
            .map(|m| m.iter().filter(|((n, _), _)| ns.is_none_or(|want| want == n)).map(|(_, v)| v.clone()).collect())
            .unwrap_or_default()
    }

    /// Whether any object with this uid exists.
    pub fn uid_exists(&self, uid: &str) -> bool {
        self.objects.values().any(|m| m.values().any(|o| meta_str(o, "uid") == uid))
    }

    /// All uids in the store.
    pub fn all_uids(&self) -> std::collections::HashSet<String> {
        self.objects.values().flat_map(|m| m.values().map(|o| meta_str(o, "uid").to_string())).collect()
    }

    /// Create an object; fills uid, resourceVersion, creationTimestamp, generation, apiVersion, kind.
    pub fn create(&mut self, rt: &ResourceType, ns: &str, mut obj: Value) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request("the body of the request was not an object"));
        }
        if !obj.get("metadata").is_some_and(Value::is_object) {
            obj["metadata"] = json!({});
        }
        let mut name = meta_str(&obj, "name").to_string();
        if name.is_empty() {
            let generate = meta_str(&obj, "generateName").to_string();
            if generate.is_empty() {
                return Err(ApiError::invalid(rt, "", "metadata.name: Required value: name or generateName is required"));
            }
            name = format!("{generate}{}", suffix(self.next_counter()));
        }
        if rt.namespaced && ns.is_empty() {
            return Err(ApiError::bad_request("the namespace of the object is required"));
        }
        if rt.namespaced && self.get(&NAMESPACES, "", ns).is_none() {
            return Err(ApiError::not_found(&NAMESPACES, ns));
        }
        if self.get(rt, ns, &name).is_some() {
            return Err(ApiError::already_exists(rt, &name));
        }
        self.rv += 1;
        let uid = uid(self.next_counter());
        obj["apiVersion"] = json!(rt.api_version());
        obj["kind"] = json!(rt.kind);
        let meta = obj["metadata"].as_object_mut().ok_or_else(|| ApiError::bad_request("metadata is not an object"))?;
        meta.insert("name".into(), json!(name));
        if rt.namespaced {
            meta.insert("namespace".into(), json!(ns));
        } else {
            meta.remove("namespace");
        }
        meta.insert("uid".into(), json!(uid));
        meta.insert("resourceVersion".into(), json!(self.rv.to_string()));
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
        meta.insert("generation".into(), json!(1));
        meta.remove("generateName");
        meta.remove("deletionTimestamp");
        let ns_key = if rt.namespaced { ns.to_string() } else { String::new() };
        self.objects.entry(rt.key()).or_default().insert((ns_key, name), obj.clone());
        self.record(ChangeType::Added, &rt.key(), None, obj.clone());
        Ok(obj)
    }

    /// Replace an object. With `check_rv`, a body resourceVersion other than the current one is a
    /// conflict. A write that changes nothing keeps the resourceVersion and records no change.
    pub fn update(&mut self, rt: &ResourceType, ns: &str, name: &str, mut obj: Value, check_rv: bool) -> Result<Value, ApiError> {
        let ns_key = if rt.namespaced { ns.to_string() } else { String::new() };
        let old = self.get(rt, &ns_key, name).cloned().ok_or_else(|| ApiError::not_found(rt, name))?;
        if !obj.is_object() {
            return Err(ApiError::bad_request("the body of the request was not an object"));
        }
        if !obj.get("metadata").is_some_and(Value::is_object) {
            obj["metadata"] = json!({});
        }
        let body_name = meta_str(&obj, "name");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!("the name of the object ({body_name}) does not match the name on the URL ({name})")));
        }
        let body_rv = meta_str(&obj, "resourceVersion");
        if check_rv && !body_rv.is_empty() && body_rv != meta_str(&old, "resourceVersion") {
            return Err(ApiError::conflict(rt, name));
        }
        obj["apiVersion"] = json!(rt.api_version());
        obj["kind"] = json!(rt.kind);
        let old_meta = old["metadata"].clone();
        let generation = old_meta.get("generation").and_then(Value::as_i64).unwrap_or(1);
        let bump = spec_part(&old) != spec_part(&obj);
        if let Some(meta) = obj["metadata"].as_object_mut() {
            meta.insert("name".into(), json!(name));
            if rt.namespaced {
                meta.insert("namespace".into(), json!(ns));
            }
            for f in ["uid", "creationTimestamp"] {
                if let Some(v) = old_meta.get(f) {
                    meta.insert(f.into(), v.clone());
                }
            }
            meta.insert("generation".into(), json!(if bump { generation + 1 } else { generation }));
            meta.insert("resourceVersion".into(), old_meta.get("resourceVersion").cloned().unwrap_or(Value::Null));
        }
        if comparable(&obj) == comparable(&old) {
            return Ok(old);
        }
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects.entry(rt.key()).or_default().insert((ns_key, name.to_string()), obj.clone());
        self.record(ChangeType::Modified, &rt.key(), Some(old), obj.clone());
        Ok(obj)
    }

    /// Read-modify-write without a conflict check; `None` if the object does not exist.
    pub fn modify(&mut self, rt: &ResourceType, ns: &str, name: &str, f: impl FnOnce(&mut Value)) -> Option<Value> {
        let mut obj = self.get(rt, ns, name)?.clone();
        f(&mut obj);
        self.update(rt, ns, name, obj, false).ok()
    }

    /// Delete an object; returns it.
    pub fn delete(&mut self, rt: &ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
        let ns_key = if rt.namespaced { ns.to_string() } else { String::new() };
        let mut old = self
            .objects
            .get_mut(&rt.key())
            .and_then(|m| m.remove(&(ns_key, name.to_string())))
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        self.rv += 1;
        old["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record(ChangeType::Deleted, &rt.key(), None, old.clone());
        Ok(old)
    }

    /// Every object with its type key, for a state snapshot.
    pub fn dump(&self) -> Vec<(String, Value)> {
        self.objects.iter().flat_map(|(t, m)| m.values().map(move |o| (t.clone(), o.clone()))).collect()
    }

    /// Put an object back verbatim (uid, timestamps, owners kept; a new resourceVersion), as an
    /// etcd restore does. Watches see ADDED or MODIFIED; an object held as it is stays untouched.
    pub fn restore(&mut self, type_key: &str, mut obj: Value) {
        let ns = meta_str(&obj, "namespace").to_string();
        let name = meta_str(&obj, "name").to_string();
        if name.is_empty() {
            return;
        }
        let key = (ns, name);
        if self.objects.get(type_key).and_then(|m| m.get(&key)).is_some_and(|held| comparable(held) == comparable(&obj)) {
            return;
        }
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let old = self.objects.entry(type_key.to_string()).or_default().insert(key, obj.clone());
        let change = if old.is_some() { ChangeType::Modified } else { ChangeType::Added };
        self.record(change, type_key, old, obj);
    }

    /// Remove one object by type key (for restores).
    pub fn remove(&mut self, type_key: &str, ns: &str, name: &str) {
        if let Some(mut old) = self.objects.get_mut(type_key).and_then(|m| m.remove(&(ns.to_string(), name.to_string()))) {
            self.rv += 1;
            old["metadata"]["resourceVersion"] = json!(self.rv.to_string());
            self.record(ChangeType::Deleted, type_key, None, old);
        }
    }

    /// Remove every object (host lost). Watches see the deletions.
    pub fn wipe(&mut self) {
        let keys: Vec<(String, ObjKey)> =
            self.objects.iter().flat_map(|(t, m)| m.keys().map(move |k| (t.clone(), k.clone()))).collect();
        for (t, k) in keys {
            if let Some(mut old) = self.objects.get_mut(&t).and_then(|m| m.remove(&k)) {
                self.rv += 1;
                old["metadata"]["resourceVersion"] = json!(self.rv.to_string());
                self.record(ChangeType::Deleted, &t, None, old);
            }
        }
    }
}

/// Kubernetes-looking random-ish suffix (5 chars), deterministic per counter.
pub fn suffix(n: u64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut s = String::new();
    for _ in 0..5 {
        s.push(ALPHABET[(x % ALPHABET.len() as u64) as usize] as char);
        x /= ALPHABET.len() as u64;
        x ^= x.rotate_left(17);
    }
    s
}

fn uid(n: u64) -> String {
    let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}", (h >> 32) as u32, (h >> 16) as u16, n & 0xfff, (h >> 4) & 0xfff, n)
}

/// Canonical JSON text (sorted keys), for hashing templates.
pub fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, &Value> = m.iter().collect();
            let parts: Vec<String> =
                sorted.into_iter().map(|(k, v)| format!("{}:{}", Value::String(k.clone()), canonical(v))).collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(canonical).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

/// A short stable hash of a JSON value (like `pod-template-hash`).
pub fn short_hash(v: &Value) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in canonical(v).bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut s = suffix(h);
    s.push_str(&suffix(h >> 20));
    s
}

/// `metadata` field as a string, `""` if absent.
pub fn meta(obj: &Value, field: &str) -> String {
    meta_str(obj, field).to_string()
}

/// The labels map of an object (empty object if none).
pub fn labels(obj: &Value) -> Value {
    obj.pointer("/metadata/labels").cloned().unwrap_or_else(|| Value::Object(Map::new()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::resources::{NODES, PODS};

    fn store() -> Store {
        Store::new(3, Arc::new(Notify::new()))
    }

    #[test]
    fn create_fills_metadata_and_refuses_duplicates() {
        let mut s = store();
        let n = s.create(&NODES, "", json!({"metadata": {"name": "a"}})).expect("created");
        assert_eq!(n["kind"], "Node");
        assert!(!meta(&n, "uid").is_empty());
        let e = s.create(&NODES, "", json!({"metadata": {"name": "a"}})).expect_err("duplicate");
        assert_eq!(e.code, 409);
        let e = s.create(&PODS, "nope", json!({"metadata": {"name": "p"}})).expect_err("no namespace");
        assert_eq!(e.code, 404);
    }

    #[test]
    fn update_conflicts_on_stale_version_and_bumps_generation_on_spec_change() {
        let mut s = store();
        let n = s.create(&NODES, "", json!({"metadata": {"name": "a"}, "spec": {}})).expect("created");
        let mut changed = n.clone();
        changed["spec"]["unschedulable"] = json!(true);
        let u = s.update(&NODES, "", "a", changed.clone(), true).expect("updated");
        assert_eq!(u["metadata"]["generation"], 2);
        assert_eq!(s.update(&NODES, "", "a", changed, true).expect_err("stale").code, 409);
        let same = s.update(&NODES, "", "a", u.clone(), true).expect("no-op");
        assert_eq!(same["metadata"]["resourceVersion"], u["metadata"]["resourceVersion"]);
    }

    #[test]
    fn history_is_bounded_and_reports_too_old() {
        let mut s = store();
        for i in 0..5 {
            s.create(&NODES, "", json!({"metadata": {"name": format!("n{i}")}})).expect("created");
        }
        assert!(s.changes_since(1).is_none());
        assert_eq!(s.changes_since(s.resource_version() - 2).map(|c| c.len()), Some(2));
    }
}
