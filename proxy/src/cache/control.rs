//! RFC 9111 arithmetic: `Cache-Control` directives of requests and responses, what a shared
//! cache may store, freshness lifetime, and age. Pure functions over headers and times, so
//! every rule is unit-tested here; the request path in `cache::serve` only asks questions.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// `must-understand`: store only a status this cache understands, and then even with
    /// `no-store` (RFC 9111 5.2.2.3).
    pub must_understand: bool,
    /// `no-cache="F, G"`: the response may be stored, without those fields (RFC 9111
    /// 5.2.2.4; a shared cache cannot revalidate per field, so it drops them).
    pub no_cache_fields: Vec<header::HeaderName>,
    /// `private="F, G"`: a shared cache stores the response without those fields (5.2.2.7).
    pub private_fields: Vec<header::HeaderName>,
    /// These came from a targeted field (RFC 9213), which also makes `Expires` ignored.
    pub targeted: bool,
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
    /// for repeated directives the first wins (as most caches do; cache-tests.fyi).
    #[must_use]
    pub fn parse(headers: &HeaderMap) -> Self {
        Self::parse_field(headers, &header::CACHE_CONTROL)
    }

    /// Parses every field line of `name` with the rules of `Cache-Control` (a targeted field
    /// such as `CDN-Cache-Control`, RFC 9213, uses the same directives).
    #[must_use]
    pub fn parse_field(headers: &HeaderMap, name: &header::HeaderName) -> Self {
        let mut d = Self::default();
        for line in headers.get_all(name) {
            let Ok(text) = line.to_str() else { continue };
            for item in split_list(text) {
                let (name, value) = match item.split_once('=') {
                    Some((n, v)) => (n.trim(), Some(v.trim())),
                    None => (item.trim(), None),
                };
                d.directive(&name.to_ascii_lowercase(), value);
            }
        }
        d
    }

    fn directive(&mut self, name: &str, value: Option<&str>) {
        let first = |slot: &mut Option<u64>, v: Option<u64>| {
            if slot.is_none() {
                *slot = v;
            }
        };
        match name {
            // An invalid max-age or s-maxage means stale (RFC 9111 5.2.1.1, 5.2.2.1).
            "max-age" => first(&mut self.max_age, Some(delta(value).unwrap_or(0))),
            "s-maxage" => first(&mut self.s_maxage, Some(delta(value).unwrap_or(0))),
            "no-store" => self.no_store = true,
            "no-cache" => match value.map(field_names) {
                Some(names) if !names.is_empty() => self.no_cache_fields.extend(names),
                _ => self.no_cache = true,
            },
            "private" => match value.map(field_names) {
                Some(names) if !names.is_empty() => self.private_fields.extend(names),
                _ => self.private = true,
            },
            "public" => self.public = true,
            "must-revalidate" => self.must_revalidate = true,
            "proxy-revalidate" => self.proxy_revalidate = true,
            "must-understand" => self.must_understand = true,
            "stale-while-revalidate" => first(&mut self.stale_while_revalidate, delta(value)),
            "stale-if-error" => first(&mut self.stale_if_error, delta(value)),
            "max-stale" if self.max_stale.is_none() => {
                self.max_stale = Some(value.and_then(|v| delta(Some(v))));
            }
            "min-fresh" => first(&mut self.min_fresh, delta(value)),
            "only-if-cached" => self.only_if_cached = true,
            _ => {}
        }
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

/// The field names of a qualified `no-cache="..."` or `private="..."` (quoted list, or one
/// token); names that are not field names are skipped.
fn field_names(value: &str) -> Vec<header::HeaderName> {
    value
        .trim_matches('"')
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .filter_map(|n| header::HeaderName::from_bytes(n.as_bytes()).ok())
        .collect()
}

/// Why a response is not stored (the `detail` of `Cache-Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    Method,
    Status,
    NoStore,
    NoStoreRequest,
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
            Self::NoStoreRequest => "no-store-request",
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

/// Status codes this cache understands (RFC 9110's final codes): with `must-understand`,
/// only these are stored.
fn understood_status(s: StatusCode) -> bool {
    matches!(
        s.as_u16(),
        200..=205 | 300..=305 | 307 | 308 | 400..=418 | 421..=426 | 428 | 429 | 431 | 451
            | 500..=505 | 511
    )
}

/// "Heuristically cacheable" status codes (RFC 9110 15.1): these may get a lifetime that the
/// response itself does not state.
#[must_use]
pub fn heuristic_status(s: StatusCode) -> bool {
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
    if let Some(expires) = headers.get(header::EXPIRES).filter(|_| !cc.targeted) {
        // An invalid Expires (such as "0") means already expired (RFC 9111 5.3).
        return Some(
            expires
                .to_str()
                .ok()
                .and_then(parse_http_date)
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
    // Any final status may be stored (RFC 9111 3): whether it has a lifetime is the
    // caller's question (explicit freshness, or a heuristically cacheable status).
    if status.is_informational() || status == StatusCode::NOT_MODIFIED {
        return Err(NotStored::Status);
    }
    // Answers about the one request that got them (its preconditions, its size, its range,
    // its rate) are never stored for everyone, whatever their lifetime: storing them is how
    // caches get poisoned into denying service (CPDoS).
    if matches!(status.as_u16(), 412 | 413 | 416 | 429 | 431) {
        return Err(NotStored::Status);
    }
    if cc.must_understand {
        if !understood_status(status) {
            return Err(NotStored::Status);
        }
    } else if cc.no_store {
        return Err(NotStored::NoStore);
    }
    if request_cc.no_store {
        return Err(NotStored::NoStoreRequest);
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
    headers.get(name)?.to_str().ok().and_then(parse_http_date)
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

/// An HTTP-date in any of its three formats (RFC 9110 5.6.7): IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`), RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime
/// (`Sun Nov  6 08:49:37 1994`).
#[must_use]
pub fn parse_http_date(text: &str) -> Option<SystemTime> {
    parse_http_date_at(text, SystemTime::now())
}

/// [`parse_http_date`], read as browsers and CDNs read dates: names in any case, the weekday
/// not checked against the date, a two-digit year in the past century when it would
/// otherwise lie more than 50 years after `now` (RFC 9110 5.6.7). A date before 1970 reads
/// as 1970 (in the past all the same). `None` for anything else.
fn parse_http_date_at(text: &str, now: SystemTime) -> Option<SystemTime> {
    let text = text.trim();
    let (day, month, year, time) = if let Some((_weekday, rest)) = text.split_once(',') {
        // IMF-fixdate or RFC 850: day, month, year, time, zone.
        let mut parts = rest.split([' ', '-']).filter(|p| !p.is_empty());
        let fields = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        if parts.next().is_some() || !fields.4.eq_ignore_ascii_case("GMT") {
            return None;
        }
        (fields.0, fields.1, fields.2, fields.3)
    } else {
        // asctime: weekday, month, day, time, year.
        let mut parts = text.split(' ').filter(|p| !p.is_empty());
        let _weekday = parts.next()?;
        let fields = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        (fields.1, fields.0, fields.3, fields.2)
    };
    let number = |s: &str, max_len: usize| -> Option<u64> {
        if s.is_empty() || s.len() > max_len || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let day = number(day, 2)?;
    let month = MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(month))
        .and_then(|i| u64::try_from(i + 1).ok())?;
    let year = match year.len() {
        4 => number(year, 4)?,
        2 => {
            let two = number(year, 2)?;
            let since_epoch = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let this_year = 1970 + since_epoch / 31_556_952;
            let mut y = this_year / 100 * 100 + two;
            if y > this_year + 50 {
                y -= 100;
            }
            y
        }
        _ => return None,
    };
    let mut clock = time.split(':');
    let (h, m, s) = (
        number(clock.next()?, 2)?,
        number(clock.next()?, 2)?,
        number(clock.next()?, 2)?,
    );
    if clock.next().is_some()
        || h > 23
        || m > 59
        || s > 60
        || day == 0
        || day > days_in_month(year, month)
    {
        return None;
    }
    if year < 1970 {
        return Some(UNIX_EPOCH);
    }
    let days = days_since_epoch(year, month, day);
    // A leap second reads as the second before it.
    Some(UNIX_EPOCH + Duration::from_secs(days * 86_400 + h * 3600 + m * 60 + s.min(59)))
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a date on or after it (the civil-from-days inverse).
fn days_since_epoch(year: u64, month: u64, day: u64) -> u64 {
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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

/// An entity tag's opaque part and whether it is weak. A tag without its quotes (some
/// origins send them so) is taken as if quoted.
fn entity_tag(t: &str) -> (&str, bool) {
    let t = t.trim();
    let (t, weak) = match t.strip_prefix("W/") {
        Some(rest) => (rest, true),
        None => (t, false),
    };
    let opaque = t
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(t);
    (opaque, weak)
}

/// Weak comparison of entity tags (RFC 9110 8.8.3.2): `W/"x"` equals `"x"`.
#[must_use]
pub fn weak_eq(a: &str, b: &str) -> bool {
    entity_tag(a).0 == entity_tag(b).0
}

/// Strong comparison (RFC 9110 8.8.3.2): both strong and the same.
#[must_use]
pub fn strong_eq(a: &str, b: &str) -> bool {
    let (a, b) = (entity_tag(a), entity_tag(b));
    !a.1 && !b.1 && a.0 == b.0
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
    // Without Last-Modified, the response's Date is when it was last known unchanged.
    match (
        date_header(request, header::IF_MODIFIED_SINCE),
        date_header(stored, header::LAST_MODIFIED).or_else(|| date_header(stored, header::DATE)),
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

/// Headers a 304 (or a HEAD response) must not change in the stored response (RFC 9111 3.2:
/// `Content-Length`, and the framing fields a recipient processes and removes). Everything
/// else is updated, `Content-Type` and `Content-Encoding` included: the stored body is kept
/// as received, so its metadata can follow the origin.
#[must_use]
pub fn updatable_by_304(name: &header::HeaderName) -> bool {
    !matches!(
        *name,
        header::CONTENT_LENGTH | header::CONTENT_RANGE | header::TRANSFER_ENCODING
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
        assert!(
            d.public && !d.no_cache,
            "a qualified no-cache is not the plain one"
        );
        assert_eq!(
            d.no_cache_fields,
            [
                header::HeaderName::from_static("set-cookie"),
                header::HeaderName::from_static("foo")
            ]
        );
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
            Err(NotStored::NoStoreRequest)
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
    fn repeated_and_qualified_directives() {
        // The first of a repeated directive wins, for every directive with a value.
        let d = Directives::parse(&headers(&[(
            "cache-control",
            "stale-while-revalidate=5, stale-if-error=7, s-maxage=3, stale-while-revalidate=9, \
             stale-if-error=1, s-maxage=100",
        )]));
        assert_eq!(d.stale_while_revalidate, Some(5));
        assert_eq!(d.stale_if_error, Some(7));
        assert_eq!(d.s_maxage, Some(3));
        let r =
            Directives::parse_request(&headers(&[("cache-control", "min-fresh=2, min-fresh=9")]));
        assert_eq!(r.min_fresh, Some(2));
        // private="F" and no-cache=F (token form): fields, not the whole response.
        let q = Directives::parse(&headers(&[(
            "cache-control",
            "private=\"x-secret\", no-cache=set-cookie, max-age=60",
        )]));
        assert!(!q.private && !q.no_cache);
        assert_eq!(
            q.private_fields,
            [header::HeaderName::from_static("x-secret")]
        );
        assert_eq!(q.no_cache_fields, [header::SET_COOKIE]);
        // Empty qualifiers are the plain directive.
        let e = Directives::parse(&headers(&[("cache-control", "private=\"\", no-cache")]));
        assert!(e.private && e.no_cache);
        // Invalid delta-seconds: max-age means stale, the others are absent.
        let bad = Directives::parse(&headers(&[(
            "cache-control",
            "max-age=-1, stale-if-error=1.5, s-maxage=99999999999999999999",
        )]));
        assert_eq!(bad.max_age, Some(0));
        assert_eq!(bad.stale_if_error, None);
        assert_eq!(bad.s_maxage, Some(MAX_DELTA), "huge values are clamped");
        let mu = Directives::parse(&headers(&[("cache-control", "must-understand, no-store")]));
        assert!(mu.must_understand && mu.no_store);
    }

    #[test]
    fn http_dates_in_all_three_formats() {
        let t =
            |s: &str| parse_http_date(s).map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs());
        // 784111777 = Sun, 06 Nov 1994 08:49:37 GMT (RFC 9110's example).
        assert_eq!(t("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(t("Sunday, 06-Nov-94 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(t("Sun Nov  6 08:49:37 1994"), Some(784_111_777));
        // Names in any case; the weekday is not checked.
        assert_eq!(t("sun, 06 NOV 1994 08:49:37 gmt"), Some(784_111_777));
        assert_eq!(t("Mon, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(t("SUNDAY, 06-nov-94 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(t("sun nov 6 08:49:37 1994"), Some(784_111_777));
        // Leap years and month lengths.
        assert_eq!(t("Tue, 29 Feb 2000 00:00:00 GMT"), Some(951_782_400));
        assert_eq!(t("Thu, 29 Feb 2001 00:00:00 GMT"), None);
        assert_eq!(t("Thu, 31 Apr 2001 00:00:00 GMT"), None);
        // Before 1970: the epoch (in the past all the same).
        assert_eq!(t("Mon, 01 Jan 1900 00:00:00 GMT"), Some(0));
        // Not dates.
        for bad in [
            "0",
            "",
            "-1",
            "Sun, 06 Nov 1994 08:49:37",
            "Sun, 06 Nov 1994 08:49:37 PST",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 6 Nov 19945 08:49:37 GMT",
            "Sun Nov  6 08:49 1994",
            "Sun, 06 Nov 1994 08:49:37 GMT extra",
        ] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
        // Two-digit years: at most 50 years ahead, else the century before.
        let in_2026 = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let year = |s: &str| {
            parse_http_date_at(s, in_2026)
                .map(|t| 1970 + t.duration_since(UNIX_EPOCH).unwrap().as_secs() / 31_556_952)
        };
        assert_eq!(year("Friday, 01-Jul-76 00:00:00 GMT"), Some(2076));
        assert_eq!(year("Friday, 01-Jul-77 00:00:00 GMT"), Some(1977));
        assert_eq!(year("Friday, 01-Jul-30 00:00:00 GMT"), Some(2030));
    }

    #[test]
    fn any_final_status_may_be_stored_and_must_understand() {
        let check = |status: u16, cc: &str| {
            let resp = headers(&[("cache-control", cc)]);
            storable(
                &Method::GET,
                &headers(&[]),
                &Directives::default(),
                StatusCode::from_u16(status).unwrap(),
                &resp,
                &Directives::parse(&resp),
                false,
            )
        };
        for status in [200, 299, 400, 404, 500, 502, 503, 504, 599] {
            assert_eq!(check(status, "max-age=60"), Ok(()), "{status}");
        }
        assert_eq!(check(304, "max-age=60"), Err(NotStored::Status));
        // Answers about the one request that got them: never stored (CPDoS).
        for status in [412, 413, 416, 429, 431] {
            assert_eq!(
                check(status, "max-age=60"),
                Err(NotStored::Status),
                "{status}"
            );
        }
        assert_eq!(check(206, "max-age=60"), Err(NotStored::Partial));
        assert_eq!(check(200, "no-store"), Err(NotStored::NoStore));
        // must-understand: a known status is stored even with no-store; an unknown one not.
        assert_eq!(check(200, "must-understand, no-store, max-age=5"), Ok(()));
        assert_eq!(check(404, "no-store, must-understand"), Ok(()));
        assert_eq!(
            check(299, "must-understand, no-store, max-age=5"),
            Err(NotStored::Status)
        );
        assert_eq!(
            check(299, "must-understand, max-age=5"),
            Err(NotStored::Status)
        );
        // A request's no-store is its own detail (the stored response is not to blame).
        let req = headers(&[("cache-control", "no-store")]);
        assert_eq!(
            storable(
                &Method::GET,
                &req,
                &Directives::parse_request(&req),
                StatusCode::OK,
                &headers(&[]),
                &Directives::default(),
                false,
            ),
            Err(NotStored::NoStoreRequest)
        );
    }

    #[test]
    fn entity_tags_and_dates_compare_as_rfc_9110_says() {
        assert!(weak_eq("W/\"a\"", "\"a\""));
        assert!(
            weak_eq("a", "\"a\""),
            "an unquoted stored tag compares by its content"
        );
        assert!(!weak_eq("\"a\"", "\"b\""));
        assert!(strong_eq("\"a\"", "\"a\""));
        assert!(!strong_eq("W/\"a\"", "\"a\""));
        assert!(!strong_eq("W/\"a\"", "W/\"a\""));
        // If-Modified-Since against a response without Last-Modified: its Date.
        let stored = headers(&[("date", "Tue, 01 Sep 2026 10:00:00 GMT")]);
        assert!(not_modified(
            &headers(&[("if-modified-since", "Tue, 01 Sep 2026 10:00:00 GMT")]),
            &stored
        ));
        assert!(!not_modified(
            &headers(&[("if-modified-since", "Tue, 01 Sep 2026 09:00:00 GMT")]),
            &stored
        ));
        // An unquoted stored ETag matches the client's quoted one.
        assert!(not_modified(
            &headers(&[("if-none-match", "\"v1\"")]),
            &headers(&[("etag", "v1")])
        ));
        // What a 304 may update: all but the framing of the stored body.
        assert!(updatable_by_304(&header::CONTENT_TYPE));
        assert!(updatable_by_304(&header::CONTENT_ENCODING));
        assert!(!updatable_by_304(&header::CONTENT_LENGTH));
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
