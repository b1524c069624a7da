//! Reading `GIGACHAT_CA_BUNDLE_FILE`, `GIGACHAT_CERT_FILE` and
//! `GIGACHAT_KEY_FILE` into rustls types. Every error names the variable
//! and the kind of failure, never the path or the contents.

use std::io::Read as _;

use rustls_pki_types::pem::{PemObject as _, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::{CA_BUNDLE_FILE, CERT_FILE, KEY_FILE, KEY_FILE_PASSWORD};
use crate::config::env::ConfigError;

/// Files larger than this are refused rather than read: a full system CA
/// bundle is a few hundred KB, and a path pointing at a device or a huge
/// file must not stall or exhaust a cold start.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// The client certificate (with its chain) and its private key.
pub(super) struct ClientIdentity {
    pub(super) chain: Vec<CertificateDer<'static>>,
    pub(super) key: PrivateKeyDer<'static>,
    /// The variable the key came from (`GIGACHAT_KEY_FILE`, or
    /// `GIGACHAT_CERT_FILE` for a combined file), named when it turns out
    /// not to match the certificate.
    pub(super) key_variable: &'static str,
}

/// Reads a whole (small) file; the error names the variable and the kind of
/// failure, never the path.
fn read_file(variable: &'static str, path: &str) -> Result<Vec<u8>, ConfigError> {
    let unreadable = |err: std::io::Error| {
        let problem = match err.kind() {
            std::io::ErrorKind::NotFound => "names a file that does not exist",
            std::io::ErrorKind::PermissionDenied => "names a file the proxy is not allowed to read",
            _ => "names a file that cannot be read (is it a regular file?)",
        };
        ConfigError::new(variable, problem)
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ConfigError::new(
            variable,
            format!(
                "names a file larger than {} MiB; it should be a PEM file",
                MAX_FILE_BYTES / 1024 / 1024
            ),
        ));
    }
    Ok(bytes)
}

/// What a PEM file holds, by section.
#[derive(Default)]
struct PemContents {
    certificates: Vec<CertificateDer<'static>>,
    keys: Vec<PrivateKeyDer<'static>>,
    encrypted_key: bool,
}

fn parse_pem(variable: &'static str, bytes: &[u8]) -> Result<PemContents, ConfigError> {
    let mut contents = PemContents {
        // Neither label is one rustls-pki-types knows, so the parser skips
        // such sections (PKCS#8 `ENCRYPTED PRIVATE KEY`) or fails on their
        // headers (legacy OpenSSL `Proc-Type: 4,ENCRYPTED`); look for them
        // first to say what is actually wrong.
        encrypted_key: contains(bytes, b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
            || contains(bytes, b"Proc-Type: 4,ENCRYPTED"),
        ..PemContents::default()
    };
    if contents.encrypted_key {
        return Ok(contents);
    }
    if !contains(bytes, b"-----BEGIN ") {
        return Err(ConfigError::new(
            variable,
            "is not a PEM file (no -----BEGIN line); a DER file converts with `openssl x509 -inform der -in FILE.cer -out FILE.pem`",
        ));
    }
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes) {
        let (kind, der) =
            section.map_err(|_| ConfigError::new(variable, "is not a well-formed PEM file"))?;
        match kind {
            SectionKind::Certificate => contents.certificates.push(CertificateDer::from(der)),
            SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey => {
                contents.keys.extend(PrivateKeyDer::from_pem(kind, der));
            }
            _ => {}
        }
    }
    Ok(contents)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// The certificates of the bundle, comments and other sections dropped.
pub(super) fn read_ca_bundle(path: &str) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let contents = parse_pem(CA_BUNDLE_FILE, &read_file(CA_BUNDLE_FILE, path)?)?;
    if contents.certificates.is_empty() {
        return Err(ConfigError::new(
            CA_BUNDLE_FILE,
            "contains no PEM certificate (-----BEGIN CERTIFICATE-----); give it the CA certificate(s) to trust",
        ));
    }
    Ok(contents.certificates)
}

fn encrypted_key_error(variable: &'static str) -> ConfigError {
    ConfigError::new(
        variable,
        "holds an encrypted private key, which the proxy's TLS stack (rustls) cannot load even with GIGACHAT_KEY_FILE_PASSWORD: decrypt it once with `openssl pkey -in key.pem -out key-decrypted.pem`, point GIGACHAT_KEY_FILE at the result and keep that file as secret as the key",
    )
}

/// The client identity from a certificate file and a key file, or from
/// one file holding both. Whether the key matches the certificate is
/// checked where the rustls configuration is built.
pub(super) fn read_identity(
    cert_path: Option<&str>,
    key_path: Option<&str>,
    has_password: bool,
) -> Result<Option<ClientIdentity>, ConfigError> {
    let cert_path = match (cert_path, key_path) {
        (None, None) if has_password => {
            return Err(ConfigError::new(
                KEY_FILE_PASSWORD,
                "is set but GIGACHAT_KEY_FILE is not: set GIGACHAT_CERT_FILE and GIGACHAT_KEY_FILE for client-certificate auth, or unset it",
            ));
        }
        (None, None) => return Ok(None),
        (None, Some(_)) => {
            return Err(ConfigError::new(
                CERT_FILE,
                "is not set, but GIGACHAT_KEY_FILE is: client-certificate auth needs the certificate too",
            ));
        }
        (Some(cert_path), _) => cert_path,
    };

    let cert = parse_pem(CERT_FILE, &read_file(CERT_FILE, cert_path)?)?;
    if cert.encrypted_key && key_path.is_none() {
        return Err(encrypted_key_error(CERT_FILE));
    }
    if cert.certificates.is_empty() {
        return Err(ConfigError::new(
            CERT_FILE,
            "contains no PEM certificate (-----BEGIN CERTIFICATE-----); give it the client certificate issued for the key",
        ));
    }
    let (key_variable, key) = match key_path {
        Some(key_path) => {
            let key = parse_pem(KEY_FILE, &read_file(KEY_FILE, key_path)?)?;
            if key.encrypted_key {
                return Err(encrypted_key_error(KEY_FILE));
            }
            (KEY_FILE, key.keys.into_iter().next())
        }
        // A combined file (certificate and key in one) is common too.
        None => match cert.keys.into_iter().next() {
            Some(key) => (CERT_FILE, Some(key)),
            None => {
                return Err(ConfigError::new(
                    KEY_FILE,
                    "is not set, and GIGACHAT_CERT_FILE holds no private key: client-certificate auth needs both",
                ));
            }
        },
    };
    let Some(key) = key else {
        return Err(ConfigError::new(
            key_variable,
            "contains no unencrypted PEM private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
        ));
    };
    Ok(Some(ClientIdentity {
        chain: cert.certificates,
        key,
        key_variable,
    }))
}
