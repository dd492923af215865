//! The HTTP check action (`http.check`): GET or HEAD of a URL (the guide's
//! `curl -I http://192.168.122.100`) with an expected status range (default
//! 200–399) and a timeout; the [`HttpCheckOutput`] (status, latency) is the
//! step's output. A refused connection, a timeout or an unexpected status is
//! a retryable error naming the URL; a malformed URL is permanent. A check
//! changes nothing, so it has no probe: a lost attempt is simply run again.
//!
//! Owns: one request per attempt (ureq, blocking, on tokio's blocking pool;
//! rustls for https, no OpenSSL). Refuses: following the answer's content.

use std::io::Read;
use std::time::Duration;

use dr_orchestrator::{ActionCtx, ActionError, TypedAction};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::output::redact;

pub const KIND: &str = "http.check";

/// Default timeout of one request.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// How much of an unexpected answer's body an error quotes.
const BODY_SNIPPET: u64 = 512;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    /// What `curl -I` sends.
    #[default]
    Head,
}

impl HttpMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Head => "HEAD",
        }
    }
}

/// An inclusive range of acceptable status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRange {
    pub min: u16,
    pub max: u16,
}

impl Default for StatusRange {
    fn default() -> Self {
        StatusRange { min: 200, max: 399 }
    }
}

impl StatusRange {
    pub fn contains(self, status: u16) -> bool {
        (self.min..=self.max).contains(&status)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpCheckParams {
    pub url: String,
    #[serde(default)]
    pub method: HttpMethod,
    #[serde(default)]
    pub expect: StatusRange,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

impl HttpCheckParams {
    /// HEAD `url`, expecting 200–399 within 10 s.
    pub fn new(url: impl Into<String>) -> Self {
        HttpCheckParams {
            url: url.into(),
            method: HttpMethod::default(),
            expect: StatusRange::default(),
            timeout_ms: DEFAULT_TIMEOUT_MS,
        }
    }
    pub fn method(mut self, method: HttpMethod) -> Self {
        self.method = method;
        self
    }
    pub fn expect(mut self, min: u16, max: u16) -> Self {
        self.expect = StatusRange { min, max };
        self
    }
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self
    }
}

/// What a passing check saw: the step's output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpCheckOutput {
    /// The URL (a password in it redacted).
    pub url: String,
    pub method: HttpMethod,
    pub status: u16,
    pub latency_ms: u64,
}

#[derive(Clone, Debug)]
pub struct HttpCheckAction {
    /// What is checked, a password in the URL included.
    request: HttpCheckParams,
    /// `request` with a password in the URL redacted, as hashed into the definition.
    params: HttpCheckParams,
}

impl HttpCheckAction {
    pub fn new(request: HttpCheckParams) -> Self {
        let params = HttpCheckParams { url: redact(&request.url, &[]), ..request.clone() };
        HttpCheckAction { request, params }
    }
}

impl TypedAction for HttpCheckAction {
    const KIND: &'static str = KIND;
    type Params = HttpCheckParams;
    type Output = HttpCheckOutput;

    fn params(&self) -> &HttpCheckParams {
        &self.params
    }

    fn summary(&self, output: &HttpCheckOutput) -> String {
        format!("{} {} answered {} in {} ms", output.method.as_str(), output.url, output.status, output.latency_ms)
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<HttpCheckOutput, ActionError> {
        let timeout = ctx
            .timeout(Some(Duration::from_millis(self.request.timeout_ms)))
            .unwrap_or(Duration::from_millis(DEFAULT_TIMEOUT_MS));
        let request = self.request.clone();
        let what = format!("the check of {}", self.params.url);
        let result = super::blocking(ctx, &what, move |_| check_blocking(&request, timeout)).await;
        match &result {
            Ok(out) => tracing::info!(status = out.status, latency_ms = out.latency_ms, "{}", self.summary(out)),
            Err(e) => tracing::info!("{e}"),
        }
        result
    }
}

fn check_blocking(params: &HttpCheckParams, timeout: Duration) -> Result<HttpCheckOutput, ActionError> {
    let shown = redact(&params.url, &[]);
    let method = params.method.as_str();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let started = Instant::now();
    let response = match params.method {
        HttpMethod::Get => agent.get(&params.url).call(),
        HttpMethod::Head => agent.head(&params.url).call(),
    };
    let latency = started.elapsed();
    let latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
    let mut response = response.map_err(|e| request_error(&e, method, &shown, timeout))?;
    let status = response.status().as_u16();
    if params.expect.contains(status) {
        return Ok(HttpCheckOutput { url: shown, method: params.method, status, latency_ms });
    }
    let reason = response.status().canonical_reason().unwrap_or("");
    let mut body = String::new();
    if params.method == HttpMethod::Get {
        let _ = response.body_mut().as_reader().take(BODY_SNIPPET).read_to_string(&mut body);
    }
    let body = body.trim();
    let body = if body.is_empty() { String::new() } else { format!("; body: {}", redact(body, &[])) };
    Err(ActionError::retryable(format!(
        "{method} {shown} answered {status} {reason} (expected {}–{}) after {latency_ms} ms{body}; check the service behind it, then retry",
        params.expect.min, params.expect.max
    )))
}

fn request_error(error: &ureq::Error, method: &str, url: &str, timeout: Duration) -> ActionError {
    let secs = timeout.as_secs_f64();
    match error {
        ureq::Error::BadUri(detail) => {
            ActionError::permanent(format!("{method} {url}: not a valid URL ({detail}); fix the configured URL"))
        }
        ureq::Error::Http(detail) => {
            ActionError::permanent(format!("{method} {url}: not a valid URL ({detail}); fix the configured URL"))
        }
        ureq::Error::Timeout(_) => ActionError::retryable(format!(
            "{method} {url}: no answer within {secs:.1} s; is the host up and the port reachable?"
        )),
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => ActionError::retryable(format!(
            "{method} {url}: connection refused (nothing listens there); is the service (ingress) running?"
        )),
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => ActionError::retryable(format!(
            "{method} {url}: no answer within {secs:.1} s; is the host up and the port reachable?"
        )),
        ureq::Error::HostNotFound => {
            ActionError::retryable(format!("{method} {url}: host not found; check the URL and DNS"))
        }
        other => ActionError::retryable(format!("{method} {url}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_default_to_curl_dash_i() {
        let params: HttpCheckParams = serde_json::from_str(r#"{"url":"http://192.168.122.100"}"#).unwrap();
        assert_eq!(params, HttpCheckParams::new("http://192.168.122.100"));
        assert_eq!(params.method, HttpMethod::Head);
        assert!(params.expect.contains(200) && params.expect.contains(399) && !params.expect.contains(503));
        let shown = serde_json::to_string(HttpCheckAction::new(HttpCheckParams::new("https://u:pw@host/")).params()).unwrap();
        assert!(!shown.contains("pw@"), "{shown}");
    }
}
