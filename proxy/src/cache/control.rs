//! RFC 9111 arithmetic: `Cache-Control` directives of requests and responses, what a shared
//! cache may store, freshness lifetime, and age. Pure functions over headers and times, so
//! every rule is unit-tested here; the request path in `cache::serve` only asks questions.
use std::time::{Duration, SystemTime};

use hyper::{
    HeaderMap, Method, StatusCode,
    header::{self, HeaderValue},
};

/// Seconds in a delta-seconds value we accept (RFC 9111 1.2.2: at least 2^31; larger values
/// are clamped rather than refused).
const MAX_DELTA: u64 = 1 << 31;

/// The directives of a `Cache-Control` header (all of its field lines).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "one field per RFC 9111 directive; the boolean ones are independent flags"
)]
pub struct Directives {
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
    // Request-only.
    pub max_stale: Option<Option<u64>>,
    pub min_fresh: Option<u64>,
    pub only_if_cached: bool,
}

/// A delta-seconds argument; a malformed one makes the directive count as absent, except
/// for `max-age` where RFC 9111 5.2.1.1/5.2.2.1 says an invalid value means stale (0).
fn delta(value: Option<&str>) -> Option<u64> {
    let v = value?.trim().trim_matches('"');
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(v.parse::<u64>().unwrap_or(MAX_DELTA).min(MAX_DELTA))
}

impl Directives {
    /// Parses every `Cache-Control` field line of `headers`. Unknown directives are ignored;
    /// for repeated directives the first wins.
    #[must_use]
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut d = Self::default();
        for line in headers.get_all(header::CACHE_CONTROL) {
            let Ok(text) = line.to_str() else { continue };
            for item in split_list(text) {
                let (name, value) = match item.split_once('=') {
                    Some((n, v)) => (n.trim(), Some(v.trim())),
                    None => (item.trim(), None),
                };
                match name.to_ascii_lowercase().as_str() {
                    "max-age" if d.max_age.is_none() => d.max_age = Some(delta(value).unwrap_or(0)),
                    "s-maxage" if d.s_maxage.is_none() => {
                        d.s_maxage = Some(delta(value).unwrap_or(0));
                    }
                    "no-store" => d.no_store = true,
                    // `no-cache="field"` is treated like plain `no-cache`: stricter, never wrong.
                    "no-cache" => d.no_cache = true,
                    // `private="field"` likewise: a shared cache does not store it.
                    "private" => d.private = true,
                    "public" => d.public = true,
                    "must-revalidate" => d.must_revalidate = true,
                    "proxy-revalidate" => d.proxy_revalidate = true,
                    "stale-while-revalidate" => d.stale_while_revalidate = delta(value),
                    "stale-if-error" => d.stale_if_error = delta(value),
                    "max-stale" if d.max_stale.is_none() => {
                        d.max_stale = Some(value.and_then(|v| delta(Some(v))));
                    }
                    "min-fresh" => d.min_fresh = delta(value),
                    "only-if-cached" => d.only_if_cached = true,
                    _ => {}
                }
            }
        }
        d
    }

    /// Request directives, with `Pragma: no-cache` as `no-cache` when there is no
    /// `Cache-Control` (RFC 9111 5.4).
    #[must_use]
    pub fn parse_request(headers: &HeaderMap) -> Self {
        let mut d = Self::parse(headers);
        if !headers.contains_key(header::CACHE_CONTROL)
            && headers
                .get_all(header::PRAGMA)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| split_list(v).any(|t| t.eq_ignore_ascii_case("no-cache")))
        {
            d.no_cache = true;
        }
        d
    }

    /// The response forbids serving it stale without revalidation (`must-revalidate`,
    /// `proxy-revalidate`; `s-maxage` implies the latter, but explicit `stale-*` directives
    /// on the same response are taken as the origin's permission).
    #[must_use]
    pub fn forbids_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate
    }
}

/// Items of a comma-separated list, respecting quoted strings.
fn split_list(text: &str) -> impl Iterator<Item = &str> {
    // No allocation: this runs on every request and response of a cached route.
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let t = rest?;
        let mut quoted = false;
        let end = t.char_indices().find_map(|(i, c)| match c {
            '"' => {
                quoted = !quoted;
                None
            }
            ',' if !quoted => Some(i),
            _ => None,
        });
        if let Some(i) = end {
            rest = Some(&t[i + 1..]);
            Some(&t[..i])
        } else {
            rest = None;
            Some(t)
        }
    })
    .map(str::trim)
    .filter(|s| !s.is_empty())
}

/// Why a response is not stored (the `detail` of `Cache-Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    Method,
    Status,
    NoStore,
    Private,
    Authorization,
    SetCookie,
    VaryStar,
    NoLifetime,
    TooLarge,
    Partial,
}

impl NotStored {
    #[must_use]
    pub fn detail(self) -> &'static str {
        match self {
            Self::Method => "method",
            Self::Status => "status",
            Self::NoStore => "no-store",
            Self::Private => "private",
            Self::Authorization => "authorization",
            Self::SetCookie => "set-cookie",
            Self::VaryStar => "vary-star",
            Self::NoLifetime => "no-lifetime",
            Self::TooLarge => "too-large",
            Self::Partial => "partial",
        }
    }
}

/// Status codes a shared cache here stores at all (final, understood, not partial).
fn storable_status(s: StatusCode) -> bool {
    matches!(
        s.as_u16(),
        200 | 203 | 204 | 300 | 301 | 302 | 303 | 307 | 308 | 404 | 405 | 410 | 414 | 451 | 501
    )
}

/// "Heuristically cacheable" status codes (RFC 9110 15.1): these may get a lifetime that the
/// response itself does not state.
fn heuristic_status(s: StatusCode) -> bool {
    matches!(
        s.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// How a route assigns lifetimes to responses that state none.
#[derive(Debug, Clone)]
pub struct LifetimeRules {
    /// Lifetime for heuristically cacheable responses without explicit freshness (0: none).
    pub default_ttl: Duration,
    /// Use the Last-Modified heuristic (a fraction of the time since the last change).
    pub heuristic: bool,
    pub heuristic_fraction: f64,
    pub heuristic_max: Duration,
}

/// The freshness lifetime of a response (RFC 9111 4.2.1), `None` when it has none.
#[must_use]
pub fn freshness_lifetime(
    status: StatusCode,
    headers: &HeaderMap,
    cc: &Directives,
    rules: &LifetimeRules,
    response_time: SystemTime,
) -> Option<Duration> {
    if let Some(s) = cc.s_maxage {
        return Some(Duration::from_secs(s));
    }
    if let Some(m) = cc.max_age {
        return Some(Duration::from_secs(m));
    }
    let date = date_header(headers, header::DATE).unwrap_or(response_time);
    if let Some(expires) = headers.get(header::EXPIRES) {
        // An invalid Expires (such as "0") means already expired (RFC 9111 5.3).
        return Some(
            expires
                .to_str()
                .ok()
                .and_then(|t| httpdate::parse_http_date(t).ok())
                .and_then(|e| e.duration_since(date).ok())
                .unwrap_or(Duration::ZERO),
        );
    }
    if !(heuristic_status(status) || cc.public) {
        return None;
    }
    if !rules.default_ttl.is_zero() {
        return Some(rules.default_ttl);
    }
    if rules.heuristic
        && let Some(lm) = date_header(headers, header::LAST_MODIFIED)
        && let Ok(since) = date.duration_since(lm)
    {
        return Some(
            since
                .mul_f64(rules.heuristic_fraction)
                .min(rules.heuristic_max),
        );
    }
    None
}

/// Whether a response may be stored by a shared cache (RFC 9111 3, 3.5).
pub fn storable(
    method: &Method,
    request: &HeaderMap,
    request_cc: &Directives,
    status: StatusCode,
    response: &HeaderMap,
    cc: &Directives,
    store_set_cookie: bool,
) -> Result<(), NotStored> {
    if *method != Method::GET {
        return Err(NotStored::Method);
    }
    if status == StatusCode::PARTIAL_CONTENT || response.contains_key(header::CONTENT_RANGE) {
        return Err(NotStored::Partial);
    }
    if !storable_status(status) {
        return Err(NotStored::Status);
    }
    if cc.no_store || request_cc.no_store {
        return Err(NotStored::NoStore);
    }
    if cc.private {
        return Err(NotStored::Private);
    }
    if request.contains_key(header::AUTHORIZATION)
        && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate)
    {
        return Err(NotStored::Authorization);
    }
    if !store_set_cookie && response.contains_key(header::SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    if vary_names(response).is_none() {
        return Err(NotStored::VaryStar);
    }
    Ok(())
}

/// The header names of `Vary` (lowercase, sorted, deduplicated); `None` for `Vary: *`.
#[must_use]
pub fn vary_names(headers: &HeaderMap) -> Option<Vec<header::HeaderName>> {
    let mut names = Vec::new();
    for line in headers.get_all(header::VARY) {
        let Ok(text) = line.to_str() else {
            return None;
        };
        for item in split_list(text) {
            if item == "*" {
                return None;
            }
            // An unparsable name can never be matched: like `*`.
            let name = header::HeaderName::from_bytes(item.as_bytes()).ok()?;
            names.push(name);
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    Some(names)
}

/// The normalised value of a request header for a secondary key: every field line joined
/// with ",", whitespace around items removed, lowercase (the headers that vary in practice,
/// Accept-Encoding and Accept-Language and friends, compare case-insensitively).
#[must_use]
pub fn normalized_value(headers: &HeaderMap, name: &header::HeaderName) -> String {
    let mut out = String::new();
    for line in headers.get_all(name) {
        for item in split_list(&String::from_utf8_lossy(line.as_bytes())) {
            if !out.is_empty() {
                out.push(',');
            }
            let collapsed: Vec<&str> = item.split_ascii_whitespace().collect();
            out.push_str(&collapsed.join(" ").to_ascii_lowercase());
        }
    }
    out
}

/// An HTTP date header as a time.
#[must_use]
pub fn date_header(headers: &HeaderMap, name: header::HeaderName) -> Option<SystemTime> {
    headers
        .get(name)?
        .to_str()
        .ok()
        .and_then(|t| httpdate::parse_http_date(t).ok())
}

/// RFC 9111 4.2.3: the age a response had when it arrived.
#[must_use]
pub fn corrected_initial_age(
    headers: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Duration {
    let date = date_header(headers, header::DATE).unwrap_or(response_time);
    let apparent_age = response_time.duration_since(date).unwrap_or(Duration::ZERO);
    let age_value = headers
        .get(header::AGE)
        .and_then(|v| delta(v.to_str().ok()))
        .map_or(Duration::ZERO, Duration::from_secs);
    let response_delay = response_time
        .duration_since(request_time)
        .unwrap_or(Duration::ZERO);
    apparent_age.max(age_value + response_delay)
}

/// Weak comparison of entity tags (RFC 9110 8.8.3.2): `W/"x"` equals `"x"`.
fn weak_eq(a: &str, b: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    strip(a) == strip(b)
}

/// Whether the client's conditional headers say it already has this response (RFC 9110
/// 13.2.2: If-None-Match first; If-Modified-Since only without it).
#[must_use]
pub fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
    if request.contains_key(header::IF_NONE_MATCH) {
        let Some(etag) = stored.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        return request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(split_list)
            .any(|t| t == "*" || weak_eq(t, etag));
    }
    match (
        date_header(request, header::IF_MODIFIED_SINCE),
        date_header(stored, header::LAST_MODIFIED),
    ) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}

/// The headers a 304 carries (RFC 9110 15.4.5).
pub const NOT_MODIFIED_HEADERS: [header::HeaderName; 7] = [
    header::CACHE_CONTROL,
    header::CONTENT_LOCATION,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::VARY,
    header::LAST_MODIFIED,
];

/// Headers a 304 must not change in the stored response (RFC 9111 3.2: framing and
/// content-describing fields stay those of the stored body).
#[must_use]
pub fn updatable_by_304(name: &header::HeaderName) -> bool {
    !matches!(
        *name,
        header::CONTENT_LENGTH
            | header::CONTENT_ENCODING
            | header::CONTENT_RANGE
            | header::TRANSFER_ENCODING
            | header::CONTENT_TYPE
    )
}

/// `Age` as a header value (whole seconds).
#[must_use]
pub fn age_value(age: Duration) -> HeaderValue {
    HeaderValue::from(age.as_secs().min(MAX_DELTA))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn rules() -> LifetimeRules {
        LifetimeRules {
            default_ttl: Duration::ZERO,
            heuristic: true,
            heuristic_fraction: 0.1,
            heuristic_max: Duration::from_hours(24),
        }
    }

    #[test]
    fn parses_directives_across_lines_and_quotes() {
        let d = Directives::parse(&headers(&[
            (
                "cache-control",
                "public, max-age=60, no-cache=\"set-cookie, foo\"",
            ),
            (
                "cache-control",
                "S-MAXAGE=\"30\", stale-while-revalidate=5, max-age=1",
            ),
        ]));
        assert_eq!(d.max_age, Some(60));
        assert_eq!(d.s_maxage, Some(30));
        assert!(d.public && d.no_cache);
        assert_eq!(d.stale_while_revalidate, Some(5));
        let bad = Directives::parse(&headers(&[("cache-control", "max-age=abc")]));
        assert_eq!(bad.max_age, Some(0), "an invalid max-age means stale");
        let r = Directives::parse_request(&headers(&[("cache-control", "max-stale, min-fresh=3")]));
        assert_eq!(r.max_stale, Some(None));
        assert_eq!(r.min_fresh, Some(3));
        let p = Directives::parse_request(&headers(&[("pragma", "no-cache")]));
        assert!(p.no_cache);
    }

    #[test]
    fn lifetime_precedence() {
        let now = SystemTime::now();
        let date = httpdate::fmt_http_date(now);
        let in_100 = httpdate::fmt_http_date(now + Duration::from_secs(100));
        let ok = StatusCode::OK;
        let life = |h: HeaderMap| freshness_lifetime(ok, &h, &Directives::parse(&h), &rules(), now);
        assert_eq!(
            life(headers(&[("cache-control", "max-age=10, s-maxage=20")])),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            life(headers(&[
                ("cache-control", "max-age=10"),
                ("expires", &in_100)
            ])),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            life(headers(&[("date", &date), ("expires", &in_100)])),
            Some(Duration::from_secs(100))
        );
        assert_eq!(
            life(headers(&[("expires", "0")])),
            Some(Duration::ZERO),
            "invalid Expires is expired"
        );
        let lm = httpdate::fmt_http_date(now - Duration::from_secs(1000));
        assert_eq!(
            life(headers(&[("date", &date), ("last-modified", &lm)])),
            Some(Duration::from_secs(100)),
            "10 % of the time since Last-Modified"
        );
        assert_eq!(life(headers(&[])), None);
        // 302 is not heuristically cacheable: no Last-Modified heuristic for it.
        let h = headers(&[("date", &date), ("last-modified", &lm)]);
        assert_eq!(
            freshness_lifetime(StatusCode::FOUND, &h, &Directives::parse(&h), &rules(), now),
            None
        );
    }

    #[test]
    fn age_arithmetic() {
        let now = SystemTime::now();
        let h = headers(&[("age", "100"), ("date", &httpdate::fmt_http_date(now))]);
        let age = corrected_initial_age(&h, now - Duration::from_secs(2), now);
        assert!(age >= Duration::from_secs(101), "{age:?}");
        // A Date far in the past dominates a small Age.
        let old = headers(&[
            ("age", "1"),
            (
                "date",
                &httpdate::fmt_http_date(now - Duration::from_secs(50)),
            ),
        ]);
        assert!(corrected_initial_age(&old, now, now) >= Duration::from_secs(49));
    }

    #[test]
    fn storability() {
        let get = Method::GET;
        let none = Directives::default();
        let ok = StatusCode::OK;
        let check = |req: HeaderMap, resp: HeaderMap| {
            storable(
                &get,
                &req,
                &Directives::parse_request(&req),
                ok,
                &resp,
                &Directives::parse(&resp),
                false,
            )
        };
        assert_eq!(
            check(headers(&[]), headers(&[("cache-control", "max-age=5")])),
            Ok(())
        );
        assert_eq!(
            check(
                headers(&[]),
                headers(&[("cache-control", "private, max-age=5")])
            ),
            Err(NotStored::Private)
        );
        assert_eq!(
            check(
                headers(&[("authorization", "Basic x")]),
                headers(&[("cache-control", "max-age=5")])
            ),
            Err(NotStored::Authorization)
        );
        assert_eq!(
            check(
                headers(&[("authorization", "Basic x")]),
                headers(&[("cache-control", "s-maxage=5")])
            ),
            Ok(())
        );
        assert_eq!(
            check(
                headers(&[]),
                headers(&[("set-cookie", "a=b"), ("cache-control", "max-age=5")])
            ),
            Err(NotStored::SetCookie)
        );
        assert_eq!(
            check(headers(&[]), headers(&[("vary", "accept, *")])),
            Err(NotStored::VaryStar)
        );
        assert_eq!(
            check(headers(&[("cache-control", "no-store")]), headers(&[])),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            storable(
                &Method::POST,
                &headers(&[]),
                &none,
                ok,
                &headers(&[]),
                &none,
                false
            ),
            Err(NotStored::Method)
        );
    }

    #[test]
    fn conditionals() {
        let stored = headers(&[
            ("etag", "\"v1\""),
            ("last-modified", "Tue, 01 Sep 2026 10:00:00 GMT"),
        ]);
        assert!(not_modified(
            &headers(&[("if-none-match", "\"x\", W/\"v1\"")]),
            &stored
        ));
        assert!(!not_modified(
            &headers(&[("if-none-match", "\"x\"")]),
            &stored
        ));
        assert!(not_modified(
            &headers(&[("if-modified-since", "Tue, 01 Sep 2026 10:00:00 GMT")]),
            &stored
        ));
        assert!(!not_modified(
            &headers(&[("if-modified-since", "Tue, 01 Sep 2026 09:59:59 GMT")]),
            &stored
        ));
        // If-None-Match wins over If-Modified-Since.
        assert!(!not_modified(
            &headers(&[
                ("if-none-match", "\"x\""),
                ("if-modified-since", "Tue, 01 Sep 2026 10:00:00 GMT")
            ]),
            &stored
        ));
    }

    #[test]
    fn lists_split_outside_quotes() {
        let items: Vec<&str> = split_list(" a, b=\"x, y\" ,, c ").collect();
        assert_eq!(items, ["a", "b=\"x, y\"", "c"]);
        assert_eq!(split_list("").count(), 0);
    }

    #[test]
    fn vary_normalisation() {
        let h = headers(&[
            ("vary", "Accept-Encoding, accept-language"),
            ("vary", "accept-encoding"),
        ]);
        let names = vary_names(&h).unwrap();
        assert_eq!(names.len(), 2);
        let a = headers(&[("accept-encoding", "gzip,  BR")]);
        let b = headers(&[("accept-encoding", "gzip"), ("accept-encoding", "br")]);
        assert_eq!(
            normalized_value(&a, &header::ACCEPT_ENCODING),
            normalized_value(&b, &header::ACCEPT_ENCODING)
        );
    }
}
