//! PROXY protocol v1/v2 headers (`proxy::proxy_protocol::read_header`) from arbitrary bytes.
//!
//! Checks beyond "no panic": the reader never consumes a byte after the header (the header's
//! bytes alone parse to the same result), a reader that hands out one byte per poll and waits
//! in between gets the same answer, and every accepted header survives `encode_v1` /
//! `encode_v2` and a second parse unchanged.
#![no_main]

use std::{
    io,
    pin::{Pin, pin},
    task::{Context, Poll, Waker},
};

use libfuzzer_sys::fuzz_target;
use proxy::proxy_protocol::{ProxyHeader, encode_v1, encode_v2, read_header};
use tokio::io::{AsyncRead, ReadBuf};

/// Polls a future to completion; the readers here never wait on anything but themselves, so
/// a no-op waker is enough.
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..100_000 {
        if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("read_header did not finish on an in-memory reader");
}

/// Hands out one byte per read, and `Pending` before each one (like a slow peer).
struct Trickle<'a> {
    data: &'a [u8],
    ready: bool,
}

impl AsyncRead for Trickle<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.ready {
            self.ready = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.ready = false;
        if let Some((&b, rest)) = self.data.split_first()
            && buf.remaining() > 0
        {
            buf.put_slice(&[b]);
            self.data = rest;
        }
        Poll::Ready(Ok(()))
    }
}

/// The result and the number of bytes consumed.
fn parse(data: &[u8]) -> (Result<ProxyHeader, String>, usize) {
    let mut reader = data;
    let result = block_on(read_header(&mut reader)).map_err(|e| e.to_string());
    (result, data.len() - reader.len())
}

fuzz_target!(|data: &[u8]| {
    let (result, consumed) = parse(data);

    let mut slow = Trickle { data, ready: false };
    let slow_result = block_on(read_header(&mut slow)).map_err(|e| e.to_string());
    assert_eq!(slow_result, result, "a byte-at-a-time reader disagrees");
    assert_eq!(
        data.len() - slow.data.len(),
        consumed,
        "a byte-at-a-time reader consumed a different number of bytes"
    );

    let Ok(header) = result else { return };
    let (alone, alone_consumed) = parse(&data[..consumed]);
    assert_eq!(
        alone,
        Ok(header),
        "the header's own bytes parse differently"
    );
    assert_eq!(alone_consumed, consumed);

    if let ProxyHeader::Proxied {
        source,
        destination,
    } = header
    {
        for encoded in [
            encode_v1(source, destination).into_bytes(),
            encode_v2(source, destination),
        ] {
            let (again, n) = parse(&encoded);
            assert_eq!(
                again,
                Ok(header),
                "re-encoded header parses differently: {encoded:?}"
            );
            assert_eq!(n, encoded.len(), "re-encoded header not consumed whole");
        }
    }
});
