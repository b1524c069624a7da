//! HTTPS for the emulator, so the proxy's TLS settings (extra roots,
//! verification, client certificates) can be tested end to end without
//! GigaChat: tests mint a private CA and serve with a certificate it signed,
//! exactly as GigaChat serves with one from the Russian Trusted Root CA.
//!
//! rustls with the ring provider only: no OpenSSL and no aws-lc, like the
//! proxy itself.

use std::io;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

/// The certificate the emulator serves, and optionally the CA its clients'
/// certificates must chain to.
#[derive(Clone)]
pub struct EmulatorTls {
    /// The server certificate, then any intermediates (PEM). Tests issue it
    /// for `localhost`, the host [`crate::Emulator::base_url`] names.
    pub cert_chain_pem: Vec<u8>,
    /// The server certificate's private key (PEM: PKCS#8, RSA or SEC1).
    pub key_pem: Vec<u8>,
    /// When set, every client must present a certificate signed by this CA
    /// (mTLS, as GigaChat's corporate scope can require); the handshake
    /// fails otherwise.
    pub client_ca_pem: Option<Vec<u8>>,
}

/// Hides the key.
impl std::fmt::Debug for EmulatorTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorTls")
            .field(
                "cert_chain_pem",
                &format!("<{} bytes>", self.cert_chain_pem.len()),
            )
            .field("key_pem", &"***")
            .field("client_ca_pem", &self.client_ca_pem.as_ref().map(Vec::len))
            .finish()
    }
}

fn invalid(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}

fn certificates(pem: &[u8], what: &str) -> io::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(format!("{what}: no PEM certificate")));
    }
    Ok(certs)
}

impl EmulatorTls {
    /// A rustls acceptor offering HTTP/2 and HTTP/1.1 by ALPN (the proxy's
    /// reqwest client prefers h2 over TLS, as with GigaChat).
    pub(crate) fn acceptor(&self) -> io::Result<TlsAcceptor> {
        let provider = Arc::new(ring::default_provider());
        let chain = certificates(&self.cert_chain_pem, "server certificate")?;
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem)
            .map_err(|e| invalid(format!("server key: {e}")))?;
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(invalid)?;
        let builder = match &self.client_ca_pem {
            None => builder.with_no_client_auth(),
            Some(pem) => {
                let mut roots = RootCertStore::empty();
                for cert in certificates(pem, "client CA")? {
                    roots.add(cert).map_err(invalid)?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::<CryptoProvider>::clone(&provider),
                )
                .build()
                .map_err(invalid)?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, key).map_err(invalid)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}
