//! A small packet builder: Ethernet (with optional VLAN tags) carrying IPv4 (with options) or
//! IPv6, carrying a TCP SYN. Checksums are left zero: the filter never looks at them.
use std::net::{Ipv4Addr, Ipv6Addr};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;

fn tcp_syn() -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&40000u16.to_be_bytes());
    t[2..4].copy_from_slice(&80u16.to_be_bytes());
    t[12] = 5 << 4; // data offset
    t[13] = 0x02; // SYN
    t
}

/// An Ethernet frame; `tags` are (TPID, VLAN id) pairs, outermost first.
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

/// An IPv4 packet with `options_words` 32-bit words of options (IHL = 5 + options_words).
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, options_words: u8) -> Vec<u8> {
    let ihl = 5 + options_words;
    let payload = tcp_syn();
    let total = usize::from(ihl) * 4 + payload.len();
    let mut h = vec![0u8; usize::from(ihl) * 4];
    h[0] = 0x40 | ihl;
    h[2..4].copy_from_slice(&u16::try_from(total).unwrap().to_be_bytes());
    h[8] = 64; // TTL
    h[9] = 6; // TCP
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    for b in &mut h[20..] {
        *b = 1; // NOP options
    }
    h.extend_from_slice(&payload);
    h
}

/// An IPv6 packet carrying a TCP SYN.
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let payload = tcp_syn();
    let mut h = vec![0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
    h[6] = 6;
    h[7] = 64;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    h.extend_from_slice(&payload);
    h
}

/// An IPv4 TCP frame with the given flags byte (0x02 SYN, 0x10 ACK, 0x12 SYN+ACK).
pub fn v4_tcp_frame(src: &str, flags: u8) -> Vec<u8> {
    let mut f = v4_frame(src);
    f[14 + 20 + 13] = flags;
    f
}

/// Frame helpers for the fixtures.
pub fn v4_frame(src: &str) -> Vec<u8> {
    ethernet(
        &[],
        ETH_P_IP,
        &ipv4(src.parse().unwrap(), Ipv4Addr::new(10, 255, 0, 1), 0),
    )
}

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

pub fn v6_frame(src: &str) -> Vec<u8> {
    ethernet(
        &[],
        ETH_P_IPV6,
        &ipv6(src.parse().unwrap(), "2001:db8:ff::1".parse().unwrap()),
    )
}

pub fn vlan_v4_frame(src: &str) -> Vec<u8> {
    ethernet(
        &[(ETH_P_8021Q, 100)],
        ETH_P_IP,
        &ipv4(src.parse().unwrap(), Ipv4Addr::new(10, 255, 0, 1), 0),
    )
}

pub fn qinq_v4_frame(src: &str) -> Vec<u8> {
    ethernet(
        &[(ETH_P_8021AD, 10), (ETH_P_8021Q, 100)],
        ETH_P_IP,
        &ipv4(src.parse().unwrap(), Ipv4Addr::new(10, 255, 0, 1), 0),
    )
}

pub fn qinq_v6_frame(src: &str) -> Vec<u8> {
    ethernet(
        &[(ETH_P_8021AD, 10), (ETH_P_8021Q, 100)],
        ETH_P_IPV6,
        &ipv6(src.parse().unwrap(), "2001:db8:ff::1".parse().unwrap()),
    )
}

/// Three VLAN tags: more than the parser follows, so the frame counts as non-IP.
pub fn triple_tagged_v4_frame(src: &str) -> Vec<u8> {
    ethernet(
        &[(ETH_P_8021AD, 1), (ETH_P_8021Q, 2), (ETH_P_8021Q, 3)],
        ETH_P_IP,
        &ipv4(src.parse().unwrap(), Ipv4Addr::new(10, 255, 0, 1), 0),
    )
}

pub fn arp_frame() -> Vec<u8> {
    ethernet(&[], ETH_P_ARP, &[0u8; 28])
}

/// `frame` cut to `len` bytes.
pub fn truncated(mut frame: Vec<u8>, len: usize) -> Vec<u8> {
    frame.truncate(len);
    frame
}

/// An IPv4 frame whose header claims a version other than 4.
pub fn bad_version_v4_frame(src: &str) -> Vec<u8> {
    let mut f = v4_frame(src);
    f[14] = 0x55;
    f
}

/// An IPv4 frame with IHL below 5.
pub fn bad_ihl_v4_frame(src: &str) -> Vec<u8> {
    let mut f = v4_frame(src);
    f[14] = 0x44;
    f
}
