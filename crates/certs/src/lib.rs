//! A cluster's certificate authority and the certificates it issues, for mutual TLS between
//! nodes, operators and the chaos runner.
//!
//! A CA is a key and a self-signed certificate with a fixed name, [`CA_NAME`]. Issuing needs
//! only the key: the CA certificate is re-made from it (same name, same key), which every
//! holder of the original accepts as the issuer, so no certificate parser is needed. Every
//! issued certificate is good for both server and client authentication (a node is both), for
//! the hosts and IP addresses it names. Files are written owner-only (`0600` in a `0700`
//! directory) and never overwritten.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The common name of every CA this crate makes.
pub const CA_NAME: &str = "xp cluster CA";

/// File names inside a CA directory.
pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} already exists; refusing to overwrite a key or certificate")]
    Exists { path: PathBuf },
    #[error("{0}")]
    Invalid(String),
}

fn invalid(e: impl std::fmt::Display) -> CertError {
    CertError::Invalid(e.to_string())
}

/// A CA able to issue certificates.
pub struct Ca {
    key: KeyPair,
    cert: rcgen::Certificate,
}

/// A certificate and its key, as PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, CA_NAME);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

impl Ca {
    /// A new CA with a fresh key.
    pub fn generate() -> Result<Ca, CertError> {
        let key = KeyPair::generate().map_err(invalid)?;
        Ca::from_key(key)
    }

    /// The CA whose key is `key_pem` (as [`Ca::key_pem`] wrote it).
    pub fn from_key_pem(key_pem: &str) -> Result<Ca, CertError> {
        Ca::from_key(KeyPair::from_pem(key_pem).map_err(invalid)?)
    }

    fn from_key(key: KeyPair) -> Result<Ca, CertError> {
        let cert = ca_params().self_signed(&key).map_err(invalid)?;
        Ok(Ca { key, cert })
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A certificate for `name`, valid for each of `hosts` (DNS names or IP addresses), for
    /// server and client authentication.
    pub fn issue(&self, name: &str, hosts: &[String]) -> Result<Issued, CertError> {
        if hosts.is_empty() {
            return Err(CertError::Invalid(format!("a certificate for {name} needs a host")));
        }
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, name);
        p.subject_alt_names = hosts
            .iter()
            .map(|h| match h.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) if h.is_empty() || !h.chars().all(|c| c.is_ascii_alphanumeric() || "-.".contains(c)) => {
                    Err(CertError::Invalid(format!(
                        "host {h:?} is neither an IP address nor a DNS name (letters, digits, '-', '.')"
                    )))
                }
                Err(_) => h
                    .clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|e| CertError::Invalid(format!("host {h:?}: {e}"))),
            })
            .collect::<Result<_, _>>()?;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        p.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().map_err(invalid)?;
        let cert = p.signed_by(&key, &self.cert, &self.key).map_err(invalid)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Writes `ca.pem` and `ca.key` into `dir` (created `0700`); refuses to overwrite.
    pub fn write(&self, dir: &Path) -> Result<(), CertError> {
        private_dir(dir)?;
        write_new(&dir.join(CA_KEY), self.key_pem().as_bytes())?;
        write_new(&dir.join(CA_CERT), self.cert_pem().as_bytes())
    }

    /// The CA in `dir` (its `ca.key`).
    pub fn load(dir: &Path) -> Result<Ca, CertError> {
        let path = dir.join(CA_KEY);
        let pem = std::fs::read_to_string(&path)
            .map_err(|source| CertError::Io { path: path.clone(), source })?;
        Ca::from_key_pem(&pem)
    }
}

/// Creates `dir` (and parents) owner-only.
pub fn private_dir(dir: &Path) -> Result<(), CertError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| CertError::Io { path: dir.to_owned(), source })
}

/// Writes a new owner-only file; fails if it exists.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<(), CertError> {
    let mut f =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(
            |source| match source.kind() {
                std::io::ErrorKind::AlreadyExists => CertError::Exists { path: path.to_owned() },
                _ => CertError::Io { path: path.to_owned(), source },
            },
        )?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|source| CertError::Io { path: path.to_owned(), source })
}

/// Writes `<name>.pem`, `<name>.key` and a copy of the CA certificate (`ca.pem`) into `dir`:
/// everything a node needs for `XP_TLS_CERT`, `XP_TLS_KEY` and `XP_TLS_CA`. Returns the paths.
pub fn write_node(
    dir: &Path,
    ca: &Ca,
    name: &str,
    hosts: &[String],
) -> Result<NodeFiles, CertError> {
    let issued = ca.issue(name, hosts)?;
    private_dir(dir)?;
    let files = NodeFiles {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
        ca: dir.join(CA_CERT),
    };
    write_new(&files.key, issued.key_pem.as_bytes())?;
    write_new(&files.cert, issued.cert_pem.as_bytes())?;
    match write_new(&files.ca, ca.cert_pem().as_bytes()) {
        Err(CertError::Exists { .. }) => {}
        other => other?,
    }
    Ok(files)
}

/// An HTTP client builder that trusts only the CAs in `ca_pem` (one or several, during a CA
/// rotation) and presents `cert_pem` with `key_pem` (mTLS). Errors name which part did not
/// parse.
pub fn client_builder(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<reqwest::ClientBuilder, CertError> {
    let cas = reqwest::Certificate::from_pem_bundle(ca_pem)
        .map_err(|e| CertError::Invalid(format!("the CA certificate: {e}")))?;
    if cas.is_empty() {
        return Err(CertError::Invalid("the CA file holds no PEM certificate".into()));
    }
    let mut identity = cert_pem.to_vec();
    identity.push(b'\n');
    identity.extend_from_slice(key_pem);
    let identity = reqwest::Identity::from_pem(&identity)
        .map_err(|e| CertError::Invalid(format!("the certificate and key: {e}")))?;
    let mut b = reqwest::Client::builder().use_rustls_tls().tls_built_in_root_certs(false);
    for ca in cas {
        b = b.add_root_certificate(ca);
    }
    Ok(b.identity(identity))
}

/// The files [`write_node`] wrote.
#[derive(Clone, Debug)]
pub struct NodeFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_reloaded_ca_issues_certificates_and_nothing_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let ca = Ca::generate().unwrap();
        ca.write(&ca_dir).unwrap();
        assert!(matches!(ca.write(&ca_dir), Err(CertError::Exists { .. })));
        let again = Ca::load(&ca_dir).unwrap();
        assert_eq!(again.key_pem(), ca.key_pem());
        let hosts = vec!["node1".to_owned(), "127.0.0.1".to_owned()];
        let files = write_node(&dir.path().join("node1"), &again, "node1", &hosts).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&files.key), 0o600);
        assert_eq!(mode(&ca_dir.join(CA_KEY)), 0o600);
        assert_eq!(mode(&dir.path().join("node1")), 0o700);
        assert!(std::fs::read_to_string(&files.cert)
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(matches!(
            write_node(&dir.path().join("node1"), &again, "node1", &hosts),
            Err(CertError::Exists { .. })
        ));
        assert!(matches!(ca.issue("x", &[]), Err(CertError::Invalid(_))));
        let issued = again.issue("x", &hosts).unwrap();
        let ca_pem = again.cert_pem();
        client_builder(ca_pem.as_bytes(), issued.cert_pem.as_bytes(), issued.key_pem.as_bytes())
            .unwrap()
            .build()
            .unwrap();
        assert!(matches!(
            client_builder(b"nope", issued.cert_pem.as_bytes(), issued.key_pem.as_bytes()),
            Err(CertError::Invalid(_))
        ));
        assert!(matches!(ca.issue("x", &["bad host!".into()]), Err(CertError::Invalid(_))));
    }
}
