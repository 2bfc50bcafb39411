//! Slack's interactive approvals: the Approve and Deny buttons of the approval message.
//!
//! Slack posts a click to `POST /slack/interactions` on the admin listener, signed with the
//! app's signing secret (<https://api.slack.com/authentication/verifying-requests-from-slack>):
//! `X-Slack-Signature: v0=<hex HMAC-SHA256 of "v0:<timestamp>:<raw body>">` and
//! `X-Slack-Request-Timestamp`. keygate decides only on a callback whose signature
//! verifies, whose timestamp is within five minutes, and that it has not seen before (a
//! replayed callback is refused), from a Slack user the configuration maps to an approver.
//! Any chat system that signs its callbacks the same way can use the same endpoint.

use std::time::Duration;

/// How far a callback's timestamp may be from keygate's clock.
pub const MAX_SKEW_SECS: i64 = 5 * 60;

/// Why a callback is refused before anything is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No signature or timestamp header, or not the `v0=<hex>` form.
    Unsigned,
    /// The timestamp is more than five minutes away.
    Stale,
    /// The signature does not verify.
    BadSignature,
    /// This exact callback was seen before.
    Replayed,
}

impl Refused {
    pub fn code(self) -> &'static str {
        match self {
            Refused::Unsigned | Refused::BadSignature => "bad_signature",
            Refused::Stale => "stale_request",
            Refused::Replayed => "replayed_request",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Refused::Unsigned => {
                "a Slack callback needs X-Slack-Signature and X-Slack-Request-Timestamp"
            }
            Refused::Stale => "the callback's timestamp is more than five minutes away from now",
            Refused::BadSignature => {
                "the callback's signature does not verify with the signing secret"
            }
            Refused::Replayed => "this callback was already received",
        }
    }
}

/// The callbacks this process has taken.
pub static REPLAYS: std::sync::LazyLock<Replays> = std::sync::LazyLock::new(Replays::default);

/// Callbacks already taken, by signature, for as long as their timestamp is acceptable.
pub struct Replays(moka::sync::Cache<String, ()>);

impl Default for Replays {
    fn default() -> Self {
        Replays(
            moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(2 * MAX_SKEW_SECS as u64 + 60))
                .build(),
        )
    }
}

impl Replays {
    /// True the first time a signature is seen.
    fn first(&self, signature: &str) -> bool {
        let entry = self.0.entry(signature.to_string()).or_insert(());
        entry.is_fresh()
    }
}

/// Verifies a callback: signature over the raw body, timestamp within five minutes of
/// `now_secs`, never seen before.
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_secs: i64,
    replays: &Replays,
) -> Result<(), Refused> {
    let (Some(ts), Some(sig)) = (timestamp, signature) else {
        return Err(Refused::Unsigned);
    };
    let when: i64 = ts.trim().parse().map_err(|_| Refused::Unsigned)?;
    let tag = sig
        .trim()
        .strip_prefix("v0=")
        .and_then(|h| const_hex::decode(h).ok())
        .ok_or(Refused::Unsigned)?;
    if (now_secs - when).abs() > MAX_SKEW_SECS {
        return Err(Refused::Stale);
    }
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let mut signed = Vec::with_capacity(body.len() + 16);
    signed.extend_from_slice(b"v0:");
    signed.extend_from_slice(ts.trim().as_bytes());
    signed.push(b':');
    signed.extend_from_slice(body);
    aws_lc_rs::hmac::verify(&key, &signed, &tag).map_err(|_| Refused::BadSignature)?;
    if !replays.first(sig.trim()) {
        return Err(Refused::Replayed);
    }
    Ok(())
}

/// What a click asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Click {
    pub user_id: String,
    pub approve: bool,
    pub approval_id: String,
    pub response_url: Option<String>,
}

/// The button keygate puts in its message: `action_id` and the approval id as `value`.
pub const APPROVE_ACTION: &str = "keygate_approve";
pub const DENY_ACTION: &str = "keygate_deny";

/// Reads a `block_actions` callback (`payload=<JSON>`, form-encoded) for keygate's one
/// action; anything else is an error naming what is missing.
pub fn parse(body: &[u8]) -> Result<Click, String> {
    #[derive(serde::Deserialize)]
    struct Payload {
        #[serde(rename = "type")]
        kind: String,
        user: User,
        #[serde(default)]
        actions: Vec<Action>,
        response_url: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct User {
        id: String,
    }
    #[derive(serde::Deserialize)]
    struct Action {
        action_id: String,
        value: Option<String>,
    }
    let payload = form_urlencoded::parse(body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned())
        .ok_or("no payload")?;
    let p: Payload =
        serde_json::from_str(&payload).map_err(|e| format!("the payload is not valid: {e}"))?;
    if p.kind != "block_actions" {
        return Err(format!("a {:?} callback is not a button click", p.kind));
    }
    let [action] = p.actions.as_slice() else {
        return Err("a click carries exactly one action".into());
    };
    let approve = match action.action_id.as_str() {
        APPROVE_ACTION => true,
        DENY_ACTION => false,
        other => return Err(format!("unknown action {other:?}")),
    };
    let approval_id = action
        .value
        .clone()
        .filter(|v| v.starts_with("apr_"))
        .ok_or("the action names no approval")?;
    Ok(Click {
        user_id: p.user.id,
        approve,
        approval_id,
        response_url: p.response_url,
    })
}

/// The Slack blocks of an approval message: its text, then Approve and Deny buttons.
pub fn blocks(text: &str, approval_id: &str) -> serde_json::Value {
    serde_json::json!([
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {"type": "actions", "block_id": "keygate_decision", "elements": [
            {"type": "button", "style": "primary", "action_id": APPROVE_ACTION,
             "value": approval_id, "text": {"type": "plain_text", "text": "Approve"}},
            {"type": "button", "style": "danger", "action_id": DENY_ACTION,
             "value": approval_id, "text": {"type": "plain_text", "text": "Deny"}}
        ]}
    ])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sign(secret: &[u8], ts: &str, body: &[u8]) -> String {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
        let msg = [b"v0:", ts.as_bytes(), b":", body].concat();
        format!(
            "v0={}",
            const_hex::encode(aws_lc_rs::hmac::sign(&key, &msg))
        )
    }

    #[test]
    fn slacks_documented_example_verifies() {
        // The worked example of Slack's "Verifying requests from Slack".
        let secret = b"8f742231b10e8888abcd99yyyzzz85a5";
        let ts = "1531420618";
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let sig = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
        let r = Replays::default();
        assert_eq!(
            verify(secret, Some(ts), Some(sig), body, 1531420618, &r),
            Ok(())
        );
        assert_eq!(sign(secret, ts, body), sig);
        // Seen once: a replay is refused.
        assert_eq!(
            verify(secret, Some(ts), Some(sig), body, 1531420618, &r),
            Err(Refused::Replayed)
        );
    }

    #[test]
    fn wrong_signatures_old_timestamps_and_missing_headers_are_refused() {
        let secret = b"a-signing-secret-of-32-characters";
        let r = Replays::default();
        let body = b"payload=%7B%7D";
        let good = sign(secret, "1000", body);
        let cases = [
            (
                Some("1000"),
                Some(sign(b"another-secret-of-32-characters!", "1000", body)),
                1000,
                Refused::BadSignature,
            ),
            (
                Some("1000"),
                Some(good.clone()),
                1000 + MAX_SKEW_SECS + 1,
                Refused::Stale,
            ),
            (
                Some("1000"),
                Some(good.clone()),
                1000 - MAX_SKEW_SECS - 1,
                Refused::Stale,
            ),
            (None, Some(good.clone()), 1000, Refused::Unsigned),
            (Some("1000"), None, 1000, Refused::Unsigned),
            (
                Some("1000"),
                Some("v1=00".to_string()),
                1000,
                Refused::Unsigned,
            ),
            (Some("999"), Some(good.clone()), 1000, Refused::BadSignature),
        ];
        for (ts, sig, now, want) in cases {
            assert_eq!(verify(secret, ts, sig.as_deref(), body, now, &r), Err(want));
        }
        // A body changed after signing.
        assert_eq!(
            verify(
                secret,
                Some("1000"),
                Some(&good),
                b"payload=%7B%7D ",
                1000,
                &r
            ),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            verify(secret, Some("1000"), Some(&good), body, 1000, &r),
            Ok(())
        );
    }

    #[test]
    fn clicks_are_parsed_and_anything_else_refused() {
        let enc = |v: serde_json::Value| {
            form_urlencoded::Serializer::new(String::new())
                .append_pair("payload", &v.to_string())
                .finish()
        };
        let click = serde_json::json!({
            "type": "block_actions", "user": {"id": "U1", "username": "bob"},
            "actions": [{"action_id": "keygate_deny", "value": "apr_0123"}],
            "response_url": "https://hooks.slack.com/actions/T/1/x"
        });
        assert_eq!(
            parse(enc(click).as_bytes()).unwrap(),
            Click {
                user_id: "U1".into(),
                approve: false,
                approval_id: "apr_0123".into(),
                response_url: Some("https://hooks.slack.com/actions/T/1/x".into()),
            }
        );
        for bad in [
            serde_json::json!({"type": "view_submission", "user": {"id": "U1"}, "actions": []}),
            serde_json::json!({"type": "block_actions", "user": {"id": "U1"}, "actions": []}),
            serde_json::json!({"type": "block_actions", "user": {"id": "U1"},
                "actions": [{"action_id": "other", "value": "apr_1"}]}),
            serde_json::json!({"type": "block_actions", "user": {"id": "U1"},
                "actions": [{"action_id": "keygate_approve", "value": "idn_1"}]}),
        ] {
            assert!(parse(enc(bad).as_bytes()).is_err());
        }
        assert!(parse(b"nothing=here").is_err());
    }
}
