//! The connection table, the IPVS TCP state machine and persistence templates.
//!
//! - [`state`]: TCP states, the kernel's transition tables, protocol timeouts.
//! - [`ConnTable`]: the shared, lock-free connection table every worker looks packets up in.
//! - [`persist`]: persistence templates (`ip_vs_sched_persist`).
//! - [`defence`]: IPVS's defence strategies against a table that fills (`drop_packet`,
//!   `secure_tcp`).
//!
//! `docs/conn-table.md` describes the design and the eviction policy.

pub mod defence;
mod index;
mod mem;
pub mod persist;
pub mod state;
mod table;

pub use state::{next_state, next_state_secure, StateTable, TcpFlags, TcpState, Timeouts};
pub use table::{
    ConnEntry, ConnId, ConnInfo, ConnTable, Described, Direction, FlowHash, FlowKey, Hit,
    Installed, NewConn, SyncMark, SyncProbe, Synced, TableFull, TableStats,
};
