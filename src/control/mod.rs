//! The control plane: one owner, many sources, one reconcile step.
//!
//! ```text
//!   sources (sources.rs, ctl/)          Director (director.rs)         sinks
//!   ctl socket, SIGHUP reload,  ──>  configured table, health    ──>  workers (snapshots, next
//!   health reports, kernel           states, snapshots, next          hops, standby flag),
//!   next hops, VRRP addresses,       hops, the pair's state,          connection table, XDP
//!   the clock                        sync daemons, counters           filter, health thread,
//!                                    └── reconcile() -> Push          kernel neighbours, sync
//!                                                                     thread, BIRD
//! ```
//!
//! The [`Director`] owns every piece of state the workers run from; every source changes it
//! through its methods, and its reconcile step pushes the result out. It is sans-IO: the
//! appliance (`appliance.rs`) is the thin shell that polls the sources, turns the loop and
//! applies what needs a system call. Workers never wait for the control thread: they look
//! for a newer snapshot between batches (`try_recv`), keep the newest, and drop the old one.
//!
//! | file | what |
//! |---|---|
//! | `director.rs`, `director/` | the [`Director`]: state, the sources' methods, [`Director::reconcile`]; `sync.rs`: its connection-sync methods; the unit tests that drive it |
//! | `publisher.rs` | snapshots built from configurations, handed to the workers |
//! | `sources.rs` | the [`Source`] trait and the reload, health, next-hop and VRRP-address sources |
//! | `ctl/` | `fastlb ctl`: the socket (a source), the client, ipvsadm commands run on the director |
//! | `listing.rs` | `ipvsadm -L` layouts and their JSON twins |
//! | `metrics.rs` | Prometheus metrics over HTTP |
//! | `top/` | `fastlb top`: the live terminal view, its snapshot (`ctl --top`) and screen |
//! | `appliance.rs` | the shell: start-up, one turn of the loop, the sinks that take a system call, shut-down |

pub mod appliance;
pub mod ctl;
mod director;
pub mod listing;
pub mod metrics;
mod publisher;
pub mod sources;
pub mod top;

pub use director::{
    Announce, DataPlane, Director, NeighbourRequest, PairState, Push, SyncPlan, WorkerFeed,
};
pub use publisher::{PublishError, Publisher};
pub use sources::Source;
