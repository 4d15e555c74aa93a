//! CIDR prefixes (`Cidr::from_str`, as in `proxy blocklist add`, config lists and the state
//! file) and list files (`parse_list`, as in `proxy blocklist import`, Spamhaus DROP format).
//!
//! Checks beyond "no panic": an accepted prefix prints as text that parses back to itself
//! (also through serde, as the state file stores it), contains its own address, has no host
//! bits, and `parse_list` accepts a file exactly when every non-comment line parses.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use proxy::defense::{Cidr, parse_list};

fn check(cidr: Cidr) {
    let text = cidr.to_string();
    assert_eq!(text.parse::<Cidr>(), Ok(cidr), "{text} does not parse back");
    let json = serde_json::to_string(&cidr).expect("a Cidr serializes");
    let back: Cidr = serde_json::from_str(&json).expect("a serialized Cidr deserializes");
    assert_eq!(back, cidr);
    assert!(
        cidr.contains(cidr.addr()),
        "{text} does not contain its address"
    );
    assert_eq!(Cidr::new_truncating(cidr.addr(), cidr.prefix_len()), cidr);
    assert!(cidr.prefix_len() <= if cidr.is_ipv4() { 32 } else { 128 });
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines_ok = true;
    for line in text.lines() {
        match line.parse::<Cidr>() {
            Ok(cidr) => check(cidr),
            Err(e) => {
                let _ = e.to_string();
            }
        }
        let content = line.split(['#', ';']).next().unwrap_or("").trim();
        if !content.is_empty() && content.parse::<Cidr>().is_err() {
            lines_ok = false;
        }
    }
    match parse_list(Path::new("fuzz.txt"), text) {
        Ok(list) => {
            assert!(lines_ok, "parse_list accepted a file with a bad line");
            list.into_iter().for_each(check);
        }
        Err(e) => {
            assert!(
                !lines_ok,
                "parse_list refused a file whose lines all parse: {e}"
            );
        }
    }
});
