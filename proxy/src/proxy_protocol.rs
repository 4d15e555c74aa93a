//! PROXY protocol (HAProxy specification, versions 1 and 2).
//!
//! A load balancer or another proxy in front of us can prepend a PROXY header to a TCP
//! connection to tell us who the original client was. [`read_header`] parses such a header
//! (either version, detected from its first bytes) from an untrusted peer, and
//! [`encode_v1`] / [`encode_v2`] build one for the upstreams we connect to.
//!
//! [`read_header`] consumes exactly the bytes of the header and never a byte after it, so the
//! application data that follows stays unread in the stream. It never waits for more bytes
//! than the shortest valid header still needs, which keeps it from stalling on a peer that
//! sends a valid header and then waits for our answer. Callers should still bound it with a
//! timeout, since a peer may send nothing at all.
//!
//! Decoded addresses are reported exactly as they appear on the wire: an IPv4-mapped IPv6
//! address (`::ffff:a.b.c.d`) stays an IPv6 address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

/// Maximum length of a PROXY v1 line, CRLF included (from the specification).
const V1_MAX_LEN: usize = 107;

/// Largest PROXY v2 payload (addresses and TLVs after the 16-byte fixed header) we accept.
const V2_MAX_PAYLOAD: usize = 4096;

/// The 12-byte signature that starts every PROXY v2 header.
const V2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

/// The 6 bytes that start every PROXY v1 header.
const V1_PREFIX: &[u8; 6] = b"PROXY ";

/// Length of the fixed part of a PROXY v2 header (signature, version/command, family, length).
const V2_FIXED_LEN: usize = 16;

/// Length of the address block for TCP over IPv4 (two addresses, two ports).
const V2_IPV4_LEN: usize = 12;

/// Length of the address block for TCP over IPv6 (two addresses, two ports).
const V2_IPV6_LEN: usize = 36;

/// What a PROXY header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// LOCAL command (v2) or "PROXY UNKNOWN" (v1): use the real socket addresses.
    Local,
    /// The original client (source) and the address it connected to (destination).
    Proxied {
        /// The original client's address.
        source: SocketAddr,
        /// The address the original client connected to.
        destination: SocketAddr,
    },
}

/// Why a PROXY header could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProxyProtocolError {
    /// The stream does not start with a PROXY v1 or v2 signature.
    #[error("not a PROXY protocol header")]
    NotProxyHeader,
    /// No CRLF within the first 107 bytes of a v1 header.
    #[error("PROXY v1 header longer than {V1_MAX_LEN} bytes")]
    V1TooLong,
    /// The v1 line does not follow the grammar (spacing, CRLF, protocol, field count).
    #[error("malformed PROXY v1 header: {0}")]
    V1Malformed(String),
    /// An address field of a v1 line is not an address of the announced family.
    #[error("invalid address in PROXY v1 header: {0}")]
    V1InvalidAddress(String),
    /// A port field of a v1 line is not a decimal number in 0..=65535.
    #[error("invalid port in PROXY v1 header: {0}")]
    V1InvalidPort(String),
    /// The v2 version nibble is not 2.
    #[error("unsupported PROXY v2 version {0} (only version 2 is defined)")]
    V2UnsupportedVersion(u8),
    /// The v2 command nibble is neither LOCAL (0) nor PROXY (1).
    #[error("unsupported PROXY v2 command {0} (expected LOCAL=0 or PROXY=1)")]
    V2UnsupportedCommand(u8),
    /// The v2 address family/transport byte is not TCP over IPv4/IPv6 or UNSPEC.
    #[error(
        "unsupported PROXY v2 family/protocol 0x{0:02x} (only TCP over IPv4 or IPv6, or UNSPEC)"
    )]
    V2UnsupportedFamily(u8),
    /// The v2 length field is smaller than the address block of the announced family.
    #[error("PROXY v2 length {len} is shorter than the {needed}-byte address block")]
    V2LengthTooShort {
        /// The length announced in the header.
        len: usize,
        /// The size of the address block for the announced family.
        needed: usize,
    },
    /// The v2 length field is larger than we accept.
    #[error("PROXY v2 length {0} exceeds the limit of {V2_MAX_PAYLOAD} bytes")]
    V2LengthTooLong(usize),
    /// The peer closed the connection before the header was complete.
    #[error("connection closed inside the PROXY header")]
    Truncated,
    /// Reading from the connection failed.
    #[error("I/O error while reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one PROXY header (v1 or v2, detected from the first bytes) from `reader` and
/// consumes exactly the header's bytes, never any byte after it (the application data that
/// follows must stay unread).
///
/// The reader is read in small exact pieces, so it may be a raw socket; if it is a buffered
/// reader, keep using that same buffered reader afterwards.
///
/// # Errors
///
/// Returns an error when the stream does not start with a well-formed PROXY header, when the
/// header uses a version, command or address family this module does not support, when the
/// stream ends inside the header ([`ProxyProtocolError::Truncated`]) or when reading fails.
pub async fn read_header<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<ProxyHeader, ProxyProtocolError> {
    // Every valid header is at least 15 bytes long, so reading 6 is always safe. They are read
    // one at a time so that garbage is rejected at its first wrong byte.
    let mut prefix = [0u8; 6];
    read_exact(reader, &mut prefix[..1]).await?;
    let expected: &[u8] = match prefix[0] {
        b'P' => V1_PREFIX,
        0x0D => &V2_SIGNATURE[..6],
        _ => return Err(ProxyProtocolError::NotProxyHeader),
    };
    for i in 1..prefix.len() {
        read_exact(reader, &mut prefix[i..=i]).await?;
        if prefix[i] != expected[i] {
            return Err(ProxyProtocolError::NotProxyHeader);
        }
    }
    if prefix[0] == b'P' {
        read_v1(reader).await
    } else {
        read_v2(reader).await
    }
}

/// `read_exact` that reports the end of the stream as [`ProxyProtocolError::Truncated`].
async fn read_exact<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
) -> Result<(), ProxyProtocolError> {
    match reader.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(ProxyProtocolError::Truncated)
        }
        Err(e) => Err(ProxyProtocolError::Io(e)),
    }
}

/// Reads the rest of a v1 line (after "PROXY ") up to and including its CRLF, then parses it.
async fn read_v1<R: AsyncRead + Unpin>(reader: &mut R) -> Result<ProxyHeader, ProxyProtocolError> {
    let mut line = [0u8; V1_MAX_LEN];
    line[..V1_PREFIX.len()].copy_from_slice(V1_PREFIX);
    let mut len = V1_PREFIX.len();
    loop {
        // The line still needs "\r\n" (2 bytes), or just "\n" after a '\r'. Reading that many
        // at once never goes past the end of a valid line.
        let needed = if line[len - 1] == b'\r' { 1 } else { 2 };
        if len + needed > V1_MAX_LEN {
            return Err(ProxyProtocolError::V1TooLong);
        }
        read_exact(reader, &mut line[len..len + needed]).await?;
        let end = len + needed;
        for i in len..end {
            let (prev, cur) = (line[i - 1], line[i]);
            if prev == b'\r' && cur != b'\n' {
                return Err(malformed("CR not followed by LF"));
            }
            if cur == b'\n' {
                if prev != b'\r' {
                    return Err(malformed("LF not preceded by CR"));
                }
                // By construction the LF is the last byte read; check anyway.
                if i + 1 != end {
                    return Err(malformed("bytes after CRLF"));
                }
                return parse_v1(&line[V1_PREFIX.len()..i - 1]);
            }
        }
        len = end;
    }
}

/// Shorthand for a [`ProxyProtocolError::V1Malformed`].
fn malformed(what: &str) -> ProxyProtocolError {
    ProxyProtocolError::V1Malformed(what.to_owned())
}

/// Parses the v1 line between "PROXY " and CRLF (both excluded).
fn parse_v1(rest: &[u8]) -> Result<ProxyHeader, ProxyProtocolError> {
    // "UNKNOWN" may be followed by anything, which the receiver must ignore.
    if rest == b"UNKNOWN" || rest.starts_with(b"UNKNOWN ") {
        return Ok(ProxyHeader::Local);
    }
    let text = std::str::from_utf8(rest).map_err(|_| malformed("non-ASCII bytes"))?;
    if !text.is_ascii() {
        return Err(malformed("non-ASCII bytes"));
    }
    let mut fields = text.split(' ');
    let mut next = |name: &str| -> Result<&str, ProxyProtocolError> {
        match fields.next() {
            None => Err(ProxyProtocolError::V1Malformed(format!("missing {name}"))),
            Some("") => Err(ProxyProtocolError::V1Malformed(format!(
                "empty {name} (fields must be separated by exactly one space)"
            ))),
            Some(field) => Ok(field),
        }
    };
    let protocol = next("protocol")?;
    let is_v4 = match protocol {
        "TCP4" => true,
        "TCP6" => false,
        other => {
            return Err(ProxyProtocolError::V1Malformed(format!(
                "unknown protocol {other:?} (expected TCP4, TCP6 or UNKNOWN)"
            )));
        }
    };
    let src = next("source address")?;
    let dst = next("destination address")?;
    let src_port = next("source port")?;
    let dst_port = next("destination port")?;
    if fields.next().is_some() {
        return Err(malformed("too many fields"));
    }
    let src_ip = parse_v1_ip(src, is_v4)?;
    let dst_ip = parse_v1_ip(dst, is_v4)?;
    let src_port = parse_v1_port(src_port)?;
    let dst_port = parse_v1_port(dst_port)?;
    Ok(ProxyHeader::Proxied {
        source: SocketAddr::new(src_ip, src_port),
        destination: SocketAddr::new(dst_ip, dst_port),
    })
}

/// Parses a v1 address field, which must be of the family the protocol field announced.
fn parse_v1_ip(field: &str, is_v4: bool) -> Result<IpAddr, ProxyProtocolError> {
    let parsed = if is_v4 {
        field.parse::<Ipv4Addr>().map(IpAddr::V4).ok()
    } else {
        field.parse::<Ipv6Addr>().map(IpAddr::V6).ok()
    };
    parsed.ok_or_else(|| {
        let family = if is_v4 { "IPv4" } else { "IPv6" };
        ProxyProtocolError::V1InvalidAddress(format!("{field:?} is not an {family} address"))
    })
}

/// Parses a v1 port field: 1 to 5 decimal digits, no sign, at most 65535.
fn parse_v1_port(field: &str) -> Result<u16, ProxyProtocolError> {
    let digits_only =
        !field.is_empty() && field.len() <= 5 && field.bytes().all(|b| b.is_ascii_digit());
    digits_only
        .then(|| field.parse::<u16>().ok())
        .flatten()
        .ok_or_else(|| {
            ProxyProtocolError::V1InvalidPort(format!(
                "{field:?} is not a decimal number in 0..=65535"
            ))
        })
}

/// Reads the rest of a v2 header (after the first 6 signature bytes) and parses it.
async fn read_v2<R: AsyncRead + Unpin>(reader: &mut R) -> Result<ProxyHeader, ProxyProtocolError> {
    let mut fixed = [0u8; V2_FIXED_LEN - 6];
    read_exact(reader, &mut fixed).await?;
    if fixed[..6] != V2_SIGNATURE[6..] {
        return Err(ProxyProtocolError::NotProxyHeader);
    }
    let version = fixed[6] >> 4;
    let command = fixed[6] & 0x0F;
    let family = fixed[7];
    let len = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
    if version != 2 {
        return Err(ProxyProtocolError::V2UnsupportedVersion(version));
    }
    if command > 1 {
        return Err(ProxyProtocolError::V2UnsupportedCommand(command));
    }
    if len > V2_MAX_PAYLOAD {
        return Err(ProxyProtocolError::V2LengthTooLong(len));
    }
    let local = command == 0;
    // With LOCAL the family and addresses carry no meaning and must be ignored.
    let needed = match family {
        _ if local => 0,
        0x00 => 0,
        0x11 => V2_IPV4_LEN,
        0x21 => V2_IPV6_LEN,
        other => return Err(ProxyProtocolError::V2UnsupportedFamily(other)),
    };
    if len < needed {
        return Err(ProxyProtocolError::V2LengthTooShort { len, needed });
    }
    // Addresses followed by TLVs, which are consumed but ignored.
    let mut payload = vec![0u8; len];
    read_exact(reader, &mut payload).await?;
    if local || family == 0x00 {
        return Ok(ProxyHeader::Local);
    }
    let (source, destination) = parse_v2_addresses(family, &payload)
        .ok_or(ProxyProtocolError::V2LengthTooShort { len, needed })?;
    Ok(ProxyHeader::Proxied {
        source,
        destination,
    })
}

/// Decodes the address block of a TCP over IPv4 (0x11) or IPv6 (0x21) v2 header; `None` if
/// `payload` is too short or the family is neither.
fn parse_v2_addresses(family: u8, payload: &[u8]) -> Option<(SocketAddr, SocketAddr)> {
    let port = |at: usize| -> Option<u16> {
        let bytes = payload.get(at..at + 2)?;
        Some(u16::from_be_bytes([bytes[0], bytes[1]]))
    };
    match family {
        0x11 => {
            let src: [u8; 4] = payload.get(0..4)?.try_into().ok()?;
            let dst: [u8; 4] = payload.get(4..8)?.try_into().ok()?;
            Some((
                SocketAddr::new(IpAddr::from(src), port(8)?),
                SocketAddr::new(IpAddr::from(dst), port(10)?),
            ))
        }
        0x21 => {
            let src: [u8; 16] = payload.get(0..16)?.try_into().ok()?;
            let dst: [u8; 16] = payload.get(16..32)?.try_into().ok()?;
            Some((
                SocketAddr::new(IpAddr::from(src), port(32)?),
                SocketAddr::new(IpAddr::from(dst), port(34)?),
            ))
        }
        _ => None,
    }
}

/// Brings both addresses to one family: unchanged if they already share one, otherwise the
/// IPv4 one is mapped to IPv6 (`::ffff:a.b.c.d`).
fn same_family(source: SocketAddr, destination: SocketAddr) -> (IpAddr, IpAddr) {
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V6(d)) => (IpAddr::V6(s.to_ipv6_mapped()), IpAddr::V6(d)),
        (IpAddr::V6(s), IpAddr::V4(d)) => (IpAddr::V6(s), IpAddr::V6(d.to_ipv6_mapped())),
        (s, d) => (s, d),
    }
}

/// Encodes a PROXY v2 header (PROXY command, TCP over IPv4 or IPv6; if the two addresses
/// differ in family, map the IPv4 one to IPv6 (`::ffff:a.b.c.d`) and use the IPv6 family).
///
/// IPv6 flow information and scope ids are not carried by the protocol and are dropped.
#[must_use]
#[expect(
    clippy::cast_possible_truncation,
    reason = "the address block lengths are the constants 12 and 36"
)]
pub fn encode_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(V2_FIXED_LEN + V2_IPV6_LEN);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x21); // version 2, command PROXY
    match same_family(source, destination) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(0x11); // AF_INET, STREAM
            out.extend_from_slice(&(V2_IPV4_LEN as u16).to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            out.push(0x21); // AF_INET6, STREAM
            out.extend_from_slice(&(V2_IPV6_LEN as u16).to_be_bytes());
            out.extend_from_slice(&ipv6_octets(s));
            out.extend_from_slice(&ipv6_octets(d));
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    out
}

/// The 16 bytes of an address as IPv6 (IPv4 addresses mapped to `::ffff:a.b.c.d`).
fn ipv6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Encodes a PROXY v1 line ("PROXY TCP4 ..." / "PROXY TCP6 ..."), same family rule as above.
///
/// The line includes its terminating CRLF.
#[must_use]
pub fn encode_v1(source: SocketAddr, destination: SocketAddr) -> String {
    let (s, d) = same_family(source, destination);
    let protocol = if s.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {protocol} {s} {d} {} {}\r\n",
        source.port(),
        destination.port()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};
    use tokio::io::ReadBuf;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    /// Reads a header from `input` and returns the result and the bytes left unread.
    async fn parse(input: &[u8]) -> (Result<ProxyHeader, ProxyProtocolError>, Vec<u8>) {
        let mut reader = input;
        let result = read_header(&mut reader).await;
        (result, reader.to_vec())
    }

    async fn parse_ok(input: &[u8]) -> ProxyHeader {
        let (result, _) = parse(input).await;
        result.expect("valid header")
    }

    async fn parse_err(input: &[u8]) -> ProxyProtocolError {
        let (result, _) = parse(input).await;
        result.expect_err("invalid header")
    }

    fn proxied(source: &str, destination: &str) -> ProxyHeader {
        ProxyHeader::Proxied {
            source: addr(source),
            destination: addr(destination),
        }
    }

    /// Builds a v2 header by hand.
    fn v2(ver_cmd: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(ver_cmd);
        out.push(family);
        out.extend_from_slice(&u16::try_from(payload.len()).expect("len").to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn v2_ipv4_payload() -> Vec<u8> {
        let mut p = vec![192, 0, 2, 1, 198, 51, 100, 7];
        p.extend_from_slice(&51234u16.to_be_bytes());
        p.extend_from_slice(&443u16.to_be_bytes());
        p
    }

    /// A reader that hands out its data one byte per read, then never ends (always pending),
    /// like a live peer that sent a header and waits for an answer.
    struct TrickleThenStall {
        data: Vec<u8>,
        pos: usize,
    }

    impl AsyncRead for TrickleThenStall {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            if self.pos < self.data.len() && buf.remaining() > 0 {
                let byte = self.data[self.pos];
                buf.put_slice(&[byte]);
                self.pos += 1;
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        }
    }

    /// Polls `read_header` on a stalling reader holding exactly `data`; `None` if it would wait.
    fn poll_stalling(data: &[u8]) -> Option<Result<ProxyHeader, ProxyProtocolError>> {
        let mut reader = TrickleThenStall {
            data: data.to_vec(),
            pos: 0,
        };
        let mut future = Box::pin(read_header(&mut reader));
        let mut cx = Context::from_waker(Waker::noop());
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(result) => Some(result),
            Poll::Pending => None,
        }
    }

    /// A reader that fails with an I/O error.
    struct Failing;

    impl AsyncRead for Failing {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            _buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "reset",
            )))
        }
    }

    #[tokio::test]
    async fn v1_tcp4() {
        let (result, rest) = parse(b"PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r\nGET /").await;
        assert_eq!(
            result.expect("valid"),
            proxied("192.0.2.1:51234", "198.51.100.7:443")
        );
        assert_eq!(rest, b"GET /");
    }

    #[tokio::test]
    async fn v1_tcp6() {
        let (result, rest) =
            parse(b"PROXY TCP6 2001:db8::1 ::ffff:198.51.100.7 65535 0\r\n\r\nhello").await;
        assert_eq!(
            result.expect("valid"),
            proxied("[2001:db8::1]:65535", "[::ffff:198.51.100.7]:0")
        );
        assert_eq!(rest, b"\r\nhello");
    }

    #[tokio::test]
    async fn v1_unknown() {
        let (result, rest) = parse(b"PROXY UNKNOWN\r\nX").await;
        assert_eq!(result.expect("valid"), ProxyHeader::Local);
        assert_eq!(rest, b"X");
        let (result, rest) = parse(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n").await;
        assert_eq!(result.expect("valid"), ProxyHeader::Local);
        assert!(rest.is_empty());
        // Anything after UNKNOWN, even non-ASCII, is ignored.
        assert_eq!(
            parse_ok(b"PROXY UNKNOWN \xff\x00\r\n").await,
            ProxyHeader::Local
        );
    }

    #[tokio::test]
    async fn v1_maximal_length_is_accepted() {
        let line = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff \
                    ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        assert_eq!(line.len(), 104);
        let header = parse_ok(line.as_bytes()).await;
        assert!(matches!(header, ProxyHeader::Proxied { .. }));
        // UNKNOWN padded to exactly 107 bytes.
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX_LEN - 2, b'x');
        long.extend_from_slice(b"\r\nrest");
        let (result, rest) = parse(&long).await;
        assert_eq!(result.expect("valid"), ProxyHeader::Local);
        assert_eq!(rest, b"rest");
    }

    #[tokio::test]
    async fn v1_too_long() {
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX_LEN - 1, b'x');
        long.extend_from_slice(b"\r\n");
        assert!(matches!(
            parse_err(&long).await,
            ProxyProtocolError::V1TooLong
        ));
        let mut endless = b"PROXY TCP4 ".to_vec();
        endless.resize(1000, b'1');
        let (result, rest) = parse(&endless).await;
        assert!(matches!(result, Err(ProxyProtocolError::V1TooLong)));
        // It stopped reading at the limit.
        assert_eq!(rest.len(), 1000 - (V1_MAX_LEN - 1));
    }

    #[tokio::test]
    async fn v1_malformed() {
        let cases: &[&[u8]] = &[
            b"PROXY TCP4 192.0.2.1  198.51.100.7 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.7 1 2 \r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.7 1 2 3\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.7 1\r\n",
            b"PROXY TCP4\r\n",
            b"PROXY \r\n",
            b"PROXY  TCP4 192.0.2.1 198.51.100.7 1 2\r\n",
            b"PROXY tcp4 192.0.2.1 198.51.100.7 1 2\r\n",
            b"PROXY UDP4 192.0.2.1 198.51.100.7 1 2\r\n",
            b"PROXY UNKNOWNX\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.7 1 2\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.7 1 2\rX\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.7 1 2\r\r\n",
            b"PROXY TCP4 192.0.2.1\t198.51.100.7 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.7 1 \xc3\xa92\r\n",
        ];
        for case in cases {
            let err = parse_err(case).await;
            assert!(
                matches!(
                    err,
                    ProxyProtocolError::V1Malformed(_)
                        | ProxyProtocolError::V1InvalidAddress(_)
                        | ProxyProtocolError::V1InvalidPort(_)
                ),
                "{:?}: {err:?}",
                String::from_utf8_lossy(case)
            );
        }
    }

    #[tokio::test]
    async fn v1_bad_addresses_and_ports() {
        let bad_addresses: &[&[u8]] = &[
            b"PROXY TCP4 2001:db8::1 198.51.100.7 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 ::1 1 2\r\n",
            b"PROXY TCP6 192.0.2.1 ::1 1 2\r\n",
            b"PROXY TCP4 192.0.2.256 198.51.100.7 1 2\r\n",
            b"PROXY TCP4 192.0.2 198.51.100.7 1 2\r\n",
            b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
        ];
        for case in bad_addresses {
            let err = parse_err(case).await;
            assert!(
                matches!(err, ProxyProtocolError::V1InvalidAddress(_)),
                "{err:?}"
            );
            assert!(
                err.to_string()
                    .starts_with("invalid address in PROXY v1 header")
            );
        }
        for port in ["+80", "-1", "65536", "99999", "123456", "8a", "0x10"] {
            let line = format!("PROXY TCP4 192.0.2.1 198.51.100.7 {port} 2\r\n");
            let err = parse_err(line.as_bytes()).await;
            assert!(
                matches!(err, ProxyProtocolError::V1InvalidPort(_)),
                "{port}: {err:?}"
            );
        }
        assert_eq!(
            parse_ok(b"PROXY TCP4 192.0.2.1 198.51.100.7 00080 0\r\n").await,
            proxied("192.0.2.1:80", "198.51.100.7:0")
        );
    }

    #[tokio::test]
    async fn v2_ipv4() {
        let mut input = v2(0x21, 0x11, &v2_ipv4_payload());
        input.extend_from_slice(b"payload");
        let (result, rest) = parse(&input).await;
        assert_eq!(
            result.expect("valid"),
            proxied("192.0.2.1:51234", "198.51.100.7:443")
        );
        assert_eq!(rest, b"payload");
    }

    #[tokio::test]
    async fn v2_ipv6() {
        let mut payload = Vec::new();
        payload.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().expect("ip").octets());
        payload.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().expect("ip").octets());
        payload.extend_from_slice(&1u16.to_be_bytes());
        payload.extend_from_slice(&65535u16.to_be_bytes());
        let mut input = v2(0x21, 0x21, &payload);
        input.extend_from_slice(b"\x0d\x0a");
        let (result, rest) = parse(&input).await;
        assert_eq!(
            result.expect("valid"),
            proxied("[2001:db8::1]:1", "[2001:db8::2]:65535")
        );
        assert_eq!(rest, b"\x0d\x0a");
    }

    #[tokio::test]
    async fn v2_local() {
        let mut input = v2(0x20, 0x00, &[]);
        input.extend_from_slice(b"data");
        let (result, rest) = parse(&input).await;
        assert_eq!(result.expect("valid"), ProxyHeader::Local);
        assert_eq!(rest, b"data");
        // LOCAL ignores the family and any address block, but consumes it.
        let mut input = v2(0x20, 0x12, &v2_ipv4_payload());
        input.extend_from_slice(b"data");
        let (result, rest) = parse(&input).await;
        assert_eq!(result.expect("valid"), ProxyHeader::Local);
        assert_eq!(rest, b"data");
        // PROXY command with AF_UNSPEC also means: use the real addresses.
        assert_eq!(
            parse_ok(&v2(0x21, 0x00, b"ignored")).await,
            ProxyHeader::Local
        );
    }

    #[tokio::test]
    async fn v2_with_tlvs() {
        let mut payload = v2_ipv4_payload();
        // PP2_TYPE_AUTHORITY "example.com", PP2_TYPE_NOOP with 3 bytes.
        payload.extend_from_slice(&[0x02, 0x00, 0x0b]);
        payload.extend_from_slice(b"example.com");
        payload.extend_from_slice(&[0x04, 0x00, 0x03, 0, 0, 0]);
        let mut input = v2(0x21, 0x11, &payload);
        input.extend_from_slice(b"after");
        let (result, rest) = parse(&input).await;
        assert_eq!(
            result.expect("valid"),
            proxied("192.0.2.1:51234", "198.51.100.7:443")
        );
        assert_eq!(rest, b"after");
        // Maximum accepted length.
        let mut payload = v2_ipv4_payload();
        payload.resize(V2_MAX_PAYLOAD, 0);
        let mut input = v2(0x21, 0x11, &payload);
        input.push(b'!');
        let (result, rest) = parse(&input).await;
        assert!(result.is_ok());
        assert_eq!(rest, b"!");
    }

    #[tokio::test]
    async fn v2_wrong_version() {
        for ver_cmd in [0x11, 0x31, 0x01, 0xF1] {
            let err = parse_err(&v2(ver_cmd, 0x11, &v2_ipv4_payload())).await;
            assert!(
                matches!(err, ProxyProtocolError::V2UnsupportedVersion(_)),
                "{err:?}"
            );
        }
    }

    #[tokio::test]
    async fn v2_wrong_command() {
        let err = parse_err(&v2(0x22, 0x11, &v2_ipv4_payload())).await;
        assert!(matches!(err, ProxyProtocolError::V2UnsupportedCommand(2)));
        assert!(err.to_string().contains("unsupported PROXY v2 command"));
    }

    #[tokio::test]
    async fn v2_unsupported_families() {
        for family in [0x12, 0x22, 0x31, 0x32, 0x10, 0x01, 0x13, 0x41, 0xFF] {
            let err = parse_err(&v2(0x21, family, &[0u8; 216])).await;
            assert!(
                matches!(err, ProxyProtocolError::V2UnsupportedFamily(f) if f == family),
                "{family:#x}: {err:?}"
            );
            assert!(err.to_string().contains("unsupported PROXY v2 family"));
        }
    }

    #[tokio::test]
    async fn v2_bad_lengths() {
        let err = parse_err(&v2(0x21, 0x11, &[0u8; 11])).await;
        assert!(matches!(
            err,
            ProxyProtocolError::V2LengthTooShort {
                len: 11,
                needed: 12
            }
        ));
        let err = parse_err(&v2(0x21, 0x21, &[0u8; 12])).await;
        assert!(matches!(
            err,
            ProxyProtocolError::V2LengthTooShort {
                len: 12,
                needed: 36
            }
        ));
        // Too long: rejected from the fixed header alone, without reading the payload.
        let mut header = V2_SIGNATURE.to_vec();
        header.extend_from_slice(&[0x21, 0x11, 0x10, 0x01]);
        let (result, rest) = parse(&header).await;
        assert!(matches!(
            result,
            Err(ProxyProtocolError::V2LengthTooLong(4097))
        ));
        assert!(rest.is_empty());
        header[14..16].copy_from_slice(&[0xFF, 0xFF]);
        assert!(matches!(
            parse_err(&header).await,
            ProxyProtocolError::V2LengthTooLong(65535)
        ));
    }

    #[tokio::test]
    async fn v2_bad_signature() {
        let mut input = v2(0x21, 0x11, &v2_ipv4_payload());
        input[10] = b'X';
        assert!(matches!(
            parse_err(&input).await,
            ProxyProtocolError::NotProxyHeader
        ));
    }

    #[tokio::test]
    async fn garbage() {
        let cases: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"POST / HTTP/1.1\r\n",
            b"PROXY",
            b"proxy TCP4 192.0.2.1 198.51.100.7 1 2\r\n",
            b"\r\n\r\n\r\nQUIT\n",
            b"\r\n\r\n\x00\r\nQUIT",
            b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
        ];
        for case in cases {
            let err = parse_err(case).await;
            assert!(
                matches!(
                    err,
                    ProxyProtocolError::NotProxyHeader | ProxyProtocolError::Truncated
                ),
                "{case:?}: {err:?}"
            );
        }
        let err = parse_err(b"GET / HTTP/1.1\r\n").await;
        assert_eq!(err.to_string(), "not a PROXY protocol header");
        // Rejected at the first byte: nothing more is read.
        let (_, rest) = parse(b"GET / HTTP/1.1\r\n").await;
        assert_eq!(rest, b"ET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn truncated_headers() {
        let valid: Vec<Vec<u8>> = vec![
            b"PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r\n".to_vec(),
            b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n".to_vec(),
            b"PROXY UNKNOWN\r\n".to_vec(),
            encode_v2(addr("192.0.2.1:1"), addr("198.51.100.7:2")),
            encode_v2(addr("[2001:db8::1]:1"), addr("[2001:db8::2]:2")),
            v2(0x20, 0x00, &[]),
            v2(
                0x21,
                0x11,
                &[&v2_ipv4_payload()[..], &[0x04, 0, 1, 0]].concat(),
            ),
        ];
        for header in &valid {
            assert!(parse(header).await.0.is_ok());
            for cut in 0..header.len() {
                let err = parse_err(&header[..cut]).await;
                assert!(
                    matches!(err, ProxyProtocolError::Truncated),
                    "{header:?} cut at {cut}: {err:?}"
                );
            }
        }
        assert_eq!(
            parse_err(b"PROXY TCP4").await.to_string(),
            "connection closed inside the PROXY header"
        );
    }

    #[test]
    fn never_waits_for_bytes_after_the_header() {
        let valid: Vec<Vec<u8>> = vec![
            b"PROXY UNKNOWN\r\n".to_vec(),
            encode_v1(addr("192.0.2.1:1"), addr("198.51.100.7:2")).into_bytes(),
            encode_v1(addr("[2001:db8::1]:1"), addr("[2001:db8::2]:2")).into_bytes(),
            encode_v2(addr("192.0.2.1:1"), addr("198.51.100.7:2")),
            v2(0x20, 0x00, &[]),
        ];
        for header in &valid {
            let result = poll_stalling(header).expect("completed without more bytes");
            assert!(result.is_ok(), "{result:?}");
            // And with any byte missing, it waits for it.
            assert!(poll_stalling(&header[..header.len() - 1]).is_none());
        }
    }

    #[tokio::test]
    async fn io_errors_are_reported() {
        let err = read_header(&mut Failing).await.expect_err("fails");
        assert!(matches!(err, ProxyProtocolError::Io(_)), "{err:?}");
    }

    #[tokio::test]
    async fn round_trip_v2() {
        let pairs = [
            ("192.0.2.1:51234", "198.51.100.7:443"),
            ("[2001:db8::1]:0", "[2001:db8::2]:65535"),
            ("0.0.0.0:0", "255.255.255.255:65535"),
        ];
        for (s, d) in pairs {
            let mut bytes = encode_v2(addr(s), addr(d));
            bytes.extend_from_slice(b"tail");
            let (result, rest) = parse(&bytes).await;
            assert_eq!(result.expect("valid"), proxied(s, d));
            assert_eq!(rest, b"tail");
        }
    }

    #[tokio::test]
    async fn round_trip_v1() {
        let pairs = [
            ("192.0.2.1:51234", "198.51.100.7:443"),
            ("[2001:db8::1]:0", "[2001:db8::2]:65535"),
            ("[::]:1", "[::ffff:1.2.3.4]:2"),
        ];
        for (s, d) in pairs {
            let mut bytes = encode_v1(addr(s), addr(d)).into_bytes();
            bytes.extend_from_slice(b"tail");
            let (result, rest) = parse(&bytes).await;
            assert_eq!(result.expect("valid"), proxied(s, d));
            assert_eq!(rest, b"tail");
        }
    }

    #[tokio::test]
    async fn encode_exact_bytes() {
        assert_eq!(
            encode_v1(addr("192.0.2.1:51234"), addr("198.51.100.7:443")),
            "PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r\n"
        );
        assert_eq!(
            encode_v1(addr("[2001:db8::1]:1"), addr("[2001:db8::2]:2")),
            "PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n"
        );
        let bytes = encode_v2(addr("192.0.2.1:51234"), addr("198.51.100.7:443"));
        assert_eq!(bytes, v2(0x21, 0x11, &v2_ipv4_payload()));
        assert_eq!(bytes.len(), 28);
        assert_eq!(
            encode_v2(addr("[::1]:1"), addr("[::2]:2")).len(),
            V2_FIXED_LEN + V2_IPV6_LEN
        );
    }

    #[tokio::test]
    async fn encode_mixed_families() {
        let v4 = addr("192.0.2.1:1000");
        let v6 = addr("[2001:db8::2]:2000");
        let mapped = addr("[::ffff:192.0.2.1]:1000");

        assert_eq!(
            encode_v1(v4, v6),
            "PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 1000 2000\r\n"
        );
        assert_eq!(
            encode_v1(v6, v4),
            "PROXY TCP6 2001:db8::2 ::ffff:192.0.2.1 2000 1000\r\n"
        );
        let bytes = encode_v2(v4, v6);
        assert_eq!(bytes[13], 0x21);
        assert_eq!(bytes.len(), V2_FIXED_LEN + V2_IPV6_LEN);

        for (s, d, want_s, want_d) in [(v4, v6, mapped, v6), (v6, v4, v6, mapped)] {
            let want = ProxyHeader::Proxied {
                source: want_s,
                destination: want_d,
            };
            assert_eq!(parse_ok(&encode_v2(s, d)).await, want);
            assert_eq!(parse_ok(encode_v1(s, d).as_bytes()).await, want);
        }
    }

    #[tokio::test]
    async fn trickled_bytes_are_reassembled() {
        // One byte per read, ending with EOF after the header and some data.
        struct OneByte<'a>(&'a [u8]);
        impl AsyncRead for OneByte<'_> {
            fn poll_read(
                mut self: Pin<&mut Self>,
                _cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<std::io::Result<()>> {
                if let Some((&first, rest)) = self.0.split_first() {
                    buf.put_slice(&[first]);
                    self.0 = rest;
                }
                Poll::Ready(Ok(()))
            }
        }
        let mut input = encode_v2(addr("[2001:db8::1]:7"), addr("192.0.2.9:8"));
        input.extend_from_slice(b"xyz");
        let mut reader = OneByte(&input);
        let header = read_header(&mut reader).await.expect("valid");
        assert!(matches!(header, ProxyHeader::Proxied { .. }));
        assert_eq!(reader.0, b"xyz");
    }

    #[tokio::test]
    #[expect(
        clippy::cast_possible_truncation,
        reason = "positions and bytes are the low bits of random u64s, on purpose"
    )]
    async fn mutated_headers_never_panic() {
        let seeds: Vec<Vec<u8>> = vec![
            b"PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r\n".to_vec(),
            b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n".to_vec(),
            encode_v2(addr("192.0.2.1:1"), addr("198.51.100.7:2")),
            encode_v2(addr("[2001:db8::1]:1"), addr("[2001:db8::2]:2")),
        ];
        // xorshift64: deterministic, no extra crates.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..4000 {
            let mut input = seeds[round % seeds.len()].clone();
            for _ in 0..=(next() % 4) {
                let len = input.len();
                let pos = (next() as usize) % len;
                match next() % 3 {
                    0 => input[pos] = next() as u8,
                    1 => input.insert(pos, next() as u8),
                    _ => {
                        input.remove(pos);
                    }
                }
            }
            // Must return (Ok or Err) without panicking; the stream ends, so it cannot hang.
            let _ = parse(&input).await;
        }
    }
}
