//! Forwarding one request to an upstream server and relaying its response.
use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::{Request, Response, StatusCode, Uri, body::Incoming, header};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tracing::{debug, warn};

use super::headers::{append_forwarded_for, strip_hop_by_hop};
use crate::upstream::Pool;

/// The body type of every response the proxy sends.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// What a listener forwards to, and how.
pub struct Forwarder {
    pool: Arc<Pool>,
    client: Client<HttpConnector, Incoming>,
}

impl Forwarder {
    #[must_use]
    pub fn new(pool: Arc<Pool>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(pool.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .build(connector);
        Self { pool, client }
    }

    /// Forwards `req` from `client_addr`; never fails: upstream trouble becomes 502 or 504.
    pub async fn forward(
        &self,
        mut req: Request<Incoming>,
        client_addr: SocketAddr,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let server = self.pool.pick();
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let uri: Uri = match format!("http://{server}{path}").parse() {
            Ok(u) => u,
            Err(_) => {
                return Ok(error_response(
                    StatusCode::BAD_REQUEST,
                    "invalid request target",
                ));
            }
        };
        // An absolute-form request target carries the host; keep it as the Host header.
        if !req.headers().contains_key(header::HOST)
            && let Some(authority) = req.uri().authority().cloned()
            && let Ok(v) = header::HeaderValue::from_str(authority.as_str())
        {
            req.headers_mut().insert(header::HOST, v);
        }
        *req.uri_mut() = uri;
        strip_hop_by_hop(req.headers_mut());
        append_forwarded_for(req.headers_mut(), client_addr.ip());

        let sent = tokio::time::timeout(self.pool.response_timeout, self.client.request(req)).await;
        match sent {
            Ok(Ok(mut resp)) => {
                strip_hop_by_hop(resp.headers_mut());
                Ok(resp.map(BodyExt::boxed))
            }
            Ok(Err(e)) => {
                warn!(upstream = self.pool.name(), %server, "upstream request failed: {e}");
                Ok(error_response(
                    StatusCode::BAD_GATEWAY,
                    "the upstream server could not be reached or sent an invalid response",
                ))
            }
            Err(_) => {
                debug!(upstream = self.pool.name(), %server, "upstream response timed out");
                Ok(error_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the upstream server did not answer in time",
                ))
            }
        }
    }
}

/// A short plain-text error page; it never names the upstream's address.
#[must_use]
pub fn error_response(status: StatusCode, detail: &str) -> Response<ProxyBody> {
    let body = format!(
        "{} {}: {detail}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(
            Full::new(Bytes::from(body))
                .map_err(|never| match never {})
                .boxed(),
        )
        .expect("static parts are valid")
}
