//! The semantic checks of `dr.toml`, after it parsed into [`Config`]: what
//! the types cannot say (one control plane, names that refer to nodes,
//! unique names, URLs, positive durations), each located at its key.
//!
//! Every section is optional; a rule across sections (a node named by
//! `[etcd]`, the control plane among `[[nodes]]`) applies when both are there.
//!
//! Owns: those rules. Refuses: reaching anything (files may be absent here;
//! `dr config check --connect` tries them).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::source::{dotted, path, suggestion, Seg, Source};
use super::{Config, Problem, Role, RouteKind};

/// Every semantic problem of `config` (in no particular order).
pub(super) fn validate(config: &Config, source: &Source<'_>) -> Vec<Problem> {
    let mut out = Problems { source, problems: Vec::new() };
    nodes(config, &mut out);
    cluster(config, &mut out);
    etcd(config, &mut out);
    others(config, &mut out);
    serve(config, &mut out);
    alerts(config, &mut out);
    escalation(config, &mut out);
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

    fn not_empty_at(&mut self, at: &[Seg], value: &str) {
        if value.trim().is_empty() {
            self.add(at, "must not be empty");
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
    // No `[[nodes]]`: a file for what needs no inventory (`dr serve`, pod-recovery).
    if config.nodes.is_empty() {
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
    let Some(cluster) = &config.cluster else { return };
    out.not_empty(&["cluster", "kubeconfig"], &cluster.kubeconfig.to_string_lossy());
    match config.node(&cluster.control_plane) {
        // Without `[[nodes]]` the name cannot be checked; what needs both asks for both.
        None if config.nodes.is_empty() => out.not_empty(&["cluster", "control_plane"], &cluster.control_plane),
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
    if let Some(url) = &cluster.api_url {
        out.url(&path(&["cluster", "api_url"]), url, &["http", "https"]);
    }
}

fn etcd(config: &Config, out: &mut Problems<'_, '_>) {
    let Some(etcd) = &config.etcd else { return };
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
    if config.nodes.is_empty() {
        out.not_empty(&["etcd", "node"], &etcd.node);
    } else if config.node(&etcd.node).is_none() {
        out.add(&path(&["etcd", "node"]), format!("names no node; expected one of the [[nodes]] names: {}", node_names(config)));
    }
}

fn others(config: &Config, out: &mut Problems<'_, '_>) {
    if let Some(ssh) = &config.ssh {
        out.not_empty(&["ssh", "user"], &ssh.user);
        out.not_empty(&["ssh", "known_hosts"], &ssh.known_hosts.to_string_lossy());
        if ssh.connect_timeout_ms == 0 {
            out.add(&path(&["ssh", "connect_timeout_ms"]), "must be greater than 0");
        }
    }
    if let Some(backup) = &config.backup {
        out.not_empty(&["backup", "dir"], &backup.dir.to_string_lossy());
        if backup.rpo_hours == 0 {
            out.add(&path(&["backup", "rpo_hours"]), "must be greater than 0: the age in hours the newest backup may reach");
        }
        out.not_empty(&["backup", "pattern"], &backup.pattern);
    }
    if let Some(terraform) = &config.terraform {
        out.not_empty(&["terraform", "dir"], &terraform.dir.to_string_lossy());
        out.not_empty(&["terraform", "binary"], &terraform.binary.to_string_lossy());
        out.not_empty(&["terraform", "control_plane_target"], &terraform.control_plane_target);
        for (name, target) in &terraform.node_targets {
            let p = path(&["terraform", "node_targets", name]);
            match config.node(name) {
                None if config.nodes.is_empty() => {}
                None => out.add(&p, format!("names no node; expected one of the [[nodes]] names: {}", node_names(config))),
                Some(node) if node.role == Role::ControlPlane => {
                    out.add(&p, "is the control plane; its target is terraform.control_plane_target")
                }
                Some(_) => {}
            }
            if target.trim().is_empty() {
                out.add(&p, "must not be empty");
            }
        }
    }
    if let Some(scripts) = &config.scripts {
        for (keys, value) in [
            (["scripts", "host_setup_dir"], &scripts.host_setup_dir),
            (["scripts", "platform_dir"], &scripts.platform_dir),
            (["scripts", "restore"], &scripts.restore),
        ] {
            out.not_empty(&keys, &value.to_string_lossy());
        }
    }
    if let Some(verify) = &config.verify {
        out.url(&path(&["verify", "ingress_url"]), &verify.ingress_url, &["http", "https"]);
        for (name, url) in &verify.urls {
            out.url(&path(&["verify", "urls", name]), url, &["http", "https"]);
        }
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

fn serve(config: &Config, out: &mut Problems<'_, '_>) {
    let Some(serve) = &config.serve else { return };
    if let Some(listen) = &serve.listen {
        match listen.trim().parse::<SocketAddr>() {
            Err(_) => out.add(
                &path(&["serve", "listen"]),
                "expected ADDR:PORT with an IP address, like 127.0.0.1:9464 or [::1]:9464 (a host name is not resolved here)",
            ),
            Ok(addr) if addr.port() == 0 => out.add(&path(&["serve", "listen"]), "port 0 is not a port to listen on; expected 1-65535"),
            Ok(addr) if !addr.ip().is_loopback() && serve.token_file.is_none() => out.add(
                &path(&["serve", "listen"]),
                format!(
                    "{} is not a loopback address, so the webhook needs a bearer token: set serve.token_file to a file \
                     holding it (or listen on 127.0.0.1)",
                    addr.ip()
                ),
            ),
            Ok(_) => {}
        }
    }
    if let Some(token) = &serve.token_file {
        out.not_empty(&["serve", "token_file"], &token.to_string_lossy());
    }
    if !(1..=MAX_BODY_LIMIT).contains(&serve.max_body_bytes) {
        out.add(
            &path(&["serve", "max_body_bytes"]),
            format!("must be 1 to {MAX_BODY_LIMIT} bytes (64 MiB); the default is 1048576 (1 MiB)"),
        );
    }
}

/// The largest `serve.max_body_bytes` accepted: 64 MiB.
const MAX_BODY_LIMIT: u64 = 64 << 20;

fn alerts(config: &Config, out: &mut Problems<'_, '_>) {
    let catalog = crate::workflow_infos();
    let names: Vec<&str> = catalog.iter().map(|w| w.name).collect();
    for (i, rule) in config.alerts.iter().enumerate() {
        let key = |k: &str| at(&["alerts"], i, k);
        out.not_empty_at(&key("alertname"), &rule.alertname);
        let info = if rule.workflow.trim().is_empty() {
            out.add(&key("workflow"), format!("must not be empty; expected one of: {}", names.join(", ")));
            None
        } else {
            let found = catalog.iter().find(|w| w.name == rule.workflow);
            if found.is_none() {
                let mut message = "names no workflow".to_owned();
                if let Some(close) = suggestion(&rule.workflow, &names) {
                    message.push_str(&format!(" (did you mean `{close}`?)"));
                }
                message.push_str(&format!("; expected one of: {} (`dr workflows` lists them)", names.join(", ")));
                out.add(&key("workflow"), message);
            }
            found
        };
        for (name, value) in &rule.params {
            let mut p = key("params");
            p.push(Seg::Key(name.clone()));
            if let Some(info) = info {
                let known: Vec<&str> = info.params.iter().map(|param| param.name).collect();
                if !known.contains(&name.as_str()) {
                    let mut message = format!("{} has no parameter `{name}`", info.name);
                    if let Some(close) = suggestion(name, &known) {
                        message.push_str(&format!(" (did you mean `{close}`?)"));
                    }
                    if known.is_empty() {
                        message.push_str("; it takes none");
                    } else {
                        message.push_str(&format!("; it takes: {}", known.join(", ")));
                    }
                    out.add(&p, message);
                    continue;
                }
            }
            if let Err(why) = check_label_references(value) {
                out.add(&p, why);
            }
        }
    }
}

/// Every `$` in an alert rule's parameter value starts `$labels.NAME`
/// (NAME: a Prometheus label name, `[A-Za-z_][A-Za-z0-9_]*`).
pub(super) fn check_label_references(value: &str) -> Result<(), String> {
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        let after = &rest[at + 1..];
        let name_len = after.strip_prefix("labels.").map_or(0, |name| {
            let mut chars = name.char_indices();
            match chars.next() {
                Some((_, c)) if c.is_ascii_alphabetic() || c == '_' => {
                    chars.find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_')).map_or(name.len(), |(i, _)| i)
                }
                _ => 0,
            }
        });
        if name_len == 0 {
            let written: String = rest[at..].chars().take_while(|c| !c.is_whitespace()).take(40).collect();
            return Err(format!(
                "`{written}`: a `$` starts a reference to the alert's labels, written `$labels.NAME` \
                 (NAME: letters, digits and `_`, not starting with a digit)"
            ));
        }
        rest = &after["labels.".len() + name_len..];
    }
    Ok(())
}

/// Which fields belong to which route kind.
const ROUTE_FIELDS: &[(&str, RouteKind)] = &[
    ("url_file", RouteKind::Slack),
    ("routing_key_file", RouteKind::Pagerduty),
    ("events_url", RouteKind::Pagerduty),
    ("smtp", RouteKind::Email),
    ("tls", RouteKind::Email),
    ("from", RouteKind::Email),
    ("to", RouteKind::Email),
    ("username", RouteKind::Email),
    ("password_file", RouteKind::Email),
];

fn escalation(config: &Config, out: &mut Problems<'_, '_>) {
    let Some(escalation) = &config.escalation else { return };
    let mut routes: BTreeMap<&str, usize> = BTreeMap::new();
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
        if route.levels.is_empty() {
            out.add(&key("levels"), "no levels; expected the failure levels (1 to 4) this route is told about, e.g. [3, 4]");
        }
        let mut seen = Vec::new();
        for level in &route.levels {
            if !(1..=4).contains(level) {
                out.add(&key("levels"), format!("{level} is not a failure level; levels are 1 to 4"));
            } else if seen.contains(level) {
                out.add(&key("levels"), format!("level {level} is listed twice"));
            }
            seen.push(*level);
        }
        let set = |field: &str| match field {
            "url_file" => route.url_file.is_some(),
            "routing_key_file" => route.routing_key_file.is_some(),
            "events_url" => route.events_url.is_some(),
            "smtp" => route.smtp.is_some(),
            "tls" => route.tls.is_some(),
            "from" => route.from.is_some(),
            "to" => !route.to.is_empty(),
            "username" => route.username.is_some(),
            "password_file" => route.password_file.is_some(),
            _ => false,
        };
        for (field, owner) in ROUTE_FIELDS {
            if *owner != route.kind && set(field) {
                out.add(&key(field), format!("{field} is for kind {owner}; this route is kind {}", route.kind));
            }
        }
        for (field, file) in [("url_file", &route.url_file), ("routing_key_file", &route.routing_key_file), ("password_file", &route.password_file)] {
            if let Some(file) = file {
                out.not_empty_at(&key(field), &file.to_string_lossy());
            }
        }
        let mut require = |field: &str, what: &str| {
            if !set(field) {
                out.add(&key(field), format!("missing: kind {} needs {field}, {what}", route.kind));
            }
        };
        match route.kind {
            RouteKind::Slack => require("url_file", "a file holding the webhook URL"),
            RouteKind::Pagerduty => require("routing_key_file", "a file holding the integration's routing key"),
            RouteKind::Email => {
                require("smtp", "the SMTP server as HOST:PORT");
                require("from", "the sender address");
                require("to", "the recipients' addresses");
            }
        }
        if route.kind == RouteKind::Pagerduty {
            if let Some(url) = &route.events_url {
                out.url(&key("events_url"), url, &["http", "https"]);
            }
        }
        if route.kind == RouteKind::Email {
            if let Some(smtp) = &route.smtp {
                if let Err(why) = check_host_port(smtp) {
                    out.add(&key("smtp"), why);
                }
            }
            if let Some(from) = &route.from {
                if let Err(why) = check_address(from) {
                    out.add(&key("from"), why);
                }
            }
            for (j, to) in route.to.iter().enumerate() {
                if let Err(why) = check_address(to) {
                    let mut p = key("to");
                    p.push(Seg::Index(j));
                    out.add(&p, why);
                }
            }
            if let Some(username) = &route.username {
                out.not_empty_at(&key("username"), username);
            }
            if route.password_file.is_some() && route.username.is_none() {
                out.add(&key("password_file"), "a password without a user: set username too (or drop password_file)");
            }
        }
    }
}

/// `HOST:PORT`: a host name or address (IPv6 in brackets) and a port 1-65535.
pub(super) fn check_host_port(value: &str) -> Result<(), String> {
    let expected = "expected HOST:PORT, like smtp.example.org:587";
    let Some((host, port)) = value.rsplit_once(':') else { return Err(format!("no port; {expected}")) };
    if !matches!(port.parse::<u16>(), Ok(1..)) {
        return Err(format!("port `{port}` is not 1-65535; {expected}"));
    }
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    let valid = match bare {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_'),
    };
    if valid {
        Ok(())
    } else {
        Err(format!("`{host}` is not a host name or address; {expected}"))
    }
}

/// `NAME@DOMAIN`, plainly (no display name, no spaces).
pub(super) fn check_address(value: &str) -> Result<(), String> {
    let plain = !value.chars().any(|c| c.is_whitespace() || c.is_control() || "<>,;\"()[]\\".contains(c));
    match value.split_once('@') {
        Some((local, domain))
            if plain && !local.is_empty() && !domain.is_empty() && !domain.contains('@') && !domain.starts_with('.') && !domain.ends_with('.') =>
        {
            Ok(())
        }
        _ => Err(format!("`{value}` does not look like an e-mail address; expected NAME@DOMAIN, like ops@example.org")),
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
    use super::{check_address, check_host_port, check_label_references, check_url};

    #[test]
    fn label_references_host_ports_and_addresses() {
        assert!(check_label_references("$labels.node").is_ok());
        assert!(check_label_references("x-$labels.a_1-$labels.B").is_ok());
        assert!(check_label_references("no reference").is_ok());
        for wrong in ["$", "$labels", "$labels.", "$labels.9", "$LABELS.node", "a$b", "$labels.é"] {
            assert!(check_label_references(wrong).is_err(), "{wrong}");
        }
        assert!(check_host_port("smtp.example.org:587").is_ok());
        assert!(check_host_port("[2001:db8::1]:25").is_ok());
        for wrong in ["smtp.example.org", ":25", "h:0", "h:65536", "a b:25", "[nope]:25", "user@h:25"] {
            assert!(check_host_port(wrong).is_err(), "{wrong}");
        }
        assert!(check_address("ops@example.org").is_ok());
        for wrong in ["ops", "@example.org", "ops@", "a@b@c", "Ops <ops@example.org>", "ops@example.org.", "o ps@x"] {
            assert!(check_address(wrong).is_err(), "{wrong}");
        }
    }

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
