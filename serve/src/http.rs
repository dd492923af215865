//! The HTTP listener of `dr serve`: `POST /alertmanager` (the webhook),
//! `GET /metrics`, `GET /healthz` — and nothing else.
//!
//! Owns the routes, the bearer-token check (constant-time, never echoed or
//! logged), the body limit, the listen-address rule ([`check_listen`]) and the
//! accept loop with its graceful shutdown ([`serve`]). Refuses: any other path
//! (404) or method (405) — the control API (runs, operator decisions) is only
//! ever on the 0600 control socket, never here; a body over the limit (413);
//! a body that is not JSON (415); a wrong or missing token when one is
//! configured (401). Alert semantics live in `alerts.rs`, metric names in
//! `metrics.rs`.

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::alerts::{self, Alerts};
use crate::metrics::{self, MetricsSource};

/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send its body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`serve`] waits for requests in flight once told to stop.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What can be wrong with the listener's settings.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listen address {addr:?} is not IP:PORT (e.g. 127.0.0.1:9464)")]
    ListenAddress { addr: String },
    #[error("listen address {addr} is not loopback: set [serve] token_file (a bearer token the webhook requires)")]
    TokenRequired { addr: SocketAddr },
    #[error("token file {}: {source}", path.display())]
    TokenFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("token file {} holds no token", path.display())]
    TokenEmpty { path: PathBuf },
}

/// Checks the listen address: an `IP:PORT`, loopback unless a token is
/// configured (the daemon calls this before it binds).
pub fn check_listen(addr: &str, token_configured: bool) -> Result<SocketAddr, Error> {
    let parsed: SocketAddr = addr.trim().parse().map_err(|_| Error::ListenAddress { addr: addr.to_owned() })?;
    if !parsed.ip().is_loopback() && !token_configured {
        return Err(Error::TokenRequired { addr: parsed });
    }
    Ok(parsed)
}

/// The webhook's bearer token. Only its SHA-256 is kept; `Debug` shows nothing.
#[derive(Clone)]
pub struct BearerToken {
    digest: [u8; 32],
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(…)")
    }
}

impl BearerToken {
    /// Reads the token from `path` (surrounding whitespace dropped). Errors
    /// name the file, never its content.
    pub fn read(path: &Path) -> Result<Self, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::TokenFile { path: path.to_owned(), source })?;
        let token = bytes.trim_ascii();
        if token.is_empty() {
            return Err(Error::TokenEmpty { path: path.to_owned() });
        }
        Ok(Self::from_secret(token))
    }

    pub fn from_secret(token: &[u8]) -> Self {
        BearerToken { digest: Sha256::digest(token).into() }
    }

    /// Whether `presented` is the token: the digests are compared in constant
    /// time (hashing first hides the length too).
    pub fn matches(&self, presented: &[u8]) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented).into();
        let diff = self.digest.iter().zip(presented.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

/// What the listener serves from.
pub struct HttpState {
    alerts: Arc<Alerts>,
    metrics: Arc<dyn MetricsSource>,
    token: Option<BearerToken>,
    max_body_bytes: u64,
}

impl HttpState {
    /// `token`: required on `POST /alertmanager` when set. `max_body_bytes`:
    /// `[serve] max_body_bytes`.
    pub fn new(
        alerts: Arc<Alerts>,
        metrics: Arc<dyn MetricsSource>,
        token: Option<BearerToken>,
        max_body_bytes: u64,
    ) -> Self {
        HttpState { alerts, metrics, token, max_body_bytes }
    }
}

/// Serves HTTP/1.1 on `listener` until `shutdown`; then stops accepting, lets
/// requests in flight finish (up to 10 s) and returns.
pub async fn serve(listener: TcpListener, state: Arc<HttpState>, shutdown: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // EMFILE and the like: wait a little rather than spin.
                tracing::warn!(error = %e, "http listener: accept failed");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let state = state.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "http connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, async { while connections.join_next().await.is_some() {} }).await.is_err() {
        tracing::warn!(open = connections.len(), "http listener: connections still open after the drain time; closed");
        connections.abort_all();
    }
}

type Answer = Response<Full<Bytes>>;

fn answer(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Answer {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn text(status: StatusCode, message: impl fmt::Display) -> Answer {
    answer(status, "text/plain; charset=utf-8", format!("{message}\n"))
}

async fn route(state: &HttpState, req: Request<Incoming>) -> Answer {
    let allowed = match req.uri().path() {
        "/alertmanager" => "POST",
        "/metrics" | "/healthz" => "GET",
        _ => return text(StatusCode::NOT_FOUND, "not found"),
    };
    if req.method().as_str() != allowed {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, format!("method not allowed (use {allowed})"));
        response.headers_mut().insert(ALLOW, HeaderValue::from_static(allowed));
        return response;
    }
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/alertmanager") => alertmanager(state, req).await,
        (&Method::GET, "/metrics") => {
            let mut snapshot = state.metrics.snapshot();
            for (outcome, count) in state.alerts.outcome_counts() {
                snapshot.alert_outcomes.insert(outcome.to_owned(), count);
            }
            answer(StatusCode::OK, metrics::CONTENT_TYPE, metrics::render(&snapshot))
        }
        _ => text(StatusCode::OK, "ok"),
    }
}

fn authorized(state: &HttpState, req: &Request<Incoming>) -> bool {
    let Some(token) = &state.token else { return true };
    let Some(header) = req.headers().get(AUTHORIZATION) else { return false };
    let header = header.as_bytes();
    match header.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => token.matches(header[7..].trim_ascii()),
        _ => false,
    }
}

async fn alertmanager(state: &HttpState, req: Request<Incoming>) -> Answer {
    if !authorized(state, &req) {
        let mut response = text(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let too_large = || text(StatusCode::PAYLOAD_TOO_LARGE, format!("body over {} bytes", state.max_body_bytes));
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > state.max_body_bytes) {
        return too_large();
    }
    let json = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return text(StatusCode::UNSUPPORTED_MEDIA_TYPE, "the body must be application/json");
    }
    let limit = usize::try_from(state.max_body_bytes).unwrap_or(usize::MAX);
    let body = match tokio::time::timeout(BODY_TIMEOUT, Limited::new(req.into_body(), limit).collect()).await {
        Err(_) => return text(StatusCode::REQUEST_TIMEOUT, "the body did not arrive in time"),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
        Ok(Err(e)) => return text(StatusCode::BAD_REQUEST, format!("reading the body failed: {e}")),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let webhook = match alerts::parse(&body) {
        Ok(webhook) => webhook,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    match state.alerts.handle(&webhook).await {
        Ok(outcomes) => {
            for outcome in &outcomes {
                tracing::info!(outcome = outcome.kind(), ?outcome, "alertmanager webhook");
            }
            // A start that failed (the daemon stopping, a store error) is answered 503, so that
            // Alertmanager sends again soon rather than after its repeat interval; the journal
            // completes the start with the same run id then.
            let failed = outcomes.iter().any(|o| o.kind() == "start-failed");
            let status = if failed { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
            match serde_json::to_vec(&serde_json::json!({ "outcomes": outcomes })) {
                Ok(json) => answer(status, "application/json", json),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the answer failed: {e}")),
            }
        }
        Err(e) => {
            // Alertmanager retries a 5xx; the journal decides again then.
            tracing::error!(error = %e, "alertmanager webhook: nothing more started");
            text(StatusCode::INTERNAL_SERVER_ERROR, e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_loopback_address_needs_a_token() {
        assert!(check_listen("127.0.0.1:9464", false).is_ok());
        assert!(check_listen("[::1]:9464", false).is_ok());
        let err = check_listen("0.0.0.0:9464", false).expect_err("unspecified accepted without a token");
        assert!(err.to_string().contains("token_file"), "{err}");
        assert!(check_listen("192.168.1.5:9464", false).is_err());
        assert_eq!(check_listen("192.168.1.5:9464", true).expect("with token").port(), 9464);
        assert!(matches!(check_listen("bastion:9464", true), Err(Error::ListenAddress { .. })));
        assert!(matches!(check_listen("127.0.0.1", true), Err(Error::ListenAddress { .. })));
    }

    #[test]
    fn the_token_is_read_trimmed_and_never_shown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret-value\n").expect("write");
        let token = BearerToken::read(&path).expect("read");
        assert!(token.matches(b"s3cret-value"));
        assert!(!token.matches(b"s3cret-valu"));
        assert!(!token.matches(b""));
        assert!(!format!("{token:?}").contains("s3cret"));
        std::fs::write(&path, " \n").expect("write");
        let err = BearerToken::read(&path).expect_err("empty accepted");
        assert!(err.to_string().contains("holds no token"), "{err}");
        let err = BearerToken::read(&dir.path().join("missing")).expect_err("missing accepted");
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
