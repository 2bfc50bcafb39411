//! Finding the created identity's identifier in a tool's answer, never its secret.

use super::matcher::{segment_matches, Segments};
use super::table::Identifier;

/// Longest identifier returned; anything longer is not an identifier.
const MAX_LEN: usize = 512;

/// Fields that hold a credential in the answers of catalogued APIs (compared
/// case-insensitively). No identifier rule may name one, and no value equal to (or
/// containing) one of their values is ever returned.
const SECRET_FIELDS: &[&str] = &[
    "SecretAccessKey",
    "SessionToken",
    "ServicePassword",
    "Password",
    "PrivateKey",
    "KeyMaterial",
    "token",
    "client_token",
    "secret_id",
    "secretText",
    "privateKeyData",
    "client_secret",
    "clientSecret",
    "secret",
    "keyString",
    "pem",
    "webhook_secret",
    "access_token",
    "refresh_token",
    "id_token",
    "encoded_jit_config",
    "payload",
    "private_key",
    "secret_hash",
];

pub(super) fn is_secret_field(name: &str) -> bool {
    SECRET_FIELDS.iter().any(|f| f.eq_ignore_ascii_case(name))
}

pub(super) fn extract(rule: &Identifier, path: &str, body: &[u8]) -> Option<String> {
    let json = parse_json(body);
    let found = find(rule, path, body, json.as_ref())?;
    let found = found.trim();
    if found.is_empty() || found.len() > MAX_LEN || found.chars().any(char::is_control) {
        return None;
    }
    // Defence in depth: a misbehaving tool could echo its secret into an identifying field.
    let secrets = secret_values(body, json.as_ref());
    if secrets.iter().any(|s| {
        s == found
            || (s.len() >= 8 && found.contains(s.as_str()))
            || (found.len() >= 8 && s.contains(found))
    }) {
        return None;
    }
    Some(found.to_string())
}

fn parse_json(body: &[u8]) -> Option<serde_json::Value> {
    let start = body.iter().find(|b| !b.is_ascii_whitespace())?;
    if *start == b'{' || *start == b'[' {
        serde_json::from_slice(body).ok()
    } else {
        None
    }
}

fn find(
    rule: &Identifier,
    path: &str,
    body: &[u8],
    json: Option<&serde_json::Value>,
) -> Option<String> {
    match rule {
        Identifier::None => None,
        Identifier::JsonPointer(p) => {
            let json = json?;
            json.pointer(p)
                .and_then(scalar)
                .or_else(|| batch_pointer(json, p, path))
        }
        Identifier::XmlTag(tag) => match json {
            Some(j) => json_member(j, tag),
            None => xml_text(&String::from_utf8_lossy(body), tag),
        },
        Identifier::PathSegmentAfter(lit) => path_segment_after(path, lit),
        Identifier::FirstOf(rules) => rules.iter().find_map(|r| find(r, path, body, json)),
    }
}

/// In the answer to a Microsoft Graph `$batch`, the pointer into the body of the one
/// successful response that has it (None when several do: the identifier is ambiguous).
fn batch_pointer(json: &serde_json::Value, pointer: &str, path: &str) -> Option<String> {
    let segs = Segments::new(path);
    if !segs
        .as_slice()
        .last()
        .is_some_and(|s| s.eq_ignore_ascii_case("$batch"))
    {
        return None;
    }
    let mut found = json
        .get("responses")?
        .as_array()?
        .iter()
        .filter(|r| {
            r.get("status")
                .and_then(serde_json::Value::as_u64)
                .is_some_and(|s| (200..300).contains(&s))
        })
        .filter_map(|r| r.get("body")?.pointer(pointer).and_then(scalar));
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

fn scalar(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The first member named `name` at any depth, depth-first in document order.
fn json_member(v: &serde_json::Value, name: &str) -> Option<String> {
    match v {
        serde_json::Value::Object(m) => m.iter().find_map(|(k, v)| {
            if k == name {
                scalar(v)
            } else {
                json_member(v, name)
            }
        }),
        serde_json::Value::Array(a) => a.iter().find_map(|v| json_member(v, name)),
        _ => None,
    }
}

/// Text of the first element whose local name is `tag` (ASCII case-insensitively; EC2
/// answers in lowerCamelCase): `<tag>text</tag>`.
pub(super) fn xml_text(doc: &str, tag: &str) -> Option<String> {
    let mut rest = doc;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let name_end = rest
            .find(|c: char| c == '>' || c == '/' || c.is_whitespace())
            .unwrap_or(rest.len());
        let name = &rest[..name_end];
        let local = name.rsplit(':').next().unwrap_or(name);
        if !local.eq_ignore_ascii_case(tag) {
            continue;
        }
        let gt = rest.find('>')?;
        if rest[..gt].ends_with('/') {
            continue;
        }
        let content = &rest[gt + 1..];
        let end = content.find('<')?;
        return Some(xml_unescape(&content[..end]));
    }
    None
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// The segment after the last one equal to `lit`, or the key of a `lit(key)` segment.
fn path_segment_after(path: &str, lit: &str) -> Option<String> {
    let segs = Segments::new(path);
    let segs = segs.as_slice();
    let keyed = format!("{lit}(*)");
    for (i, seg) in segs.iter().enumerate().rev() {
        if segment_matches(&keyed, seg) {
            let inner = &seg[lit.len() + 1..seg.len() - 1];
            let inner = inner.trim_matches(|c| c == '\'' || c == '"');
            return Some(inner.replace('\'', ""));
        }
        if seg.eq_ignore_ascii_case(lit) {
            if let Some(next) = segs.get(i + 1) {
                return Some(next.clone());
            }
        }
    }
    None
}

/// Values of secret fields in the answer (JSON members at any depth, XML elements).
fn secret_values(body: &[u8], json: Option<&serde_json::Value>) -> Vec<String> {
    let mut out = Vec::new();
    match json {
        Some(j) => collect_json_secrets(j, &mut out),
        None => {
            let doc = String::from_utf8_lossy(body);
            for f in SECRET_FIELDS {
                if let Some(v) = xml_text(&doc, f) {
                    out.push(v);
                }
            }
        }
    }
    out.retain(|s| !s.trim().is_empty());
    out
}

fn collect_json_secrets(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                if is_secret_field(k) {
                    if let Some(s) = scalar(v) {
                        out.push(s);
                    }
                }
                collect_json_secrets(v, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_json_secrets(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::table::Identifier::JsonPointer as P;

    #[test]
    fn json_pointer() {
        assert_eq!(
            extract(&P("/id"), "/", br#"{"id":42}"#).as_deref(),
            Some("42")
        );
        assert_eq!(
            extract(&P("/a/b"), "/", br#"{"a":{"b":"x"}}"#).as_deref(),
            Some("x")
        );
        assert_eq!(extract(&P("/a"), "/", br#"{"a":{"b":"x"}}"#), None);
        assert_eq!(extract(&P("/id"), "/", b"not json"), None);
        assert_eq!(extract(&P("/id"), "/", b""), None);
        assert_eq!(extract(&P("/id"), "/", br#"{"id":""}"#), None);
        assert_eq!(extract(&P("/id"), "/", br#"{"id":"a\nb"}"#), None);
    }

    #[test]
    fn xml_tags() {
        let x = br#"<?xml version="1.0"?><R xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><User><UserNameX>no</UserNameX><UserName>a&amp;b</UserName></User></R>"#;
        assert_eq!(
            extract(&Identifier::XmlTag("UserName"), "/", x).as_deref(),
            Some("a&b")
        );
        assert_eq!(extract(&Identifier::XmlTag("RoleName"), "/", x), None);
        let x = b"<a:UserName attr=\"1\">bob</a:UserName>";
        assert_eq!(
            extract(&Identifier::XmlTag("UserName"), "/", x).as_deref(),
            Some("bob")
        );
        let x = b"<UserName/><UserName>carol</UserName>";
        assert_eq!(
            extract(&Identifier::XmlTag("UserName"), "/", x).as_deref(),
            Some("carol")
        );
        // AWS answers in JSON when asked to.
        let j = br#"{"CreateUserResponse":{"CreateUserResult":{"User":{"UserName":"dave"}}}}"#;
        assert_eq!(
            extract(&Identifier::XmlTag("UserName"), "/", j).as_deref(),
            Some("dave")
        );
    }

    #[test]
    fn path_segments() {
        let r = Identifier::PathSegmentAfter("secrets");
        assert_eq!(
            extract(&r, "/repos/o/secrets/actions/secrets/MY_SECRET/", b"").as_deref(),
            Some("MY_SECRET")
        );
        assert_eq!(extract(&r, "/repos/o/r/actions/secrets", b""), None);
        let r = Identifier::PathSegmentAfter("applications");
        assert_eq!(
            extract(&r, "/v1.0/applications(appId='abc')", b"").as_deref(),
            Some("appId=abc")
        );
        assert_eq!(
            extract(&r, "/v1.0/Applications/xyz", b"").as_deref(),
            Some("xyz")
        );
        assert_eq!(
            extract(&r, "/v1.0/applications('xyz')", b"").as_deref(),
            Some("xyz")
        );
    }

    #[test]
    fn first_of() {
        const R: Identifier = Identifier::FirstOf(&[
            Identifier::JsonPointer("/email"),
            Identifier::JsonPointer("/name"),
        ]);
        assert_eq!(
            extract(&R, "/", br#"{"name":"n","email":"e"}"#).as_deref(),
            Some("e")
        );
        assert_eq!(extract(&R, "/", br#"{"name":"n"}"#).as_deref(), Some("n"));
        assert_eq!(extract(&R, "/", br#"{}"#), None);
        assert_eq!(extract(&Identifier::None, "/x", br#"{"id":1}"#), None);
    }

    #[test]
    fn graph_batch_answers() {
        let b = br#"{"responses":[{"id":"1","status":200,"body":{"id":"me"}},
            {"id":"2","status":200,"body":{"keyId":"k-1","secretText":"s3cr3t-value"}},
            {"id":"3","status":400,"body":{"keyId":"k-failed"}}]}"#;
        assert_eq!(
            extract(&P("/keyId"), "/v1.0/$batch", b).as_deref(),
            Some("k-1")
        );
        // Two bodies have an id: which one was created is not known.
        let b = br#"{"responses":[{"id":"1","status":200,"body":{"id":"me"}},{"id":"2","status":201,"body":{"id":"new"}}]}"#;
        assert_eq!(extract(&P("/id"), "/v1.0/$batch", b), None);
        // Only for batches.
        let b = br#"{"responses":[{"status":200,"body":{"keyId":"k-1"}}]}"#;
        assert_eq!(
            extract(&P("/keyId"), "/v1.0/applications/a/addPassword", b),
            None
        );
    }

    #[test]
    fn never_a_secret() {
        // A tool that echoes the secret into the identifying field gets nothing recorded.
        let b = br#"{"id":"tok-123456789","token":"tok-123456789"}"#;
        assert_eq!(extract(&P("/id"), "/", b), None);
        let b = br#"{"keyId":"k1","secretText":"k1-but-longer-secret"}"#;
        assert_eq!(extract(&P("/keyId"), "/", b).as_deref(), Some("k1"));
        let b = br#"{"keyId":"prefix-SECRETSECRET","secretText":"SECRETSECRET"}"#;
        assert_eq!(extract(&P("/keyId"), "/", b), None);
        let x = b"<AccessKeyId>wJalrXUtnFEMI</AccessKeyId><SecretAccessKey>wJalrXUtnFEMI</SecretAccessKey>";
        assert_eq!(extract(&Identifier::XmlTag("AccessKeyId"), "/", x), None);
        assert!(is_secret_field("SECRETACCESSKEY"));
        assert!(!is_secret_field("AccessKeyId"));
    }
}
