//! What a fleet shares through etcd, and how a node reconciles with it.
//!
//! Every list entry is one key, `<prefix>/lists/block/<cidr>` or `<prefix>/lists/allow/<cidr>`,
//! whose value ([`Value`], JSON) carries the entry, the node that made it and when. A node keeps
//! a *mirror*: the entries as it last saw them in etcd, with the revision it had applied. The
//! mirror is the base of a three-way merge between the node's own lists (its state file) and
//! etcd's ([`merge`]): a side that changed since the base wins, and when both changed, etcd does.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::defense::{
    Cidr,
    state::{AllowRecord, BlockRecord, State},
};

/// Which list an entry is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum List {
    Block,
    Allow,
}

impl List {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            List::Block => "block",
            List::Allow => "allow",
        }
    }
}

/// One entry's identity: its list and its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub list: List,
    pub cidr: Cidr,
}

/// An entry's content as the state file keeps it (and as two sides compare it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Block(BlockRecord),
    Allow(AllowRecord),
}

/// The value stored in etcd for one entry. Unknown fields are ignored, so that a newer
/// version may add some.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Value {
    /// The prefix again: a value under another prefix's key is refused.
    pub prefix: Cidr,
    pub list: List,
    /// `manual`, `import`, `l7-abuse` (blocklist entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The node that made the entry.
    pub origin: String,
    /// Wall-clock ms since the Unix epoch when the entry was made.
    pub created_ms: u64,
    /// Wall-clock expiry (ms since the Unix epoch); the key also has an etcd lease that ends
    /// then, so etcd removes it everywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
}

/// Why a key or value from etcd was refused (it is skipped and logged; nothing else changes).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    #[error("key {key:?} is not under {prefix:?}/lists/block/ or /lists/allow/")]
    Key { key: String, prefix: String },
    #[error("key {key:?}: {message}")]
    Prefix { key: String, message: String },
    #[error("value of key {key:?} is not valid: {message}")]
    Value { key: String, message: String },
}

/// `<prefix>/lists/`: what a node watches.
#[must_use]
pub fn lists_prefix(prefix: &str) -> String {
    format!("{prefix}/lists/")
}

/// The etcd key of an entry.
#[must_use]
pub fn key_string(prefix: &str, key: &Key) -> String {
    format!("{prefix}/lists/{}/{}", key.list.name(), key.cidr)
}

/// Parses an etcd key under `prefix`. The prefix must be written canonically (no host bits),
/// so that one entry has exactly one key.
pub fn parse_key(prefix: &str, raw: &[u8]) -> Result<Key, ModelError> {
    let text = String::from_utf8_lossy(raw);
    let bad = || ModelError::Key {
        key: text.to_string(),
        prefix: prefix.to_owned(),
    };
    let rest = text
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix("/lists/"))
        .ok_or_else(bad)?;
    let (list, cidr) = rest.split_once('/').ok_or_else(bad)?;
    let list = match list {
        "block" => List::Block,
        "allow" => List::Allow,
        _ => return Err(bad()),
    };
    let parsed: Cidr = cidr
        .parse()
        .map_err(|e: crate::cidr::CidrError| ModelError::Prefix {
            key: text.to_string(),
            message: e.to_string(),
        })?;
    if parsed.to_string() != cidr {
        return Err(ModelError::Prefix {
            key: text.to_string(),
            message: format!("not written canonically (as {parsed})"),
        });
    }
    Ok(Key { list, cidr: parsed })
}

/// Parses and checks a value read under `key`.
pub fn parse_value(key: &Key, raw_key: &[u8], raw: &[u8]) -> Result<Value, ModelError> {
    let bad = |message: String| ModelError::Value {
        key: String::from_utf8_lossy(raw_key).into_owned(),
        message,
    };
    if raw.len() > super::MAX_VALUE {
        return Err(bad(format!(
            "{} bytes, over the {} a node takes",
            raw.len(),
            super::MAX_VALUE
        )));
    }
    let v: Value = serde_json::from_slice(raw).map_err(|e| bad(e.to_string()))?;
    if v.prefix != key.cidr || v.list != key.list {
        return Err(bad(format!(
            "it describes {} on the {}list",
            v.prefix,
            v.list.name()
        )));
    }
    if key.list == List::Block {
        match v.reason.as_deref() {
            Some("manual" | "import" | "l7-abuse") => {}
            other => return Err(bad(format!("unknown blocklist reason {other:?}"))),
        }
    }
    Ok(v)
}

impl Value {
    /// The value that publishes `record` from node `origin`.
    #[must_use]
    pub fn new(key: &Key, record: &Record, origin: &str) -> Self {
        match record {
            Record::Block(r) => Value {
                prefix: key.cidr,
                list: List::Block,
                reason: Some(r.reason.clone()),
                note: r.note.clone(),
                origin: origin.to_owned(),
                created_ms: r.added_at_ms,
                expires_ms: r.expires_at_ms,
            },
            Record::Allow(r) => Value {
                prefix: key.cidr,
                list: List::Allow,
                reason: None,
                note: r.note.clone(),
                origin: origin.to_owned(),
                created_ms: r.added_at_ms,
                expires_ms: None,
            },
        }
    }

    /// The entry as the state file keeps it.
    #[must_use]
    pub fn record(&self) -> Record {
        match self.list {
            List::Block => Record::Block(BlockRecord {
                reason: self.reason.clone().unwrap_or_else(|| "manual".to_owned()),
                note: self.note.clone(),
                added_at_ms: self.created_ms,
                expires_at_ms: self.expires_ms,
            }),
            List::Allow => Record::Allow(AllowRecord {
                added_at_ms: self.created_ms,
                note: self.note.clone(),
            }),
        }
    }
}

/// The record if it is in force at `now_ms`: an expired blocklist entry counts as absent on
/// every side (etcd's lease and each node's sweep remove it; neither removal is a change to
/// publish or to take).
#[must_use]
pub fn live(record: Option<Record>, now_ms: u64) -> Option<Record> {
    match record {
        Some(Record::Block(r)) if r.is_expired(now_ms) => None,
        other => other,
    }
}

/// Only the entries in force at `now_ms`.
#[must_use]
pub fn live_only(entries: BTreeMap<Key, Record>, now_ms: u64) -> BTreeMap<Key, Record> {
    entries
        .into_iter()
        .filter(|(_, r)| live(Some(r.clone()), now_ms).is_some())
        .collect()
}

/// Every entry of a state file, by key.
#[must_use]
pub fn entries(state: &State) -> BTreeMap<Key, Record> {
    let block = state.blocklist.iter().map(|(c, r)| {
        (
            Key {
                list: List::Block,
                cidr: *c,
            },
            Record::Block(r.clone()),
        )
    });
    let allow = state.allowlist.iter().map(|(c, r)| {
        (
            Key {
                list: List::Allow,
                cidr: *c,
            },
            Record::Allow(r.clone()),
        )
    });
    block.chain(allow).collect()
}

/// Sets (or with `None` removes) one entry of a state file.
pub fn set_entry(state: &mut State, key: &Key, record: Option<&Record>) {
    match (key.list, record) {
        (List::Block, Some(Record::Block(r))) => {
            state.blocklist.insert(key.cidr, r.clone());
        }
        (List::Allow, Some(Record::Allow(r))) => {
            state.allowlist.insert(key.cidr, r.clone());
        }
        (List::Block, _) => {
            state.blocklist.remove(&key.cidr);
        }
        (List::Allow, _) => {
            state.allowlist.remove(&key.cidr);
        }
    }
}

/// What a reconciliation does: entries to change in the node's own lists (etcd's version wins)
/// and entries to publish (changed only on this node: made, changed or removed while it could
/// not reach etcd, or before it joined).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub local: Vec<(Key, Option<Record>)>,
    pub publish: Vec<(Key, Option<Record>)>,
}

/// The three-way merge of `local` and `remote` against `base` (the mirror): for each entry,
/// a side that differs from the base changed it; if etcd's side changed, etcd's version is
/// taken; if only the node's changed, it is published; if neither, nothing happens.
#[must_use]
pub fn merge(
    base: &BTreeMap<Key, Record>,
    local: &BTreeMap<Key, Record>,
    remote: &BTreeMap<Key, Record>,
) -> Plan {
    let mut keys: Vec<&Key> = base
        .keys()
        .chain(local.keys())
        .chain(remote.keys())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let mut plan = Plan::default();
    for key in keys {
        let (b, l, r) = (base.get(key), local.get(key), remote.get(key));
        if r != b {
            if l != r {
                plan.local.push((*key, r.cloned()));
            }
        } else if l != b {
            plan.publish.push((*key, l.cloned()));
        }
    }
    plan
}

/// The mirror as kept in the state file (`cluster`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorFile {
    /// The etcd cluster's id, so that a mirror of another cluster is not taken as a base.
    pub cluster_id: u64,
    /// The revision the node had applied.
    pub revision: i64,
    /// Entries by etcd key.
    pub entries: BTreeMap<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(reason: &str, added: u64, expires: Option<u64>) -> Record {
        Record::Block(BlockRecord {
            reason: reason.to_owned(),
            note: None,
            added_at_ms: added,
            expires_at_ms: expires,
        })
    }

    fn key(s: &str) -> Key {
        Key {
            list: List::Block,
            cidr: s.parse().unwrap(),
        }
    }

    #[test]
    fn keys_round_trip_and_refuse_what_is_not_canonical() {
        let k = key("10.1.2.0/24");
        let s = key_string("/p", &k);
        assert_eq!(s, "/p/lists/block/10.1.2.0/24");
        assert_eq!(parse_key("/p", s.as_bytes()), Ok(k));
        let v6 = Key {
            list: List::Allow,
            cidr: "2001:db8::/32".parse().unwrap(),
        };
        assert_eq!(parse_key("/p", key_string("/p", &v6).as_bytes()), Ok(v6));
        for bad in [
            "/p/lists/block/10.1.2.3/24",
            "/p/lists/block/10.1.2.0/33",
            "/p/lists/deny/10.1.2.0/24",
            "/p/lists/block/",
            "/q/lists/block/10.1.2.0/24",
            "/p/lists/block/2001:DB8::/32",
            "/p/lists/block/010.1.2.0/24",
        ] {
            assert!(parse_key("/p", bad.as_bytes()).is_err(), "{bad}");
        }
        let e = parse_key("/p", b"/p/lists/block/10.1.2.3/24")
            .unwrap_err()
            .to_string();
        assert!(e.contains("10.1.2.3/24"), "{e}");
    }

    #[test]
    fn values_are_checked_against_their_key() {
        let k = key("10.1.2.0/24");
        let rec = block("l7-abuse", 5, Some(9));
        let v = Value::new(&k, &rec, "n1");
        let raw = serde_json::to_vec(&v).unwrap();
        let parsed = parse_value(&k, b"k", &raw).unwrap();
        assert_eq!(parsed.record(), rec);
        assert_eq!(parsed.origin, "n1");
        // Another prefix's value, a bad reason, not JSON: refused, naming the key.
        let other = Value::new(&key("10.9.0.0/16"), &rec, "n1");
        let e = parse_value(
            &k,
            b"/p/lists/block/10.1.2.0/24",
            &serde_json::to_vec(&other).unwrap(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("/p/lists/block/10.1.2.0/24") && e.contains("10.9.0.0/16"),
            "{e}"
        );
        let mut odd = v.clone();
        odd.reason = Some("because".into());
        assert!(parse_value(&k, b"k", &serde_json::to_vec(&odd).unwrap()).is_err());
        assert!(parse_value(&k, b"k", b"{").is_err());
        let mut long = v.clone();
        long.note = Some("x".repeat(super::super::MAX_VALUE));
        let e = parse_value(&k, b"k", &serde_json::to_vec(&long).unwrap()).unwrap_err();
        assert!(e.to_string().contains("bytes"), "{e}");
        // Fields a newer version adds are ignored.
        let mut j: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        j["future"] = serde_json::json!(1);
        assert!(parse_value(&k, b"k", &serde_json::to_vec(&j).unwrap()).is_ok());
    }

    #[test]
    #[expect(
        clippy::many_single_char_names,
        reason = "seven entries, one letter each, as in the table of cases"
    )]
    fn merge_takes_the_side_that_changed_and_etcd_on_conflict() {
        let (a, b, c, d, e, f, g) = (
            key("10.0.0.1/32"),
            key("10.0.0.2/32"),
            key("10.0.0.3/32"),
            key("10.0.0.4/32"),
            key("10.0.0.5/32"),
            key("10.0.0.6/32"),
            key("10.0.0.7/32"),
        );
        let one = block("manual", 1, None);
        let two = block("manual", 2, None);
        let three = block("manual", 3, None);
        let base: BTreeMap<Key, Record> = [
            (a, one.clone()),
            (b, one.clone()),
            (c, one.clone()),
            (d, one.clone()),
        ]
        .into();
        let local: BTreeMap<Key, Record> = [
            (a, one.clone()), // unchanged on both sides
            (b, two.clone()), // changed here only: published
            // c removed here only: the removal is published
            (d, two.clone()),   // changed on both: etcd's wins
            (e, one.clone()),   // made here: published
            (g, three.clone()), // made on both sides: etcd's wins
        ]
        .into();
        let remote: BTreeMap<Key, Record> = [
            (a, one.clone()),
            (b, one.clone()),
            (c, one.clone()),
            (d, three.clone()),
            (f, one.clone()), // made elsewhere: taken
            (g, one.clone()),
        ]
        .into();
        let plan = merge(&base, &local, &remote);
        assert_eq!(
            plan.local,
            vec![
                (d, Some(three.clone())),
                (f, Some(one.clone())),
                (g, Some(one.clone()))
            ]
        );
        assert_eq!(
            plan.publish,
            vec![(b, Some(two)), (c, None), (e, Some(one.clone()))]
        );
        // Removed in etcd (or expired by its lease) while this node was away: removed here.
        let gone = merge(&base, &base, &BTreeMap::new());
        assert_eq!(gone.local.len(), 4);
        assert!(gone.local.iter().all(|(_, r)| r.is_none()));
        assert!(gone.publish.is_empty());
        // A node joining with lists of its own and an empty mirror publishes them all.
        let join = merge(&BTreeMap::new(), &local, &BTreeMap::new());
        assert_eq!(join.publish.len(), local.len());
    }
}
