//! The director driven through its methods, as each source drives it, checking what every
//! reconcile step pushes. No sockets, no threads, no clock.

use std::path::Path;
use std::time::SystemTime;

use super::*;
use crate::forward::nexthop::MacAddr;
use crate::service::config::ipvsadm::parse_rules;
use crate::service::health::{CheckKind, HealthConfig, ServiceHealth, SorryServer};
use crate::service::pair::{PairConfig, SyncDaemonSettings, VrrpInstance};
use crate::service::{ForwardMethod, Protocol, SyncRole};

/// A director, one worker's feed and counters, and the connection table it shares.
struct Rig {
    /// What the first reconcile step pushed.
    first: Push,
    director: Director,
    feed: WorkerFeed,
    worker: Arc<WorkerStats>,
    conns: Arc<ConnTable>,
}

fn rig_with(config: Config, registry_capacity: usize, nexthops: NextHops) -> Rig {
    let registry = Arc::new(DestRegistry::new(registry_capacity));
    let worker = Arc::new(WorkerStats::new(registry_capacity));
    let conns = Arc::new(ConnTable::new(64, 1, Arc::clone(&registry)));
    let plane = DataPlane {
        registry,
        conns: Arc::clone(&conns),
        workers: vec![Arc::clone(&worker)],
        nexthops: Arc::new(nexthops),
        standby: Arc::new(AtomicBool::new(false)),
    };
    let mut director = Director::new(config, plane).unwrap();
    let feed = director.attach_worker();
    // The appliance's first step, before the loop: where the director stands in its pair.
    let first = director.reconcile();
    assert!(first.pair.is_some(), "the first step reports the pair");
    Rig {
        first,
        director,
        feed,
        worker,
        conns,
    }
}

fn rig(config: Config) -> Rig {
    rig_with(config, 16, NextHops::default())
}

fn rules(text: &str) -> Config {
    parse_rules(text, Path::new("rules")).unwrap()
}

/// UDP 10.0.0.1:53, rr, three masqueraded real servers 10.1.0.1-3.
fn three_servers() -> Config {
    rules(
        "-A -u 10.0.0.1:53 -s rr\n\
         -a -u 10.0.0.1:53 -r 10.1.0.1 -m\n\
         -a -u 10.0.0.1:53 -r 10.1.0.2 -m\n\
         -a -u 10.0.0.1:53 -r 10.1.0.3 -m\n",
    )
}

fn key() -> ServiceKey {
    ServiceKey::Tuple {
        protocol: Protocol::Udp,
        addr: "10.0.0.1".parse().unwrap(),
        port: 53,
    }
}

/// `three_servers` with a TCP check on every real server and a sorry server.
fn checked(start_down: bool) -> Config {
    let mut c = three_servers();
    let mut check = HealthConfig::new(CheckKind::Tcp);
    check.start_down = start_down;
    c.health.services.insert(
        key(),
        ServiceHealth {
            check: Some(check),
            sorry_server: Some(SorryServer {
                addr: "10.9.0.1".parse().unwrap(),
                port: 53,
                method: ForwardMethod::Masquerade,
            }),
            ..ServiceHealth::default()
        },
    );
    c
}

fn transition(last: u8, up: bool) -> Transition {
    Transition {
        service: key(),
        server: (IpAddr::from([10, 1, 0, last]), 53),
        up,
        weight: None,
        reason: "test".into(),
        at: SystemTime::UNIX_EPOCH,
    }
}

/// The real servers of the first service of `table`, by address.
fn reals(table: &ServiceTable) -> Vec<String> {
    table.services[0]
        .dests
        .iter()
        .map(|d| d.server.addr.to_string())
        .collect()
}

#[test]
fn a_change_is_staged_at_once_and_pushed_by_the_next_reconcile() {
    let mut r = rig(Config::default());
    assert_eq!(r.director.table().generation, 1);
    r.director.configure(three_servers()).unwrap();
    // The director shows the change at once (a ctl -L right after -a sees it) ...
    assert_eq!(r.director.config(), &three_servers());
    assert_eq!(r.director.table().generation, 2);
    // ... and nothing has left it yet.
    assert!(r.feed.tables.try_recv().is_err());

    let push = r.director.reconcile();
    let table = push.table.clone().expect("a new snapshot");
    assert_eq!(table.generation, 2);
    assert_eq!(reals(&table), ["10.1.0.1", "10.1.0.2", "10.1.0.3"]);
    let got = r.feed.tables.try_recv().unwrap();
    assert!(Arc::ptr_eq(&got, &table), "workers get the snapshot pushed");
    assert_eq!(push.health_checks.as_ref(), Some(&three_servers()));
    assert_eq!(push.timeouts, None);
    assert!(push.nexthops.is_none() && push.local_addresses.is_none());
    assert!(push.resolve.is_empty());

    // Nothing changed since: the next step pushes nothing.
    assert!(r.director.reconcile().is_empty());
    assert!(r.feed.tables.try_recv().is_err());
}

#[test]
fn several_changes_in_one_turn_push_one_snapshot() {
    let mut r = rig(Config::default());
    r.director.configure(three_servers()).unwrap();
    let mut c = three_servers();
    c.services[0].reals[0].weight = 5;
    r.director.configure(c).unwrap();
    let push = r.director.reconcile();
    assert_eq!(push.table.unwrap().generation, 3);
    assert_eq!(r.feed.tables.try_iter().count(), 1);
}

#[test]
fn a_change_that_cannot_be_built_is_refused_and_nothing_moves() {
    // Room for two real servers only.
    let mut r = rig_with(Config::default(), 2, NextHops::default());
    let e = r.director.configure(three_servers()).unwrap_err();
    assert!(matches!(e, PublishError::TooManyRealServers(_)), "{e}");
    assert_eq!(r.director.config(), &Config::default());
    assert_eq!(r.director.table().generation, 1);
    assert!(r.director.reconcile().is_empty());
    assert!(r.feed.tables.try_recv().is_err());
}

#[test]
fn health_reports_change_what_the_workers_run_not_the_configuration() {
    let mut r = rig(checked(false));
    assert_eq!(
        reals(&r.director.table()),
        ["10.1.0.1", "10.1.0.2", "10.1.0.3"]
    );
    r.director.health_changed(&[transition(2, false)]).unwrap();
    let push = r.director.reconcile();
    assert_eq!(
        reals(push.table.as_ref().unwrap()),
        ["10.1.0.1", "10.1.0.3"]
    );
    // The configured table, what -S saves, still has it; the checks need no change.
    assert_eq!(r.director.config(), &checked(false));
    assert_eq!(push.health_checks, None);

    // Nothing up: the sorry server takes over; one back: it goes.
    r.director
        .health_changed(&[transition(1, false), transition(3, false)])
        .unwrap();
    assert_eq!(
        reals(r.director.reconcile().table.as_ref().unwrap()),
        ["10.9.0.1"]
    );
    r.director.health_changed(&[transition(3, true)]).unwrap();
    assert_eq!(
        reals(r.director.reconcile().table.as_ref().unwrap()),
        ["10.1.0.3"]
    );
    // No news is no change.
    r.director.health_changed(&[]).unwrap();
    assert!(r.director.reconcile().is_empty());
}

#[test]
fn servers_whose_check_starts_them_down_are_not_in_the_first_snapshot() {
    let mut r = rig(checked(true));
    // None is up yet: the sorry server serves.
    assert_eq!(reals(&r.director.table()), ["10.9.0.1"]);
    r.director.health_changed(&[transition(1, true)]).unwrap();
    assert_eq!(
        reals(r.director.reconcile().table.as_ref().unwrap()),
        ["10.1.0.1"]
    );
}

#[test]
fn a_reload_keeps_what_the_checks_said_of_servers_still_checked() {
    let mut r = rig(checked(false));
    r.director.health_changed(&[transition(2, false)]).unwrap();
    r.director.reconcile();

    // Same servers, one weight changed: 10.1.0.2 stays out.
    let mut c = checked(false);
    c.services[0].reals[0].weight = 4;
    r.director.configure(c.clone()).unwrap();
    let push = r.director.reconcile();
    assert_eq!(
        reals(push.table.as_ref().unwrap()),
        ["10.1.0.1", "10.1.0.3"]
    );
    assert_eq!(push.health_checks, Some(c));

    // Checks removed: every server is up, and a later report of the old check is moot.
    r.director.configure(three_servers()).unwrap();
    let push = r.director.reconcile();
    assert_eq!(
        reals(push.table.as_ref().unwrap()),
        ["10.1.0.1", "10.1.0.2", "10.1.0.3"]
    );
    // Checked again: the old report was forgotten, 10.1.0.2 starts up.
    r.director.configure(checked(false)).unwrap();
    assert_eq!(
        reals(r.director.reconcile().table.as_ref().unwrap()),
        ["10.1.0.1", "10.1.0.2", "10.1.0.3"]
    );
}

#[test]
fn timeouts_reach_the_connection_table_at_the_reconcile_step() {
    let mut config = three_servers();
    config.timeouts.udp = 77;
    let mut r = rig(config);
    // Applied when the director is made.
    assert_eq!(r.conns.timeouts().settings().udp, 77);

    let t = TimeoutSettings {
        tcp: 1000,
        tcpfin: 100,
        udp: 60,
    };
    r.director.set_timeouts(t).unwrap();
    assert_eq!(r.director.config().timeouts, t);
    assert_eq!(r.conns.timeouts().settings().udp, 77);
    let push = r.director.reconcile();
    assert_eq!(push.timeouts, Some(t));
    assert_eq!(r.conns.timeouts().settings(), t);
    // The services did not change: the health checks are left alone.
    assert_eq!(push.health_checks, None);

    // A reload that changes them applies them too.
    let mut c = three_servers();
    c.timeouts.tcp = 500;
    r.director.configure(c).unwrap();
    let push = r.director.reconcile();
    assert_eq!(push.timeouts.map(|t| t.tcp), Some(500));
    assert_eq!(r.conns.timeouts().settings().tcp, 500);
}

fn kernel_tables(neigh: &str) -> NextHops {
    let routes = NextHops::parse_routes(
        "default via 192.0.2.1 dev eth0\n\
         192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.10\n\
         10.1.0.0/24 dev eth1 proto kernel scope link src 10.1.0.254\n\
         local 192.0.2.10 dev eth0 table local proto kernel scope host src 192.0.2.10\n\
         local 10.1.0.254 dev eth1 table local proto kernel scope host src 10.1.0.254\n",
        "routes",
    )
    .unwrap();
    let neigh = NextHops::parse_neighbours(neigh, "neigh").unwrap();
    NextHops::with_links(
        &[
            ("eth0".into(), MacAddr([2, 0, 0, 0, 0, 0x10])),
            ("eth1".into(), MacAddr([2, 0, 0, 0, 1, 0xfe])),
        ],
        routes,
        neigh,
    )
}

#[test]
fn next_hops_go_to_the_workers_and_unresolved_real_servers_to_the_kernel() {
    let mut r = rig(three_servers());
    assert!(r.director.local_addresses().is_empty());
    let neigh = "192.0.2.1 dev eth0 lladdr 02:00:00:00:00:01 REACHABLE\n\
                 10.1.0.1 dev eth1 lladdr 02:00:00:00:01:01 REACHABLE\n\
                 10.1.0.3 dev eth1 lladdr 02:00:00:00:01:03 STALE\n";
    r.director.nexthops_read(kernel_tables(neigh));
    let push = r.director.reconcile();
    let sent = push.nexthops.clone().expect("new next hops");
    assert!(Arc::ptr_eq(&r.feed.nexthops.try_recv().unwrap(), &sent));
    let locals: Vec<IpAddr> = vec!["192.0.2.10".parse().unwrap(), "10.1.0.254".parse().unwrap()];
    let mut got = push.local_addresses.clone().expect("own addresses changed");
    got.sort();
    let mut want = locals.clone();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(
        push.resolve,
        [NeighbourRequest {
            hop: "10.1.0.2".parse().unwrap(),
            dev: "eth1".into(),
        }]
    );
    assert!(push.table.is_none());

    // Read again, now resolved: the workers get the new tables, the filter nothing.
    r.director.nexthops_read(kernel_tables(&format!(
        "{neigh}10.1.0.2 dev eth1 lladdr 02:00:00:00:01:02 REACHABLE\n"
    )));
    let push = r.director.reconcile();
    assert!(push.nexthops.is_some());
    assert_eq!(push.local_addresses, None);
    assert!(push.resolve.is_empty());
    assert!(r
        .director
        .nexthops()
        .resolve("10.1.0.2".parse().unwrap())
        .is_ok());
}

#[test]
fn a_missing_neighbour_is_resolved_through_its_route() {
    let mut r = rig_with(three_servers(), 16, kernel_tables(""));
    // Off-link: the gateway is what needs resolving; on-link: the address itself.
    r.director
        .neighbour_missing("198.51.100.7".parse().unwrap());
    r.director.neighbour_missing("10.1.0.9".parse().unwrap());
    let push = r.director.reconcile();
    assert_eq!(
        push.resolve,
        [
            NeighbourRequest {
                hop: "192.0.2.1".parse().unwrap(),
                dev: "eth0".into(),
            },
            NeighbourRequest {
                hop: "10.1.0.9".parse().unwrap(),
                dev: "eth1".into(),
            },
        ]
    );
    assert!(push.nexthops.is_none() && push.table.is_none());

    // No route, no request.
    let mut r = rig(three_servers());
    r.director
        .neighbour_missing("198.51.100.7".parse().unwrap());
    assert!(r.director.reconcile().is_empty());
}

#[test]
fn a_new_real_server_is_resolved_at_once_and_read_back_until_it_is() {
    let neigh = "10.1.0.1 dev eth1 lladdr 02:00:00:00:01:01 REACHABLE\n\
                 10.1.0.2 dev eth1 lladdr 02:00:00:00:01:02 REACHABLE\n\
                 10.1.0.3 dev eth1 lladdr 02:00:00:00:01:03 REACHABLE\n";
    let mut r = rig_with(three_servers(), 16, kernel_tables(neigh));
    r.director.tick(Instant::from_secs(100));
    assert!(!r.director.resolving());
    // -a of a server the kernel has no neighbour for: asked at once, not at the next read.
    let mut c = r.director.config().clone();
    let mut added = c.services[0].reals[0].clone();
    added.addr = "10.1.0.4".parse().unwrap();
    c.services[0].reals.push(added);
    r.director.configure(c).unwrap();
    let push = r.director.reconcile();
    let want = NeighbourRequest {
        hop: "10.1.0.4".parse().unwrap(),
        dev: "eth1".into(),
    };
    assert_eq!(push.resolve, [want]);
    assert!(
        r.director.resolving(),
        "the tables are to be read back quickly"
    );
    // A read that does not have it yet asks nothing again within the window; a worker's
    // miss for it neither.
    r.director
        .tick(Instant::from_secs(100) + Duration::from_millis(20));
    r.director.nexthops_read(kernel_tables(neigh));
    r.director.neighbour_missing("10.1.0.4".parse().unwrap());
    assert!(r.director.reconcile().resolve.is_empty());
    assert!(r.director.resolving());
    // Resolved: nothing more to wait for.
    r.director.nexthops_read(kernel_tables(&format!(
        "{neigh}10.1.0.4 dev eth1 lladdr 02:00:00:00:01:04 REACHABLE\n"
    )));
    assert!(!r.director.resolving());
    assert!(r.director.reconcile().resolve.is_empty());
}

#[test]
fn an_unanswered_resolution_stops_the_quick_reads_after_the_window() {
    let mut r = rig_with(three_servers(), 16, kernel_tables(""));
    r.director.tick(Instant::from_secs(100));
    r.director.neighbour_missing("10.1.0.9".parse().unwrap());
    assert_eq!(r.director.reconcile().resolve.len(), 1);
    assert!(r.director.resolving());
    r.director.tick(Instant::from_secs(100) + RESOLVE_WINDOW);
    assert!(!r.director.resolving());
    // Asked again once the window is over.
    r.director.neighbour_missing("10.1.0.9".parse().unwrap());
    assert_eq!(r.director.reconcile().resolve.len(), 1);
    // The once-a-second read asks for the real servers it still cannot resolve.
    r.director.tick(Instant::from_secs(102));
    r.director.nexthops_read(kernel_tables(""));
    assert_eq!(r.director.reconcile().resolve.len(), 3);
}

#[test]
fn the_clock_drives_the_rate_estimators() {
    let mut r = rig(three_servers());
    let id = r.director.table().services[0].dests[0].id;
    r.director.tick(Instant::from_secs(10));
    r.worker.dest(id).in_pkts.add(800);
    r.director.tick(Instant::from_secs(11));
    assert_eq!(r.director.table_view().services[0].rates.inpps, 0);
    r.director.tick(Instant::from_secs(12));
    // 800 packets in 2 s is 400/s; the first step of the 1/4-weighted average gives 100.
    let view = r.director.table_view();
    assert_eq!(view.services[0].rates.inpps, 100);
    assert_eq!(view.services[0].reals[0].rates.inpps, 100);
    assert!(r.director.reconcile().is_empty());
}

/// `three_servers` on a director following VRRP instance VI_1 (10.0.9.1 and 10.0.9.2) with
/// an `lvs_sync_daemon` tied to it.
fn paired() -> Config {
    let mut c = three_servers();
    c.pair = PairConfig {
        instances: vec![VrrpInstance {
            name: "VI_1".into(),
            interface: "eth0".into(),
            vrid: 51,
            addresses: vec!["10.0.9.1".parse().unwrap(), "10.0.9.2".parse().unwrap()],
            use_vmac: false,
        }],
        followed: Some("VI_1".into()),
        sync_daemon: Some(SyncDaemonSettings {
            interface: "eth1".into(),
            syncid: 51,
            maxlen: None,
            port: None,
            ttl: None,
            group: None,
            instance: Some("VI_1".into()),
        }),
    };
    c
}

fn addrs(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

#[test]
fn a_follower_starts_as_the_standby_and_forwards_once_it_holds_every_address() {
    let standby = Arc::new(AtomicBool::new(false));
    let registry = Arc::new(DestRegistry::new(16));
    let plane = DataPlane {
        registry: Arc::clone(&registry),
        conns: Arc::new(ConnTable::new(64, 1, registry)),
        workers: vec![Arc::new(WorkerStats::new(16))],
        nexthops: Arc::new(NextHops::default()),
        standby: Arc::clone(&standby),
    };
    let mut d = Director::new(paired(), plane).unwrap();
    // Raised before any worker runs, without waiting for a step.
    assert!(standby.load(Ordering::Relaxed));
    d.addresses_held(addrs(&["192.0.2.1", "10.0.9.1"]));
    let first = d.reconcile().pair.expect("the first step reports the pair");
    assert_eq!(first.state, VrrpState::Backup);
    assert_eq!(first.instance.as_deref(), Some("VI_1"));
    assert!(first.standby() && first.sync.backup && !first.sync.master);
    assert!(standby.load(Ordering::Relaxed));

    // keepalived adds the second address: MASTER, the flag drops, the daemons swap.
    d.addresses_held(addrs(&["10.0.9.2", "192.0.2.1", "10.0.9.1"]));
    assert!(
        standby.load(Ordering::Relaxed),
        "nothing leaves before the step"
    );
    let master = d.reconcile().pair.expect("a change");
    assert_eq!(master.state, VrrpState::Master);
    assert!(!master.standby() && master.sync.master && !master.sync.backup);
    assert!(!standby.load(Ordering::Relaxed));
    // The same addresses again: nothing to push.
    d.addresses_held(addrs(&["10.0.9.1", "10.0.9.2"]));
    assert!(d.reconcile().is_empty());

    // One address goes (keepalived leaves MASTER): standby again.
    d.addresses_held(addrs(&["10.0.9.2"]));
    let back = d.reconcile().pair.expect("a change");
    assert!(back.standby() && back.sync.backup);
    assert!(standby.load(Ordering::Relaxed));
}

#[test]
fn a_reload_that_drops_the_instance_makes_a_lone_director_that_forwards() {
    let mut r = rig(paired());
    r.director.addresses_held(addrs(&["10.0.9.1"]));
    assert!(r.director.reconcile().is_empty(), "still BACKUP");
    r.director.configure(three_servers()).unwrap();
    let push = r.director.reconcile();
    let pair = push.pair.expect("the pair changed");
    assert_eq!((pair.state, pair.instance), (VrrpState::Master, None));
    assert_eq!(pair.sync, SyncRoles::default());
}

#[test]
fn a_lone_director_always_forwards() {
    let mut r = rig(three_servers());
    assert_eq!(r.director.pair().state, VrrpState::Master);
    r.director.addresses_held(Vec::new());
    assert!(r.director.reconcile().is_empty());
}

#[test]
fn announcements_follow_drain_and_the_available_servers() {
    let text = "[bgp]\nlocal_as = 65001\nneighbor = \"10.9.9.1\"\nneighbor_as = 65000\n\n\
        [[service]]\nprotocol = \"udp\"\naddress = \"10.0.0.1\"\nport = 53\nscheduler = \"rr\"\n\
        [[service.real]]\naddress = \"10.1.0.1\"\nmethod = \"nat\"\n";
    let config = crate::service::config::parse(text, Path::new("t.toml")).unwrap();
    let mut r = rig(config.clone());
    let vip: IpAddr = "10.0.0.1".parse().unwrap();
    // The first step (the rig's) announces; a step with no change pushes nothing for BIRD.
    let a = r.first.announce.clone().unwrap();
    assert_eq!(a.vips, BTreeSet::from([vip]));
    assert_eq!(a.settings, config.bgp);
    assert!(r.director.reconcile().announce.is_none());
    // Drained: withdrawn, the table untouched; undrained: announced again.
    r.director.drain(true);
    let p = r.director.reconcile();
    assert!(p.announce.unwrap().vips.is_empty());
    assert!(p.table.is_none());
    r.director.drain(false);
    assert_eq!(
        r.director.reconcile().announce.unwrap().vips,
        BTreeSet::from([vip])
    );
    // The last real server quiesced: nothing left to serve the VIP with.
    let mut quiesced = config.clone();
    quiesced.services[0].reals[0].weight = 0;
    r.director.configure(quiesced).unwrap();
    assert!(r.director.reconcile().announce.unwrap().vips.is_empty());
    // No [bgp] any more: BIRD is to stop.
    let mut none = config;
    none.bgp = None;
    r.director.configure(none).unwrap();
    let a = r.director.reconcile().announce.unwrap();
    assert_eq!(a.settings, None);
}

#[test]
fn the_metrics_show_what_the_health_checks_say_of_every_checked_server() {
    let healthy = |text: &str, last: u8| {
        let prefix = format!(
            "fastlb_real_server_healthy{{service=\"UDP 10.0.0.1:53\",real=\"10.1.0.{last}:53\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()).map(str::to_owned))
    };
    let mut r = rig(checked(true));
    let mut metrics = r.director.metrics_source();
    // Started down, heard nothing yet: down, though not in the table the workers run.
    let text = metrics.render();
    assert_eq!(healthy(&text, 1).as_deref(), Some("0"), "{text}");
    r.director.health_changed(&[transition(1, true)]).unwrap();
    let text = metrics.render();
    assert_eq!(healthy(&text, 1).as_deref(), Some("1"), "{text}");
    assert_eq!(healthy(&text, 2).as_deref(), Some("0"), "{text}");
    // A reload that stops checking a server takes it out of the metrics.
    let mut unchecked = checked(true);
    unchecked.health.services.clear();
    r.director.configure(unchecked).unwrap();
    let text = metrics.render();
    assert_eq!(healthy(&text, 1), None, "{text}");
}

/// The sync interface of `paired` exists; no other does.
fn lab_interfaces(name: &str) -> Option<crate::ha::sync::daemon::Interface> {
    (name == "eth1").then_some(crate::ha::sync::daemon::Interface {
        index: 7,
        mtu: 1500,
    })
}

/// `paired` with sync attached, as the appliance runs it, after the first step.
fn paired_with_sync(config: Config) -> Director {
    let Rig { director, .. } = rig(config);
    let mut d = director.with_interfaces(lab_interfaces);
    let (shared, _hooks, _ends) =
        crate::ha::sync::channels(1, &crate::service::SyncSettings::default());
    d.attach_sync(
        shared,
        Arc::new(crate::ha::sync::counters::DaemonCounters::default()),
    );
    d
}

/// Which daemons a plan runs: (master, backup).
fn roles(plan: &SyncPlan) -> (bool, bool) {
    (plan.daemons.master.is_some(), plan.daemons.backup.is_some())
}

#[test]
fn the_sync_daemons_follow_the_pair_as_keepalived_drives_the_kernels() {
    let mut d = paired_with_sync(paired());
    // BACKUP from the start (nothing held yet): the backup daemon only, on lvs_sync_daemon's
    // interface with its id.
    let plan = d.reconcile().sync.expect("the daemons changed");
    assert_eq!(roles(&plan), (false, true));
    let b = plan.daemons.backup.as_ref().unwrap();
    assert_eq!((b.mcast_ifn.as_str(), b.ifindex, b.syncid), ("eth1", 7, 51));
    assert!(plan.refused.is_empty());
    assert_eq!(d.sync_daemons().listing(), plan.daemons.listing());

    // MASTER: the backup stops, the master starts (ipvs_syncd_master).
    d.addresses_held(addrs(&["10.0.9.1", "10.0.9.2"]));
    let push = d.reconcile();
    assert!(!push.pair.unwrap().standby());
    assert_eq!(
        roles(&push.sync.expect("the daemons changed")),
        (true, false)
    );
    // No change of state: nothing to do.
    d.addresses_held(addrs(&["10.0.9.2", "10.0.9.1"]));
    assert!(d.reconcile().sync.is_none());

    // ctl stops the master by hand: it stays stopped until the state changes.
    d.stop_sync_daemon(SyncRole::Master).unwrap();
    assert_eq!(roles(&d.reconcile().sync.unwrap()), (false, false));
    d.addresses_held(addrs(&["10.0.9.1", "10.0.9.2"]));
    assert!(d.reconcile().sync.is_none());

    // Leaving MASTER (FAULT, or keepalived gone): the master stops, the backup starts
    // (ipvs_syncd_backup).
    d.addresses_held(addrs(&["10.0.9.1"]));
    assert_eq!(roles(&d.reconcile().sync.unwrap()), (false, true));
    d.addresses_held(addrs(&["10.0.9.1", "10.0.9.2"]));
    assert_eq!(roles(&d.reconcile().sync.unwrap()), (true, false));

    // A reload without lvs_sync_daemon: the pair stops what it started, and starts nothing.
    let mut plain = paired();
    plain.pair.sync_daemon = None;
    d.configure(plain).unwrap();
    assert_eq!(roles(&d.reconcile().sync.unwrap()), (false, false));
    d.addresses_held(addrs(&["10.0.9.1"]));
    assert!(d.reconcile().sync.is_none());
}

#[test]
fn a_sync_daemon_the_pair_cannot_start_is_reported_once() {
    let mut config = paired();
    config.pair.sync_daemon.as_mut().unwrap().interface = "nosuch0".into();
    let mut d = paired_with_sync(config);
    let plan = d.reconcile().sync.expect("a refusal to report");
    assert_eq!(roles(&plan), (false, false));
    assert_eq!(
        plan.refused,
        [(
            SyncRole::Backup,
            crate::ha::sync::daemon::DaemonError::NoSuchDevice
        )]
    );
    // Not retried on every look, only at the next change.
    d.addresses_held(addrs(&["10.0.9.1"]));
    assert!(d.reconcile().sync.is_none());
    d.addresses_held(addrs(&["10.0.9.1", "10.0.9.2"]));
    let plan = d.reconcile().sync.unwrap();
    assert_eq!(
        plan.refused,
        [(
            SyncRole::Master,
            crate::ha::sync::daemon::DaemonError::NoSuchDevice
        )]
    );
}

#[test]
fn without_an_instance_named_both_daemons_run_whatever_the_state() {
    let mut config = paired();
    config.pair.sync_daemon.as_mut().unwrap().instance = None;
    let mut d = paired_with_sync(config);
    assert_eq!(roles(&d.reconcile().sync.unwrap()), (true, true));
    d.addresses_held(addrs(&["10.0.9.1", "10.0.9.2"]));
    assert!(d.reconcile().sync.is_none());
}
