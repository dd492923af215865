//! Just enough of the Kubernetes protobuf encoding to accept what kubectl's
//! typed clients send for `kubectl create namespace|configmap|secret`: the
//! `k8s\0` envelope, ObjectMeta (name, generateName, namespace, labels,
//! annotations) and the data maps. Anything else is refused by the caller
//! with 415.

use serde_json::{json, Map, Value};

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

enum Field<'a> {
    Varint,
    Bytes(&'a [u8]),
    Fixed,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn varint(&mut self) -> Option<u64> {
        let mut out = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos)?;
            self.pos += 1;
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(out);
            }
        }
        None
    }

    fn next(&mut self) -> Option<Option<(u64, Field<'a>)>> {
        if self.pos >= self.buf.len() {
            return Some(None);
        }
        let key = self.varint()?;
        let field = match key & 7 {
            0 => {
                self.varint()?;
                Field::Varint
            }
            2 => {
                let len = usize::try_from(self.varint()?).ok()?;
                let bytes = self.buf.get(self.pos..self.pos.checked_add(len)?)?;
                self.pos += len;
                Field::Bytes(bytes)
            }
            1 => {
                self.pos += 8;
                Field::Fixed
            }
            5 => {
                self.pos += 4;
                Field::Fixed
            }
            _ => return None,
        };
        Some(Some((key >> 3, field)))
    }

    fn fields(buf: &'a [u8]) -> Option<Vec<(u64, Field<'a>)>> {
        let mut r = Reader::new(buf);
        let mut out = Vec::new();
        while let Some(f) = r.next()? {
            out.push(f);
        }
        Some(out)
    }
}

fn string(b: &[u8]) -> Option<String> {
    String::from_utf8(b.to_vec()).ok()
}

fn map_entry(b: &[u8], base64_values: bool) -> Option<(String, Value)> {
    let mut key = String::new();
    let mut value = Value::String(String::new());
    for (n, f) in Reader::fields(b)? {
        match (n, f) {
            (1, Field::Bytes(k)) => key = string(k)?,
            (2, Field::Bytes(v)) if base64_values => value = Value::String(base64(v)),
            (2, Field::Bytes(v)) => value = Value::String(string(v)?),
            _ => {}
        }
    }
    Some((key, value))
}

/// Standard base64 with padding.
pub(crate) fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn object_meta(b: &[u8]) -> Option<Value> {
    let mut meta = Map::new();
    let mut labels = Map::new();
    let mut annotations = Map::new();
    for (n, f) in Reader::fields(b)? {
        match (n, f) {
            (1, Field::Bytes(v)) => {
                meta.insert("name".into(), json!(string(v)?));
            }
            (2, Field::Bytes(v)) => {
                meta.insert("generateName".into(), json!(string(v)?));
            }
            (3, Field::Bytes(v)) => {
                meta.insert("namespace".into(), json!(string(v)?));
            }
            (11, Field::Bytes(v)) => {
                let (k, v) = map_entry(v, false)?;
                labels.insert(k, v);
            }
            (12, Field::Bytes(v)) => {
                let (k, v) = map_entry(v, false)?;
                annotations.insert(k, v);
            }
            _ => {}
        }
    }
    if !labels.is_empty() {
        meta.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        meta.insert("annotations".into(), Value::Object(annotations));
    }
    Some(Value::Object(meta))
}

/// Decode a protobuf-encoded Namespace, ConfigMap or Secret into JSON; `None` for anything else.
pub fn decode(body: &[u8]) -> Option<Value> {
    let envelope = body.strip_prefix(b"k8s\0")?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (n, f) in Reader::fields(envelope)? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (m, g) in Reader::fields(tm)? {
                    match (m, g) {
                        (1, Field::Bytes(v)) => api_version = string(v)?,
                        (2, Field::Bytes(v)) => kind = string(v)?,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(r)) => raw = r,
            _ => {}
        }
    }
    if api_version != "v1" || !matches!(kind.as_str(), "Namespace" | "ConfigMap" | "Secret") {
        return None;
    }
    let mut obj = json!({"apiVersion": api_version, "kind": kind});
    let mut data = Map::new();
    let mut string_data = Map::new();
    for (n, f) in Reader::fields(raw)? {
        match (kind.as_str(), n, f) {
            (_, 1, Field::Bytes(m)) => obj["metadata"] = object_meta(m)?,
            ("ConfigMap", 2, Field::Bytes(e)) => {
                let (k, v) = map_entry(e, false)?;
                data.insert(k, v);
            }
            ("Secret", 2, Field::Bytes(e)) => {
                let (k, v) = map_entry(e, true)?;
                data.insert(k, v);
            }
            ("Secret", 3, Field::Bytes(t)) => obj["type"] = json!(string(t)?),
            ("Secret", 4, Field::Bytes(e)) => {
                let (k, v) = map_entry(e, false)?;
                string_data.insert(k, v);
            }
            (_, _, Field::Varint | Field::Fixed | Field::Bytes(_)) => {}
        }
    }
    if !data.is_empty() {
        obj["data"] = Value::Object(data);
    }
    if !string_data.is_empty() {
        obj["stringData"] = Value::Object(string_data);
    }
    Some(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ld(field: u8, bytes: &[u8]) -> Vec<u8> {
        let mut v = vec![(field << 3) | 2, u8::try_from(bytes.len()).expect("short")];
        v.extend_from_slice(bytes);
        v
    }

    #[test]
    fn decodes_a_namespace_with_labels() {
        let mut meta = ld(1, b"dr-test");
        meta.extend(ld(11, &[ld(1, b"team"), ld(2, b"ops")].concat()));
        let raw = ld(1, &meta);
        let type_meta = [ld(1, b"v1"), ld(2, b"Namespace")].concat();
        let mut body = b"k8s\0".to_vec();
        body.extend([ld(1, &type_meta), ld(2, &raw)].concat());
        assert_eq!(
            decode(&body),
            Some(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "dr-test", "labels": {"team": "ops"}}}))
        );
    }

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64(b"hello"), "aGVsbG8=");
        assert_eq!(base64(b"hi!"), "aGkh");
    }
}
