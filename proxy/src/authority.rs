//! Request authorities (`host[:port]`) parsed strictly and written canonically: the one
//! parser the request path (one authority per request) and the cache keys share.
use hyper::header::HeaderValue;

/// The host a request is for: lowercase, without a trailing dot, IPv6 literals in brackets;
/// and the port when one was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    pub host: String,
    pub port: Option<u16>,
}

impl Authority {
    /// Whether `value` is already this authority's canonical text (then it need not be
    /// written again: the common case costs no allocation).
    #[must_use]
    #[expect(
        clippy::missing_panics_doc,
        reason = "the only panic is on converting `n % 10` to u8, which cannot fail"
    )]
    pub fn is_written_as(&self, value: &[u8]) -> bool {
        let Some(rest) = value.strip_prefix(self.host.as_bytes()) else {
            return false;
        };
        match (self.port, rest) {
            (None, []) => true,
            (Some(p), [b':', digits @ ..]) => {
                let mut buf = [0u8; 5];
                let mut n = p;
                let mut i = buf.len();
                loop {
                    i -= 1;
                    buf[i] = b'0' + u8::try_from(n % 10).expect("a digit");
                    n /= 10;
                    if n == 0 {
                        break;
                    }
                }
                digits == &buf[i..]
            }
            _ => false,
        }
    }

    /// The value sent upstream as `Host` (and in `X-Forwarded-Host`).
    #[must_use]
    #[expect(
        clippy::missing_panics_doc,
        reason = "parse_authority admits only header-safe characters, so the expect cannot fail"
    )]
    pub fn header_value(&self) -> HeaderValue {
        let text = match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        };
        HeaderValue::from_str(&text).expect("validated host characters are header-safe")
    }
}

/// Parses `uri-host [":" port]` strictly: a DNS-style name or IPv4 address (letters, digits,
/// `-`, `.`, `_`), or an IPv6 literal in brackets; a port of at most five digits up to 65535
/// (an empty port after `:` means none, as RFC 3986 allows).
pub fn parse_authority(raw: &[u8]) -> Option<Authority> {
    if raw.is_empty() || raw.len() > 261 {
        return None;
    }
    let (host, port) = if raw[0] == b'[' {
        let close = raw.iter().position(|&b| b == b']')?;
        let literal = &raw[1..close];
        let text = std::str::from_utf8(literal).ok()?;
        let addr: std::net::Ipv6Addr = text.parse().ok()?;
        let rest = &raw[close + 1..];
        let port = match rest {
            [] => None,
            [b':', digits @ ..] => Some(digits),
            _ => return None,
        };
        (format!("[{addr}]"), port)
    } else {
        let (name, port) = match raw.iter().rposition(|&b| b == b':') {
            Some(i) => (&raw[..i], Some(&raw[i + 1..])),
            None => (raw, None),
        };
        let name = name.strip_suffix(b".").unwrap_or(name);
        if name.is_empty()
            || name.len() > 253
            || !name
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
            || name.starts_with(b".")
            || name.ends_with(b".")
            || name.windows(2).any(|w| w == b"..")
        {
            return None;
        }
        let text = std::str::from_utf8(name).ok()?;
        (text.to_ascii_lowercase(), port)
    };
    let port = match port {
        None | Some([]) => None,
        Some(digits) => {
            if digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let n: u32 = std::str::from_utf8(digits).ok()?.parse().ok()?;
            Some(u16::try_from(n).ok()?)
        }
    };
    Some(Authority { host, port })
}
