//! The state file: the durable copy of the blocklist and allowlist, with the operator's notes.
//!
//! JSON, written atomically (temporary file + rename) under an exclusive lock on
//! `<state>.lock`, so concurrent CLI calls and the daemon's sweep never lose an update.
use std::{
    collections::BTreeMap,
    fs::File,
    path::{Path, PathBuf},
    time::SystemTime,
};

use serde::{Deserialize, Serialize};

use super::{Cidr, DefenseError};

pub const STATE_VERSION: u32 = 1;

/// One blocklist entry as stored on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockRecord {
    /// Reason class (`manual`, `import`, `l7-abuse`).
    pub reason: String,
    /// Free text from `--reason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Wall-clock time the entry was added, in ms since the Unix epoch.
    pub added_at_ms: u64,
    /// Wall-clock expiry in ms since the Unix epoch; absent = never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
}

impl BlockRecord {
    #[must_use]
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|e| now_ms >= e)
    }
}

/// One allowlist entry as stored on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowRecord {
    pub added_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub version: u32,
    pub blocklist: BTreeMap<Cidr, BlockRecord>,
    pub allowlist: BTreeMap<Cidr, AllowRecord>,
    /// With `[cluster]`: etcd's entries as this node last saw them (the base of its
    /// reconciliation), written with the lists so that the two never disagree after a crash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::model::MirrorFile>,
}

/// Holds the exclusive lock on a state file; released on drop.
pub struct StateLock {
    _file: File,
}

/// The state file at one path.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    #[must_use]
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".lock");
        PathBuf::from(p)
    }

    fn write_err(&self, source: std::io::Error) -> DefenseError {
        DefenseError::StateWrite {
            path: self.path.clone(),
            source,
        }
    }

    /// Takes the exclusive lock (blocking), creating the directory if needed.
    pub fn lock(&self) -> Result<StateLock, DefenseError> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| self.write_err(e))?;
        }
        // Read-only is enough for flock. Mode 0600: no other local user can open it, so none
        // can hold the lock (after a privilege drop the daemon's user owns it; root opens
        // anything). A planted symbolic link is refused.
        let lock = self.lock_path();
        let file = crate::safe_fs::open_or_create(&lock, 0o600).map_err(|source| {
            DefenseError::StateWrite {
                path: lock.clone(),
                source,
            }
        })?;
        file.lock().map_err(|e| self.write_err(e))?;
        Ok(StateLock { _file: file })
    }

    /// Reads the file; a missing file is an empty state.
    pub fn read(&self) -> Result<State, DefenseError> {
        let text = match crate::safe_fs::open_read(&self.path).and_then(|mut f| {
            let mut t = String::new();
            std::io::Read::read_to_string(&mut f, &mut t).map(|_| t)
        }) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(State {
                    version: STATE_VERSION,
                    ..State::default()
                });
            }
            Err(source) => {
                return Err(DefenseError::StateRead {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let state: State = serde_json::from_str(&text).map_err(|e| DefenseError::StateParse {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        if state.version != STATE_VERSION {
            return Err(DefenseError::StateParse {
                path: self.path.clone(),
                message: format!(
                    "version {} is not supported (expected {STATE_VERSION})",
                    state.version
                ),
            });
        }
        Ok(state)
    }

    /// Replaces the file atomically (never through a planted link; the directory is synced
    /// after the rename). Call with the lock held.
    #[expect(
        clippy::missing_panics_doc,
        reason = "the only panic is on serializing `State` (plain data), which cannot fail"
    )]
    pub fn write(&self, _lock: &StateLock, state: &State) -> Result<(), DefenseError> {
        let mut text = serde_json::to_vec_pretty(state).expect("state serializes");
        text.push(b'\n');
        crate::safe_fs::write_atomic(&self.path, &text, 0o644).map_err(|e| self.write_err(e))
    }

    /// The lock file's path (handed to the daemon's user with the state file).
    #[must_use]
    pub fn lock_file(&self) -> PathBuf {
        self.lock_path()
    }

    /// The file's modification time, to notice changes cheaply.
    #[must_use]
    pub fn modified(&self) -> Option<SystemTime> {
        std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file() {
        let dir = std::env::temp_dir().join(format!("proxy-state-test-{}", std::process::id()));
        let file = StateFile::new(dir.join("state.json"));
        let mut state = file.read().unwrap();
        assert!(state.blocklist.is_empty());
        state.blocklist.insert(
            "10.0.0.0/8".parse().unwrap(),
            BlockRecord {
                reason: "manual".into(),
                note: Some("scanner".into()),
                added_at_ms: 1,
                expires_at_ms: Some(5),
            },
        );
        let lock = file.lock().unwrap();
        file.write(&lock, &state).unwrap();
        assert_eq!(file.read().unwrap(), state);
        assert!(state.blocklist.values().next().unwrap().is_expired(5));

        std::fs::write(
            file.path(),
            "{ \"version\": 1, \"blocklist\": { \"10.0.0.1/8\": {} } }",
        )
        .unwrap();
        let e = file.read().unwrap_err().to_string();
        assert!(e.contains("state.json") && e.contains("host bits"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
