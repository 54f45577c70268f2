//! Duplicate keys in JSON objects. serde_json keeps the last of two equal keys without a word,
//! so a crafted safetensors header or manifest could list a tensor twice and have one entry
//! silently replace the other. Files we read are checked with [`check_unique_keys`] first.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Checks that no object anywhere in the JSON text `bytes` repeats a key. The error names the
/// key and where it is (serde_json adds the line and column); malformed JSON is an error too.
pub(crate) fn check_unique_keys(bytes: &[u8]) -> Result<(), String> {
    serde_json::from_slice::<Unique>(bytes)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Any JSON value whose objects repeat no key. Nesting is bounded by serde_json's recursion
/// limit (128), so deep input is an error, not a stack overflow.
struct Unique;

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueVisitor)
    }
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = Unique;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_str<E>(self, _: &str) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_unit<E>(self) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
        while seq.next_element::<Unique>()?.is_some() {}
        Ok(Unique)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
        let mut keys = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if keys.contains(&key) {
                return Err(de::Error::custom(format!(
                    "key {key:?} appears twice in one object"
                )));
            }
            map.next_value::<Unique>()?;
            keys.insert(key);
        }
        Ok(Unique)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_duplicate_keys_at_any_depth() {
        assert!(
            check_unique_keys(br#"{"a": 1, "b": [1, {"a": 2}], "c": {"a": {"a": null}}}"#).is_ok()
        );
        let err = check_unique_keys(br#"{"a": 1, "b": 2, "a": 3}"#).unwrap_err();
        assert!(err.contains("\"a\" appears twice"), "{err}");
        let err = check_unique_keys(br#"{"x": [{"k": 1, "k": 1}]}"#).unwrap_err();
        assert!(err.contains("\"k\" appears twice"), "{err}");
        // Escapes are decoded before comparing: "\u0061" is "a".
        assert!(check_unique_keys(br#"{"a": 1, "\u0061": 2}"#).is_err());
        assert!(check_unique_keys(b"{\"a\": ").is_err());
        // Deep nesting is an error, not a stack overflow.
        let deep = "[".repeat(100_000);
        assert!(check_unique_keys(deep.as_bytes()).is_err());
    }
}
