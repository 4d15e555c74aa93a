//! A minimal blocking HTTP/1.1 client: one request per connection, so every call exercises a
//! new TCP handshake (which is what the packet filter sees).
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use crate::netns::run_in;

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Reply {
    /// The value of header `name` (case-insensitive), if present.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

/// `GET path` on a new connection; the connect itself times out after `timeout`.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<Reply> {
    get_within(addr, path, timeout, Duration::from_secs(5))
}

/// [`get`] whose every read also times out after `read_timeout` (an error of kind
/// `TimedOut` or `WouldBlock`): a connection whose packets start being dropped after its
/// handshake shows as dropped too, instead of waiting out its retransmissions.
pub fn get_within(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
    read_timeout: Duration,
) -> std::io::Result<Reply> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(read_timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test.example\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("no complete response: {text:?}"),
        )
    })?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad status line: {head:?}"),
            )
        })?;
    Ok(Reply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}

/// [`get`] from inside network namespace `ns`.
pub fn get_in(ns: &str, addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<Reply> {
    let path = path.to_owned();
    run_in(ns, move || get(addr, &path, timeout))
}

/// [`get_within`] from inside network namespace `ns`.
pub fn get_within_in(
    ns: &str,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> std::io::Result<Reply> {
    let path = path.to_owned();
    run_in(ns, move || get_within(addr, &path, timeout, timeout))
}

/// Opens a keep-alive connection from namespace `ns`, completes one `GET /` on it, and returns
/// it still open (a long-lived, idle client connection).
pub fn open_keepalive_in(ns: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    run_in(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET / HTTP/1.1\r\nHost: test.example\r\n\r\n")?;
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed before the response ended",
                ));
            }
            raw.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&raw);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>())
                    })
                    .and_then(Result::ok)
                    .unwrap_or(0);
                if body.len() >= len {
                    return Ok(s);
                }
            }
        }
    })
}
