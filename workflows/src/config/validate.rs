//! The semantic checks of `dr.toml`, after it parsed into [`Config`]: what
//! the types cannot say (one control plane, names that refer to nodes,
//! unique names, URLs, positive durations), each located at its key.
//!
//! Owns: those rules. Refuses: reaching anything (files may be absent here;
//! `dr config check --connect` tries them).

use std::collections::BTreeMap;

use super::source::{dotted, path, Seg, Source};
use super::{Config, Problem, Role};

/// Every semantic problem of `config` (in no particular order).
pub(super) fn validate(config: &Config, source: &Source<'_>) -> Vec<Problem> {
    let mut out = Problems { source, problems: Vec::new() };
    nodes(config, &mut out);
    cluster(config, &mut out);
    etcd(config, &mut out);
    others(config, &mut out);
    later_sections(config, &mut out);
    out.problems
}

struct Problems<'s, 'a> {
    source: &'s Source<'a>,
    problems: Vec<Problem>,
}

impl Problems<'_, '_> {
    fn add(&mut self, at: &[Seg], message: impl Into<String>) {
        self.problems.push(self.source.problem(at, message));
    }

    fn not_empty(&mut self, keys: &[&str], value: &str) {
        if value.trim().is_empty() {
            self.add(&path(keys), "must not be empty");
        }
    }

    fn url(&mut self, at: &[Seg], value: &str, schemes: &[&str]) {
        if let Err(why) = check_url(value, schemes) {
            self.add(at, why);
        }
    }
}

fn at(keys: &[&str], index: usize, field: &str) -> Vec<Seg> {
    let mut p = path(keys);
    p.push(Seg::Index(index));
    p.push(Seg::Key(field.to_owned()));
    p
}

fn node_names(config: &Config) -> String {
    let mut names: Vec<&str> = Vec::new();
    for node in &config.nodes {
        if !names.contains(&node.name.as_str()) {
            names.push(&node.name);
        }
    }
    names.join(", ")
}

fn nodes(config: &Config, out: &mut Problems<'_, '_>) {
    if config.nodes.is_empty() {
        out.add(&path(&["nodes"]), "no nodes: add one `[[nodes]]` table per node (name, role, ssh_host, ssh_port)");
        return;
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, node) in config.nodes.iter().enumerate() {
        if node.name.trim().is_empty() {
            out.add(&at(&["nodes"], i, "name"), "must not be empty");
        } else if let Some(first) = seen.get(node.name.as_str()) {
            let first_at = dotted(&at(&["nodes"], *first, "name"));
            out.add(&at(&["nodes"], i, "name"), format!("duplicate node name `{}`; {first_at} has it already", node.name));
        } else {
            seen.insert(&node.name, i);
        }
        if node.ssh_host.trim().is_empty() {
            out.add(&at(&["nodes"], i, "ssh_host"), "must not be empty: the host name or address sshd listens on");
        }
    }
    let control_planes: Vec<usize> =
        config.nodes.iter().enumerate().filter(|(_, n)| n.role == Role::ControlPlane).map(|(i, _)| i).collect();
    match control_planes.as_slice() {
        [] => out.add(
            &at(&["nodes"], 0, "role"),
            "no node has role = \"control-plane\"; exactly one must (dr recovers a single control plane)",
        ),
        [_] => {}
        [first, rest @ ..] => {
            let first_at = dotted(&at(&["nodes"], *first, "role"));
            for i in rest {
                out.add(
                    &at(&["nodes"], *i, "role"),
                    format!("a second control-plane node ({first_at} is one); exactly one node must be the control plane"),
                );
            }
        }
    }
}

fn cluster(config: &Config, out: &mut Problems<'_, '_>) {
    out.not_empty(&["cluster", "kubeconfig"], &config.cluster.kubeconfig.to_string_lossy());
    match config.node(&config.cluster.control_plane) {
        None => out.add(
            &path(&["cluster", "control_plane"]),
            format!("names no node; expected one of the [[nodes]] names: {}", node_names(config)),
        ),
        Some(node) if node.role != Role::ControlPlane => out.add(
            &path(&["cluster", "control_plane"]),
            format!("node `{}` has role = \"{}\"; name the node whose role is \"control-plane\"", node.name, node.role),
        ),
        Some(_) => {}
    }
    if let Some(url) = &config.cluster.api_url {
        out.url(&path(&["cluster", "api_url"]), url, &["http", "https"]);
    }
}

fn etcd(config: &Config, out: &mut Problems<'_, '_>) {
    let etcd = &config.etcd;
    if etcd.endpoints.is_empty() {
        out.add(&path(&["etcd", "endpoints"]), "no endpoints; expected at least one client URL like https://10.0.0.10:2379");
    }
    for (i, endpoint) in etcd.endpoints.iter().enumerate() {
        let mut p = path(&["etcd", "endpoints"]);
        p.push(Seg::Index(i));
        out.url(&p, endpoint, &["https"]);
    }
    for (keys, value) in [
        (["etcd", "cacert"], &etcd.cacert),
        (["etcd", "cert"], &etcd.cert),
        (["etcd", "key"], &etcd.key),
    ] {
        out.not_empty(&keys, &value.to_string_lossy());
    }
    out.not_empty(&["etcd", "name"], &etcd.name);
    out.not_empty(&["etcd", "initial_cluster_token"], &etcd.initial_cluster_token);
    out.not_empty(&["etcd", "data_dir"], &etcd.data_dir);
    for url in etcd.initial_advertise_peer_urls.split(',') {
        if let Err(why) = check_url(url.trim(), &["http", "https"]) {
            out.add(&path(&["etcd", "initial_advertise_peer_urls"]), why);
            break;
        }
    }
    let mut members = Vec::new();
    for member in etcd.initial_cluster.split(',') {
        let Some((name, url)) = member.split_once('=') else {
            out.add(&path(&["etcd", "initial_cluster"]), "expected NAME=PEER_URL[,NAME=PEER_URL...]");
            return;
        };
        if let Err(why) = check_url(url.trim(), &["http", "https"]) {
            out.add(&path(&["etcd", "initial_cluster"]), format!("member `{}`: {why}", name.trim()));
            return;
        }
        members.push(name.trim());
    }
    if !etcd.name.trim().is_empty() && !members.contains(&etcd.name.trim()) {
        out.add(
            &path(&["etcd", "initial_cluster"]),
            format!("does not list the member etcd.name = `{}`; expected `{}=PEER_URL` among its members", etcd.name, etcd.name),
        );
    }
    if config.node(&etcd.node).is_none() {
        out.add(&path(&["etcd", "node"]), format!("names no node; expected one of the [[nodes]] names: {}", node_names(config)));
    }
}

fn others(config: &Config, out: &mut Problems<'_, '_>) {
    out.not_empty(&["ssh", "user"], &config.ssh.user);
    out.not_empty(&["ssh", "known_hosts"], &config.ssh.known_hosts.to_string_lossy());
    if config.ssh.connect_timeout_ms == 0 {
        out.add(&path(&["ssh", "connect_timeout_ms"]), "must be greater than 0");
    }
    out.not_empty(&["backup", "dir"], &config.backup.dir.to_string_lossy());
    if config.backup.rpo_hours == 0 {
        out.add(&path(&["backup", "rpo_hours"]), "must be greater than 0: the age in hours the newest backup may reach");
    }
    out.not_empty(&["backup", "pattern"], &config.backup.pattern);
    out.not_empty(&["terraform", "dir"], &config.terraform.dir.to_string_lossy());
    out.not_empty(&["terraform", "binary"], &config.terraform.binary.to_string_lossy());
    out.not_empty(&["terraform", "control_plane_target"], &config.terraform.control_plane_target);
    for (name, target) in &config.terraform.node_targets {
        let p = path(&["terraform", "node_targets", name]);
        match config.node(name) {
            None => out.add(&p, format!("names no node; expected one of the [[nodes]] names: {}", node_names(config))),
            Some(node) if node.role == Role::ControlPlane => {
                out.add(&p, "is the control plane; its target is terraform.control_plane_target")
            }
            Some(_) if target.trim().is_empty() => out.add(&p, "must not be empty"),
            Some(_) => {}
        }
    }
    for (keys, value) in [
        (["scripts", "host_setup_dir"], &config.scripts.host_setup_dir),
        (["scripts", "platform_dir"], &config.scripts.platform_dir),
        (["scripts", "restore"], &config.scripts.restore),
    ] {
        out.not_empty(&keys, &value.to_string_lossy());
    }
    out.url(&path(&["verify", "ingress_url"]), &config.verify.ingress_url, &["http", "https"]);
    for (name, url) in &config.verify.urls {
        out.url(&path(&["verify", "urls", name]), url, &["http", "https"]);
    }
    let targets = &config.targets;
    for (key, minutes) in [
        ("l1_minutes", targets.l1_minutes),
        ("l2_minutes", targets.l2_minutes),
        ("l3_minutes", targets.l3_minutes),
        ("l4_minutes", targets.l4_minutes),
    ] {
        if minutes == 0 {
            out.add(&path(&["targets", key]), "must be greater than 0 (minutes)");
        }
    }
}

fn later_sections(config: &Config, out: &mut Problems<'_, '_>) {
    let mut routes: BTreeMap<&str, usize> = BTreeMap::new();
    if let Some(escalation) = &config.escalation {
        for (i, route) in escalation.routes.iter().enumerate() {
            let key = |k: &str| at(&["escalation", "routes"], i, k);
            if route.name.trim().is_empty() {
                out.add(&key("name"), "must not be empty");
            } else if let Some(first) = routes.get(route.name.as_str()) {
                let first_at = dotted(&at(&["escalation", "routes"], *first, "name"));
                out.add(&key("name"), format!("duplicate route name `{}`; {first_at} has it already", route.name));
            } else {
                routes.insert(&route.name, i);
            }
            for level in &route.levels {
                if !(1..=4).contains(level) {
                    out.add(&key("levels"), format!("{level} is not a failure level; levels are 1 to 4"));
                }
            }
        }
    }
    for (i, rule) in config.alerts.iter().enumerate() {
        out.not_empty_at(&at(&["alerts"], i, "alertname"), &rule.alertname);
        out.not_empty_at(&at(&["alerts"], i, "workflow"), &rule.workflow);
    }
}

impl Problems<'_, '_> {
    fn not_empty_at(&mut self, at: &[Seg], value: &str) {
        if value.trim().is_empty() {
            self.add(at, "must not be empty");
        }
    }
}

/// Whether `url` is an absolute URL with one of `schemes` and a host.
pub(super) fn check_url(url: &str, schemes: &[&str]) -> Result<(), String> {
    let expected = format!("expected a {} URL like {}://HOST:PORT/", schemes.join(" or "), schemes[schemes.len() - 1]);
    let uri: ureq::http::Uri = url.parse().map_err(|e| format!("not a URL ({e}); {expected}"))?;
    match uri.scheme_str() {
        Some(scheme) if schemes.contains(&scheme) => {}
        Some(scheme) => return Err(format!("scheme `{scheme}` is not allowed here; {expected}")),
        None => return Err(format!("not an absolute URL; {expected}")),
    }
    let Some(authority) = uri.authority() else { return Err(format!("the URL has no host; {expected}")) };
    if authority.host().is_empty() {
        return Err(format!("the URL has no host; {expected}"));
    }
    if authority.as_str().contains('@') {
        return Err("the URL carries credentials; dr.toml holds none (keep them in files)".to_owned());
    }
    // `Authority::port` is None for a port that is not a u16: read what is written.
    let written_port = authority.as_str().rsplit_once(':').map(|(_, port)| port).filter(|port| !port.contains(']'));
    if let Some(port) = written_port {
        if !matches!(port.parse::<u16>(), Ok(1..)) {
            return Err(format!("port {port} is not 1-65535; {expected}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_url;

    #[test]
    fn urls_need_a_listed_scheme_and_a_host() {
        assert!(check_url("https://127.0.0.1:2379", &["https"]).is_ok());
        assert!(check_url("http://127.0.0.100:8080/", &["http", "https"]).is_ok());
        assert!(check_url("http://127.0.0.1:2379", &["https"]).is_err());
        assert!(check_url("127.0.0.1:2379", &["https"]).is_err());
        assert!(check_url("https://", &["https"]).is_err());
        assert!(check_url("https://h:99999/", &["https"]).is_err());
        assert!(check_url("https://h:0/", &["https"]).is_err());
        assert!(check_url("https://[::1]:2379", &["https"]).is_ok());
        assert!(check_url("https://[::1]/", &["https"]).is_ok());
        assert!(check_url("not a url", &["https"]).is_err());
        let with_password = check_url("https://u:hunter2@h/", &["https"]).unwrap_err();
        assert!(!with_password.contains("hunter2"), "{with_password}");
    }
}
