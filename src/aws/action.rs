//! Which AWS action a request is, and the session policy that allows only that action.
//!
//! keygate re-signs an agent's AWS request with short-lived STS credentials whose session
//! policy allows only the action derived here, so the derivation is a second line, not the
//! only one: AWS evaluates the request it actually receives against the session policy.
//! If keygate named a request wrongly, the session policy would allow an action the
//! request is not, and AWS would refuse the request's real action. The derivation must
//! therefore never name a *wider* resource than the request touches (a `*` in an S3 key
//! would), and it refuses, rather than guesses, what it does not know: a request keygate
//! cannot name is not forwarded.
//!
//! Three shapes are known:
//! - the AWS Query protocol (IAM, STS, EC2, SNS, ...): the `Action` parameter, in the query
//!   or in a form body;
//! - the AWS JSON protocol: `X-Amz-Target: <Prefix>.<Operation>`;
//! - S3's REST API, for its common operations, with the bucket and object as resources.
//!
//! Other services' REST APIs (Lambda, API Gateway, ...) are refused.

/// One permission: an IAM action on resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The IAM action, e.g. `s3:GetObject`.
    pub action: String,
    /// ARNs, or `["*"]`.
    pub resources: Vec<String>,
}

/// What a request does, in IAM's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsAction {
    /// The request's IAM action, e.g. `iam:ListUsers`, `s3:PutObject`: what keygate's
    /// policies and audit name the call by.
    pub action: String,
    /// The resources the action touches: S3 bucket and object ARNs; `["*"]` for the Query
    /// and JSON protocols, whose resources are inside the parameters (the role's own policy
    /// limits those).
    pub resources: Vec<String>,
    /// Further permissions the same call needs, which the session policy must grant too:
    /// a copy (`x-amz-copy-source`) reads its source (`s3:GetObject`, or
    /// `s3:GetObjectVersion` for a versioned source); an upload that sets an ACL
    /// (`x-amz-acl`, `x-amz-grant-*`), tags (`x-amz-tagging`) or object lock
    /// (`x-amz-object-lock-*`) needs `s3:PutObjectAcl`, `s3:PutObjectTagging`,
    /// `s3:PutObjectRetention`, `s3:PutObjectLegalHold`; a bucket created with an ACL,
    /// object lock or object ownership needs the matching bucket permissions. Empty for
    /// most calls. keygate's policy should be asked about these as well as `action`.
    pub extra: Vec<Grant>,
}

impl AwsAction {
    fn new(action: String, resources: Vec<String>) -> Self {
        AwsAction {
            action,
            resources,
            extra: Vec::new(),
        }
    }

    /// The action and every extra grant, in order.
    pub fn grants(&self) -> impl Iterator<Item = (&str, &[String])> {
        std::iter::once((self.action.as_str(), self.resources.as_slice())).chain(
            self.extra
                .iter()
                .map(|g| (g.action.as_str(), g.resources.as_slice())),
        )
    }
}

/// Services that speak the AWS Query protocol (EC2's variant included). SQS speaks it in
/// older SDKs and the JSON protocol in current ones; both are read.
const QUERY_SERVICES: &[&str] = &[
    "autoscaling",
    "cloudformation",
    "ec2",
    "elasticache",
    "elasticbeanstalk",
    "elasticloadbalancing",
    "email",
    "iam",
    "monitoring",
    "rds",
    "redshift",
    "sdb",
    "sns",
    "sqs",
    "sts",
];

/// The IAM action prefix of a SigV4 signing name, where the two differ.
fn iam_prefix(service: &str) -> &str {
    match service {
        "monitoring" => "cloudwatch",
        "email" => "ses",
        other => other,
    }
}

/// The IAM action and resources of a request.
///
/// - `service`: the SigV4 signing name from the credential scope (`iam`, `sts`, `s3`,
///   `dynamodb`, ...).
/// - `path`: the path as forwarded to AWS (without keygate's `/tools/<name>` prefix), still
///   percent-encoded as sent: this function decodes S3 keys itself, strictly (an invalid
///   escape or a key that is not UTF-8 is refused), so that every caller decodes alike.
/// - `host_bucket`: for S3 virtual-hosted-style requests, the bucket named by the host
///   (`path` is then the key); `None` for path-style (`/bucket/key`).
/// - `query`: the raw query string, without `?`.
/// - `headers`: the request's headers (`Content-Type`, `X-Amz-Target`, S3's `x-amz-*`).
/// - `body`: the body, when there is one. For Query-protocol services it is searched for
///   `Action` as a form whatever its `Content-Type`; a form request without it is refused,
///   since an `Action` in the body cannot be ruled out.
///
/// Errors say why the action cannot be derived; keygate then refuses the call rather than
/// allow more than it can name.
pub fn action(
    service: &str,
    method: &http::Method,
    path: &str,
    host_bucket: Option<&str>,
    query: Option<&str>,
    headers: &http::HeaderMap,
    body: Option<&[u8]>,
) -> Result<AwsAction, String> {
    if service.is_empty()
        || !service
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!("'{service}' is not a service signing name"));
    }
    if service == "s3" {
        return s3::action(method, path, host_bucket, query, headers);
    }
    let query_actions = query_params(query.unwrap_or_default())
        .filter(|(k, _)| k.eq_ignore_ascii_case("Action"))
        .map(|(k, v)| (k.into_owned(), v.into_owned()));
    let mut query_actions: Vec<(String, String)> = query_actions.collect();

    if let Some(target) = single_header(headers, "x-amz-target")? {
        if !query_actions.is_empty() {
            return Err("the request has both X-Amz-Target and an Action parameter".into());
        }
        let (prefix, op) = target
            .rsplit_once('.')
            .ok_or_else(|| format!("X-Amz-Target '{target}' is not <prefix>.<operation>"))?;
        if prefix.is_empty()
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        {
            return Err(format!("X-Amz-Target '{target}' has an invalid prefix"));
        }
        check_action_name(op)?;
        return Ok(AwsAction::new(
            format!("{}:{op}", iam_prefix(service)),
            vec!["*".into()],
        ));
    }

    if !QUERY_SERVICES.contains(&service) {
        return Err(format!(
            "keygate does not know the actions of service {service}'s REST API"
        ));
    }
    // A body is read as a form whatever its Content-Type says: an Action hidden in a body
    // labelled otherwise must not go unseen if the service reads it.
    if body.is_none() && is_form(headers)? {
        return Err("the form body is needed to find the Action".into());
    }
    if let Some(body) = body {
        query_actions.extend(
            form_urlencoded::parse(body)
                .filter(|(k, _)| k.eq_ignore_ascii_case("Action"))
                .map(|(k, v)| (k.into_owned(), v.into_owned())),
        );
    }
    let (key, op) = match query_actions.as_slice() {
        [one] => one,
        [] => return Err("the request has no Action parameter".into()),
        _ => return Err("the request has more than one Action parameter".into()),
    };
    if key != "Action" {
        return Err(format!("the parameter '{key}' is not spelled Action"));
    }
    check_action_name(op)?;
    Ok(AwsAction::new(
        format!("{}:{op}", iam_prefix(service)),
        vec!["*".into()],
    ))
}

fn check_action_name(op: &str) -> Result<(), String> {
    if op.is_empty() || !op.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!("'{op}' is not an action name"));
    }
    Ok(())
}

/// The query's parameters, decoded as AWS decodes them (`+` is a space).
fn query_params(
    query: &str,
) -> impl Iterator<Item = (std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)> {
    form_urlencoded::parse(query.as_bytes())
}

/// The one value of a header, if present; two would be ambiguous.
fn single_header<'h>(headers: &'h http::HeaderMap, name: &str) -> Result<Option<&'h str>, String> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => v
            .to_str()
            .map(|v| Some(v.trim()))
            .map_err(|_| format!("{name} is not text")),
        (Some(_), Some(_)) => Err(format!("the request has several {name} headers")),
    }
}

/// Whether the body is a form (`application/x-www-form-urlencoded`, any parameters).
fn is_form(headers: &http::HeaderMap) -> Result<bool, String> {
    Ok(single_header(headers, "content-type")?.is_some_and(|ct| {
        ct.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    }))
}

mod s3 {
    //! S3's REST API: the operation is the method, whether a bucket and a key are named,
    //! and the subresource in the query.

    use super::{single_header, AwsAction, Grant};
    use std::collections::BTreeMap;

    /// What `versionId` does to an operation.
    #[derive(Clone, Copy)]
    enum Version {
        /// Not accepted with this operation.
        No,
        /// Accepted; the action stays the same.
        Same,
        /// Accepted; the action becomes this one.
        Is(&'static str),
    }
    use Version::{Is, No, Same};

    /// (method, subresources present joined with `&` in sorted order, action, versionId).
    type Row = (&'static str, &'static str, &'static str, Version);

    /// Operations on a bucket (`/bucket`).
    const BUCKET: &[Row] = &[
        ("GET", "", "ListBucket", No),
        ("HEAD", "", "ListBucket", No),
        ("GET", "versions", "ListBucketVersions", No),
        ("GET", "uploads", "ListBucketMultipartUploads", No),
        ("GET", "location", "GetBucketLocation", No),
        ("GET", "policy", "GetBucketPolicy", No),
        ("GET", "policyStatus", "GetBucketPolicyStatus", No),
        ("GET", "acl", "GetBucketAcl", No),
        ("GET", "tagging", "GetBucketTagging", No),
        ("GET", "versioning", "GetBucketVersioning", No),
        ("GET", "cors", "GetBucketCORS", No),
        ("GET", "lifecycle", "GetLifecycleConfiguration", No),
        ("GET", "logging", "GetBucketLogging", No),
        ("GET", "notification", "GetBucketNotification", No),
        ("GET", "website", "GetBucketWebsite", No),
        ("GET", "encryption", "GetEncryptionConfiguration", No),
        ("GET", "replication", "GetReplicationConfiguration", No),
        ("GET", "accelerate", "GetAccelerateConfiguration", No),
        ("GET", "requestPayment", "GetBucketRequestPayment", No),
        ("GET", "object-lock", "GetBucketObjectLockConfiguration", No),
        ("GET", "ownershipControls", "GetBucketOwnershipControls", No),
        ("GET", "publicAccessBlock", "GetBucketPublicAccessBlock", No),
        ("PUT", "", "CreateBucket", No),
        ("PUT", "policy", "PutBucketPolicy", No),
        ("PUT", "acl", "PutBucketAcl", No),
        ("PUT", "tagging", "PutBucketTagging", No),
        ("PUT", "versioning", "PutBucketVersioning", No),
        ("PUT", "cors", "PutBucketCORS", No),
        ("PUT", "lifecycle", "PutLifecycleConfiguration", No),
        ("PUT", "logging", "PutBucketLogging", No),
        ("PUT", "notification", "PutBucketNotification", No),
        ("PUT", "website", "PutBucketWebsite", No),
        ("PUT", "encryption", "PutEncryptionConfiguration", No),
        ("PUT", "replication", "PutReplicationConfiguration", No),
        ("PUT", "accelerate", "PutAccelerateConfiguration", No),
        ("PUT", "requestPayment", "PutBucketRequestPayment", No),
        ("PUT", "object-lock", "PutBucketObjectLockConfiguration", No),
        ("PUT", "ownershipControls", "PutBucketOwnershipControls", No),
        ("PUT", "publicAccessBlock", "PutBucketPublicAccessBlock", No),
        ("DELETE", "", "DeleteBucket", No),
        ("DELETE", "policy", "DeleteBucketPolicy", No),
        ("DELETE", "website", "DeleteBucketWebsite", No),
        // IAM has no Delete* action for these: the Put* permission covers the delete.
        ("DELETE", "tagging", "PutBucketTagging", No),
        ("DELETE", "cors", "PutBucketCORS", No),
        ("DELETE", "lifecycle", "PutLifecycleConfiguration", No),
        ("DELETE", "encryption", "PutEncryptionConfiguration", No),
        ("DELETE", "replication", "PutReplicationConfiguration", No),
        (
            "DELETE",
            "ownershipControls",
            "PutBucketOwnershipControls",
            No,
        ),
        (
            "DELETE",
            "publicAccessBlock",
            "PutBucketPublicAccessBlock",
            No,
        ),
        // DeleteObjects: the keys are in the XML body, see `action`.
        ("POST", "delete", "DeleteObject", No),
    ];

    /// Operations on an object (`/bucket/key`).
    const OBJECT: &[Row] = &[
        ("GET", "", "GetObject", Is("GetObjectVersion")),
        ("GET", "partNumber", "GetObject", Is("GetObjectVersion")),
        ("HEAD", "", "GetObject", Is("GetObjectVersion")),
        ("HEAD", "partNumber", "GetObject", Is("GetObjectVersion")),
        ("GET", "acl", "GetObjectAcl", Is("GetObjectVersionAcl")),
        (
            "GET",
            "tagging",
            "GetObjectTagging",
            Is("GetObjectVersionTagging"),
        ),
        (
            "GET",
            "attributes",
            "GetObjectAttributes",
            Is("GetObjectVersionAttributes"),
        ),
        ("GET", "retention", "GetObjectRetention", Same),
        ("GET", "legal-hold", "GetObjectLegalHold", Same),
        ("GET", "uploadId", "ListMultipartUploadParts", No),
        ("PUT", "", "PutObject", No),
        ("PUT", "partNumber&uploadId", "PutObject", No),
        ("PUT", "acl", "PutObjectAcl", Is("PutObjectVersionAcl")),
        (
            "PUT",
            "tagging",
            "PutObjectTagging",
            Is("PutObjectVersionTagging"),
        ),
        ("PUT", "retention", "PutObjectRetention", Same),
        ("PUT", "legal-hold", "PutObjectLegalHold", Same),
        ("DELETE", "", "DeleteObject", Is("DeleteObjectVersion")),
        (
            "DELETE",
            "tagging",
            "DeleteObjectTagging",
            Is("DeleteObjectVersionTagging"),
        ),
        ("DELETE", "uploadId", "AbortMultipartUpload", No),
        ("POST", "uploads", "PutObject", No),
        ("POST", "uploadId", "PutObject", No),
        ("POST", "restore", "RestoreObject", Same),
        // SelectObjectContent needs s3:GetObject.
        ("POST", "select", "GetObject", No),
    ];

    /// Query parameters that choose the operation.
    const SUBRESOURCES: &[&str] = &[
        "accelerate",
        "acl",
        "attributes",
        "cors",
        "delete",
        "encryption",
        "legal-hold",
        "lifecycle",
        "location",
        "logging",
        "notification",
        "object-lock",
        "ownershipControls",
        "partNumber",
        "policy",
        "policyStatus",
        "publicAccessBlock",
        "replication",
        "requestPayment",
        "restore",
        "retention",
        "select",
        "tagging",
        "uploadId",
        "uploads",
        "versioning",
        "versions",
        "website",
    ];

    /// Query parameters that only modify an operation (listing, paging, response headers)
    /// or are ignored by S3 (`x-id`, which botocore adds, names the operation only for
    /// logs and is not trusted here).
    const PARAMETERS: &[&str] = &[
        "bucket-region",
        "continuation-token",
        "delimiter",
        "encoding-type",
        "fetch-owner",
        "key-marker",
        "list-type",
        "marker",
        "max-buckets",
        "max-keys",
        "max-parts",
        "max-uploads",
        "part-number-marker",
        "prefix",
        "response-cache-control",
        "response-content-disposition",
        "response-content-encoding",
        "response-content-language",
        "response-content-type",
        "response-expires",
        "select-type",
        "start-after",
        "upload-id-marker",
        "version-id-marker",
        "x-id",
    ];

    const ARN: &str = "arn:aws:s3:::";

    pub(super) fn action(
        method: &http::Method,
        path: &str,
        host_bucket: Option<&str>,
        query: Option<&str>,
        headers: &http::HeaderMap,
    ) -> Result<AwsAction, String> {
        let rest = path
            .strip_prefix('/')
            .ok_or_else(|| format!("the path '{path}' does not start with /"))?;
        let (bucket, key) = match host_bucket {
            Some("") => return Err("the host names an empty bucket".into()),
            Some(b) => (b.to_owned(), decode(rest)?),
            None => match rest.split_once('/') {
                Some((b, k)) => (decode(b)?, decode(k)?),
                None => (decode(rest)?, String::new()),
            },
        };

        let mut params: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in super::query_params(query.unwrap_or_default()) {
            if !SUBRESOURCES.contains(&k.as_ref())
                && !PARAMETERS.contains(&k.as_ref())
                && k != "versionId"
            {
                return Err(format!(
                    "keygate does not know the S3 query parameter '{k}'"
                ));
            }
            if params.insert(k.to_string(), v.into_owned()).is_some() {
                return Err(format!("the S3 query parameter '{k}' is repeated"));
            }
        }
        let subresources: Vec<&str> = params
            .keys()
            .map(String::as_str)
            .filter(|k| SUBRESOURCES.contains(k))
            .collect();
        let sub = subresources.join("&");
        let version = params.get("versionId");
        let method = method.as_str();

        if bucket.is_empty() {
            // The service itself: only ListBuckets.
            if !key.is_empty() || method != "GET" || !sub.is_empty() || version.is_some() {
                return Err(format!(
                    "keygate does not know the S3 operation {method} / with '{sub}'"
                ));
            }
            return Ok(AwsAction::new(
                "s3:ListAllMyBuckets".into(),
                vec!["*".into()],
            ));
        }
        check_bucket(&bucket)?;
        let bucket_arn = format!("{ARN}{bucket}");

        let (table, resource) = if key.is_empty() {
            (BUCKET, bucket_arn.clone())
        } else {
            check_key(&key)?;
            (OBJECT, format!("{bucket_arn}/{key}"))
        };
        let what = if key.is_empty() { "bucket" } else { "object" };
        let &(_, _, name, versioned) = table
            .iter()
            .find(|(m, s, _, _)| *m == method && *s == sub)
            .ok_or_else(|| {
                format!("keygate does not know the S3 {what} operation {method} with subresources '{sub}'")
            })?;
        let name = match (version, versioned) {
            (None, _) | (Some(_), Same) => name,
            (Some(_), Is(v)) => v,
            (Some(_), No) => {
                return Err(format!(
                    "keygate does not know the S3 {what} operation {method} '{sub}' with versionId"
                ))
            }
        };
        // DeleteObjects names its keys in the XML body, which keygate does not read: the
        // resource is every object in the bucket. A keygate policy that allows deletes
        // under a prefix only therefore refuses it, which is the safe way round.
        let resource = if sub == "delete" {
            format!("{bucket_arn}/*")
        } else {
            resource
        };
        let mut a = AwsAction::new(format!("s3:{name}"), vec![resource.clone()]);

        let copy = single_header(headers, "x-amz-copy-source")?;
        let is_upload = name == "PutObject";
        let is_whole_upload = is_upload && (sub.is_empty() || sub == "uploads");
        match copy {
            Some(source) if is_upload && sub != "uploads" && sub != "uploadId" => {
                a.extra.push(copy_source(source)?);
            }
            Some(_) => {
                return Err(format!(
                    "x-amz-copy-source is not expected with S3 {method} '{sub}'"
                ))
            }
            None => {}
        }
        let has = |name: &str| headers.contains_key(name);
        let has_grant = headers
            .keys()
            .any(|k| k.as_str().starts_with("x-amz-grant-"));
        let mut extra = |action: &str, resource: &str| {
            a.extra.push(Grant {
                action: format!("s3:{action}"),
                resources: vec![resource.to_owned()],
            })
        };
        if is_whole_upload {
            if has("x-amz-acl") || has_grant {
                extra("PutObjectAcl", &resource);
            }
            if has("x-amz-tagging") {
                extra("PutObjectTagging", &resource);
            }
            if has("x-amz-object-lock-mode") || has("x-amz-object-lock-retain-until-date") {
                extra("PutObjectRetention", &resource);
            }
            if has("x-amz-object-lock-legal-hold") {
                extra("PutObjectLegalHold", &resource);
            }
        }
        if name == "CreateBucket" {
            if has("x-amz-acl") || has_grant {
                extra("PutBucketAcl", &resource);
            }
            if has("x-amz-bucket-object-lock-enabled") {
                extra("PutBucketObjectLockConfiguration", &resource);
                extra("PutBucketVersioning", &resource);
            }
            if has("x-amz-object-ownership") {
                extra("PutBucketOwnershipControls", &resource);
            }
        }
        Ok(a)
    }

    /// The read a copy needs: `[/]bucket/key[?versionId=...]`, URL-encoded.
    fn copy_source(v: &str) -> Result<Grant, String> {
        let v = v.strip_prefix('/').unwrap_or(v);
        if v.starts_with("arn:") {
            return Err("keygate does not know copies from access points or outposts".into());
        }
        let (path, version) = match v.split_once('?') {
            None => (v, None),
            Some((p, q)) => {
                let params: Vec<_> = super::query_params(q).collect();
                match params.as_slice() {
                    [(k, id)] if k == "versionId" => (p, Some(id.to_string())),
                    _ => return Err(format!("x-amz-copy-source has an unknown query '{q}'")),
                }
            }
        };
        let (bucket, key) = path
            .split_once('/')
            .ok_or("x-amz-copy-source must be bucket/key")?;
        let (bucket, key) = (decode(bucket)?, decode(key)?);
        check_bucket(&bucket)?;
        if key.is_empty() {
            return Err("x-amz-copy-source has no key".into());
        }
        check_key(&key)?;
        Ok(Grant {
            action: if version.is_some() {
                "s3:GetObjectVersion".into()
            } else {
                "s3:GetObject".into()
            },
            resources: vec![format!("{ARN}{bucket}/{key}")],
        })
    }

    /// Percent-decodes strictly: every `%` starts a valid escape and the result is UTF-8,
    /// so there is one reading of the key (S3 refuses what does not decode).
    fn decode(s: &str) -> Result<String, String> {
        let b = s.as_bytes();
        for (i, _) in s.match_indices('%') {
            let ok =
                b.len() > i + 2 && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit();
            if !ok {
                return Err(format!("'{s}' has an invalid percent escape"));
            }
        }
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| format!("'{s}' does not decode to UTF-8"))
    }

    /// Bucket names (legacy ones included) have no character IAM reads as a wildcard.
    fn check_bucket(b: &str) -> Result<(), String> {
        if b.len() > 255
            || !b
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
        {
            return Err(format!("'{b}' is not an S3 bucket name"));
        }
        Ok(())
    }

    /// IAM reads `*` and `?` in a resource as wildcards and `${...}` as a policy variable:
    /// a key with them would name other objects too (the key `*`, every object). IAM's
    /// escapes (`${*}`, `${?}`, `${$}`) exist but are not relied on here; such keys are
    /// refused.
    fn check_key(k: &str) -> Result<(), String> {
        if k.contains(['*', '?']) || k.contains("${") {
            return Err(format!(
                "the S3 key '{k}' has a character an IAM policy reads as a wildcard or variable (*, ?, ${{)"
            ));
        }
        Ok(())
    }
}

/// The packed size limit of AssumeRole's `Policy` parameter, in characters; counted here
/// in bytes, which is never fewer.
/// Actions that answer with credentials: an agent that got them could call AWS without
/// keygate, as whoever they belong to. keygate refuses them (`iam:CreateAccessKey`,
/// `sts:GetFederationToken` and the other identity-creating ones are the catalog's, and
/// wait for a human's approval instead).
const MINTS_CREDENTIALS: &[&str] = &[
    "sts:AssumeRole",
    "sts:AssumeRoleWithSAML",
    "sts:AssumeRoleWithWebIdentity",
    "sts:AssumeRoot",
    "sts:GetSessionToken",
    "sso:GetRoleCredentials",
    "cognito-identity:GetCredentialsForIdentity",
    "cognito-identity:GetOpenIdTokenForDeveloperIdentity",
    "ecr:GetAuthorizationToken",
    "ecr-public:GetAuthorizationToken",
    "codeartifact:GetAuthorizationToken",
    "redshift:GetClusterCredentials",
    "redshift:GetClusterCredentialsWithIAM",
    "redshift-serverless:GetCredentials",
    "rolesanywhere:CreateSession",
];

/// The action of `a` (or one of its extra grants) that answers with credentials, if any.
pub fn mints_credentials(a: &AwsAction) -> Option<&str> {
    a.grants().map(|(action, _)| action).find(|action| {
        MINTS_CREDENTIALS
            .iter()
            .any(|m| m.eq_ignore_ascii_case(action))
    })
}

pub const MAX_SESSION_POLICY: usize = 2048;

/// The IAM session policy allowing exactly `a`'s action and extra grants, e.g.
/// `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iam:ListUsers","Resource":"*"}]}`.
///
/// If it exceeds [`MAX_SESSION_POLICY`] (S3 keys may be 1024 bytes, and a copy names two),
/// the longest object ARN is widened to a prefix of its key followed by `*`, in the same
/// bucket, until the policy fits: `arn:aws:s3:::bucket/very-long-ke*`. That allows other
/// objects under the prefix, to credentials keygate signs this one request with. Err when
/// even `bucket/*` does not fit.
///
/// `until` (unix ms; the end of the task the call is made in): every grant also holds
/// only before then (`DateLessThan` on `aws:CurrentTime`, to the second), since an STS
/// session lives at least 15 minutes and cannot be revoked alone.
pub fn session_policy(a: &AwsAction, until: Option<i64>) -> Result<String, String> {
    let mut policy = Policy::of(a);
    if let Some(until) = until {
        // (Clamped to the last second of year 9999, the last RFC 3339 can write.)
        let secs = u64::try_from(until.div_euclid(1000))
            .unwrap_or(0)
            .min(253_402_300_799);
        let at = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
        )
        .to_string();
        for s in &mut policy.statement {
            s.condition = Some(Condition {
                date_less_than: CurrentTime {
                    current_time: at.clone(),
                },
            });
        }
    }
    loop {
        let json = policy.to_json()?;
        if json.len() <= MAX_SESSION_POLICY {
            return Ok(json);
        }
        let over = json.len() - MAX_SESSION_POLICY;
        let longest = policy
            .statement
            .iter_mut()
            .flat_map(|s| s.resource.iter_mut())
            .filter(|r| widenable(r).is_some())
            .max_by_key(|r| r.len());
        let Some(r) = longest else {
            return Err(format!(
                "the session policy for {} is {} bytes, over AssumeRole's {MAX_SESSION_POLICY}",
                a.action,
                json.len()
            ));
        };
        *r = widen(r, over);
    }
}

/// An IAM policy document, serialized in the order IAM documents show it.
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct Policy {
    version: &'static str,
    statement: Vec<Statement>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct Statement {
    effect: &'static str,
    action: String,
    #[serde(serialize_with = "one_or_many")]
    resource: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    condition: Option<Condition>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct Condition {
    date_less_than: CurrentTime,
}

#[derive(serde::Serialize)]
struct CurrentTime {
    #[serde(rename = "aws:CurrentTime")]
    current_time: String,
}

impl Policy {
    fn of(a: &AwsAction) -> Self {
        let statement = a
            .grants()
            .map(|(action, resource)| Statement {
                effect: "Allow",
                action: action.to_owned(),
                resource: resource.to_vec(),
                condition: None,
            })
            .collect();
        Policy {
            version: "2012-10-17",
            statement,
        }
    }

    fn to_json(&self) -> Result<String, String> {
        serde_json::to_string(self).map_err(|e| format!("the session policy: {e}"))
    }
}

/// One resource as a string, as policies are usually written; several as an array.
fn one_or_many<S: serde::Serializer>(r: &[String], s: S) -> Result<S::Ok, S::Error> {
    use serde::Serialize;
    match r {
        [one] => s.serialize_str(one),
        many => many.serialize(s),
    }
}

/// An S3 object ARN's `(bucket/, key prefix)`, if it can be widened further: its key
/// (or the prefix left of a previous widening's `*`) is not empty.
fn widenable(r: &str) -> Option<(&str, &str)> {
    let rest = r.strip_prefix("arn:aws:s3:::")?;
    let slash = rest.find('/')?;
    let key = &rest[slash + 1..];
    let prefix = key.strip_suffix('*').unwrap_or(key);
    if prefix.is_empty() {
        return None;
    }
    Some((&r[..r.len() - key.len()], prefix))
}

/// `r` with at least `over` bytes fewer of its key (or all of it), and `*` after the rest.
fn widen(r: &str, over: usize) -> String {
    let Some((head, prefix)) = widenable(r) else {
        return r.to_owned();
    };
    let mut cut = prefix.len();
    let mut removed = 0;
    let mut chars = prefix.char_indices().rev();
    // One more than `over` pays for the `*` on a first widening.
    while removed <= over {
        match chars.next() {
            Some((i, c)) => {
                cut = i;
                removed += c.len_utf8();
            }
            None => break,
        }
    }
    format!("{head}{}*", &prefix[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderName, HeaderValue, Method};

    const FORM: (&str, &str) = (
        "content-type",
        "application/x-www-form-urlencoded; charset=utf-8",
    );
    const ACL: (&str, &str) = ("x-amz-acl", "public-read");

    fn headers(list: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in list {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    /// A request: service, method, path, host bucket, query, headers, body.
    type Req<'a> = (
        &'a str,
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        &'a [(&'a str, &'a str)],
        Option<&'a [u8]>,
    );

    fn run(r: Req<'_>) -> Result<AwsAction, String> {
        let (service, method, path, host_bucket, query, h, body) = r;
        action(
            service,
            &Method::from_bytes(method.as_bytes()).unwrap(),
            path,
            host_bucket,
            query,
            &headers(h),
            body,
        )
    }

    fn star(action: &str) -> AwsAction {
        AwsAction::new(action.into(), vec!["*".into()])
    }

    #[test]
    #[rustfmt::skip]
    fn query_and_json_protocols() {
        let cases: &[(Req<'_>, &str)] = &[
            (("iam", "POST", "/", None, None, &[FORM], Some(b"Action=ListUsers&Version=2010-05-08")), "iam:ListUsers"),
            (("sts", "GET", "/", None, Some("Action=GetCallerIdentity&Version=2011-06-15"), &[], None), "sts:GetCallerIdentity"),
            (("sts", "GET", "/", None, Some("Version=2011-06-15&Action=Assume%52ole"), &[], None), "sts:AssumeRole"),
            (("ec2", "POST", "/", None, None, &[FORM], Some(b"Version=2016-11-15&Action=DescribeInstances")), "ec2:DescribeInstances"),
            (("monitoring", "POST", "/", None, None, &[FORM], Some(b"Action=PutMetricData")), "cloudwatch:PutMetricData"),
            (("email", "POST", "/", None, None, &[FORM], Some(b"Action=SendEmail")), "ses:SendEmail"),
            // A GET without a body: nothing else to look at.
            (("iam", "GET", "/", None, Some("Action=GetUser"), &[], None), "iam:GetUser"),
            (("dynamodb", "POST", "/", None, None, &[("x-amz-target", "DynamoDB_20120810.PutItem")], Some(b"{}")), "dynamodb:PutItem"),
            (("cognito-idp", "POST", "/", None, None, &[("x-amz-target", "AWSCognitoIdentityProviderService.AdminCreateUser")], None), "cognito-idp:AdminCreateUser"),
            (("sqs", "POST", "/", None, None, &[("x-amz-target", "AmazonSQS.SendMessage")], Some(b"{}")), "sqs:SendMessage"),
            (("monitoring", "POST", "/", None, None, &[("x-amz-target", "GraniteServiceVersion20100801.GetMetricData")], None), "cloudwatch:GetMetricData"),
            (("logs", "POST", "/", None, None, &[("x-amz-target", "Logs_20140328.PutLogEvents")], None), "logs:PutLogEvents"),
        ];
        for (req, want) in cases {
            assert_eq!(run(*req), Ok(star(want)), "{req:?}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn query_and_json_protocols_fail_closed() {
        let cases: &[(Req<'_>, &str)] = &[
            (("iam", "POST", "/", None, Some("Action=ListUsers"), &[FORM], Some(b"Action=DeleteUser&UserName=bob")), "more than one"),
            (("iam", "POST", "/", None, None, &[FORM], Some(b"Action=ListUsers&Action=DeleteUser")), "more than one"),
            (("iam", "POST", "/", None, None, &[FORM], Some(b"Action=ListUsers&Action=ListUsers")), "more than one"),
            (("iam", "GET", "/", None, Some("Action=ListUsers&Action=DeleteUser"), &[], None), "more than one"),
            // A body labelled otherwise is still searched.
            (("iam", "POST", "/", None, Some("Action=ListUsers"), &[("content-type", "text/plain")], Some(b"Action=DeleteUser")), "more than one"),
            (("iam", "GET", "/", None, Some("action=DeleteUser"), &[], None), "not spelled Action"),
            (("iam", "POST", "/", None, None, &[FORM], Some(b"Version=2010-05-08")), "no Action"),
            (("iam", "POST", "/", None, None, &[FORM], None), "form body is needed"),
            (("iam", "GET", "/", None, Some("Action="), &[], None), "not an action name"),
            (("iam", "GET", "/", None, Some("Action=List*"), &[], None), "not an action name"),
            (("iam", "GET", "/", None, Some("Action=iam%3AListUsers"), &[], None), "not an action name"),
            (("iam", "GET", "/", None, Some("Action=List+Users"), &[], None), "not an action name"),
            (("dynamodb", "POST", "/", None, Some("Action=Scan"), &[("x-amz-target", "DynamoDB_20120810.PutItem")], None), "both X-Amz-Target and an Action"),
            (("dynamodb", "POST", "/", None, None, &[("x-amz-target", "PutItem")], None), "not <prefix>.<operation>"),
            (("dynamodb", "POST", "/", None, None, &[("x-amz-target", ".PutItem")], None), "invalid prefix"),
            (("dynamodb", "POST", "/", None, None, &[("x-amz-target", "DynamoDB_20120810.Put*")], None), "not an action name"),
            (("dynamodb", "POST", "/", None, None, &[("x-amz-target", "DynamoDB_20120810.")], None), "not an action name"),
            (("dynamodb", "POST", "/", None, None, &[("x-amz-target", "A.Scan"), ("x-amz-target", "A.PutItem")], None), "several x-amz-target"),
            (("lambda", "POST", "/2015-03-31/functions/f/invocations", None, None, &[], Some(b"{}")), "keygate does not know the actions of service lambda's REST API"),
            (("dynamodb", "POST", "/", None, None, &[], Some(b"{}")), "REST API"),
            (("S3", "GET", "/", None, None, &[], None), "not a service signing name"),
            (("", "GET", "/", None, None, &[], None), "not a service signing name"),
        ];
        for (req, why) in cases {
            let r = run(*req);
            assert!(matches!(r, Err(ref e) if e.contains(why)), "{req:?}: {r:?}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn s3_operations() {
        // (method, path, host bucket, query, headers, action, resource)
        type Row<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>, &'a [(&'a str, &'a str)], &'a str, &'a str);
        let b = "arn:aws:s3:::my-bucket";
        let o = "arn:aws:s3:::my-bucket/dir/file.txt";
        let rows: &[Row<'_>] = &[
            ("GET", "/", None, None, &[], "s3:ListAllMyBuckets", "*"),
            ("GET", "/", None, Some("max-buckets=10&x-id=ListBuckets"), &[], "s3:ListAllMyBuckets", "*"),
            ("GET", "/my-bucket", None, Some("list-type=2&prefix=a%2F&max-keys=5"), &[], "s3:ListBucket", b),
            ("GET", "/my-bucket/", None, None, &[], "s3:ListBucket", b),
            ("HEAD", "/my-bucket", None, None, &[], "s3:ListBucket", b),
            ("GET", "/my-bucket", None, Some("versions"), &[], "s3:ListBucketVersions", b),
            ("GET", "/my-bucket", None, Some("uploads"), &[], "s3:ListBucketMultipartUploads", b),
            ("GET", "/my-bucket", None, Some("location"), &[], "s3:GetBucketLocation", b),
            ("GET", "/my-bucket", None, Some("policy"), &[], "s3:GetBucketPolicy", b),
            ("GET", "/my-bucket", None, Some("acl"), &[], "s3:GetBucketAcl", b),
            ("GET", "/my-bucket", None, Some("tagging"), &[], "s3:GetBucketTagging", b),
            ("GET", "/my-bucket", None, Some("versioning"), &[], "s3:GetBucketVersioning", b),
            ("GET", "/my-bucket", None, Some("cors"), &[], "s3:GetBucketCORS", b),
            ("GET", "/my-bucket", None, Some("lifecycle"), &[], "s3:GetLifecycleConfiguration", b),
            ("PUT", "/my-bucket", None, None, &[], "s3:CreateBucket", b),
            ("PUT", "/my-bucket", None, Some("policy"), &[], "s3:PutBucketPolicy", b),
            ("PUT", "/my-bucket", None, Some("acl"), &[], "s3:PutBucketAcl", b),
            ("PUT", "/my-bucket", None, Some("tagging"), &[], "s3:PutBucketTagging", b),
            ("PUT", "/my-bucket", None, Some("versioning"), &[], "s3:PutBucketVersioning", b),
            ("DELETE", "/my-bucket", None, None, &[], "s3:DeleteBucket", b),
            ("DELETE", "/my-bucket", None, Some("policy"), &[], "s3:DeleteBucketPolicy", b),
            ("DELETE", "/my-bucket", None, Some("tagging"), &[], "s3:PutBucketTagging", b),
            ("POST", "/my-bucket", None, Some("delete"), &[], "s3:DeleteObject", "arn:aws:s3:::my-bucket/*"),
            ("GET", "/my-bucket/dir/file.txt", None, None, &[], "s3:GetObject", o),
            ("GET", "/my-bucket/dir/file.txt", None, Some("response-content-type=text%2Fplain&x-id=GetObject"), &[], "s3:GetObject", o),
            ("GET", "/my-bucket/dir/file.txt", None, Some("partNumber=2"), &[], "s3:GetObject", o),
            ("HEAD", "/my-bucket/dir/file.txt", None, None, &[], "s3:GetObject", o),
            ("GET", "/my-bucket/dir/file.txt", None, Some("versionId=abc"), &[], "s3:GetObjectVersion", o),
            ("HEAD", "/my-bucket/dir/file.txt", None, Some("versionId=abc"), &[], "s3:GetObjectVersion", o),
            ("GET", "/my-bucket/dir/file.txt", None, Some("acl"), &[], "s3:GetObjectAcl", o),
            ("GET", "/my-bucket/dir/file.txt", None, Some("acl&versionId=abc"), &[], "s3:GetObjectVersionAcl", o),
            ("GET", "/my-bucket/dir/file.txt", None, Some("tagging"), &[], "s3:GetObjectTagging", o),
            ("GET", "/my-bucket/dir/file.txt", None, Some("uploadId=u1"), &[], "s3:ListMultipartUploadParts", o),
            ("PUT", "/my-bucket/dir/file.txt", None, None, &[], "s3:PutObject", o),
            ("PUT", "/my-bucket/dir/file.txt", None, Some("partNumber=1&uploadId=u1"), &[], "s3:PutObject", o),
            ("PUT", "/my-bucket/dir/file.txt", None, Some("uploadId=u1&partNumber=1"), &[], "s3:PutObject", o),
            ("PUT", "/my-bucket/dir/file.txt", None, Some("tagging"), &[], "s3:PutObjectTagging", o),
            ("POST", "/my-bucket/dir/file.txt", None, Some("uploads"), &[], "s3:PutObject", o),
            ("POST", "/my-bucket/dir/file.txt", None, Some("uploadId=u1"), &[], "s3:PutObject", o),
            ("DELETE", "/my-bucket/dir/file.txt", None, None, &[], "s3:DeleteObject", o),
            ("DELETE", "/my-bucket/dir/file.txt", None, Some("versionId=abc"), &[], "s3:DeleteObjectVersion", o),
            ("DELETE", "/my-bucket/dir/file.txt", None, Some("uploadId=u1"), &[], "s3:AbortMultipartUpload", o),
            // Virtual-hosted style: the bucket is in the host.
            ("GET", "/dir/file.txt", Some("my-bucket"), None, &[], "s3:GetObject", o),
            ("GET", "/", Some("my-bucket"), Some("location"), &[], "s3:GetBucketLocation", b),
            // The key is decoded: space, plus, unicode, an encoded slash.
            ("GET", "/my-bucket/my%20dir/a%2Bb/%C3%BCn%C3%AF%C2%A9ode.txt", None, None, &[], "s3:GetObject", "arn:aws:s3:::my-bucket/my dir/a+b/ünï©ode.txt"),
            ("GET", "/my-bucket/a+b%2Fc", None, None, &[], "s3:GetObject", "arn:aws:s3:::my-bucket/a+b/c"),
            // A `$` without `{` is no policy variable (Hadoop's `_$folder$` markers).
            ("PUT", "/my-bucket/dir_%24folder%24", None, None, &[], "s3:PutObject", "arn:aws:s3:::my-bucket/dir_$folder$"),
        ];
        for &(method, path, hb, query, h, want, resource) in rows {
            let r = run(("s3", method, path, hb, query, h, None));
            let want = AwsAction::new(want.into(), vec![resource.into()]);
            assert_eq!(r, Ok(want), "{method} {path} {query:?}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn s3_extra_grants() {
        let o = "arn:aws:s3:::my-bucket/dir/file.txt";
        let b = "arn:aws:s3:::my-bucket";
        let g = |action: &str, r: &str| Grant { action: action.into(), resources: vec![r.into()] };
        type Row<'a> = (&'a str, &'a str, Option<&'a str>, &'a [(&'a str, &'a str)], Vec<Grant>);
        let rows: Vec<Row<'_>> = vec![
            ("PUT", "/my-bucket/dir/file.txt", None, &[("x-amz-copy-source", "src-bucket/a%20b.txt")], vec![g("s3:GetObject", "arn:aws:s3:::src-bucket/a b.txt")]),
            ("PUT", "/my-bucket/dir/file.txt", None, &[("x-amz-copy-source", "/src-bucket/k?versionId=v1")], vec![g("s3:GetObjectVersion", "arn:aws:s3:::src-bucket/k")]),
            ("PUT", "/my-bucket/dir/file.txt", Some("partNumber=1&uploadId=u"), &[("x-amz-copy-source", "src-bucket/k")], vec![g("s3:GetObject", "arn:aws:s3:::src-bucket/k")]),
            ("PUT", "/my-bucket/dir/file.txt", None, &[ACL, ("x-amz-tagging", "a=b")], vec![g("s3:PutObjectAcl", o), g("s3:PutObjectTagging", o)]),
            ("PUT", "/my-bucket/dir/file.txt", None, &[("x-amz-grant-read", "id=x")], vec![g("s3:PutObjectAcl", o)]),
            ("POST", "/my-bucket/dir/file.txt", Some("uploads"), &[("x-amz-object-lock-mode", "GOVERNANCE"), ("x-amz-object-lock-legal-hold", "ON")], vec![g("s3:PutObjectRetention", o), g("s3:PutObjectLegalHold", o)]),
            // An upload part carries no ACL or tags: the headers do nothing there.
            ("PUT", "/my-bucket/dir/file.txt", Some("partNumber=1&uploadId=u"), &[ACL], vec![]),
            ("PUT", "/my-bucket", None, &[ACL, ("x-amz-bucket-object-lock-enabled", "true"), ("x-amz-object-ownership", "BucketOwnerEnforced")], vec![g("s3:PutBucketAcl", b), g("s3:PutBucketObjectLockConfiguration", b), g("s3:PutBucketVersioning", b), g("s3:PutBucketOwnershipControls", b)]),
        ];
        for (method, path, query, h, extra) in rows {
            let r = run(("s3", method, path, None, query, h, None));
            assert_eq!(r.map(|a| a.extra), Ok(extra), "{method} {path} {query:?} {h:?}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn s3_fails_closed() {
        type Row<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>, &'a [(&'a str, &'a str)], &'a str);
        let rows: &[Row<'_>] = &[
            ("GET", "/my-bucket", None, Some("analytics&id=x"), &[], "query parameter 'analytics'"),
            ("GET", "/my-bucket", None, Some("foo"), &[], "query parameter 'foo'"),
            ("PUT", "/my-bucket/k", None, Some("versioning"), &[], "object operation PUT with subresources 'versioning'"),
            ("GET", "/my-bucket", None, Some("uploadId=u"), &[], "bucket operation GET with subresources 'uploadId'"),
            ("GET", "/my-bucket/k", None, Some("acl&tagging"), &[], "subresources 'acl&tagging'"),
            ("POST", "/my-bucket", None, None, &[], "bucket operation POST"),
            ("PATCH", "/my-bucket/k", None, None, &[], "object operation PATCH"),
            ("DELETE", "/", None, None, &[], "S3 operation DELETE /"),
            ("GET", "/", None, Some("acl"), &[], "S3 operation GET /"),
            ("PUT", "/my-bucket/k", None, Some("versionId=v"), &[], "with versionId"),
            ("GET", "/my-bucket", None, Some("versionId=v"), &[], "with versionId"),
            ("GET", "/my-bucket/k", None, Some("versionId=a&versionId=b"), &[], "repeated"),
            ("GET", "/my-bucket/k", None, Some("acl&acl"), &[], "repeated"),
            // Wildcards and policy variables in keys: refused, not widened.
            ("GET", "/my-bucket/*", None, None, &[], "wildcard"),
            ("GET", "/my-bucket/%2A", None, None, &[], "wildcard"),
            ("GET", "/my-bucket/a%3Fb", None, None, &[], "wildcard"),
            ("GET", "/my-bucket/home/%24%7Baws:username%7D/x", None, None, &[], "variable"),
            ("PUT", "/my-bucket/k", None, None, &[("x-amz-copy-source", "src/%2A")], "wildcard"),
            ("GET", "/my-bucket/a%zz", None, None, &[], "invalid percent escape"),
            ("GET", "/my-bucket/a%2", None, None, &[], "invalid percent escape"),
            ("GET", "/my-bucket/a%FF", None, None, &[], "UTF-8"),
            ("GET", "/my%2Abucket/k", None, None, &[], "not an S3 bucket name"),
            ("GET", "my-bucket/k", None, None, &[], "does not start with /"),
            ("GET", "/k", Some(""), None, &[], "empty bucket"),
            ("GET", "/k", Some("b*"), None, &[], "not an S3 bucket name"),
            ("GET", "/my-bucket/k", None, None, &[("x-amz-copy-source", "src/k")], "not expected"),
            ("POST", "/my-bucket/k", None, Some("uploads"), &[("x-amz-copy-source", "src/k")], "not expected"),
            ("PUT", "/my-bucket/k", None, None, &[("x-amz-copy-source", "arn:aws:s3:us-east-1:123456789012:accesspoint/ap/object/k")], "access points"),
            ("PUT", "/my-bucket/k", None, None, &[("x-amz-copy-source", "src-only")], "bucket/key"),
            ("PUT", "/my-bucket/k", None, None, &[("x-amz-copy-source", "src/")], "no key"),
            ("PUT", "/my-bucket/k", None, None, &[("x-amz-copy-source", "src/k?acl")], "unknown query"),
            ("PUT", "/my-bucket/k", None, None, &[("x-amz-copy-source", "src/a"), ("x-amz-copy-source", "src/b")], "several"),
        ];
        for &(method, path, hb, query, h, why) in rows {
            let r = run(("s3", method, path, hb, query, h, None));
            assert!(matches!(r, Err(ref e) if e.contains(why)), "{method} {path} {query:?}: {r:?}");
        }
    }

    #[test]
    fn a_tasks_session_policy_ends_with_the_task() {
        let p: serde_json::Value = serde_json::from_str(
            &session_policy(&star("iam:ListUsers"), Some(1_796_634_000_999)).unwrap(),
        )
        .unwrap();
        assert_eq!(
            p["Statement"][0]["Condition"],
            serde_json::json!({"DateLessThan": {"aws:CurrentTime": "2026-12-07T09:00:00Z"}})
        );
        // Past year 9999: the last second RFC 3339 can write, not a panic.
        let p = session_policy(&star("iam:ListUsers"), Some(i64::MAX)).unwrap();
        assert!(p.contains("9999-12-31T23:59:59Z"), "{p}");
    }

    #[test]
    fn session_policy_allows_exactly_the_action() {
        assert_eq!(
            session_policy(&star("iam:ListUsers"), None).unwrap(),
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iam:ListUsers","Resource":"*"}]}"#
        );
        let copy = [("x-amz-copy-source", "src/a%20b")];
        let a = run(("s3", "PUT", "/dst/k\"ey", None, None, &copy, None)).unwrap();
        let p: serde_json::Value =
            serde_json::from_str(&session_policy(&a, None).unwrap()).unwrap();
        assert_eq!(
            p,
            serde_json::json!({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::dst/k\"ey"},
                {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::src/a b"},
            ]})
        );
        let two = AwsAction::new(
            "s3:GetObject".into(),
            vec!["arn:aws:s3:::b/x".into(), "arn:aws:s3:::b/y".into()],
        );
        let p: serde_json::Value =
            serde_json::from_str(&session_policy(&two, None).unwrap()).unwrap();
        assert_eq!(
            p["Statement"][0]["Resource"],
            serde_json::json!(["arn:aws:s3:::b/x", "arn:aws:s3:::b/y"])
        );
    }

    #[test]
    fn long_session_policy_widens_within_the_bucket() {
        // Two 1000-byte keys (a copy) make a policy over 2048 bytes.
        let dst = format!("/dst/{}", "d".repeat(1000));
        let src = format!("src/{}", "%C3%A9".repeat(500));
        let copy = [("x-amz-copy-source", src.as_str())];
        let a = run(("s3", "PUT", &dst, None, None, &copy, None)).unwrap();
        let exact = Policy::of(&a).to_json().unwrap();
        assert!(exact.len() > MAX_SESSION_POLICY, "{}", exact.len());
        let policy = session_policy(&a, None).unwrap();
        assert!(policy.len() <= MAX_SESSION_POLICY, "{}", policy.len());
        assert!(
            policy.len() > MAX_SESSION_POLICY - 8,
            "widened more than needed: {}",
            policy.len()
        );
        let p: serde_json::Value = serde_json::from_str(&policy).unwrap();
        for (i, bucket, c) in [(0, "dst", 'd'), (1, "src", 'é')] {
            let r = p["Statement"][i]["Resource"].as_str().unwrap();
            let key = r.strip_prefix(&format!("arn:aws:s3:::{bucket}/")).unwrap();
            let prefix = key.strip_suffix('*').unwrap_or(key);
            assert!(
                !prefix.is_empty() && prefix.chars().all(|ch| ch == c),
                "{r}"
            );
        }
        // One key of 1024 bytes fits as it is.
        let path = format!("/b/{}", "k".repeat(1024));
        let a = run(("s3", "GET", &path, None, None, &[], None)).unwrap();
        assert!(!session_policy(&a, None).unwrap().contains('*'));
    }

    #[test]
    fn too_long_session_policy_that_cannot_widen_is_refused() {
        let mut a = star("iam:ListUsers");
        for i in 0..60 {
            a.extra.push(Grant {
                action: format!("iam:SomeVeryLongActionName{i}"),
                resources: vec!["*".into()],
            });
        }
        let r = session_policy(&a, None);
        assert!(
            matches!(r, Err(ref e) if e.contains("over AssumeRole's 2048")),
            "{r:?}"
        );
        // A widened key never leaves its bucket: `bucket/*` is as wide as it gets.
        assert_eq!(widen("arn:aws:s3:::b/abc", 100), "arn:aws:s3:::b/*");
        assert_eq!(widenable("arn:aws:s3:::b/*"), None);
        assert_eq!(widenable("arn:aws:s3:::b"), None);
    }
}
