//! One meaning per request, decided before anything looks at it: the authority (RFC 9112 §3.2,
//! RFC 9113 §8.3.1) and the path (RFC 3986 §6.2.2, §5.2.4).
//!
//! The routed host, the access check, the limit keys, the cache key and the `Host` sent
//! upstream all come from [`Authority`]; routing, deny patterns, the cache key and (by default)
//! the upstream all see the path [`normalize_path`] returns. A request that could be read two
//! ways is refused with 400 rather than guessed at.
pub use crate::authority::{Authority, parse_authority};
pub use crate::config::EscapedSlashes;
use std::borrow::Cow;

use hyper::{
    HeaderMap, Method, Uri, Version,
    header::{CONTENT_LENGTH, HOST, HeaderValue, TRANSFER_ENCODING},
};

/// Why a request was refused before routing (each becomes a `400`, except `Connect`: `405`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the request has more than one Host header")]
    DuplicateHost,
    #[error("an HTTP/1.1 request needs a Host header")]
    MissingHost,
    #[error("the Host header is not a host name or address with an optional port")]
    InvalidHost,
    #[error("the request target's authority is not a host name or address with an optional port")]
    InvalidAuthority,
    #[error("the request target carries user information (user@host), which is not allowed")]
    UserInfo,
    #[error("the Host header differs from the request's :authority")]
    AuthorityMismatch,
    #[error("the request path must start with '/'")]
    NotOriginForm,
    #[error("the request path contains an invalid percent-encoding")]
    BadPercentEncoding,
    #[error("the request path contains NUL or a control character")]
    ControlCharacter,
    #[error("the request path contains an encoded '/' or a '\\', which this listener refuses")]
    EscapedSlash,
    #[error("the request path climbs above the root with '..'")]
    AboveRoot,
    #[error(
        "a '.' or '..' path segment carries parameters (';'), which origins read as a dot segment"
    )]
    DotSegmentParameters,
    #[error("CONNECT is not supported: this is a reverse proxy")]
    Connect,
    #[error(
        "the request has both Transfer-Encoding and Content-Length, or Content-Length values that differ"
    )]
    AmbiguousFraming,
    #[error("the request's Transfer-Encoding is not \"chunked\" alone, or is sent with HTTP/1.0")]
    TransferEncoding,
}

/// The one authority of a request. `Ok(None)` only for an HTTP/1.0 request without any.
///
/// - More than one `Host`, or a `Host` that does not parse: refused (RFC 9112 §3.2).
/// - HTTP/1.1 without `Host`: refused, even with an absolute-form target.
/// - An absolute-form target (HTTP/1) or `:authority` (HTTP/2) wins over `Host`; user
///   information in it is refused. In HTTP/2 a `host` that names another authority than
///   `:authority` is refused (RFC 9113 §8.3.1).
pub fn request_authority(
    version: Version,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Option<Authority>, Rejection> {
    let mut hosts = headers.get_all(HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(Rejection::DuplicateHost);
    }
    let host = host_header
        .map(|h| parse_authority(h.as_bytes()).ok_or(Rejection::InvalidHost))
        .transpose()?;
    let target = match uri.authority() {
        Some(a) => {
            if a.as_str().contains('@') {
                return Err(Rejection::UserInfo);
            }
            Some(parse_authority(a.as_str().as_bytes()).ok_or(Rejection::InvalidAuthority)?)
        }
        None => None,
    };
    match (version, target, host) {
        (Version::HTTP_2 | Version::HTTP_3, Some(t), Some(h)) => {
            if same_authority(&t, &h) {
                Ok(Some(t))
            } else {
                Err(Rejection::AuthorityMismatch)
            }
        }
        (Version::HTTP_2 | Version::HTTP_3, None, None) | (Version::HTTP_11, _, None) => {
            Err(Rejection::MissingHost)
        }
        (_, Some(t), _) => Ok(Some(t)),
        (_, None, h) => Ok(h),
    }
}

/// `:authority` and `host` agree when they name the same host; a port given on one side only
/// is taken to be the scheme's default.
fn same_authority(a: &Authority, b: &Authority) -> bool {
    a.host == b.host && (a.port == b.port || a.port.is_none() || b.port.is_none())
}

const fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Whether the path may need any work (one scan; most paths need none and are not copied).
fn needs_work(p: &[u8]) -> bool {
    p.iter()
        .any(|&b| b == b'%' || b == b'\\' || b.is_ascii_control())
        || p.windows(2).any(|w| w == b"//" || w == b"/.")
}

/// Normalises an origin-form path (without the query): percent-encoded unreserved characters
/// decoded (other escapes kept, with upper-case hex), `%2F`/`%5C`/`\` handled as `slashes`
/// says, repeated slashes merged, `.` and `..` segments resolved. NUL, control characters,
/// invalid escapes and a path that climbs above `/` are refused.
pub fn normalize_path(path: &str, slashes: EscapedSlashes) -> Result<Cow<'_, str>, Rejection> {
    let raw = path.as_bytes();
    if raw.first() != Some(&b'/') {
        return Err(Rejection::NotOriginForm);
    }
    if !needs_work(raw) {
        return Ok(Cow::Borrowed(path));
    }
    // Pass 1: decode, keeping segment separators distinct from encoded bytes.
    let mut decoded: Vec<u8> = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        match b {
            b'%' => {
                let (Some(high), Some(low)) = (
                    raw.get(i + 1).copied().and_then(hex),
                    raw.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(Rejection::BadPercentEncoding);
                };
                let v = high << 4 | low;
                if v.is_ascii_control() {
                    return Err(Rejection::ControlCharacter);
                }
                if v == b'/' || v == b'\\' {
                    match slashes {
                        EscapedSlashes::Reject => return Err(Rejection::EscapedSlash),
                        EscapedSlashes::Decode => decoded.push(b'/'),
                        EscapedSlashes::Keep => {
                            decoded.extend_from_slice(if v == b'/' { b"%2F" } else { b"%5C" });
                        }
                    }
                } else if is_unreserved(v) {
                    decoded.push(v);
                } else {
                    decoded.push(b'%');
                    decoded.push(raw[i + 1].to_ascii_uppercase());
                    decoded.push(raw[i + 2].to_ascii_uppercase());
                }
                i += 3;
                continue;
            }
            b'\\' => match slashes {
                EscapedSlashes::Reject => return Err(Rejection::EscapedSlash),
                EscapedSlashes::Decode => decoded.push(b'/'),
                EscapedSlashes::Keep => decoded.push(b'\\'),
            },
            _ if b.is_ascii_control() => return Err(Rejection::ControlCharacter),
            _ => decoded.push(b),
        }
        i += 1;
    }
    // Pass 2: segments (RFC 3986 §5.2.4), empty ones merged away.
    let mut segments: Vec<&[u8]> = Vec::new();
    let mut trailing = false;
    for seg in decoded.split(|&b| b == b'/').skip(1) {
        trailing = false;
        // `..;x` is `..` to Tomcat, Jetty and Spring: never a name.
        if seg.contains(&b';') {
            let base = seg.split(|&b| b == b';').next().unwrap_or(b"");
            if base == b"." || base == b".." {
                return Err(Rejection::DotSegmentParameters);
            }
        }
        match seg {
            b"" | b"." => trailing = true,
            b".." => {
                if segments.pop().is_none() {
                    return Err(Rejection::AboveRoot);
                }
                trailing = true;
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        // Every byte is from a valid &str, or ASCII we produced; a multi-byte character is
        // never split (only ASCII separators are).
        out.push_str(std::str::from_utf8(s).map_err(|_| Rejection::BadPercentEncoding)?);
    }
    if segments.is_empty() || trailing {
        out.push('/');
    }
    if out == path {
        Ok(Cow::Borrowed(path))
    } else {
        Ok(Cow::Owned(out))
    }
}

/// The path as routes and deny patterns match it: each segment without its `;` parameters
/// (`/admin;x/a` is `/admin/a`, as Java servlet containers read it), so a route's path prefix
/// and its access rules cannot be stepped around with parameters. The upstream still gets the
/// path with them.
#[must_use]
pub fn match_path(path: &str) -> Cow<'_, str> {
    if !path.contains(';') {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(seg.split(';').next().unwrap_or(""));
    }
    Cow::Owned(out)
}

/// One message framing (RFC 9112 §6): a request with `Transfer-Encoding` has exactly
/// `chunked` and no `Content-Length` (and is HTTP/1.1); `Content-Length` values, however many
/// lines or list items, are one number, sent on as one header.
pub fn check_framing(version: Version, headers: &mut HeaderMap) -> Result<(), Rejection> {
    let mut te = headers.get_all(TRANSFER_ENCODING).iter();
    if let Some(first) = te.next() {
        if te.next().is_some()
            || !first.as_bytes().eq_ignore_ascii_case(b"chunked")
            || version != Version::HTTP_11
        {
            return Err(Rejection::TransferEncoding);
        }
        if headers.contains_key(CONTENT_LENGTH) {
            return Err(Rejection::AmbiguousFraming);
        }
        return Ok(());
    }
    let mut lengths = headers.get_all(CONTENT_LENGTH).iter();
    let Some(first) = lengths.next() else {
        return Ok(());
    };
    let single = lengths.next().is_none() && first.as_bytes().iter().all(u8::is_ascii_digit);
    if single {
        return Ok(());
    }
    let mut value: Option<&[u8]> = None;
    for v in headers.get_all(CONTENT_LENGTH) {
        for item in v.as_bytes().split(|&b| b == b',') {
            let item = item.trim_ascii();
            if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
                return Err(Rejection::AmbiguousFraming);
            }
            match value {
                Some(seen) if seen != item => return Err(Rejection::AmbiguousFraming),
                _ => value = Some(item),
            }
        }
    }
    let value = HeaderValue::from_bytes(value.ok_or(Rejection::AmbiguousFraming)?)
        .map_err(|_| Rejection::AmbiguousFraming)?;
    headers.insert(CONTENT_LENGTH, value);
    Ok(())
}

/// The request as the rest of the proxy sees it: its authority checked and made the only one
/// (the `Host` header, set to the canonical value; the target in origin form) and its path
/// normalised. Returns the authority and the original path and query when they changed.
pub fn canonicalize(
    method: &Method,
    version: Version,
    uri: &mut Uri,
    headers: &mut HeaderMap,
    slashes: EscapedSlashes,
) -> Result<Option<Authority>, Rejection> {
    if method == Method::CONNECT {
        return Err(Rejection::Connect);
    }
    // HTTP/2 too: h2 refuses Transfer-Encoding itself, and repeated equal content-length
    // fields go upstream as one.
    check_framing(version, headers)?;
    let authority = request_authority(version, uri, headers)?;
    let path = uri.path();
    let asterisk = path == "*" && method == Method::OPTIONS;
    let normalized = if asterisk {
        Cow::Borrowed(path)
    } else {
        normalize_path(path, slashes)?
    };
    let origin_form = uri.scheme().is_none() && uri.authority().is_none();
    if !origin_form || matches!(normalized, Cow::Owned(_)) {
        let text = match uri.query() {
            Some(q) => format!("{normalized}?{q}"),
            None => normalized.into_owned(),
        };
        *uri = Uri::try_from(text).map_err(|_| Rejection::BadPercentEncoding)?;
    }
    match &authority {
        Some(a) => {
            let written = headers
                .get(HOST)
                .is_some_and(|h| a.is_written_as(h.as_bytes()));
            if !written {
                headers.insert(HOST, a.header_value());
            }
        }
        None => {
            headers.remove(HOST);
        }
    }
    Ok(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, Rejection> {
        normalize_path(p, EscapedSlashes::Reject).map(Cow::into_owned)
    }

    #[test]
    fn paths_that_mean_admin_all_become_admin() {
        for p in [
            "/admin/x",
            "//admin/x",
            "/%61dmin/x",
            "/x/../admin/x",
            "/./admin/x",
            "/%2e/admin/x",
            "/a/%2E%2e/admin/x",
            "/admin//x",
            "///admin/./x",
        ] {
            assert_eq!(norm(p).as_deref(), Ok("/admin/x"), "{p}");
        }
    }

    #[test]
    fn paths_keep_their_meaning() {
        assert_eq!(norm("/").as_deref(), Ok("/"));
        assert_eq!(norm("/a/b/").as_deref(), Ok("/a/b/"));
        assert_eq!(norm("/a/b/..").as_deref(), Ok("/a/"));
        assert_eq!(norm("/a/.").as_deref(), Ok("/a/"));
        assert_eq!(norm("/a//").as_deref(), Ok("/a/"));
        assert_eq!(norm("/..%2x").unwrap_err(), Rejection::BadPercentEncoding);
        assert_eq!(
            norm("/a%20b").as_deref(),
            Ok("/a%20b"),
            "reserved stays encoded"
        );
        assert_eq!(
            norm("/a%3fb").as_deref(),
            Ok("/a%3Fb"),
            "hex case normalised"
        );
        assert_eq!(norm("/caf%C3%A9").as_deref(), Ok("/caf%C3%A9"));
        assert_eq!(norm("/caf\u{e9}/./x").as_deref(), Ok("/caf\u{e9}/x"));
        assert!(matches!(
            normalize_path("/plain/path", EscapedSlashes::Reject),
            Ok(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn bad_paths_are_refused() {
        assert_eq!(norm("/.."), Err(Rejection::AboveRoot));
        assert_eq!(norm("/a/../../b"), Err(Rejection::AboveRoot));
        assert_eq!(norm("/%2e%2e/etc"), Err(Rejection::AboveRoot));
        assert_eq!(norm("/a%00b"), Err(Rejection::ControlCharacter));
        assert_eq!(norm("/a%0Db"), Err(Rejection::ControlCharacter));
        assert_eq!(norm("/a%7fb"), Err(Rejection::ControlCharacter));
        assert_eq!(norm("/a\tb"), Err(Rejection::ControlCharacter));
        assert_eq!(norm("/a%"), Err(Rejection::BadPercentEncoding));
        assert_eq!(norm("/a%g1"), Err(Rejection::BadPercentEncoding));
        assert_eq!(norm("a/b"), Err(Rejection::NotOriginForm));
        assert_eq!(norm(""), Err(Rejection::NotOriginForm));
    }

    #[test]
    fn path_parameters() {
        for p in [
            "/public/..;/admin/x",
            "/a/.;x/b",
            "/%2e%2e;/admin",
            "/a/..;jsessionid=1",
        ] {
            assert_eq!(norm(p), Err(Rejection::DotSegmentParameters), "{p}");
        }
        assert_eq!(
            norm("/a;b/c").as_deref(),
            Ok("/a;b/c"),
            "kept for the upstream"
        );
        assert_eq!(match_path("/admin;x/secret"), "/admin/secret");
        assert_eq!(match_path("/a;b;c/d;e/"), "/a/d/");
        assert!(matches!(match_path("/plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn escaped_slashes_follow_the_listener_choice() {
        let p = "/admin%2F..%2Fx\\y";
        assert_eq!(
            normalize_path(p, EscapedSlashes::Reject),
            Err(Rejection::EscapedSlash)
        );
        assert_eq!(
            normalize_path("/a%5cb", EscapedSlashes::Reject),
            Err(Rejection::EscapedSlash)
        );
        assert_eq!(
            normalize_path(p, EscapedSlashes::Keep).unwrap(),
            "/admin%2F..%2Fx\\y"
        );
        assert_eq!(normalize_path(p, EscapedSlashes::Decode).unwrap(), "/x/y");
        assert_eq!(
            normalize_path("/%2F%2Fadmin", EscapedSlashes::Decode).unwrap(),
            "/admin"
        );
    }

    fn auth(s: &str) -> Option<Authority> {
        parse_authority(s.as_bytes())
    }

    #[test]
    fn hosts_parse_strictly() {
        assert_eq!(
            auth("WWW.Test."),
            Some(Authority {
                host: "www.test".into(),
                port: None
            })
        );
        assert_eq!(auth("www.test:8080").unwrap().port, Some(8080));
        assert_eq!(auth("www.test:").unwrap().port, None);
        let a = auth("www.test:8080").unwrap();
        assert!(a.is_written_as(b"www.test:8080"));
        assert!(!a.is_written_as(b"WWW.test:8080") && !a.is_written_as(b"www.test:080"));
        assert!(!a.is_written_as(b"www.test"));
        assert!(auth("www.test").unwrap().is_written_as(b"www.test"));
        assert!(!auth("www.test.").unwrap().is_written_as(b"www.test."));
        assert_eq!(auth("192.0.2.1:80").unwrap().host, "192.0.2.1");
        assert_eq!(auth("[::1]:8443").unwrap().host, "[::1]");
        assert_eq!(auth("[2001:DB8::1]").unwrap().host, "[2001:db8::1]");
        for bad in [
            "",
            "www.test x",
            "www.test/a",
            "evil@admin.test",
            "a..b",
            ".a",
            "a.test..",
            "www.test:99999",
            "www.test:80:80",
            "www.test:8a",
            "[::1",
            "[::1]x",
            "[zz]",
            "exa\u{e9}mple",
            "a\tb",
            "www.test:123456",
        ] {
            assert!(auth(bad).is_none(), "{bad:?}");
        }
    }

    fn headers(hosts: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in hosts {
            h.append(HOST, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn one_authority_per_request() {
        let origin: Uri = "/x".parse().unwrap();
        let absolute: Uri = "http://www.test/x".parse().unwrap();
        let h11 = Version::HTTP_11;
        // Absolute form wins over Host.
        let a = request_authority(h11, &absolute, &headers(&["admin.test"])).unwrap();
        assert_eq!(a.unwrap().host, "www.test");
        assert_eq!(
            request_authority(h11, &origin, &headers(&["a.test", "b.test"])),
            Err(Rejection::DuplicateHost)
        );
        assert_eq!(
            request_authority(h11, &origin, &HeaderMap::new()),
            Err(Rejection::MissingHost)
        );
        assert_eq!(
            request_authority(h11, &absolute, &HeaderMap::new()),
            Err(Rejection::MissingHost)
        );
        assert_eq!(
            request_authority(Version::HTTP_10, &origin, &HeaderMap::new()),
            Ok(None)
        );
        assert_eq!(
            request_authority(h11, &origin, &headers(&["evil@admin.test"])),
            Err(Rejection::InvalidHost)
        );
        let userinfo: Uri = "http://evil@admin.test/".parse().unwrap();
        assert_eq!(
            request_authority(h11, &userinfo, &headers(&["admin.test"])),
            Err(Rejection::UserInfo)
        );
        // HTTP/2: host must agree with :authority.
        let h2 = Version::HTTP_2;
        assert_eq!(
            request_authority(h2, &absolute, &headers(&["admin.test"])),
            Err(Rejection::AuthorityMismatch)
        );
        assert!(request_authority(h2, &absolute, &headers(&["WWW.test"])).is_ok());
        assert!(request_authority(h2, &absolute, &HeaderMap::new()).is_ok());
        assert_eq!(
            request_authority(h2, &origin, &HeaderMap::new()),
            Err(Rejection::MissingHost)
        );
    }

    #[test]
    fn one_framing() {
        let h = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.append(
                    hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            m
        };
        let v11 = Version::HTTP_11;
        let te = "transfer-encoding";
        let cl = "content-length";
        assert!(check_framing(v11, &mut h(&[(te, "chunked")])).is_ok());
        assert!(check_framing(v11, &mut h(&[(te, "Chunked")])).is_ok());
        for bad in [
            vec![(te, "chunked"), (cl, "3")],
            vec![(te, "chunked"), (te, "chunked")],
            vec![(te, "gzip, chunked")],
            vec![(te, "chunked, identity")],
            vec![(cl, "3"), (cl, "4")],
            vec![(cl, "3, 4")],
            vec![(cl, "3,")],
            vec![(cl, "+3")],
        ] {
            assert!(check_framing(v11, &mut h(&bad)).is_err(), "{bad:?}");
        }
        assert_eq!(
            check_framing(Version::HTTP_10, &mut h(&[(te, "chunked")])),
            Err(Rejection::TransferEncoding)
        );
        let mut twice = h(&[(cl, "3"), (cl, "3, 3")]);
        check_framing(v11, &mut twice).unwrap();
        assert_eq!(twice.get_all(CONTENT_LENGTH).iter().count(), 1);
        assert_eq!(twice[CONTENT_LENGTH], "3");
    }

    #[test]
    fn canonical_request() {
        let mut uri: Uri = "http://WWW.test:8080/a/./%62?q=%2e".parse().unwrap();
        let mut h = headers(&["admin.test"]);
        let a = canonicalize(
            &Method::GET,
            Version::HTTP_11,
            &mut uri,
            &mut h,
            EscapedSlashes::Reject,
        )
        .unwrap()
        .unwrap();
        assert_eq!(a.host, "www.test");
        assert_eq!(
            uri.to_string(),
            "/a/b?q=%2e",
            "origin form; the query is untouched"
        );
        assert_eq!(h[HOST], "www.test:8080");
        let mut uri: Uri = "/x".parse().unwrap();
        assert_eq!(
            canonicalize(
                &Method::CONNECT,
                Version::HTTP_11,
                &mut uri,
                &mut headers(&["a.test"]),
                EscapedSlashes::Reject
            ),
            Err(Rejection::Connect)
        );
    }
}
