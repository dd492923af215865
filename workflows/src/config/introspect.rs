//! The field names a serde-derived struct accepts, read from its own
//! `Deserialize` impl, so the unknown-key check and its did-you-mean use the
//! same list as deserialization and cannot drift from it.
//!
//! Owns: [`fields_of`]. Refuses: anything but structs (maps and scalars
//! have no fixed keys; they give an empty list).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// The keys `T` accepts (its fields, after renames).
pub fn fields_of<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    // The deserializer always stops with `Stop`: only the recorded list matters.
    let _ = T::deserialize(Recorder { fields: &mut fields });
    fields
}

struct Recorder<'a> {
    fields: &'a mut &'static [&'static str],
}

#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("introspection stops here")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        Stop
    }
}

impl<'de> Deserializer<'de> for Recorder<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Stop> {
        *self.fields = fields;
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Two {
        first: u8,
        #[serde(rename = "second_key")]
        second: String,
    }

    #[test]
    fn the_fields_of_a_struct_are_its_keys_after_renames() {
        assert_eq!(fields_of::<Two>(), &["first", "second_key"]);
        assert!(fields_of::<String>().is_empty());
    }
}
