//! The simulated Kubernetes API server of the lab: a server on loopback that
//! speaks enough of the Kubernetes REST API (discovery, generic CRUD, patch,
//! watch, eviction, scale, Table output, an openapi v3 skeleton) for kube-rs
//! and the real `kubectl`, with controllers (deployments, replicasets,
//! daemonsets, scheduler, kubelet, endpoints, PDBs, ArgoCD applications) and
//! Kubernetes-side faults, plus a `/lab/v1/...` control API for the other lab
//! parts.
//!
//! Owns: the object store, controllers, faults, the HTTP surface, its TLS,
//! and keeping the objects in the lab's etcd once attached
//! (`ApiServer::attach_etcd`, `persist.rs`: written before the API answers,
//! 500 while etcd is down, reloaded when etcd's data was replaced).
//! Refuses: running etcd, ssh, terraform, backups (other lab modules do those).
//!
//! One port serves plain HTTP always and HTTPS too with `KubeOptions::tls`
//! (lab CA; the kubeconfig then carries `certificate-authority-data`).
//! Clients: kube 5 retries 429/503 for minutes by default; set
//! `Config::default_retry = false` so a PDB-blocked eviction or a down API
//! surfaces at once.
//!
//! Control routes (JSON bodies, answers JSON; errors are `Status` objects):
//! - `GET /lab/v1/health`: etcd, nodes, kube-system, argocd, apps, faults; `healthy`.
//! - `GET|POST /lab/v1/cluster/state`: the cluster's objects (as etcd holds
//!   them) / make the cluster hold exactly those (an etcd restore).
//! - `POST /lab/v1/nodes/{node}/kubelet {"state":"running|stopped|dead"}`
//!   (`dead` ignores `running` until `recreate`).
//! - `POST /lab/v1/nodes/{node}/join|reset|recreate`: kubeadm join (409 when
//!   dead), kubeadm reset (Node and its pods gone), terraform re-creation
//!   (not dead, kubelet stopped, not joined).
//! - `POST /lab/v1/cluster/init|wipe`: kubeadm init (API up, control plane,
//!   kube-system) / everything gone and the API down (503).
//! - `POST /lab/v1/platform/deploy`: ArgoCD and its auto-syncing Applications.
//! - `POST /lab/v1/components/{name} {"healthy":bool,"message":..}`: what
//!   `kubectl get cs` shows (scheduler, controller-manager, etcd-0).
//! - `POST /lab/v1/faults/{pod-crash|network|argocd-down|worker-down|worker-dead|clear}`:
//!   pod-crash `{"namespace","deployment"}` (default demo/web) crash-loops that
//!   deployment's pods until a rollout restart; network crash-loops kube-proxy
//!   and makes coredns unready (kube-dns endpoints empty) until both are
//!   rollout-restarted; argocd-down crash-loops the argocd pods (syncs wait)
//!   until they are deleted; worker-down/-dead `{"node"}` set the kubelet.

mod controllers;
mod http;
mod lab;
pub mod persist;
mod proto;
pub mod resources;
mod seed;
pub mod select;
pub mod store;
mod table;
pub mod tls;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::Instant;

pub use resources::ResourceType;
pub use persist::EtcdConfig;
pub use store::{ApiError, Store};

/// Errors of the simulated API server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot bind the api server on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write kubeconfig {path}")]
    WriteKubeconfig {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the api server runtime")]
    Runtime(#[source] std::io::Error),
    #[error("the api server thread did not start")]
    ThreadStart,
    #[error("the simulated cluster did not become healthy within {0:?}")]
    NotHealthy(Duration),
    #[error("cannot set up tls for the api server: {0}")]
    Tls(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Pacing and shape of the simulated cluster.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// Where to bind; port 0 picks a free one.
    pub bind: SocketAddr,
    /// From a running container to the pod being Ready.
    pub pod_ready_delay: Duration,
    /// From a running kubelet (or a join) to the node being Ready.
    pub node_ready_delay: Duration,
    /// From an ArgoCD sync operation starting to it succeeding.
    pub sync_delay: Duration,
    /// Between restarts of a crash-looping container.
    pub crash_backoff: Duration,
    /// How often the controllers run when nothing changed and no timed transition is due.
    pub tick: Duration,
    /// How many changes watches can replay.
    pub history_limit: usize,
    /// Start with the standard cluster (nodes joined, kube-system, argocd, apps) already healthy.
    pub seed: bool,
    /// Bearer token written into the kubeconfig (the server accepts any).
    pub token: String,
    /// The nodes (name, InternalIP); the first is the control plane.
    pub nodes: Vec<(String, String)>,
    /// Also speak HTTPS (lab-generated CA) on the same port; `url()` and the kubeconfig then
    /// use `https://`, while `http_url()` stays plain for the lab's curl calls.
    pub tls: bool,
}

impl Default for KubeOptions {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            pod_ready_delay: Duration::from_millis(30),
            node_ready_delay: Duration::from_millis(30),
            sync_delay: Duration::from_millis(30),
            crash_backoff: Duration::from_millis(300),
            tick: Duration::from_millis(500),
            history_limit: 10_000,
            seed: true,
            token: "dr-lab-token".to_string(),
            nodes: vec![
                ("k8s-control-plane-1".to_string(), "127.0.0.11".to_string()),
                ("k8s-worker-1".to_string(), "127.0.0.12".to_string()),
                ("k8s-worker-2".to_string(), "127.0.0.13".to_string()),
            ],
            tls: false,
        }
    }
}

impl KubeOptions {
    /// Delays that look like a real cluster (for demos).
    pub fn realistic() -> Self {
        Self {
            pod_ready_delay: Duration::from_secs(5),
            node_ready_delay: Duration::from_secs(20),
            sync_delay: Duration::from_secs(8),
            crash_backoff: Duration::from_secs(10),
            tick: Duration::from_secs(1),
            ..Self::default()
        }
    }
}

/// The kubelet of a node, as the node-side `systemctl` sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubeletState {
    Running,
    Stopped,
    /// The VM is gone for good: `running` is ignored until the node is re-created.
    Dead,
}

#[derive(Debug, Clone)]
pub(crate) struct SimNode {
    pub kubelet: KubeletState,
    pub joined: bool,
    pub control_plane: bool,
    pub ip: String,
    /// When the node turns Ready, if its kubelet keeps running.
    pub ready_at: Instant,
}

#[derive(Debug, Clone)]
pub(crate) struct SimPod {
    pub ready_at: Instant,
    pub last_crash: Instant,
    /// A readiness-failure event was emitted.
    pub warned: bool,
}

/// The `pod-crash` fault: the pods of one Deployment or StatefulSet crash while its
/// template is the one they were broken at.
#[derive(Debug, Clone)]
pub(crate) struct PodCrash {
    pub namespace: String,
    pub workload: ResourceType,
    pub name: String,
    /// The broken template's hash.
    pub hash: String,
}

impl PodCrash {
    /// Whether `pod` runs the broken template: a Deployment's pods by `pod-template-hash`, a
    /// StatefulSet's by `controller-revision-hash` (NAME-HASH).
    pub fn hits(&self, pod: &serde_json::Value) -> bool {
        let label = |key: &str| pod.pointer(&format!("/metadata/labels/{key}")).and_then(serde_json::Value::as_str).unwrap_or_default().to_string();
        store::meta(pod, "namespace") == self.namespace
            && if self.workload == resources::STATEFULSETS {
                label("controller-revision-hash") == format!("{}-{}", self.name, self.hash)
            } else {
                label("pod-template-hash") == self.hash
            }
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Faults {
    /// The workload whose pods crash, until its template changes (a restart).
    pub pod_crash: Option<PodCrash>,
    /// Template hashes of coredns and kube-proxy when the network broke (None once restarted).
    pub network: Option<(Option<String>, Option<String>)>,
    /// uids of argocd pods that fail until deleted.
    pub argocd_down: HashSet<String>,
}

/// Everything the controllers simulate beside the stored objects.
#[derive(Debug)]
pub(crate) struct Sim {
    pub nodes: BTreeMap<String, SimNode>,
    pub pods: HashMap<String, SimPod>,
    pub syncs: HashMap<(String, String), Instant>,
    pub faults: Faults,
    pub api_up: bool,
    /// While set, delays are zero (building the standard cluster at start).
    pub instant: bool,
    /// The earliest time-based transition the last reconcile saw coming (pod or node turning
    /// Ready, a crash restart, a sync finishing): the controllers wake then.
    pub next_wake: Option<Instant>,
    /// Why the last attempt to reach etcd failed (`None`: it answered, or the store is not kept in etcd).
    pub etcd_error: Option<String>,
}

/// The store, the simulation and the options, under one lock.
#[derive(Debug)]
pub struct World {
    pub store: Store,
    pub(crate) sim: Sim,
    pub opts: KubeOptions,
}

impl World {
    /// Ask the controllers to run again at `at`.
    pub(crate) fn wake_at(&mut self, at: Instant) {
        self.sim.next_wake = Some(self.sim.next_wake.map_or(at, |w| w.min(at)));
    }

    pub(crate) fn delay(&self, d: Duration) -> Duration {
        if self.sim.instant {
            Duration::ZERO
        } else {
            d
        }
    }
}

/// Shared handle to the world.
#[derive(Debug, Clone)]
pub struct Shared {
    world: Arc<Mutex<World>>,
    changed: Arc<Notify>,
    persist: Arc<persist::Persist>,
}

impl Shared {
    /// Lock the world (store and simulation). Never hold it across an await.
    pub fn lock(&self) -> MutexGuard<'_, World> {
        // A panic while holding the lock is a bug in the lab; keep serving what is there.
        self.world.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The running simulated API server. Stops when dropped.
#[derive(Debug)]
pub struct ApiServer {
    addr: SocketAddr,
    shared: Shared,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    token: String,
    tls: Option<tls::TlsMaterial>,
    /// The runtime serving the API (for blocking callers).
    runtime: tokio::runtime::Handle,
}

impl ApiServer {
    /// Start on the current tokio runtime.
    pub async fn start(opts: KubeOptions) -> Result<Self> {
        let listener =
            tokio::net::TcpListener::bind(opts.bind).await.map_err(|source| Error::Bind { addr: opts.bind.to_string(), source })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind { addr: opts.bind.to_string(), source })?;
        let shared = Self::build_world(opts.clone());
        let tls = if opts.tls { Some(tls::generate(addr.ip())?) } else { None };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(http::serve(listener, shared.clone(), addr, rx, tls.as_ref().map(|t| t.config.clone())));
        let controller = tokio::spawn(controllers::run(shared.clone()));
        let runtime = tokio::runtime::Handle::current();
        Ok(Self { addr, shared, shutdown: Some(tx), thread: None, tasks: vec![server, controller], token: opts.token, tls, runtime })
    }

    /// Start on a background thread with its own runtime (for blocking callers and `dr-lab`).
    pub fn start_background(opts: KubeOptions) -> Result<Self> {
        let std_listener = std::net::TcpListener::bind(opts.bind).map_err(|source| Error::Bind { addr: opts.bind.to_string(), source })?;
        std_listener.set_nonblocking(true).map_err(|source| Error::Bind { addr: opts.bind.to_string(), source })?;
        let addr = std_listener.local_addr().map_err(|source| Error::Bind { addr: opts.bind.to_string(), source })?;
        let shared = Self::build_world(opts.clone());
        let tls = if opts.tls { Some(tls::generate(addr.ip())?) } else { None };
        let server_tls = tls.as_ref().map(|t| t.config.clone());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("dr-lab-kube")
            .build()
            .map_err(Error::Runtime)?;
        let handle = runtime.handle().clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("dr-lab-kube".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(_) => return,
                    };
                    let _ = ready_tx.send(());
                    let controller = tokio::spawn(controllers::run(thread_shared.clone()));
                    http::serve(listener, thread_shared, addr, rx, server_tls).await;
                    controller.abort();
                });
            })
            .map_err(Error::Runtime)?;
        ready_rx.recv().map_err(|_| Error::ThreadStart)?;
        Ok(Self { addr, shared, shutdown: Some(tx), thread: Some(thread), tasks: Vec::new(), token: opts.token, tls, runtime: handle })
    }

    fn build_world(opts: KubeOptions) -> Shared {
        let changed = Arc::new(Notify::new());
        let store = Store::new(opts.history_limit, changed.clone());
        let seed_it = opts.seed;
        let mut world = World {
            store,
            sim: Sim {
                nodes: BTreeMap::new(),
                pods: HashMap::new(),
                syncs: HashMap::new(),
                faults: Faults::default(),
                api_up: false,
                instant: false,
                next_wake: None,
                etcd_error: None,
            },
            opts,
        };
        seed::register_nodes(&mut world);
        if seed_it {
            seed::standard_cluster(&mut world);
        }
        Shared { world: Arc::new(Mutex::new(world)), changed, persist: Arc::default() }
    }

    /// `https://127.0.0.1:PORT` with TLS on, else `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        if self.tls.is_some() {
            format!("https://{}", self.addr)
        } else {
            self.http_url()
        }
    }

    /// `http://127.0.0.1:PORT`: plain HTTP on the same port, always (lab routes, curl).
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// PEM of the lab CA that signed the serving certificate, with TLS on.
    pub fn ca_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(|t| t.ca_pem.as_str())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The store, simulation and options (for assertions and direct changes).
    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// A kubeconfig pointing at this server (context `dr-lab`, user with a bearer token; with TLS
    /// on, the cluster carries `certificate-authority-data`).
    pub fn kubeconfig(&self) -> String {
        let ca = self
            .tls
            .as_ref()
            .map(|t| format!("    certificate-authority-data: {}\n", proto::base64(t.ca_pem.as_bytes())))
            .unwrap_or_default();
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: dr-lab\n  cluster:\n{ca}    server: {url}\ncontexts:\n- name: dr-lab\n  context:\n    cluster: dr-lab\n    user: dr-lab-admin\n    namespace: default\ncurrent-context: dr-lab\nusers:\n- name: dr-lab-admin\n  user:\n    token: {token}\npreferences: {{}}\n",
            url = self.url(),
            token = self.token
        )
    }

    pub fn write_kubeconfig(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.kubeconfig()).map_err(|source| Error::WriteKubeconfig { path: path.display().to_string(), source })
    }

    /// The same JSON that `GET /lab/v1/health` answers.
    pub fn health(&self) -> Value {
        lab::health(&self.shared.lock())
    }

    /// Keep the objects in etcd from now on (see `persist.rs`): what `/registry/` holds is loaded,
    /// or, when it holds nothing, every object is saved there. From then on every change is
    /// written to etcd before the API answers, and the API fails while etcd does.
    pub async fn attach_etcd(&self, config: EtcdConfig) -> std::result::Result<(), ApiError> {
        let mut io = self.shared.persist.begin().await;
        io.attach(&self.shared, config).await
    }

    /// [`ApiServer::attach_etcd`] for blocking callers. It blocks on a thread of
    /// its own, so a caller that is itself inside a runtime (an async test
    /// starting a lab) does not make tokio refuse to block.
    pub fn attach_etcd_blocking(&self, config: EtcdConfig) -> std::result::Result<(), ApiError> {
        let shared = self.shared.clone();
        let runtime = &self.runtime;
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    runtime.block_on(async move {
                        let mut io = shared.persist.begin().await;
                        io.attach(&shared, config).await
                    })
                })
                .join()
                .unwrap_or_else(|_| Err(ApiError::new(500, "InternalError", "attaching the API server to etcd panicked")))
        })
    }

    /// The same JSON that `GET /lab/v1/cluster/state` answers (what etcd would hold).
    pub fn state(&self) -> Value {
        lab::state(&self.shared.lock())
    }

    /// Apply a lab control action as the HTTP route would (`path` like `faults/pod-crash`).
    pub fn control(&self, path: &str, body: Value) -> std::result::Result<Value, ApiError> {
        let result = lab::control(&mut self.shared.lock(), path, &body);
        self.shared.changed.notify_one();
        result
    }

    /// Wait (async) until health says healthy.
    pub async fn wait_healthy(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.health()["healthy"] == Value::Bool(true) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::NotHealthy(timeout));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Wait (blocking) until health says healthy.
    #[allow(clippy::disallowed_methods)] // the lab is a test bed: a blocking caller polls
    pub fn wait_healthy_blocking(&self, timeout: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.health()["healthy"] == Value::Bool(true) {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::NotHealthy(timeout));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stop serving and the controllers.
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        for t in self.tasks.drain(..) {
            t.abort();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}
