//! Defenses: the source-address blocklist and allowlist (kept in the kernel maps and in the
//! state file), and later the per-client limits and automatic bans.
pub mod ban;
pub mod limits;
mod lists;
pub mod state;

use std::path::PathBuf;

pub use crate::cidr::{Cidr, CidrError};
pub use lists::{Applied, BlockItem, BlockView, ImportReport, ListStore, SyncReport, parse_list};

use crate::kernel::KernelError;

#[derive(Debug, thiserror::Error)]
pub enum DefenseError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("cannot read state file {path}: {source}")]
    StateRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is not valid: {message}; fix or move it away (nothing was changed)")]
    StateParse { path: PathBuf, message: String },
    #[error("cannot write state file {path}: {source}")]
    StateWrite {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read list file {path}: {source}")]
    ListRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {source}")]
    ListLine {
        path: PathBuf,
        line: usize,
        source: CidrError,
    },
    #[error("{cidr} is not in the {list}")]
    NotListed { list: &'static str, cidr: Cidr },
}
