//! Access control per route: client address allow/deny lists (403) and authentication
//! (401 with `WWW-Authenticate`): HTTP Basic against argon2 password hashes, or bearer tokens
//! against SHA-256 digests. Secrets are never stored in the config in clear.
use std::{
    collections::{HashMap, HashSet},
    fmt::Write as _,
    net::IpAddr,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use base64::Engine;
use hyper::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};

use crate::{config::AuthConfig, defense::Cidr};

/// The outcome of the access checks.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// 403: the client address may not use the route.
    Forbidden,
    /// 401, with the challenge for `WWW-Authenticate`.
    Unauthorized(HeaderValue),
    /// 503: every password check slot is taken and none freed up in time.
    Busy,
}

#[derive(Debug)]
enum Auth {
    Basic {
        challenge: HeaderValue,
        users: Vec<(String, Arc<str>)>,
        /// A hash with the first user's parameters, verified for unknown users so that they
        /// cost the same as known ones (no user enumeration by timing).
        dummy: Arc<str>,
        /// SHA-256 of `user:password` pairs verified recently, and when (argon2 is slow on
        /// purpose; a success is reused for `VERIFIED_TTL`).
        verified: Mutex<HashMap<[u8; 32], Instant>>,
    },
    Bearer {
        challenge: HeaderValue,
        digests: HashSet<[u8; 32]>,
    },
}

/// A route's compiled access rules.
#[derive(Debug, Default)]
pub struct Access {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
    auth: Option<Auth>,
}

const VERIFIED_CACHE_MAX: usize = 4096;
/// How long a verified `user:password` is trusted without running argon2 again.
const VERIFIED_TTL: Duration = Duration::from_mins(1);
/// How long a request waits for a password check slot before it gets a 503.
const CHECK_QUEUE_WAIT: Duration = Duration::from_secs(5);

/// Password checks run on the blocking pool, at most one per CPU at once: argon2 takes tens
/// of milliseconds of CPU on purpose and must never stall a worker's other connections.
fn check_slots() -> Arc<tokio::sync::Semaphore> {
    static SLOTS: OnceLock<Arc<tokio::sync::Semaphore>> = OnceLock::new();
    SLOTS
        .get_or_init(|| {
            let cpus = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
            Arc::new(tokio::sync::Semaphore::new(cpus.max(2)))
        })
        .clone()
}

/// A PHC hash of a random password with the parameters of `like` (same algorithm, memory,
/// iterations: the same cost to verify).
fn dummy_hash(like: &str) -> Result<String, String> {
    use argon2::{PasswordHasher, password_hash::SaltString};
    let parsed = PasswordHash::new(like).map_err(|e| e.to_string())?;
    let params = argon2::Params::try_from(&parsed).map_err(|e| e.to_string())?;
    let algorithm = argon2::Algorithm::try_from(parsed.algorithm).map_err(|e| e.to_string())?;
    let version = parsed
        .version
        .map_or(Ok(argon2::Version::V0x13), argon2::Version::try_from)
        .map_err(|e| e.to_string())?;
    let mut secret = [0u8; 32];
    getrandom(&mut secret)?;
    let mut salt = [0u8; 16];
    getrandom(&mut salt)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::new(algorithm, version, params)
        .hash_password(&secret, &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Verifies `password` against a PHC hash (blocking: argon2).
fn verify(password: &[u8], hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password, &h).is_ok())
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The digest of a `sha256:<hex>` token, or `None` if malformed.
#[must_use]
pub fn parse_token_digest(text: &str) -> Option<[u8; 32]> {
    parse_sha256(text).ok()
}

fn parse_sha256(text: &str) -> Result<[u8; 32], String> {
    let hex = text.strip_prefix("sha256:").ok_or_else(|| {
        format!("token {text:?} must be \"sha256:<64 hex digits>\" (see `proxy hash-token`)")
    })?;
    if hex.len() != 64 {
        return Err(format!("token digest {text:?} must have 64 hex digits"));
    }
    let mut out = [0u8; 32];
    for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(chunk).map_err(|_| format!("{text:?} is not hex"))?;
        out[i] = u8::from_str_radix(s, 16).map_err(|_| format!("{text:?} is not hex"))?;
    }
    Ok(out)
}

fn challenge(scheme: &str, realm: &str) -> Result<HeaderValue, String> {
    if realm.contains(['"', '\\']) {
        return Err(format!(
            "realm {realm:?} may not contain quotes or backslashes"
        ));
    }
    HeaderValue::from_str(&format!("{scheme} realm=\"{realm}\""))
        .map_err(|_| format!("realm {realm:?} is not valid header text"))
}

fn compile_auth(auth: &AuthConfig) -> Result<Auth, String> {
    match auth {
        AuthConfig::Basic { realm, users } => {
            if users.is_empty() {
                return Err("basic auth needs at least one user".into());
            }
            for (user, hash) in users {
                if user.contains(':') || user.is_empty() {
                    return Err(format!(
                        "user name {user:?} may not be empty or contain ':'"
                    ));
                }
                PasswordHash::new(hash)
                    .map_err(|e| format!("password hash of {user:?} is not a PHC string ({e}); make one with `proxy hash-password`"))?;
            }
            let first = users.values().next().expect("checked: at least one user");
            Ok(Auth::Basic {
                challenge: challenge("Basic", realm)?,
                users: users
                    .iter()
                    .map(|(u, h)| (u.clone(), Arc::from(h.as_str())))
                    .collect(),
                dummy: Arc::from(dummy_hash(first)?.as_str()),
                verified: Mutex::new(HashMap::new()),
            })
        }
        AuthConfig::Bearer { realm, tokens } => {
            if tokens.is_empty() {
                return Err("bearer auth needs at least one token digest".into());
            }
            Ok(Auth::Bearer {
                challenge: challenge("Bearer", realm)?,
                digests: tokens
                    .iter()
                    .map(|t| parse_sha256(t))
                    .collect::<Result<_, _>>()?,
            })
        }
    }
}

impl Access {
    pub fn compile(
        allow: &[Cidr],
        deny: &[Cidr],
        auth: Option<&AuthConfig>,
    ) -> Result<Self, String> {
        Ok(Self {
            allow: allow.to_vec(),
            deny: deny.to_vec(),
            auth: auth.map(compile_auth).transpose()?,
        })
    }

    /// Address rules first (deny, then allow), then authentication. A Basic password check
    /// runs on the blocking pool (bounded, see [`check_slots`]), never on the worker.
    pub async fn check(&self, client: IpAddr, headers: &HeaderMap) -> Decision {
        if self.deny.iter().any(|c| c.contains(client))
            || (!self.allow.is_empty() && !self.allow.iter().any(|c| c.contains(client)))
        {
            return Decision::Forbidden;
        }
        let Some(auth) = &self.auth else {
            return Decision::Allow;
        };
        let credentials = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        match auth {
            Auth::Basic {
                challenge,
                users,
                dummy,
                verified,
            } => {
                let raw = credentials
                    .and_then(|c| {
                        c.strip_prefix("Basic ")
                            .or_else(|| c.strip_prefix("basic "))
                    })
                    .and_then(|b64| {
                        base64::engine::general_purpose::STANDARD
                            .decode(b64.trim())
                            .ok()
                    });
                let Some(raw) = raw else {
                    return Decision::Unauthorized(challenge.clone());
                };
                match check_basic(&raw, users, dummy, verified).await {
                    Some(true) => Decision::Allow,
                    Some(false) => Decision::Unauthorized(challenge.clone()),
                    None => Decision::Busy,
                }
            }
            Auth::Bearer { challenge, digests } => {
                let ok = credentials
                    .and_then(|c| {
                        c.strip_prefix("Bearer ")
                            .or_else(|| c.strip_prefix("bearer "))
                    })
                    .is_some_and(|token| digests.contains(&sha256(token.trim().as_bytes())));
                if ok {
                    Decision::Allow
                } else {
                    Decision::Unauthorized(challenge.clone())
                }
            }
        }
    }
}

/// `user:password` against the users; `None` when no check slot freed up in time.
async fn check_basic(
    raw: &[u8],
    users: &[(String, Arc<str>)],
    dummy: &Arc<str>,
    verified: &Mutex<HashMap<[u8; 32], Instant>>,
) -> Option<bool> {
    let key = sha256(raw);
    let now = Instant::now();
    if verified
        .lock()
        .expect("auth cache")
        .get(&key)
        .is_some_and(|at| now.duration_since(*at) < VERIFIED_TTL)
    {
        return Some(true);
    }
    let (user, password) = std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.split_once(':'))
        .unwrap_or(("", ""));
    let known = users
        .iter()
        .find(|(u, _)| u == user)
        .map(|(_, h)| h.clone());
    // An unknown user costs one argon2 run too.
    let hash = known.clone().unwrap_or_else(|| dummy.clone());
    let password = password.as_bytes().to_vec();
    let slot = tokio::time::timeout(CHECK_QUEUE_WAIT, check_slots().acquire_owned())
        .await
        .ok()?
        .ok()?;
    // The slot goes with the check: a client that resets its request (h2 RST_STREAM) does not
    // free it while argon2 still runs.
    let matched = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        verify(&password, &hash)
    })
    .await
    .unwrap_or(false);
    let good = matched && known.is_some();
    if good {
        let mut cache = verified.lock().expect("auth cache");
        if cache.len() >= VERIFIED_CACHE_MAX {
            cache.retain(|_, at| now.duration_since(*at) < VERIFIED_TTL);
            if cache.len() >= VERIFIED_CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(key, now);
    }
    Some(good)
}

/// `sha256:<hex>` of a bearer token, for the config.
#[must_use]
pub fn token_digest(token: &str) -> String {
    let d = sha256(token.as_bytes());
    let mut s = String::from("sha256:");
    for b in d {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// An argon2id PHC string for a password, for the config.
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::{PasswordHasher, password_hash::SaltString};
    let mut salt_bytes = [0u8; 16];
    getrandom(&mut salt_bytes)?;
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

fn getrandom(buf: &mut [u8]) -> Result<(), String> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(|e| format!("reading /dev/urandom: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, pw: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {v}")).unwrap(),
        );
        h
    }

    #[tokio::test]
    async fn address_rules() {
        let a = Access::compile(
            &["10.0.0.0/8".parse().unwrap()],
            &["10.9.0.0/16".parse().unwrap()],
            None,
        )
        .unwrap();
        let h = HeaderMap::new();
        assert_eq!(
            a.check("10.1.1.1".parse().unwrap(), &h).await,
            Decision::Allow
        );
        assert_eq!(
            a.check("10.9.1.1".parse().unwrap(), &h).await,
            Decision::Forbidden
        );
        assert_eq!(
            a.check("192.0.2.1".parse().unwrap(), &h).await,
            Decision::Forbidden
        );
    }

    #[tokio::test]
    async fn basic_auth_against_argon2() {
        let hash = hash_password("s3cret").unwrap();
        let auth = AuthConfig::Basic {
            realm: "ops".into(),
            users: [("alice".to_owned(), hash)].into(),
        };
        let a = Access::compile(&[], &[], Some(&auth)).unwrap();
        let ip = "192.0.2.1".parse().unwrap();
        assert_eq!(
            a.check(ip, &basic("alice", "s3cret")).await,
            Decision::Allow
        );
        assert_eq!(
            a.check(ip, &basic("alice", "s3cret")).await,
            Decision::Allow,
            "cached"
        );
        let Decision::Unauthorized(c) = a.check(ip, &basic("alice", "wrong")).await else {
            panic!()
        };
        assert_eq!(c, "Basic realm=\"ops\"");
        assert!(matches!(
            a.check(ip, &basic("bob", "s3cret")).await,
            Decision::Unauthorized(_)
        ));
        assert!(matches!(
            a.check(ip, &HeaderMap::new()).await,
            Decision::Unauthorized(_)
        ));
        let bad = AuthConfig::Basic {
            realm: "x".into(),
            users: [("a".to_owned(), "plain".to_owned())].into(),
        };
        assert!(compile_auth(&bad).unwrap_err().contains("hash-password"));
    }

    #[test]
    fn unknown_users_cost_a_hash_with_the_same_parameters() {
        let hash = hash_password("s3cret").unwrap();
        let dummy = dummy_hash(&hash).unwrap();
        let (a, b) = (
            PasswordHash::new(&hash).unwrap(),
            PasswordHash::new(&dummy).unwrap(),
        );
        assert_eq!(a.algorithm, b.algorithm);
        assert_eq!(
            argon2::Params::try_from(&a).unwrap(),
            argon2::Params::try_from(&b).unwrap()
        );
        assert_ne!(a.salt, b.salt);
        assert!(!verify(b"s3cret", &dummy));
    }

    #[tokio::test]
    async fn bearer_tokens_against_sha256() {
        let auth = AuthConfig::Bearer {
            realm: "api".into(),
            tokens: vec![token_digest("tok-1")],
        };
        let a = Access::compile(&[], &[], Some(&auth)).unwrap();
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer tok-1"));
        assert_eq!(
            a.check("192.0.2.1".parse().unwrap(), &h).await,
            Decision::Allow
        );
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer tok-2"));
        assert!(matches!(
            a.check("192.0.2.1".parse().unwrap(), &h).await,
            Decision::Unauthorized(_)
        ));
        assert!(
            compile_auth(&AuthConfig::Bearer {
                realm: "x".into(),
                tokens: vec!["abc".into()]
            })
            .is_err()
        );
    }
}
