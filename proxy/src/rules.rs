//! Header rules (`[route.headers.request]` / `[route.headers.response]`): `set`, `add` and
//! `remove`, with `$variables` in values, compiled once when a config generation is built.
use std::net::IpAddr;

use hyper::header::{HeaderMap, HeaderName, HeaderValue};

use crate::config::HeaderOps;

/// Values a header rule may use.
pub struct Vars<'a> {
    pub client_ip: IpAddr,
    pub host: &'a str,
    pub scheme: &'a str,
    pub request_id: &'a str,
}

#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    ClientIp,
    Host,
    Scheme,
    RequestId,
}

/// A header value with `$variables`, parsed once at config load.
#[derive(Debug, Clone)]
pub struct Template(Vec<Piece>);

impl Template {
    /// Parses `$client_ip`, `$host`, `$scheme`, `$request_id`; `$$` is a literal `$`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(format!("value {text:?} contains CR, LF or NUL"));
        }
        if HeaderValue::from_str(&text.replace('$', "")).is_err() {
            return Err(format!("value {text:?} is not a valid header value"));
        }
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(pos) = rest.find('$') {
            if pos > 0 {
                pieces.push(Piece::Text(rest[..pos].to_owned()));
            }
            let after = &rest[pos + 1..];
            if let Some(r) = after.strip_prefix('$') {
                pieces.push(Piece::Text("$".into()));
                rest = r;
                continue;
            }
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            pieces.push(match &after[..end] {
                "client_ip" => Piece::ClientIp,
                "host" => Piece::Host,
                "scheme" => Piece::Scheme,
                "request_id" => Piece::RequestId,
                other => {
                    return Err(format!(
                        "unknown variable ${other} in {text:?} (known: $client_ip, $host, $scheme, $request_id; $$ for a dollar)"
                    ));
                }
            });
            rest = &after[end..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Self(pieces))
    }

    /// The value for one request; `None` if a variable made it invalid (never CR/LF/NUL).
    #[must_use]
    pub fn render(&self, vars: &Vars<'_>) -> Option<HeaderValue> {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::ClientIp => out.push_str(&vars.client_ip.to_string()),
                Piece::Host => out.push_str(vars.host),
                Piece::Scheme => out.push_str(vars.scheme),
                Piece::RequestId => out.push_str(vars.request_id),
            }
        }
        HeaderValue::from_str(&out).ok()
    }
}

/// `set` / `add` / `remove` rules, compiled.
#[derive(Debug, Clone, Default)]
pub struct CompiledOps {
    set: Vec<(HeaderName, Template)>,
    add: Vec<(HeaderName, Template)>,
    remove: Vec<HeaderName>,
}

fn header_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a valid header name"))
}

impl CompiledOps {
    pub fn compile(ops: &HeaderOps) -> Result<Self, String> {
        let pairs = |m: &std::collections::BTreeMap<String, String>| -> Result<Vec<(HeaderName, Template)>, String> {
            m.iter().map(|(k, v)| Ok((header_name(k)?, Template::parse(v)?))).collect()
        };
        Ok(Self {
            set: pairs(&ops.set)?,
            add: pairs(&ops.add)?,
            remove: ops
                .remove
                .iter()
                .map(|n| header_name(n))
                .collect::<Result<_, _>>()?,
        })
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Applies remove, then set, then add.
    pub fn apply(&self, headers: &mut HeaderMap, vars: &Vars<'_>) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, t) in &self.set {
            if let Some(v) = t.render(vars) {
                headers.insert(name.clone(), v);
            }
        }
        for (name, t) in &self.add {
            if let Some(v) = t.render(vars) {
                headers.append(name.clone(), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars<'static> {
        Vars {
            client_ip: "192.0.2.9".parse().unwrap(),
            host: "a.test",
            scheme: "https",
            request_id: "r1",
        }
    }

    #[test]
    fn templates_render_variables() {
        let t = Template::parse("ip=$client_ip host=$host $scheme $request_id $$5").unwrap();
        assert_eq!(
            t.render(&vars()).unwrap(),
            "ip=192.0.2.9 host=a.test https r1 $5"
        );
        assert!(
            Template::parse("$nope")
                .unwrap_err()
                .contains("unknown variable $nope")
        );
        assert!(
            Template::parse("a\r\nInjected: 1")
                .unwrap_err()
                .contains("CR, LF or NUL")
        );
        assert!(Template::parse("a\0b").is_err());
    }

    #[test]
    fn ops_apply_in_order() {
        let ops = HeaderOps {
            set: [("x-env".to_owned(), "prod".to_owned())].into(),
            add: [("x-client".to_owned(), "$client_ip".to_owned())].into(),
            remove: vec!["x-debug".into()],
        };
        let c = CompiledOps::compile(&ops).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-debug", HeaderValue::from_static("1"));
        h.insert("x-env", HeaderValue::from_static("dev"));
        c.apply(&mut h, &vars());
        assert!(!h.contains_key("x-debug"));
        assert_eq!(h["x-env"], "prod");
        assert_eq!(h["x-client"], "192.0.2.9");
        let bad = HeaderOps {
            set: [("bad name".to_owned(), "x".to_owned())].into(),
            ..HeaderOps::default()
        };
        assert!(
            CompiledOps::compile(&bad)
                .unwrap_err()
                .contains("not a valid header name")
        );
    }
}
