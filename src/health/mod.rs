//! Health checking: real servers leave and come back on their own.
//!
//! ```text
//!  Config ──> HealthMonitor thread ── Transition ──> Director (control thread)
//!             (checks: io_uring or poll,              HealthStates::apply
//!              scripts as children)                   effective_config(configured, states)
//!                                                       └─> the next snapshot
//! ```
//!
//! [`HealthMonitor`] (`monitor.rs`) runs every check of a configuration concurrently on one
//! thread and sends a [`Transition`] whenever a real server goes, comes back, or gets a new
//! dynamic weight. The director keeps the [`HealthStates`] and, from the configured table and
//! those states, computes what the workers run with [`effective_config`] (`effective.rs`), a
//! pure function. What to check is configuration ([`crate::service::health`]); the rise/fall
//! state machine of one server is [`state`]; the network backends are `checker.rs`,
//! `uring.rs` and `poll.rs`. What is checked and how fast a failure is seen:
//! `docs/health.md`.

pub mod state;

mod checker;
mod effective;
mod monitor;
mod poll;
mod uring;

pub use checker::{BackendChoice, BackendKind};
pub use effective::{effective_config, health_view, HealthStates, HealthView, ServerStatus};
pub use monitor::{HealthCounters, HealthMonitor, MonitorOptions, TransitionCount};

use std::net::IpAddr;
use std::time::SystemTime;

use crate::log::rfc3339;
use crate::service::{ServiceKey, SocketText};

/// A real server went, came back, or got a new dynamic weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The service the real server belongs to.
    pub service: ServiceKey,
    /// The real server as configured (address, port).
    pub server: (IpAddr, u16),
    /// Whether it is up now.
    pub up: bool,
    /// Its dynamic weight (`misc_dynamic`), if a script gave one.
    pub weight: Option<i32>,
    /// Why: the failed attempt's reason, or what passed.
    pub reason: String,
    /// Wall-clock time of the change.
    pub at: SystemTime,
}

impl Transition {
    /// `2026-11-24T15:40:01Z 10.0.0.2:80 is gone (connect: connection refused)`, `... is
    /// back (...)`, or `... weight 3 (...)` for a weight change while up.
    pub fn log_line(&self) -> String {
        let what = match (self.up, self.reason.starts_with("weight")) {
            (false, _) => "is gone",
            (true, true) => "stays up",
            (true, false) => "is back",
        };
        format!(
            "{} {} {what} ({})",
            rfc3339(self.at),
            SocketText(self.server.0, self.server.1),
            self.reason
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::service::Protocol;

    #[test]
    fn log_lines() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_534_801);
        let mut t = Transition {
            service: ServiceKey::Tuple {
                protocol: Protocol::Tcp,
                addr: "10.0.0.1".parse().unwrap(),
                port: 80,
            },
            server: (IpAddr::from([10, 0, 1, 2]), 80),
            up: false,
            weight: None,
            reason: "connect: connection refused".into(),
            at,
        };
        assert_eq!(
            t.log_line(),
            "2026-11-24T15:40:01Z 10.0.1.2:80 is gone (connect: connection refused)"
        );
        t.up = true;
        t.reason = "connect: ok".into();
        assert_eq!(
            t.log_line(),
            "2026-11-24T15:40:01Z 10.0.1.2:80 is back (connect: ok)"
        );
    }
}
