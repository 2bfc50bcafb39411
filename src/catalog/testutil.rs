//! Table-driven test helpers shared by the providers' tables.

use super::{classify, find, identifier, needs_body, Kind, RequestView};

/// One request and the operation it must classify as (None: a near miss).
#[derive(Debug, Clone)]
pub(super) struct Case {
    pub kind: Kind,
    pub method: &'static str,
    pub path: &'static str,
    pub query: Option<&'static str>,
    pub content_type: Option<&'static str>,
    pub body: Option<&'static str>,
    pub expect: Option<&'static str>,
}

impl Case {
    pub fn new(
        kind: Kind,
        method: &'static str,
        path: &'static str,
        expect: Option<&'static str>,
    ) -> Case {
        Case {
            kind,
            method,
            path,
            query: None,
            content_type: None,
            body: None,
            expect,
        }
    }

    pub fn query(mut self, q: &'static str) -> Case {
        self.query = Some(q);
        self
    }

    pub fn content_type(mut self, ct: &'static str) -> Case {
        self.content_type = Some(ct);
        self
    }

    pub fn body(mut self, b: &'static str) -> Case {
        self.body = Some(b);
        self
    }

    pub fn method(&self) -> http::Method {
        http::Method::from_bytes(self.method.as_bytes()).unwrap()
    }

    /// Classifies the request; when `needs_body` is false, also without its body, which
    /// must not change the answer.
    pub fn check(&self) -> Result<(), String> {
        let m = self.method();
        let view = RequestView {
            method: &m,
            path: self.path,
            query: self.query,
            content_type: self.content_type,
            body: self.body.map(str::as_bytes),
        };
        let got = classify(self.kind, &view).map(|o| o.name);
        if got != self.expect {
            return Err(format!("{self:?}: got {got:?}"));
        }
        if let Some(name) = self.expect {
            if !name.starts_with(&format!("{}:", self.kind.as_str())) {
                return Err(format!("{self:?}: expected op of another kind"));
            }
        }
        if !needs_body(self.kind, &m, self.path, self.content_type) {
            let bodiless = classify(self.kind, &RequestView { body: None, ..view }).map(|o| o.name);
            if bodiless != got {
                return Err(format!(
                    "{self:?}: without body got {bodiless:?} but needs_body is false"
                ));
            }
        }
        Ok(())
    }
}

/// Every provider's table.
pub(super) fn all_cases() -> Vec<Case> {
    let mut all = Vec::new();
    all.extend(super::aws::cases());
    all.extend(super::gcp::cases());
    all.extend(super::msgraph::cases());
    all.extend(super::github::cases());
    all.extend(super::gitlab::cases());
    all.extend(super::kubernetes::cases());
    all.extend(super::vault::cases());
    all.extend(super::okta::cases());
    all.extend(super::stripe::cases());
    all
}

/// A sample success response and the identifier expected from it; none of `secrets` may
/// appear in what is returned.
pub(super) struct SampleResponse {
    pub op: &'static str,
    pub path: &'static str,
    pub body: &'static str,
    pub expect: Option<&'static str>,
    pub secrets: &'static [&'static str],
}

impl SampleResponse {
    pub fn check(&self) {
        let op = find(self.op).unwrap_or_else(|| panic!("no operation {}", self.op));
        let got = identifier(op, self.path, self.body.as_bytes());
        assert_eq!(got.as_deref(), self.expect, "{}", self.op);
        for s in self.secrets {
            assert!(
                self.body.contains(s),
                "{}: sample secret {s} is not in the sample",
                self.op
            );
            if let Some(g) = &got {
                assert!(!g.contains(s), "{}: returned a secret", self.op);
            }
        }
    }
}
