//! AWS IAM, STS and EC2 key pairs over the Query protocol: the operation is the `Action`
//! parameter, whatever the path and method.
//!
//! `Action` is looked for in the query string, in the body read as a form (whatever its
//! content type, `;` also separating parameters), and in the body read as JSON (a member
//! named `Action` at any depth). Parameter names and action names compare
//! case-insensitively after percent-decoding and trimming, and every duplicate counts: when
//! several actions are catalogued, an identity-creating one is reported before a
//! privilege-escalating one.
//!
//! Decisions:
//! - `CreateServiceLinkedRole` is catalogued although only an AWS service can assume the
//!   role: it still creates a role.
//! - `CreateOpenIDConnectProvider` and `CreateSAMLProvider` create trust for identities
//!   from outside the account (identity kind `identity_provider`); changing that trust
//!   (`AddClientIDToOpenIDConnectProvider`, `UpdateOpenIDConnectProviderThumbprint`,
//!   `UpdateSAMLProvider`) is privilege escalation.
//! - `ResetServiceSpecificCredential` mints a new password for an existing credential.
//! - EC2 `CreateKeyPair` (answers with the private key) and `ImportKeyPair` create SSH keys
//!   that open instances.
//! - STS `GetFederationToken` mints credentials for a new federated user. `AssumeRole*`
//!   and `GetSessionToken` are left out: they mint short-lived credentials of an identity
//!   that already exists, which is what a workload does all day; a tool can add them as
//!   routes when its owners want them gated.
//! - Permission boundaries: putting or deleting one on a user or role can widen it.

use super::body::Json;
use super::table::{creates, escalates, CatalogOp, RequestView, IDENTITY_CREATION_TAGS};

use super::table::Identifier::XmlTag as X;

pub(super) static OPS: &[CatalogOp] = &[
    // IAM: identities and credentials.
    creates("aws:CreateUser", "user", X("UserName")),
    creates("aws:CreateAccessKey", "access_key", X("AccessKeyId")),
    creates("aws:CreateLoginProfile", "login_profile", X("UserName")),
    creates(
        "aws:CreateServiceSpecificCredential",
        "service_specific_credential",
        X("ServiceSpecificCredentialId"),
    ),
    creates(
        "aws:ResetServiceSpecificCredential",
        "service_specific_credential",
        X("ServiceSpecificCredentialId"),
    ),
    creates("aws:CreateRole", "role", X("RoleName")),
    creates("aws:CreateServiceLinkedRole", "role", X("RoleName")),
    creates("aws:UploadSSHPublicKey", "ssh_key", X("SSHPublicKeyId")),
    creates(
        "aws:UploadServerCertificate",
        "certificate",
        X("ServerCertificateId"),
    ),
    creates(
        "aws:UploadSigningCertificate",
        "certificate",
        X("CertificateId"),
    ),
    creates(
        "aws:CreateOpenIDConnectProvider",
        "identity_provider",
        X("OpenIDConnectProviderArn"),
    ),
    creates(
        "aws:CreateSAMLProvider",
        "identity_provider",
        X("SAMLProviderArn"),
    ),
    // STS.
    creates(
        "aws:GetFederationToken",
        "federation_token",
        X("AccessKeyId"),
    ),
    // EC2.
    creates("aws:CreateKeyPair", "ssh_key", X("KeyPairId")),
    creates("aws:ImportKeyPair", "ssh_key", X("KeyPairId")),
    // IAM: privilege escalation.
    escalates("aws:AttachUserPolicy"),
    escalates("aws:PutUserPolicy"),
    escalates("aws:AttachRolePolicy"),
    escalates("aws:PutRolePolicy"),
    escalates("aws:AttachGroupPolicy"),
    escalates("aws:PutGroupPolicy"),
    escalates("aws:AddUserToGroup"),
    escalates("aws:UpdateAssumeRolePolicy"),
    escalates("aws:CreatePolicyVersion"),
    escalates("aws:SetDefaultPolicyVersion"),
    escalates("aws:UpdateLoginProfile"),
    escalates("aws:PutUserPermissionsBoundary"),
    escalates("aws:DeleteUserPermissionsBoundary"),
    escalates("aws:PutRolePermissionsBoundary"),
    escalates("aws:DeleteRolePermissionsBoundary"),
    escalates("aws:AddClientIDToOpenIDConnectProvider"),
    escalates("aws:UpdateOpenIDConnectProviderThumbprint"),
    escalates("aws:UpdateSAMLProvider"),
];

pub(super) fn classify(req: &RequestView) -> Option<&'static CatalogOp> {
    let mut actions: Vec<String> = Vec::new();
    if let Some(q) = req.query {
        form_actions(q.as_bytes(), &mut actions);
    }
    if let Some(body) = req.body {
        form_actions(body, &mut actions);
        if let Some(json) = Json::parse(body) {
            json_actions(&json, &mut actions);
        }
    }
    let ops: Vec<&'static CatalogOp> = actions.iter().filter_map(|a| op_for(a)).collect();
    ops.iter()
        .find(|op| op.tags == IDENTITY_CREATION_TAGS)
        .or_else(|| ops.first())
        .copied()
}

fn op_for(action: &str) -> Option<&'static CatalogOp> {
    let action = action.trim();
    OPS.iter()
        .find(|op| op.name["aws:".len()..].eq_ignore_ascii_case(action))
}

fn is_action_name(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case("action")
}

/// `Action` values of a form (`&` or `;` separated, percent-decoded, `+` as space).
fn form_actions(form: &[u8], out: &mut Vec<String>) {
    let split: Vec<u8> = form
        .iter()
        .map(|b| if *b == b';' { b'&' } else { *b })
        .collect();
    for (k, v) in form_urlencoded::parse(&split) {
        if is_action_name(&k) {
            out.push(v.into_owned());
        }
    }
}

/// Strings under any member named `Action`, at any depth.
fn json_actions(json: &Json, out: &mut Vec<String>) {
    json.walk(&mut |k, v| {
        if is_action_name(k) {
            out.extend(v.strings().into_iter().map(str::to_string));
        }
    });
}

#[cfg(test)]
pub(super) fn cases() -> Vec<super::testutil::Case> {
    use super::testutil::Case;
    use super::Kind::Aws;
    const FORM: &str = "application/x-www-form-urlencoded; charset=utf-8";
    let q = |query: &'static str, expect: Option<&'static str>| {
        Case::new(Aws, "POST", "/", expect).query(query)
    };
    let f = |body: &'static str, expect: Option<&'static str>| {
        Case::new(Aws, "POST", "/", expect)
            .content_type(FORM)
            .body(body)
    };
    let mut cases = Vec::new();
    // Every operation, by the query string and by a form body.
    for op in OPS {
        let action = &op.name["aws:".len()..];
        let query: &'static str =
            Box::leak(format!("Action={action}&Version=2010-05-08").into_boxed_str());
        cases.push(Case::new(Aws, "GET", "/", Some(op.name)).query(query));
        cases.push(f(query, Some(op.name)));
    }
    cases.extend([
        // Obfuscations that still match.
        q(
            "aCtIoN=createaccesskey&UserName=bob",
            Some("aws:CreateAccessKey"),
        ),
        q("Action=Create%41ccessKey", Some("aws:CreateAccessKey")),
        q("%41ction=CreateAccessKey", Some("aws:CreateAccessKey")),
        q(
            "Action=ListUsers&Action=CreateAccessKey",
            Some("aws:CreateAccessKey"),
        ),
        q(
            "Action=AttachUserPolicy&Action=CreateUser",
            Some("aws:CreateUser"),
        ),
        q("Action=ListUsers;Action=CreateUser", Some("aws:CreateUser")),
        q("Action=+CreateUser+", Some("aws:CreateUser")),
        q("Action=%20CreateRole%0A", Some("aws:CreateRole")),
        f(
            "Version=2010-05-08&ACTION=CREATEACCESSKEY",
            Some("aws:CreateAccessKey"),
        ),
        f(
            "Action=ListAccessKeys&Action=CreateAccessKey",
            Some("aws:CreateAccessKey"),
        ),
        // Action in the body, with a harmless one in the query.
        q("Action=ListUsers", Some("aws:CreateLoginProfile"))
            .body("Action=CreateLoginProfile&UserName=bob"),
        // The body is read as a form whatever its content type.
        Case::new(Aws, "POST", "/", Some("aws:CreateAccessKey"))
            .content_type("text/plain")
            .body("Action=CreateAccessKey"),
        Case::new(Aws, "POST", "/", Some("aws:CreateAccessKey")).body("Action=CreateAccessKey"),
        // JSON bodies.
        Case::new(Aws, "POST", "/", Some("aws:CreateAccessKey"))
            .content_type("application/json")
            .body(r#"{"Action":"CreateAccessKey","UserName":"bob"}"#),
        Case::new(Aws, "POST", "/", Some("aws:CreateAccessKey"))
            .content_type("application/x-amz-json-1.1")
            .body(r#"{"action":"ListUsers","ACTION":"createAccessKey"}"#),
        Case::new(Aws, "POST", "/", Some("aws:PutRolePolicy"))
            .body(r#"{"Params":{"Action":["ListRoles","PutRolePolicy"]}}"#),
        // Any path, any method.
        Case::new(Aws, "PUT", "/some/path", Some("aws:CreateUser")).query("Action=CreateUser"),
        Case::new(Aws, "post", "/", Some("aws:CreateUser")).query("Action=CreateUser"),
        // Near misses.
        q("Action=ListAccessKeys&UserName=bob", None),
        q("Action=GetUser", None),
        q("Action=DeleteAccessKey&AccessKeyId=AKIA", None),
        q("Action=CreateAccessKeys", None),
        q("Action=CreateAccessKe", None),
        q("Actions=CreateAccessKey", None),
        q("Action=Create%2541ccessKey", None),
        q("UserName=CreateAccessKey", None),
        q("Action=AssumeRole&RoleArn=arn", None),
        q("Action=GetSessionToken", None),
        q("Action=ListRoles&RoleName=CreateRole", None),
        f("Action=ListUsers&Version=2010-05-08", None),
        Case::new(Aws, "POST", "/", None).body(r#"{"Operation":"CreateAccessKey"}"#),
        Case::new(Aws, "POST", "/", None).body(r#"{"Action":"ListUsers","UserName":"CreateUser"}"#),
        Case::new(Aws, "GET", "/CreateAccessKey", None),
        Case::new(Aws, "POST", "/", None),
    ]);
    cases
}

#[cfg(test)]
mod tests {
    use super::super::testutil::SampleResponse;
    use super::super::{find, identifier};

    #[test]
    fn identifiers_from_xml_responses() {
        let samples = [
            SampleResponse {
                op: "aws:CreateAccessKey",
                path: "/",
                body: "<CreateAccessKeyResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><CreateAccessKeyResult><AccessKey>\
                    <UserName>Bob</UserName><AccessKeyId>AKIAIOSFODNN7EXAMPLE</AccessKeyId><Status>Active</Status>\
                    <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>\
                    </AccessKey></CreateAccessKeyResult></CreateAccessKeyResponse>",
                expect: Some("AKIAIOSFODNN7EXAMPLE"),
                secrets: &["wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"],
            },
            SampleResponse {
                op: "aws:CreateUser",
                path: "/",
                body: "<CreateUserResponse><CreateUserResult><User><Path>/</Path><UserName>Bob</UserName>\
                    <UserId>AIDGPMS9RO4H3FEXAMPLE</UserId><Arn>arn:aws:iam::123456789012:user/Bob</Arn></User>\
                    </CreateUserResult></CreateUserResponse>",
                expect: Some("Bob"),
                secrets: &[],
            },
            SampleResponse {
                op: "aws:CreateLoginProfile",
                path: "/",
                body: "<CreateLoginProfileResponse><CreateLoginProfileResult><LoginProfile>\
                    <PasswordResetRequired>true</PasswordResetRequired><UserName>Bob</UserName>\
                    </LoginProfile></CreateLoginProfileResult></CreateLoginProfileResponse>",
                expect: Some("Bob"),
                secrets: &[],
            },
            SampleResponse {
                op: "aws:CreateServiceSpecificCredential",
                path: "/",
                body: "<CreateServiceSpecificCredentialResponse><CreateServiceSpecificCredentialResult><ServiceSpecificCredential>\
                    <ServicePassword>xTBAr/czp+D3EXAMPLE47lrJ5F0Ww=</ServicePassword><ServiceName>codecommit.amazonaws.com</ServiceName>\
                    <ServiceUserName>anika+1-at-123456789012</ServiceUserName>\
                    <ServiceSpecificCredentialId>ACCAEXAMPLE123EXAMPLE</ServiceSpecificCredentialId>\
                    </ServiceSpecificCredential></CreateServiceSpecificCredentialResult></CreateServiceSpecificCredentialResponse>",
                expect: Some("ACCAEXAMPLE123EXAMPLE"),
                secrets: &["xTBAr/czp+D3EXAMPLE47lrJ5F0Ww="],
            },
            SampleResponse {
                op: "aws:CreateRole",
                path: "/",
                body: "<CreateRoleResponse><CreateRoleResult><Role><RoleName>S3Access</RoleName>\
                    <RoleId>AROADBQP57FF2AEXAMPLE</RoleId></Role></CreateRoleResult></CreateRoleResponse>",
                expect: Some("S3Access"),
                secrets: &[],
            },
            SampleResponse {
                op: "aws:UploadSSHPublicKey",
                path: "/",
                body: "<UploadSSHPublicKeyResult><SSHPublicKey><UserName>Jane</UserName>\
                    <SSHPublicKeyId>APKAEIVFHP46CEXAMPLE</SSHPublicKeyId></SSHPublicKey></UploadSSHPublicKeyResult>",
                expect: Some("APKAEIVFHP46CEXAMPLE"),
                secrets: &[],
            },
            SampleResponse {
                op: "aws:UploadServerCertificate",
                path: "/",
                body: "<ServerCertificateMetadata><ServerCertificateName>ProdCert</ServerCertificateName>\
                    <ServerCertificateId>ASCACKCEVSQ6C2EXAMPLE</ServerCertificateId></ServerCertificateMetadata>",
                expect: Some("ASCACKCEVSQ6C2EXAMPLE"),
                secrets: &[],
            },
            SampleResponse {
                op: "aws:UploadSigningCertificate",
                path: "/",
                body: "<Certificate><UserName>Bob</UserName><CertificateId>TA7SMP42TDN5Z26OBPJE7EXAMPLE</CertificateId>\
                    <CertificateBody>-----BEGIN CERTIFICATE-----</CertificateBody></Certificate>",
                expect: Some("TA7SMP42TDN5Z26OBPJE7EXAMPLE"),
                secrets: &[],
            },
            SampleResponse {
                op: "aws:CreateOpenIDConnectProvider",
                path: "/",
                body: "<CreateOpenIDConnectProviderResult><OpenIDConnectProviderArn>arn:aws:iam::123456789012:oidc-provider/server.example.com\
                    </OpenIDConnectProviderArn></CreateOpenIDConnectProviderResult>",
                expect: Some("arn:aws:iam::123456789012:oidc-provider/server.example.com"),
                secrets: &[],
            },
            SampleResponse {
                op: "aws:GetFederationToken",
                path: "/",
                body: "<GetFederationTokenResponse><GetFederationTokenResult><Credentials>\
                    <SessionToken>AQoDYXdzEPT//////////wEXAMPLEtc764</SessionToken>\
                    <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>\
                    <Expiration>2011-07-15T23:28:33.359Z</Expiration><AccessKeyId>ASIAIOSFODNN7EXAMPLE</AccessKeyId>\
                    </Credentials><FederatedUser><Arn>arn:aws:sts::123456789012:federated-user/Bob</Arn>\
                    <FederatedUserId>123456789012:Bob</FederatedUserId></FederatedUser></GetFederationTokenResult>\
                    </GetFederationTokenResponse>",
                expect: Some("ASIAIOSFODNN7EXAMPLE"),
                secrets: &["AQoDYXdzEPT//////////wEXAMPLEtc764", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"],
            },
            SampleResponse {
                op: "aws:CreateKeyPair",
                path: "/",
                body: "<CreateKeyPairResponse><keyName>my-key-pair</keyName><keyFingerprint>1f:51:ae</keyFingerprint>\
                    <keyMaterial>-----BEGIN RSA PRIVATE KEY-----MIIEoQ</keyMaterial><keyPairId>key-0123456789abcdef0</keyPairId>\
                    </CreateKeyPairResponse>",
                expect: Some("key-0123456789abcdef0"),
                secrets: &["-----BEGIN RSA PRIVATE KEY-----MIIEoQ"],
            },
            SampleResponse {
                op: "aws:AttachUserPolicy",
                path: "/",
                body: "<AttachUserPolicyResponse><ResponseMetadata><RequestId>ed7e</RequestId></ResponseMetadata></AttachUserPolicyResponse>",
                expect: None,
                secrets: &[],
            },
        ];
        for s in samples {
            s.check();
        }
    }

    #[test]
    fn an_error_response_has_no_identifier() {
        let op = find("aws:CreateAccessKey").unwrap();
        let err = b"<ErrorResponse><Error><Code>LimitExceeded</Code></Error></ErrorResponse>";
        assert_eq!(identifier(op, "/", err), None);
    }
}
