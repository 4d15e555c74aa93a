//! A strict, sans-IO HTTP/1.1 codec: message heads, framing, bodies and head writing.
//!
//! Nothing here reads or writes a socket. The caller owns the buffers: [`parse_request`] and
//! [`parse_response`] look at the bytes read so far and either ask for more (`Ok(None)`) or
//! return a head and how many bytes it took; [`request_framing`] and [`response_framing`] say
//! how the body is delimited (RFC 9112 §6); a [`BodyDecoder`] then walks the bytes after the
//! head and returns, without copying, the ranges of them that are body data, and where the
//! message ends (so that what follows is the next message, never part of this one).
//! [`write_request_head`], [`write_response_head`] and [`ChunkedEncoder`] produce the bytes to
//! send. [`response_head`] and [`ResponseBodyEncoder`] answer clients as hyper's HTTP/1 server
//! does (head, framing, keep-alive, `Date`, trailers), and [`error_response`] is its answer to
//! a head it cannot parse.
//!
//! The contract is hyper's (1.x, which the proxy also serves HTTP/2 with): every input that
//! hyper's HTTP/1 server (for requests) or client (for responses) refuses is refused here, and
//! every input it accepts is accepted with the same method, target, headers and body bytes.
//! `proxy/tests/h1_differential.rs` runs a corpus of hostile and smuggling inputs through both
//! and compares. The few places where this codec is stricter than hyper, and why, are listed
//! in docs/architecture.md ("HTTP/1.1 codec") and in that test.
//!
//! Heads are parsed by `httparse` with its default settings, as hyper does: bare LF line
//! endings are accepted in heads, obs-fold, whitespace before a colon, control characters and
//! bare CR are not. Chunked bodies are parsed by [`ChunkedDecoder`], which follows hyper's
//! decoder byte for byte (bare LF is refused everywhere in the chunk framing) with two bounds
//! hyper lacks: at most 16 hex digits in a chunk size, and whitespace after a chunk size counts
//! against the chunk-extension budget.
mod chunked;
mod framing;
mod head;
mod respond;
mod write;

pub use chunked::{ChunkHeader, ChunkedDecoder, ChunkedEncoder, Decoded};
pub use framing::{BodyDecoder, BodyKind, Framing, request_framing, response_framing};
pub use head::{RequestHead, ResponseHead, eof_is_clean, parse_request, parse_response};
pub use respond::{
    BodyHint, CachedDate, DATE_LEN, RequestInfo, ResponseBodyEncoder, ResponsePlan, error_response,
    response_head, with_date,
};
pub use write::{interim_head, write_request_head, write_response_head};

use hyper::StatusCode;

/// How much a peer may make the codec hold or read before it gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of a message head: request or status line, header lines and the empty line
    /// (hyper's `max_buf_size` on a listener; `limits.max_header_bytes`). A head still
    /// incomplete at this many bytes is refused, and so is a complete head longer than this.
    pub max_head_bytes: usize,
    /// Header lines in a head (hyper's `max_headers`; `limits.max_headers`).
    pub max_headers: usize,
    /// Bytes of the trailer section of a chunked body, final CRLF included; the section must
    /// stay below this (hyper: `max_header_size`, 16 KiB when unset, as in the proxy).
    pub max_trailer_bytes: usize,
    /// Trailer lines in a chunked body (hyper uses `max_headers` for this too).
    pub max_trailers: usize,
}

impl Limits {
    /// hyper's HTTP/1 client defaults (what the proxy's upstream connections use): heads up to
    /// 8 KiB + 100 × 4 KiB (`max_buf_size`), 100 headers and trailers, 16 KiB of trailers.
    pub const UPSTREAM: Self = Self {
        max_head_bytes: 8192 + 4096 * 100,
        max_headers: 100,
        max_trailer_bytes: 16 * 1024,
        max_trailers: 100,
    };

    /// The limits of a listener whose `limits.max_header_bytes` and `limits.max_headers` are
    /// these (trailers as hyper bounds them there: `max_headers` lines, 16 KiB).
    #[must_use]
    pub fn listener(max_head_bytes: usize, max_headers: usize) -> Self {
        Self {
            max_head_bytes,
            max_headers,
            max_trailer_bytes: 16 * 1024,
            max_trailers: max_headers,
        }
    }
}

impl Default for Limits {
    /// The proxy's default listener limits (16 KiB heads, 100 headers).
    fn default() -> Self {
        Self::listener(16 * 1024, 100)
    }
}

/// What is wrong with a message. Every variant is a refusal of the peer's bytes, except the
/// last five, which are about what the caller asked to write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum H1Error {
    /// The head is longer than [`Limits::max_head_bytes`] (or still incomplete at that size).
    #[error("message head longer than {limit} bytes")]
    HeadTooLarge {
        /// The limit.
        limit: usize,
    },
    /// More header lines than [`Limits::max_headers`].
    #[error("more than {limit} header lines")]
    TooManyHeaders {
        /// The limit.
        limit: usize,
    },
    /// A header name of 64 KiB or more (hyper's bound; only reachable with large limits).
    #[error("header name of 64 KiB or more")]
    HeaderNameTooLong,
    /// The request target is longer than 65534 bytes (hyper's bound).
    #[error("request target longer than 65534 bytes")]
    TargetTooLong,
    /// The method is not a token (RFC 9110 §9.1), or the request line starts with one that
    /// is not followed by a single space.
    #[error("invalid method")]
    InvalidMethod,
    /// The request target is empty, contains a byte that may not appear in it, or is not an
    /// origin-, absolute-, authority- or asterisk-form target.
    #[error("invalid request target")]
    InvalidTarget,
    /// The version is not `HTTP/1.0` or `HTTP/1.1`.
    #[error("unsupported or malformed HTTP version")]
    InvalidVersion,
    /// The status code is not three digits in 100..=999.
    #[error("invalid status code")]
    InvalidStatus,
    /// A header name is not a token, is empty, or is followed by whitespace before the colon.
    #[error("invalid header name")]
    InvalidHeaderName,
    /// A header value contains a control character (NUL, bare CR, ...), or a line is folded
    /// (obs-fold).
    #[error("invalid header value or folded header line")]
    InvalidHeaderValue,
    /// A CR not followed by LF, or another line-ending error.
    #[error("invalid line ending")]
    InvalidNewLine,
    /// `Transfer-Encoding` on an HTTP/1.0 message.
    #[error("Transfer-Encoding on an HTTP/1.0 message")]
    TransferEncodingHttp10,
    /// A request's `Transfer-Encoding` does not end in `chunked`: its length is unknowable.
    #[error("request Transfer-Encoding does not end in chunked")]
    TransferEncodingNotChunked,
    /// A `Content-Length` value that is not a plain decimal number (sign, space, list, hex,
    /// empty) or does not fit in 64 bits.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// Two `Content-Length` values that differ.
    #[error("conflicting Content-Length values")]
    ConflictingContentLength,
    /// A `Content-Length` above `u64::MAX - 2` (hyper's bound).
    #[error("Content-Length too large")]
    ContentLengthTooLarge,
    /// A chunk-size line does not start with a hex digit.
    #[error("chunk size missing")]
    ChunkSizeMissing,
    /// A byte in a chunk-size line that is not a hex digit, whitespace before `;`, `;` or CR.
    #[error("invalid byte in a chunk size")]
    InvalidChunkSize,
    /// A chunk size of more than 16 hex digits (leading zeros included).
    #[error("chunk size longer than 16 hex digits")]
    ChunkSizeTooLong,
    /// Chunk extensions and whitespace after chunk sizes add up to 16 KiB or more in one body.
    #[error("chunk extensions over 16 KiB")]
    ChunkExtensionsTooLong,
    /// A bare LF inside a chunk extension.
    #[error("LF in a chunk extension")]
    ChunkExtensionNewLine,
    /// A chunk-size line whose CR is not followed by LF.
    #[error("chunk-size line not ended by CRLF")]
    ChunkSizeLineEnd,
    /// Chunk data not followed by CRLF (the chunk is longer than its size, or LF alone).
    #[error("chunk data not followed by CRLF")]
    ChunkDataEnd,
    /// A trailer line or the end of the chunked body whose CR is not followed by LF.
    #[error("chunked body not ended by CRLF")]
    ChunkedEnd,
    /// The trailer section reaches [`Limits::max_trailer_bytes`].
    #[error("trailer section of {limit} bytes or more")]
    TrailersTooLarge {
        /// The limit.
        limit: usize,
    },
    /// More trailer lines than [`Limits::max_trailers`].
    #[error("more than {limit} trailer lines")]
    TooManyTrailers {
        /// The limit.
        limit: usize,
    },
    /// The trailer section does not parse as header lines.
    #[error("invalid trailer section")]
    InvalidTrailers,
    /// The connection ended before the body did.
    #[error("connection closed before the end of the body")]
    IncompleteBody,
    /// A target to write that is empty or has a space, a control character or DEL.
    #[error("request target to write is empty or has a space or control character")]
    UnwritableTarget,
    /// A version to write other than HTTP/1.0 and HTTP/1.1 (a response may carry HTTP/2,
    /// written as HTTP/1.1).
    #[error("version to write is neither HTTP/1.0 nor HTTP/1.1")]
    UnwritableVersion,
    /// A response status that hyper's server cannot send: 1xx other than 101.
    #[error("a 1xx status other than 101 cannot be a response")]
    UnwritableStatus,
    /// Response framing headers that contradict each other or the body: `Content-Length`
    /// with `Transfer-Encoding`, `Content-Length` values that differ, are not a number, or
    /// are not the body's known length, or either header on a 2xx to `CONNECT`.
    #[error("response framing headers contradict each other or the body")]
    UnwritableFraming,
    /// A response body ended before the length its head announced.
    #[error("response body ended {missing} bytes short of its Content-Length")]
    ShortBody {
        /// The bytes still owed.
        missing: u64,
    },
}

impl H1Error {
    /// The status a server answers this error with, as hyper does for head errors: 431 for
    /// heads over the limits, 414 for a target too long, 400 otherwise (body errors included:
    /// the head was fine, the body was not).
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::HeadTooLarge { .. }
            | Self::TooManyHeaders { .. }
            | Self::HeaderNameTooLong
            | Self::ContentLengthTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::TargetTooLong => StatusCode::URI_TOO_LONG,
            Self::UnwritableStatus | Self::UnwritableFraming | Self::ShortBody { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_statuses_follow_hyper() {
        assert_eq!(H1Error::HeadTooLarge { limit: 1 }.status(), 431);
        assert_eq!(H1Error::TooManyHeaders { limit: 1 }.status(), 431);
        assert_eq!(H1Error::ContentLengthTooLarge.status(), 431);
        assert_eq!(H1Error::TargetTooLong.status(), 414);
        assert_eq!(H1Error::InvalidHeaderName.status(), 400);
        assert_eq!(H1Error::ChunkDataEnd.status(), 400);
    }

    #[test]
    fn limits() {
        let l = Limits::default();
        assert_eq!((l.max_head_bytes, l.max_headers), (16384, 100));
        assert_eq!((l.max_trailer_bytes, l.max_trailers), (16384, 100));
        let l = Limits::listener(8192, 30);
        assert_eq!((l.max_head_bytes, l.max_trailers), (8192, 30));
        assert_eq!(Limits::UPSTREAM.max_head_bytes, 417_792);
    }
}
