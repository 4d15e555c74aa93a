//! The disk cache's file format (`proxy::cache::disk::decode`): any bytes a damaged or
//! hostile file may hold give an error, never a panic or a huge allocation; what decodes
//! encodes back to a file that decodes to the same response.
//!
//! Input: a whole file (see seeds/cache_file/).
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy::cache::disk::{Item, decode, encode};

/// The checksums of `data` recomputed where the lengths allow, so that the fuzzer gets past
/// them into the metadata decoder (libFuzzer cannot forge a CRC).
fn with_checksums(data: &[u8]) -> Vec<u8> {
    let mut d = data.to_vec();
    if d.len() < 32 {
        return d;
    }
    let meta_len = u32::from_le_bytes(d[8..12].try_into().unwrap()) as usize;
    if let Some(meta) = d.get(32..32usize.saturating_add(meta_len)) {
        let c = crc32fast::hash(meta);
        d[12..16].copy_from_slice(&c.to_le_bytes());
        let body = &d[32 + meta_len..];
        let c = crc32fast::hash(body);
        d[24..28].copy_from_slice(&c.to_le_bytes());
    }
    d
}

fuzz_target!(|data: &[u8]| {
    let _ = decode(data);
    let fixed = with_checksums(data);
    let Ok(stored) = decode(&fixed) else { return };
    let (head, body) = encode(&stored.key, stored.keep_until, &stored.item);
    let mut file = head;
    file.extend_from_slice(&body);
    let again = decode(&file).expect("an encoded file decodes");
    assert_eq!(again.key, stored.key);
    assert_eq!(again.tags, stored.tags);
    match (&stored.item, &again.item) {
        (Item::Object(a), Item::Object(b)) => {
            assert_eq!(a.status, b.status);
            assert_eq!(a.headers, b.headers);
            assert_eq!(a.body, b.body);
            assert_eq!(a.cc, b.cc);
            assert_eq!(a.vary, b.vary);
        }
        (Item::Vary { names: a, epoch: x }, Item::Vary { names: b, epoch: y }) => {
            assert!(a == b && x == y);
        }
        _ => panic!("the kind changed"),
    }
});
