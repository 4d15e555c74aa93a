//! A small packet builder: Ethernet (with optional VLAN tags) carrying IPv4 (with options, or
//! a fragment) or IPv6 (with extension headers), carrying a TCP SYN. Checksums are left zero:
//! the filter never looks at them.
use std::net::{Ipv4Addr, Ipv6Addr};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;

const IPPROTO_TCP: u8 = 6;
const TCP_SYN: u8 = 0x02;

/// A TCP header with the given flags byte (0x02 SYN, 0x10 ACK, 0x12 SYN+ACK).
fn tcp(flags: u8) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&40000u16.to_be_bytes());
    t[2..4].copy_from_slice(&80u16.to_be_bytes());
    t[12] = 5 << 4; // data offset
    t[13] = flags;
    t
}

fn tcp_syn() -> Vec<u8> {
    tcp(TCP_SYN)
}

/// An Ethernet frame; `tags` are (TPID, VLAN id) pairs, outermost first.
#[must_use]
pub fn ethernet(tags: &[(u16, u16)], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    for (tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4 packet with `options_words` 32-bit words of options (IHL = 5 + `options_words`).
#[must_use]
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, options_words: u8) -> Vec<u8> {
    ipv4_packet(src, dst, options_words, 0, &tcp_syn())
}

/// An IPv4 packet carrying `payload` as TCP; `frag` is the flags/fragment-offset field
/// (0x2000 more fragments, the low 13 bits the offset in 8-byte units).
fn ipv4_packet(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    options_words: u8,
    frag: u16,
    payload: &[u8],
) -> Vec<u8> {
    let ihl = 5 + options_words;
    let total = usize::from(ihl) * 4 + payload.len();
    let mut h = vec![0u8; usize::from(ihl) * 4];
    h[0] = 0x40 | ihl;
    h[2..4].copy_from_slice(&u16::try_from(total).unwrap().to_be_bytes());
    h[6..8].copy_from_slice(&frag.to_be_bytes());
    h[8] = 64; // TTL
    h[9] = IPPROTO_TCP;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    for b in &mut h[20..] {
        *b = 1; // NOP options
    }
    h.extend_from_slice(payload);
    h
}

/// An IPv6 packet carrying a TCP SYN.
#[must_use]
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    ipv6_chain(src, dst, &[], TCP_SYN)
}

/// An IPv6 extension header, for [`ipv6_chain`].
#[derive(Clone, Copy, Debug)]
pub enum Ext {
    /// Hop-by-hop options, this many bytes in all (a multiple of 8 from 8 to 2048).
    HopByHop(usize),
    /// A routing header (type 4, segment routing) with no segment left to visit, so the host
    /// goes on to the next header: 24 bytes.
    Routing,
    /// Destination options, this many bytes in all (a multiple of 8 from 8 to 2048).
    DestOpts(usize),
    /// A fragment header: the offset in 8-byte units, and whether more fragments follow.
    Fragment { offset: u16, more: bool },
    /// An authentication header with a 12-byte ICV: 24 bytes.
    Auth,
}

impl Ext {
    fn next_header(self) -> u8 {
        match self {
            Ext::HopByHop(_) => 0,
            Ext::Routing => 43,
            Ext::Fragment { .. } => 44,
            Ext::Auth => 51,
            Ext::DestOpts(_) => 60,
        }
    }

    /// The header's bytes, announcing `next` as the header that follows it.
    fn bytes(self, next: u8) -> Vec<u8> {
        let options = |len: usize| {
            assert!(
                len.is_multiple_of(8) && (8..=2048).contains(&len),
                "{len}-byte options header"
            );
            // Pad1 options (zero bytes) fill the header: a valid, if odd, option area.
            let mut h = vec![0u8; len];
            h[1] = u8::try_from(len / 8 - 1).unwrap();
            h
        };
        let mut h = match self {
            Ext::HopByHop(len) | Ext::DestOpts(len) => options(len),
            Ext::Routing => {
                let mut h = vec![0u8; 24];
                h[1] = 2; // 16 bytes after the first 8
                h[2] = 4; // segment routing
                h[3] = 0; // segments left
                h[8..24]
                    .copy_from_slice(&Ipv6Addr::new(0x2001, 0xdb8, 0xee, 0, 0, 0, 0, 1).octets());
                h
            }
            Ext::Fragment { offset, more } => {
                let mut h = vec![0u8; 8];
                let field = (offset << 3) | u16::from(more);
                h[2..4].copy_from_slice(&field.to_be_bytes());
                h[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes()); // identification
                h
            }
            Ext::Auth => {
                let mut h = vec![0u8; 24];
                h[1] = 4; // in 4-byte units, minus 2
                h[4..8].copy_from_slice(&0x100u32.to_be_bytes()); // SPI
                h[8..12].copy_from_slice(&1u32.to_be_bytes()); // sequence number
                h
            }
        };
        h[0] = next;
        h
    }
}

/// An IPv6 packet whose fixed header is followed by `chain`, then a TCP header with `flags`.
/// After a fragment header that is not the first fragment, the bytes that look like a TCP
/// header are payload (the fragment's data), as an attacker would place them.
///
/// # Panics
///
/// If the extension headers and the TCP header come to more than 65 535 bytes.
#[must_use]
pub fn ipv6_chain(src: Ipv6Addr, dst: Ipv6Addr, chain: &[Ext], flags: u8) -> Vec<u8> {
    let mut payload = Vec::new();
    for (i, ext) in chain.iter().enumerate() {
        let next = chain.get(i + 1).map_or(IPPROTO_TCP, |e| e.next_header());
        payload.extend_from_slice(&ext.bytes(next));
    }
    payload.extend_from_slice(&tcp(flags));
    let mut h = vec![0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
    h[6] = chain.first().map_or(IPPROTO_TCP, |e| e.next_header());
    h[7] = 64;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    h.extend_from_slice(&payload);
    h
}

/// An IPv4 TCP frame with the given flags byte (0x02 SYN, 0x10 ACK, 0x12 SYN+ACK).
#[must_use]
pub fn v4_tcp_frame(src: &str, flags: u8) -> Vec<u8> {
    let mut f = v4_frame(src);
    f[14 + 20 + 13] = flags;
    f
}

/// An IPv4 TCP SYN frame from `src` (the first of the frame helpers for the fixtures).
///
/// # Panics
///
/// If `src` is not an IPv4 address.
#[must_use]
pub fn v4_frame(src: &str) -> Vec<u8> {
    ethernet(
        &[],
        ETH_P_IP,
        &ipv4(src.parse().unwrap(), Ipv4Addr::new(10, 255, 0, 1), 0),
    )
}

/// Like [`v4_frame`], with `options_words` 32-bit words of IP options.
///
/// # Panics
///
/// If `src` is not an IPv4 address.
#[must_use]
pub fn v4_frame_with_options(src: &str, options_words: u8) -> Vec<u8> {
    ethernet(
        &[],
        ETH_P_IP,
        &ipv4(
            src.parse().unwrap(),
            Ipv4Addr::new(10, 255, 0, 1),
            options_words,
        ),
    )
}

/// An IPv6 TCP SYN frame from `src`.
///
/// # Panics
///
/// If `src` is not an IPv6 address.
#[must_use]
pub fn v6_frame(src: &str) -> Vec<u8> {
    ethernet(
        &[],
        ETH_P_IPV6,
        &ipv6(src.parse().unwrap(), "2001:db8:ff::1".parse().unwrap()),
    )
}

/// An IPv6 TCP frame whose fixed header is followed by `chain` (see [`ipv6_chain`]).
///
/// # Panics
///
/// If `src` is not an IPv6 address.
#[must_use]
pub fn v6_chain_frame(src: &str, chain: &[Ext], flags: u8) -> Vec<u8> {
    ethernet(
        &[],
        ETH_P_IPV6,
        &ipv6_chain(
            src.parse().unwrap(),
            "2001:db8:ff::1".parse().unwrap(),
            chain,
            flags,
        ),
    )
}

/// An IPv4 fragment whose first 20 bytes of data look like a TCP SYN: `offset` in 8-byte
/// units (0 for the first fragment), `more` for the more-fragments flag.
///
/// # Panics
///
/// If `src` is not an IPv4 address.
#[must_use]
pub fn v4_fragment_frame(src: &str, offset: u16, more: bool) -> Vec<u8> {
    let frag = offset | if more { 0x2000 } else { 0 };
    ethernet(
        &[],
        ETH_P_IP,
        &ipv4_packet(
            src.parse().unwrap(),
            Ipv4Addr::new(10, 255, 0, 1),
            0,
            frag,
            &tcp_syn(),
        ),
    )
}

/// A first IPv4 fragment carrying only the first 8 bytes of a TCP header (ports and sequence
/// number): the flags would come in the next fragment (RFC 1858's tiny fragment).
///
/// # Panics
///
/// If `src` is not an IPv4 address.
#[must_use]
pub fn v4_tiny_first_fragment_frame(src: &str) -> Vec<u8> {
    ethernet(
        &[],
        ETH_P_IP,
        &ipv4_packet(
            src.parse().unwrap(),
            Ipv4Addr::new(10, 255, 0, 1),
            0,
            0x2000,
            &tcp_syn()[..8],
        ),
    )
}

/// A QinQ-tagged IPv4 TCP frame with `options_words` words of IP options and the given TCP
/// flags: the longest IPv4 header path through the parser.
///
/// # Panics
///
/// If `src` is not an IPv4 address.
#[must_use]
pub fn qinq_v4_options_frame(src: &str, options_words: u8, flags: u8) -> Vec<u8> {
    ethernet(
        &[(ETH_P_8021AD, 10), (ETH_P_8021Q, 100)],
        ETH_P_IP,
        &ipv4_packet(
            src.parse().unwrap(),
            Ipv4Addr::new(10, 255, 0, 1),
            options_words,
            0,
            &tcp(flags),
        ),
    )
}

/// An IPv4 TCP SYN frame from `src` with one VLAN tag (802.1Q).
///
/// # Panics
///
/// If `src` is not an IPv4 address.
#[must_use]
pub fn vlan_v4_frame(src: &str) -> Vec<u8> {
    ethernet(
        &[(ETH_P_8021Q, 100)],
        ETH_P_IP,
        &ipv4(src.parse().unwrap(), Ipv4Addr::new(10, 255, 0, 1), 0),
    )
}

/// An IPv4 TCP SYN frame from `src` with two VLAN tags (802.1ad, then 802.1Q).
///
/// # Panics
///
/// If `src` is not an IPv4 address.
#[must_use]
pub fn qinq_v4_frame(src: &str) -> Vec<u8> {
    ethernet(
        &[(ETH_P_8021AD, 10), (ETH_P_8021Q, 100)],
        ETH_P_IP,
        &ipv4(src.parse().unwrap(), Ipv4Addr::new(10, 255, 0, 1), 0),
    )
}

/// An IPv6 TCP SYN frame from `src` with two VLAN tags (802.1ad, then 802.1Q).
///
/// # Panics
///
/// If `src` is not an IPv6 address.
#[must_use]
pub fn qinq_v6_frame(src: &str) -> Vec<u8> {
    ethernet(
        &[(ETH_P_8021AD, 10), (ETH_P_8021Q, 100)],
        ETH_P_IPV6,
        &ipv6(src.parse().unwrap(), "2001:db8:ff::1".parse().unwrap()),
    )
}

/// Three VLAN tags: more than the parser follows, so the frame counts as non-IP.
///
/// # Panics
///
/// If `src` is not an IPv4 address.
#[must_use]
pub fn triple_tagged_v4_frame(src: &str) -> Vec<u8> {
    ethernet(
        &[(ETH_P_8021AD, 1), (ETH_P_8021Q, 2), (ETH_P_8021Q, 3)],
        ETH_P_IP,
        &ipv4(src.parse().unwrap(), Ipv4Addr::new(10, 255, 0, 1), 0),
    )
}

#[must_use]
pub fn arp_frame() -> Vec<u8> {
    ethernet(&[], ETH_P_ARP, &[0u8; 28])
}

/// `frame` cut to `len` bytes.
#[must_use]
pub fn truncated(mut frame: Vec<u8>, len: usize) -> Vec<u8> {
    frame.truncate(len);
    frame
}

/// An IPv4 frame whose header claims a version other than 4.
#[must_use]
pub fn bad_version_v4_frame(src: &str) -> Vec<u8> {
    let mut f = v4_frame(src);
    f[14] = 0x55;
    f
}

/// An IPv4 frame with IHL below 5.
#[must_use]
pub fn bad_ihl_v4_frame(src: &str) -> Vec<u8> {
    let mut f = v4_frame(src);
    f[14] = 0x44;
    f
}

/// A TCP segment with valid IPv4/IPv6 and TCP checksums, for fixtures and for raw sockets.
/// The methods panic on what a test should never build (lengths past 65 535, mixed
/// families) or parse (a frame too short for its headers).
#[derive(Clone, Debug)]
pub struct Segment {
    pub src: std::net::IpAddr,
    pub dst: std::net::IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    /// TCP options, padded here to a multiple of 4 with EOL.
    pub options: Vec<u8>,
    pub payload: Vec<u8>,
}

/// The options a Linux client sends in its SYN: MSS 1460, SACK permitted, timestamps
/// (`tsval`), window scale 7.
#[must_use]
pub fn linux_syn_options(tsval: u32) -> Vec<u8> {
    let mut o = vec![2, 4, 0x05, 0xb4, 4, 2, 8, 10];
    o.extend_from_slice(&tsval.to_be_bytes());
    o.extend_from_slice(&0u32.to_be_bytes());
    o.extend_from_slice(&[1, 3, 3, 7]);
    o
}

/// The Internet checksum of `bytes` (odd length padded with zero), folded and complemented.
///
/// # Panics
///
/// Never: the folded sum fits 16 bits.
#[must_use]
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in bytes.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(u16::try_from(sum).unwrap())
}

fn pseudo_header(src: std::net::IpAddr, dst: std::net::IpAddr, len: usize) -> Vec<u8> {
    let mut p = Vec::new();
    match (src, dst) {
        (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => {
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&[0, IPPROTO_TCP]);
            p.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
        }
        (std::net::IpAddr::V6(s), std::net::IpAddr::V6(d)) => {
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&u32::try_from(len).unwrap().to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, IPPROTO_TCP]);
        }
        _ => panic!("mixed address families"),
    }
    p
}

impl Segment {
    /// The TCP header and payload, checksum filled in.
    ///
    /// # Panics
    ///
    /// If the options are longer than 40 bytes.
    #[must_use]
    pub fn tcp_bytes(&self) -> Vec<u8> {
        let mut options = self.options.clone();
        while !options.len().is_multiple_of(4) {
            options.push(0);
        }
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&self.sport.to_be_bytes());
        t[2..4].copy_from_slice(&self.dport.to_be_bytes());
        t[4..8].copy_from_slice(&self.seq.to_be_bytes());
        t[8..12].copy_from_slice(&self.ack.to_be_bytes());
        t[12] = u8::try_from((20 + options.len()) / 4).unwrap() << 4;
        t[13] = self.flags;
        t[14..16].copy_from_slice(&64240u16.to_be_bytes());
        t.extend_from_slice(&options);
        t.extend_from_slice(&self.payload);
        let mut sum = pseudo_header(self.src, self.dst, t.len());
        sum.extend_from_slice(&t);
        let check = internet_checksum(&sum);
        t[16..18].copy_from_slice(&check.to_be_bytes());
        t
    }

    /// The IP packet (no link header), both checksums valid.
    ///
    /// # Panics
    ///
    /// If the addresses are of two families, or the packet is longer than 65 535 bytes.
    #[must_use]
    pub fn ip_packet(&self) -> Vec<u8> {
        let tcp = self.tcp_bytes();
        match (self.src, self.dst) {
            (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => {
                let mut h = vec![0u8; 20];
                h[0] = 0x45;
                h[2..4].copy_from_slice(&u16::try_from(20 + tcp.len()).unwrap().to_be_bytes());
                h[6] = 0x40;
                h[8] = 64;
                h[9] = IPPROTO_TCP;
                h[12..16].copy_from_slice(&s.octets());
                h[16..20].copy_from_slice(&d.octets());
                let check = internet_checksum(&h);
                h[10..12].copy_from_slice(&check.to_be_bytes());
                h.extend_from_slice(&tcp);
                h
            }
            (std::net::IpAddr::V6(s), std::net::IpAddr::V6(d)) => {
                let mut h = vec![0u8; 40];
                h[0] = 0x60;
                h[4..6].copy_from_slice(&u16::try_from(tcp.len()).unwrap().to_be_bytes());
                h[6] = IPPROTO_TCP;
                h[7] = 64;
                h[8..24].copy_from_slice(&s.octets());
                h[24..40].copy_from_slice(&d.octets());
                h.extend_from_slice(&tcp);
                h
            }
            _ => panic!("mixed address families"),
        }
    }

    /// The Ethernet frame.
    #[must_use]
    pub fn frame(&self) -> Vec<u8> {
        let ethertype = if self.src.is_ipv4() {
            ETH_P_IP
        } else {
            ETH_P_IPV6
        };
        ethernet(&[], ethertype, &self.ip_packet())
    }

    /// Parses an Ethernet frame holding IPv4/IPv6 (no options or extension headers) and TCP,
    /// checking both checksums and the lengths; the error says what is wrong.
    ///
    /// # Errors
    ///
    /// What does not add up in the frame.
    ///
    /// # Panics
    ///
    /// If the frame is shorter than its headers.
    pub fn parse(frame: &[u8]) -> Result<(Self, u8), String> {
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        let ip = &frame[14..];
        let (src, dst, tcp, ttl): (std::net::IpAddr, std::net::IpAddr, &[u8], u8) = match ethertype
        {
            ETH_P_IP => {
                if ip[0] != 0x45 {
                    return Err(format!("IPv4 version/IHL {:#x}", ip[0]));
                }
                if internet_checksum(&ip[..20]) != 0 {
                    return Err("bad IPv4 header checksum".into());
                }
                let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
                // Shorter only by Ethernet's padding to its 60-byte minimum.
                if total != ip.len() && !(total < ip.len() && frame.len() == 60) {
                    return Err(format!("IPv4 total length {total}, frame has {}", ip.len()));
                }
                let s: [u8; 4] = ip[12..16].try_into().unwrap();
                let d: [u8; 4] = ip[16..20].try_into().unwrap();
                (s.into(), d.into(), &ip[20..total], ip[8])
            }
            ETH_P_IPV6 => {
                let payload = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
                if payload + 40 != ip.len() {
                    return Err(format!(
                        "IPv6 payload length {payload}, frame has {}",
                        ip.len() - 40
                    ));
                }
                let s: [u8; 16] = ip[8..24].try_into().unwrap();
                let d: [u8; 16] = ip[24..40].try_into().unwrap();
                (s.into(), d.into(), &ip[40..], ip[7])
            }
            other => return Err(format!("ethertype {other:#x}")),
        };
        let mut sum = pseudo_header(src, dst, tcp.len());
        sum.extend_from_slice(tcp);
        if internet_checksum(&sum) != 0 {
            return Err("bad TCP checksum".into());
        }
        let header_len = usize::from(tcp[12] >> 4) * 4;
        Ok((
            Self {
                src,
                dst,
                sport: u16::from_be_bytes([tcp[0], tcp[1]]),
                dport: u16::from_be_bytes([tcp[2], tcp[3]]),
                seq: u32::from_be_bytes(tcp[4..8].try_into().unwrap()),
                ack: u32::from_be_bytes(tcp[8..12].try_into().unwrap()),
                flags: tcp[13],
                options: tcp[20..header_len].to_vec(),
                payload: tcp[header_len..].to_vec(),
            },
            ttl,
        ))
    }
}
