use super::*;

fn real(name: &str, weight: i32, active: u32, healthy: Option<bool>, pkts: u64) -> RealRow {
    RealRow {
        real: name.to_string(),
        forward: "Masq".to_string(),
        weight,
        active,
        inactive: 1,
        persistent: 0,
        overloaded: false,
        healthy,
        in_table: healthy != Some(false),
        totals: Totals {
            conns: pkts / 10,
            in_pkts: pkts,
            out_pkts: pkts,
            in_bytes: pkts * 100,
            out_bytes: pkts * 1000,
        },
    }
}

fn snap(a: u64, b: u64, dropped: u64) -> Snapshot {
    let reals = vec![
        real("10.1.0.1:80", 1, 2, Some(true), a),
        real("10.1.0.2:80", 3, 5, Some(true), b),
    ];
    let sum = |f: fn(&Totals) -> u64| reals.iter().map(|r| f(&r.totals)).sum();
    let web = ServiceRow {
        service: "TCP 10.0.0.1:80".to_string(),
        scheduler: "wlc".to_string(),
        totals: Totals {
            conns: sum(|t| t.conns),
            in_pkts: sum(|t| t.in_pkts),
            out_pkts: sum(|t| t.out_pkts),
            in_bytes: sum(|t| t.in_bytes),
            out_bytes: sum(|t| t.out_bytes),
        },
        reals,
    };
    let dns = ServiceRow {
        service: "UDP 10.0.0.2:53".to_string(),
        scheduler: "rr".to_string(),
        totals: Totals::default(),
        reals: vec![real("10.1.0.9:53", 0, 0, Some(false), 0)],
    };
    Snapshot {
        generation: 4,
        services: vec![web, dns],
        drops: [
            ("no_service".to_string(), dropped),
            ("malformed".to_string(), 0),
        ]
        .into_iter()
        .collect(),
        workers: vec![WorkerRow {
            rx: a + b,
            tx: a + b,
            passed: 0,
            batches: 1,
        }],
    }
}

fn two_seconds() -> View {
    let mut v = View::new("/run/test.sock");
    v.update(snap(100, 1000, 3), None);
    v.update(snap(300, 1200, 13), Some(2.0));
    v
}

#[test]
fn rates_are_differences_per_second() {
    let v = two_seconds();
    let r = v.rate("TCP 10.0.0.1:80", Some("10.1.0.1:80"));
    assert_eq!((r.in_pps, r.out_pps, r.cps), (100.0, 100.0, 10.0));
    assert_eq!(r.out_bps, 100_000.0);
    let s = v.rate("TCP 10.0.0.1:80", None);
    assert_eq!((s.in_pps, s.out_bps), (200.0, 200_000.0));
    // A zeroed counter gives no rate, not a huge one.
    let mut v = two_seconds();
    v.update(snap(0, 0, 0), Some(1.0));
    assert_eq!(v.rate("TCP 10.0.0.1:80", None), Rate::default());
}

#[test]
fn screen_shows_services_reals_health_rates_and_drops() {
    let text = screen_text(&two_seconds(), 160, 20);
    assert!(
        text.contains("fastlb top  /run/test.sock  generation 4  workers 1"),
        "{text}"
    );
    assert!(text.contains("frames rx 200/s"), "{text}");
    assert!(text.contains("TCP 10.0.0.1:80 wlc"), "{text}");
    let line = |needle: &str| {
        text.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle} in\n{text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    // Real 1: weight 1, up, active 2 inactive 1 persist 0, 10 conn/s, 100 pkt/s each way,
    // 10K B/s in, 100K B/s out; a sparkline of one sample (the first reading has no rate).
    assert_eq!(
        line("-> 10.1.0.1:80"),
        "-> 10.1.0.1:80 Masq 1 up 2 1 0 10 100 100 10.0K 100.0K █"
    );
    assert_eq!(
        line("TCP 10.0.0.1:80"),
        "TCP 10.0.0.1:80 wlc 2/2 up 7 2 0 20 200 200 20.0K 200.0K █"
    );
    assert_eq!(
        line("-> 10.1.0.9:53"),
        "-> 10.1.0.9:53 Masq - DOWN 0 1 0 0 0 0 0 0 ▁"
    );
    assert_eq!(line("no_service"), "no_service 5/s 13 total");
    assert!(
        !text.contains("malformed"),
        "zero drops are not listed:\n{text}"
    );
}

#[test]
fn sort_cycles_and_reverses() {
    let mut v = two_seconds();
    let order = |v: &View| -> Vec<String> {
        v.rows()
            .iter()
            .flat_map(|(s, reals)| {
                std::iter::once(s.service.clone()).chain(reals.iter().map(|r| r.real.clone()))
            })
            .collect()
    };
    assert_eq!(v.sort, SortKey::Config);
    assert_eq!(
        order(&v),
        [
            "TCP 10.0.0.1:80",
            "10.1.0.1:80",
            "10.1.0.2:80",
            "UDP 10.0.0.2:53",
            "10.1.0.9:53"
        ]
    );
    v.key(Key::Char('s'));
    assert_eq!(v.sort, SortKey::Active);
    assert_eq!(
        order(&v),
        [
            "TCP 10.0.0.1:80",
            "10.1.0.2:80",
            "10.1.0.1:80",
            "UDP 10.0.0.2:53",
            "10.1.0.9:53"
        ]
    );
    v.key(Key::Char('s'));
    v.key(Key::Char('s'));
    assert_eq!(v.sort, SortKey::Pps);
    // Both reals did 100 pkt/s each way: ties keep the director's order.
    assert_eq!(order(&v)[1], "10.1.0.1:80");
    v.key(Key::Char('r'));
    assert_eq!(
        order(&v),
        [
            "UDP 10.0.0.2:53",
            "10.1.0.9:53",
            "TCP 10.0.0.1:80",
            "10.1.0.1:80",
            "10.1.0.2:80"
        ]
    );
    assert!(screen_text(&v, 160, 20).contains("sort: pkt/s (reversed)"));
    v.key(Key::Char('s'));
    v.key(Key::Char('s'));
    assert_eq!(v.sort, SortKey::Config);
}

#[test]
fn filter_is_typed_after_slash_and_cleared_with_esc() {
    let mut v = two_seconds();
    v.key(Key::Char('/'));
    for c in "1.0.2:8".chars() {
        v.key(Key::Char(c));
    }
    v.key(Key::Char('x'));
    v.key(Key::Backspace);
    assert!(screen_text(&v, 160, 20).contains("filter: 1.0.2:8_"));
    // Not applied until Enter; `q` while typing is a letter, not quit.
    assert_eq!(v.rows().len(), 2);
    assert!(!v.key(Key::Enter));
    let rows = v.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1.len(), 1);
    assert_eq!(rows[0].1[0].real, "10.1.0.2:80");
    // A service that matches shows all its reals.
    v.key(Key::Char('/'));
    for c in "udp".chars() {
        v.key(Key::Char(c));
    }
    v.key(Key::Enter);
    assert_eq!(v.rows()[0].0.service, "UDP 10.0.0.2:53");
    assert!(screen_text(&v, 160, 20).contains("filter: udp "));
    v.key(Key::Esc);
    assert_eq!(v.rows().len(), 2);
    assert!(v.key(Key::Char('q')));
    assert!(v.key(Key::Interrupt));
}

#[test]
fn sparkline_history_is_bounded_and_scaled() {
    assert_eq!(sparkline(&[0.0, 1.0, 2.0, 4.0]), "▁▄▅█");
    assert_eq!(sparkline(&[0.0, 0.0]), "▁▁");
    let mut v = View::new("t");
    v.update(snap(0, 0, 0), None);
    for i in 1..=(HISTORY as u64 + 5) {
        v.update(snap(i * 10, 0, 0), Some(1.0));
    }
    assert_eq!(
        v.sparkline("TCP 10.0.0.1:80", Some("10.1.0.1:80"))
            .chars()
            .count(),
        HISTORY
    );
    assert_eq!(human(999.0), "999");
    assert_eq!(human(12_345.0), "12.3K");
    assert_eq!(human(4_500_000.0), "4.5M");
}

#[test]
fn tiny_window_says_so() {
    assert!(screen_text(&two_seconds(), 19, 3).starts_with("fastlb top: window"));
}
