//! The IPVS schedulers, one file each, behind one trait.
//!
//! A scheduler picks the real server for a new connection (one that matched no connection
//! and no persistence template). Each worker owns its own scheduler instances, so cursor
//! state (rr, wrr) needs no lock; each is rebuilt when a new snapshot arrives, as the kernel
//! resets its scheduler on any destination change.
//!
//! Every scheduler skips a server that is unavailable: weight <= 0 (quiesced) or OVERLOAD.

mod rr;

pub use rr::RoundRobin;

use std::net::IpAddr;

use crate::service::{Dest, DestCounters, DestRegistry, SchedulerKind, ServiceEntry};
use crate::time::Instant;

/// What a scheduler may look at of the packet that opens a connection.
#[derive(Copy, Clone, Debug)]
pub struct SchedInput {
    /// Client (source) address.
    pub client: IpAddr,
    /// Client (source) port.
    pub client_port: u16,
    /// Destination address the client used (the VIP).
    pub vaddr: IpAddr,
    /// Destination port the client used.
    pub vport: u16,
    /// The pipeline's clock.
    pub now: Instant,
}

/// A scheduling algorithm. `dests` is the service's list in list order; the answer is an
/// index into it.
pub trait Scheduler: Send {
    /// Picks a real server for a new connection, or `None` when no server is available.
    fn schedule(
        &mut self,
        dests: &[Dest],
        registry: &DestRegistry,
        input: &SchedInput,
    ) -> Option<usize>;
}

/// Builds the scheduler a service is configured with.
pub fn for_service(service: &ServiceEntry) -> Box<dyn Scheduler> {
    match service.config.scheduler {
        SchedulerKind::Rr => Box::new(RoundRobin::new()),
        _ => Box::new(RoundRobin::new()),
    }
}

/// Whether `dest` may take new connections: positive weight and not OVERLOAD.
#[inline]
pub fn available(dest: &Dest, counters: &DestCounters) -> bool {
    dest.server.weight > 0 && !counters.is_overloaded()
}
