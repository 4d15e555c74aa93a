//! The chunked transfer coding (RFC 9112 §7.1): a sans-IO decoder that follows hyper's byte
//! for byte, with two bounds more, and an encoder.
//!
//! Decoding, byte by byte outside chunk data:
//!
//! - chunk size: 1 to 16 hex digits (leading zeros count; hyper takes any number of them);
//! - then optional spaces or tabs (hyper allows them; they count against the extension
//!   budget here, where hyper reads any number), `;` and an extension running to CR (any byte
//!   but LF, skipped), or CR; then LF;
//! - chunk data, then CR LF exactly;
//! - after the `0` chunk: trailer lines, each ended by CR LF, then CR LF. The trailer section
//!   is kept (below [`Limits::max_trailer_bytes`], at most [`Limits::max_trailers`] lines)
//!   and parsed as header lines once it ends, as hyper does;
//! - extension bytes and whitespace after sizes: below 16 KiB per body (hyper's budget for
//!   extensions).
//!
//! A bare LF is refused everywhere in that framing (it is only accepted inside a trailer
//! line, where hyper's header parser then reads it as a line end).
use std::{io::Write as _, ops::Range};

use hyper::{
    HeaderMap,
    header::{HeaderName, HeaderValue},
};

use super::{H1Error, Limits};

/// Extension bytes (and whitespace after chunk sizes) one body may have: hyper's
/// `CHUNKED_EXTENSIONS_LIMIT` (refused when the count reaches it).
const MAX_EXTENSION_BYTES: usize = 16 * 1024;
/// Hex digits in a chunk size: 16 make every `u64`.
const MAX_SIZE_DIGITS: u8 = 16;

/// What one call of a decoder found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Input bytes used (framing and data); never more than the input.
    pub consumed: usize,
    /// The body data among them: a range of the input, within `..consumed`; empty if none.
    pub data: Range<usize>,
    /// The body has ended: the input from `consumed` on belongs to the next message.
    pub done: bool,
}

/// Where the decoder is in the chunked framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first hex digit of a chunk size.
    Start,
    /// In the hex digits.
    Size,
    /// In whitespace after the digits.
    SizeWhitespace,
    /// In a chunk extension (after `;`).
    Extension,
    /// After the CR ending a chunk-size line.
    SizeLf,
    /// In chunk data (`size` bytes left).
    Data,
    /// After chunk data.
    DataCr,
    /// After the CR following chunk data.
    DataLf,
    /// At the start of a line after the last chunk: a trailer line or the final CRLF.
    TrailerStart,
    /// In a trailer line.
    Trailer,
    /// After the CR ending a trailer line.
    TrailerLf,
    /// After the CR of the final CRLF.
    EndLf,
    /// The body has ended.
    Done,
}

/// Decodes a chunked body. Feed it the bytes after the head with [`Self::decode`]; after it
/// returned an error it must not be used again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: State,
    /// The chunk size while reading it, then the data bytes of the chunk still to come.
    size: u64,
    digits: u8,
    extension_bytes: usize,
    /// The trailer section so far (empty until a trailer line starts).
    trailer_bytes: Vec<u8>,
    trailer_lines: usize,
    max_trailer_bytes: usize,
    max_trailers: usize,
    trailers: Option<HeaderMap>,
}

impl ChunkedDecoder {
    /// A decoder at the start of a chunked body.
    #[must_use]
    pub fn new(limits: &Limits) -> Self {
        Self {
            state: State::Start,
            size: 0,
            digits: 0,
            extension_bytes: 0,
            trailer_bytes: Vec::new(),
            trailer_lines: 0,
            max_trailer_bytes: limits.max_trailer_bytes,
            max_trailers: limits.max_trailers,
            trailers: None,
        }
    }

    /// Reads framing from `input` up to the next chunk data, and returns that data's range
    /// (at most the rest of the chunk), or the end of the body. Returns with empty `data` and
    /// `done == false` only when all of `input` was consumed: more input is needed.
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, H1Error> {
        let mut at = 0;
        loop {
            match self.state {
                State::Done => {
                    return Ok(Decoded {
                        consumed: at,
                        data: at..at,
                        done: true,
                    });
                }
                State::Data => {
                    let available = input.len() - at;
                    let n = usize::try_from(self.size).map_or(available, |s| s.min(available));
                    if n == 0 {
                        break;
                    }
                    self.size -= n as u64;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok(Decoded {
                        consumed: at + n,
                        data: at..at + n,
                        done: false,
                    });
                }
                _ => {
                    let Some(&b) = input.get(at) else { break };
                    at += 1;
                    self.state = self.step(b)?;
                }
            }
        }
        Ok(Decoded {
            consumed: at,
            data: at..at,
            done: false,
        })
    }

    /// Whether the body has ended.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The trailers, once the body has ended, if it had any.
    #[must_use]
    pub fn trailers(&self) -> Option<&HeaderMap> {
        self.trailers.as_ref()
    }

    /// One byte of framing (never called in `Data` or `Done`).
    fn step(&mut self, b: u8) -> Result<State, H1Error> {
        Ok(match self.state {
            State::Start => {
                self.size = u64::from(hex(b).ok_or(H1Error::ChunkSizeMissing)?);
                self.digits = 1;
                State::Size
            }
            State::Size => match b {
                b' ' | b'\t' => self.extension_byte(State::SizeWhitespace)?,
                b';' => State::Extension,
                b'\r' => State::SizeLf,
                _ => {
                    let digit = hex(b).ok_or(H1Error::InvalidChunkSize)?;
                    if self.digits == MAX_SIZE_DIGITS {
                        return Err(H1Error::ChunkSizeTooLong);
                    }
                    self.digits += 1;
                    self.size = self.size << 4 | u64::from(digit);
                    State::Size
                }
            },
            State::SizeWhitespace => match b {
                b' ' | b'\t' => self.extension_byte(State::SizeWhitespace)?,
                b';' => State::Extension,
                b'\r' => State::SizeLf,
                _ => return Err(H1Error::InvalidChunkSize),
            },
            State::Extension => match b {
                b'\r' => State::SizeLf,
                b'\n' => return Err(H1Error::ChunkExtensionNewLine),
                _ => self.extension_byte(State::Extension)?,
            },
            State::SizeLf if b == b'\n' && self.size == 0 => State::TrailerStart,
            State::SizeLf if b == b'\n' => State::Data,
            State::SizeLf => return Err(H1Error::ChunkSizeLineEnd),
            State::DataCr if b == b'\r' => State::DataLf,
            State::DataLf if b == b'\n' => State::Start,
            State::DataCr | State::DataLf => return Err(H1Error::ChunkDataEnd),
            State::TrailerStart if b == b'\r' => {
                if !self.trailer_bytes.is_empty() {
                    self.trailer_byte(b)?;
                }
                State::EndLf
            }
            State::TrailerStart => {
                // hyper starts the section with this byte and checks the bound from the next.
                if self.trailer_bytes.is_empty() {
                    self.trailer_bytes.push(b);
                } else {
                    self.trailer_byte(b)?;
                }
                State::Trailer
            }
            State::Trailer => {
                self.trailer_byte(b)?;
                if b == b'\r' {
                    State::TrailerLf
                } else {
                    State::Trailer
                }
            }
            State::TrailerLf if b == b'\n' => {
                if self.trailer_lines >= self.max_trailers {
                    return Err(H1Error::TooManyTrailers {
                        limit: self.max_trailers,
                    });
                }
                self.trailer_lines += 1;
                self.trailer_byte(b)?;
                State::TrailerStart
            }
            State::EndLf if b == b'\n' => {
                if !self.trailer_bytes.is_empty() {
                    self.trailer_byte(b)?;
                    self.trailers = Some(self.parse_trailers()?);
                    self.trailer_bytes = Vec::new();
                }
                State::Done
            }
            State::TrailerLf | State::EndLf => return Err(H1Error::ChunkedEnd),
            State::Data | State::Done => self.state,
        })
    }

    fn extension_byte(&mut self, next: State) -> Result<State, H1Error> {
        self.extension_bytes += 1;
        if self.extension_bytes >= MAX_EXTENSION_BYTES {
            return Err(H1Error::ChunkExtensionsTooLong);
        }
        Ok(next)
    }

    fn trailer_byte(&mut self, b: u8) -> Result<(), H1Error> {
        self.trailer_bytes.push(b);
        if self.trailer_bytes.len() >= self.max_trailer_bytes {
            return Err(H1Error::TrailersTooLarge {
                limit: self.max_trailer_bytes,
            });
        }
        Ok(())
    }

    /// The trailer section as header lines: as many as CRLF-ended lines were counted, parsed
    /// as hyper does (so a bare LF inside a line makes one line too many, and fails).
    fn parse_trailers(&self) -> Result<HeaderMap, H1Error> {
        let mut slots = vec![httparse::EMPTY_HEADER; self.trailer_lines];
        let Ok(httparse::Status::Complete((_, parsed))) =
            httparse::parse_headers(&self.trailer_bytes, &mut slots)
        else {
            return Err(H1Error::InvalidTrailers);
        };
        let mut trailers = HeaderMap::with_capacity(parsed.len());
        for h in parsed {
            let name =
                HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| H1Error::InvalidTrailers)?;
            let value = HeaderValue::from_bytes(h.value).map_err(|_| H1Error::InvalidTrailers)?;
            trailers.append(name, value);
        }
        Ok(trailers)
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The header of one chunk: its size in hex, then CRLF; the data and CRLF come after it.
/// The digits are uppercase, as hyper's encoder writes them (its client and server), so the
/// bytes sent are the same as hyper's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    bytes: [u8; 18],
    len: usize,
}

impl ChunkHeader {
    /// The header of a chunk of `len` bytes; `None` for 0, since an empty chunk is the last
    /// chunk (it would end the body).
    #[must_use]
    pub fn new(len: u64) -> Option<Self> {
        if len == 0 {
            return None;
        }
        let mut bytes = [0; 18];
        let mut rest = &mut bytes[..];
        write!(rest, "{len:X}\r\n").ok()?;
        let len = 18 - rest.len();
        Some(Self { bytes, len })
    }

    /// The bytes to send.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Encodes a body in chunks: [`Self::encode`] for each piece of data, [`Self::finish`] once.
#[derive(Debug, Default)]
pub struct ChunkedEncoder {
    written: u64,
}

impl ChunkedEncoder {
    /// The CRLF that follows the data of every chunk (for a caller that writes the data
    /// itself, after a [`ChunkHeader`]).
    pub const CHUNK_END: &'static [u8] = b"\r\n";

    /// Appends one chunk holding `data` to `out`; nothing for empty data (an empty chunk
    /// would end the body).
    pub fn encode(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let Some(header) = ChunkHeader::new(data.len() as u64) else {
            return;
        };
        out.reserve(header.len + data.len() + 2);
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(Self::CHUNK_END);
        self.written += data.len() as u64;
    }

    /// Appends the last chunk, the trailers if any, and the final CRLF; returns the body
    /// bytes encoded in all.
    pub fn finish(self, trailers: Option<&HeaderMap>, out: &mut Vec<u8>) -> u64 {
        out.extend_from_slice(b"0\r\n");
        for (name, value) in trailers.into_iter().flatten() {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        self.written
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h1::framing::{BodyDecoder, decode_all};

    /// The body of `raw` decoded in one call loop, and how many bytes the body took.
    fn decode(raw: &[u8]) -> Result<(Vec<u8>, usize, bool), H1Error> {
        let mut d = BodyDecoder::Chunked(ChunkedDecoder::new(&Limits::default()));
        decode_all(&mut d, raw)
    }

    fn body(raw: &[u8]) -> Result<Vec<u8>, H1Error> {
        let (body, consumed, done) = decode(raw)?;
        assert!(done, "{}: not done", raw.escape_ascii());
        assert_eq!(consumed, raw.len(), "{}", raw.escape_ascii());
        Ok(body)
    }

    #[test]
    fn chunks() {
        assert_eq!(body(b"3\r\nabc\r\n0\r\n\r\n").unwrap(), b"abc");
        assert_eq!(body(b"0\r\n\r\n").unwrap(), b"");
        assert_eq!(body(b"1\r\na\r\n2\r\nbc\r\n0\r\n\r\n").unwrap(), b"abc");
        assert_eq!(
            body(b"A\r\n0123456789\r\n0\r\n\r\n").unwrap(),
            b"0123456789"
        );
        assert_eq!(body(b"00003\r\nabc\r\n000\r\n\r\n").unwrap(), b"abc");
        assert_eq!(
            body(b"3;a=b;c=\"d;e\"\r\nabc\r\n0;x\r\n\r\n").unwrap(),
            b"abc"
        );
        assert_eq!(body(b"3 \t ;x\r\nabc\r\n0 \r\n\r\n").unwrap(), b"abc");
        assert_eq!(body(b"3;\0\x01\r\nabc\r\n0\r\n\r\n").unwrap(), b"abc");
    }

    #[test]
    fn the_body_ends_where_it_ends() {
        let raw = b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        assert_eq!(decode(raw).unwrap(), (b"abc".to_vec(), 13, true));
        let smuggled = b"22\r\nGET /admin/x HTTP/1.1\r\nHost: a\r\n\r\n\r\n0\r\n\r\n";
        assert_eq!(
            body(smuggled).unwrap(),
            b"GET /admin/x HTTP/1.1\r\nHost: a\r\n\r\n"
        );
    }

    #[test]
    fn incomplete_bodies() {
        for raw in [
            &b""[..],
            b"3",
            b"3\r",
            b"3\r\nab",
            b"3\r\nabc\r",
            b"3\r\nabc\r\n0\r\n",
            b"3\r\nabc\r\n0\r\n\r",
            b"0\r\nX: 1\r\n",
        ] {
            let (_, consumed, done) = decode(raw).unwrap();
            assert!(!done, "{}", raw.escape_ascii());
            assert_eq!(consumed, raw.len());
            let mut d = BodyDecoder::Chunked(ChunkedDecoder::new(&Limits::default()));
            let _ = decode_all(&mut d, raw).unwrap();
            assert_eq!(d.finish(), Err(H1Error::IncompleteBody));
        }
    }

    #[test]
    fn malformed_framing() {
        let cases: &[(&[u8], H1Error)] = &[
            (b"x\r\n", H1Error::ChunkSizeMissing),
            (b"-3\r\nabc\r\n0\r\n\r\n", H1Error::ChunkSizeMissing),
            (b"+3\r\nabc\r\n0\r\n\r\n", H1Error::ChunkSizeMissing),
            (b" 3\r\nabc\r\n0\r\n\r\n", H1Error::ChunkSizeMissing),
            (b"\r\n3\r\nabc\r\n0\r\n\r\n", H1Error::ChunkSizeMissing),
            (b"0x3\r\nabc\r\n0\r\n\r\n", H1Error::InvalidChunkSize),
            (b"3x\r\nabc\r\n0\r\n\r\n", H1Error::InvalidChunkSize),
            (b"3 4\r\nabc\r\n0\r\n\r\n", H1Error::InvalidChunkSize),
            (b"3\nabc\r\n0\r\n\r\n", H1Error::InvalidChunkSize),
            (b"3 \nabc\r\n0\r\n\r\n", H1Error::InvalidChunkSize),
            (b"3;x\nabc\r\n0\r\n\r\n", H1Error::ChunkExtensionNewLine),
            (b"3\r\rabc\r\n0\r\n\r\n", H1Error::ChunkSizeLineEnd),
            (b"3\r\nabcdef\r\n0\r\n\r\n", H1Error::ChunkDataEnd),
            (b"3\r\nabc\n0\r\n\r\n", H1Error::ChunkDataEnd),
            (b"3\r\nabc\rx0\r\n\r\n", H1Error::ChunkDataEnd),
            (b"fffffffffffffffff1\r\nabc\r\n", H1Error::ChunkSizeTooLong),
            (b"00000000000000003\r\nabc\r\n", H1Error::ChunkSizeTooLong),
            (b"0\r\n\rx", H1Error::ChunkedEnd),
            (b"0\r\nX: 1\rx", H1Error::ChunkedEnd),
            (b"0\r\nX : 1\r\n\r\n", H1Error::InvalidTrailers),
            (b"0\r\nX: 1\r\n folded\r\n\r\n", H1Error::InvalidTrailers),
            (b"0\r\nX: \x01\r\n\r\n", H1Error::InvalidTrailers),
            (b"0\r\nX: 1\nY: 2\r\n\r\n", H1Error::InvalidTrailers),
        ];
        for (raw, want) in cases {
            assert_eq!(decode(raw).as_ref(), Err(want), "{}", raw.escape_ascii());
        }
    }

    #[test]
    fn sixteen_digits_are_enough() {
        let mut d = ChunkedDecoder::new(&Limits::default());
        let got = d.decode(b"ffffffffffffffff\r\nab").unwrap();
        assert_eq!(got.data, 18..20);
        assert_eq!(d.size, u64::MAX - 2);
        let mut d = ChunkedDecoder::new(&Limits::default());
        assert_eq!(d.decode(b"000000000000000a\r\n").unwrap().consumed, 18);
        assert_eq!(d.size, 10);
    }

    #[test]
    fn extension_budget_is_per_body() {
        let ext = |n: usize| [b"1;".as_slice(), &vec![b'e'; n], b"\r\nx\r\n"].concat();
        let mut raw = ext(MAX_EXTENSION_BYTES - 2);
        raw.extend_from_slice(b"0;e\r\n\r\n");
        assert_eq!(body(&raw).unwrap(), b"x");
        let mut raw = ext(MAX_EXTENSION_BYTES - 2);
        raw.extend_from_slice(b"0;ee\r\n\r\n");
        assert_eq!(decode(&raw), Err(H1Error::ChunkExtensionsTooLong));
        let spaces = [
            b"1".as_slice(),
            &vec![b' '; MAX_EXTENSION_BYTES],
            b"\r\nx\r\n",
        ]
        .concat();
        assert_eq!(decode(&spaces), Err(H1Error::ChunkExtensionsTooLong));
    }

    #[test]
    fn trailers() {
        let raw = b"3\r\nabc\r\n0\r\nX-Sum: 1\r\nx-sum: 2\r\nEtag: \"e\"\r\n\r\n";
        let mut d = BodyDecoder::Chunked(ChunkedDecoder::new(&Limits::default()));
        let decoded = decode_all(&mut d, raw).unwrap();
        assert_eq!(decoded, (b"abc".to_vec(), raw.len(), true));
        let t = d.trailers().unwrap();
        assert_eq!(t.get_all("x-sum").iter().collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(t["etag"], "\"e\"");
        // A body without trailers has none (not an empty map).
        let mut d = BodyDecoder::Chunked(ChunkedDecoder::new(&Limits::default()));
        decode_all(&mut d, b"0\r\n\r\n").unwrap();
        assert_eq!(d.trailers(), None);
        // hyper's quirks, kept: a line that is a bare LF then CRLF is an empty section.
        assert_eq!(body(b"0\r\n\n\r\n\r\n").unwrap(), b"");
        assert_eq!(body(b"0\r\nX: 1\n\r\n\r\n").unwrap(), b"");
    }

    #[test]
    fn trailer_limits() {
        let run = |max_trailer_bytes, max_trailers, raw: &[u8]| {
            let limits = Limits {
                max_trailer_bytes,
                max_trailers,
                ..Limits::default()
            };
            let mut d = BodyDecoder::Chunked(ChunkedDecoder::new(&limits));
            decode_all(&mut d, raw).map(|(_, _, done)| done)
        };
        // A section of 15 bytes (final CRLF included) is below 16; one of 16 is not.
        assert_eq!(run(16, 2, b"0\r\nA: 1\r\nB: 23\r\n\r\n"), Ok(true));
        assert_eq!(
            run(16, 2, b"0\r\nA: 1\r\nB: 234\r\n\r\n"),
            Err(H1Error::TrailersTooLarge { limit: 16 })
        );
        assert_eq!(run(64, 3, b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"), Ok(true));
        assert_eq!(
            run(64, 2, b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"),
            Err(H1Error::TooManyTrailers { limit: 2 })
        );
    }

    #[test]
    fn any_split_decodes_the_same() {
        let raw = b"5;x=y\r\nhello\r\n1 \r\n \r\n0\r\nT: v\r\n\r\nNEXT";
        let whole = decode(raw).unwrap();
        assert_eq!(whole, (b"hello ".to_vec(), raw.len() - 4, true));
        for size in 1..raw.len() {
            let mut d = ChunkedDecoder::new(&Limits::default());
            let (mut body, mut pending, mut fed) = (Vec::new(), Vec::new(), 0);
            let mut consumed = 0;
            for piece in raw.chunks(size) {
                pending.extend_from_slice(piece);
                fed += piece.len();
                loop {
                    let got = d.decode(&pending).unwrap();
                    body.extend_from_slice(&pending[got.data.clone()]);
                    pending.drain(..got.consumed);
                    consumed += got.consumed;
                    if got.done || (got.data.is_empty() && pending.is_empty()) {
                        break;
                    }
                }
                if d.is_done() {
                    break;
                }
            }
            assert!(d.is_done(), "split {size}");
            assert_eq!((body, consumed), (whole.0.clone(), whole.1), "split {size}");
            assert_eq!(fed - pending.len(), consumed);
            assert_eq!(d.trailers().unwrap()["t"], "v");
        }
    }

    #[test]
    fn chunk_headers() {
        assert_eq!(ChunkHeader::new(0), None);
        assert_eq!(ChunkHeader::new(1).unwrap().as_bytes(), b"1\r\n");
        assert_eq!(ChunkHeader::new(0xabc).unwrap().as_bytes(), b"ABC\r\n");
        assert_eq!(ChunkHeader::new(16).unwrap().as_bytes(), b"10\r\n");
        assert_eq!(
            ChunkHeader::new(u64::MAX).unwrap().as_bytes(),
            b"FFFFFFFFFFFFFFFF\r\n"
        );
    }

    #[test]
    fn encoding_round_trips() {
        let mut enc = ChunkedEncoder::default();
        let mut out = Vec::new();
        enc.encode(b"hello ", &mut out);
        enc.encode(b"", &mut out);
        enc.encode(&[b'x'; 300], &mut out);
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", HeaderValue::from_static("7"));
        assert_eq!(enc.finish(Some(&trailers), &mut out), 306);
        assert!(out.starts_with(b"6\r\nhello \r\n12C\r\nxxx"));
        assert!(out.ends_with(b"x\r\n0\r\nx-sum: 7\r\n\r\n"));
        let mut d = BodyDecoder::Chunked(ChunkedDecoder::new(&Limits::default()));
        let (body, consumed, done) = decode_all(&mut d, &out).unwrap();
        assert_eq!((consumed, done), (out.len(), true));
        assert_eq!(body, [b"hello ".as_slice(), &[b'x'; 300]].concat());
        assert_eq!(d.trailers(), Some(&trailers));
        let mut bare = Vec::new();
        assert_eq!(ChunkedEncoder::default().finish(None, &mut bare), 0);
        assert_eq!(bare, b"0\r\n\r\n");
    }
}
