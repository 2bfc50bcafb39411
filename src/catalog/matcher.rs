//! Path patterns: segments compared case-insensitively, `*` globs, `|` alternatives and
//! `**` for any number of segments.

/// A request path cut into segments, each percent-decoded and without `;parameters`.
pub(super) struct Segments {
    segs: Vec<String>,
}

impl Segments {
    pub(super) fn new(path: &str) -> Segments {
        // A raw `?` or `#` cannot be part of a path; if a caller left the query or fragment
        // on, ignore it rather than miss a match.
        let path = path.split(['?', '#']).next().unwrap_or("");
        let segs = path
            .split('/')
            .filter_map(|raw| {
                // `/user/keys;x=1` reaches `/user/keys` on servers that strip matrix
                // parameters; compare what such a server would route on.
                let raw = raw.split(';').next().unwrap_or("");
                // Every valid `%XX` decoded, invalid escapes kept, invalid UTF-8 replaced.
                let seg = crate::percent::decode_lossy(raw).into_owned();
                (!seg.is_empty()).then_some(seg)
            })
            .collect();
        Segments { segs }
    }

    pub(super) fn matches(&self, pattern: &str) -> bool {
        match_from(pattern.trim_start_matches('/'), &self.segs)
    }

    pub(super) fn as_slice(&self) -> &[String] {
        &self.segs
    }
}

/// Whether the whole pattern matches the whole segment list. Dynamic programming over
/// (pattern segment, path segment), so `**` costs O(pattern × path) however a hostile path
/// repeats the segments around it.
fn match_from(pattern: &str, segs: &[String]) -> bool {
    let pat: Vec<&str> = pattern.split('/').filter(|p| !p.is_empty()).collect();
    // Most patterns end in a literal: reject on the last segment before any work.
    if let (Some(last_pat), Some(last_seg)) = (pat.last(), segs.last()) {
        if *last_pat != "**" && !segment_matches(last_pat, last_seg) {
            return false;
        }
    }
    let n = segs.len();
    // next[j]: the patterns after the current one match segs[j..].
    let mut next = vec![false; n + 1];
    next[n] = true;
    for p in pat.iter().rev() {
        let mut cur = vec![false; n + 1];
        if *p == "**" {
            let mut any = false;
            for j in (0..=n).rev() {
                any |= next[j];
                cur[j] = any;
            }
        } else {
            for j in 0..n {
                cur[j] = next[j + 1] && segment_matches(p, &segs[j]);
            }
        }
        next = cur;
    }
    next[0]
}

/// One pattern segment (alternatives separated by `|`, each a glob) against one segment.
pub(super) fn segment_matches(pattern: &str, seg: &str) -> bool {
    pattern
        .split('|')
        .any(|alt| glob(alt.as_bytes(), seg.as_bytes()))
}

/// ASCII case-insensitive glob where `*` matches any run of bytes.
fn glob(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() && pat[p] == b'*' {
            star = Some((p, i));
            p += 1;
        } else if p < pat.len() && pat[p].eq_ignore_ascii_case(&s[i]) {
            p += 1;
            i += 1;
        } else if let Some((sp, si)) = star {
            p = sp + 1;
            i = si + 1;
            star = Some((sp, si + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|b| *b == b'*')
}

/// Normalizes a path that keygate did not canonicalize (a request inside a batch):
/// scheme and host dropped, query and fragment cut, percent-decoded, backslashes as
/// slashes, dot segments resolved.
pub(super) fn normalize_foreign_path(url: &str) -> (String, Option<String>) {
    let mut rest = url.trim();
    if let Some(i) = rest.find("://") {
        rest = &rest[i + 3..];
        rest = rest.find('/').map_or("", |j| &rest[j..]);
    }
    let rest = rest.split('#').next().unwrap_or("");
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (rest, None),
    };
    let decoded = crate::percent::decode_lossy(path).replace('\\', "/");
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    (format!("/{}", out.join("/")), query)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_decoded_and_stripped() {
        let s = Segments::new("/Repos//o/r%2Fx/keys;jsessionid=1/");
        assert_eq!(s.as_slice(), &["Repos", "o", "r/x", "keys"]);
        let s = Segments::new("/keys%3Aupload/%zz/%4");
        assert_eq!(s.as_slice(), &["keys:upload", "%zz", "%4"]);
        assert!(Segments::new("/").as_slice().is_empty());
        assert_eq!(Segments::new("/;x/a").as_slice(), &["a"]);
        assert_eq!(
            Segments::new("/user/keys?x=/y").as_slice(),
            &["user", "keys"]
        );
    }

    #[test]
    fn patterns() {
        let t = |pat: &str, path: &str| Segments::new(path).matches(pat);
        assert!(t("**/repos/*/*/keys", "/repos/o/r/keys"));
        assert!(t("**/repos/*/*/keys", "/api/v3/REPOS/o/r/KEYS/"));
        assert!(!t("**/repos/*/*/keys", "/repos/o/keys"));
        assert!(!t("**/repos/*/*/keys", "/repos/o/r/keys/1"));
        assert!(t(
            "**/auth/**/role/*/secret-id",
            "/v1/ns1/auth/approle/role/r/secret-id"
        ));
        assert!(t(
            "**/auth/**/role/*/secret-id",
            "/v1/auth/a/b/role/r/secret-id"
        ));
        assert!(!t(
            "**/auth/**/role/*/secret-id",
            "/v1/auth/approle/role/r/secret-id/lookup"
        ));
        assert!(t("**/*:setIamPolicy", "/v1/projects/p:SETIAMPOLICY"));
        assert!(!t("**/*:setIamPolicy", "/v1/projects/p:getIamPolicy"));
        assert!(t(
            "**/applications(*)/addPassword|microsoft.graph.addPassword",
            "/v1.0/applications(appId='x')/microsoft.graph.addpassword"
        ));
        assert!(t("/runners", "/runners"));
        assert!(!t("/runners", "/x/runners"));
        assert!(t("**", "/anything/at/all"));
        assert!(t("**", "/"));
        assert!(t("", "/"));
        assert!(!t("", "/a"));
        assert!(!t("a", "/"));
    }

    #[test]
    fn hostile_paths_stay_cheap() {
        let path = "/auth".repeat(20_000) + "/x";
        let segs = Segments::new(&path);
        let start = std::time::Instant::now();
        assert!(!segs.matches("**/auth/**/role/*/secret-id"));
        assert!(!segs.matches("**/auth/**/auth/**/users"));
        assert!(segs.matches("**/auth/**/auth/*"));
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn globs() {
        assert!(glob(b"a*c", b"ABC"));
        assert!(glob(b"a*c", b"ac"));
        assert!(glob(b"*", b""));
        assert!(glob(b"*x*y", b"axbxy"));
        assert!(!glob(b"a*c", b"abd"));
        assert!(!glob(b"abc", b"ab"));
    }

    #[test]
    fn percent_decoding() {
        let percent_decode = |s| crate::percent::decode_lossy(s).into_owned();
        assert_eq!(percent_decode("Create%41ccessKey"), "CreateAccessKey");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }

    #[test]
    fn foreign_paths() {
        assert_eq!(
            normalize_foreign_path("applications/x/./y/../addPassword?a=b").0,
            "/applications/x/addPassword"
        );
        assert_eq!(
            normalize_foreign_path("https://graph.microsoft.com/v1.0/users").0,
            "/v1.0/users"
        );
        assert_eq!(normalize_foreign_path("/a%2e%2e/..%2Fb\\c").0, "/b/c");
        assert_eq!(
            normalize_foreign_path("/users?x=1").1.as_deref(),
            Some("x=1")
        );
    }
}
