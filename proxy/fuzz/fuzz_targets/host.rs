//! The `Host` / `:authority` validator (`parse_authority`) and the choice of one authority per
//! request (`request_authority`) over arbitrary header values, targets and versions.
//!
//! Checks beyond "no panic": an accepted authority is lowercase, has no trailing dot, makes a
//! valid header value, and parses back to itself from that value (the `Host` sent upstream
//! means what was routed); with two `Host` headers the request is always refused.
#![no_main]

use hyper::{HeaderMap, Uri, Version, header::HOST, header::HeaderValue};
use libfuzzer_sys::fuzz_target;
use proxy::http::normalize::{Rejection, parse_authority, request_authority};

fuzz_target!(|data: &[u8]| {
    if let Some(a) = parse_authority(data) {
        assert_eq!(a.host, a.host.to_ascii_lowercase());
        assert!(!a.host.ends_with('.'), "{a:?}");
        let v = a.header_value();
        assert_eq!(parse_authority(v.as_bytes()), Some(a.clone()), "{v:?}");
    }
    // Split the input: version selector, a Host value, a request target.
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.splitn(2, |&b| b == b'\n');
    let host = parts.next().unwrap_or(b"");
    let target = parts.next().unwrap_or(b"/");
    let version = match sel % 3 {
        0 => Version::HTTP_10,
        1 => Version::HTTP_11,
        _ => Version::HTTP_2,
    };
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    let mut headers = HeaderMap::new();
    if sel & 0x10 == 0 {
        if let Ok(v) = HeaderValue::from_bytes(host) {
            headers.append(HOST, v.clone());
            if sel & 0x20 != 0 {
                headers.append(HOST, v);
                assert_eq!(
                    request_authority(version, &uri, &headers),
                    Err(Rejection::DuplicateHost)
                );
                return;
            }
        }
    }
    if let Ok(Some(a)) = request_authority(version, &uri, &headers) {
        let v = a.header_value();
        assert_eq!(parse_authority(v.as_bytes()), Some(a));
    }
});
