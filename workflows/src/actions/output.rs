//! What an action keeps of a program's output: [`OutputLimiter`] retains the
//! last [`DEFAULT_LIMIT`] bytes (64 KiB) of a stream however long it runs and
//! turns them into a [`Captured`] tail cut at a char boundary; [`Redactor`]
//! (and [`redact`]) replaces known secrets and obvious secret patterns
//! (`password=…`, `token=…`, `Authorization: Bearer …`, URL passwords, PEM
//! private-key blocks) with [`REDACTED`].
//!
//! Owns: bounding and redaction. Refuses: reading streams or logging; the
//! actions feed it bytes and decide what to do with the result.

use std::collections::VecDeque;
use std::fmt;
use std::sync::OnceLock;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

/// How much of a stream an action keeps: the last 64 KiB.
pub const DEFAULT_LIMIT: usize = 64 * 1024;

/// What a redacted secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Bytes kept beyond the limit until redaction, so that a secret straddling
/// the cut is redacted whole before the tail is taken (PEM keys are a few KiB).
const REDACTION_MARGIN: usize = 16 * 1024;

/// The kept tail of a stream, redacted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Captured {
    /// The last bytes of the stream (at most the limit), lossily UTF-8, redacted.
    pub text: String,
    /// Whether the beginning of the stream was cut off.
    pub truncated: bool,
    /// How many bytes the stream had in all.
    pub total_bytes: u64,
}

impl Captured {
    /// The last `max_bytes` of the text (cut at a char boundary), prefixed with
    /// `…` when anything before it is missing; for error messages.
    pub fn tail(&self, max_bytes: usize) -> String {
        let start = tail_start(&self.text, max_bytes);
        if start > 0 || self.truncated {
            format!("…{}", &self.text[start..])
        } else {
            self.text.clone()
        }
    }
}

impl fmt::Display for Captured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.truncated {
            writeln!(f, "[output truncated: last {} of {} bytes]", self.text.len(), self.total_bytes)?;
        }
        f.write_str(&self.text)
    }
}

/// Keeps the last `limit` bytes of everything pushed into it.
#[derive(Debug, Clone)]
pub struct OutputLimiter {
    limit: usize,
    buffer: VecDeque<u8>,
    total_bytes: u64,
}

impl Default for OutputLimiter {
    fn default() -> Self {
        Self::new(DEFAULT_LIMIT)
    }
}

impl OutputLimiter {
    /// A limiter keeping the last `limit` bytes (at least 1).
    pub fn new(limit: usize) -> Self {
        let limit = limit.max(1);
        OutputLimiter { limit, buffer: VecDeque::new(), total_bytes: 0 }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes pushed so far.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Appends bytes; the oldest beyond the limit (plus a redaction margin) are dropped.
    pub fn push(&mut self, bytes: &[u8]) {
        self.total_bytes = self.total_bytes.saturating_add(bytes.len() as u64);
        let keep = self.limit.saturating_add(REDACTION_MARGIN);
        let bytes = if bytes.len() > keep { &bytes[bytes.len() - keep..] } else { bytes };
        self.buffer.extend(bytes);
        if self.buffer.len() > keep {
            let excess = self.buffer.len() - keep;
            self.buffer.drain(..excess);
        }
    }

    /// Appends a line and a newline.
    pub fn push_line(&mut self, line: &str) {
        self.push(line.as_bytes());
        self.push(b"\n");
    }

    /// The kept tail, redacted with `redactor`, at most `limit` bytes.
    pub fn finish(&self, redactor: &Redactor) -> Captured {
        let (front, back) = self.buffer.as_slices();
        let mut bytes = Vec::with_capacity(self.buffer.len());
        bytes.extend_from_slice(front);
        bytes.extend_from_slice(back);
        let dropped_before = self.total_bytes > bytes.len() as u64;
        let text = redactor.redact(&String::from_utf8_lossy(&bytes));
        let start = tail_start(&text, self.limit);
        Captured { text: text[start..].to_owned(), truncated: dropped_before || start > 0, total_bytes: self.total_bytes }
    }
}

/// The byte index where the last `max_bytes` of `text` begin, moved forward
/// to a char boundary.
fn tail_start(text: &str, max_bytes: usize) -> usize {
    if text.len() <= max_bytes {
        return 0;
    }
    let mut start = text.len() - max_bytes;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    start
}

/// Replaces the given secrets and obvious secret patterns with [`REDACTED`].
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// One alternation of the escaped secrets, longest first.
    secrets: Option<Regex>,
    /// The secrets themselves when the alternation is too big to compile.
    literals: Vec<String>,
}

impl Redactor {
    /// A redactor for these secret values (empty ones are ignored); longer
    /// secrets win over their prefixes.
    pub fn new(secrets: &[String]) -> Self {
        let mut values: Vec<&str> = secrets.iter().map(String::as_str).filter(|s| !s.is_empty()).collect();
        values.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        values.dedup();
        if values.is_empty() {
            return Redactor::default();
        }
        let pattern = values.iter().map(|s| regex::escape(s)).collect::<Vec<_>>().join("|");
        match RegexBuilder::new(&pattern).size_limit(64 << 20).build() {
            Ok(regex) => Redactor { secrets: Some(regex), literals: Vec::new() },
            Err(_) => Redactor { secrets: None, literals: values.into_iter().map(str::to_owned).collect() },
        }
    }

    /// The text with every secret and secret pattern replaced.
    pub fn redact(&self, text: &str) -> String {
        let mut text = match &self.secrets {
            Some(regex) => regex.replace_all(text, REDACTED).into_owned(),
            None => text.to_owned(),
        };
        for literal in &self.literals {
            text = text.replace(literal.as_str(), REDACTED);
        }
        redact_patterns(&text)
    }
}

/// Redacts a stream line by line (for logging as it comes): like
/// [`Redactor::redact`], and every line inside a PEM private-key block is
/// hidden, not only the line that begins it.
#[derive(Clone, Debug, Default)]
pub struct LineRedactor {
    redactor: Redactor,
    in_private_key: bool,
    /// The line before said a certificate key follows (kubeadm `--upload-certs`).
    certificate_key_next: bool,
}

impl LineRedactor {
    pub fn new(redactor: Redactor) -> Self {
        LineRedactor { redactor, in_private_key: false, certificate_key_next: false }
    }

    /// One line (without its newline), redacted.
    pub fn line(&mut self, line: &str) -> String {
        let ends_key = |l: &str| l.contains("-----END") && l.contains("PRIVATE KEY-----");
        if self.in_private_key {
            if ends_key(line) {
                self.in_private_key = false;
            }
            return REDACTED.to_owned();
        }
        if line.contains("-----BEGIN") && line.contains("PRIVATE KEY-----") && !ends_key(line) {
            self.in_private_key = true;
        }
        if std::mem::take(&mut self.certificate_key_next) && line.trim().chars().all(|c| c.is_ascii_hexdigit()) && !line.trim().is_empty() {
            return REDACTED.to_owned();
        }
        self.certificate_key_next = line.trim_end().ends_with("Using certificate key:");
        self.redactor.redact(line)
    }
}

/// [`Redactor::new`] + [`Redactor::redact`] in one call.
pub fn redact(text: &str, secrets: &[String]) -> String {
    Redactor::new(secrets).redact(text)
}

struct Patterns {
    private_key: Regex,
    orphan_key_end: Regex,
    authorization: Regex,
    bearer: Regex,
    assignment: Regex,
    url_password: Regex,
    secret_flag: Regex,
    certificate_key_line: Regex,
}

fn patterns() -> &'static Patterns {
    static PATTERNS: OnceLock<Patterns> = OnceLock::new();
    PATTERNS.get_or_init(|| {
        let build = |pattern: &str| {
            // PROOF: the patterns are constants covered by the unit tests below.
            Regex::new(pattern).expect("constant redaction pattern compiles")
        };
        Patterns {
            private_key: build(
                r"(?s)-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\z)",
            ),
            orphan_key_end: build(r"(?s)\A.*?-----END [A-Z0-9 ]*PRIVATE KEY-----"),
            authorization: build(r#"(?i)(authorization\s*:\s*)(?:(bearer|basic|token)\s+)?[^\s'"]+"#),
            bearer: build(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+"),
            assignment: build(
                r#"(?i)\b([A-Za-z0-9_.-]*(?:password|passwd|passphrase|token|secret|api[_-]?key|access[_-]?key)[A-Za-z0-9_.-]*)(\s*[=:]\s*)("[^"]*"|'[^']*'|[^\s"'&;,]+)"#,
            ),
            url_password: build(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]+:)[^/\s@]+@"),
            // kubeadm prints `--token abc.def` and `--certificate-key K` as separate words.
            secret_flag: build(r"(--(?:token|certificate-key|discovery-token|tls-bootstrap-token|password|secret)(?:\s+|=))[^\s'\x22]+"),
            // `kubeadm init --upload-certs` prints the certificate key alone on its line after this header.
            certificate_key_line: build(r"(Using certificate key:\s*\n?\s*)[0-9a-f]{32,}"),
        }
    })
}

fn redact_patterns(text: &str) -> String {
    let p = patterns();
    let text = p.private_key.replace_all(text, format!("-----BEGIN ${{1}}PRIVATE KEY-----{REDACTED}"));
    // The end of a key whose beginning was cut off before the kept tail.
    let text = if !text.contains("-----BEGIN") {
        p.orphan_key_end.replace(&text, REDACTED).into_owned()
    } else {
        text.into_owned()
    };
    let text = p.authorization.replace_all(&text, |caps: &regex::Captures<'_>| {
        let scheme = caps.get(2).map(|m| format!("{} ", m.as_str())).unwrap_or_default();
        format!("{}{scheme}{REDACTED}", &caps[1])
    });
    let text = p.bearer.replace_all(&text, format!("${{1}}{REDACTED}"));
    let text = p.secret_flag.replace_all(&text, format!("${{1}}{REDACTED}"));
    let text = p.certificate_key_line.replace_all(&text, format!("${{1}}{REDACTED}"));
    let text = p.assignment.replace_all(&text, |caps: &regex::Captures<'_>| {
        if &caps[3] == REDACTED {
            caps[0].to_owned()
        } else {
            format!("{}{}{REDACTED}", &caps[1], &caps[2])
        }
    });
    p.url_password.replace_all(&text, format!("${{1}}{REDACTED}@")).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, secrets: &[&str], expect: &str) {
        let secrets: Vec<String> = secrets.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(redact(input, &secrets), expect, "input: {input:?}");
    }

    #[test]
    fn secrets_and_patterns_are_redacted() {
        check("login with hunter2 ok", &["hunter2"], "login with [REDACTED] ok");
        check("a=abcdef b=abc", &["abc", "abcdef"], "a=[REDACTED] b=[REDACTED]");
        check("nothing here", &[""], "nothing here");
        check("db password=s3cr3t user=x", &[], "db password=[REDACTED] user=x");
        check("TF_VAR_db_password: 'x y'", &[], "TF_VAR_db_password: [REDACTED]");
        check("?token=abc&x=1", &[], "?token=[REDACTED]&x=1");
        check("Authorization: Bearer eyJhbGc.x.y", &[], "Authorization: Bearer [REDACTED]");
        check("curl -H 'authorization: Basic dXNlcjpw'", &[], "curl -H 'authorization: Basic [REDACTED]'");
        check("use bearer abc.def", &[], "use bearer [REDACTED]");
        check("https://admin:pw@host/x", &[], "https://admin:[REDACTED]@host/x");
        check(
            "k\n-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\nBBBB\n-----END OPENSSH PRIVATE KEY-----\nafter",
            &[],
            "k\n-----BEGIN OPENSSH PRIVATE KEY-----[REDACTED]\nafter",
        );
        check("x\n-----BEGIN RSA PRIVATE KEY-----\nAAAA", &[], "x\n-----BEGIN RSA PRIVATE KEY-----[REDACTED]");
        check("AAAA\n-----END PRIVATE KEY-----\nok", &[], "[REDACTED]\nok");
        check("webhook https://hooks.example/T0/B1/xyz done", &["https://hooks.example/T0/B1/xyz"], "webhook [REDACTED] done");
        // kubeadm's join command and certificate key, as it prints them.
        check(
            "kubeadm join 10.0.0.1:6443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash sha256:00ff",
            &[],
            "kubeadm join 10.0.0.1:6443 --token [REDACTED] --discovery-token-ca-cert-hash sha256:00ff",
        );
        check("kubeadm join x --token=abcdef.0123456789abcdef", &[], "kubeadm join x --token=[REDACTED]");
        check("  --control-plane --certificate-key 0123abcd", &[], "  --control-plane --certificate-key [REDACTED]");
        check(
            "[upload-certs] Using certificate key:\n9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\nnext",
            &[],
            "[upload-certs] Using certificate key:\n[REDACTED]\nnext",
        );
    }

    #[test]
    fn the_limiter_keeps_the_last_bytes_at_a_char_boundary() {
        let mut limiter = OutputLimiter::new(10);
        limiter.push(b"0123456789");
        let c = limiter.finish(&Redactor::default());
        assert_eq!((c.text.as_str(), c.truncated, c.total_bytes), ("0123456789", false, 10));
        limiter.push("abcé".as_bytes());
        let c = limiter.finish(&Redactor::default());
        // 15 bytes; the last 10 start inside nothing multi-byte: "56789abcé" is 10 bytes.
        assert_eq!((c.text.as_str(), c.truncated, c.total_bytes), ("56789abcé", true, 15));
        let mut limiter = OutputLimiter::new(3);
        limiter.push("ééé".as_bytes()); // 6 bytes; the last 3 start in the middle of the second é
        let c = limiter.finish(&Redactor::default());
        assert_eq!((c.text.as_str(), c.truncated), ("é", true));
        assert_eq!(c.tail(100), "…é");
    }

    #[test]
    fn a_secret_straddling_the_cut_is_redacted_whole() {
        let mut limiter = OutputLimiter::new(8);
        limiter.push(b"xxxxxxxxxxxx supersecret end");
        let c = limiter.finish(&Redactor::new(&["supersecret".to_owned()]));
        assert!(!c.text.contains("secret"), "{c:?}");
        assert!(c.text.len() <= 8);
    }

    #[test]
    fn line_redaction_hides_a_whole_private_key_block() {
        let mut lines = LineRedactor::new(Redactor::new(&["pw".to_owned()]));
        let out: Vec<String> = ["a pw", "-----BEGIN EC PRIVATE KEY-----", "MHcCAQEE", "-----END EC PRIVATE KEY-----", "b"]
            .iter()
            .map(|l| lines.line(l))
            .collect();
        assert_eq!(out, ["a [REDACTED]", "-----BEGIN EC PRIVATE KEY-----[REDACTED]", "[REDACTED]", "[REDACTED]", "b"]);
    }

    #[test]
    fn line_redaction_hides_kubeadm_s_certificate_key_on_the_line_after_its_header() {
        let mut lines = LineRedactor::new(Redactor::default());
        let key = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let out: Vec<String> =
            ["[upload-certs] Using certificate key:", key, key, "  --token abc.def"].iter().map(|l| lines.line(l)).collect();
        assert_eq!(out, ["[upload-certs] Using certificate key:", "[REDACTED]", key, "  --token [REDACTED]"]);
    }

    #[test]
    fn huge_pushes_stay_bounded() {
        let mut limiter = OutputLimiter::default();
        for _ in 0..100 {
            limiter.push(&[b'a'; 10_000]);
        }
        assert!(limiter.buffer.len() <= DEFAULT_LIMIT + REDACTION_MARGIN);
        let c = limiter.finish(&Redactor::default());
        assert_eq!((c.text.len(), c.truncated, c.total_bytes), (DEFAULT_LIMIT, true, 1_000_000));
    }
}
