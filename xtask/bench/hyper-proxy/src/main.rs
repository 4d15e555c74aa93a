//! A minimal HTTP/1.1 reverse proxy on tokio + hyper 1.x: one thread, keep-alive both ways,
//! the pooled hyper-util client to one origin, no other features. It is the floor `bench l7`
//! measures the proxy against: what is left above it is the proxy's own cost.
//!
//! Usage: `bench-hyper-proxy LISTEN_ADDR ORIGIN_ADDR`.
use std::net::SocketAddr;

use hyper::{Request, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use tokio::net::TcpListener;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(origin)) = (args.next(), args.next()) else {
        eprintln!("usage: bench-hyper-proxy LISTEN_ADDR ORIGIN_ADDR");
        std::process::exit(2);
    };
    let listen: SocketAddr = listen.parse().expect("LISTEN_ADDR is IP:PORT");
    let origin: SocketAddr = origin.parse().expect("ORIGIN_ADDR is IP:PORT");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(serve(listen, origin));
}

async fn serve(listen: SocketAddr, origin: SocketAddr) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector);
    let listener = TcpListener::bind(listen)
        .await
        .expect("binding LISTEN_ADDR");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        tokio::spawn(async move {
            let service = service_fn(move |mut req: Request<Incoming>| {
                let path = req
                    .uri()
                    .path_and_query()
                    .map_or("/", hyper::http::uri::PathAndQuery::as_str);
                let uri = format!("http://{origin}{path}");
                *req.uri_mut() = uri.parse().expect("a valid URI");
                client.request(req)
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
