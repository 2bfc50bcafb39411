//! Stripe: ephemeral keys, Secret Store secrets, Terminal connection tokens, webhook
//! endpoints (they come with a signing secret), Express dashboard login links, and the
//! Connect OAuth token exchange (it answers with the connected account's secret key).
//!
//! Paths are matched after any prefix (`/v1` is written out in the patterns; a base path
//! is allowed before it).
//!
//! Decisions:
//! - Secret and restricted API keys (`sk_…`, `rk_…`) are created in the Dashboard only;
//!   there is no API to create them, so nothing is catalogued for them.
//! - `POST /v1/apps/secrets` sets a Secret Store secret (created or overwritten);
//!   `/v1/apps/secrets/delete` and `/find` are not creation.
//! - Left out: client secrets of Payment Intents, Setup Intents, Customer and Account
//!   Sessions (they authorize one browser-side flow, not an API identity) and connected
//!   account creation (the platform reaches it with its own key).

use super::table::{creates, CatalogOp, Cond, Identifier, Route, POST};

const ID: Identifier = Identifier::JsonPointer("/id");

pub(super) static OPS: &[CatalogOp] = &[
    creates("stripe:ephemeral_keys.create", "api_key", ID),
    creates(
        "stripe:apps.secrets.create",
        "secret",
        Identifier::FirstOf(&[ID, Identifier::JsonPointer("/name")]),
    ),
    creates(
        "stripe:terminal.connection_tokens.create",
        "api_token",
        Identifier::None,
    ),
    creates("stripe:webhook_endpoints.create", "webhook_secret", ID),
    creates(
        "stripe:accounts.login_links.create",
        "login_link",
        Identifier::PathSegmentAfter("accounts"),
    ),
    creates(
        "stripe:oauth.token",
        "api_key",
        Identifier::JsonPointer("/stripe_user_id"),
    ),
];

const fn post(op: &'static str, patterns: &'static [&'static str]) -> Route {
    Route {
        op,
        methods: POST,
        patterns,
        cond: Cond::Always,
    }
}

pub(super) static ROUTES: &[Route] = &[
    post("stripe:ephemeral_keys.create", &["**/v1/ephemeral_keys"]),
    post("stripe:apps.secrets.create", &["**/v1/apps/secrets"]),
    post(
        "stripe:terminal.connection_tokens.create",
        &["**/v1/terminal/connection_tokens"],
    ),
    post(
        "stripe:webhook_endpoints.create",
        &["**/v1/webhook_endpoints"],
    ),
    post(
        "stripe:accounts.login_links.create",
        &["**/v1/accounts/*/login_links"],
    ),
    post("stripe:oauth.token", &["**/oauth/token"]),
];

#[cfg(test)]
pub(super) fn cases() -> Vec<super::testutil::Case> {
    use super::testutil::Case;
    use super::Kind::Stripe;
    const FORM: &str = "application/x-www-form-urlencoded";
    let c = |m: &'static str, p: &'static str, e: Option<&'static str>| {
        Case::new(Stripe, m, p, e).content_type(FORM)
    };
    vec![
        c(
            "POST",
            "/v1/ephemeral_keys",
            Some("stripe:ephemeral_keys.create"),
        )
        .body("customer=cus_123"),
        c(
            "POST",
            "/V1/Ephemeral_Keys/",
            Some("stripe:ephemeral_keys.create"),
        ),
        c(
            "POST",
            "/v1/apps/secrets",
            Some("stripe:apps.secrets.create"),
        )
        .body("name=k&payload=s&scope[type]=account"),
        c(
            "POST",
            "/v1/terminal/connection_tokens",
            Some("stripe:terminal.connection_tokens.create"),
        ),
        c(
            "POST",
            "/v1/webhook_endpoints",
            Some("stripe:webhook_endpoints.create"),
        ),
        c(
            "POST",
            "/v1/accounts/acct_1/login_links",
            Some("stripe:accounts.login_links.create"),
        ),
        c("POST", "/oauth/token", Some("stripe:oauth.token"))
            .body("grant_type=authorization_code&code=ac_1"),
        // Near misses.
        c("GET", "/v1/apps/secrets", None),
        c("GET", "/v1/apps/secrets/find", None),
        c("POST", "/v1/apps/secrets/delete", None),
        c("DELETE", "/v1/ephemeral_keys/ephkey_1", None),
        c("POST", "/v1/ephemeral_keys/ephkey_1", None),
        c("GET", "/v1/webhook_endpoints", None),
        c("POST", "/v1/webhook_endpoints/we_1", None),
        c("POST", "/v1/accounts", None),
        c("POST", "/v1/accounts/acct_1", None),
        c("POST", "/v1/customers", None),
        c("POST", "/v1/payment_intents", None),
        c("POST", "/oauth/deauthorize", None),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::testutil::SampleResponse;

    #[test]
    fn identifiers() {
        let samples = [
            SampleResponse {
                op: "stripe:ephemeral_keys.create",
                path: "/v1/ephemeral_keys",
                body: r#"{"id":"ephkey_1MxXNxLkdIwHu7ixEXAMPLE","object":"ephemeral_key","associated_objects":[{"id":"cus_1","type":"customer"}],
                    "secret":"ek_test_YWNjdF8xTTJKVGtMa2RJd0h1N2l4LEVYQU1QTEU"}"#,
                expect: Some("ephkey_1MxXNxLkdIwHu7ixEXAMPLE"),
                secrets: &["ek_test_YWNjdF8xTTJKVGtMa2RJd0h1N2l4LEVYQU1QTEU"],
            },
            SampleResponse {
                op: "stripe:apps.secrets.create",
                path: "/v1/apps/secrets",
                body: r#"{"id":"appsecret_5110QzMIZ0005GtxEXAMPLE","object":"apps.secret","name":"my-api-key","scope":{"type":"account"}}"#,
                expect: Some("appsecret_5110QzMIZ0005GtxEXAMPLE"),
                secrets: &[],
            },
            SampleResponse {
                op: "stripe:webhook_endpoints.create",
                path: "/v1/webhook_endpoints",
                body: r#"{"id":"we_1Mr5jULkdIwHu7ixEXAMPLE","object":"webhook_endpoint","secret":"whsec_wRNftLajMZNeslQOP6vEPm4iVx5NlZ6z"}"#,
                expect: Some("we_1Mr5jULkdIwHu7ixEXAMPLE"),
                secrets: &["whsec_wRNftLajMZNeslQOP6vEPm4iVx5NlZ6z"],
            },
            SampleResponse {
                op: "stripe:oauth.token",
                path: "/oauth/token",
                body: r#"{"access_token":"sk_test_EXAMPLEEXAMPLEEXAMPLE","livemode":false,"refresh_token":"rt_EXAMPLEEXAMPLE",
                    "token_type":"bearer","stripe_publishable_key":"pk_test_EXAMPLE","stripe_user_id":"acct_1EXAMPLE","scope":"read_write"}"#,
                expect: Some("acct_1EXAMPLE"),
                secrets: &["sk_test_EXAMPLEEXAMPLEEXAMPLE", "rt_EXAMPLEEXAMPLE"],
            },
            SampleResponse {
                op: "stripe:accounts.login_links.create",
                path: "/v1/accounts/acct_1/login_links",
                body: r#"{"object":"login_link","created":1680577733,"url":"https://connect.stripe.com/express/Ln7FfnNpUcCU"}"#,
                expect: Some("acct_1"),
                secrets: &[],
            },
            SampleResponse {
                op: "stripe:terminal.connection_tokens.create",
                path: "/v1/terminal/connection_tokens",
                body: r#"{"object":"terminal.connection_token","secret":"pst_test_EXAMPLE"}"#,
                expect: None,
                secrets: &["pst_test_EXAMPLE"],
            },
        ];
        for s in samples {
            s.check();
        }
    }
}
