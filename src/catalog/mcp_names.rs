//! Which MCP tools create identities, by their names: an MCP server's tools are not in
//! the catalog, so a call is judged by the name it asks for (and by configuration).

/// Whether an MCP tool creates identities: configured so, or named so
/// (a verb such as create/generate/issue/mint/rotate with a noun such as
/// key/token/jwt/credential/creds/secret/password/certificate/service_account).
///
/// The name is split into words at `_`, `-`, `.`, other non-alphanumerics and camelCase
/// boundaries, acronyms included (`CreateAPIToken` is create + api + token,
/// `generateSSHKey` generate + ssh + key, `issueJWT` issue + jwt); a word run together
/// (`createapitoken`) counts when it starts with a verb and ends with a noun. Erring
/// towards identity creation is the safe side: such a call waits for a human, where a
/// miss would let an agent mint credentials unseen.
pub fn mcp_creates_identity(name: &str, configured: &std::collections::BTreeSet<String>) -> bool {
    if configured.contains(name) {
        return true;
    }
    let words = name_words(name);
    const VERBS: [&str; 13] = [
        "create",
        "generate",
        "regenerate",
        "new",
        "add",
        "issue",
        "mint",
        "rotate",
        "register",
        "make",
        "provision",
        "reset",
        "renew",
    ];
    const NOUNS: [&str; 33] = [
        "key",
        "keys",
        "apikey",
        "apikeys",
        "sshkey",
        "sshkeys",
        "gpgkey",
        "gpgkeys",
        "keypair",
        "keypairs",
        "accesskey",
        "accesskeys",
        "token",
        "tokens",
        "apitoken",
        "apitokens",
        "jwt",
        "jwts",
        "credential",
        "credentials",
        "cred",
        "creds",
        "secret",
        "secrets",
        "password",
        "passwords",
        "certificate",
        "certificates",
        "cert",
        "certs",
        "serviceaccount",
        "serviceaccounts",
        "identity",
    ];
    // Too short to be recognised at the end of a run-together word.
    const SHORT_NOUNS: [&str; 4] = ["sa", "sas", "pat", "pats"];
    let verb = words.iter().any(|w| VERBS.contains(&w.as_str()));
    let noun = words
        .iter()
        .any(|w| NOUNS.contains(&w.as_str()) || SHORT_NOUNS.contains(&w.as_str()))
        || words
            .windows(2)
            .any(|w| w[0] == "service" && (w[1] == "account" || w[1] == "accounts"));
    let run_together = words.iter().any(|w| {
        VERBS.iter().any(|v| {
            w.strip_prefix(v)
                .is_some_and(|rest| NOUNS.iter().any(|n| rest.ends_with(n)))
        })
    });
    (verb && noun) || run_together
}

/// The lowercase words of a name: split at non-alphanumerics and at camelCase
/// boundaries (`aB`, `1B`, and `ABc` before its `B`, so acronyms stand alone).
fn name_words(name: &str) -> Vec<String> {
    let chars: Vec<char> = name.chars().collect();
    let mut words: Vec<String> = Vec::new();
    let mut cur = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_ascii_alphanumeric() {
            if !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if c.is_ascii_uppercase() && !cur.is_empty() {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if prev.is_ascii_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_ascii_uppercase() && next_lower)
            {
                words.push(std::mem::take(&mut cur));
            }
        }
        cur.push(c.to_ascii_lowercase());
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (tool name, creates an identity by its name).
    const MCP_IDENTITY_NAMES: &[(&str, bool)] = &[
        ("create_api_token", true),
        ("createApiKey", true),
        ("generate-ssh-key", true),
        ("issue_credentials", true),
        ("create_service_account", true),
        ("createServiceAccounts", true),
        ("rotateSecret", true),
        ("mint_token", true),
        // Acronyms and abbreviations.
        ("CreateAPIToken", true),
        ("generateSSHKey", true),
        ("addSSHKey", true),
        ("createGPGKey", true),
        ("issueJWT", true),
        ("rotate_creds", true),
        ("create_pat", true),
        ("newPAT", true),
        ("create.sa", true),
        ("regenerate_access_key", true),
        ("reset_password", true),
        ("provisionCert", true),
        ("CREATE_API_KEY", true),
        ("createS3AccessKey", true),
        // Run together.
        ("createapitoken", true),
        ("generatesshkey", true),
        ("mintjwt", true),
        // Ordinary tools.
        ("echo", false),
        ("get-sum", false),
        ("list_keys", false),
        ("listSSHKeys", false),
        ("get_token_info", false),
        ("getTokenInfo", false),
        ("search_issues", false),
        ("list_tokens", false),
        ("delete_key", false),
        ("revoke_token", false),
        ("keyword_search", false),
        ("create_issue", false),
        ("createIssue", false),
        ("add_comment", false),
        ("address_lookup", false),
        ("newsletter_signup", false),
        ("make_pr", false),
        ("", false),
    ];

    #[test]
    fn mcp_identity_tool_names() {
        let none = Default::default();
        for (name, creates) in MCP_IDENTITY_NAMES {
            assert_eq!(mcp_creates_identity(name, &none), *creates, "{name}");
        }
        let configured = ["echo".to_string()].into_iter().collect();
        assert!(mcp_creates_identity("echo", &configured));
        assert_eq!(name_words("CreateAPIToken"), ["create", "api", "token"]);
        assert_eq!(name_words("issueJWT"), ["issue", "jwt"]);
        assert_eq!(
            name_words("get_S3Bucket2Key"),
            ["get", "s3", "bucket2", "key"]
        );
    }
}
