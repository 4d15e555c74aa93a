//! A small origin server for the demo (`cargo xtask run`) and the end-to-end tests.
//!
//! `GET /` answers a short page; `GET /echo` answers the request line and headers as seen by
//! the origin (tests read X-Forwarded-For and check hop-by-hop stripping there); every
//! response carries `X-Origin: <name>` so tests can tell servers apart.
use std::{convert::Infallible, net::SocketAddr};

use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9080")]
    listen: SocketAddr,
    /// Name reported in X-Origin and in the page.
    #[arg(long, default_value = "demo-origin")]
    name: String,
}

async fn handle(
    req: Request<Incoming>,
    name: &'static str,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = if req.uri().path() == "/echo" {
        let mut text = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
        for (k, v) in req.headers() {
            text.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
        }
        text
    } else {
        format!("Hello from {name}: you asked for {}\n", req.uri().path())
    };
    Ok(Response::builder()
        .header("content-type", "text/plain; charset=utf-8")
        .header("x-origin", name)
        .header("connection", "keep-alive, x-origin-private")
        .header("x-origin-private", "must not reach the client")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let name: &'static str = Box::leak(args.name.into_boxed_str());
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!("{name} listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, name));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
