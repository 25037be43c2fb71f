//! Builds snapshots from configurations and publishes them to workers.
//!
//! Building and sending are two steps: [`Publisher::stage`] builds the next snapshot (the
//! step that can fail, so a refused change is refused before anything moves), and
//! [`Publisher::publish`] hands the newest staged snapshot to every subscriber. The director
//! stages as each change arrives and publishes once per reconcile step; [`Publisher::replace`]
//! does both at once.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use thiserror::Error;

use crate::service::table::{DestIds, TooManyRealServers};
use crate::service::{Config, DestRegistry, ServiceTable};

/// A configuration could not be made into a snapshot; the running table is unchanged.
#[derive(Debug, Error)]
pub enum PublishError {
    /// The real-server registry is full.
    #[error(transparent)]
    TooManyRealServers(#[from] TooManyRealServers),
}

/// Owns the running configuration and the channels to the workers.
#[derive(Debug)]
pub struct Publisher {
    config: Config,
    ids: DestIds,
    registry: Arc<DestRegistry>,
    table: Arc<ServiceTable>,
    subscribers: Vec<Sender<Arc<ServiceTable>>>,
    /// Generation of the newest snapshot the subscribers have.
    published: u64,
}

impl Publisher {
    /// A publisher whose first snapshot is built from `config`.
    pub fn new(config: Config, registry: Arc<DestRegistry>) -> Result<Publisher, PublishError> {
        let mut ids = DestIds::new(registry.capacity());
        let table = Arc::new(ServiceTable::build(&config, &mut ids, &registry, 1)?);
        Ok(Publisher {
            config,
            ids,
            registry,
            published: table.generation,
            table,
            subscribers: Vec::new(),
        })
    }

    /// A channel on which a worker receives every later snapshot. (The first one it takes
    /// from [`Publisher::table`] when it starts.)
    pub fn subscribe(&mut self) -> Receiver<Arc<ServiceTable>> {
        let (tx, rx) = crossbeam_channel::unbounded();
        self.subscribers.push(tx);
        rx
    }

    /// The configuration of the current snapshot.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The current snapshot: the newest staged, published or not.
    pub fn table(&self) -> Arc<ServiceTable> {
        Arc::clone(&self.table)
    }

    /// The shared real-server counters.
    pub fn registry(&self) -> &Arc<DestRegistry> {
        &self.registry
    }

    /// Builds the snapshot of `config`, the next generation, and makes it current without
    /// sending it. On error nothing changes. `config` must already be validated.
    pub fn stage(&mut self, config: Config) -> Result<Arc<ServiceTable>, PublishError> {
        self.ids.reclaim(&self.registry);
        let generation = self.table.generation + 1;
        let table = Arc::new(ServiceTable::build(
            &config,
            &mut self.ids,
            &self.registry,
            generation,
        )?);
        self.config = config;
        self.table = Arc::clone(&table);
        Ok(table)
    }

    /// Sends the current snapshot to every subscriber unless they have it already; returns
    /// it when it was sent.
    pub fn publish(&mut self) -> Option<Arc<ServiceTable>> {
        if self.table.generation == self.published {
            return None;
        }
        self.published = self.table.generation;
        let table = Arc::clone(&self.table);
        // A worker that has gone away has nothing left to update.
        self.subscribers
            .retain(|s| s.send(Arc::clone(&table)).is_ok());
        Some(table)
    }

    /// Replaces the whole configuration: [`stage`](Publisher::stage) and
    /// [`publish`](Publisher::publish) in one. On error nothing changes.
    pub fn replace(&mut self, config: Config) -> Result<Arc<ServiceTable>, PublishError> {
        let table = self.stage(config)?;
        self.publish();
        Ok(table)
    }

    /// Returns ids of removed real servers whose connections have all gone; call it
    /// periodically.
    pub fn reclaim(&mut self) {
        self.ids.reclaim(&self.registry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{
        ForwardMethod, Protocol, RealServer, SchedFlags, SchedulerKind, ServiceKey, VirtualService,
    };

    fn config(weight: i32) -> Config {
        Config {
            services: vec![VirtualService {
                key: ServiceKey::Tuple {
                    protocol: Protocol::Udp,
                    addr: "10.0.0.1".parse().unwrap(),
                    port: 53,
                },
                scheduler: SchedulerKind::Rr,
                flags: SchedFlags::default(),
                mh_table_size: 4093,
                persistence: None,
                reals: vec![RealServer {
                    addr: "10.1.0.1".parse().unwrap(),
                    port: 53,
                    weight,
                    method: ForwardMethod::Masquerade,
                    upper_threshold: 0,
                    lower_threshold: 0,
                }],
            }],
            ..Config::default()
        }
    }

    #[test]
    fn subscribers_get_each_new_snapshot_and_ids_stay() {
        let mut p = Publisher::new(config(1), Arc::new(DestRegistry::new(4))).unwrap();
        let rx = p.subscribe();
        let first = p.table();
        p.replace(config(5)).unwrap();
        let got = rx.try_recv().unwrap();
        assert_eq!(got.generation, first.generation + 1);
        assert_eq!(got.services[0].dests[0].server.weight, 5);
        assert_eq!(got.services[0].dests[0].id, first.services[0].dests[0].id);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn staged_snapshots_go_out_once_and_only_the_newest() {
        let mut p = Publisher::new(config(1), Arc::new(DestRegistry::new(4))).unwrap();
        let rx = p.subscribe();
        assert!(
            p.publish().is_none(),
            "the first snapshot is not sent again"
        );
        p.stage(config(2)).unwrap();
        let last = p.stage(config(3)).unwrap();
        assert_eq!(p.table().generation, 3);
        assert!(rx.try_recv().is_err(), "staging sends nothing");
        let sent = p.publish().unwrap();
        assert!(Arc::ptr_eq(&sent, &last));
        let got = rx.try_recv().unwrap();
        assert_eq!(got.services[0].dests[0].server.weight, 3);
        assert!(rx.try_recv().is_err());
        assert!(p.publish().is_none());
    }

    #[test]
    fn a_failed_replace_changes_nothing() {
        let mut p = Publisher::new(Config::default(), Arc::new(DestRegistry::new(0))).unwrap();
        let rx = p.subscribe();
        assert!(p.replace(config(1)).is_err());
        assert!(p.config().services.is_empty());
        assert!(rx.try_recv().is_err());
    }
}
