//! Routing: which route a request takes, by host (exact, `*.suffix` wildcard, or any) and path
//! prefix. The most specific route wins: an exact host before a wildcard (the longer suffix
//! first) before any host, then the longer path prefix, then the earlier route in the file.
//! A listener's own `upstream` is the fallback when no route matches.

/// How a route matches the request's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com` is stored as `.example.com`: any name ending in it.
    Suffix(String),
}

impl HostMatch {
    /// A `route.host` pattern: an exact name, `*.suffix`, or none (any host).
    ///
    /// # Errors
    /// A wildcard anywhere but a leading `*.`, or a name that is not a valid host name.
    pub fn parse(pattern: Option<&str>) -> Result<Self, String> {
        let Some(p) = pattern else {
            return Ok(Self::Any);
        };
        let name = p.strip_prefix("*.").unwrap_or(p);
        if p.contains('*') && !p.starts_with("*.") || name.contains('*') {
            return Err(format!(
                "{p:?}: a wildcard may only be a leading \"*.\" (e.g. \"*.example.com\")"
            ));
        }
        if name.is_empty()
            || name.len() > 253
            || !name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
        {
            return Err(format!("{p:?} is not a valid host name"));
        }
        Ok(match p.strip_prefix('*') {
            Some(suffix) => Self::Suffix(suffix.to_ascii_lowercase()),
            None => Self::Exact(p.to_ascii_lowercase()),
        })
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(h) => h == host,
            Self::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }

    /// Higher is more specific.
    fn rank(&self) -> (u8, usize) {
        match self {
            Self::Any => (0, 0),
            Self::Suffix(s) => (1, s.len()),
            Self::Exact(_) => (2, 0),
        }
    }
}

/// A route's matching part, with the index of what it leads to.
#[derive(Debug, Clone)]
struct Entry<T> {
    host: HostMatch,
    path: String,
    target: T,
}

/// Routes in the order they are tried, plus each listener's fallback.
#[derive(Debug)]
pub struct Router<T> {
    entries: Vec<Entry<T>>,
    fallbacks: Vec<Option<T>>,
}

impl<T: Clone> Router<T> {
    /// `routes` in file order: (host pattern, path prefix, target); `fallbacks[i]` is
    /// listener i's own upstream route, if any.
    #[must_use]
    pub fn new(routes: Vec<(HostMatch, String, T)>, fallbacks: Vec<Option<T>>) -> Self {
        let mut entries: Vec<(usize, Entry<T>)> = routes
            .into_iter()
            .enumerate()
            .map(|(i, (host, path, target))| (i, Entry { host, path, target }))
            .collect();
        // Stable sort: among equally specific routes the file order stays.
        entries.sort_by(|(ia, a), (ib, b)| {
            b.host
                .rank()
                .cmp(&a.host.rank())
                .then(b.path.len().cmp(&a.path.len()))
                .then(ia.cmp(ib))
        });
        Self {
            entries: entries.into_iter().map(|(_, e)| e).collect(),
            fallbacks,
        }
    }

    /// Every route target, in matching order, then the listeners' fallbacks.
    pub fn targets(&self) -> impl Iterator<Item = &T> {
        self.entries
            .iter()
            .map(|e| &e.target)
            .chain(self.fallbacks.iter().flatten())
    }

    /// The route for a request on `listener` to `host` (normalized) and `path`.
    #[must_use]
    pub fn find(&self, listener: usize, host: &str, path: &str) -> Option<&T> {
        self.entries
            .iter()
            .find(|e| e.host.matches(host) && path.starts_with(e.path.as_str()))
            .map(|e| &e.target)
            .or_else(|| self.fallbacks.get(listener).and_then(Option::as_ref))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router<&'static str> {
        Router::new(
            [
                (None, "/".into(), "any-root"),
                (Some("*.example.com"), "/".into(), "wild"),
                (Some("api.example.com"), "/".into(), "api-root"),
                (Some("api.example.com"), "/v2/".into(), "api-v2"),
                (None, "/static/".into(), "static"),
                (Some("*.eu.example.com"), "/".into(), "wild-eu"),
                (Some("api.example.com"), "/v2/".into(), "api-v2-second"),
            ]
            .into_iter()
            .map(|(h, p, t)| (HostMatch::parse(h).unwrap(), p, t))
            .collect(),
            vec![None, Some("listener-1-fallback")],
        )
    }

    #[test]
    fn most_specific_route_wins() {
        let r = router();
        assert_eq!(
            r.find(0, "api.example.com", "/v2/users"),
            Some(&"api-v2"),
            "exact host, longer path; first of equals"
        );
        assert_eq!(r.find(0, "api.example.com", "/v1"), Some(&"api-root"));
        assert_eq!(
            r.find(0, "www.example.com", "/static/x"),
            Some(&"wild"),
            "a host match beats a longer path with any host"
        );
        assert_eq!(
            r.find(0, "a.eu.example.com", "/"),
            Some(&"wild-eu"),
            "longer wildcard suffix first"
        );
        assert_eq!(r.find(0, "a.b.example.com", "/"), Some(&"wild"));
        assert_eq!(
            r.find(0, "example.com", "/"),
            Some(&"any-root"),
            "*.example.com does not match example.com"
        );
        assert_eq!(r.find(0, "other.org", "/static/a"), Some(&"static"));
    }

    #[test]
    fn listener_fallback() {
        let r = Router::new(
            vec![(HostMatch::parse(Some("a.test")).unwrap(), "/".into(), "a")],
            vec![None, Some("fb")],
        );
        assert_eq!(r.find(1, "b.test", "/"), Some(&"fb"));
        assert_eq!(r.find(0, "b.test", "/"), None);
        assert_eq!(r.find(1, "a.test", "/"), Some(&"a"));
    }

    #[test]
    fn host_patterns_are_validated() {
        let parse = |p: &str| HostMatch::parse(Some(p));
        assert_eq!(
            parse("*.Example.com"),
            Ok(HostMatch::Suffix(".example.com".into()))
        );
        assert_eq!(parse("A.test"), Ok(HostMatch::Exact("a.test".into())));
        assert_eq!(HostMatch::parse(None), Ok(HostMatch::Any));
        assert!(parse("a.*.com").is_err());
        assert!(parse("*example.com").is_err());
        assert!(parse("bad host").is_err());
        assert!(parse("").is_err());
    }
}
