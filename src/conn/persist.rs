//! Persistence templates, as `ip_vs_sched_persist` builds and uses them.
//!
//! A persistent service (`-p`) remembers, per client network, which real server it chose:
//!
//! ```text
//! port service       <protocol, client & mask, VIP, VPORT>   (VPORT 0 for port 21, ftp)
//! port-0 service     <protocol, client & mask, VIP, 0>
//! fwmark service     <IP (0),   client & mask, MARK, 0>
//! ```
//!
//! Templates live in the connection table in their own key space (a kind bit in the key),
//! so they share its memory, eviction and expiry. A valid template wins over the scheduler
//! and its timer restarts at each use; one whose real server left the configuration is
//! unhashed and a fresh scheduling replaces it. Weight 0 (quiesced) and OVERLOAD do not
//! invalidate a template: `ip_vs_check_template` looks only at `IP_VS_DEST_F_AVAILABLE`,
//! which the kernel clears when the server is removed (fastlb has no
//! `expire_quiescent_template`). A template never expires while it controls connections:
//! its timer is pushed back 60 s instead (see [`ConnTable::expire`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::table::{ConnId, ConnTable, TemplateKey};
use crate::sched::{SchedInput, Scheduler};
use crate::service::{
    DestId, DestRegistry, Persistence, Protocol, RealServer, ServiceEntry, ServiceKey,
    VirtualService, DEFAULT_PERSISTENCE_SECS,
};
use crate::time::Instant;

/// The ftp control port: its templates use VPORT 0 so data connections share them.
const FTP_PORT: u16 = 21;

/// The outcome of a persistent scheduling.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Persisted {
    /// Index of the chosen real server in the service's `dests`.
    pub dest_index: usize,
    /// The template; put it in [`super::NewConn::template`] so it stays alive while the
    /// connection does.
    pub template: ConnId,
}

/// Why a persistent scheduling found no server.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PersistError {
    /// No template, and the scheduler found no available server.
    #[error("no available real server")]
    NoDestination,
    /// The template could not be stored.
    #[error("connection table full")]
    TableFull,
}

/// `addr` with all but the first `prefix` bits cleared (`-M`).
pub fn mask_addr(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

fn persistence(service: &VirtualService, client: IpAddr) -> Persistence {
    service.persistence.unwrap_or(Persistence {
        timeout_secs: DEFAULT_PERSISTENCE_SECS,
        netmask: if client.is_ipv6() { 128 } else { 32 },
    })
}

/// The template key a packet from `input.client` to `input.vaddr:input.vport` uses.
pub(crate) fn template_key(
    service: &VirtualService,
    input: &SchedInput,
    protocol: Protocol,
) -> TemplateKey {
    let client = mask_addr(input.client, persistence(service, input.client).netmask);
    match service.key {
        ServiceKey::Tuple { port, .. } => TemplateKey {
            protocol: protocol.number(),
            client,
            vaddr: input.vaddr,
            vport: if input.vport == port && port != FTP_PORT {
                input.vport
            } else {
                0
            },
        },
        ServiceKey::Fwmark { mark, .. } => TemplateKey {
            protocol: 0,
            client,
            // The kernel puts the mark in the first 32 bits of the address.
            vaddr: match client {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(mark)),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(u128::from(mark) << 96)),
            },
            vport: 0,
        },
    }
}

/// The real server port a new connection to `vport` goes to: the server's port when the
/// packet hit the service's own port and the server has one, else the client's destination
/// port (port-0 and fwmark services, and servers configured without a port), as
/// `ip_vs_sched_persist` and `ip_vs_schedule` choose it.
pub fn conn_dest_port(service: &VirtualService, server: &RealServer, vport: u16) -> u16 {
    let svc_port = match service.key {
        ServiceKey::Tuple { port, .. } => port,
        ServiceKey::Fwmark { .. } => 0,
    };
    if vport == svc_port && server.port != 0 {
        server.port
    } else {
        vport
    }
}

/// Chooses the real server for a new connection of a persistent service: the template's
/// server while the template is valid (its timer restarts), else the scheduler's pick,
/// recorded in a new template on `worker`'s slots. `dest_is_live` says whether a real
/// server is still configured (the snapshot's `dest_is_live`).
#[allow(clippy::too_many_arguments)]
pub fn schedule_persistent(
    table: &ConnTable,
    worker: usize,
    now: Instant,
    service: &ServiceEntry,
    sched: &mut dyn Scheduler,
    registry: &DestRegistry,
    dest_is_live: impl Fn(DestId) -> bool,
    input: &SchedInput,
    protocol: Protocol,
) -> Result<Persisted, PersistError> {
    let key = template_key(&service.config, input, protocol);
    if let Some(t) = table.lookup_template(&key) {
        let index = service.dests.iter().position(|d| d.id == t.dest);
        match index {
            Some(i) if dest_is_live(t.dest) => {
                if table.touch_template(t.id, now) {
                    return Ok(Persisted {
                        dest_index: i,
                        template: t.id,
                    });
                }
            }
            // The server is gone: unhash the template (it lives on while it controls
            // connections) and schedule afresh, as `ip_vs_check_template`.
            _ => {
                table.expire_now(t.id);
            }
        }
    }
    let i = sched
        .schedule(&service.dests, registry, input)
        .ok_or(PersistError::NoDestination)?;
    let d = &service.dests[i];
    let dport = if key.vport != 0 { d.server.port } else { 0 };
    let timeout = persistence(&service.config, input.client).timeout_secs;
    let id = table
        .insert_template(
            worker,
            now,
            &key,
            d.server.addr,
            dport,
            d.server.method,
            d.id,
            timeout,
        )
        .map_err(|_| PersistError::TableFull)?;
    Ok(Persisted {
        dest_index: i,
        template: id,
    })
}
