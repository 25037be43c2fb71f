//! IPVS connection synchronisation, version 1 of the protocol as `ip_vs_sync.c` speaks it.
//!
//! | file | what |
//! |---|---|
//! | `wire.rs` | byte views of headers and entries (versions 0 and 1), the `IP_VS_CONN_F_*` flags |
//! | `message.rs` | [`Message::parse`] (a kernel backup's reading) and [`Encoder`] (a kernel master's writing, split at `sync_maxlen`) |
//! | `decide.rs` | [`SyncRules::needed`]: `ip_vs_sync_conn_needed`, when a master sends a connection |
//! | `ring.rs` | the bounded lock-free queues between the workers and the sync thread |
//! | `hook.rs` | [`SyncHook`], the workers' side: decide, queue, install |

pub mod backup;
pub mod counters;
pub mod daemon;
pub mod decide;
pub mod hook;
pub mod master;
pub mod message;
pub mod ring;
#[cfg(target_os = "linux")]
pub mod socket;
#[cfg(target_os = "linux")]
pub mod thread;
pub mod wire;

#[cfg(test)]
mod tests;

pub use decide::SyncRules;
pub use hook::{channels, SyncEnds, SyncHook, SyncShared, WorkerSyncStats};
pub use message::{
    Encoder, EntryError, EntryResult, Message, MessageError, MixedFamilies, Skip, SyncConn,
    Version, MAX_CONNS_PER_MESSAGE,
};
