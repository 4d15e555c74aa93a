//! Range requests answered from a complete stored response (RFC 9110 14): one byte range
//! (`bytes=a-b`, `bytes=a-`, `bytes=-n`) becomes a `206` with its `Content-Range`, a range
//! past the end a `416`, anything else (several ranges, another unit, bad syntax, an
//! `If-Range` that does not match) the whole response, as RFC 9110 lets a server do.
use std::ops::Range;

use hyper::{
    HeaderMap,
    header::{self, HeaderValue},
};

use super::control;

/// How to answer a request's `Range` from a stored body of `len` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeAnswer {
    /// The whole response (`200`).
    Full,
    /// These bytes (`206`).
    Partial(Range<usize>),
    /// None of the bytes exist (`416`).
    Unsatisfiable,
}

/// Evaluates `Range` (and `If-Range`) against a stored response with `stored` headers and a
/// body of `len` bytes.
#[must_use]
pub fn evaluate(
    range: &HeaderValue,
    if_range: Option<&HeaderValue>,
    stored: &HeaderMap,
    len: usize,
) -> RangeAnswer {
    if let Some(condition) = if_range
        && !if_range_holds(condition, stored)
    {
        return RangeAnswer::Full;
    }
    let Ok(text) = range.to_str() else {
        return RangeAnswer::Full;
    };
    let Some((unit, set)) = text.trim().split_once('=') else {
        return RangeAnswer::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || set.contains(',') {
        return RangeAnswer::Full;
    }
    let Some((first, last)) = set.trim().split_once('-') else {
        return RangeAnswer::Full;
    };
    let number = |s: &str| -> Option<Option<u64>> {
        let s = s.trim();
        if s.is_empty() {
            return Some(None);
        }
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Digits beyond u64 are "very large", which is what they mean.
        Some(Some(s.parse().unwrap_or(u64::MAX)))
    };
    let (Some(first), Some(last)) = (number(first), number(last)) else {
        return RangeAnswer::Full;
    };
    let len64 = u64::try_from(len).unwrap_or(u64::MAX);
    let (start, end) = match (first, last) {
        (Some(a), Some(b)) if a > b => return RangeAnswer::Full,
        (Some(a), b) => {
            if a >= len64 {
                return RangeAnswer::Unsatisfiable;
            }
            (a, b.map_or(len64 - 1, |b| b.min(len64 - 1)))
        }
        (None, Some(n)) => {
            if n == 0 || len == 0 {
                return RangeAnswer::Unsatisfiable;
            }
            (len64.saturating_sub(n), len64 - 1)
        }
        (None, None) => return RangeAnswer::Full,
    };
    match (usize::try_from(start), usize::try_from(end)) {
        (Ok(s), Ok(e)) => RangeAnswer::Partial(s..e + 1),
        _ => RangeAnswer::Full,
    }
}

/// RFC 9110 13.1.5: an entity tag must match the stored one strongly; a date must equal the
/// stored `Last-Modified`, which must itself be strong (at least a second before `Date`).
fn if_range_holds(condition: &HeaderValue, stored: &HeaderMap) -> bool {
    let Ok(condition) = condition.to_str() else {
        return false;
    };
    let condition = condition.trim();
    if condition.starts_with('"') || condition.starts_with("W/") {
        return stored
            .get(header::ETAG)
            .and_then(|e| e.to_str().ok())
            .is_some_and(|etag| control::strong_eq(condition, etag));
    }
    let (Some(date), Some(modified)) = (
        control::parse_http_date(condition),
        control::date_header(stored, header::LAST_MODIFIED),
    ) else {
        return false;
    };
    let strong = control::date_header(stored, header::DATE)
        .is_some_and(|d| d.duration_since(modified).is_ok_and(|s| s.as_secs() >= 1));
    // Dates before 1970 all read as 1970: equal, but not the same validator.
    strong && date == modified && modified > std::time::UNIX_EPOCH
}

/// The part a stored `206` holds, from its `Content-Range: bytes a-b/len`: (a, b, len), when
/// it is one part of a body of known length.
#[must_use]
pub fn stored_part(headers: &HeaderMap) -> Option<(u64, u64, u64)> {
    let mut values = headers.get_all(header::CONTENT_RANGE).iter();
    let text = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        return None;
    }
    let rest = text.trim().strip_prefix("bytes ")?;
    let (span, len) = rest.split_once('/')?;
    let (a, b) = span.split_once('-')?;
    let digits = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (a, b, len) = (digits(a)?, digits(b)?, digits(len)?);
    (a <= b && b < len).then_some((a, b, len))
}

/// `Content-Range` for a part of a body of `len` bytes (or `bytes */len` for a 416).
#[must_use]
pub fn content_range(part: Option<&Range<usize>>, len: usize) -> HeaderValue {
    let text = match part {
        Some(r) => format!("bytes {}-{}/{len}", r.start, r.end - 1),
        None => format!("bytes */{len}"),
    };
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("bytes */0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_parts() {
        let part = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_RANGE, HeaderValue::from_str(v).unwrap());
            stored_part(&h)
        };
        assert_eq!(part("bytes 0-9/100"), Some((0, 9, 100)));
        assert_eq!(part("bytes 10-99/100"), Some((10, 99, 100)));
        for bad in [
            "bytes 0-100/100",
            "bytes 5-4/100",
            "bytes 0-9/*",
            "bytes */100",
            "items 0-9/100",
            "bytes -1-9/100",
            "bytes 0-9/1e3",
        ] {
            assert_eq!(part(bad), None, "{bad}");
        }
    }

    fn eval(range: &str, len: usize) -> RangeAnswer {
        evaluate(
            &HeaderValue::from_str(range).unwrap(),
            None,
            &HeaderMap::new(),
            len,
        )
    }

    #[test]
    fn one_range_of_each_form() {
        use RangeAnswer::{Full, Partial, Unsatisfiable};
        assert_eq!(eval("bytes=0-9", 100), Partial(0..10));
        assert_eq!(eval("bytes=90-200", 100), Partial(90..100));
        assert_eq!(eval("bytes=10-", 100), Partial(10..100));
        assert_eq!(eval("bytes=-5", 100), Partial(95..100));
        assert_eq!(eval("bytes=-500", 100), Partial(0..100));
        assert_eq!(eval("BYTES = 0-0", 100), Partial(0..1));
        assert_eq!(eval("bytes=100-", 100), Unsatisfiable);
        assert_eq!(eval("bytes=-0", 100), Unsatisfiable);
        assert_eq!(eval("bytes=0-", 0), Unsatisfiable);
        assert_eq!(eval("bytes=99999999999999999999999-", 100), Unsatisfiable);
        // Whole response: several ranges, other units, bad syntax, backwards.
        for whole in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=a-b",
            "bytes=5-1",
            "bytes=-",
            "bytes",
        ] {
            assert_eq!(eval(whole, 100), Full, "{whole}");
        }
    }

    #[test]
    fn if_range_needs_a_strong_match() {
        let mut stored = HeaderMap::new();
        stored.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        stored.insert(
            header::LAST_MODIFIED,
            HeaderValue::from_static("Tue, 01 Sep 2026 10:00:00 GMT"),
        );
        stored.insert(
            header::DATE,
            HeaderValue::from_static("Tue, 01 Sep 2026 11:00:00 GMT"),
        );
        let range = HeaderValue::from_static("bytes=0-1");
        let eval_with = |stored: &HeaderMap, cond: &'static str| {
            evaluate(&range, Some(&HeaderValue::from_static(cond)), stored, 10)
        };
        let with = |cond: &'static str| eval_with(&stored, cond);
        assert_eq!(with("\"v1\""), RangeAnswer::Partial(0..2));
        assert_eq!(with("W/\"v1\""), RangeAnswer::Full, "weak tags never match");
        assert_eq!(with("\"v2\""), RangeAnswer::Full);
        assert_eq!(
            with("Tue, 01 Sep 2026 10:00:00 GMT"),
            RangeAnswer::Partial(0..2)
        );
        assert_eq!(with("Tue, 01 Sep 2026 09:00:00 GMT"), RangeAnswer::Full);
        // Last-Modified not a second before Date: a weak date, no match.
        stored.insert(
            header::DATE,
            HeaderValue::from_static("Tue, 01 Sep 2026 10:00:00 GMT"),
        );
        assert_eq!(
            eval_with(&stored, "Tue, 01 Sep 2026 10:00:00 GMT"),
            RangeAnswer::Full
        );
    }

    #[test]
    fn dates_before_1970_never_match() {
        let mut stored = HeaderMap::new();
        stored.insert(
            header::LAST_MODIFIED,
            HeaderValue::from_static("Mon, 01 Jan 1900 00:00:00 GMT"),
        );
        stored.insert(
            header::DATE,
            HeaderValue::from_static("Tue, 01 Sep 2026 11:00:00 GMT"),
        );
        let answer = evaluate(
            &HeaderValue::from_static("bytes=0-1"),
            Some(&HeaderValue::from_static("Fri, 01 Jan 1960 00:00:00 GMT")),
            &stored,
            10,
        );
        assert_eq!(answer, RangeAnswer::Full);
    }

    #[test]
    fn content_range_values() {
        assert_eq!(content_range(Some(&(0..10)), 100), "bytes 0-9/100");
        assert_eq!(content_range(None, 100), "bytes */100");
    }
}
