//! Reading request bodies the way the most permissive server would: a JSON tree that keeps
//! every duplicate member (a later `"type"` must not hide an earlier one), and helpers for
//! content types.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// A JSON value whose objects keep every member, duplicates included, in order.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Json {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// Parses a whole body; None when it is not exactly one JSON value.
    pub(super) fn parse(body: &[u8]) -> Option<Json> {
        // serde_json bounds nesting (128 levels), so a hostile body cannot exhaust the stack.
        serde_json::from_slice(body).ok()
    }

    /// Every member of an object whose name equals `name`, ASCII case-insensitively and
    /// ignoring surrounding whitespace (case-insensitive decoders exist, e.g. Go's
    /// encoding/json).
    pub(super) fn members<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Json> + 'a {
        let members: &[(String, Json)] = match self {
            Json::Obj(m) => m,
            _ => &[],
        };
        members
            .iter()
            .filter(move |(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Calls `f` on every member at any depth, and on every string in the tree with an
    /// empty name (array elements and top-level strings).
    pub(super) fn walk<'a>(&'a self, f: &mut dyn FnMut(&'a str, &'a Json)) {
        match self {
            Json::Obj(m) => {
                for (k, v) in m {
                    f(k, v);
                    v.walk(f);
                }
            }
            Json::Arr(a) => {
                for v in a {
                    if matches!(v, Json::Str(_)) {
                        f("", v);
                    }
                    v.walk(f);
                }
            }
            _ => {}
        }
    }

    /// Every string at any depth (member values and array elements).
    pub(super) fn strings(&self) -> Vec<&str> {
        let mut out = Vec::new();
        if let Json::Str(s) = self {
            out.push(s.as_str());
        }
        self.walk(&mut |_, v| {
            if let Json::Str(s) = v {
                out.push(s.as_str());
            }
        });
        out
    }

    /// Serializes back to JSON text (duplicates kept).
    pub(super) fn to_text(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Num(n) => out.push_str(n),
            Json::Str(s) => write_str(out, s),
            Json::Arr(a) => {
                out.push('[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write(out);
                }
                out.push(']');
            }
            Json::Obj(m) => {
                out.push('{');
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_str(out, k);
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }
}

fn write_str(out: &mut String, s: &str) {
    // Serializing a str cannot fail; the fallback keeps the output valid JSON anyway.
    match serde_json::to_string(s) {
        Ok(q) => out.push_str(&q),
        Err(_) => out.push_str("\"\""),
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Num(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Num(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        Ok(Json::Num(v.to_string()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
        Ok(Json::Str(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut v = Vec::new();
        while let Some(e) = seq.next_element::<Json>()? {
            v.push(e);
        }
        Ok(Json::Arr(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut m = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Json>()? {
            m.push((k, v));
        }
        Ok(Json::Obj(m))
    }
}

/// The media type without parameters, trimmed and lowercased: `application/json`.
pub(super) fn essence(content_type: Option<&str>) -> Option<String> {
    content_type.map(|ct| {
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    })
}

/// Whether `haystack` contains `needle`, ASCII case-insensitively.
pub(super) fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack.len() >= needle.len()
        && haystack
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_kept() {
        let j = Json::parse(br#"{"type":"a","TYPE":"b","x":{"type":["c"]}}"#).unwrap();
        let top: Vec<_> = j.members("type").collect();
        assert_eq!(top, vec![&Json::Str("a".into()), &Json::Str("b".into())]);
        assert_eq!(j.strings(), vec!["a", "b", "c"]);
        assert_eq!(j.to_text(), r#"{"type":"a","TYPE":"b","x":{"type":["c"]}}"#);
    }

    #[test]
    fn rejects_what_is_not_one_value() {
        assert!(Json::parse(b"").is_none());
        assert!(Json::parse(b"{} {}").is_none());
        assert!(Json::parse(b"{\"a\":").is_none());
        let deep = "[".repeat(10_000);
        assert!(Json::parse(deep.as_bytes()).is_none());
        assert_eq!(Json::parse(b" 12 "), Some(Json::Num("12".into())));
        assert_eq!(Json::parse(br#""\u0041""#), Some(Json::Str("A".into())));
    }

    #[test]
    fn content_types() {
        assert_eq!(
            essence(Some(" Application/JSON ; charset=utf-8")).as_deref(),
            Some("application/json")
        );
        assert_eq!(essence(None), None);
        assert!(contains_ignore_case(
            b"xx Service-Account-TOKEN",
            b"service-account-token"
        ));
        assert!(!contains_ignore_case(b"short", b"longer needle"));
    }
}
