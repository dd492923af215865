//! The versioned envelope every stored record travels in: one format-version
//! byte, then the record in bincode. bincode is not self-describing, so the
//! byte is what lets a later release read or migrate an old store.

use serde::{de::DeserializeOwned, Serialize};

/// The record format this binary writes and reads.
pub const FORMAT_VERSION: u8 = 2;

/// Encodes a record in the current envelope.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Sized once: a run's snapshot is kilobytes, and growing by doubling copied it several times.
    let size = bincode::serialized_size(value).map_or(256, |n| usize::try_from(n).unwrap_or(256));
    let mut out = Vec::with_capacity(size + 1);
    out.push(FORMAT_VERSION);
    // PROOF: serializing plain data structs (no maps with non-string keys, no
    // custom impls that fail) into a Vec cannot fail with bincode.
    #[allow(clippy::expect_used)]
    bincode::serialize_into(&mut out, value).expect("bincode serialization of a record into memory");
    out
}

/// Decodes a record, naming what is wrong when it cannot.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        None => Err("empty record".to_owned()),
        Some((&FORMAT_VERSION, body)) => {
            bincode::deserialize(body).map_err(|e| format!("cannot decode format-{FORMAT_VERSION} record: {e}"))
        }
        Some((&other, _)) => Err(format!(
            "record has format version {other}, this dr reads version {FORMAT_VERSION}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_unknown_versions() {
        let bytes = encode(&("step-1".to_owned(), 42u64));
        assert_eq!(bytes[0], FORMAT_VERSION);
        let back: (String, u64) = decode(&bytes).unwrap();
        assert_eq!(back, ("step-1".to_owned(), 42));

        let mut future = bytes.clone();
        future[0] = 9;
        let err = decode::<(String, u64)>(&future).unwrap_err();
        assert!(err.contains("format version 9"), "{err}");
        assert!(decode::<(String, u64)>(&[]).is_err());
        assert!(decode::<(String, u64)>(&[FORMAT_VERSION, 1]).is_err());
    }
}
