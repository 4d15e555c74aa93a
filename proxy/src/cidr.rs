//! IP prefixes as operators write them: `10.0.0.0/8`, `192.0.2.7` (a /32), `2001:db8::/32`.
use std::{fmt, net::IpAddr, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{input:?} is not an IP address or CIDR (expected e.g. 192.0.2.0/24 or 2001:db8::/32)")]
    Syntax { input: String },
    #[error("{input:?}: prefix length /{len} is too long for {family} (at most /{max})")]
    PrefixTooLong {
        input: String,
        len: u32,
        family: &'static str,
        max: u8,
    },
    #[error("{input:?} has host bits set after the /{len} prefix; did you mean {suggestion}?")]
    HostBits {
        input: String,
        len: u8,
        suggestion: Cidr,
    },
}

/// A network prefix with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

/// An IPv4-mapped IPv6 prefix (`::ffff:a.b.c.d/96+n`) as the IPv4 prefix it names (`/n`):
/// clients, lists and rules all speak of an IPv4 client in one form.
fn canonical(addr: IpAddr, len: u8) -> (IpAddr, u8) {
    match addr {
        IpAddr::V6(v6) if len >= 96 => match v6.to_ipv4_mapped() {
            Some(v4) => (IpAddr::V4(v4), len - 96),
            None => (addr, len),
        },
        _ => (addr, len),
    }
}

impl Cidr {
    /// A prefix of `len` bits of `addr`; host bits are cleared (an IPv4-mapped IPv6 prefix
    /// becomes the IPv4 prefix).
    #[must_use]
    pub fn new_truncating(addr: IpAddr, len: u8) -> Self {
        let (addr, len) = canonical(addr, len);
        Self {
            addr: mask(addr, len),
            len,
        }
    }

    /// The single address `addr` (/32 or /128).
    #[must_use]
    pub fn host(addr: IpAddr) -> Self {
        let addr = addr.to_canonical();
        Self {
            addr,
            len: max_len(addr),
        }
    }

    #[must_use]
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    #[must_use]
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    #[must_use]
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// Whether the two prefixes share any address (one contains the other).
    #[must_use]
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }

    /// Whether `ip` lies inside this prefix.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.len) == self.addr
    }
}

fn max_len(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            IpAddr::V6((bits & m).into())
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let syntax = || CidrError::Syntax {
            input: input.to_owned(),
        };
        let (addr_text, len_text) = match input.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (input, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| syntax())?;
        let max = max_len(addr);
        let len = match len_text {
            None => max,
            Some(l) => {
                if l.is_empty() || !l.bytes().all(|b| b.is_ascii_digit()) || l.len() > 3 {
                    return Err(syntax());
                }
                let n: u32 = l.parse().map_err(|_| syntax())?;
                if n > u32::from(max) {
                    return Err(CidrError::PrefixTooLong {
                        input: input.to_owned(),
                        len: n,
                        family: if addr.is_ipv4() { "IPv4" } else { "IPv6" },
                        max,
                    });
                }
                u8::try_from(n).expect("at most 128")
            }
        };
        let cidr = Self::new_truncating(addr, len);
        if cidr.addr != canonical(addr, len).0 {
            return Err(CidrError::HostBits {
                input: input.to_owned(),
                len,
                suggestion: cidr,
            });
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prefixes_and_hosts() {
        assert_eq!(
            "10.0.0.0/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            "192.0.2.7".parse::<Cidr>().unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert_eq!(
            "2001:db8::/32".parse::<Cidr>().unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
        assert_eq!("0.0.0.0/0".parse::<Cidr>().unwrap().prefix_len(), 0);
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        let e = "10.0.0.1/8".parse::<Cidr>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"10.0.0.1/8\" has host bits set after the /8 prefix; did you mean 10.0.0.0/8?"
        );
        assert!(matches!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::PrefixTooLong { .. })
        ));
        assert!(matches!(
            "::/129".parse::<Cidr>(),
            Err(CidrError::PrefixTooLong { .. })
        ));
        for bad in [
            "",
            "10.0.0",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "host.example",
            "1.2.3.4/8/9",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn ipv4_mapped_ipv6_is_the_ipv4_prefix() {
        let c: Cidr = "::ffff:192.0.2.0/120".parse().unwrap();
        assert_eq!(c.to_string(), "192.0.2.0/24");
        assert_eq!(
            "::ffff:192.0.2.7".parse::<Cidr>().unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert!(c.contains("::ffff:192.0.2.9".parse().unwrap()));
        assert!(c.contains("192.0.2.9".parse().unwrap()));
        assert_eq!(
            Cidr::host("::ffff:10.0.0.1".parse().unwrap()).to_string(),
            "10.0.0.1/32"
        );
        assert_eq!(
            "::ffff:0:0/96".parse::<Cidr>().unwrap().to_string(),
            "0.0.0.0/0",
            "every mapped address is every IPv4 address"
        );
        assert_eq!("::/64".parse::<Cidr>().unwrap().to_string(), "::/64");
        assert!("::ffff:192.0.2.7/120".parse::<Cidr>().is_err(), "host bits");
    }

    #[test]
    fn overlaps() {
        let c = |s: &str| s.parse::<Cidr>().unwrap();
        assert!(c("10.0.0.0/8").overlaps(&c("10.1.2.3")));
        assert!(c("10.1.2.3").overlaps(&c("10.0.0.0/8")));
        assert!(!c("10.0.0.0/8").overlaps(&c("11.0.0.0/8")));
        assert!(!c("10.0.0.0/8").overlaps(&c("::/0")));
    }

    #[test]
    fn contains() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains("10.1.255.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
    }
}
