//! Writing message heads: the request or status line and the header lines, appended to one
//! buffer. Nothing is added (no `Date`, no framing headers, no `Connection`): the caller's
//! headers are the head. Names are written as `http` keeps them (lowercase); values are
//! `HeaderValue`s, which cannot hold CR, LF or NUL, so a header line cannot be split.
use hyper::{HeaderMap, Method, StatusCode, Version};

use super::H1Error;

/// Appends `METHOD target HTTP/1.1`, the header lines and the empty line to `out`. The target
/// must not be empty, and must not hold a space, a control character or DEL, which would
/// change the request line; bytes above 0x7F pass, as `http::Uri` (and so hyper) lets them
/// through. On error nothing is appended.
pub fn write_request_head(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    out: &mut Vec<u8>,
) -> Result<(), H1Error> {
    if target.is_empty() || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(H1Error::UnwritableTarget);
    }
    out.reserve(method.as_str().len() + target.len() + 12 + headers_len(headers));
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    write_headers(headers, out);
    Ok(())
}

/// An interim (1xx) answer from a server as the head to pass on to a client: the status with
/// its canonical reason and the fields, less those of the hop (`Connection` and the fields
/// it names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`,
/// `Upgrade`) and `Content-Length` (an interim answer has no content).
#[must_use]
pub fn interim_head(head: &super::ResponseHead) -> bytes::Bytes {
    use hyper::header;
    let named: Vec<String> = head
        .values(&header::CONNECTION)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    let mut fields = HeaderMap::with_capacity(head.headers.len());
    for (name, value) in &head.headers {
        let hop = matches!(
            *name,
            header::CONNECTION
                | header::TE
                | header::TRAILER
                | header::TRANSFER_ENCODING
                | header::UPGRADE
                | header::CONTENT_LENGTH
        ) || name.as_str() == "keep-alive"
            || name.as_str() == "proxy-connection"
            || named.iter().any(|n| n == name.as_str());
        if !hop {
            fields.append(name.clone(), value.clone());
        }
    }
    let mut out = Vec::with_capacity(64 + headers_len(&fields));
    // An informational status always has a version and a code to write.
    let _ = write_response_head(Version::HTTP_11, head.status, &fields, &mut out);
    out.into()
}

/// Appends `HTTP/1.x code reason`, the header lines and the empty line to `out`. The reason
/// is the status's canonical one (empty for codes without one). Only HTTP/1.0 and HTTP/1.1
/// can be written; on error nothing is appended.
pub fn write_response_head(
    version: Version,
    status: StatusCode,
    headers: &HeaderMap,
    out: &mut Vec<u8>,
) -> Result<(), H1Error> {
    let version: &[u8] = match version {
        Version::HTTP_11 => b"HTTP/1.1 ",
        Version::HTTP_10 => b"HTTP/1.0 ",
        _ => return Err(H1Error::UnwritableVersion),
    };
    let reason = status.canonical_reason().unwrap_or("");
    out.reserve(version.len() + 6 + reason.len() + headers_len(headers));
    out.extend_from_slice(version);
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    write_headers(headers, out);
    Ok(())
}

fn headers_len(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + 2
}

fn write_headers(headers: &HeaderMap, out: &mut Vec<u8>) {
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use hyper::header::{HeaderValue, TRANSFER_ENCODING};

    use super::*;
    use crate::h1::{Limits, parse_request, parse_response};

    fn headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("a.test"));
        h.append("x-two", HeaderValue::from_static("1"));
        h.append("x-two", HeaderValue::from_static("2"));
        h.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h
    }

    #[test]
    fn request_heads() {
        let mut out = b"previous".to_vec();
        write_request_head(&Method::POST, "/a?b", &headers(), &mut out).unwrap();
        assert_eq!(
            out,
            b"previousPOST /a?b HTTP/1.1\r\nhost: a.test\r\nx-two: 1\r\nx-two: 2\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let (head, n) = parse_request(&out[8..], &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(n, out.len() - 8);
        assert_eq!(head.to_header_map(), headers());
        let mut out = Vec::new();
        write_request_head(&Method::GET, "*", &HeaderMap::new(), &mut out).unwrap();
        assert_eq!(out, b"GET * HTTP/1.1\r\n\r\n");
        out.clear();
        write_request_head(&Method::GET, "/café", &HeaderMap::new(), &mut out).unwrap();
        assert_eq!(out, "GET /café HTTP/1.1\r\n\r\n".as_bytes());
    }

    #[test]
    fn unwritable_targets() {
        for target in ["", "/a b", "/a\r\nX: y", "/\t", "/\0", "/\x7f"] {
            let mut out = Vec::new();
            assert_eq!(
                write_request_head(&Method::GET, target, &HeaderMap::new(), &mut out),
                Err(H1Error::UnwritableTarget),
                "{target:?}"
            );
            assert!(out.is_empty());
        }
    }

    #[test]
    fn response_heads() {
        let mut out = Vec::new();
        write_response_head(
            Version::HTTP_11,
            StatusCode::NOT_FOUND,
            &headers(),
            &mut out,
        )
        .unwrap();
        assert!(out.starts_with(b"HTTP/1.1 404 Not Found\r\nhost: a.test\r\n"));
        let (head, n) = parse_response(&out, &Limits::UPSTREAM).unwrap().unwrap();
        assert_eq!((n, head.status.as_u16()), (out.len(), 404));
        assert_eq!(head.to_header_map(), headers());
        let mut out = Vec::new();
        let odd = StatusCode::from_u16(599).unwrap();
        write_response_head(Version::HTTP_10, odd, &HeaderMap::new(), &mut out).unwrap();
        assert_eq!(out, b"HTTP/1.0 599 \r\n\r\n");
        for version in [Version::HTTP_09, Version::HTTP_2] {
            let mut out = Vec::new();
            assert_eq!(
                write_response_head(version, StatusCode::OK, &HeaderMap::new(), &mut out),
                Err(H1Error::UnwritableVersion)
            );
            assert!(out.is_empty());
        }
    }
}
