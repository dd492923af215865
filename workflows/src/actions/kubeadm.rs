//! `kubeadm.join`: (re-)joins a node to the cluster with a bootstrap token
//! made for this attempt and held only in memory.
//!
//! The token is generated here (`[a-z0-9]{6}.[a-z0-9]{16}`, as kubeadm's), so
//! it is known to the redactor before any command runs: it is created on the
//! control plane (`kubeadm token create TOKEN --ttl 15m --print-join-command`,
//! which also gives the API endpoint and the CA certificate hash), then used
//! on the node (`kubeadm reset -f`, when asked, then `kubeadm join`). It never
//! reaches the step's output, the store or a log line: every command is run
//! with the token as a secret to redact. Bootstrap tokens live in etcd, so the
//! token must be made after any etcd restore — which is why it is made by the
//! step that joins, never earlier.
//!
//! Resume (probe): the join command also touches
//! `/var/lib/kubelet/dr-join-RUN-STEP` on the node when it succeeds, in the
//! same remote command. After a crash, the join took effect if that marker is
//! there and the API has the Node registered: a marker can only be this run's
//! step's (`kubeadm reset` empties `/var/lib/kubelet`, so no earlier join's
//! survives a reset). Otherwise the step runs again — with `reset_first`, a
//! reset and a join with a new token, which is safe.

use std::hash::BuildHasher;

use dr_orchestrator::{ActionCtx, ActionError, TypedAction};
use serde::{Deserialize, Serialize};

use super::kube::KubeConnection;
use super::ssh::{run_checked, run_command, RunOptions, SshTarget};

pub const KIND: &str = "kubeadm.join";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeadmJoinParams {
    /// The control plane, where the token is created.
    pub control_plane: SshTarget,
    /// The node that joins, and its name in the cluster.
    pub node: SshTarget,
    pub node_name: String,
    /// `kubeadm reset -f` on the node first (a node that was in a cluster).
    #[serde(default)]
    pub reset_first: bool,
    /// To probe whether the node is registered and Ready.
    pub kube: KubeConnection,
}

/// What a join did (no secret in it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinReport {
    pub node: String,
    /// `host:port` of the API server the node joined.
    pub endpoint: String,
    /// `sha256:…` of the cluster CA the node trusts.
    pub ca_cert_hash: String,
    pub reset: bool,
    /// Found done after a crash (by its marker): endpoint and CA hash were not read again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub probed: bool,
}

#[derive(Debug, Clone)]
pub struct KubeadmJoin {
    pub params: KubeadmJoinParams,
}

/// A bootstrap token as kubeadm makes them, from the standard library's
/// per-process random hash keys.
fn fresh_token() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(23);
    let mut bits = 0u64;
    for i in 0..22usize {
        if i % 10 == 0 {
            bits = std::collections::hash_map::RandomState::new().hash_one(i);
        }
        let index = usize::try_from(bits % ALPHABET.len() as u64).unwrap_or(0);
        bits /= ALPHABET.len() as u64;
        out.push(char::from(ALPHABET[index]));
        if i == 5 {
            out.push('.');
        }
    }
    out
}

/// The endpoint and CA hash from `kubeadm join ENDPOINT --token … --discovery-token-ca-cert-hash sha256:H`.
fn parse_join_command(line: &str) -> Option<(String, String)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let start = words.iter().position(|w| *w == "join")?;
    let endpoint = words.get(start + 1)?.to_string();
    let hash = words.iter().position(|w| *w == "--discovery-token-ca-cert-hash").and_then(|i| words.get(i + 1))?;
    hash.starts_with("sha256:").then(|| (endpoint, hash.to_string()))
}

impl TypedAction for KubeadmJoin {
    const KIND: &'static str = KIND;
    type Params = KubeadmJoinParams;
    type Output = JoinReport;

    fn params(&self) -> &KubeadmJoinParams {
        &self.params
    }

    fn summary(&self, report: &JoinReport) -> String {
        if report.probed {
            return format!("{}: joined (found done after a restart: its join marker is on the node and the Node is registered)", report.node);
        }
        let reset = if report.reset { "reset, then " } else { "" };
        format!("{}: {reset}joined {} (CA {})", report.node, report.endpoint, report.ca_cert_hash)
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<JoinReport, ActionError> {
        let p = &self.params;
        let token = fresh_token();
        let options = || RunOptions { sudo: true, timeout: None, secrets: vec![token.clone()] };
        let created = run_checked(ctx, &p.control_plane, &format!("kubeadm token create {token} --ttl 15m --print-join-command"), options())
            .await?;
        let line = created.stdout.text.lines().find(|l| l.contains("kubeadm join")).unwrap_or_default().to_owned();
        let (endpoint, ca_cert_hash) = parse_join_command(&line).ok_or_else(|| {
            ActionError::permanent(format!(
                "`kubeadm token create --print-join-command` on {} printed no join command with a CA hash: {}",
                p.control_plane.address(),
                created.stdout.tail(512)
            ))
        })?;
        if p.reset_first {
            run_checked(ctx, &p.node, "kubeadm reset -f", options()).await?;
        }
        let join = format!(
            "kubeadm join {endpoint} --token {token} --discovery-token-ca-cert-hash {ca_cert_hash} --node-name {} && sudo -n touch {}",
            p.node_name,
            marker(ctx)
        );
        run_checked(ctx, &p.node, &join, options()).await?;
        Ok(JoinReport { node: p.node_name.clone(), endpoint, ca_cert_hash, reset: p.reset_first, probed: false })
    }

    /// The join took effect: this run's step's marker is on the node and the
    /// Node is registered. The endpoint and CA hash are read from the control
    /// plane again (`kubeadm token list` would not give them; the CA does not
    /// change between the join and the probe).
    async fn probe(&self, ctx: &ActionCtx) -> Result<Option<JoinReport>, ActionError> {
        let p = &self.params;
        let options = || RunOptions { sudo: true, timeout: None, secrets: Vec::new() };
        let marked = run_command(ctx, &p.node, &format!("ls {}", marker(ctx)), options()).await?;
        if marked.exit_status != 0 {
            return Ok(None);
        }
        let kube = p.kube.connect().await?;
        let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(kube.client.clone());
        match nodes.get_opt(&p.node_name).await {
            Ok(Some(_)) => {}
            Ok(None) => return Ok(None),
            Err(e) => return Err(kube.error(&format!("reading node {}", p.node_name), e)),
        }
        Ok(Some(JoinReport { node: p.node_name.clone(), endpoint: String::new(), ca_cert_hash: String::new(), reset: p.reset_first, probed: true }))
    }
}

/// The node-side file that says this run's step joined the node.
fn marker(ctx: &ActionCtx) -> String {
    let safe = |s: &str| s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect::<String>();
    format!("/var/lib/kubelet/dr-join-{}-{}", safe(&ctx.run_id.to_string()), safe(ctx.step.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_look_like_kubeadm_s_and_differ() {
        let a = fresh_token();
        let b = fresh_token();
        assert_eq!(a.len(), 23);
        assert_eq!(a.find('.'), Some(6));
        assert!(a.chars().all(|c| c == '.' || c.is_ascii_lowercase() || c.is_ascii_digit()), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn the_join_command_gives_endpoint_and_ca_hash() {
        let line = "kubeadm join 127.0.0.10:6443 --token [REDACTED] --discovery-token-ca-cert-hash sha256:abcd ";
        assert_eq!(parse_join_command(line), Some(("127.0.0.10:6443".into(), "sha256:abcd".into())));
        assert_eq!(parse_join_command("kubeadm join 1.2.3.4:6443 --token x"), None);
    }
}
