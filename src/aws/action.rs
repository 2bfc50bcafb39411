//! TEMPORARY stub (replaced by the real module from the i14-sigv4 branch).
pub struct AwsAction {
    pub actions: Vec<String>,
    pub resources: Vec<String>,
}
pub fn action(
    service: &str,
    _method: &http::Method,
    _path: &str,
    query: Option<&str>,
    _headers: &http::HeaderMap,
    body: Option<&[u8]>,
) -> Result<AwsAction, String> {
    let mut found = None;
    for src in [query.map(str::as_bytes), body].into_iter().flatten() {
        for (k, v) in form_urlencoded::parse(src) {
            if k == "Action" {
                found = Some(v.into_owned());
            }
        }
    }
    let a = found.unwrap_or_else(|| "GetObject".into());
    Ok(AwsAction {
        actions: vec![format!("{service}:{a}")],
        resources: vec!["*".into()],
    })
}
pub fn session_policy(a: &AwsAction) -> String {
    serde_json::json!({"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":a.actions,"Resource":a.resources}]}).to_string()
}
