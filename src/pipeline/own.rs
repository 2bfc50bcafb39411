//! keygate's own endpoints on the data plane (`/.keygate/…`), audited like every request:
//!
//! - `POST /.keygate/tasks`: the agent (identified as for any call) opens a task for
//!   itself (JSON: `purpose`, `ticket`, `ttl`, `tools`, `operations`), when
//!   `tasks.agents_may_open`; `POST /.keygate/tasks/{id}/end` ends one of its own.
//! - `POST /.keygate/introspect`: RFC 7662 introspection of a JWT keygate minted for a tool
//!   (form field `token`): `{"active": false}` once it expired, or once the task it was
//!   minted in ended, or when keygate did not sign it. It reveals only the claims of a
//!   token its caller holds, so it asks for no credential.

use crate::error::{Error, ErrorKind, ProxyBody};
use http::{Method, Response, StatusCode};

/// The most of a body these endpoints read.
pub const MAX_BODY: usize = 16 * 1024;

pub fn only_post(method: &Method) -> Result<(), Error> {
    if method != Method::POST {
        return Err(Error::new(
            ErrorKind::MethodNotAllowed,
            "this endpoint takes POST",
        ));
    }
    Ok(())
}

pub fn answer(status: StatusCode, v: serde_json::Value) -> Response<ProxyBody> {
    let mut resp = crate::error::json_response(status, v.to_string());
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    resp
}

/// RFC 7662: whether a token keygate minted is still good.
/// `vouch` says whether keygate can vouch for an agent's tokens for an audience now: the
/// agent (`sub`) is not suspended, this replica's view of the store (suspensions, tasks)
/// is fresh, and `aud` is a `jwt` tool's (keygate signs other JWTs: client assertions,
/// token-exchange subjects; those are not tool tokens).
pub fn introspect(
    signer: &crate::credentials::Signer,
    tasks: &crate::tasks::Tasks,
    vouch: &dyn Fn(&str, &str) -> bool,
    now_ms: i64,
    body: &[u8],
) -> Response<ProxyBody> {
    let token = form_urlencoded::parse(body)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned());
    let inactive = || answer(StatusCode::OK, serde_json::json!({ "active": false }));
    let Some(token) = token else {
        return answer(
            StatusCode::BAD_REQUEST,
            serde_json::json!({ "error": "invalid_request", "error_description": "the form has no token" }),
        );
    };
    let Ok(claims) = signer.verify_jwt(&token) else {
        return inactive();
    };
    let now = now_ms / 1000;
    let int = |k: &str| claims.get(k).map(|v| v.as_i64());
    // exp required; nbf, when present, a number: anything else is not keygate's token.
    let (Some(Some(exp)), nbf) = (int("exp"), int("nbf")) else {
        return inactive();
    };
    let nbf = match nbf {
        None => 0,
        Some(Some(n)) => n,
        Some(None) => return inactive(),
    };
    if now >= exp || now < nbf {
        return inactive();
    }
    // Minted for an agent (a tool credential carries `sub` and `jti`), that keygate can
    // vouch for now.
    let (Some(sub), Some(_)) = (
        claims.get("sub").and_then(|s| s.as_str()),
        claims.get("jti").and_then(|s| s.as_str()),
    ) else {
        return inactive();
    };
    let Some(aud) = claims.get("aud").and_then(|a| a.as_str()) else {
        return inactive();
    };
    if !vouch(sub, aud) {
        return inactive();
    }
    // Minted in a task: good only while the task is open (the deny list of the tokens of
    // ended tasks is the tasks themselves, kept until long after the tokens expire).
    if let Some(task) = claims.get("task") {
        let open = task.as_str().is_some_and(|t| tasks.is_open(t, now_ms));
        if !open {
            return inactive();
        }
    }
    let mut v = serde_json::json!({ "active": true, "token_type": "Bearer" });
    if let (Some(o), Some(c)) = (v.as_object_mut(), claims.as_object()) {
        for k in [
            "iss", "sub", "aud", "scope", "owner", "iat", "nbf", "exp", "jti", "task",
        ] {
            if let Some(x) = c.get(k) {
                o.insert(k.into(), x.clone());
            }
        }
    }
    answer(StatusCode::OK, v)
}

pub fn store_error(e: crate::store::StoreError) -> Error {
    match e {
        crate::store::StoreError::Conflict(m) => Error::new(ErrorKind::BadRequest, m),
        e => Error::new(
            ErrorKind::StoreUnavailable,
            "keygate cannot reach its store; nothing was changed",
        )
        .with_detail(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn active(signer: &crate::credentials::Signer, claims: serde_json::Value) -> bool {
        let token = signer.sign_jwt(&claims).unwrap();
        let vouch = |sub: &str, aud: &str| sub == "agent-1" && aud == "tool-a";
        let body = format!("token={token}");
        let r = introspect(
            signer,
            &crate::tasks::Tasks::default(),
            &vouch,
            1_000_000,
            body.as_bytes(),
        );
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["active"] == true
    }

    /// Only a tool token keygate can vouch for is active: its agent and its audience
    /// (keygate also signs client assertions and token-exchange subjects, for others).
    #[tokio::test]
    async fn introspection_vouches_only_for_tool_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let signer = crate::credentials::Signer::load_or_generate(
            &dir.path().join("k.pem"),
            crate::config::SigningAlgorithm::EdDsa,
            true,
        )
        .unwrap();
        let claims = |aud: &str| {
            serde_json::json!({"iss": "keygate", "sub": "agent-1", "aud": aud, "jti": "j",
                               "iat": 999, "nbf": 999, "exp": 1300})
        };
        assert!(active(&signer, claims("tool-a")).await);
        // A token-exchange subject: audience the token endpoint.
        assert!(!active(&signer, claims("https://as.example/token")).await);
        // An audience that is not a string, or none.
        let mut c = claims("tool-a");
        c["aud"] = serde_json::json!(["tool-a"]);
        assert!(!active(&signer, c.clone()).await);
        c.as_object_mut().unwrap().remove("aud");
        assert!(!active(&signer, c).await);
        // Expired.
        let mut c = claims("tool-a");
        c["exp"] = serde_json::json!(1000);
        assert!(!active(&signer, c).await);
    }
}
