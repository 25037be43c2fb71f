//! Scrapes the metrics endpoint over HTTP on 127.0.0.1 with a plain TcpStream.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;

use fastlb::control::metrics::{MetricsServer, MetricsSource};
use fastlb::control::Publisher;
use fastlb::service::config::ipvsadm::parse_rules;
use fastlb::service::{ConnCount, DestRegistry};
use fastlb::stats::{DropReason, WorkerStats};

fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

#[test]
fn scrape_over_http() {
    let config = parse_rules(
        "-A -u 10.0.0.1:53 -s rr\n-a -u 10.0.0.1:53 -r 10.1.0.1:53 -m\n-a -u 10.0.0.1:53 -r 10.1.0.2:53 -m -w 2\n",
        Path::new("rules"),
    )
    .unwrap();
    let mut publisher = Publisher::new(config, Arc::new(DestRegistry::new(8))).unwrap();
    let workers = vec![Arc::new(WorkerStats::new(8)), Arc::new(WorkerStats::new(8))];
    let table = publisher.table();
    let (a, b) = (table.services[0].dests[0].id, table.services[0].dests[1].id);
    workers[0].dest(a).conns.add(3);
    workers[1].dest(b).conns.add(4);
    workers[0].dest(a).out_pkts.add(10);
    workers[0].batches.add(2);
    workers[0].count_drop(DropReason::NoDestination);
    workers[1].count_drop(DropReason::NoDestination);
    publisher.registry().get(b).set(ConnCount::Active, 0);
    publisher.registry().get(b).set(ConnCount::Inactive, 4);

    let source = MetricsSource::new(&mut publisher, workers.clone());
    let server = MetricsServer::spawn("127.0.0.1:0".parse().unwrap(), source).unwrap();
    let addr = server.local_addr();

    let (head, body) = get(addr, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let value = |series: &str| -> u64 {
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{body}"))
    };
    let svc = "service=\"UDP 10.0.0.1:53\"";
    assert_eq!(
        value(&format!("fastlb_service_connections_total{{{svc}}}")),
        7
    );
    assert_eq!(
        value(&format!("fastlb_service_out_packets_total{{{svc}}}")),
        10
    );
    assert_eq!(
        value(&format!(
            "fastlb_real_server_connections_total{{{svc},real=\"10.1.0.2:53\"}}"
        )),
        4
    );
    assert_eq!(
        value(&format!(
            "fastlb_real_server_inactive_connections{{{svc},real=\"10.1.0.2:53\"}}"
        )),
        4
    );
    assert_eq!(
        value(&format!(
            "fastlb_real_server_weight{{{svc},real=\"10.1.0.2:53\"}}"
        )),
        2
    );
    assert_eq!(value("fastlb_drops_total{reason=\"no_destination\"}"), 2);
    assert_eq!(value("fastlb_worker_batches_total{worker=\"0\"}"), 2);

    // Counters move between scrapes, and a reload shows up without restarting anything.
    workers[1].dest(a).conns.add(1);
    let mut cfg = publisher.config().clone();
    cfg.services[0].reals.remove(1);
    publisher.replace(cfg).unwrap();
    let (_, body) = get(addr, "/metrics");
    assert!(body.contains(&format!("fastlb_service_connections_total{{{svc}}} 4\n")));
    assert!(!body.contains("10.1.0.2:53"));
    assert!(body.contains("fastlb_config_generation 2\n"));

    let (head, _) = get(addr, "/other");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    server.stop();
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn sync_counters_are_exported_by_event() {
    use fastlb::ha::sync::channels;
    use fastlb::ha::sync::counters::DaemonCounters;
    use fastlb::service::SyncSettings;

    let config = parse_rules("-A -t 10.0.0.1:80 -s rr\n", Path::new("rules")).unwrap();
    let mut publisher = Publisher::new(config, Arc::new(DestRegistry::new(8))).unwrap();
    let (shared, _hooks, _ends) = channels(2, &SyncSettings::default());
    let counters = Arc::new(DaemonCounters::default());
    counters.sent_conns.add(5);
    counters.wrong_syncid.add(2);
    shared.workers()[0].queued.add(3);
    shared.workers()[1].queued.add(4);
    shared.workers()[1].created.add(6);

    let source = MetricsSource::new(&mut publisher, Vec::new()).with_sync(shared, counters);
    let server = MetricsServer::spawn("127.0.0.1:0".parse().unwrap(), source).unwrap();
    let (_, body) = get(server.local_addr(), "/metrics");
    for (event, n) in [
        ("sent_conns", 5),
        ("wrong_syncid", 2),
        ("queued", 7),
        ("created", 6),
        ("no_destination", 0),
    ] {
        let line = format!("fastlb_sync_events_total{{event=\"{event}\"}} {n}\n");
        assert!(body.contains(&line), "no {line:?} in\n{body}");
    }
    assert!(
        body.contains("# TYPE fastlb_sync_events_total counter"),
        "{body}"
    );
    server.stop();
}
