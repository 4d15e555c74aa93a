//! TLS with rustls (TLS 1.2 and 1.3 only): server configs for listeners, with the certificate
//! chosen by SNI among the configured ones, and client configs for TLS to upstreams.
use std::{path::PathBuf, sync::Arc};

use rustls::{
    ServerConfig,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};

use crate::{
    config::{ListenerTls, UpstreamTls},
    upstream::UpstreamTlsConfig,
};

/// Where the system's CA bundle is on Debian.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading certificate file {path}: {message}")]
    Cert { path: PathBuf, message: String },
    #[error("reading private key file {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("reading CA file {path}: {message}")]
    Ca { path: PathBuf, message: String },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const VERSIONS: [&rustls::SupportedProtocolVersion; 2] =
    [&rustls::version::TLS13, &rustls::version::TLS12];

/// The configured certificates; the first whose names cover the SNI wins, else the first.
#[derive(Debug)]
struct SniResolver {
    certs: Vec<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let by_name = hello.server_name().and_then(|sni| {
            let name = ServerName::try_from(sni).ok()?;
            self.certs.iter().find(|ck| {
                ck.end_entity_cert()
                    .ok()
                    .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
                    .is_some_and(|ee| ee.verify_is_valid_for_subject_name(&name).is_ok())
            })
        });
        by_name.or_else(|| self.certs.first()).cloned()
    }
}

fn load_certs(path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |message: String| TlsError::Cert {
        path: path.clone(),
        message,
    };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// The server config for a listener (certificates are read now: call again to reload them).
pub fn server_config(tls: &ListenerTls) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let mut certs = Vec::new();
    for pair in &tls.certificates {
        let chain = load_certs(&pair.cert)?;
        let key = PrivateKeyDer::from_pem_file(&pair.key).map_err(|e| TlsError::Key {
            path: pair.key.clone(),
            message: e.to_string(),
        })?;
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::Key {
                path: pair.key.clone(),
                message: e.to_string(),
            })?;
        let ck = CertifiedKey::new(chain, signing);
        ck.keys_match().map_err(|e| TlsError::Key {
            path: pair.key.clone(),
            message: format!("does not match certificate {}: {e}", pair.cert.display()),
        })?;
        certs.push(Arc::new(ck));
    }
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&VERSIONS)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { certs }));
    config.alpn_protocols = tls.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(Arc::new(config))
}

/// Every file a listener's TLS reads, to notice changes.
#[must_use]
pub fn files(tls: &ListenerTls) -> Vec<PathBuf> {
    tls.certificates
        .iter()
        .flat_map(|p| [p.cert.clone(), p.key.clone()])
        .collect()
}

/// The client config for TLS to an upstream.
pub fn client_config(tls: &UpstreamTls, http2: bool) -> Result<UpstreamTlsConfig, TlsError> {
    let ca = tls
        .ca_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE));
    let err = |message: String| TlsError::Ca {
        path: ca.clone(),
        message,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&ca).map_err(|e| err(e.to_string()))? {
        roots
            .add(cert.map_err(|e| err(e.to_string()))?)
            .map_err(|e| err(e.to_string()))?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&VERSIONS)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    let server_name = tls
        .server_name
        .as_ref()
        .map(|n| ServerName::try_from(n.clone()).map_err(|_| TlsError::ServerName(n.clone())))
        .transpose()?;
    Ok(UpstreamTlsConfig {
        config: Arc::new(config),
        server_name,
    })
}
