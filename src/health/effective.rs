//! What the workers run, given what is configured and what the checks say: a pure function
//! of the two, recomputed by the director whenever either changes.

use std::collections::HashMap;
use std::net::IpAddr;

use super::Transition;
use crate::service::{Config, RealServer, ServiceKey};

/// Health of one real server as the control thread last heard it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ServerStatus {
    /// Up or down.
    pub up: bool,
    /// Dynamic weight, if a script gave one.
    pub weight: Option<i32>,
}

/// What the control thread knows of every checked real server, built from transitions.
/// A server it has heard nothing of is up, unless its check starts it down.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthStates {
    servers: HashMap<(ServiceKey, IpAddr, u16), ServerStatus>,
}

impl HealthStates {
    /// No news yet.
    pub fn new() -> HealthStates {
        HealthStates::default()
    }

    /// Records a transition.
    pub fn apply(&mut self, t: &Transition) {
        let entry = self
            .servers
            .entry((t.service, t.server.0, t.server.1))
            .or_insert(ServerStatus {
                up: t.up,
                weight: None,
            });
        entry.up = t.up;
        if t.weight.is_some() {
            entry.weight = t.weight;
        }
    }

    /// The last status heard of a real server.
    pub fn status(&self, service: &ServiceKey, addr: IpAddr, port: u16) -> Option<ServerStatus> {
        self.servers.get(&(*service, addr, port)).copied()
    }

    /// Forgets servers `configured` no longer checks (after a reload).
    pub fn retain_configured(&mut self, configured: &Config) {
        self.servers.retain(|(key, addr, port), _| {
            configured.health.check_for(key, *addr, *port).is_some()
                && configured.services.iter().any(|s| {
                    s.key == *key && s.reals.iter().any(|r| r.addr == *addr && r.port == *port)
                })
        });
    }
}

/// Up (`true`) or down for every real server a health check watches, as the metrics
/// export it (`fastlb_real_server_healthy`); unchecked servers are absent.
pub type HealthView = HashMap<(ServiceKey, IpAddr, u16), bool>;

/// The [`HealthView`] of `configured` given `states`: a server not heard of yet is up
/// unless its check starts it down, as in [`effective_config`].
pub fn health_view(configured: &Config, states: &HealthStates) -> HealthView {
    let mut view = HealthView::new();
    for svc in &configured.services {
        for r in &svc.reals {
            let Some(check) = configured.health.check_for(&svc.key, r.addr, r.port) else {
                continue;
            };
            let up = states
                .status(&svc.key, r.addr, r.port)
                .map_or(!check.start_down, |st| st.up);
            view.insert((svc.key, r.addr, r.port), up);
        }
    }
    view
}

/// The configuration the workers should run, given the configured one and what health
/// checks say:
///
/// - a down real server is removed, or kept with weight 0 with `inhibit_on_failure` (its
///   connections go on, no new ones come);
/// - an up server with a `misc_dynamic` weight runs with that weight;
/// - a service with a sorry server and no real server up gets the sorry server with weight
///   1; quiesced (inhibited) servers stay beside it at weight 0. When a real server comes
///   back the sorry server goes.
///
/// Unchecked servers are always up. The result keeps `configured.health`.
pub fn effective_config(configured: &Config, states: &HealthStates) -> Config {
    let mut out = configured.clone();
    for svc in &mut out.services {
        let key = svc.key;
        let mut any_up = false;
        svc.reals.retain_mut(|r| {
            let Some(check) = configured.health.check_for(&key, r.addr, r.port) else {
                any_up = true;
                return true;
            };
            let st = states.status(&key, r.addr, r.port).unwrap_or(ServerStatus {
                up: !check.start_down,
                weight: None,
            });
            if st.up {
                any_up = true;
                if let Some(w) = st.weight {
                    r.weight = w;
                }
                true
            } else if check.inhibit_on_failure {
                r.weight = 0;
                true
            } else {
                false
            }
        });
        if any_up {
            continue;
        }
        if let Some(sorry) = configured.health.sorry_server(&key) {
            let server = RealServer {
                addr: sorry.addr,
                port: sorry.port,
                weight: 1,
                method: sorry.method,
                upper_threshold: 0,
                lower_threshold: 0,
            };
            match svc
                .reals
                .iter_mut()
                .find(|r| r.addr == sorry.addr && r.port == sorry.port)
            {
                Some(r) => *r = server,
                None => svc.reals.push(server),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::service::health::{CheckKind, HealthConfig, ServiceHealth, SorryServer};
    use crate::service::{ForwardMethod, Protocol, SchedFlags, SchedulerKind, VirtualService};

    fn key() -> ServiceKey {
        ServiceKey::Tuple {
            protocol: Protocol::Tcp,
            addr: "10.0.0.1".parse().unwrap(),
            port: 80,
        }
    }

    fn real(last: u8, weight: i32) -> RealServer {
        RealServer {
            addr: IpAddr::from([10, 0, 1, last]),
            port: 80,
            weight,
            method: ForwardMethod::DirectRouting,
            upper_threshold: 0,
            lower_threshold: 0,
        }
    }

    fn configured(inhibit_b: bool) -> Config {
        let mut c = Config {
            services: vec![VirtualService {
                key: key(),
                scheduler: SchedulerKind::Wrr,
                flags: SchedFlags::default(),
                mh_table_size: 4093,
                persistence: None,
                reals: vec![real(1, 3), real(2, 2), real(3, 1)],
            }],
            ..Config::default()
        };
        let mut s = ServiceHealth {
            check: Some(HealthConfig::new(CheckKind::Tcp)),
            sorry_server: Some(SorryServer {
                addr: "10.0.9.9".parse().unwrap(),
                port: 8080,
                method: ForwardMethod::Masquerade,
            }),
            ..ServiceHealth::default()
        };
        let mut b = HealthConfig::new(CheckKind::Tcp);
        b.inhibit_on_failure = inhibit_b;
        s.reals.insert((IpAddr::from([10, 0, 1, 2]), 80), b);
        c.health.services.insert(key(), s);
        c
    }

    fn tr(last: u8, up: bool, weight: Option<i32>) -> Transition {
        Transition {
            service: key(),
            server: (IpAddr::from([10, 0, 1, last]), 80),
            up,
            weight,
            reason: "test".into(),
            at: SystemTime::UNIX_EPOCH,
        }
    }

    fn weights(c: &Config) -> Vec<(u8, i32, ForwardMethod)> {
        c.services[0]
            .reals
            .iter()
            .map(|r| match r.addr {
                IpAddr::V4(a) => (a.octets()[3], r.weight, r.method),
                IpAddr::V6(_) => unreachable!(),
            })
            .collect()
    }

    const DR: ForwardMethod = ForwardMethod::DirectRouting;

    #[test]
    fn no_news_means_the_configured_table() {
        let c = configured(false);
        assert_eq!(effective_config(&c, &HealthStates::new()), c);
    }

    #[test]
    fn down_servers_go_or_are_quiesced_and_weights_apply() {
        let c = configured(true);
        let mut st = HealthStates::new();
        st.apply(&tr(1, false, None));
        st.apply(&tr(2, false, None));
        st.apply(&tr(3, true, Some(7)));
        let e = effective_config(&c, &st);
        // 1 removed, 2 quiesced (inhibit_on_failure), 3 runs with its script's weight.
        assert_eq!(weights(&e), vec![(2, 0, DR), (3, 7, DR)]);
        // The rest of the configuration is untouched.
        assert_eq!(e.services[0].scheduler, SchedulerKind::Wrr);
        assert_eq!(e.health, c.health);
        // Coming back restores the configured weight.
        st.apply(&tr(2, true, None));
        let e = effective_config(&c, &st);
        assert_eq!(weights(&e), vec![(2, 2, DR), (3, 7, DR)]);
    }

    #[test]
    fn sorry_server_only_while_nothing_is_up() {
        let c = configured(true);
        let mut st = HealthStates::new();
        for i in 1..=3 {
            st.apply(&tr(i, false, None));
        }
        let e = effective_config(&c, &st);
        // The quiesced server stays (its connections go on) beside the sorry server.
        assert_eq!(
            weights(&e),
            vec![(2, 0, DR), (9, 1, ForwardMethod::Masquerade)]
        );
        assert_eq!(e.services[0].reals[1].port, 8080);
        st.apply(&tr(3, true, None));
        assert_eq!(
            weights(&effective_config(&c, &st)),
            vec![(2, 0, DR), (3, 1, DR)]
        );
    }

    #[test]
    fn unchecked_servers_are_always_up_and_start_down_is_honoured() {
        let mut c = configured(false);
        c.health.services.get_mut(&key()).unwrap().check = None;
        let mut st = HealthStates::new();
        st.apply(&tr(2, false, None));
        // 1 and 3 have no check: a stray transition for them changes nothing either.
        st.apply(&tr(1, false, None));
        assert_eq!(
            weights(&effective_config(&c, &st)),
            vec![(1, 3, DR), (3, 1, DR)]
        );
        let mut c = configured(false);
        let s = c.health.services.get_mut(&key()).unwrap();
        s.check.as_mut().unwrap().start_down = true;
        let e = effective_config(&c, &HealthStates::new());
        assert_eq!(weights(&e), vec![(2, 2, DR)]);
    }

    #[test]
    fn sorry_server_replaces_a_quiesced_entry_with_its_address() {
        let mut c = configured(true);
        c.health.services.get_mut(&key()).unwrap().sorry_server = Some(SorryServer {
            addr: IpAddr::from([10, 0, 1, 2]),
            port: 80,
            method: DR,
        });
        let mut st = HealthStates::new();
        for i in 1..=3 {
            st.apply(&tr(i, false, None));
        }
        assert_eq!(weights(&effective_config(&c, &st)), vec![(2, 1, DR)]);
    }

    #[test]
    fn states_forget_unconfigured_servers() {
        let c = configured(false);
        let mut st = HealthStates::new();
        st.apply(&tr(1, false, None));
        st.apply(&tr(8, false, None));
        st.retain_configured(&c);
        assert!(st.status(&key(), IpAddr::from([10, 0, 1, 1]), 80).is_some());
        assert!(st.status(&key(), IpAddr::from([10, 0, 1, 8]), 80).is_none());
    }
}
