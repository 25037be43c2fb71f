//! Real checks against real servers on 127.0.0.1, through both network backends: a std
//! `TcpListener`, a tiny HTTP responder answering 200 or 503, a closed port, a server that
//! accepts and never answers, and scripts exiting 0, 1 and 5. Also measures how long a
//! failure takes to be seen.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

mod support;

use crossbeam_channel::Receiver;
use fastlb::health::{BackendChoice, BackendKind, HealthMonitor, MonitorOptions, Transition};
use fastlb::service::health::{
    CheckKind, HealthConfig, HttpCheck, ScriptCheck, ServiceHealth, StatusRange,
};
use fastlb::service::{
    Config, ForwardMethod, Protocol, RealServer, SchedFlags, SchedulerKind, ServiceKey,
    VirtualService,
};

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn key() -> ServiceKey {
    ServiceKey::Tuple {
        protocol: Protocol::Tcp,
        addr: "192.0.2.1".parse().unwrap(),
        port: 80,
    }
}

fn fast(kind: CheckKind) -> HealthConfig {
    let mut c = HealthConfig::new(kind);
    c.interval = Duration::from_millis(100);
    c.timeout = Duration::from_millis(300);
    c.retries = 0;
    c.delay_before_retry = Duration::from_millis(50);
    c
}

/// One service whose real servers are `127.0.0.1:port`, each with its own check.
fn config(servers: &[(u16, HealthConfig)]) -> Config {
    let mut h = ServiceHealth::default();
    for (port, check) in servers {
        h.reals.insert((LO, *port), check.clone());
    }
    let mut c = Config {
        services: vec![VirtualService {
            key: key(),
            scheduler: SchedulerKind::Rr,
            flags: SchedFlags::default(),
            mh_table_size: 4093,
            persistence: None,
            reals: servers
                .iter()
                .map(|(port, _)| RealServer {
                    addr: LO,
                    port: *port,
                    weight: 1,
                    method: ForwardMethod::Masquerade,
                    upper_threshold: 0,
                    lower_threshold: 0,
                })
                .collect(),
        }],
        ..Config::default()
    };
    c.health.services.insert(key(), h);
    c
}

fn start(c: &Config, backend: BackendChoice) -> (HealthMonitor, Receiver<Transition>) {
    let (m, rx) =
        HealthMonitor::start(c, MonitorOptions { backend, log: true }).expect("monitor starts");
    match backend {
        BackendChoice::Poll => assert_eq!(m.backend(), BackendKind::Poll),
        BackendChoice::Uring => assert_eq!(m.backend(), BackendKind::Uring),
        BackendChoice::Auto => {}
    }
    (m, rx)
}

/// Transitions of the next `window`, as (port, up, weight, reason).
fn collect(rx: &Receiver<Transition>, window: Duration) -> Vec<(u16, bool, Option<i32>, String)> {
    let end = Instant::now() + window;
    let mut v = Vec::new();
    while let Ok(t) = rx.recv_deadline(end) {
        assert_eq!(t.service, key());
        v.push((t.server.1, t.up, t.weight, t.reason));
    }
    v
}

fn closed_port() -> u16 {
    // Bound and dropped: nothing listens there for the test's lifetime (barring a race
    // with another process picking the same ephemeral port, which is not likely).
    TcpListener::bind((LO, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Answers every connection with `HTTP/1.0 {code}`; never returns.
fn http_responder(code: u16) -> u16 {
    let l = TcpListener::bind((LO, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 1024];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            assert!(got.starts_with(b"GET /health HTTP/1.0\r\n"), "{got:?}");
            let _ = write!(s, "HTTP/1.0 {code} Whatever\r\nContent-Length: 0\r\n\r\n");
        }
    });
    port
}

/// Accepts connections and never answers.
fn silent_server() -> u16 {
    let l = TcpListener::bind((LO, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut keep = Vec::new();
        for s in l.incoming().flatten() {
            keep.push(s);
        }
    });
    port
}

fn http(status: Vec<StatusRange>) -> CheckKind {
    CheckKind::Http(HttpCheck {
        path: "/health".into(),
        status,
        host: None,
    })
}

fn script(command: &str, dynamic: bool) -> CheckKind {
    CheckKind::Script(ScriptCheck {
        command: command.into(),
        dynamic,
    })
}

fn up_and_down(backend: BackendChoice) {
    let listener = TcpListener::bind((LO, 0)).unwrap();
    let tcp_up = listener.local_addr().unwrap().port();
    let tcp_down = closed_port();
    let http_ok = http_responder(200);
    let http_503 = http_responder(503);
    let http_503_accepted = http_responder(503);
    let silent = silent_server();
    let starting_down = |mut c: HealthConfig| {
        c.start_down = true;
        c
    };
    let c = config(&[
        (tcp_up, starting_down(fast(CheckKind::Tcp))),
        (tcp_down, fast(CheckKind::Tcp)),
        (http_ok, starting_down(fast(http(vec![])))),
        (http_503, fast(http(vec![StatusRange::SUCCESS]))),
        (
            http_503_accepted,
            starting_down(fast(http(vec![StatusRange { lo: 500, hi: 503 }]))),
        ),
        (silent, fast(http(vec![]))),
    ]);
    let (m, rx) = start(&c, backend);
    let mut got = collect(&rx, Duration::from_millis(1500));
    got.sort();
    let mut want = vec![
        (tcp_up, true, None, "connect: ok".to_string()),
        (
            tcp_down,
            false,
            None,
            "connect: connection refused".to_string(),
        ),
        (http_ok, true, None, "http: GET /health ok".to_string()),
        (http_503, false, None, "http: status 503".to_string()),
        (
            http_503_accepted,
            true,
            None,
            "http: GET /health ok".to_string(),
        ),
        (silent, false, None, "http: recv: timed out".to_string()),
    ];
    want.sort();
    assert_eq!(got, want, "each server changes exactly once");
    let counts = m.counters().get(&key(), LO, tcp_down);
    assert_eq!((counts.down, counts.up), (1, 0));
    m.stop();
    drop(listener);
}

#[test]
fn checks_over_io_uring() {
    // Where the runtime forbids io_uring, Auto falls back and this test says so.
    match HealthMonitor::start(
        &Config::default(),
        MonitorOptions {
            backend: BackendChoice::Uring,
            log: false,
        },
    ) {
        Ok((m, _)) => {
            m.stop();
            up_and_down(BackendChoice::Uring);
        }
        Err(e) => support::skip(&format!("io_uring unavailable here: {e}")),
    }
}

#[test]
fn checks_over_poll() {
    up_and_down(BackendChoice::Poll);
}

#[test]
fn scripts_up_down_and_dynamic_weight() {
    let c = config(&[
        (1, {
            let mut c = fast(script("exit 0", false));
            c.start_down = true;
            c
        }),
        (2, fast(script("exit 1", false))),
        (3, fast(script("exit 5", true))),
        (4, fast(script("exit 5", false))),
        (5, {
            let mut c = fast(script("sleep 5", false));
            c.timeout = Duration::from_millis(200);
            c
        }),
    ]);
    let (m, rx) = start(&c, BackendChoice::Poll);
    let mut got = collect(&rx, Duration::from_millis(1500));
    got.sort();
    assert_eq!(
        got,
        vec![
            (1, true, None, "script: ok".to_string()),
            (2, false, None, "script: exit status 1".to_string()),
            // misc_dynamic: exit 5 is "up, weight 3", reported once.
            (3, true, Some(3), "weight 3".to_string()),
            (4, false, None, "script: exit status 5".to_string()),
            (5, false, None, "script: timed out".to_string()),
        ]
    );
    m.stop();
}

/// Measures detection: how long from a server's death to its `down` transition, and from
/// its return to `up`, against `HealthConfig::detection_bound`.
fn detection(backend: BackendChoice, retries: u32, fall: u32) -> (Duration, Duration) {
    let listener = TcpListener::bind((LO, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut check = fast(CheckKind::Tcp);
    check.retries = retries;
    check.fall = fall;
    let bound = check.detection_bound();
    let (m, rx) = start(&config(&[(port, check)]), backend);
    assert!(
        collect(&rx, Duration::from_millis(300)).is_empty(),
        "stays up"
    );
    let died = Instant::now();
    drop(listener);
    let t = rx.recv_timeout(bound * 3).expect("seen as gone");
    let gone = died.elapsed();
    assert!(!t.up);
    assert!(
        gone <= bound + Duration::from_millis(100),
        "{gone:?} > {bound:?}"
    );
    // Back on the same port (SO_REUSEADDR is set by std on Unix).
    let back_at = Instant::now();
    let l = TcpListener::bind((LO, port)).unwrap();
    let t = rx
        .recv_timeout(Duration::from_secs(3))
        .expect("seen as back");
    let back = back_at.elapsed();
    assert!(t.up);
    eprintln!(
        "detection {backend:?} retries={retries} fall={fall}: gone after {gone:?} (bound {bound:?}), back after {back:?}"
    );
    m.stop();
    drop(l);
    (gone, back)
}

#[test]
fn detection_times_are_within_the_documented_bound() {
    detection(BackendChoice::Poll, 0, 1);
    detection(BackendChoice::Poll, 2, 2);
    detection(BackendChoice::Auto, 0, 3);
}
