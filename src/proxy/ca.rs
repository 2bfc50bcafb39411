//! keygate's own certificate authority for the forward proxy: it issues the short-lived
//! certificate of each host a tool names, so keygate can terminate an agent's TLS to that
//! host and run what is inside through the pipeline.
//!
//! The CA is generated on first start into the data directory (its key owner-only), or
//! loaded from the files the configuration names. A host certificate is issued only for a
//! host a tool names (the caller checks), lives `leaf_ttl`, has its own key, and is kept
//! (with the TLS configuration built on it) for half its life, so a warm tunnel costs no
//! signature.

use crate::config::ProxySettings;
use moka::sync::Cache;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How long a CA keygate generates is valid.
const CA_LIFETIME: Duration = Duration::from_secs(5 * 365 * 24 * 3600);
/// Host certificates start this long before they are issued (clients with a clock a bit
/// behind still accept them).
const BACKDATE: Duration = Duration::from_secs(3600);
/// Most host configurations kept at once.
const LEAF_CACHE_CAPACITY: u64 = 10_000;

/// The forward proxy's CA and the host certificates it issued.
pub struct Ca {
    cert_pem: String,
    /// The CA as rcgen signs with it (rebuilt from the certificate's own fields, so what
    /// it signs chains to the certificate on disk).
    issuer: rcgen::Certificate,
    key: KeyPair,
    leaf_ttl: Duration,
    leaves: Cache<String, Arc<ServerConfig>, crate::FastHash>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// The configured CA, or keygate's own: loaded from its files, generated into them on
    /// first start.
    pub fn load_or_generate(s: &ProxySettings) -> Result<Ca, String> {
        if s.ca_generated && !s.ca_cert_file.exists() && !s.ca_key_file.exists() {
            generate(&s.ca_cert_file, &s.ca_key_file)?;
            tracing::info!(
                cert = %s.ca_cert_file.display(),
                "generated keygate's forward-proxy CA; `keygate ca` prints its certificate for clients to trust"
            );
        }
        Ca::load(&s.ca_cert_file, &s.ca_key_file, s.leaf_ttl)
    }

    /// The CA in `cert_file` (PEM) with its key in `key_file` (PEM, owner-only).
    pub fn load(cert_file: &Path, key_file: &Path, leaf_ttl: Duration) -> Result<Ca, String> {
        crate::private_fs::check_owner_only(key_file, "the forward-proxy CA's key")?;
        let cert_pem = std::fs::read_to_string(cert_file)
            .map_err(|e| format!("cannot read {}: {e}", cert_file.display()))?;
        let key_pem = std::fs::read_to_string(key_file)
            .map_err(|e| format!("cannot read {}: {e}", key_file.display()))?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| format!("{}: not a private key in PEM: {e}", key_file.display()))?;
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| format!("{}: not a certificate in PEM: {e}", cert_file.display()))?;
        check_ca(&der, &key).map_err(|e| format!("{}: {e}", cert_file.display()))?;
        let params = CertificateParams::from_ca_cert_der(&der)
            .map_err(|e| format!("{}: {e}", cert_file.display()))?;
        let issuer = params
            .self_signed(&key)
            .map_err(|e| format!("{}: {e}", cert_file.display()))?;
        Ok(Ca {
            cert_pem,
            issuer,
            key,
            leaf_ttl,
            leaves: Cache::builder()
                .max_capacity(LEAF_CACHE_CAPACITY)
                .time_to_live(leaf_ttl / 2)
                .build_with_hasher(crate::FastHash::default()),
        })
    }

    /// The CA certificate (PEM), for clients to trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The TLS configuration that answers as `host` (a host a tool names: the caller
    /// checks), with a certificate issued now or earlier in its life.
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, String> {
        if let Some(c) = self.leaves.get(host) {
            return Ok(c);
        }
        let config = Arc::new(self.issue(host)?);
        self.leaves.insert(host.to_string(), config.clone());
        Ok(config)
    }

    fn issue(&self, host: &str) -> Result<ServerConfig, String> {
        let bad = |e: rcgen::Error| format!("cannot issue a certificate for {host:?}: {e}");
        let mut p = CertificateParams::default();
        let san = match host.trim_start_matches('[').trim_end_matches(']').parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.to_string().try_into().map_err(bad)?),
        };
        p.subject_alt_names = vec![san];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        p.distinguished_name = dn;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        p.serial_number = Some(random_serial());
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - BACKDATE;
        p.not_after = now + self.leaf_ttl;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(bad)?;
        let cert = p.signed_by(&key, &self.issuer, &self.key).map_err(bad)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(cert.der().to_vec())], key_der)
            .map_err(|e| format!("cannot use the certificate issued for {host:?}: {e}"))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

fn random_serial() -> rcgen::SerialNumber {
    let mut b = *uuid::Uuid::new_v4().as_bytes();
    // Positive, as DER INTEGER serials must be.
    b[0] &= 0x7f;
    rcgen::SerialNumber::from_slice(&b)
}

/// The certificate is a CA, valid now, and its public key is `key`'s.
fn check_ca(der: &CertificateDer<'_>, key: &KeyPair) -> Result<(), String> {
    let (_, x509) =
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("not a certificate: {e}"))?;
    if !x509.is_ca() {
        return Err("is not a CA certificate (basicConstraints CA:TRUE)".into());
    }
    if !x509.validity().is_valid() {
        return Err(format!(
            "is not valid now (valid {} to {})",
            x509.validity().not_before,
            x509.validity().not_after
        ));
    }
    if x509.public_key().raw != key.public_key_der().as_slice() {
        return Err("does not match the CA key file".into());
    }
    Ok(())
}

/// Generates a CA into `cert_file` and `key_file` (owner-only; never over an existing
/// key).
fn generate(cert_file: &Path, key_file: &Path) -> Result<(), String> {
    let bad = |e: rcgen::Error| format!("cannot generate the forward-proxy CA: {e}");
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(bad)?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "keygate");
    dn.push(
        DnType::CommonName,
        format!(
            "keygate forward-proxy CA {}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ),
    );
    p.distinguished_name = dn;
    // It signs host certificates only, never another CA.
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.serial_number = Some(random_serial());
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - BACKDATE;
    p.not_after = now + CA_LIFETIME;
    let cert = p.self_signed(&key).map_err(bad)?;
    if let Some(dir) = key_file.parent() {
        crate::private_fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    use std::io::Write;
    let mut f = crate::private_fs::file_options()
        .write(true)
        .create_new(true)
        .open(key_file)
        .map_err(|e| format!("cannot create {}: {e}", key_file.display()))?;
    f.write_all(key.serialize_pem().as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", key_file.display()))?;
    crate::private_fs::write(cert_file, cert.pem().as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", cert_file.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TLS handshake as `name` against keygate's configuration for `host`, by a client
    /// trusting only the CA.
    async fn handshake(ca: &Ca, host: &str, name: &str) -> Result<(), String> {
        let mut roots = rustls::RootCertStore::empty();
        let der =
            rustls::pki_types::pem::PemObject::from_pem_slice(ca.cert_pem().as_bytes()).unwrap();
        roots.add(der).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(host)?);
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let (a, b) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move { acceptor.accept(a).await.map(|_| ()) });
        let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let r = connector.connect(name, b).await.map(|_| ());
        let _ = server.await;
        r.map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn host_certificates_chain_to_the_generated_ca_and_name_their_host_only() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("ca.crt"), dir.path().join("ca.key"));
        generate(&cert, &key).unwrap();
        let ca = Ca::load(&cert, &key, Duration::from_secs(3600)).unwrap();
        handshake(&ca, "api.github.com", "api.github.com")
            .await
            .unwrap();
        handshake(&ca, "127.0.0.1", "127.0.0.1").await.unwrap();
        let e = handshake(&ca, "api.github.com", "evil.example")
            .await
            .unwrap_err();
        assert!(e.contains("not valid for name"), "{e}");
        // Kept: the same configuration again.
        assert!(Arc::ptr_eq(
            &ca.server_config("api.github.com").unwrap(),
            &ca.server_config("api.github.com").unwrap()
        ));
        // Loaded again from its files (a restart): the same CA, trusted by the same clients.
        let again = Ca::load(&cert, &key, Duration::from_secs(3600)).unwrap();
        assert_eq!(again.cert_pem(), ca.cert_pem());
        handshake(&again, "sts.amazonaws.com", "sts.amazonaws.com")
            .await
            .unwrap();
    }

    #[test]
    fn refuses_a_key_others_can_read_a_key_of_another_ca_and_a_leaf_as_ca() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("ca.crt"), dir.path().join("ca.key"));
        generate(&cert, &key).unwrap();
        let (cert2, key2) = (dir.path().join("ca2.crt"), dir.path().join("ca2.key"));
        generate(&cert2, &key2).unwrap();
        let e = Ca::load(&cert, &key2, Duration::from_secs(60)).unwrap_err();
        assert!(e.contains("does not match"), "{e}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = Ca::load(&cert, &key, Duration::from_secs(60)).unwrap_err();
            assert!(e.contains("can be read by others"), "{e}");
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        // A host certificate is no CA.
        let ca = Ca::load(&cert, &key, Duration::from_secs(60)).unwrap();
        let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(vec!["x.example".to_string()]).unwrap();
        p.is_ca = IsCa::ExplicitNoCa;
        let leaf = p.signed_by(&leaf_key, &ca.issuer, &ca.key).unwrap();
        let leaf_file = dir.path().join("leaf.crt");
        let leaf_key_file = dir.path().join("leaf.key");
        std::fs::write(&leaf_file, leaf.pem()).unwrap();
        crate::private_fs::write(&leaf_key_file, leaf_key.serialize_pem().as_bytes()).unwrap();
        let e = Ca::load(&leaf_file, &leaf_key_file, Duration::from_secs(60)).unwrap_err();
        assert!(e.contains("not a CA"), "{e}");
    }
}
