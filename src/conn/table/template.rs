//! Persistence templates, as `persist` uses them: their key, lookup, refresh and creation.

use super::{
    addr_words, deadline, method_bits, ms, ConnId, ConnTable, Ctl, Fields, Key, Meta, SyncMark,
    TableFull, F_DV6, F_TEMPLATE, F_V6, K_TEMPLATE, K_V6, METHOD_SHIFT,
};
use crate::service::{DestId, ForwardMethod};
use crate::time::Instant;
use std::net::IpAddr;
use std::sync::atomic::Ordering;

/// A persistence template's key (`ip_vs_sched_persist`): `<protocol, client & mask, vaddr,
/// vport>`; protocol 0 and the mark as `vaddr` for firewall-mark services.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TemplateKey {
    pub(crate) protocol: u8,
    pub(crate) client: IpAddr,
    pub(crate) vaddr: IpAddr,
    pub(crate) vport: u16,
}

impl TemplateKey {
    pub(super) fn key(&self) -> Key {
        let kind = K_TEMPLATE | if self.client.is_ipv6() { K_V6 } else { 0 };
        Key::new(
            self.protocol,
            addr_words(self.client),
            0,
            addr_words(self.vaddr),
            self.vport,
            kind,
        )
    }
}

/// A template found by [`ConnTable::lookup_template`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct TemplateHit {
    pub(crate) id: ConnId,
    pub(crate) dest: DestId,
}

impl ConnTable {
    /// The template stored under `key`, if any.
    pub(crate) fn lookup_template(&self, key: &TemplateKey) -> Option<TemplateHit> {
        let k = key.key();
        let mut hit = None;
        self.index.find(self.hash(&k), |payload| {
            let slot = (payload as u32).wrapping_sub(1);
            let Some((ctl, raw)) = self.read(slot) else {
                return false;
            };
            let ok = payload >> 32 == 0 && raw.meta.template() && raw.original_key() == k;
            if ok {
                hit = Some(TemplateHit {
                    id: ConnId {
                        slot,
                        gen: ctl.gen(),
                    },
                    dest: DestId(raw.dest),
                });
            }
            ok
        });
        hit
    }

    /// Restarts a template's timer with its timeout, as each use does in the kernel
    /// (`ip_vs_conn_put`). False if the template is gone.
    pub(crate) fn touch_template(&self, id: ConnId, now: Instant) -> bool {
        let Some(s) = self.slots.get(id.slot as usize) else {
            return false;
        };
        let now_ms = ms(now);
        loop {
            let c = Ctl(s.ctl.load(Ordering::Acquire));
            if c.gen() != id.gen {
                return false;
            }
            let n = Ctl::new(
                c.gen(),
                c.state(),
                deadline(now_ms, s.timeout_s.load(Ordering::Relaxed)),
            );
            if s.ctl
                .compare_exchange(c.0, n.0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return true;
            }
        }
    }

    /// Creates a template on `worker`'s slots, pointing at a real server, with timeout
    /// `timeout_s` seconds; it counts in the server's persistent connections.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn insert_template(
        &self,
        worker: usize,
        now: Instant,
        key: &TemplateKey,
        daddr: IpAddr,
        dport: u16,
        method: ForwardMethod,
        dest: DestId,
        timeout_s: u32,
    ) -> Result<ConnId, TableFull> {
        let _guard = self.enter(worker);
        let now_ms = ms(now);
        let timeout_s = timeout_s.min(crate::conn::state::MAX_TIMEOUT_SECS);
        let meta = Meta(
            u64::from(key.vport) << 16
                | u64::from(dport) << 32
                | u64::from(key.protocol) << 48
                | (F_TEMPLATE
                    | if key.client.is_ipv6() { F_V6 } else { 0 }
                    | if daddr.is_ipv6() { F_DV6 } else { 0 }
                    | method_bits(method) << METHOD_SHIFT)
                    << 56,
        );
        let fields = Fields {
            meta,
            caddr: addr_words(key.client),
            vaddr: addr_words(key.vaddr),
            daddr: addr_words(daddr),
            dest: dest.0,
            template: None,
            timeout_s,
            sync: SyncMark::fresh(now_ms),
        };
        self.create(worker, now_ms, &fields, 0, deadline(now_ms, timeout_s))
    }
}
