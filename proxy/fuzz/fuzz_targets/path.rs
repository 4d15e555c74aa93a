//! The request path normaliser (`normalize_path`, every `escaped_slashes` choice) and the whole
//! request canonicalisation (`canonicalize`: authority, framing, path) on arbitrary targets.
//!
//! Checks beyond "no panic": an accepted path starts with `/`, has no empty, `.` or `..`
//! segment, no control character, no escape of an unreserved character, is a valid request
//! target, and normalising it again changes nothing; on a rejecting listener no escaped slash
//! or backslash survives.
#![no_main]

use hyper::{HeaderMap, Method, Uri, Version, header::HOST};
use libfuzzer_sys::fuzz_target;
use proxy::http::normalize::{EscapedSlashes, canonicalize, normalize_path};

/// `valid_input`: the input was a valid request target (as every path from hyper is); only
/// then must the output be one too.
fn check(out: &str, slashes: EscapedSlashes, valid_input: bool) {
    assert!(out.starts_with('/'), "{out:?}");
    assert!(!out.contains("//"), "{out:?}");
    for seg in out.split('/').skip(1) {
        assert!(seg != "." && seg != "..", "{out:?}");
    }
    assert!(!out.bytes().any(|b| b.is_ascii_control()), "{out:?}");
    let bytes = out.as_bytes();
    for (i, _) in out.match_indices('%') {
        let hex = &bytes[i + 1..i + 3];
        assert!(hex.iter().all(u8::is_ascii_hexdigit), "{out:?}");
        let v = u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap();
        assert!(
            !(v.is_ascii_alphanumeric() || b"-._~".contains(&v)),
            "unreserved still escaped: {out:?}"
        );
        if slashes == EscapedSlashes::Reject {
            assert!(v != b'/' && v != b'\\', "{out:?}");
        }
    }
    if slashes != EscapedSlashes::Keep {
        assert!(!out.contains('\\'), "{out:?}");
    }
    if valid_input {
        assert!(
            out.parse::<hyper::http::uri::PathAndQuery>().is_ok(),
            "not a valid target: {out:?}"
        );
    }
    let again = normalize_path(out, slashes).expect("a normalised path stays valid");
    assert_eq!(again, out, "not idempotent");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let slashes = match mode % 3 {
        0 => EscapedSlashes::Reject,
        1 => EscapedSlashes::Keep,
        _ => EscapedSlashes::Decode,
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let valid = text
        .parse::<hyper::http::uri::PathAndQuery>()
        .is_ok_and(|p| p.path() == text);
    if let Ok(out) = normalize_path(text, slashes) {
        check(&out, slashes, valid);
    }
    // The same bytes as a whole request target, through the canonicalisation.
    if let Ok(mut uri) = text.parse::<Uri>() {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, hyper::header::HeaderValue::from_static("a.test"));
        if let Ok(Some(authority)) =
            canonicalize(&Method::GET, Version::HTTP_11, &mut uri, &mut headers, slashes)
        {
            assert!(uri.scheme().is_none() && uri.authority().is_none());
            assert_eq!(headers.get_all(HOST).iter().count(), 1);
            assert_eq!(headers[HOST], authority.header_value());
            check(uri.path(), slashes, true);
        }
    }
});
