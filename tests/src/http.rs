//! A real HTTP client for the layer-7 tests (hyper): HTTP/1.1 or HTTP/2 (prior knowledge or
//! ALPN), TLS with SNI and a test CA, an optional PROXY header first, run inside a network
//! namespace. Also a test certificate authority (rcgen).
use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Request, StatusCode, Version, client::conn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::{io::AsyncWriteExt, net::TcpStream};

use crate::netns::run_in;

/// How to talk to the proxy.
#[derive(Clone, Default)]
pub struct Client {
    /// HTTP/2 (prior knowledge on plain TCP; offered by ALPN over TLS).
    pub h2: bool,
    /// TLS with this SNI name, trusting this CA (PEM file).
    pub tls: Option<(String, std::path::PathBuf)>,
    /// Bytes sent before anything else (a PROXY header).
    pub preface: Option<Vec<u8>>,
}

/// A response, read to its end.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: String,
    /// The certificate the server presented (TLS only), DER.
    pub peer_cert: Option<Vec<u8>>,
}

impl Reply {
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn tls_config(ca: &Path, h2: bool) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca)? {
        roots.add(c?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = if h2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}

/// Sends `req` on a new connection to `addr` and reads the whole response.
pub async fn send(
    client: &Client,
    addr: SocketAddr,
    req: Request<Full<Bytes>>,
) -> anyhow::Result<Reply> {
    let mut tcp = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr)).await??;
    if let Some(p) = &client.preface {
        tcp.write_all(p).await?;
    }
    let mut peer_cert = None;
    let io: Box<dyn crate::http::Io> = match &client.tls {
        None => Box::new(tcp),
        Some((sni, ca)) => {
            let name = ServerName::try_from(sni.clone())?;
            let stream = tokio_rustls::TlsConnector::from(tls_config(ca, client.h2)?)
                .connect(name, tcp)
                .await?;
            peer_cert = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.as_ref().to_vec());
            Box::new(stream)
        }
    };
    let io = TokioIo::new(io);
    let resp = if client.h2 {
        let (mut sender, connection) = conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(connection);
        sender.send_request(req).await?
    } else {
        let (mut sender, connection) = conn::http1::handshake(io).await?;
        tokio::spawn(connection);
        sender.send_request(req).await?
    };
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await??
        .to_bytes();
    Ok(Reply {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        peer_cert,
    })
}

/// Any byte stream.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

/// A GET of `path` with `Host: host` and extra headers, from namespace `ns`.
pub fn get(
    ns: &str,
    client: &Client,
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Reply> {
    request(ns, client, addr, "GET", host, path, headers, "")
}

/// Any request from namespace `ns` (a fresh single-threaded runtime on a thread in it).
#[expect(
    clippy::too_many_arguments,
    reason = "one parameter per part of the request; the tests spell them out at each call"
)]
pub fn request(
    ns: &str,
    client: &Client,
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<Reply> {
    let client = client.clone();
    let mut builder = Request::builder().method(method);
    builder = if client.h2 {
        let scheme = if client.tls.is_some() {
            "https"
        } else {
            "http"
        };
        builder
            .uri(format!("{scheme}://{host}{path}"))
            .version(Version::HTTP_2)
    } else {
        builder.uri(path).header("host", host)
    };
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let req = builder.body(Full::new(Bytes::from(body.to_owned())))?;
    run_in(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(send(&client, addr, req))
    })
}

/// A test CA and leaf certificates, written as PEM files into `dir`.
pub struct TestPki {
    pub ca_pem: std::path::PathBuf,
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestPki {
    /// A new CA, its certificate written to `dir/ca.pem`.
    ///
    /// # Panics
    ///
    /// If a key or the certificate cannot be made, or the file cannot be written.
    #[must_use]
    pub fn new(dir: &Path) -> Self {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "proxy test CA");
        let cert = params.self_signed(&key).expect("CA certificate");
        let ca_pem = dir.join("ca.pem");
        std::fs::write(&ca_pem, cert.pem()).expect("write CA");
        Self {
            ca_pem,
            ca: rcgen::Issuer::new(params, key),
        }
    }

    /// A leaf certificate for `names`, signed by the CA; returns (cert path, key path).
    ///
    /// # Panics
    ///
    /// If a key or the certificate cannot be made, or the files cannot be written.
    #[expect(
        clippy::must_use_candidate,
        reason = "writes the files; a caller that already knows their paths ignores the result"
    )]
    pub fn leaf(
        &self,
        dir: &Path,
        file: &str,
        names: &[&str],
    ) -> (std::path::PathBuf, std::path::PathBuf) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        let cert = params.signed_by(&key, &self.ca).expect("leaf certificate");
        let (c, k) = (
            dir.join(format!("{file}.pem")),
            dir.join(format!("{file}.key")),
        );
        // Write to a temporary name and rename, as an operator's tooling would.
        std::fs::write(c.with_extension("tmp"), cert.pem()).expect("write cert");
        std::fs::rename(c.with_extension("tmp"), &c).expect("rename cert");
        std::fs::write(k.with_extension("tmpk"), key.serialize_pem()).expect("write key");
        std::fs::rename(k.with_extension("tmpk"), &k).expect("rename key");
        (c, k)
    }
}
