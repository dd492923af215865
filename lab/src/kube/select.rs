//! Label and field selectors (query strings and `LabelSelector` objects) and
//! the JSON patch flavours (merge, strategic-as-merge, RFC 6902). Pure
//! functions over `serde_json::Value`; owns no state.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed `labelSelector=` query value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Req>);

fn split_top(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c);
            }
            ')' => {
                depth = depth.saturating_sub(1);
                cur.push(c);
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect()
}

fn set_values(rest: &str) -> Option<Vec<String>> {
    let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect())
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in split_top(s) {
            let req = if let Some((k, v)) = part.split_once("!=") {
                Req::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==") {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once('=') {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some(idx) = part.find(" notin ") {
                let vals = set_values(&part[idx + 7..]).ok_or_else(|| format!("bad selector {part:?}"))?;
                Req::NotIn(part[..idx].trim().into(), vals)
            } else if let Some(idx) = part.find(" in ") {
                let vals = set_values(&part[idx + 4..]).ok_or_else(|| format!("bad selector {part:?}"))?;
                Req::In(part[..idx].trim().into(), vals)
            } else if let Some(k) = part.strip_prefix('!') {
                Req::NotExists(k.trim().into())
            } else if part.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c)) {
                Req::Exists(part.clone())
            } else {
                return Err(format!("unable to parse requirement: {part:?}"));
            };
            reqs.push(req);
        }
        Ok(Self(reqs))
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::Ne(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }
}

/// A parsed `fieldSelector=` query value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in split_top(s) {
            let (k, eq, v) = if let Some((k, v)) = part.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, true, v)
            } else {
                return Err(format!("invalid field selector {part:?}"));
            };
            reqs.push((k.trim().to_string(), eq, v.trim().to_string()));
        }
        Ok(Self(reqs))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(k, eq, v)| {
            let pointer = format!("/{}", k.replace('.', "/"));
            let actual = match obj.pointer(&pointer) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Number(n)) => n.to_string(),
                _ => String::new(),
            };
            (actual == *v) == *eq
        })
    }
}

/// Whether a `LabelSelector` object (`matchLabels`/`matchExpressions`) selects `labels`.
/// An empty or missing selector selects nothing, as for a workload controller.
pub fn selector_object_matches(selector: &Value, labels: &Value) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    let mut any = false;
    if let Some(ml) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in ml {
            any = true;
            if get(k) != v.as_str() {
                return false;
            }
        }
    }
    if let Some(exprs) = selector.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            any = true;
            let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
            let values: Vec<&str> =
                e.get("values").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            let ok = match e.get("operator").and_then(Value::as_str).unwrap_or_default() {
                "In" => get(key).is_some_and(|x| values.contains(&x)),
                "NotIn" => !get(key).is_some_and(|x| values.contains(&x)),
                "Exists" => get(key).is_some(),
                "DoesNotExist" => get(key).is_none(),
                _ => false,
            };
            if !ok {
                return false;
            }
        }
    }
    any
}

/// Whether a plain map selector (a Service's `spec.selector`) selects `labels`.
pub fn map_selector_matches(selector: &Map<String, Value>, labels: &Value) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// RFC 7386 JSON merge patch. Keys starting with `$` (strategic-merge directives) are dropped,
/// which makes it good enough for the strategic merge patches kubectl sends for cordon and restart.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if k.starts_with('$') {
                        continue;
                    }
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(path: &str) -> Result<(String, String), String> {
    let idx = path.rfind('/').ok_or_else(|| format!("bad json pointer {path:?}"))?;
    Ok((path[..idx].to_string(), unescape(&path[idx + 1..])))
}

fn add_at(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    match doc.pointer_mut(&parent) {
        Some(Value::Object(m)) => {
            m.insert(last, value);
            Ok(())
        }
        Some(Value::Array(a)) => {
            if last == "-" {
                a.push(value);
                return Ok(());
            }
            let i: usize = last.parse().map_err(|_| format!("bad array index in {path:?}"))?;
            if i > a.len() {
                return Err(format!("index out of range in {path:?}"));
            }
            a.insert(i, value);
            Ok(())
        }
        _ => Err(format!("path {path:?} does not exist")),
    }
}

fn remove_at(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_pointer(path)?;
    match doc.pointer_mut(&parent) {
        Some(Value::Object(m)) => m.remove(&last).ok_or_else(|| format!("path {path:?} does not exist")),
        Some(Value::Array(a)) => {
            let i: usize = last.parse().map_err(|_| format!("bad array index in {path:?}"))?;
            if i >= a.len() {
                return Err(format!("index out of range in {path:?}"));
            }
            Ok(a.remove(i))
        }
        _ => Err(format!("path {path:?} does not exist")),
    }
}

/// RFC 6902 JSON patch (add, remove, replace, move, copy, test).
pub fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops.as_array().ok_or("json patch must be an array")?;
    let mut work = doc.clone();
    for op in ops {
        let path = op.get("path").and_then(Value::as_str).ok_or("json patch op without path")?;
        let value = op.get("value").cloned().unwrap_or(Value::Null);
        match op.get("op").and_then(Value::as_str).unwrap_or_default() {
            "add" => add_at(&mut work, path, value)?,
            "remove" => {
                remove_at(&mut work, path)?;
            }
            "replace" => {
                remove_at(&mut work, path)?;
                add_at(&mut work, path, value)?;
            }
            "test" => {
                if work.pointer(path) != Some(&value) {
                    return Err(format!("test operation failed at {path:?}"));
                }
            }
            op_name @ ("move" | "copy") => {
                let from = op.get("from").and_then(Value::as_str).ok_or("move/copy without from")?;
                let v = if op_name == "move" {
                    remove_at(&mut work, from)?
                } else {
                    work.pointer(from).cloned().ok_or_else(|| format!("path {from:?} does not exist"))?
                };
                add_at(&mut work, path, v)?;
            }
            other => return Err(format!("unknown json patch op {other:?}")),
        }
    }
    *doc = work;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selector_handles_equality_inequality_and_sets() {
        let obj = json!({"metadata": {"labels": {"a": "b", "e": "x"}}});
        let check = |s: &str, expect: bool| assert_eq!(LabelSelector::parse(s).map(|l| l.matches(&obj)), Ok(expect), "{s}");
        check("a=b", true);
        check("a=b,c!=d", true);
        check("a=b,e in (x,y)", true);
        check("e notin (x,y)", false);
        check("a!=b", false);
        check("!a", false);
        check("e", true);
        check("", true);
    }

    #[test]
    fn field_selector_reads_dotted_paths() {
        let obj = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "w1"}, "status": {"phase": "Running"}});
        let sel = FieldSelector::parse("spec.nodeName=w1,status.phase!=Failed,metadata.name=p").map(|f| f.matches(&obj));
        assert_eq!(sel, Ok(true));
        assert_eq!(FieldSelector::parse("status.phase!=Running").map(|f| f.matches(&obj)), Ok(false));
    }

    #[test]
    fn merge_patch_removes_nulls_and_drops_directives() {
        let mut doc = json!({"spec": {"unschedulable": true, "x": 1}});
        merge_patch(&mut doc, &json!({"spec": {"unschedulable": null, "$setElementOrder/x": []}}));
        assert_eq!(doc, json!({"spec": {"x": 1}}));
    }

    #[test]
    fn json_patch_applies_ops_atomically() {
        let mut doc = json!({"a": [1, 2], "b": {"c": 1}});
        json_patch(&mut doc, &json!([{"op": "add", "path": "/a/-", "value": 3}, {"op": "replace", "path": "/b/c", "value": 2}]))
            .expect("patch applies");
        assert_eq!(doc, json!({"a": [1, 2, 3], "b": {"c": 2}}));
        let bad = json_patch(&mut doc, &json!([{"op": "remove", "path": "/a/0"}, {"op": "test", "path": "/b/c", "value": 9}]));
        assert!(bad.is_err());
        assert_eq!(doc, json!({"a": [1, 2, 3], "b": {"c": 2}}));
    }
}
