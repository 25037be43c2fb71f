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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::conn::{Direction, NewConn, TcpFlags};
    use crate::sched::RoundRobin;
    use crate::service::{
        Dest, ForwardMethod, SchedFlags, SchedulerKind, VirtualService, DEFAULT_MH_TABLE_SIZE,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn service(port: u16, netmask: u8, timeout: u32) -> ServiceEntry {
        let reals: Vec<RealServer> = (1..=2)
            .map(|i| RealServer {
                addr: ip(&format!("192.168.1.{i}")),
                port: 8080,
                weight: 1,
                method: ForwardMethod::Masquerade,
                upper_threshold: 0,
                lower_threshold: 0,
            })
            .collect();
        ServiceEntry {
            dests: reals
                .iter()
                .enumerate()
                .map(|(i, r)| Dest {
                    id: DestId(i as u32),
                    server: r.clone(),
                    last_weight: r.weight,
                })
                .collect(),
            config: VirtualService {
                key: ServiceKey::Tuple {
                    protocol: Protocol::Tcp,
                    addr: ip("10.0.0.100"),
                    port,
                },
                scheduler: SchedulerKind::Rr,
                flags: SchedFlags::default(),
                mh_table_size: DEFAULT_MH_TABLE_SIZE,
                persistence: Some(Persistence {
                    timeout_secs: timeout,
                    netmask,
                }),
                reals,
            },
        }
    }

    struct Fixture {
        table: ConnTable,
        reg: Arc<DestRegistry>,
        svc: ServiceEntry,
        rr: RoundRobin,
    }

    impl Fixture {
        fn new(svc: ServiceEntry) -> Fixture {
            let reg = Arc::new(DestRegistry::new(4));
            Fixture {
                table: ConnTable::with_seed(64, 1, reg.clone(), 5),
                reg,
                svc,
                rr: RoundRobin::new(),
            }
        }

        fn pick(&mut self, client: &str, vport: u16, secs: u64) -> Persisted {
            self.pick_live(client, vport, secs, |_| true)
        }

        fn pick_live(
            &mut self,
            client: &str,
            vport: u16,
            secs: u64,
            live: impl Fn(DestId) -> bool,
        ) -> Persisted {
            let now = Instant::from_secs(secs);
            let input = SchedInput {
                client: ip(client),
                client_port: 40000,
                vaddr: ip("10.0.0.100"),
                vport,
                now,
            };
            schedule_persistent(
                &self.table,
                0,
                now,
                &self.svc,
                &mut self.rr,
                &self.reg,
                live,
                &input,
                Protocol::Tcp,
            )
            .unwrap()
        }

        fn persist(&self, d: u32) -> u32 {
            self.reg.get(DestId(d)).persistent()
        }
    }

    #[test]
    fn same_client_same_server_until_the_template_expires() {
        let mut f = Fixture::new(service(80, 32, 300));
        let a = f.pick("1.2.3.4", 80, 0);
        // Round robin alone would move on to the second server.
        let b = f.pick("1.2.3.4", 80, 100);
        assert_eq!((a.dest_index, a.template), (b.dest_index, b.template));
        assert_eq!(f.persist(a.dest_index as u32), 1);
        // Another client gets the next server.
        assert_ne!(f.pick("5.6.7.8", 80, 100).dest_index, a.dest_index);
        // The use at 100 s restarted the timer: alive at 399 s, gone at 400 s.
        assert_eq!(f.table.expire(0, Instant::from_secs(399), 64), 0);
        assert_eq!(f.table.expire(0, Instant::from_secs(400), 64), 2);
        assert_eq!((f.persist(0), f.persist(1)), (0, 0));
        // The scheduler runs again: rr continues after its last pick.
        let c = f.pick("1.2.3.4", 80, 401);
        assert_ne!(c.template, a.template);
        assert_eq!(c.dest_index, a.dest_index);
        let d = f.pick("9.9.9.9", 80, 401);
        assert_ne!(d.dest_index, c.dest_index);
    }

    #[test]
    fn a_template_with_connections_does_not_expire() {
        let mut f = Fixture::new(service(80, 32, 300));
        let p = f.pick("1.2.3.4", 80, 0);
        let d = &f.svc.dests[p.dest_index];
        let conn = f
            .table
            .insert(
                0,
                Instant::ZERO,
                NewConn {
                    protocol: Protocol::Tcp,
                    client: ip("1.2.3.4"),
                    cport: 40000,
                    vaddr: ip("10.0.0.100"),
                    vport: 80,
                    daddr: d.server.addr,
                    dport: conn_dest_port(&f.svc.config, &d.server, 80),
                    method: d.server.method,
                    dest: d.id,
                    flags: Some(TcpFlags::SYN),
                    template: Some(p.template),
                },
            )
            .unwrap();
        assert_eq!(conn.info.dport, 8080);
        // Keep the connection established past the template's 300 s.
        let ack = Some(TcpFlags::ACK);
        f.table
            .on_packet(conn.id, Direction::Original, ack, Instant::ZERO);
        f.table
            .on_packet(conn.id, Direction::Original, ack, Instant::from_secs(290));
        assert_eq!(f.table.expire(0, Instant::from_secs(300), 64), 0);
        assert_eq!(f.table.len(), 2);
        let mut controlled = 0;
        f.table.for_each(Instant::from_secs(300), |e| {
            if e.template {
                controlled = e.controlled;
                // Pushed back by 60 s.
                assert_eq!(e.expires_in_ms, 60_000);
                assert_eq!((e.cport, e.vport, e.dport, e.state), (0, 80, 8080, "NONE"));
            }
        });
        assert_eq!(controlled, 1);
        // Still used while pushed back: same server.
        assert_eq!(f.pick("1.2.3.4", 80, 320).template, p.template);
        // At 1189 s the template's timer (380 s) has run out while the connection lives: it
        // is pushed back to 1249 s. The connection ends at 290 + 900 s; the template at its
        // next expiry.
        assert_eq!(f.table.expire(0, Instant::from_secs(1189), 64), 0);
        assert_eq!(f.table.expire(0, Instant::from_secs(1190), 64), 1);
        assert_eq!(f.table.expire(0, Instant::from_secs(1248), 64), 0);
        assert_eq!(f.table.expire(0, Instant::from_secs(1249), 64), 1);
        assert!(f.table.is_empty());
        assert_eq!(f.persist(p.dest_index as u32), 0);
    }

    #[test]
    fn netmask_groups_neighbours() {
        let mut f = Fixture::new(service(80, 24, 300));
        let a = f.pick("10.1.1.1", 80, 0);
        let b = f.pick("10.1.1.200", 80, 0);
        assert_eq!(a.template, b.template);
        let c = f.pick("10.1.2.1", 80, 0);
        assert_ne!(c.template, a.template);
        assert_ne!(c.dest_index, a.dest_index);
        let mut clients = Vec::new();
        f.table.for_each(Instant::ZERO, |e| clients.push(e.client));
        clients.sort();
        assert_eq!(clients, [ip("10.1.1.0"), ip("10.1.2.0")]);
    }

    #[test]
    fn port_zero_service_keys_on_vport_zero() {
        let mut f = Fixture::new(service(0, 32, 300));
        let a = f.pick("1.2.3.4", 80, 0);
        let b = f.pick("1.2.3.4", 443, 0);
        assert_eq!(a.template, b.template);
        let mut seen = Vec::new();
        f.table
            .for_each(Instant::ZERO, |e| seen.push((e.vport, e.dport)));
        assert_eq!(seen, [(0, 0)]);
        // Connections keep the client's port on a port-0 service.
        assert_eq!(
            conn_dest_port(&f.svc.config, &f.svc.dests[0].server, 443),
            443
        );
        // On a port service, ports differ per template.
        let mut g = Fixture::new(service(80, 32, 300));
        let c = g.pick("1.2.3.4", 80, 0);
        let key443 = template_key(
            &g.svc.config,
            &SchedInput {
                client: ip("1.2.3.4"),
                client_port: 1,
                vaddr: ip("10.0.0.100"),
                vport: 443,
                now: Instant::ZERO,
            },
            Protocol::Tcp,
        );
        assert_eq!(key443.vport, 0);
        assert!(g.table.lookup_template(&key443).is_none());
        assert!(g.table.expire_now(c.template));
    }

    #[test]
    fn template_of_a_removed_server_is_replaced_but_quiesced_is_kept() {
        let mut f = Fixture::new(service(80, 32, 300));
        let a = f.pick("1.2.3.4", 80, 0);
        // Weight 0 and OVERLOAD keep the template.
        f.svc.dests[a.dest_index].server.weight = 0;
        f.reg
            .get(DestId(a.dest_index as u32))
            .overloaded
            .store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(f.pick("1.2.3.4", 80, 1).template, a.template);
        f.reg
            .get(DestId(a.dest_index as u32))
            .overloaded
            .store(false, std::sync::atomic::Ordering::Relaxed);
        f.svc.dests[a.dest_index].server.weight = 1;
        // Removed from the snapshot: a new template on the other server.
        let gone = DestId(a.dest_index as u32);
        let b = f.pick_live("1.2.3.4", 80, 2, |d| d != gone);
        assert_ne!(b.template, a.template);
        assert_ne!(b.dest_index, a.dest_index);
        assert_eq!(f.pick("1.2.3.4", 80, 3).template, b.template);
        // The old template stays until its timer (restarted by the use at 1 s), unhashed.
        assert_eq!(f.table.len(), 2);
        assert_eq!(f.table.expire(0, Instant::from_secs(300), 64), 0);
        assert_eq!(f.table.expire(0, Instant::from_secs(301), 64), 1);
        assert_eq!(f.persist(gone.0), 0);
    }

    #[test]
    fn fwmark_template_key() {
        let mut svc = service(80, 32, 300);
        svc.config.key = ServiceKey::Fwmark {
            mark: 7,
            ipv6: false,
        };
        let input = SchedInput {
            client: ip("1.2.3.4"),
            client_port: 1,
            vaddr: ip("10.0.0.100"),
            vport: 443,
            now: Instant::ZERO,
        };
        let k = template_key(&svc.config, &input, Protocol::Udp);
        assert_eq!((k.protocol, k.vaddr, k.vport), (0, ip("0.0.0.7"), 0));
        assert_eq!(mask_addr(ip("2001:db8::1"), 32), ip("2001:db8::"));
        assert_eq!(mask_addr(ip("1.2.3.4"), 0), ip("0.0.0.0"));
    }
}
