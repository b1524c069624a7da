//! Trust for GigaChat's certificate chain.
//!
//! GigaChat's hosts chain to the Russian Trusted Root CA, which is absent
//! from the Mozilla/webpki root set; it is the most common reason GigaChat
//! clients fail. The root is embedded in the binary so Vercel and Lambda
//! need no files, and it is added next to the webpki roots, for the upstream
//! client only.

/// "Russian Trusted Root CA" (Ministry of Digital Development, RU), valid
/// 2022-03-01 .. 2032-02-27.
pub const RUSSIAN_TRUSTED_ROOT_CA_PEM: &[u8] =
    include_bytes!("../../certs/russian_trusted_root_ca.pem");

/// Its published SHA-256 fingerprint, checked by a test so a corrupted or
/// swapped file cannot ship.
pub const RUSSIAN_TRUSTED_ROOT_CA_SHA256: &str = "D2:6D:2D:02:31:B7:C3:9F:92:CC:73:85:12:BA:54:10:35:19:E4:40:5D:68:B5:BD:70:3E:97:88:CA:8E:CF:31";

pub fn russian_trusted_root() -> Result<reqwest::Certificate, reqwest::Error> {
    reqwest::Certificate::from_pem(RUSSIAN_TRUSTED_ROOT_CA_PEM)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use base64::Engine as _;
    use sha2::{Digest, Sha256};

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
}
