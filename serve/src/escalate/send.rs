//! The senders: one notification to one route — a Slack-compatible webhook,
//! PagerDuty Events API v2, or mail over SMTP. Blocking clients (ureq,
//! lettre) run on the blocking pool, each bounded by a timeout.
//!
//! Secrets are read from their files at each send (so a rotated one is used
//! at once) and never leave this module: errors are built from the route's
//! name, the file's path and the kind of failure only — never from a client
//! library's message, which may carry the URL (a Slack webhook URL *is* the
//! secret) or a server's echo.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dr_state::RunStatus;
use dr_workflows::config::{EscalationRoute, RouteKind, SmtpTls};
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Message, SmtpTransport, Transport};
use serde_json::json;

use super::{Notification, NotificationKind, WaitKind};

/// PagerDuty's Events API v2 endpoint, used when a route names none.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

const HTTP_TIMEOUT: Duration = Duration::from_secs(20);
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a notification did not reach a route. No variant carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("route {route}: {field} is not set")]
    Missing { route: String, field: &'static str },
    #[error("route {route}: cannot read {field} {}: {kind}", path.display())]
    Secret { route: String, field: &'static str, path: PathBuf, kind: io::ErrorKind },
    #[error("route {route}: {what}")]
    Invalid { route: String, what: String },
    #[error("route {route}: the receiver answered HTTP {status}")]
    Status { route: String, status: u16 },
    #[error("route {route}: {what}")]
    Transport { route: String, what: String },
    #[error("route {route}: the mail server refused the message permanently{}", code_text(code))]
    SmtpPermanent { route: String, code: Option<String> },
    #[error("route {route}: the send task failed")]
    Task { route: String },
}

fn code_text(code: &Option<String>) -> String {
    code.as_ref().map(|c| format!(" (SMTP {c})")).unwrap_or_default()
}

impl SendError {
    /// Whether trying again soon may help. Permanent errors (bad
    /// configuration, a 4xx other than 408/429, an SMTP 5xx) are still
    /// retried, but at the backoff's maximum: only an operator fixes them.
    pub fn is_retryable(&self) -> bool {
        match self {
            SendError::Missing { .. } | SendError::Invalid { .. } | SendError::SmtpPermanent { .. } => false,
            SendError::Status { status, .. } => !(400..500).contains(status) || matches!(status, 408 | 429),
            SendError::Secret { .. } | SendError::Transport { .. } | SendError::Task { .. } => true,
        }
    }
}

/// Sends `note` to `route`, on the blocking pool. `Ok` once the receiver
/// accepted it (HTTP 2xx, SMTP 250).
pub async fn deliver(route: &EscalationRoute, note: &Notification) -> Result<(), SendError> {
    let (route, note) = (route.clone(), note.clone());
    let name = route.name.clone();
    tokio::task::spawn_blocking(move || deliver_blocking(&route, &note))
        .await
        .unwrap_or(Err(SendError::Task { route: name }))
}

/// [`deliver`], on the calling thread.
pub fn deliver_blocking(route: &EscalationRoute, note: &Notification) -> Result<(), SendError> {
    match route.kind {
        RouteKind::Slack => {
            let url = read_secret(route, "url_file", route.url_file.as_deref())?;
            post_json(route, &url, &slack_body(note))
        }
        RouteKind::Pagerduty => {
            let key = read_secret(route, "routing_key_file", route.routing_key_file.as_deref())?;
            let url = route.events_url.as_deref().unwrap_or(PAGERDUTY_EVENTS_URL);
            post_json(route, url, &pagerduty_body(note, &key))
        }
        RouteKind::Email => send_mail(route, note),
    }
}

/// The Slack-compatible body: `{"text": …}`, the notification's key last so a
/// resend is recognisable.
pub fn slack_body(note: &Notification) -> Vec<u8> {
    let text = format!("*{}*\n{}\nref: {}", note.title, note.text, note.key);
    json!({ "text": text }).to_string().into_bytes()
}

/// Whether a notification opens/updates the run's PagerDuty incident or ends it.
pub fn pagerduty_action(note: &Notification) -> &'static str {
    match &note.kind {
        NotificationKind::Finished { status: RunStatus::Succeeded | RunStatus::Cancelled, .. } => "resolve",
        _ => "trigger",
    }
}

/// The incident's dedup key: one per run.
pub fn pagerduty_dedup_key(note: &Notification) -> String {
    format!("dr-{}", note.run)
}

fn severity(note: &Notification) -> &'static str {
    match &note.kind {
        NotificationKind::AtRisk { .. } | NotificationKind::Finished { status: RunStatus::Failed, .. } => "critical",
        NotificationKind::Waiting { wait: WaitKind::Failed, .. } => "critical",
        NotificationKind::Waiting { .. } => "error",
        NotificationKind::Finished { .. } => "info",
        NotificationKind::Started => match note.level {
            4 => "critical",
            3 => "error",
            2 => "warning",
            _ => "info",
        },
    }
}

/// The Events API v2 body.
pub fn pagerduty_body(note: &Notification, routing_key: &str) -> Vec<u8> {
    let summary: String = note.title.chars().take(1024).collect();
    json!({
        "routing_key": routing_key,
        "event_action": pagerduty_action(note),
        "dedup_key": pagerduty_dedup_key(note),
        "payload": {
            "summary": summary,
            "source": "dr",
            "severity": severity(note),
            "component": note.workflow,
            "group": format!("level-{}", note.level),
            "class": kind_name(&note.kind),
            "custom_details": {
                "notification": note.key,
                "run": note.run.to_string(),
                "text": note.text,
            },
        },
    })
    .to_string()
    .into_bytes()
}

fn kind_name(kind: &NotificationKind) -> &'static str {
    match kind {
        NotificationKind::Started => "started",
        NotificationKind::Waiting { .. } => "waiting",
        NotificationKind::AtRisk { .. } => "at-risk",
        NotificationKind::Finished { .. } => "finished",
    }
}

fn read_secret(route: &EscalationRoute, field: &'static str, path: Option<&Path>) -> Result<String, SendError> {
    let path = path.ok_or_else(|| SendError::Missing { route: route.name.clone(), field })?;
    let text = std::fs::read_to_string(path).map_err(|e| SendError::Secret {
        route: route.name.clone(),
        field,
        path: path.to_owned(),
        kind: e.kind(),
    })?;
    let secret = text.trim().to_owned();
    if secret.is_empty() {
        return Err(SendError::Invalid { route: route.name.clone(), what: format!("{field} {} is empty", path.display()) });
    }
    Ok(secret)
}

fn post_json(route: &EscalationRoute, url: &str, body: &[u8]) -> Result<(), SendError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(HTTP_TIMEOUT))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let response = agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body)
        .map_err(|e| ureq_failure(route, &e))?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(SendError::Status { route: route.name.clone(), status })
    }
}

/// What went wrong, from the error's kind only: ureq's own messages can
/// carry the URL.
fn ureq_failure(route: &EscalationRoute, e: &ureq::Error) -> SendError {
    use ureq::Error as E;
    let invalid = |what: &str| SendError::Invalid { route: route.name.clone(), what: what.to_owned() };
    let what: String = match e {
        E::Timeout(_) => "the request timed out".into(),
        E::HostNotFound => "the receiver's host was not found".into(),
        E::ConnectionFailed => "cannot connect to the receiver".into(),
        E::Io(io) => format!("i/o error talking to the receiver: {}", io.kind()),
        E::BadUri(_) | E::Http(_) => return invalid("the receiver's URL is not valid"),
        E::RequireHttpsOnly(_) => return invalid("the receiver's URL is not https"),
        E::Tls(_) | E::Rustls(_) | E::Pem(_) | E::TlsRequired => "the TLS connection to the receiver failed".into(),
        E::Protocol(_) => "the receiver's answer is not valid HTTP".into(),
        _ => "the request failed".into(),
    };
    SendError::Transport { route: route.name.clone(), what }
}

/// The `Message-ID` of a notification's mail: its key, `:` made `.`, at the
/// sender's domain — the same for every send of it.
pub fn message_id(key: &str, domain: &str) -> String {
    format!("<{}@{}>", key.replace(':', "."), domain)
}

fn send_mail(route: &EscalationRoute, note: &Notification) -> Result<(), SendError> {
    let invalid = |what: String| SendError::Invalid { route: route.name.clone(), what };
    let smtp = route.smtp.as_deref().ok_or_else(|| SendError::Missing { route: route.name.clone(), field: "smtp" })?;
    let (host, port) = smtp
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
        .ok_or_else(|| invalid(format!("smtp {smtp:?} is not HOST:PORT")))?;
    let from = route.from.as_deref().ok_or_else(|| SendError::Missing { route: route.name.clone(), field: "from" })?;
    let from: Mailbox = from.parse().map_err(|_| invalid(format!("from {from:?} is not a mail address")))?;
    if route.to.is_empty() {
        return Err(SendError::Missing { route: route.name.clone(), field: "to" });
    }
    let domain = from.email.domain().to_owned();
    let mut builder = Message::builder()
        .from(from)
        .subject(note.title.clone())
        .message_id(Some(message_id(&note.key, &domain)))
        .header(ContentType::TEXT_PLAIN);
    if note.kind != NotificationKind::Started {
        // Threads every mail of a run under its "started" one.
        let first = message_id(&format!("{}:started", note.run), &domain);
        builder = builder.in_reply_to(first.clone()).references(first);
    }
    for to in &route.to {
        let mailbox: Mailbox = to.parse().map_err(|_| invalid(format!("to {to:?} is not a mail address")))?;
        builder = builder.to(mailbox);
    }
    let body = format!("{}\n\nref: {}\n", note.text, note.key);
    let message = builder.body(body).map_err(|_| invalid("the message cannot be built".into()))?;

    let tls_failed = |_| SendError::Transport { route: route.name.clone(), what: "cannot set up TLS".into() };
    let mut transport = match route.tls.unwrap_or_default() {
        SmtpTls::None => SmtpTransport::builder_dangerous(host),
        SmtpTls::Starttls => SmtpTransport::starttls_relay(host).map_err(tls_failed)?,
        SmtpTls::Tls => SmtpTransport::relay(host).map_err(tls_failed)?,
    }
    .port(port)
    .timeout(Some(SMTP_TIMEOUT));
    if let Some(user) = &route.username {
        let password = read_secret(route, "password_file", route.password_file.as_deref())?;
        transport = transport.credentials(Credentials::new(user.clone(), password));
    }
    transport.build().send(&message).map(|_| ()).map_err(|e| smtp_failure(route, &e))
}

/// What went wrong, from the error's kind and SMTP code only.
fn smtp_failure(route: &EscalationRoute, e: &lettre::transport::smtp::Error) -> SendError {
    let code = e.status().map(|c| c.to_string());
    if e.is_permanent() {
        return SendError::SmtpPermanent { route: route.name.clone(), code };
    }
    let what = if e.is_timeout() {
        "the mail server did not answer in time".to_owned()
    } else if e.is_tls() {
        "the TLS connection to the mail server failed".to_owned()
    } else if e.is_transient() {
        format!("the mail server refused the message for now{}", code_text(&code))
    } else {
        "cannot talk to the mail server".to_owned()
    };
    SendError::Transport { route: route.name.clone(), what }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dr_state::RunId;

    fn note(kind: NotificationKind) -> Notification {
        let run = RunId::new_v7(1, 2);
        Notification {
            key: format!("{run}:finished"),
            run,
            workflow: "w".into(),
            level: 4,
            kind,
            title: "t".into(),
            text: "x".into(),
            at_ms: 0,
        }
    }

    #[test]
    fn success_and_cancel_resolve_the_incident_the_rest_trigger_it() {
        let fin = |status| NotificationKind::Finished { status, elapsed_ms: 1, target_ms: 2 };
        assert_eq!(pagerduty_action(&note(fin(RunStatus::Succeeded))), "resolve");
        assert_eq!(pagerduty_action(&note(fin(RunStatus::Cancelled))), "resolve");
        assert_eq!(pagerduty_action(&note(fin(RunStatus::Failed))), "trigger");
        assert_eq!(pagerduty_action(&note(NotificationKind::Started)), "trigger");
        let body: serde_json::Value = serde_json::from_slice(&pagerduty_body(&note(NotificationKind::Started), "K")).unwrap();
        assert_eq!(body["routing_key"], "K");
        assert_eq!(body["dedup_key"], format!("dr-{}", RunId::new_v7(1, 2)));
        assert_eq!(body["payload"]["severity"], "critical");
    }

    #[test]
    fn message_ids_are_valid_and_follow_the_key() {
        let id = message_id("0190-ab:wait:drain:gate:0", "example.org");
        assert_eq!(id, "<0190-ab.wait.drain.gate.0@example.org>");
        assert!(!id[1..id.len() - 1].contains(':'));
    }

    #[test]
    fn http_statuses_split_into_retryable_and_permanent() {
        let status = |status| SendError::Status { route: "r".into(), status };
        assert!(status(500).is_retryable());
        assert!(status(429).is_retryable());
        assert!(!status(400).is_retryable());
        assert!(!status(404).is_retryable());
    }
}
