//! The API server's objects kept in the lab's real etcd, as a kube-apiserver
//! keeps them: each object is a key `/registry/<type>/<namespace>/<name>`
//! (cluster-scoped: `/registry/<type>/<name>`; `<type>` is the store's type
//! key, `pods`, `apps/deployments`, `argoproj.io/applications`) whose value is
//! the object's JSON. Events stay in memory.
//!
//! Owns: the etcd connection of the API server, writing every change before
//! the API answers (one serialized [`Io`] section per request: check etcd,
//! act, write), answering with etcd's error while etcd is down, and reloading
//! the store when etcd's data was replaced (a snapshot restore, a fresh data
//! dir). Refuses: serving from memory while etcd cannot be reached.
//!
//! How a replacement is seen: every write also puts `/lab/apiserver/stamp`
//! (this server's id and a counter) in the same transaction. Before acting,
//! the server reads the stamp; a value other than the one it wrote last means
//! someone else's data is in etcd now (a restored snapshot holds an older
//! stamp, a fresh etcd none), so the store becomes exactly what `/registry/`
//! holds. The in-memory store is a cache of etcd, like the apiserver's watch
//! cache; resourceVersions stay the store's own counter (not etcd revisions).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions, Txn, TxnOp};
use serde_json::Value;

use super::resources as r;
use super::store::{meta, ApiError, ChangeType};
use super::Shared;

/// Where the API server's objects live in etcd.
pub const REGISTRY_PREFIX: &str = "/registry/";
/// The key every write of the API server stamps (outside `/registry/`).
pub const STAMP_KEY: &str = "/lab/apiserver/stamp";
/// etcd refuses transactions of more than 128 operations by default.
const OPS_PER_TXN: usize = 100;
// Generous: a busy test machine can take a while for a TLS handshake; a stopped etcd refuses at once.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// How to reach the lab's etcd (client certificate auth over TLS).
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    pub endpoint: String,
    pub cacert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The etcd side of the API server; one [`Io`] section at a time.
#[derive(Debug, Default)]
pub(crate) struct Persist {
    inner: tokio::sync::Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    config: Option<EtcdConfig>,
    client: Option<Client>,
    /// The stamp this server wrote (or found) last.
    stamp: Option<String>,
    instance: String,
    counter: u64,
    /// A write failed: memory may hold what etcd does not; reload before serving.
    dirty: bool,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner").field("config", &self.config).field("stamp", &self.stamp).field("dirty", &self.dirty).finish()
    }
}

/// One request's (or one controller pass's) exclusive section: [`Io::ensure`], act, [`Io::flush`].
pub(crate) struct Io<'a> {
    inner: tokio::sync::MutexGuard<'a, Inner>,
}

impl Persist {
    pub(crate) async fn begin(&self) -> Io<'_> {
        Io { inner: self.inner.lock().await }
    }
}

/// The error a kube-apiserver answers when its etcd cannot serve.
pub fn etcd_unavailable(detail: &str) -> ApiError {
    ApiError::new(500, "InternalError", format!("Internal error occurred: etcd cluster is unavailable or misconfigured: {detail}"))
}

fn object_key(type_key: &str, obj: &Value) -> String {
    let ns = meta(obj, "namespace");
    let name = meta(obj, "name");
    if ns.is_empty() {
        format!("{REGISTRY_PREFIX}{type_key}/{name}")
    } else {
        format!("{REGISTRY_PREFIX}{type_key}/{ns}/{name}")
    }
}

/// The type key of a `/registry/...` key, if it is one of the served types.
fn type_of(key: &str) -> Option<String> {
    let rest = key.strip_prefix(REGISTRY_PREFIX)?;
    r::ALL.iter().map(r::ResourceType::key).find(|t| rest.strip_prefix(t.as_str()).is_some_and(|r| r.starts_with('/')))
}

impl Io<'_> {
    /// Whether the store is kept in etcd.
    pub(crate) fn enabled(&self) -> bool {
        self.inner.config.is_some()
    }

    async fn client(&mut self) -> Result<Client, ApiError> {
        if let Some(client) = &self.inner.client {
            return Ok(client.clone());
        }
        let config = self.inner.config.clone().ok_or_else(|| etcd_unavailable("no etcd configured"))?;
        let read = |path: &PathBuf| std::fs::read(path).map_err(|e| etcd_unavailable(&format!("cannot read {}: {e}", path.display())));
        let tls = TlsOptions::new()
            .ca_certificate(Certificate::from_pem(read(&config.cacert)?))
            .identity(Identity::from_pem(read(&config.cert)?, read(&config.key)?));
        let options = ConnectOptions::new().with_tls(tls).with_connect_timeout(CONNECT_TIMEOUT).with_timeout(REQUEST_TIMEOUT);
        let client = match tokio::time::timeout(CONNECT_TIMEOUT * 2, Client::connect([config.endpoint.as_str()], Some(options))).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(etcd_unavailable(&format!("dial {}: {e}", config.endpoint))),
            Err(_) => return Err(etcd_unavailable(&format!("dial {}: connect timed out", config.endpoint))),
        };
        self.inner.client = Some(client.clone());
        Ok(client)
    }

    fn broken(&mut self, shared: &Shared, e: ApiError) -> ApiError {
        self.inner.client = None;
        shared.lock().sim.etcd_error = Some(e.message.clone());
        e
    }

    async fn read_prefix(&mut self, key: &str, prefix: bool) -> Result<Vec<(String, String)>, ApiError> {
        let mut client = self.client().await?;
        let options = prefix.then(|| GetOptions::new().with_prefix());
        match tokio::time::timeout(REQUEST_TIMEOUT, client.get(key, options)).await {
            Ok(Ok(resp)) => Ok(resp
                .kvs()
                .iter()
                .map(|kv| (kv.key_str().unwrap_or_default().to_string(), kv.value_str().unwrap_or_default().to_string()))
                .collect()),
            Ok(Err(e)) => Err(etcd_unavailable(&e.to_string())),
            Err(_) => Err(etcd_unavailable("etcdserver: request timed out")),
        }
    }

    /// Before serving: etcd must answer, and the store must hold what etcd holds (reloaded when
    /// etcd's data was replaced or a write failed). A no-op when the store is not kept in etcd.
    pub(crate) async fn ensure(&mut self, shared: &Shared) -> Result<(), ApiError> {
        if !self.enabled() {
            return Ok(());
        }
        let had_client = self.inner.client.is_some();
        let mut read = self.read_prefix(STAMP_KEY, false).await;
        if read.is_err() && had_client {
            // A connection from before an etcd restart: try once more on a new one.
            self.inner.client = None;
            read = self.read_prefix(STAMP_KEY, false).await;
        }
        let stamp = match read {
            Ok(kvs) => kvs.into_iter().next().map(|(_, v)| v),
            Err(e) => return Err(self.broken(shared, e)),
        };
        if stamp != self.inner.stamp || self.inner.dirty {
            self.reload(shared, stamp).await?;
        }
        shared.lock().sim.etcd_error = None;
        Ok(())
    }

    /// The store becomes exactly what `/registry/` holds.
    async fn reload(&mut self, shared: &Shared, stamp: Option<String>) -> Result<(), ApiError> {
        let kvs = match self.read_prefix(REGISTRY_PREFIX, true).await {
            Ok(kvs) => kvs,
            Err(e) => return Err(self.broken(shared, e)),
        };
        let objects: Vec<(String, Value)> = kvs
            .into_iter()
            .filter_map(|(key, value)| Some((type_of(&key)?, serde_json::from_str::<Value>(&value).ok()?)))
            .collect();
        {
            let mut world = shared.lock();
            super::lab::replace_objects(&mut world, objects);
            world.store.take_pending();
        }
        self.inner.stamp = stamp;
        self.inner.dirty = false;
        shared.changed.notify_one();
        Ok(())
    }

    /// Write every pending change (and a new stamp) to etcd. On failure the store is marked to
    /// be reloaded from etcd before it serves again, so an unsaved change never shows.
    pub(crate) async fn flush(&mut self, shared: &Shared) -> Result<(), ApiError> {
        if !self.enabled() {
            return Ok(());
        }
        let changes = shared.lock().store.take_pending();
        let mut latest: BTreeMap<String, Option<String>> = BTreeMap::new();
        let events = r::EVENTS.key();
        for change in changes.iter().filter(|c| c.type_key != events) {
            let key = object_key(&change.type_key, &change.new);
            let value = match change.change {
                ChangeType::Deleted => None,
                _ => Some(change.new.to_string()),
            };
            latest.insert(key, value);
        }
        if latest.is_empty() {
            return if self.inner.dirty { Err(etcd_unavailable("an earlier write did not reach etcd")) } else { Ok(()) };
        }
        self.inner.counter += 1;
        let stamp = format!("{}-{}", self.inner.instance, self.inner.counter);
        let mut ops: Vec<TxnOp> = latest
            .into_iter()
            .map(|(key, value)| match value {
                Some(v) => TxnOp::put(key, v, None),
                None => TxnOp::delete(key, None),
            })
            .collect();
        ops.push(TxnOp::put(STAMP_KEY, stamp.clone(), None));
        let result = self.write(ops).await;
        match result {
            Ok(()) => {
                self.inner.stamp = Some(stamp);
                Ok(())
            }
            Err(e) => {
                self.inner.dirty = true;
                Err(self.broken(shared, e))
            }
        }
    }

    async fn write(&mut self, ops: Vec<TxnOp>) -> Result<(), ApiError> {
        let mut client = self.client().await?;
        for chunk in ops.chunks(OPS_PER_TXN) {
            match tokio::time::timeout(REQUEST_TIMEOUT, client.txn(Txn::new().and_then(chunk.to_vec()))).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(etcd_unavailable(&e.to_string())),
                Err(_) => return Err(etcd_unavailable("etcdserver: request timed out")),
            }
        }
        Ok(())
    }

    /// Keep the store in etcd from now on: load what `/registry/` holds, or, when it holds
    /// nothing, save every object the store has.
    pub(crate) async fn attach(&mut self, shared: &Shared, config: EtcdConfig) -> Result<(), ApiError> {
        self.inner.config = Some(config);
        self.inner.client = None;
        self.inner.instance = format!("{}-{}", std::process::id(), chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default());
        let held = self.read_prefix(REGISTRY_PREFIX, true).await;
        let held = match held {
            Ok(kvs) => kvs,
            Err(e) => {
                self.inner.config = None;
                return Err(e);
            }
        };
        shared.lock().store.start_persisting();
        if held.iter().any(|(key, _)| type_of(key).is_some()) {
            let stamp = self.read_prefix(STAMP_KEY, false).await?.into_iter().next().map(|(_, v)| v);
            self.reload(shared, stamp).await
        } else {
            self.flush(shared).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_name_type_namespace_and_name_and_map_back_to_the_type() {
        let pod = json!({"metadata": {"name": "web-1", "namespace": "demo"}});
        let node = json!({"metadata": {"name": "k8s-worker-1"}});
        assert_eq!(object_key("pods", &pod), "/registry/pods/demo/web-1");
        assert_eq!(object_key("nodes", &node), "/registry/nodes/k8s-worker-1");
        assert_eq!(type_of("/registry/apps/deployments/demo/web").as_deref(), Some("apps/deployments"));
        assert_eq!(type_of("/registry/pods/demo/web-1").as_deref(), Some("pods"));
        assert_eq!(type_of("/registry/nothing/x"), None);
        assert_eq!(type_of("/lab/backup/marker"), None);
    }
}
