//! The text of `dr.toml` as a tree of keys with their byte spans (parsed
//! with `toml_edit`), so that every problem — syntax, unknown key, inline
//! secret, wrong type, semantic — names `FILE:LINE:COL` and the key's
//! dotted path (`nodes[1].ssh_port`).
//!
//! Owns: the syntax check, the key check against each section's known keys
//! (read from the types by `introspect`, with a did-you-mean by edit
//! distance), refusing inline secrets, locating a key path and mapping a
//! serde error's span back to one. Refuses: echoing values (a problem's
//! message never quotes what was written for a key).

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::introspect::fields_of;
use super::{AlertRule, Backup, Cluster, Config, Escalation, EscalationRoute, Etcd, Node, Problem, Scripts, Serve, Ssh, Targets, Terraform, Verify};

/// One step of a key path: a table key or an array index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

/// `nodes[1].ssh_port`; keys that are not bare TOML keys are quoted.
pub(super) fn dotted(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                    out.push_str(key);
                } else {
                    out.push_str(&format!("{key:?}"));
                }
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// A key path of table keys (`&["etcd", "node"]`); push a [`Seg::Index`] for an array item.
pub(super) fn path(keys: &[&str]) -> Vec<Seg> {
    keys.iter().map(|k| Seg::Key((*k).to_owned())).collect()
}

/// A value in the tree: what kind, where.
#[derive(Debug)]
enum Tree {
    Table { entries: Vec<Entry>, span: Option<Range<usize>> },
    Array { items: Vec<Tree>, span: Option<Range<usize>> },
    Scalar { span: Option<Range<usize>> },
}

#[derive(Debug)]
struct Entry {
    key: String,
    key_span: Option<Range<usize>>,
    value: Tree,
}

impl Tree {
    fn span(&self) -> Option<&Range<usize>> {
        match self {
            Tree::Table { span, .. } | Tree::Array { span, .. } | Tree::Scalar { span } => span.as_ref(),
        }
    }

    fn from_table(table: &toml_edit::Table) -> Tree {
        let entries = table
            .iter()
            .map(|(key, item)| Entry {
                key: key.to_owned(),
                key_span: table.key(key).and_then(toml_edit::Key::span),
                value: Tree::from_item(item),
            })
            .collect();
        Tree::Table { entries, span: table.span() }
    }

    fn from_item(item: &toml_edit::Item) -> Tree {
        match item {
            toml_edit::Item::None => Tree::Scalar { span: None },
            toml_edit::Item::Value(value) => Tree::from_value(value),
            toml_edit::Item::Table(table) => Tree::from_table(table),
            toml_edit::Item::ArrayOfTables(array) => {
                Tree::Array { items: array.iter().map(Tree::from_table).collect(), span: array.span() }
            }
        }
    }

    fn from_value(value: &toml_edit::Value) -> Tree {
        match value {
            toml_edit::Value::InlineTable(table) => {
                let entries = table
                    .iter()
                    .map(|(key, value)| Entry {
                        key: key.to_owned(),
                        key_span: table.key(key).and_then(toml_edit::Key::span),
                        value: Tree::from_value(value),
                    })
                    .collect();
                Tree::Table { entries, span: table.span() }
            }
            toml_edit::Value::Array(array) => {
                Tree::Array { items: array.iter().map(Tree::from_value).collect(), span: array.span() }
            }
            other => Tree::Scalar { span: other.span() },
        }
    }
}

/// The keys a table accepts.
enum Keys {
    /// A struct: exactly these.
    Fixed(&'static [&'static str]),
    /// A map: any key (a node name, a URL's name, a parameter).
    Free,
}

/// The keys of the table at `pattern` (a key path with indices written `[]`).
fn keys_at(pattern: &str) -> Option<Keys> {
    Some(match pattern {
        "" => Keys::Fixed(fields_of::<Config>()),
        "cluster" => Keys::Fixed(fields_of::<Cluster>()),
        "nodes[]" => Keys::Fixed(fields_of::<Node>()),
        "ssh" => Keys::Fixed(fields_of::<Ssh>()),
        "etcd" => Keys::Fixed(fields_of::<Etcd>()),
        "backup" => Keys::Fixed(fields_of::<Backup>()),
        "terraform" => Keys::Fixed(fields_of::<Terraform>()),
        "scripts" => Keys::Fixed(fields_of::<Scripts>()),
        "verify" => Keys::Fixed(fields_of::<Verify>()),
        "targets" => Keys::Fixed(fields_of::<Targets>()),
        "serve" => Keys::Fixed(fields_of::<Serve>()),
        "alerts[]" => Keys::Fixed(fields_of::<AlertRule>()),
        "escalation" => Keys::Fixed(fields_of::<Escalation>()),
        "escalation.routes[]" => Keys::Fixed(fields_of::<EscalationRoute>()),
        "terraform.node_targets" | "verify.urls" | "alerts[].params" | "alerts[].labels" => Keys::Free,
        _ => return None,
    })
}

/// Key names that hold a secret when written inline.
const SECRET_KEYS: &[&str] = &[
    "token",
    "password",
    "passwd",
    "passphrase",
    "secret",
    "webhook_url",
    "api_key",
    "apikey",
    "private_key",
    "client_secret",
    "bearer_token",
];

/// Whether `key` (not a known key of its table) names an inline secret.
fn is_secret_key(pattern: &str, key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    if key.ends_with("_file") {
        return false;
    }
    // A notification route's URL carries its token (Slack, webhooks).
    let notify_url = pattern.starts_with("escalation") && (key == "url" || key.ends_with("_url")) && key != "events_url";
    notify_url
        || SECRET_KEYS.contains(&key.as_str())
        || ["_token", "_password", "_secret", "_passphrase"].iter().any(|suffix| key.ends_with(suffix))
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitute.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

/// The known key closest to `key`, if close enough to be a typo.
pub(super) fn suggestion<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let key = key.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&key, k), *k))
        .filter(|(distance, k)| *distance <= (k.chars().count() / 3).max(1) || k.contains(key.as_str()) && key.len() >= 3)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k)
}

/// `dr.toml`, parsed with spans.
pub(super) struct Source<'a> {
    text: &'a str,
    file: PathBuf,
    root: Tree,
}

impl<'a> Source<'a> {
    /// Parses the TOML syntax; a syntax error is located at its span.
    pub(super) fn parse(text: &'a str, file: &Path) -> Result<Self, Problem> {
        match toml_edit::ImDocument::parse(text) {
            Ok(document) => Ok(Source { text, file: file.to_owned(), root: Tree::from_table(document.as_table()) }),
            Err(e) => {
                let offset = e.span().map_or(0, |s| s.start);
                let key = guess_key(text, offset);
                let (line, column) = line_column(text, offset);
                Err(Problem { file: file.to_owned(), line, column, key, message: format!("invalid TOML: {}", one_line(e.message())) })
            }
        }
    }

    fn problem_at(&self, offset: usize, key: String, message: String) -> Problem {
        let (line, column) = line_column(self.text, offset);
        Problem { file: self.file.clone(), line, column, key, message }
    }

    /// A problem with the key at `path` (located at its value, else its key,
    /// else the nearest enclosing table that is written).
    pub(super) fn problem(&self, path: &[Seg], message: impl Into<String>) -> Problem {
        self.problem_at(self.locate(path), dotted(path), message.into())
    }

    /// Unknown keys and sections (with a did-you-mean), inline secrets.
    pub(super) fn check_keys(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        self.check_tree(&self.root, &mut Vec::new(), &mut String::new(), &mut problems);
        problems
    }

    fn check_tree(&self, tree: &Tree, path: &mut Vec<Seg>, pattern: &mut String, problems: &mut Vec<Problem>) {
        match tree {
            Tree::Table { entries, .. } => {
                let keys = keys_at(pattern);
                for entry in entries {
                    path.push(Seg::Key(entry.key.clone()));
                    // A declared field is never a secret (`key` is a path); any other key may be.
                    let declared = matches!(&keys, Some(Keys::Fixed(fields)) if fields.contains(&entry.key.as_str()));
                    let at = entry.key_span.as_ref().map_or(0, |s| s.start);
                    if !declared && is_secret_key(pattern, &entry.key) {
                        let message = format!(
                            "secrets are not written in dr.toml; put it in a file only root can read and set `{}` to its path",
                            secret_file_key(&entry.key)
                        );
                        problems.push(self.problem_at(at, dotted(path), message));
                    } else if let (false, Some(Keys::Fixed(fields))) = (declared, &keys) {
                        problems.push(self.problem_at(at, dotted(path), unknown_key_message(pattern, &entry.key, &entry.value, fields)));
                    } else {
                        let before = pattern.len();
                        if !pattern.is_empty() {
                            pattern.push('.');
                        }
                        pattern.push_str(&entry.key);
                        self.check_tree(&entry.value, path, pattern, problems);
                        pattern.truncate(before);
                    }
                    path.pop();
                }
            }
            Tree::Array { items, .. } => {
                for (i, item) in items.iter().enumerate() {
                    path.push(Seg::Index(i));
                    pattern.push_str("[]");
                    self.check_tree(item, path, pattern, problems);
                    pattern.truncate(pattern.len() - 2);
                    path.pop();
                }
            }
            Tree::Scalar { span } => {
                let written = span.as_ref().and_then(|s| self.text.get(s.clone())).unwrap_or_default();
                if written.contains("PRIVATE KEY") || written.contains("-----BEGIN") {
                    let at = span.as_ref().map_or(0, |s| s.start);
                    problems.push(self.problem_at(
                        at,
                        dotted(path),
                        "key material is not written in dr.toml; give the path of a file only root can read".to_owned(),
                    ));
                }
            }
        }
    }

    /// The byte offset to report for `path`.
    fn locate(&self, path: &[Seg]) -> usize {
        let mut tree = &self.root;
        let mut best = 0;
        for seg in path {
            let next = match (seg, tree) {
                (Seg::Key(key), Tree::Table { entries, .. }) => entries.iter().find(|e| &e.key == key).map(|e| {
                    if let Some(span) = &e.key_span {
                        best = span.start;
                    }
                    &e.value
                }),
                (Seg::Index(i), Tree::Array { items, .. }) => items.get(*i),
                _ => None,
            };
            let Some(next) = next else { return best };
            tree = next;
            match tree {
                // A scalar or an inline value: point at the value.
                Tree::Scalar { span: Some(span) } => best = span.start,
                // An array item (a `[[nodes]]` table): its header.
                Tree::Table { span: Some(span), .. } if matches!(seg, Seg::Index(_)) => best = span.start,
                _ => {}
            }
        }
        best
    }

    /// The key path whose key or value covers `offset` (the deepest).
    fn path_at(&self, offset: usize) -> Vec<Seg> {
        let mut path = Vec::new();
        descend(&self.root, offset, &mut path);
        path
    }

    /// A serde error of the typed parse, located and named.
    pub(super) fn serde_problem(&self, error: &toml::de::Error) -> Problem {
        let offset = error.span().map_or(0, |s| s.start);
        let mut path = self.path_at(offset);
        let message = one_line(error.message());
        // serde's `missing_field` wording: "missing field `NAME`".
        let missing = message.strip_prefix("missing field `").and_then(|rest| rest.strip_suffix('`')).map(str::to_owned);
        let message = match missing {
            Some(field) => {
                let section = path.is_empty();
                path.push(Seg::Key(field.clone()));
                if section && field == "nodes" {
                    "missing required section: add one `[[nodes]]` table per node".to_owned()
                } else if section {
                    format!("missing required section `[{field}]`")
                } else {
                    format!("missing required key `{field}`")
                }
            }
            None => message,
        };
        self.problem_at(offset, dotted(&path), message)
    }
}

/// The `*_file` key to use instead of an inline secret.
fn secret_file_key(key: &str) -> String {
    if key.to_ascii_lowercase().ends_with("url") {
        "url_file".to_owned()
    } else {
        format!("{key}_file")
    }
}

fn descend(tree: &Tree, offset: usize, path: &mut Vec<Seg>) -> bool {
    let contains = |span: Option<&Range<usize>>| span.is_some_and(|s| s.start <= offset && offset < s.end.max(s.start + 1));
    match tree {
        Tree::Table { entries, .. } => {
            for entry in entries {
                path.push(Seg::Key(entry.key.clone()));
                if contains(entry.key_span.as_ref()) {
                    return true;
                }
                // Inside the value: the deepest key there, else this one. A value
                // without a span (an implicit table) may still hold it.
                let value_span = entry.value.span();
                if contains(value_span) {
                    descend(&entry.value, offset, path);
                    return true;
                }
                if value_span.is_none() && descend(&entry.value, offset, path) {
                    return true;
                }
                path.pop();
            }
            false
        }
        Tree::Array { items, .. } => {
            for (i, item) in items.iter().enumerate() {
                path.push(Seg::Index(i));
                if contains(item.span()) {
                    descend(item, offset, path);
                    return true;
                }
                if item.span().is_none() && descend(item, offset, path) {
                    return true;
                }
                path.pop();
            }
            false
        }
        Tree::Scalar { span } => contains(span.as_ref()),
    }
}

fn unknown_key_message(pattern: &str, key: &str, value: &Tree, known: &[&str]) -> String {
    let top = pattern.is_empty();
    let what = if top && matches!(value, Tree::Table { .. } | Tree::Array { .. }) { "section" } else { "key" };
    let table = if top {
        "dr.toml".to_owned()
    } else if let Some(array) = pattern.strip_suffix("[]") {
        format!("[[{array}]]")
    } else {
        format!("[{pattern}]")
    };
    let mut message = format!("unknown {what} in {table}");
    if let Some(close) = suggestion(key, known) {
        message.push_str(&format!(" (did you mean `{close}`?)"));
    }
    message.push_str(&format!("; expected one of: {}", known.join(", ")));
    message
}

/// Multi-line parser messages on one line.
fn one_line(message: &str) -> String {
    message.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

/// 1-based line and column (in characters) of a byte offset.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// For a syntax error (no tree): the table header above `offset` and the
/// key written on its line.
fn guess_key(text: &str, offset: usize) -> String {
    let (line_no, _) = line_column(text, offset);
    let mut header = String::new();
    let mut arrays: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    let mut key = String::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            let name = name.trim().to_owned();
            let index = arrays.entry(name.clone()).and_modify(|n| *n += 1).or_insert(0);
            header = format!("{name}[{index}]");
        } else if let Some(name) = trimmed.strip_prefix('[').and_then(|r| r.split(']').next()) {
            header = name.trim().to_owned();
        }
        if i + 1 == line_no {
            if let Some((left, _)) = trimmed.split_once('=') {
                key = left.trim().trim_matches('"').trim_matches('\'').to_owned();
            }
            break;
        }
    }
    match (header.is_empty(), key.is_empty()) {
        (true, true) => "(top level)".to_owned(),
        (true, false) => key,
        (false, true) => header,
        (false, false) => format!("{header}.{key}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_suggest_the_closest_known_key_and_strangers_suggest_nothing() {
        let known = ["name", "role", "ssh_host", "ssh_port"];
        assert_eq!(suggestion("ssh_prot", &known), Some("ssh_port"));
        assert_eq!(suggestion("SSH_HOST", &known), Some("ssh_host"));
        assert_eq!(suggestion("host", &known), Some("ssh_host"));
        assert_eq!(suggestion("colour", &known), None);
    }

    #[test]
    fn lines_and_columns_count_from_one_in_characters() {
        let text = "a = 1\nné = \"x\"\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, text.rfind('=').unwrap()), (2, 4), "the second line's `=`, after a two-byte é");
        assert_eq!(line_column(text, 10_000), (3, 1));
    }

    #[test]
    fn key_paths_quote_what_is_not_a_bare_key() {
        let p = vec![Seg::Key("nodes".into()), Seg::Index(1), Seg::Key("ssh_port".into())];
        assert_eq!(dotted(&p), "nodes[1].ssh_port");
        assert_eq!(dotted(&path(&["verify", "urls", "my site"])), "verify.urls.\"my site\"");
    }

    #[test]
    fn secret_looking_keys_are_recognised_but_file_keys_are_not() {
        for key in ["token", "password", "bot_token", "webhook_url", "API_KEY"] {
            assert!(is_secret_key("", key), "{key}");
        }
        assert!(is_secret_key("escalation.routes[]", "url"));
        assert!(!is_secret_key("verify", "url"));
        assert!(!is_secret_key("escalation.routes[]", "url_file"));
    }
}
