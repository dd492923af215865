//! Health checks of the cluster, for assessment and verification steps:
//! Endpoints without ready addresses (`kubectl get endpoints -A`), a
//! namespace's recent events sorted by time (`kubectl get events
//! --sort-by=.lastTimestamp`), a DNS check (CoreDNS pods Ready and the
//! kube-dns endpoints populated) and a cluster summary (nodes and their
//! conditions, kube-system pods). Read-only: they change nothing.

use dr_orchestrator::{ActionCtx, ActionError, TypedAction};
use k8s_openapi::api::core::v1::{Endpoints, Event, Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde::{Deserialize, Serialize};

use super::nodes::node_ready;
use super::pods::{pod_healthy, unhealthy_pods, UnhealthyPod};
use super::{listed, Kube, KubeConnection};

// ---------------------------------------------------------------------------
// kube.endpoints-unready

/// Endpoints with no ready address: services nothing answers behind.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EndpointsUnready {
    #[serde(flatten)]
    pub connection: KubeConnection,
    /// One namespace; all when absent.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Fail (retryable) when any: a verification step.
    #[serde(default)]
    pub fail_if_any: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnreadyEndpoints {
    pub namespace: String,
    pub name: String,
    /// Addresses of pods that exist but are not Ready.
    pub not_ready: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointsReport {
    pub checked: usize,
    pub unready: Vec<UnreadyEndpoints>,
}

impl EndpointsReport {
    /// `namespace/name` of each Endpoints object without a ready address.
    pub fn names(&self) -> Vec<String> {
        self.unready.iter().map(|e| format!("{}/{}", e.namespace, e.name)).collect()
    }
}

/// (ready, not ready) addresses of an Endpoints object.
pub fn endpoint_addresses(ep: &Endpoints) -> (usize, usize) {
    let subsets = ep.subsets.iter().flatten();
    subsets.fold((0, 0), |(r, n), s| {
        (r + s.addresses.as_ref().map_or(0, Vec::len), n + s.not_ready_addresses.as_ref().map_or(0, Vec::len))
    })
}

pub async fn unready_endpoints(kube: &Kube, namespace: Option<&str>) -> Result<EndpointsReport, ActionError> {
    let api: Api<Endpoints> = match namespace {
        Some(ns) => Api::namespaced(kube.client.clone(), ns),
        None => Api::all(kube.client.clone()),
    };
    let list = api.list(&ListParams::default()).await.map_err(|e| kube.error("listing endpoints", e))?;
    let mut report = EndpointsReport { checked: list.items.len(), unready: Vec::new() };
    for ep in &list.items {
        let (ready, not_ready) = endpoint_addresses(ep);
        if ready == 0 {
            report.unready.push(UnreadyEndpoints { namespace: ep.namespace().unwrap_or_default(), name: ep.name_any(), not_ready });
        }
    }
    Ok(report)
}

impl TypedAction for EndpointsUnready {
    const KIND: &'static str = "kube.endpoints-unready";
    type Params = Self;
    type Output = EndpointsReport;

    fn params(&self) -> &Self {
        self
    }

    fn summary(&self, report: &EndpointsReport) -> String {
        let names = report.names();
        format!("{} of {} endpoints without ready addresses{}", names.len(), report.checked, listed(&names))
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<EndpointsReport, ActionError> {
        let report = ctx
            .guard("listing endpoints", async {
                let kube = self.connection.connect().await?;
                unready_endpoints(&kube, self.namespace.as_deref()).await
            })
            .await?;
        if self.fail_if_any && !report.unready.is_empty() {
            let names = report.names();
            return Err(ActionError::retryable(format!(
                "endpoints without ready addresses: {}; check the pods behind these services",
                names.join(", ")
            )));
        }
        Ok(report)
    }
}

// ---------------------------------------------------------------------------
// kube.events

/// `kubectl get events -n NS --sort-by=.lastTimestamp`: the most recent
/// `limit` events, oldest first.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecentEvents {
    #[serde(flatten)]
    pub connection: KubeConnection,
    pub namespace: String,
    #[serde(default = "default_limit")]
    pub limit: usize,
    /// Only `Warning` events.
    #[serde(default)]
    pub warnings_only: bool,
}

fn default_limit() -> usize {
    50
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventInfo {
    pub time: Option<String>,
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    /// `kind/name` of the object the event is about.
    pub object: String,
    pub message: String,
    pub count: i32,
}

/// When an event last happened: lastTimestamp, eventTime, firstTimestamp, creation.
fn event_time(e: &Event) -> Option<Timestamp> {
    e.last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.first_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

pub async fn recent_events(kube: &Kube, namespace: &str, limit: usize, warnings_only: bool) -> Result<Vec<EventInfo>, ActionError> {
    let api: Api<Event> = Api::namespaced(kube.client.clone(), namespace);
    let list = api.list(&ListParams::default()).await.map_err(|e| kube.error(&format!("listing events of namespace {namespace}"), e))?;
    let mut events: Vec<Event> =
        list.items.into_iter().filter(|e| !warnings_only || e.type_.as_deref() == Some("Warning")).collect();
    events.sort_by_key(event_time);
    let skip = events.len().saturating_sub(limit);
    Ok(events
        .iter()
        .skip(skip)
        .map(|e| EventInfo {
            time: event_time(e).map(|t| t.to_string()),
            type_: e.type_.clone().unwrap_or_default(),
            reason: e.reason.clone().unwrap_or_default(),
            object: format!(
                "{}/{}",
                e.involved_object.kind.clone().unwrap_or_default().to_lowercase(),
                e.involved_object.name.clone().unwrap_or_default()
            ),
            message: e.message.clone().unwrap_or_default(),
            count: e.count.unwrap_or(1),
        })
        .collect())
}

impl TypedAction for RecentEvents {
    const KIND: &'static str = "kube.events";
    type Params = Self;
    type Output = Vec<EventInfo>;

    fn params(&self) -> &Self {
        self
    }

    fn summary(&self, events: &Vec<EventInfo>) -> String {
        let warnings = events.iter().filter(|e| e.type_ == "Warning").count();
        format!("{} recent events in namespace {} ({warnings} warnings)", events.len(), self.namespace)
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<Vec<EventInfo>, ActionError> {
        ctx.guard(&format!("listing events of namespace {}", self.namespace), async {
            let kube = self.connection.connect().await?;
            recent_events(&kube, &self.namespace, self.limit, self.warnings_only).await
        })
        .await
    }
}

// ---------------------------------------------------------------------------
// kube.dns-check

/// CoreDNS pods Ready and the kube-dns endpoints populated (the guide's
/// nslookup, from outside the cluster).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DnsCheck {
    #[serde(flatten)]
    pub connection: KubeConnection,
    #[serde(default = "default_dns_namespace")]
    pub namespace: String,
    #[serde(default = "default_dns_selector")]
    pub selector: String,
    #[serde(default = "default_dns_service")]
    pub service: String,
}

fn default_dns_namespace() -> String {
    "kube-system".to_owned()
}

fn default_dns_selector() -> String {
    "k8s-app=kube-dns".to_owned()
}

fn default_dns_service() -> String {
    "kube-dns".to_owned()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsReport {
    pub pods: usize,
    pub ready_pods: usize,
    pub unready: Vec<String>,
    pub ready_addresses: usize,
    pub not_ready_addresses: usize,
    pub healthy: bool,
}

impl DnsCheck {
    async fn check(&self, kube: &Kube) -> Result<DnsReport, ActionError> {
        let ns = &self.namespace;
        let pods: Api<Pod> = Api::namespaced(kube.client.clone(), ns);
        let pods = pods
            .list(&ListParams::default().labels(&self.selector))
            .await
            .map_err(|e| kube.error(&format!("listing DNS pods ({}) in {ns}", self.selector), e))?;
        let endpoints: Api<Endpoints> = Api::namespaced(kube.client.clone(), ns);
        let (ready_addresses, not_ready_addresses) = match endpoints.get_opt(&self.service).await {
            Ok(Some(ep)) => endpoint_addresses(&ep),
            Ok(None) => (0, 0),
            Err(e) => return Err(kube.error(&format!("reading endpoints {ns}/{}", self.service), e)),
        };
        let unready: Vec<String> = pods.items.iter().filter(|p| !pod_healthy(p)).map(|p| p.name_any()).collect();
        let total = pods.items.len();
        Ok(DnsReport {
            pods: total,
            ready_pods: total - unready.len(),
            healthy: total > 0 && unready.is_empty() && ready_addresses > 0,
            unready,
            ready_addresses,
            not_ready_addresses,
        })
    }
}

impl TypedAction for DnsCheck {
    const KIND: &'static str = "kube.dns-check";
    type Params = Self;
    type Output = DnsReport;

    fn params(&self) -> &Self {
        self
    }

    fn summary(&self, report: &DnsReport) -> String {
        format!(
            "cluster DNS healthy: {} pods Ready, {} ready addresses behind {}",
            report.ready_pods, report.ready_addresses, self.service
        )
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<DnsReport, ActionError> {
        let report = ctx
            .guard("DNS check", async {
                let kube = self.connection.connect().await?;
                self.check(&kube).await
            })
            .await?;
        if !report.healthy {
            return Err(ActionError::retryable(format!(
                "cluster DNS unhealthy: {} of {} pods ({}) Ready{}, service {}/{} has {} ready addresses; \
                 restart it (rollout restart deployment/coredns -n kube-system) and check kube-proxy",
                report.ready_pods,
                report.pods,
                self.selector,
                if report.unready.is_empty() { String::new() } else { format!(" (not ready: {})", report.unready.join(", ")) },
                self.namespace,
                self.service,
                report.ready_addresses
            )));
        }
        Ok(report)
    }
}

// ---------------------------------------------------------------------------
// kube.cluster-health

/// Nodes with their conditions and the kube-system pods: what `kubectl get
/// nodes` and `kubectl get pods -n kube-system` tell an operator.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterHealth {
    #[serde(flatten)]
    pub connection: KubeConnection,
    /// Fail (retryable) unless healthy: a verification step.
    #[serde(default)]
    pub fail_if_unhealthy: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHealth {
    pub name: String,
    pub ready: bool,
    pub unschedulable: bool,
    pub roles: Vec<String>,
    /// `Type=Status (reason)` of every condition.
    pub conditions: Vec<String>,
    /// Conditions in a bad state (pressure True, Ready not True).
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterReport {
    pub healthy: bool,
    pub nodes: Vec<NodeHealth>,
    pub kube_system_pods: usize,
    pub kube_system_unhealthy: Vec<UnhealthyPod>,
}

pub async fn cluster_health(kube: &Kube) -> Result<ClusterReport, ActionError> {
    let api: Api<Node> = Api::all(kube.client.clone());
    let nodes = api.list(&ListParams::default()).await.map_err(|e| kube.error("listing nodes", e))?;
    let nodes: Vec<NodeHealth> = nodes
        .items
        .iter()
        .map(|n| {
            let conditions = n.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
            let problems = conditions
                .iter()
                .filter(|c| if c.type_ == "Ready" { c.status != "True" } else { c.status == "True" })
                .map(|c| format!("{}={} ({})", c.type_, c.status, c.message.clone().unwrap_or_default()))
                .collect();
            NodeHealth {
                name: n.name_any(),
                ready: node_ready(n).0,
                unschedulable: n.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false),
                roles: n
                    .labels()
                    .keys()
                    .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                    .map(str::to_owned)
                    .collect(),
                conditions: conditions
                    .iter()
                    .map(|c| format!("{}={} ({})", c.type_, c.status, c.reason.clone().unwrap_or_default()))
                    .collect(),
                problems,
            }
        })
        .collect();
    let system = unhealthy_pods(kube, Some("kube-system")).await?;
    let healthy = !nodes.is_empty() && nodes.iter().all(|n| n.ready && n.problems.is_empty()) && system.unhealthy.is_empty();
    Ok(ClusterReport { healthy, nodes, kube_system_pods: system.checked, kube_system_unhealthy: system.unhealthy })
}

impl TypedAction for ClusterHealth {
    const KIND: &'static str = "kube.cluster-health";
    type Params = Self;
    type Output = ClusterReport;

    fn params(&self) -> &Self {
        self
    }

    fn summary(&self, report: &ClusterReport) -> String {
        let not_ready: Vec<&str> = report.nodes.iter().filter(|n| !n.ready).map(|n| n.name.as_str()).collect();
        let pods: Vec<&str> = report.kube_system_unhealthy.iter().map(|p| p.name.as_str()).collect();
        format!(
            "{}: {} of {} nodes Ready{}, {} of {} kube-system pods unhealthy{}",
            if report.healthy { "healthy" } else { "unhealthy" },
            report.nodes.len() - not_ready.len(),
            report.nodes.len(),
            if not_ready.is_empty() { String::new() } else { format!(" (not ready: {})", not_ready.join(", ")) },
            pods.len(),
            report.kube_system_pods,
            if pods.is_empty() { String::new() } else { format!(" ({})", pods.join(", ")) },
        )
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<ClusterReport, ActionError> {
        let report = ctx
            .guard("cluster health", async {
                let kube = self.connection.connect().await?;
                cluster_health(&kube).await
            })
            .await?;
        if self.fail_if_unhealthy && !report.healthy {
            return Err(ActionError::retryable(format!("cluster {}", self.summary(&report))));
        }
        Ok(report)
    }
}
