//! Lab-generated TLS for the simulated API server: a CA and a serving
//! certificate for the loopback address (as kubeadm's `pki/ca.crt` and
//! `apiserver.crt` would be), and the rustls server config. Generation only;
//! the HTTP module decides per connection whether it speaks TLS.

use std::net::IpAddr;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::Error;

/// The CA and serving certificate of one server.
#[derive(Clone)]
pub struct TlsMaterial {
    /// PEM of the CA certificate (what `certificate-authority-data` carries).
    pub ca_pem: String,
    /// PEM of the serving certificate.
    pub cert_pem: String,
    pub(crate) config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial").finish_non_exhaustive()
    }
}

fn tls_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Tls(format!("{what}: {e}"))
}

/// A fresh CA and a serving certificate valid for `ip`, 127.0.0.1, localhost and the in-cluster names.
pub fn generate(ip: IpAddr) -> Result<TlsMaterial, Error> {
    let ca_key = KeyPair::generate().map_err(|e| tls_err("ca key", e))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(|e| tls_err("ca params", e))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "kubernetes");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(|e| tls_err("ca certificate", e))?;
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().map_err(|e| tls_err("server key", e))?;
    let names = vec!["localhost".to_string(), "kubernetes".into(), "kubernetes.default".into(), "kubernetes.default.svc".into()];
    let mut params = CertificateParams::new(names).map_err(|e| tls_err("server params", e))?;
    params.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    params.subject_alt_names.push(SanType::IpAddress(ip));
    if ip != IpAddr::from([127, 0, 0, 1]) {
        params.subject_alt_names.push(SanType::IpAddress(IpAddr::from([127, 0, 0, 1])));
    }
    let cert = params.signed_by(&key, &issuer).map_err(|e| tls_err("server certificate", e))?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone(), ca_cert.der().clone()];
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("protocol versions", e))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| tls_err("server config", e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsMaterial { ca_pem: ca_cert.pem(), cert_pem: cert.pem(), config: Arc::new(config) })
}
