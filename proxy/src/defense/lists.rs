//! One code path for every change to the blocklist and allowlist, used by the CLI and the
//! daemon alike: validate, change the kernel map, write the state file; if the state file
//! cannot be written, the map change is undone, so nothing is ever half-written.
use std::{
    path::Path,
    time::{Duration, SystemTime},
};

use proxy_common::{BlockEntry, Reason};
use serde::Serialize;

use super::{
    Cidr, DefenseError,
    state::{AllowRecord, BlockRecord, State, StateFile},
};
use crate::{
    clock::{kernel_ns, wall_ms},
    kernel::KernelMaps,
};

/// The lists of one instance: its pinned maps and its state file.
pub struct ListStore {
    maps: KernelMaps,
    file: StateFile,
    /// Sweep bookkeeping: the state file's mtime when last read, and its earliest expiry.
    seen: Option<(SystemTime, Option<u64>)>,
}

/// A blocklist entry as shown by `proxy blocklist list`.
#[derive(Debug, Clone, Serialize)]
pub struct BlockView {
    pub cidr: Cidr,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub added_at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    /// Whether the kernel map holds the entry (it should, unless it expired moments ago).
    pub in_kernel: bool,
}

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    pub added: usize,
    pub updated: usize,
}

/// What a start-up sync did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub blocked: usize,
    pub allowed: usize,
    pub expired: usize,
    pub stray_removed: usize,
}

/// One prefix to block.
#[derive(Debug, Clone, Copy)]
pub struct BlockItem<'a> {
    pub cidr: Cidr,
    pub ttl: Option<Duration>,
    pub reason: Reason,
    pub note: Option<&'a str>,
}

/// What became of one block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Added,
    Updated,
    /// A stronger entry was there and stays (automatic bans only).
    Kept,
    /// The kernel map refused it (automatic bans only; e.g. the map is full).
    Failed(String),
}

/// How many entries of a map of `max` automatic bans may fill (all but a sixteenth).
#[must_use]
pub fn auto_ban_limit(max: u32) -> usize {
    (max - max / 16) as usize
}

/// Whether an unexpired entry outranks an automatic ban ending at `expires_at_ms`: an
/// operator's block (manual or imported) always does; another ban does if it ends later.
fn stronger(existing: &BlockRecord, expires_at_ms: Option<u64>) -> bool {
    existing.reason != Reason::L7Abuse.name()
        || match (existing.expires_at_ms, expires_at_ms) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => a >= b,
        }
}

/// Monotonic expiry for the kernel from a wall-clock expiry.
fn kernel_expiry(expires_at_ms: Option<u64>, now_ms: u64, now_mono_ns: u64) -> u64 {
    match expires_at_ms {
        None => 0,
        // Never 0 (which means "never expires"), even for an entry that is already due.
        Some(e) => now_mono_ns
            .saturating_add(e.saturating_sub(now_ms).saturating_mul(1_000_000))
            .max(1),
    }
}

/// The kernel entry for a stored record.
fn kernel_entry(record: &BlockRecord, now_ms: u64, now_mono_ns: u64) -> BlockEntry {
    BlockEntry {
        expires_at_ns: kernel_expiry(record.expires_at_ms, now_ms, now_mono_ns),
        reason: reason_code(&record.reason),
        flags: 0,
    }
}

fn reason_code(name: &str) -> u32 {
    [Reason::Manual, Reason::Import, Reason::L7Abuse]
        .into_iter()
        .find(|r| r.name() == name)
        .unwrap_or(Reason::Unspecified) as u32
}

/// One entry that differs between two versions of the lists: its old and new record.
enum Change {
    Block(Cidr, Option<BlockRecord>, Option<BlockRecord>),
    Allow(Cidr, Option<AllowRecord>, Option<AllowRecord>),
}

/// The prefixes of two versions of one list whose entries differ (`same` says when two
/// entries count as equal), with both sides.
fn differing<T: Clone>(
    before: &std::collections::BTreeMap<Cidr, T>,
    after: &std::collections::BTreeMap<Cidr, T>,
    same: impl Fn(Option<&T>, Option<&T>) -> bool,
) -> Vec<(Cidr, Option<T>, Option<T>)> {
    let mut cidrs: Vec<&Cidr> = before.keys().chain(after.keys()).collect();
    cidrs.sort_unstable();
    cidrs.dedup();
    cidrs
        .into_iter()
        .filter_map(|c| {
            let (old, new) = (before.get(c), after.get(c));
            (!same(old, new)).then(|| (*c, old.cloned(), new.cloned()))
        })
        .collect()
}

/// Every entry that differs from `before` to `after` (for the allowlist, only presence
/// reaches the kernel).
fn changes(before: &State, after: &State) -> Vec<Change> {
    let blocks = differing(&before.blocklist, &after.blocklist, |a, b| a == b)
        .into_iter()
        .map(|(c, o, n)| Change::Block(c, o, n));
    let allows = differing(&before.allowlist, &after.allowlist, |a, b| {
        a.is_some() == b.is_some()
    })
    .into_iter()
    .map(|(c, o, n)| Change::Allow(c, o, n));
    blocks.chain(allows).collect()
}

/// Parses a list file: one address or CIDR per line; `#` and `;` start comments (so the
/// Spamhaus DROP format loads as is: `1.10.16.0/20 ; SBL256894`). Every bad line is an error
/// that names the file and line; nothing is applied unless all lines parse.
pub fn parse_list(path: &Path, text: &str) -> Result<Vec<Cidr>, DefenseError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let content = line.split(['#', ';']).next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let cidr = content.parse().map_err(|source| DefenseError::ListLine {
            path: path.to_owned(),
            line: i + 1,
            source,
        })?;
        out.push(cidr);
    }
    Ok(out)
}

impl ListStore {
    #[must_use]
    pub fn new(maps: KernelMaps, file: StateFile) -> Self {
        Self {
            maps,
            file,
            seen: None,
        }
    }

    #[must_use]
    pub fn state_path(&self) -> &Path {
        self.file.path()
    }

    #[must_use]
    pub fn maps(&self) -> &KernelMaps {
        &self.maps
    }

    /// Blocks each prefix (adding or replacing), with an optional TTL. All or nothing: if the
    /// kernel map or the state file refuses one, every change is undone.
    pub fn block(
        &mut self,
        cidrs: &[Cidr],
        ttl: Option<Duration>,
        reason: Reason,
        note: Option<&str>,
    ) -> Result<ImportReport, DefenseError> {
        let items: Vec<BlockItem<'_>> = cidrs
            .iter()
            .map(|&cidr| BlockItem {
                cidr,
                ttl,
                reason,
                note,
            })
            .collect();
        let outcomes = self.apply_blocks(&items, false)?;
        let mut report = ImportReport::default();
        for o in outcomes {
            match o {
                Applied::Added => report.added += 1,
                Applied::Updated => report.updated += 1,
                Applied::Kept | Applied::Failed(_) => {}
            }
        }
        Ok(report)
    }

    /// Automatic bans, many at once (one lock, one state file write): each is applied unless
    /// the prefix already has a stronger entry (a manual or imported block, or a ban that ends
    /// later), which is kept as it is. A ban the kernel map refuses (full) is reported as
    /// `Failed` and the others still apply.
    pub fn ban_batch(&mut self, items: &[BlockItem<'_>]) -> Result<Vec<Applied>, DefenseError> {
        self.apply_blocks(items, true)
    }

    fn apply_blocks(
        &mut self,
        items: &[BlockItem<'_>],
        automatic: bool,
    ) -> Result<Vec<Applied>, DefenseError> {
        let lock = self.file.lock()?;
        let mut state = self.file.read()?;
        let now = wall_ms();
        let now_mono = kernel_ns();
        let mut outcomes = Vec::with_capacity(items.len());
        // Automatic bans leave the last sixteenth of each map to the operator: a flood of
        // bans from fresh prefixes cannot lock `proxy blocklist add` out.
        let mut used = if automatic {
            let v4 = state.blocklist.keys().filter(|c| c.is_ipv4()).count();
            (v4, state.blocklist.len() - v4)
        } else {
            (0, 0)
        };
        // Undo log: the previous record of every prefix changed so far (the state file and
        // the kernel agree, so the record is enough to restore the kernel entry).
        let mut undo: Vec<(Cidr, Option<BlockRecord>)> = Vec::new();
        let mut result = Ok(());
        for item in items {
            let expires_at_ms = item
                .ttl
                .map(|t| now.saturating_add(u64::try_from(t.as_millis()).unwrap_or(u64::MAX)));
            let existing = state
                .blocklist
                .get(&item.cidr)
                .filter(|r| !r.is_expired(now));
            if automatic && existing.is_some_and(|r| stronger(r, expires_at_ms)) {
                outcomes.push(Applied::Kept);
                continue;
            }
            if automatic && existing.is_none() {
                let (count, max) = if item.cidr.is_ipv4() {
                    (&mut used.0, proxy_common::BLOCK_V4_MAX)
                } else {
                    (&mut used.1, proxy_common::BLOCK_V6_MAX)
                };
                if *count >= auto_ban_limit(max) {
                    outcomes.push(Applied::Failed(format!(
                        "the blocklist map holds {count} entries; automatic bans stop at {} so the rest stays free for operators' blocks",
                        auto_ban_limit(max)
                    )));
                    continue;
                }
                *count += 1;
            }
            let entry = BlockEntry {
                expires_at_ns: kernel_expiry(expires_at_ms, now, now_mono),
                reason: item.reason as u32,
                flags: 0,
            };
            if let Err(e) = self.maps.block(&item.cidr, entry) {
                if automatic {
                    outcomes.push(Applied::Failed(e.to_string()));
                    continue;
                }
                result = Err(e.into());
                break;
            }
            let record = BlockRecord {
                reason: item.reason.name().to_owned(),
                note: item.note.map(str::to_owned),
                added_at_ms: now,
                expires_at_ms,
            };
            let previous = state.blocklist.insert(item.cidr, record);
            outcomes.push(if previous.is_some() {
                Applied::Updated
            } else {
                Applied::Added
            });
            undo.push((item.cidr, previous));
        }
        if result.is_ok() && !undo.is_empty() {
            result = self.file.write(&lock, &state);
        }
        if let Err(e) = result {
            for (cidr, previous) in undo.into_iter().rev() {
                let _ = match previous {
                    Some(r) => self.maps.block(&cidr, kernel_entry(&r, now, now_mono)),
                    None => self.maps.unblock(&cidr).map(|_| ()),
                };
            }
            return Err(e);
        }
        Ok(outcomes)
    }

    /// Removes a prefix from the blocklist.
    pub fn unblock(&mut self, cidr: &Cidr) -> Result<(), DefenseError> {
        let lock = self.file.lock()?;
        let mut state = self.file.read()?;
        let previous = state.blocklist.remove(cidr);
        let was_in_kernel = self.maps.unblock(cidr)?;
        if previous.is_none() && !was_in_kernel {
            return Err(DefenseError::NotListed {
                list: "blocklist",
                cidr: *cidr,
            });
        }
        if let Err(e) = self.file.write(&lock, &state) {
            if let Some(r) = previous.filter(|_| was_in_kernel) {
                let _ = self
                    .maps
                    .block(cidr, kernel_entry(&r, wall_ms(), kernel_ns()));
            }
            return Err(e);
        }
        Ok(())
    }

    /// Empties the blocklist; returns how many entries were removed.
    pub fn flush_blocklist(&mut self) -> Result<usize, DefenseError> {
        let lock = self.file.lock()?;
        let mut state = self.file.read()?;
        let before = self.maps.blocked()?;
        let count = before.len().max(state.blocklist.len());
        state.blocklist.clear();
        // Write the state first: if that fails, the kernel is untouched.
        self.file.write(&lock, &state)?;
        for (cidr, _) in &before {
            self.maps.unblock(cidr)?;
        }
        // The length bits of what was flushed would cost every packet probes.
        self.maps.rebuild_index()?;
        Ok(count)
    }

    /// The blocklist, from the state file, each entry checked against the kernel map.
    pub fn blocked(&self) -> Result<Vec<BlockView>, DefenseError> {
        let state = self.file.read()?;
        let kernel: std::collections::HashSet<Cidr> =
            self.maps.blocked()?.into_iter().map(|(c, _)| c).collect();
        let mut out: Vec<BlockView> = state
            .blocklist
            .into_iter()
            .map(|(cidr, r)| BlockView {
                cidr,
                in_kernel: kernel.contains(&cidr),
                reason: r.reason,
                note: r.note,
                added_at_ms: r.added_at_ms,
                expires_at_ms: r.expires_at_ms,
            })
            .collect();
        // Entries only the kernel has (added by another tool, or a state file put back).
        let listed: std::collections::HashSet<Cidr> = out.iter().map(|v| v.cidr).collect();
        for (cidr, entry) in self.maps.blocked()? {
            if !listed.contains(&cidr) {
                out.push(BlockView {
                    cidr,
                    reason: Reason::from_code(entry.reason).name().to_owned(),
                    note: Some("in the kernel map only, not in the state file".into()),
                    added_at_ms: 0,
                    expires_at_ms: None,
                    in_kernel: true,
                });
            }
        }
        Ok(out)
    }

    /// Adds a prefix to the allowlist.
    pub fn allow(&mut self, cidr: &Cidr, note: Option<&str>) -> Result<bool, DefenseError> {
        let lock = self.file.lock()?;
        let mut state = self.file.read()?;
        let existed = self.maps.allowed()?.contains(cidr);
        self.maps.allow(cidr)?;
        let new = state
            .allowlist
            .insert(
                *cidr,
                AllowRecord {
                    added_at_ms: wall_ms(),
                    note: note.map(str::to_owned),
                },
            )
            .is_none();
        if let Err(e) = self.file.write(&lock, &state) {
            if !existed {
                let _ = self.maps.disallow(cidr);
            }
            return Err(e);
        }
        Ok(new)
    }

    /// Removes a prefix from the allowlist.
    pub fn disallow(&mut self, cidr: &Cidr) -> Result<(), DefenseError> {
        let lock = self.file.lock()?;
        let mut state = self.file.read()?;
        let existed = self.maps.allowed()?.contains(cidr);
        if state.allowlist.remove(cidr).is_none() && !existed {
            return Err(DefenseError::NotListed {
                list: "allowlist",
                cidr: *cidr,
            });
        }
        self.maps.disallow(cidr)?;
        if let Err(e) = self.file.write(&lock, &state) {
            if existed {
                let _ = self.maps.allow(cidr);
            }
            return Err(e);
        }
        Ok(())
    }

    /// The allowlist from the state file.
    pub fn allowed(&self) -> Result<Vec<(Cidr, AllowRecord)>, DefenseError> {
        Ok(self.file.read()?.allowlist.into_iter().collect())
    }

    /// Makes the kernel maps equal to the state file (daemon start): the state file is the
    /// durable truth; expired entries are dropped from both.
    pub fn sync_kernel_from_state(&mut self) -> Result<SyncReport, DefenseError> {
        let lock = self.file.lock()?;
        let mut state = self.file.read()?;
        let now = wall_ms();
        let now_mono = kernel_ns();
        let mut report = SyncReport::default();
        let before = state.blocklist.len();
        state.blocklist.retain(|_, r| !r.is_expired(now));
        report.expired = before - state.blocklist.len();
        for (cidr, _) in self.maps.blocked()? {
            if !state.blocklist.contains_key(&cidr) {
                self.maps.unblock(&cidr)?;
                report.stray_removed += 1;
            }
        }
        for cidr in self.maps.allowed()? {
            if !state.allowlist.contains_key(&cidr) {
                self.maps.disallow(&cidr)?;
                report.stray_removed += 1;
            }
        }
        for (cidr, r) in &state.blocklist {
            self.maps.block(cidr, kernel_entry(r, now, now_mono))?;
            report.blocked += 1;
        }
        for cidr in state.allowlist.keys() {
            self.maps.allow(cidr)?;
            report.allowed += 1;
        }
        // The programs' index (hash maps, length masks, allowlist flags) made exact: maps
        // pinned by an older version, and bits of removed prefixes, are brought in line.
        self.maps.rebuild_index()?;
        if report.expired > 0 {
            self.file.write(&lock, &state)?;
        }
        Ok(report)
    }

    /// The lists as the state file has them now.
    pub fn read_state(&self) -> Result<State, DefenseError> {
        self.file.read()
    }

    /// Changes the lists as `edit` decides from their current content (read under the state
    /// file's lock, so no CLI call or sweep interleaves): the kernel maps follow every entry
    /// that differs afterwards, then the file is written once. All or nothing: if a map or
    /// the file refuses, the maps are put back as they were. Returns `edit`'s result and the
    /// lists as they now are.
    pub fn edit<T>(
        &mut self,
        edit: impl FnOnce(&mut State) -> T,
    ) -> Result<(T, State), DefenseError> {
        let lock = self.file.lock()?;
        let before = self.file.read()?;
        let mut after = before.clone();
        let out = edit(&mut after);
        if after == before {
            return Ok((out, after));
        }
        let now = wall_ms();
        let now_mono = kernel_ns();
        let mut applied: Vec<Change> = Vec::new();
        let mut result = Ok(());
        for change in changes(&before, &after) {
            if let Err(e) = self.apply_change(&change, false, now, now_mono) {
                result = Err(e);
                break;
            }
            applied.push(change);
        }
        if result.is_ok() {
            result = self.file.write(&lock, &after);
        }
        if let Err(e) = result {
            for change in applied.iter().rev() {
                let _ = self.apply_change(change, true, now, now_mono);
            }
            return Err(e);
        }
        Ok((out, after))
    }

    /// Makes the maps hold `change`'s new side (or, with `undo`, its old side).
    fn apply_change(
        &mut self,
        change: &Change,
        undo: bool,
        now: u64,
        now_mono: u64,
    ) -> Result<(), DefenseError> {
        match change {
            Change::Block(cidr, old, new) => match if undo { old } else { new } {
                Some(r) => self.maps.block(cidr, kernel_entry(r, now, now_mono))?,
                None => {
                    self.maps.unblock(cidr)?;
                }
            },
            Change::Allow(cidr, old, new) => {
                if if undo { old.is_some() } else { new.is_some() } {
                    self.maps.allow(cidr)?;
                } else {
                    self.maps.disallow(cidr)?;
                }
            }
        }
        Ok(())
    }

    /// Removes expired entries from the maps and the state file. Cheap when nothing is due:
    /// the state file is only re-read when it changed, and only rewritten when an entry expired.
    pub fn sweep(&mut self) -> Result<usize, DefenseError> {
        let now = wall_ms();
        let modified = self.file.modified();
        if let (Some((seen_mtime, next_expiry)), Some(mtime)) = (self.seen, modified)
            && seen_mtime == mtime
            && next_expiry.is_none_or(|e| now < e)
        {
            return Ok(0);
        }
        let lock = self.file.lock()?;
        let mut state = self.file.read()?;
        let expired: Vec<Cidr> = state
            .blocklist
            .iter()
            .filter(|(_, r)| r.is_expired(now))
            .map(|(c, _)| *c)
            .collect();
        if !expired.is_empty() {
            for cidr in &expired {
                state.blocklist.remove(cidr);
            }
            self.file.write(&lock, &state)?;
            for cidr in &expired {
                self.maps.unblock(cidr)?;
            }
        }
        let next = state
            .blocklist
            .values()
            .filter_map(|r| r.expires_at_ms)
            .min();
        self.seen = self.file.modified().map(|m| (m, next));
        Ok(expired.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_files_take_comments_and_name_bad_lines() {
        let text = "; Spamhaus DROP List\n1.10.16.0/20 ; SBL256894\n# a comment\n\n 192.0.2.7 \n2001:db8::/32\n";
        let list = parse_list(Path::new("drop.txt"), text).unwrap();
        let shown: Vec<String> = list.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["1.10.16.0/20", "192.0.2.7/32", "2001:db8::/32"]);

        let e = parse_list(Path::new("drop.txt"), "10.0.0.0/8\n10.0.0.1/8\n").unwrap_err();
        assert!(e.to_string().starts_with("drop.txt:2: "), "{e}");
    }

    #[test]
    fn bans_never_weaken_an_entry() {
        let record = |reason: Reason, expires_at_ms| BlockRecord {
            reason: reason.name().to_owned(),
            note: None,
            added_at_ms: 0,
            expires_at_ms,
        };
        assert!(stronger(&record(Reason::Manual, Some(10)), Some(1000)));
        assert!(stronger(&record(Reason::Import, None), None));
        assert!(stronger(&record(Reason::L7Abuse, None), Some(1000)));
        assert!(stronger(&record(Reason::L7Abuse, Some(2000)), Some(1000)));
        assert!(!stronger(&record(Reason::L7Abuse, Some(500)), Some(1000)));
        assert!(!stronger(&record(Reason::L7Abuse, Some(500)), None));
    }

    #[test]
    fn kernel_expiry_is_never_zero_for_a_ttl() {
        assert_eq!(kernel_expiry(None, 1000, 5), 0);
        assert_eq!(kernel_expiry(Some(3000), 1000, 5), 5 + 2_000_000_000);
        assert_eq!(kernel_expiry(Some(10), 1000, 0), 1);
    }
}
