//! A private PKI minted at test time. GigaChat serves a certificate from
//! the Russian Trusted Root CA, which ordinary trust stores lack; a CA made
//! here is missing from them in the same way, so the tests exercise the
//! same trust decisions (an extra root, no verification, mTLS).

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A self-signed certificate authority and the key that signs with it.
pub struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// A CA whose subject is `common_name`, allowed to sign certificates.
    pub fn new(common_name: &str) -> Self {
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("a self-signed CA");
        Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// A certificate for a server reached as any of `names` (DNS names or
    /// IP addresses; the first is also the subject's common name).
    pub fn server_cert(&self, names: &[&str]) -> Leaf {
        self.issue(server_params(names))
    }

    /// [`Ca::server_cert`] valid only during 2020: a certificate that has
    /// lapsed, which a verifying client must refuse.
    pub fn expired_server_cert(&self, names: &[&str]) -> Leaf {
        let mut params = server_params(names);
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        self.issue(params)
    }

    /// A certificate a client presents for mTLS: a subject name and no
    /// DNS names, since a client is not reached at an address.
    pub fn client_cert(&self, common_name: &str) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        self.issue(params)
    }

    fn issue(&self, params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().expect("a leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("a certificate signed by the CA");
        Leaf {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key_pem: key.serialize_pem(),
            key_der: PrivatePkcs8KeyDer::from(key.serialize_der()),
        }
    }
}

fn server_params(names: &[&str]) -> CertificateParams {
    let sans = names
        .iter()
        .map(|name| (*name).to_owned())
        .collect::<Vec<_>>();
    let mut params = CertificateParams::new(sans).expect("server parameters");
    if let Some(name) = names.first() {
        params.distinguished_name.push(DnType::CommonName, *name);
    }
    params
}

/// An end-entity certificate and its private key (PKCS#8).
pub struct Leaf {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key_pem: String,
    key_der: PrivatePkcs8KeyDer<'static>,
}

impl Leaf {
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key_der.clone_key())
    }

    /// The certificate followed by its key in one PEM text: the form of a
    /// single identity file, and what `reqwest::Identity::from_pem` reads.
    pub fn identity_pem(&self) -> String {
        format!("{}{}", self.cert_pem, self.key_pem)
    }
}

/// A private key (PEM) that belongs to no certificate, for checks that a
/// certificate and a key must match.
pub fn unrelated_key_pem() -> String {
    KeyPair::generate().expect("a key").serialize_pem()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::server::WebPkiClientVerifier;
    use rustls::sign::CertifiedKey;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{ServerName, UnixTime};

    use super::*;

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn roots(ca: &Ca) -> Arc<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap())
            .unwrap();
        Arc::new(roots)
    }

    fn verify_server(ca: &Ca, leaf: &Leaf, name: &str) -> Result<(), rustls::Error> {
        WebPkiServerVerifier::builder_with_provider(roots(ca), provider())
            .build()
            .unwrap()
            .verify_server_cert(
                leaf.cert_der(),
                &[],
                &ServerName::try_from(name.to_owned()).unwrap(),
                &[],
                UnixTime::now(),
            )
            .map(|_| ())
    }

    fn keys_match(leaf: &Leaf) -> Result<(), rustls::Error> {
        CertifiedKey::from_der(vec![leaf.cert_der().clone()], leaf.key_der(), &provider())
            .map(|_| ())
    }

    #[test]
    fn a_server_certificate_verifies_for_its_names_against_its_ca_only() {
        let ca = Ca::new("Test Root CA");
        let leaf = ca.server_cert(&["localhost", "127.0.0.1"]);
        verify_server(&ca, &leaf, "localhost").unwrap();
        verify_server(&ca, &leaf, "127.0.0.1").unwrap();
        assert!(verify_server(&ca, &leaf, "gigachat.example").is_err());
        assert!(verify_server(&Ca::new("Another CA"), &leaf, "localhost").is_err());
        // The DER and PEM accessors describe the same certificate and key.
        assert_eq!(
            CertificateDer::from_pem_slice(leaf.cert_pem().as_bytes()).unwrap(),
            *leaf.cert_der()
        );
        assert_eq!(
            PrivateKeyDer::from_pem_slice(leaf.key_pem().as_bytes()).unwrap(),
            leaf.key_der()
        );
        assert_eq!(
            CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap(),
            *ca.cert_der()
        );
        keys_match(&leaf).unwrap();
        assert_eq!(
            leaf.identity_pem(),
            format!("{}{}", leaf.cert_pem(), leaf.key_pem())
        );
    }

    #[test]
    fn an_expired_server_certificate_is_refused() {
        let ca = Ca::new("Test Root CA");
        let err =
            verify_server(&ca, &ca.expired_server_cert(&["localhost"]), "localhost").unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(rustls::CertificateError::Expired)
                    | rustls::Error::InvalidCertificate(
                        rustls::CertificateError::ExpiredContext { .. }
                    )
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_client_certificate_verifies_against_its_ca_only() {
        let ca = Ca::new("Test Client CA");
        let client = ca.client_cert("test client");
        let verify = |trusted: &Ca| {
            WebPkiClientVerifier::builder_with_provider(roots(trusted), provider())
                .build()
                .unwrap()
                .verify_client_cert(client.cert_der(), &[], UnixTime::now())
                .map(|_| ())
        };
        verify(&ca).unwrap();
        assert!(verify(&Ca::new("Rogue Client CA")).is_err());
        keys_match(&client).unwrap();
    }

    #[test]
    fn an_unrelated_key_matches_no_certificate() {
        let leaf = Ca::new("Test Root CA").client_cert("test client");
        let stray = PrivateKeyDer::from_pem_slice(unrelated_key_pem().as_bytes()).unwrap();
        let err = CertifiedKey::from_der(vec![leaf.cert_der().clone()], stray, &provider())
            .map(|_| ())
            .unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)
            ),
            "{err:?}"
        );
    }
}
