//! keygate's own JWT signing keys: loaded or generated once, kept parsed, published as JWKS.
//!
//! Keys are parsed once at start and the parsed key pair is kept, so minting a JWT costs
//! one signature and no key parsing. The key id is the RFC 7638 thumbprint of the public key.

use crate::config::SigningAlgorithm;
use aws_lc_rs::digest::{digest, SHA256};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivatePkcs8KeyDer;
use serde::Serialize;
use std::path::Path;

enum KeyPairKind {
    Ed25519(Ed25519KeyPair),
    Es256(EcdsaKeyPair),
}

/// A parsed signing key, its key id and its public JWK.
pub struct Signer {
    key: KeyPairKind,
    rng: SystemRandom,
    kid: String,
    /// base64url of the JOSE header, computed once.
    header_b64: String,
    jwk: serde_json::Value,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Reads a PKCS#8 PEM key, or, when `generate` is set and the file does not exist,
    /// generates one and writes it there (owner-only permissions).
    pub fn load_or_generate(
        path: &Path,
        algorithm: SigningAlgorithm,
        generate: bool,
    ) -> Result<Signer, String> {
        if generate && !path.exists() {
            let der = generate_pkcs8(algorithm)?;
            write_private_pem(path, &der)?;
        }
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read signing key {}: {e}", path.display()))?;
        let der = PrivatePkcs8KeyDer::from_pem_slice(&pem).map_err(|_| {
            format!(
                "{} holds no PKCS#8 private key (\"BEGIN PRIVATE KEY\")",
                path.display()
            )
        })?;
        Signer::from_pkcs8(der.secret_pkcs8_der(), algorithm)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Builds a signer from a PKCS#8 DER key.
    pub fn from_pkcs8(der: &[u8], algorithm: SigningAlgorithm) -> Result<Signer, String> {
        let (key, alg, jwk_public) = match algorithm {
            SigningAlgorithm::EdDsa => {
                let kp = Ed25519KeyPair::from_pkcs8(der)
                    .map_err(|_| "not an Ed25519 PKCS#8 key".to_string())?;
                let x = B64.encode(kp.public_key().as_ref());
                let jwk = serde_json::json!({"crv": "Ed25519", "kty": "OKP", "x": x});
                (KeyPairKind::Ed25519(kp), "EdDSA", jwk)
            }
            SigningAlgorithm::Es256 => {
                let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .map_err(|_| "not a P-256 PKCS#8 key".to_string())?;
                let point = kp.public_key().as_ref();
                if point.len() != 65 {
                    return Err("unexpected P-256 public key encoding".into());
                }
                let jwk = serde_json::json!({
                    "crv": "P-256", "kty": "EC",
                    "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65]),
                });
                (KeyPairKind::Es256(kp), "ES256", jwk)
            }
        };
        // RFC 7638: the thumbprint is over the required members in lexicographic order,
        // which is how serde_json's map (a BTreeMap) serializes them.
        let kid = B64.encode(digest(&SHA256, jwk_public.to_string().as_bytes()));
        let mut jwk = jwk_public;
        if let Some(m) = jwk.as_object_mut() {
            m.insert("kid".into(), kid.clone().into());
            m.insert("alg".into(), alg.into());
            m.insert("use".into(), "sig".into());
        }
        let header = serde_json::json!({"alg": alg, "typ": "JWT", "kid": kid});
        Ok(Signer {
            key,
            rng: SystemRandom::new(),
            header_b64: B64.encode(header.to_string()),
            kid,
            jwk,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The claims of a JWT this key signed (its `kid`, algorithm and signature checked;
    /// nothing else: the caller judges `exp` by its own clock).
    pub fn verify_jwt(&self, token: &str) -> Result<serde_json::Value, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| "not a JWT".to_string())?;
        if header.kid.as_deref() != Some(self.kid.as_str()) {
            return Err("not signed by keygate's key".into());
        }
        let alg = match self.key {
            KeyPairKind::Ed25519(_) => jsonwebtoken::Algorithm::EdDSA,
            KeyPairKind::Es256(_) => jsonwebtoken::Algorithm::ES256,
        };
        let jwk: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(self.jwk.clone()).map_err(|e| e.to_string())?;
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
        let mut v = jsonwebtoken::Validation::new(alg);
        v.required_spec_claims.clear();
        v.validate_exp = false;
        v.validate_nbf = false;
        v.validate_aud = false;
        jsonwebtoken::decode::<serde_json::Value>(token, &key, &v)
            .map(|d| d.claims)
            .map_err(|_| "the signature does not verify".to_string())
    }

    /// The public key as a JWK (with `kid`, `alg` and `use`).
    pub fn public_jwk(&self) -> &serde_json::Value {
        &self.jwk
    }

    /// A signed compact JWT over `claims`.
    pub fn sign_jwt<C: Serialize>(&self, claims: &C) -> Result<String, String> {
        let payload = serde_json::to_vec(claims).map_err(|e| e.to_string())?;
        let mut token = String::with_capacity(self.header_b64.len() + payload.len() * 4 / 3 + 100);
        token.push_str(&self.header_b64);
        token.push('.');
        B64.encode_string(&payload, &mut token);
        let signature = match &self.key {
            KeyPairKind::Ed25519(kp) => kp.sign(token.as_bytes()).as_ref().to_vec(),
            KeyPairKind::Es256(kp) => kp
                .sign(&self.rng, token.as_bytes())
                .map_err(|_| "signing failed".to_string())?
                .as_ref()
                .to_vec(),
        };
        token.push('.');
        B64.encode_string(&signature, &mut token);
        Ok(token)
    }
}

/// A JWKS document (`{"keys": […]}`) for these signers.
pub fn jwks_document<'a>(signers: impl IntoIterator<Item = &'a Signer>) -> String {
    let keys: Vec<&serde_json::Value> = signers.into_iter().map(Signer::public_jwk).collect();
    serde_json::json!({ "keys": keys }).to_string()
}

fn generate_pkcs8(algorithm: SigningAlgorithm) -> Result<Vec<u8>, String> {
    let rng = SystemRandom::new();
    match algorithm {
        SigningAlgorithm::EdDsa => Ed25519KeyPair::generate_pkcs8(&rng)
            .map(|d| d.as_ref().to_vec())
            .map_err(|_| "cannot generate an Ed25519 key".to_string()),
        SigningAlgorithm::Es256 => {
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map(|d| d.as_ref().to_vec())
                .map_err(|_| "cannot generate a P-256 key".to_string())
        }
    }
}

/// Writes a private key as PEM, readable by its owner only, without ever leaving a
/// world-readable file behind.
fn write_private_pem(path: &Path, der: &[u8]) -> Result<(), String> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        crate::private_fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    let mut f = crate::private_fs::file_options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| format!("cannot create signing key {}: {e}", path.display()))?;
    f.write_all(pem.as_bytes())
        .map_err(|e| format!("cannot write signing key {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_id_is_the_rfc_7638_thumbprint() {
        // RFC 8037 A.1's Ed25519 key (as PKCS#8) and A.3's thumbprint of its public key.
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend(
            B64.decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
                .unwrap(),
        );
        let s = Signer::from_pkcs8(&der, SigningAlgorithm::EdDsa).unwrap();
        assert_eq!(s.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn minted_tokens_verify_with_the_published_key() {
        for alg in [SigningAlgorithm::EdDsa, SigningAlgorithm::Es256] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("k.pem");
            let s = Signer::load_or_generate(&path, alg, true).unwrap();
            // A second load reads the same key.
            let again = Signer::load_or_generate(&path, alg, true).unwrap();
            assert_eq!(s.kid(), again.kid());
            let token = s.sign_jwt(&serde_json::json!({"sub": "a"})).unwrap();
            let jwk: jsonwebtoken::jwk::Jwk =
                serde_json::from_value(s.public_jwk().clone()).unwrap();
            let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
            let jalg = match alg {
                SigningAlgorithm::EdDsa => jsonwebtoken::Algorithm::EdDSA,
                SigningAlgorithm::Es256 => jsonwebtoken::Algorithm::ES256,
            };
            let mut v = jsonwebtoken::Validation::new(jalg);
            v.required_spec_claims.clear();
            v.validate_exp = false;
            v.validate_aud = false;
            let data = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &v).unwrap();
            assert_eq!(data.claims["sub"], "a");
            assert_eq!(data.header.kid.as_deref(), Some(s.kid()));
        }
    }
}
