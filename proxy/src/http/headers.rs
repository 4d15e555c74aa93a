//! Header handling that applies to every proxied message (RFC 9110 §7.6.1 and de facto
//! forwarding headers).
use std::net::IpAddr;

use hyper::header::{
    CONNECTION, CONTENT_LENGTH, HOST, HeaderMap, HeaderName, HeaderValue, PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};

/// Hop-by-hop headers: they describe one connection and never cross a proxy. (Names, not
/// strings: a `&str` key is parsed again on every lookup.)
static HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// Removes the hop-by-hop headers, and every header named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names present (a few), instead of a hashed lookup per hop-by-hop
    // name: most messages carry none but `Connection`.
    let mut present = [false; HOP_BY_HOP.len()];
    let mut any = false;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
            any = true;
        }
    }
    if !any {
        return;
    }
    // `Connection` may name extension headers, never the fields that carry the message's one
    // authority and framing (`Connection: host` must not leave the upstream without the Host
    // that was routed).
    if present[0] {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            // The usual options are no fields to look for (`keep-alive` and `upgrade` go
            // below anyway; `Close` is a reserved field name, RFC 9110 §7.6.1); other names
            // only when they are there: the common case allocates nothing.
            .filter(|name| {
                !name.is_empty()
                    && !name.eq_ignore_ascii_case("close")
                    && !name.eq_ignore_ascii_case("keep-alive")
                    && !name.eq_ignore_ascii_case("upgrade")
                    && headers.contains_key(*name)
            })
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .filter(|name| *name != HOST && *name != CONTENT_LENGTH)
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (name, here) in HOP_BY_HOP.iter().zip(present) {
        if here {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Secret, host, content-length"),
        );
        h.insert("host", HeaderValue::from_static("a.test"));
        h.insert("content-length", HeaderValue::from_static("3"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 3);
        assert!(h.contains_key("x-kept"));
        assert_eq!(h["host"], "a.test", "Connection cannot remove the Host");
        assert_eq!(h["content-length"], "3");
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "10.0.100.255",
            "192.168.9.99",
            "2001:db8::1",
            "::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut s = String::new();
            push_ip(&mut s, ip);
            assert_eq!(s, ip.to_string());
        }
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        append_list(&mut h, &X_FORWARDED_FOR, "192.0.2.1".into());
        assert_eq!(h["x-forwarded-for"], "192.0.2.1");
        h.append("x-forwarded-for", HeaderValue::from_static("198.51.100.9"));
        append_list(&mut h, &X_FORWARDED_FOR, "2001:db8::1".into());
        assert_eq!(h["x-forwarded-for"], "192.0.2.1, 198.51.100.9, 2001:db8::1");
    }
}

use crate::{cidr::Cidr, config::ClientAddressFrom};

// ---------------------------------------------------------------- forwarding headers

fn trusted(ip: IpAddr, list: &[Cidr]) -> bool {
    list.iter().any(|c| c.contains(ip))
}

/// The address in a `Forwarded` `for=` value: `192.0.2.1`, `192.0.2.1:80`,
/// `"[2001:db8::1]:80"`; `None` for `unknown`, obfuscated names and anything else.
fn forwarded_for(value: &str) -> Option<IpAddr> {
    let v = value.trim().trim_matches('"');
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let host = match v.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => v,
    };
    host.parse().ok()
}

/// The hops a trusted proxy reported in the header `from` names, nearest last. `None`
/// stands for an entry that is not an address (the walk stops there).
fn reported_hops(headers: &HeaderMap, from: ClientAddressFrom) -> Vec<Option<IpAddr>> {
    match from {
        // Some balancers write `ip:port` (or `[v6]:port`): the same parser as `for=` reads them.
        ClientAddressFrom::XForwardedFor => headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("?").split(','))
            .map(forwarded_for)
            .collect(),
        ClientAddressFrom::Forwarded => headers
            .get_all(&FORWARDED)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("?").split(','))
            .map(|element| {
                element.split(';').find_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| forwarded_for(v))?
                })
            })
            .collect(),
    }
}

/// The real client address, in canonical form (an IPv4-mapped IPv6 address as IPv4): the
/// peer, unless the peer is a trusted proxy; then the nearest reported hop that is not
/// trusted. An entry that is not an address ends the walk at the last trusted hop, so a
/// client cannot hide behind garbage.
#[must_use]
pub fn client_ip(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted_proxies: &[Cidr],
    from: ClientAddressFrom,
) -> IpAddr {
    let mut client = peer.to_canonical();
    if !trusted(client, trusted_proxies) {
        return client;
    }
    for hop in reported_hops(headers, from).into_iter().rev() {
        let Some(ip) = hop else {
            return client;
        };
        client = ip.to_canonical();
        if !trusted(client, trusted_proxies) {
            return client;
        }
    }
    client
}

/// What the forwarding headers say about one request.
pub struct Forwarding<'a> {
    /// The TCP peer (after the PROXY protocol).
    pub peer: IpAddr,
    pub scheme: &'a str,
    /// The request's one authority, as the `Host` sent upstream (empty: none).
    pub host: &'a HeaderValue,
    /// This proxy's `Via` entry for the request's version (`1.1 name`).
    pub via: &'a HeaderValue,
    pub request_id: &'a HeaderValue,
    pub trusted_proxies: &'a [Cidr],
}

/// Sets X-Forwarded-For/-Proto/-Host, RFC 7239 `Forwarded`, `Via` and `X-Request-Id`. Values
/// that arrived from a peer that is not a trusted proxy are dropped first (they are spoofable).
pub fn set_forwarding(headers: &mut HeaderMap, f: &Forwarding<'_>) {
    let spoofable = [
        &X_FORWARDED_FOR,
        &X_FORWARDED_PROTO,
        &X_FORWARDED_HOST,
        &FORWARDED,
    ];
    // A request from a client (not a trusted proxy) rarely has any of these: one pass over
    // its names decides whether any must go.
    if !trusted(f.peer, f.trusted_proxies) && headers.keys().any(|k| spoofable.contains(&k)) {
        for name in spoofable {
            headers.remove(name);
        }
    }
    // The address is written once, for `Forwarded` and then `X-Forwarded-For`.
    let mut ip = String::with_capacity(40);
    push_ip(&mut ip, f.peer);
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        let proto = if f.scheme == "https" { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    }
    if !f.host.is_empty() && !headers.contains_key(&X_FORWARDED_HOST) {
        headers.insert(X_FORWARDED_HOST.clone(), f.host.clone());
    }
    let mut element = String::with_capacity(64);
    element.push_str("for=");
    if f.peer.is_ipv4() {
        element.push_str(&ip);
    } else {
        element.push_str("\"[");
        element.push_str(&ip);
        element.push_str("]\"");
    }
    element.push_str(";proto=");
    element.push_str(f.scheme);
    if !f.host.is_empty()
        && f.host
            .as_bytes()
            .iter()
            .all(|&b| b.is_ascii_graphic() && b != b'"' && b != b';' && b != b',')
    {
        element.push_str(";host=");
        element.push_str(f.host.to_str().unwrap_or(""));
    }
    append_list(headers, &FORWARDED, element);
    append_list(headers, &X_FORWARDED_FOR, ip);
    append_via(headers, f.via);
    if !headers.contains_key(&X_REQUEST_ID) {
        headers.insert(X_REQUEST_ID.clone(), f.request_id.clone());
    }
}

/// Appends this proxy's entry (`1.1 name`, made once per config generation) to `Via`: the
/// common case, no `Via` yet, copies nothing.
pub fn append_via(headers: &mut HeaderMap, via: &HeaderValue) {
    if headers.contains_key(&VIA) {
        append_list(headers, &VIA, via.to_str().unwrap_or("").to_owned());
    } else {
        headers.insert(VIA.clone(), via.clone());
    }
}

/// Appends an address as text: IPv4 by hand (the common case, several times cheaper than
/// `Display`), IPv6 by `Display`.
pub fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => {
            for (i, octet) in a.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        IpAddr::V6(a) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{a}");
        }
    }
}

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
pub static VIA: HeaderName = HeaderName::from_static("via");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A header value that takes over the string's buffer (no copy); `None` if not valid.
#[must_use]
pub fn owned_value(text: String) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text)).ok()
}

/// Appends `item` to a comma-separated list header (one header line). The common case, no
/// such header yet, costs one insert.
pub fn append_list(headers: &mut HeaderMap, name: &HeaderName, item: String) {
    if !headers.contains_key(name) {
        if let Some(v) = owned_value(item) {
            headers.insert(name.clone(), v);
        }
        return;
    }
    let prior: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if let Some(v) = owned_value(format!("{}, {item}", prior.join(", "))) {
        headers.insert(name.clone(), v);
    }
}

#[cfg(test)]
mod rule_tests {
    use super::*;

    #[test]
    fn client_ip_trusts_only_listed_proxies() {
        const XFF: ClientAddressFrom = ClientAddressFrom::XForwardedFor;
        let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.5, 10.1.1.1"),
        );
        assert_eq!(
            client_ip("10.2.2.2".parse().unwrap(), &h, &trusted, XFF),
            "203.0.113.5".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip("198.51.100.1".parse().unwrap(), &h, &trusted, XFF),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // Mapped addresses are canonical everywhere.
        assert_eq!(
            client_ip(ip("::ffff:10.2.2.2"), &h, &trusted, XFF),
            ip("203.0.113.5")
        );
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("::ffff:203.0.113.9"),
        );
        assert_eq!(
            client_ip(ip("10.2.2.2"), &h, &trusted, XFF),
            ip("203.0.113.9")
        );
        // Garbage stops the walk at the last trusted hop.
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.5, nonsense, 10.1.1.1"),
        );
        assert_eq!(client_ip(ip("10.2.2.2"), &h, &trusted, XFF), ip("10.1.1.1"));
        // Ports on X-Forwarded-For entries.
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.5:4711, [2001:db8::5]:80"),
        );
        assert_eq!(
            client_ip(ip("10.2.2.2"), &h, &trusted, XFF),
            ip("2001:db8::5")
        );
        // RFC 7239 Forwarded, when the balancers are said to write it; a client's own
        // X-Forwarded-For is then ignored.
        let mut h = HeaderMap::new();
        h.insert(
            "forwarded",
            HeaderValue::from_static(
                "for=\"[2001:db8::9]:4711\";proto=https, for=10.1.1.1:80;by=x",
            ),
        );
        assert_eq!(
            client_ip(ip("10.2.2.2"), &h, &trusted, ClientAddressFrom::Forwarded),
            ip("2001:db8::9")
        );
        h.insert("x-forwarded-for", HeaderValue::from_static("198.51.100.66"));
        let fwd = ClientAddressFrom::Forwarded;
        assert_eq!(
            client_ip(ip("10.2.2.2"), &h, &trusted, fwd),
            ip("2001:db8::9")
        );
        assert_eq!(
            client_ip(ip("10.2.2.2"), &h, &trusted, XFF),
            ip("198.51.100.66"),
            "and the other way round"
        );
        h.remove("x-forwarded-for");
        h.insert("forwarded", HeaderValue::from_static("for=unknown"));
        assert_eq!(client_ip(ip("10.2.2.2"), &h, &trusted, fwd), ip("10.2.2.2"));
    }

    #[test]
    fn forwarding_headers_drop_spoofed_values() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        h.insert("forwarded", HeaderValue::from_static("for=1.2.3.4"));
        let f = Forwarding {
            peer: "2001:db8::7".parse().unwrap(),
            scheme: "http",
            host: &HeaderValue::from_static("a.test"),
            via: &HeaderValue::from_static("1.1 proxy"),
            request_id: &HeaderValue::from_static("abc"),
            trusted_proxies: &[],
        };
        set_forwarding(&mut h, &f);
        assert_eq!(h["x-forwarded-for"], "2001:db8::7");
        assert_eq!(
            h["forwarded"],
            "for=\"[2001:db8::7]\";proto=http;host=a.test"
        );
        assert_eq!(h["via"], "1.1 proxy");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "a.test");
        assert_eq!(h["x-request-id"], "abc");
    }
}
