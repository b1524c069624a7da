//! Trust for GigaChat's certificate chain, and the proxy's own TLS settings
//! toward GigaChat.
//!
//! GigaChat's hosts chain to the Russian Trusted Root CA, which is absent
//! from the Mozilla/webpki root set; it is the most common reason GigaChat
//! clients fail. The root is embedded in the binary so Vercel and Lambda
//! need no files, and it is added next to the webpki roots, for the upstream
//! client only.
//!
//! The settings keep the official Python SDK's names (`GIGACHAT_*`), with
//! one deliberate difference: the SDK's `GIGACHAT_CA_BUNDLE_FILE` *replaces*
//! the trust store, ours *adds* to it. The usual reason to set it is a
//! corporate TLS-inspecting proxy; adding its CA keeps GigaChat's real chain
//! (the embedded root) and ordinary public hosts working too, so the same
//! deployment works inside and outside the corporate network.

use std::fmt;
use std::io::Read as _;

use std::sync::Arc;

use base64::Engine as _;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::{PemObject as _, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::config::ConfigError;
use crate::secret::Secret;

/// "Russian Trusted Root CA" (Ministry of Digital Development, RU), valid
/// 2022-03-01 .. 2032-02-27.
pub const RUSSIAN_TRUSTED_ROOT_CA_PEM: &[u8] =
    include_bytes!("../../certs/russian_trusted_root_ca.pem");

/// Its published SHA-256 fingerprint, checked by a test so a corrupted or
/// swapped file cannot ship.
pub const RUSSIAN_TRUSTED_ROOT_CA_SHA256: &str = "D2:6D:2D:02:31:B7:C3:9F:92:CC:73:85:12:BA:54:10:35:19:E4:40:5D:68:B5:BD:70:3E:97:88:CA:8E:CF:31";

/// PEM file with CA certificates trusted in addition to the built-in roots.
pub const CA_BUNDLE_FILE: &str = "GIGACHAT_CA_BUNDLE_FILE";
/// `false` turns certificate verification toward GigaChat off.
pub const VERIFY_SSL_CERTS: &str = "GIGACHAT_VERIFY_SSL_CERTS";
/// Client certificate (PEM, optionally with its chain and key) for mTLS.
pub const CERT_FILE: &str = "GIGACHAT_CERT_FILE";
/// Private key (PEM) of the client certificate.
pub const KEY_FILE: &str = "GIGACHAT_KEY_FILE";
/// The SDK's password for an encrypted key; see [`TlsConfig::from_lookup`].
pub const KEY_FILE_PASSWORD: &str = "GIGACHAT_KEY_FILE_PASSWORD";

/// Files larger than this are refused rather than read: a full system CA
/// bundle is a few hundred KB, and a path pointing at a device or a huge
/// file must not stall or exhaust a cold start.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

pub fn russian_trusted_root() -> Result<reqwest::Certificate, reqwest::Error> {
    reqwest::Certificate::from_pem(RUSSIAN_TRUSTED_ROOT_CA_PEM)
}

/// TLS settings of the upstream client (GigaChat's API and OAuth hosts).
///
/// The files are read and validated once, at start-up, so a bad path or a
/// broken file is a configuration error naming its variable rather than a
/// failure on the first request, and serverless instances keep no file
/// handles.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Certificates from `GIGACHAT_CA_BUNDLE_FILE`, re-encoded as PEM with
    /// only the `CERTIFICATE` sections; trusted next to the embedded Russian
    /// root and the webpki roots.
    pub extra_roots_pem: Option<Vec<u8>>,
    /// `GIGACHAT_VERIFY_SSL_CERTS`; `false` accepts any certificate.
    pub verify: bool,
    /// The client certificate (with its chain) followed by its private key,
    /// as PEM, ready for `reqwest::Identity::from_pem`.
    pub client_identity_pem: Option<Secret<Vec<u8>>>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            extra_roots_pem: None,
            verify: true,
            client_identity_pem: None,
        }
    }
}

/// Prints sizes and flags only: the identity holds a private key, and a CA
/// bundle in a log line is noise.
impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field(
                "extra_roots_pem",
                &self
                    .extra_roots_pem
                    .as_ref()
                    .map(|pem| format!("<{} bytes>", pem.len())),
            )
            .field("verify", &self.verify)
            .field("client_identity_pem", &self.client_identity_pem)
            .finish()
    }
}

fn config_error(variable: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        problem: problem.into(),
    }
}

impl TlsConfig {
    /// Reads `GIGACHAT_CA_BUNDLE_FILE`, `GIGACHAT_VERIFY_SSL_CERTS`,
    /// `GIGACHAT_CERT_FILE`, `GIGACHAT_KEY_FILE` and
    /// `GIGACHAT_KEY_FILE_PASSWORD` through `lookup`; empty values count as
    /// unset.
    ///
    /// An encrypted private key is refused even with a password: the rustls
    /// TLS stack (chosen to avoid OpenSSL on Vercel and Lambda) only loads
    /// unencrypted PKCS#8, PKCS#1 (RSA) or SEC1 (EC) keys, and a clear error
    /// at start-up beats a handshake failure later. The password is accepted
    /// (and unused) with an unencrypted key, so settings copied from a Python
    /// deployment whose key was decrypted keep working.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<TlsConfig, ConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty())
        };

        let verify = match get(VERIFY_SSL_CERTS) {
            None => true,
            Some(value) => parse_bool(&value).ok_or_else(|| {
                config_error(VERIFY_SSL_CERTS, "must be true or false (default true)")
            })?,
        };

        let extra_roots_pem = match get(CA_BUNDLE_FILE) {
            None => None,
            Some(path) => Some(read_ca_bundle(&path)?),
        };

        let client_identity_pem = read_identity(
            get(CERT_FILE).as_deref(),
            get(KEY_FILE).as_deref(),
            get(KEY_FILE_PASSWORD).is_some(),
        )?
        .map(Secret::new);

        Ok(TlsConfig {
            extra_roots_pem,
            verify,
            client_identity_pem,
        })
    }

    /// The certificates of `extra_roots_pem`, for the client builder.
    pub fn extra_roots(&self) -> Result<Vec<reqwest::Certificate>, ConfigError> {
        match &self.extra_roots_pem {
            None => Ok(Vec::new()),
            Some(pem) => reqwest::Certificate::from_pem_bundle(pem).map_err(|_| {
                config_error(CA_BUNDLE_FILE, "holds a certificate that does not parse")
            }),
        }
    }

    /// The one rustls configuration of every connection to GigaChat (the
    /// forwarding client's and the OAuth client's), so both trust exactly
    /// the same roots and present the same client certificate: the webpki
    /// roots, the embedded Russian root and `GIGACHAT_CA_BUNDLE_FILE`, or no
    /// verification at all with `GIGACHAT_VERIFY_SSL_CERTS=false`. Without
    /// ALPN: each client offers the HTTP versions it speaks.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, ConfigError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|_| config_error(CA_BUNDLE_FILE, "TLS protocol versions are unavailable"))?;
        let builder = if self.verify {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let russian = CertificateDer::pem_slice_iter(RUSSIAN_TRUSTED_ROOT_CA_PEM);
            let extra = self
                .extra_roots_pem
                .as_deref()
                .map(CertificateDer::pem_slice_iter)
                .into_iter()
                .flatten();
            for cert in russian.chain(extra) {
                let added = cert.ok().is_some_and(|cert| roots.add(cert).is_ok());
                if !added {
                    return Err(config_error(
                        CA_BUNDLE_FILE,
                        "holds a certificate that is not a valid X.509 CA certificate",
                    ));
                }
            }
            builder.with_root_certificates(roots)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        };
        let config = match &self.client_identity_pem {
            None => builder.with_no_client_auth(),
            Some(pem) => {
                let unusable = || {
                    config_error(
                        CERT_FILE,
                        "and GIGACHAT_KEY_FILE do not form a usable client identity",
                    )
                };
                let chain = CertificateDer::pem_slice_iter(pem.expose())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| unusable())?;
                let key = PrivateKeyDer::from_pem_slice(pem.expose()).map_err(|_| unusable())?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|_| unusable())?
            }
        };
        Ok(config)
    }

    /// The client identity, for the client builder.
    pub fn identity(&self) -> Result<Option<reqwest::Identity>, ConfigError> {
        match &self.client_identity_pem {
            None => Ok(None),
            Some(pem) => reqwest::Identity::from_pem(pem.expose())
                .map(Some)
                .map_err(|_| {
                    config_error(
                        CERT_FILE,
                        "and GIGACHAT_KEY_FILE do not form a usable client identity",
                    )
                }),
        }
    }
}

/// `GIGACHAT_VERIFY_SSL_CERTS=false`: any certificate for any name. The
/// handshake signatures are still checked (with the provider's algorithms),
/// so the session is at least bound to the key of the certificate shown.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The spellings pydantic (the Python SDK's settings) accepts.
fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" | "t" | "y" => Some(true),
        "false" | "0" | "no" | "off" | "f" | "n" => Some(false),
        _ => None,
    }
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
        config_error(variable, problem)
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(config_error(
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
    certificates: Vec<Vec<u8>>,
    keys: Vec<(SectionKind, Vec<u8>)>,
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
        return Err(config_error(
            variable,
            "is not a PEM file (no -----BEGIN line); a DER file converts with `openssl x509 -inform der -in FILE.cer -out FILE.pem`",
        ));
    }
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes) {
        let (kind, der) =
            section.map_err(|_| config_error(variable, "is not a well-formed PEM file"))?;
        match kind {
            SectionKind::Certificate => contents.certificates.push(der),
            SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey => {
                contents.keys.push((kind, der));
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

fn push_pem(out: &mut Vec<u8>, label: &str, der: &[u8]) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    out.extend_from_slice(format!("-----BEGIN {label}-----\n").as_bytes());
    for line in b64.as_bytes().chunks(64) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(format!("-----END {label}-----\n").as_bytes());
}

fn key_label(kind: SectionKind) -> &'static str {
    match kind {
        SectionKind::RsaPrivateKey => "RSA PRIVATE KEY",
        SectionKind::EcPrivateKey => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    }
}

/// A client built with nothing but the setting under test, so the error of
/// a setting rustls rejects (a malformed CA, a key that does not match its
/// certificate, an algorithm rustls lacks) names that setting's variable.
fn probe(builder: reqwest::ClientBuilder) -> bool {
    builder.tls_built_in_root_certs(false).build().is_ok()
}

fn read_ca_bundle(path: &str) -> Result<Vec<u8>, ConfigError> {
    let contents = parse_pem(CA_BUNDLE_FILE, &read_file(CA_BUNDLE_FILE, path)?)?;
    if contents.certificates.is_empty() {
        return Err(config_error(
            CA_BUNDLE_FILE,
            "contains no PEM certificate (-----BEGIN CERTIFICATE-----); give it the CA certificate(s) to trust",
        ));
    }
    let mut pem = Vec::new();
    for der in &contents.certificates {
        push_pem(&mut pem, "CERTIFICATE", der);
    }
    let mut builder = reqwest::Client::builder();
    for der in &contents.certificates {
        let cert = reqwest::Certificate::from_der(der)
            .map_err(|_| config_error(CA_BUNDLE_FILE, "holds a certificate that does not parse"))?;
        builder = builder.add_root_certificate(cert);
    }
    if !probe(builder) {
        return Err(config_error(
            CA_BUNDLE_FILE,
            "holds a certificate that is not a valid X.509 CA certificate",
        ));
    }
    Ok(pem)
}

fn encrypted_key_error(variable: &'static str) -> ConfigError {
    config_error(
        variable,
        "holds an encrypted private key, which the proxy's TLS stack (rustls) cannot load even with GIGACHAT_KEY_FILE_PASSWORD: decrypt it once with `openssl pkey -in key.pem -out key-decrypted.pem`, point GIGACHAT_KEY_FILE at the result and keep that file as secret as the key",
    )
}

fn read_identity(
    cert_path: Option<&str>,
    key_path: Option<&str>,
    has_password: bool,
) -> Result<Option<Vec<u8>>, ConfigError> {
    let cert_path = match (cert_path, key_path) {
        (None, None) if has_password => {
            return Err(config_error(
                KEY_FILE_PASSWORD,
                "is set but GIGACHAT_KEY_FILE is not: set GIGACHAT_CERT_FILE and GIGACHAT_KEY_FILE for client-certificate auth, or unset it",
            ));
        }
        (None, None) => return Ok(None),
        (None, Some(_)) => {
            return Err(config_error(
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
        return Err(config_error(
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
                return Err(config_error(
                    KEY_FILE,
                    "is not set, and GIGACHAT_CERT_FILE holds no private key: client-certificate auth needs both",
                ));
            }
        },
    };
    let Some((kind, key_der)) = key else {
        return Err(config_error(
            key_variable,
            "contains no unencrypted PEM private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
        ));
    };

    let mut pem = Vec::new();
    for der in &cert.certificates {
        push_pem(&mut pem, "CERTIFICATE", der);
    }
    push_pem(&mut pem, key_label(kind), &key_der);
    let usable = reqwest::Identity::from_pem(&pem)
        .is_ok_and(|identity| probe(reqwest::Client::builder().identity(identity)));
    if !usable {
        return Err(config_error(
            key_variable,
            "holds a private key that does not match the certificate in GIGACHAT_CERT_FILE or uses an algorithm rustls does not support (RSA, ECDSA P-256/P-384 and Ed25519 work; GOST does not)",
        ));
    }
    Ok(Some(pem))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use sha2::{Digest, Sha256};
    use std::collections::HashMap;
    use std::path::PathBuf;

    #[test]
    fn embedded_root_matches_the_published_fingerprint() {
        let pem = std::str::from_utf8(RUSSIAN_TRUSTED_ROOT_CA_PEM).unwrap();
        let b64: String = pem
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let fingerprint = Sha256::digest(&der)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(fingerprint, RUSSIAN_TRUSTED_ROOT_CA_SHA256);
        russian_trusted_root().unwrap();
    }

    /// A scratch directory removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!("gigachat-tls-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> String {
            let path = self.0.join(name);
            std::fs::write(&path, contents).unwrap();
            path.to_str().unwrap().to_owned()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    struct Pki {
        ca_pem: String,
        cert_pem: String,
        key_pem: String,
        other_key_pem: String,
        /// A `localhost` server certificate from the same CA, for handshakes.
        server_cert_pem: String,
        server_key_pem: String,
    }

    fn pki() -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Test Client CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "gigachat-proxy test client");
        let cert = params.signed_by(&key, &issuer).unwrap();
        let server_key = rcgen::KeyPair::generate().unwrap();
        let server_cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&server_key, &issuer)
            .unwrap();
        Pki {
            ca_pem: ca.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            other_key_pem: rcgen::KeyPair::generate().unwrap().serialize_pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
        }
    }

    /// A `localhost` server with the test CA's certificate that accepts
    /// only clients presenting a certificate from that CA (GigaChat's mTLS).
    fn mtls_server(pki: &Pki) -> rustls::ServerConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut client_roots = rustls::RootCertStore::empty();
        client_roots
            .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
            .unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(client_roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(pki.server_cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(pki.server_key_pem.as_bytes()).unwrap(),
            )
            .unwrap()
    }

    /// A whole TLS handshake in memory between `client` (as the upstream
    /// clients use it) and `server`; the server's view of it on success.
    fn handshake(
        client: rustls::ClientConfig,
        server: rustls::ServerConfig,
    ) -> Result<rustls::ServerConnection, rustls::Error> {
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(client), name)?;
        let mut server = rustls::ServerConnection::new(Arc::new(server))?;
        for _ in 0..16 {
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(server);
            }
            let mut wire = Vec::new();
            client.write_tls(&mut wire).unwrap();
            let mut unread = &wire[..];
            while !unread.is_empty() {
                server.read_tls(&mut unread).unwrap();
                server.process_new_packets()?;
            }
            let mut wire = Vec::new();
            server.write_tls(&mut wire).unwrap();
            let mut unread = &wire[..];
            while !unread.is_empty() {
                client.read_tls(&mut unread).unwrap();
                client.process_new_packets()?;
            }
        }
        panic!("the handshake did not finish");
    }

    /// Both upstream clients build from every setting at once, and the
    /// settings are in the TLS configuration they connect with: the extra
    /// root is what makes the server trusted, the client certificate is
    /// presented, and the insecure switch accepts an unknown server.
    #[test]
    fn the_upstream_client_builds_with_every_setting() {
        let pki = pki();
        let dir = TempDir::new();
        let ca = dir.write("ca.pem", &pki.ca_pem);
        let cert = dir.write("client.crt", &pki.cert_pem);
        let key = dir.write("client.key", &pki.key_pem);
        let config = crate::config::Config::from_lookup(crate::config::Platform::Local, |name| {
            (name == "GIGACHAT_CREDENTIALS").then(|| "Y2xpZW50OnNlY3JldA==".to_owned())
        })
        .unwrap();
        let every = parse(&[
            (CA_BUNDLE_FILE, &ca),
            (CERT_FILE, &cert),
            (KEY_FILE, &key),
            (VERIFY_SSL_CERTS, "false"),
        ])
        .unwrap();
        assert!(crate::upstream::client::build_with_tls(&config, &every).is_ok());
        assert!(crate::upstream::client::UpstreamClient::new(&config, &every).is_ok());
        assert!(crate::upstream::client::build(&config).is_ok());

        let client_cert = CertificateDer::from_pem_slice(pki.cert_pem.as_bytes()).unwrap();
        let verified =
            parse(&[(CA_BUNDLE_FILE, &ca), (CERT_FILE, &cert), (KEY_FILE, &key)]).unwrap();
        let server = handshake(verified.client_config().unwrap(), mtls_server(&pki))
            .expect("the extra root verifies the server, the identity satisfies it");
        assert_eq!(
            server.peer_certificates().unwrap().first(),
            Some(&client_cert),
            "the configured client certificate was presented"
        );

        let without_root = parse(&[(CERT_FILE, &cert), (KEY_FILE, &key)]).unwrap();
        assert!(
            handshake(without_root.client_config().unwrap(), mtls_server(&pki)).is_err(),
            "without GIGACHAT_CA_BUNDLE_FILE the test CA is not trusted"
        );
        let without_identity = parse(&[(CA_BUNDLE_FILE, &ca)]).unwrap();
        assert!(
            handshake(without_identity.client_config().unwrap(), mtls_server(&pki)).is_err(),
            "the server demands a client certificate"
        );
        let server = handshake(every.client_config().unwrap(), mtls_server(&pki))
            .expect("GIGACHAT_VERIFY_SSL_CERTS=false accepts the server");
        assert_eq!(
            server.peer_certificates().unwrap().first(),
            Some(&client_cert)
        );
        let insecure = parse(&[
            (VERIFY_SSL_CERTS, "false"),
            (CERT_FILE, &cert),
            (KEY_FILE, &key),
        ])
        .unwrap();
        assert!(
            handshake(insecure.client_config().unwrap(), mtls_server(&pki)).is_ok(),
            "no extra root needed when verification is off"
        );
    }

    fn parse(vars: &[(&str, &str)]) -> Result<TlsConfig, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        TlsConfig::from_lookup(&|name| map.get(name).cloned())
    }

    fn assert_error(result: Result<TlsConfig, ConfigError>, variable: &str, needle: &str) {
        let err = result.unwrap_err();
        assert_eq!(err.variable, variable, "{err}");
        assert!(err.problem.contains(needle), "{err}");
    }

    #[test]
    fn defaults_verify_with_the_built_in_roots_only() {
        let config = parse(&[]).unwrap();
        assert_eq!(config, TlsConfig::default());
        assert!(config.verify);
        assert!(config.extra_roots().unwrap().is_empty());
        assert!(config.identity().unwrap().is_none());
        // Empty values count as unset, as elsewhere in the configuration.
        assert_eq!(
            parse(&[(CA_BUNDLE_FILE, " "), (CERT_FILE, "")]).unwrap(),
            TlsConfig::default()
        );
    }

    #[test]
    fn verify_accepts_the_sdk_spellings() {
        for value in ["false", "False", "0", "no", "off"] {
            assert!(!parse(&[(VERIFY_SSL_CERTS, value)]).unwrap().verify);
        }
        for value in ["true", "TRUE", "1", "yes", "on"] {
            assert!(parse(&[(VERIFY_SSL_CERTS, value)]).unwrap().verify);
        }
        assert_error(
            parse(&[(VERIFY_SSL_CERTS, "secret-value-123")]),
            VERIFY_SSL_CERTS,
            "true or false",
        );
    }

    #[test]
    fn ca_bundle_keeps_only_the_certificates() {
        let pki = pki();
        let dir = TempDir::new();
        let bundle = format!("# comment lines are fine\n{}\n{}", pki.ca_pem, pki.cert_pem);
        let path = dir.write("ca.pem", bundle);
        let config = parse(&[(CA_BUNDLE_FILE, &path)]).unwrap();
        assert_eq!(config.extra_roots().unwrap().len(), 2);
        let pem = String::from_utf8(config.extra_roots_pem.clone().unwrap()).unwrap();
        assert!(!pem.contains('#'));
        assert!(config.verify);
        // The bundle is not secret, but it is not dumped into logs either.
        let printed = format!("{config:?}");
        assert!(!printed.contains("BEGIN"), "{printed}");
    }

    #[test]
    fn ca_bundle_errors_name_the_variable_not_the_path_or_contents() {
        let dir = TempDir::new();
        let missing = dir.0.join("secret-value-123.pem");
        let result = parse(&[(CA_BUNDLE_FILE, missing.to_str().unwrap())]);
        assert_error(result.clone(), CA_BUNDLE_FILE, "does not exist");
        assert!(!result.unwrap_err().to_string().contains("secret-value-123"));

        let not_pem = dir.write("not.pem", "secret-value-123 is not a certificate");
        let result = parse(&[(CA_BUNDLE_FILE, &not_pem)]);
        assert_error(result.clone(), CA_BUNDLE_FILE, "not a PEM file");
        assert!(!result.unwrap_err().to_string().contains("secret-value-123"));

        let key_only = dir.write("key.pem", pki().key_pem);
        assert_error(
            parse(&[(CA_BUNDLE_FILE, &key_only)]),
            CA_BUNDLE_FILE,
            "no PEM certificate",
        );

        let garbage = dir.write(
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\nc2VjcmV0LXZhbHVlLTEyMw==\n-----END CERTIFICATE-----\n",
        );
        assert_error(
            parse(&[(CA_BUNDLE_FILE, &garbage)]),
            CA_BUNDLE_FILE,
            "not a valid X.509",
        );

        assert_error(
            parse(&[(CA_BUNDLE_FILE, dir.0.to_str().unwrap())]),
            CA_BUNDLE_FILE,
            "cannot be read",
        );
    }

    #[test]
    fn client_identity_from_separate_or_combined_files() {
        let pki = pki();
        let dir = TempDir::new();
        let cert = dir.write("client.crt", &pki.cert_pem);
        let key = dir.write("client.key", &pki.key_pem);
        let config = parse(&[(CERT_FILE, &cert), (KEY_FILE, &key)]).unwrap();
        assert!(config.identity().unwrap().is_some());
        // The key never shows in debug output.
        let printed = format!("{config:?}");
        assert!(printed.contains("***"), "{printed}");
        assert!(!printed.contains("PRIVATE"), "{printed}");

        let combined = dir.write("client.pem", format!("{}{}", pki.cert_pem, pki.key_pem));
        let config = parse(&[(CERT_FILE, &combined)]).unwrap();
        assert!(config.identity().unwrap().is_some());

        // A password with an unencrypted key is harmless and ignored.
        let config = parse(&[
            (CERT_FILE, &cert),
            (KEY_FILE, &key),
            (KEY_FILE_PASSWORD, "pw"),
        ])
        .unwrap();
        assert!(config.client_identity_pem.is_some());
    }

    #[test]
    fn client_identity_errors() {
        let pki = pki();
        let dir = TempDir::new();
        let cert = dir.write("client.crt", &pki.cert_pem);
        let key = dir.write("client.key", &pki.key_pem);

        assert_error(
            parse(&[(CERT_FILE, &cert)]),
            KEY_FILE,
            "holds no private key",
        );
        assert_error(parse(&[(KEY_FILE, &key)]), CERT_FILE, "is not set");
        assert_error(
            parse(&[(KEY_FILE_PASSWORD, "pw")]),
            KEY_FILE_PASSWORD,
            "GIGACHAT_KEY_FILE is not",
        );
        assert_error(
            parse(&[(CERT_FILE, &key), (KEY_FILE, &key)]),
            CERT_FILE,
            "no PEM certificate",
        );
        assert_error(
            parse(&[(CERT_FILE, &cert), (KEY_FILE, &cert)]),
            KEY_FILE,
            "no unencrypted PEM private key",
        );
        let other = dir.write("other.key", &pki.other_key_pem);
        assert_error(
            parse(&[(CERT_FILE, &cert), (KEY_FILE, &other)]),
            KEY_FILE,
            "does not match",
        );
        let missing = dir.0.join("missing.key");
        assert_error(
            parse(&[(CERT_FILE, &cert), (KEY_FILE, missing.to_str().unwrap())]),
            KEY_FILE,
            "does not exist",
        );

        let pkcs8_encrypted = dir.write(
            "enc.key",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nc2VjcmV0LXZhbHVlLTEyMw==\n-----END ENCRYPTED PRIVATE KEY-----\n",
        );
        let result = parse(&[
            (CERT_FILE, &cert),
            (KEY_FILE, &pkcs8_encrypted),
            (KEY_FILE_PASSWORD, "secret-value-123"),
        ]);
        assert_error(result.clone(), KEY_FILE, "openssl pkey");
        assert!(!result.unwrap_err().to_string().contains("secret-value-123"));
        let legacy_encrypted = dir.write(
            "legacy.key",
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nc2VjcmV0\n-----END RSA PRIVATE KEY-----\n",
        );
        assert_error(
            parse(&[(CERT_FILE, &cert), (KEY_FILE, &legacy_encrypted)]),
            KEY_FILE,
            "encrypted",
        );
        // The client CA is not what a client presents, but it is a
        // certificate; only the key check tells them apart.
        let ca = dir.write("ca.crt", &pki.ca_pem);
        assert_error(
            parse(&[(CERT_FILE, &ca), (KEY_FILE, &key)]),
            KEY_FILE,
            "does not match",
        );
    }

    /// Real handshakes against the emulator over HTTPS: every way GigaChat's
    /// certificate can fail is reported as a TLS problem, with a hint that
    /// names the variables that fix it.
    mod handshakes {
        use super::*;
        use crate::error::{Error, TransportCause};
        use gigachat_emulator::{Emulator, EmulatorConfig, EmulatorTls};
        use std::net::SocketAddr;

        struct Ca {
            pem: String,
            issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
        }

        fn ca(name: &str) -> Ca {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            params.key_usages = vec![
                rcgen::KeyUsagePurpose::KeyCertSign,
                rcgen::KeyUsagePurpose::DigitalSignature,
            ];
            let cert = params.self_signed(&key).unwrap();
            Ca {
                pem: cert.pem(),
                issuer: rcgen::Issuer::new(params, key),
            }
        }

        /// A leaf signed by `ca`: (cert PEM, key PEM).
        fn leaf(ca: &Ca, name: &str, expired: bool) -> (String, String) {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            if expired {
                params.not_before = rcgen::date_time_ymd(2020, 1, 1);
                params.not_after = rcgen::date_time_ymd(2021, 1, 1);
            }
            let cert = params.signed_by(&key, &ca.issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        }

        async fn emulator(cert: (String, String), client_ca: Option<&Ca>) -> Emulator {
            Emulator::start_tls(
                EmulatorConfig::default(),
                SocketAddr::from(([127, 0, 0, 1], 0)),
                EmulatorTls {
                    cert_chain_pem: cert.0.into_bytes(),
                    key_pem: cert.1.into_bytes(),
                    client_ca_pem: client_ca.map(|ca| ca.pem.clone().into_bytes()),
                },
            )
            .await
            .unwrap()
        }

        fn tls(
            extra_root: Option<&Ca>,
            verify: bool,
            identity: Option<(String, String)>,
        ) -> TlsConfig {
            TlsConfig {
                extra_roots_pem: extra_root.map(|ca| ca.pem.clone().into_bytes()),
                verify,
                client_identity_pem: identity
                    .map(|(cert, key)| Secret::new(format!("{cert}{key}").into_bytes())),
            }
        }

        /// A GET of the emulator's model list through the upstream client:
        /// `Ok(status)` or the classified transport error.
        async fn get_models(emulator: &Emulator, tls: &TlsConfig) -> Result<u16, Error> {
            // The production client (`client::build_with_tls`) honours
            // HTTPS_PROXY, which a test machine may set; these requests
            // stay on loopback.
            let client =
                crate::upstream::client::apply_tls(reqwest::Client::builder().no_proxy(), tls)
                    .unwrap()
                    .build()
                    .unwrap();
            client
                .get(format!("{}/models", emulator.base_url()))
                .send()
                .await
                .map(|response| response.status().as_u16())
                .map_err(|err| crate::upstream::transport_error(&err, "api", "localhost", 30))
        }

        fn assert_tls_failure(result: Result<u16, Error>) {
            let err = result.expect_err("the handshake must fail");
            assert!(
                matches!(
                    err,
                    Error::UpstreamUnreachable {
                        cause: TransportCause::Tls,
                        ..
                    }
                ),
                "{err:?}"
            );
            assert_eq!(err.status(), http::StatusCode::BAD_GATEWAY);
            assert!(err.to_string().contains("TLS"), "{err}");
            let hint = err.hint();
            assert!(hint.contains(CA_BUNDLE_FILE), "{hint}");
            assert!(hint.contains(VERIFY_SSL_CERTS), "{hint}");
        }

        #[tokio::test]
        async fn unknown_issuer_is_a_tls_failure_and_the_bundle_fixes_it() {
            let ca = ca("Test Russian Trusted Root CA");
            let emulator = emulator(leaf(&ca, "localhost", false), None).await;
            // 401: the TLS part worked and the emulator answered (no token).
            assert_tls_failure(get_models(&emulator, &TlsConfig::default()).await);
            assert_eq!(
                get_models(&emulator, &tls(Some(&ca), true, None))
                    .await
                    .unwrap(),
                401
            );
            assert_eq!(
                get_models(&emulator, &tls(None, false, None))
                    .await
                    .unwrap(),
                401
            );
        }

        #[tokio::test]
        async fn expired_certificate_is_a_tls_failure() {
            let ca = ca("Test Russian Trusted Root CA");
            let emulator = emulator(leaf(&ca, "localhost", true), None).await;
            assert_tls_failure(get_models(&emulator, &tls(Some(&ca), true, None)).await);
        }

        #[tokio::test]
        async fn name_mismatch_is_a_tls_failure() {
            let ca = ca("Test Russian Trusted Root CA");
            let emulator = emulator(leaf(&ca, "gigachat.example", false), None).await;
            assert_tls_failure(get_models(&emulator, &tls(Some(&ca), true, None)).await);
        }

        #[tokio::test]
        async fn missing_client_certificate_fails_and_the_identity_fixes_it() {
            let ca = ca("Test Russian Trusted Root CA");
            let client_ca = ca_with_client("Test Client CA");
            let emulator = emulator(leaf(&ca, "localhost", false), Some(&client_ca.0)).await;
            // The server's CertificateRequired alert arrives after the
            // client's half of the TLS 1.3 handshake; whether hyper passes
            // it on (Tls) or only reports a dead connection (Other) is a
            // race, so either is accepted, but never a success.
            let err = get_models(&emulator, &tls(Some(&ca), true, None))
                .await
                .expect_err("the server requires a client certificate");
            assert!(matches!(err, Error::UpstreamUnreachable { .. }), "{err:?}");
            assert_eq!(
                get_models(&emulator, &tls(Some(&ca), true, Some(client_ca.1)))
                    .await
                    .unwrap(),
                401
            );
        }

        fn ca_with_client(name: &str) -> (Ca, (String, String)) {
            let ca = ca(name);
            let client = leaf(&ca, "gigachat-proxy-client", false);
            (ca, client)
        }
    }
}
