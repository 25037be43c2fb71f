//! IPVS connection synchronisation, version 1 of the protocol as `ip_vs_sync.c` speaks it.
//!
//! | file | what |
//! |---|---|
//! | `wire.rs` | byte views of headers and entries (versions 0 and 1), the `IP_VS_CONN_F_*` flags |
//! | `message.rs` | [`Message::parse`] (a kernel backup's reading) and [`Encoder`] (a kernel master's writing, split at `sync_maxlen`) |

pub mod message;
pub mod wire;

pub use message::{
    Encoder, EntryError, EntryResult, Message, MessageError, MixedFamilies, Skip, SyncConn,
    Version, MAX_CONNS_PER_MESSAGE,
};
