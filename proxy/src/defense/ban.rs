//! Abuse seen at layer 7, banned at layer 4: rules count events per client (responses with
//! certain statuses, invalid requests, requests matching a deny pattern) in a window; a client
//! over a rule's threshold is put into the kernel blocklist with a TTL, through the same code
//! path as `proxy blocklist add`. Repeat offenders get doubled TTLs up to a cap; allowlisted
//! clients are never banned.
use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use regex::Regex;
use tokio::sync::mpsc;

use super::{Cidr, limits::Sharded};
use crate::config::{BanRule, BanTrigger};

/// An event the request path reports about a client.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A response with this status was sent.
    Status(u16),
    /// The HTTP parser refused the client's request.
    Invalid,
    /// A request (path and user agent), checked against deny patterns.
    Request { path: &'a str, user_agent: &'a str },
}

#[derive(Debug, Clone)]
enum StatusMatch {
    Exact(u16),
    Class(u16),
}

/// A rule, compiled (regexes built once per config generation).
#[derive(Debug, Clone)]
pub struct CompiledRule {
    pub rule: BanRule,
    statuses: Vec<StatusMatch>,
    path: Option<Regex>,
    user_agent: Option<Regex>,
}

fn compile(rule: &BanRule) -> Result<CompiledRule, String> {
    if rule.name.is_empty() || rule.name.len() > 64 {
        return Err("name must be 1 to 64 characters".into());
    }
    if rule.threshold == 0 {
        return Err("threshold must be at least 1".into());
    }
    if rule.ttl.is_zero() || rule.max_ttl < rule.ttl || rule.window.is_zero() {
        return Err("window and ttl must be greater than 0, and max_ttl at least ttl".into());
    }
    if rule.prefix_v4 > 32 || rule.prefix_v6 > 128 {
        return Err("prefix_v4 is at most 32 and prefix_v6 at most 128".into());
    }
    let statuses = rule
        .statuses
        .iter()
        .map(|s| {
            if let Some(class) = s
                .strip_suffix("xx")
                .and_then(|c| c.parse::<u16>().ok())
                .filter(|c| (1..=5).contains(c))
            {
                Ok(StatusMatch::Class(class))
            } else {
                s.parse::<u16>()
                    .ok()
                    .filter(|c| (100..=599).contains(c))
                    .map(StatusMatch::Exact)
                    .ok_or_else(|| {
                        format!("status {s:?} is neither a code (429) nor a class (4xx)")
                    })
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let regex = |r: &Option<String>, key: &str| -> Result<Option<Regex>, String> {
        r.as_deref()
            .map(|p| Regex::new(p).map_err(|e| format!("{key}: {e}")))
            .transpose()
    };
    let path = regex(&rule.path_regex, "path_regex")?;
    let user_agent = regex(&rule.user_agent_regex, "user_agent_regex")?;
    match rule.on {
        BanTrigger::Status if statuses.is_empty() => {
            return Err("on = \"status\" needs statuses, e.g. [\"429\", \"4xx\"]".into());
        }
        BanTrigger::DenyPattern if path.is_none() && user_agent.is_none() => {
            return Err("on = \"deny-pattern\" needs path_regex or user_agent_regex".into());
        }
        _ => {}
    }
    Ok(CompiledRule {
        rule: rule.clone(),
        statuses,
        path,
        user_agent,
    })
}

/// Compiles every rule; an error names the rule (`ban[i]`) and what is wrong with it.
pub fn compile_all(rules: &[BanRule]) -> Result<Vec<CompiledRule>, (usize, String)> {
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| compile(r).map_err(|e| (i, e)))
        .collect()
}

impl CompiledRule {
    fn matches(&self, event: Event<'_>) -> bool {
        match (self.rule.on, event) {
            (BanTrigger::Status, Event::Status(code)) => self.statuses.iter().any(|m| match m {
                StatusMatch::Exact(c) => *c == code,
                StatusMatch::Class(c) => code / 100 == *c,
            }),
            (BanTrigger::InvalidRequest, Event::Invalid) => true,
            (BanTrigger::DenyPattern, Event::Request { path, user_agent }) => {
                self.path.as_ref().is_some_and(|r| r.is_match(path))
                    || self
                        .user_agent
                        .as_ref()
                        .is_some_and(|r| r.is_match(user_agent))
            }
            _ => false,
        }
    }
}

/// A ban for the control task to apply.
#[derive(Debug, Clone)]
pub struct BanRequest {
    pub client: IpAddr,
    pub cidr: Cidr,
    pub ttl: Duration,
    pub rule: String,
    pub offence: u32,
}

#[derive(Debug, Default)]
struct Window {
    start: Option<Instant>,
    count: u32,
}

/// Counts events per rule and client; shared by all workers. Both tables are bounded
/// (`limits.max_tracked_clients`); IPv6 clients count per `limits.client_prefix_v6` prefix.
pub struct BanEngine {
    windows: Sharded<(usize, IpAddr), Window>,
    /// Bans so far per client, for escalation; and when the last one ends.
    offences: Sharded<IpAddr, (u32, Option<Instant>)>,
    requests: mpsc::UnboundedSender<BanRequest>,
    prefix_v6: u8,
}

impl BanEngine {
    #[must_use]
    pub fn new(
        requests: mpsc::UnboundedSender<BanRequest>,
        max_clients: usize,
        prefix_v6: u8,
    ) -> Arc<Self> {
        Arc::new(Self {
            windows: Sharded::bounded(max_clients),
            offences: Sharded::bounded(max_clients),
            requests,
            prefix_v6,
        })
    }

    /// Window and offence entries evicted to stay within the bound.
    #[must_use]
    pub fn evictions(&self) -> (u64, u64) {
        (self.windows.evictions(), self.offences.evictions())
    }

    /// Records `event` for `client` against `rules`; returns whether a deny pattern matched
    /// (the request is then refused). A client that may not be banned (`bannable` false: a
    /// trusted proxy, a PROXY sender) is only checked, never counted.
    pub fn record(
        &self,
        rules: &[CompiledRule],
        client: IpAddr,
        event: Event<'_>,
        bannable: bool,
    ) -> bool {
        let mut denied = false;
        for (i, rule) in rules.iter().enumerate() {
            if !rule.matches(event) {
                continue;
            }
            denied |= matches!(event, Event::Request { .. });
            if !bannable {
                continue;
            }
            let now = Instant::now();
            let key = super::limits::client_key(client, self.prefix_v6);
            let over = self.windows.with((i, key), |w| {
                if w.start
                    .is_none_or(|s| now.duration_since(s) > rule.rule.window)
                {
                    w.start = Some(now);
                    w.count = 0;
                }
                w.count += 1;
                if w.count >= rule.rule.threshold {
                    w.start = None;
                    true
                } else {
                    false
                }
            });
            if over {
                self.ban(rule, client, now);
            }
        }
        denied
    }

    fn ban(&self, rule: &CompiledRule, client: IpAddr, now: Instant) {
        // One ban at a time per client: events still in flight while the first ban is being
        // applied do not escalate it.
        let key = super::limits::client_key(client, self.prefix_v6);
        let offence = self.offences.with(key, |(n, until)| {
            if until.is_some_and(|u| now < u) {
                return None;
            }
            *n += 1;
            Some(*n)
        });
        let Some(offence) = offence else { return };
        let ttl = rule
            .rule
            .ttl
            .saturating_mul(1 << (offence - 1).min(20))
            .min(rule.rule.max_ttl);
        self.offences
            .with(key, |(_, until)| *until = Some(now + ttl));
        let len = if client.is_ipv4() {
            rule.rule.prefix_v4
        } else {
            rule.rule.prefix_v6
        };
        let _ = self.requests.send(BanRequest {
            client,
            cidr: Cidr::new_truncating(client, len),
            ttl,
            rule: rule.rule.name.clone(),
            offence,
        });
    }

    /// Drops windows that ended long ago.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.windows.retain(|_, w| {
            w.start
                .is_some_and(|s| now.duration_since(s) < Duration::from_hours(1))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> BanRule {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn status_rule_bans_at_the_threshold_and_escalates() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let engine = BanEngine::new(tx, 1000, 64);
        let rules = compile_all(&[rule(
            r#"name = "errors"
on = "status"
statuses = ["429", "5xx"]
threshold = 3
window = "10s"
ttl = "1s"
max_ttl = "3s""#,
        )])
        .unwrap();
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        engine.record(&rules, ip, Event::Status(200), true);
        engine.record(&rules, ip, Event::Status(429), true);
        engine.record(&rules, ip, Event::Status(503), true);
        assert!(rx.try_recv().is_err());
        engine.record(&rules, ip, Event::Status(404 + 25), true);
        let ban = rx.try_recv().unwrap();
        assert_eq!(
            (ban.cidr.to_string().as_str(), ban.ttl, ban.offence),
            ("192.0.2.9/32", Duration::from_secs(1), 1)
        );
        std::thread::sleep(Duration::from_millis(1100));
        for _ in 0..3 {
            engine.record(&rules, ip, Event::Status(429), true);
        }
        assert_eq!(
            rx.try_recv().unwrap().ttl,
            Duration::from_secs(2),
            "doubled for a repeat"
        );
    }

    #[test]
    fn deny_patterns_match_and_deny() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let engine = BanEngine::new(tx, 1000, 64);
        let rules = compile_all(&[rule(
            r#"name = "scanner"
on = "deny-pattern"
path_regex = "^/(wp-admin|\\.env)"
user_agent_regex = "(?i)sqlmap"
prefix_v4 = 24"#,
        )])
        .unwrap();
        let ip: IpAddr = "198.51.100.77".parse().unwrap();
        assert!(!engine.record(
            &rules,
            ip,
            Event::Request {
                path: "/index.html",
                user_agent: "curl"
            },
            true
        ));
        assert!(engine.record(
            &rules,
            ip,
            Event::Request {
                path: "/.env",
                user_agent: "curl"
            },
            true
        ));
        assert_eq!(rx.try_recv().unwrap().cidr.to_string(), "198.51.100.0/24");
        assert!(engine.record(
            &rules,
            "192.0.2.1".parse().unwrap(),
            Event::Request {
                path: "/",
                user_agent: "sqlmap/1.7"
            },
            true
        ));
        // A client that may not be banned is refused by the pattern but never counted.
        while rx.try_recv().is_ok() {}
        let relay: IpAddr = "203.0.113.1".parse().unwrap();
        for _ in 0..5 {
            assert!(engine.record(
                &rules,
                relay,
                Event::Request {
                    path: "/.env",
                    user_agent: "curl"
                },
                false
            ));
        }
        assert!(rx.try_recv().is_err(), "no ban for a relay");
    }

    #[test]
    fn bad_rules_are_refused() {
        assert!(
            compile(&rule("name = \"x\"\non = \"status\""))
                .unwrap_err()
                .contains("needs statuses")
        );
        assert!(compile(&rule("name = \"x\"\non = \"status\"\nstatuses = [\"6xx\"]")).is_err());
        assert!(
            compile(&rule(
                "name = \"x\"\non = \"deny-pattern\"\npath_regex = \"(\""
            ))
            .unwrap_err()
            .contains("path_regex")
        );
        assert!(
            compile(&rule(
                "name = \"x\"\non = \"invalid-request\"\nttl = \"1h\"\nmax_ttl = \"1m\""
            ))
            .is_err()
        );
    }
}
