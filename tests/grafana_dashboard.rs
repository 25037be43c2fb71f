//! The Grafana dashboard (`tools/grafana/fastlb.json`) against what fastlb exports: every
//! metric name in every panel's query is a series fastlb's metrics endpoint renders, every
//! label a query groups by, matches on or names in its legend is a label of those series.
//! (tests/e2e/prometheus.sh runs the same queries against a real Prometheus scraping the
//! lab.)

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use fastlb::control::metrics::MetricsSource;
use fastlb::control::Publisher;
use fastlb::health::HealthView;
use fastlb::service::config::ipvsadm::parse_rules;
use fastlb::service::DestRegistry;
use fastlb::stats::WorkerStats;

/// Series names and, for each, its label names, as one scrape renders them with every
/// family present (a service, a real server, a health view, a worker).
fn exported() -> BTreeMap<String, BTreeSet<String>> {
    let config = parse_rules(
        "-A -t 10.0.0.1:80 -s rr -p 60\n-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m\n",
        Path::new("rules"),
    )
    .unwrap();
    let key = config.services[0].key;
    let mut publisher = Publisher::new(config, Arc::new(DestRegistry::new(8))).unwrap();
    let mut health = HealthView::new();
    health.insert((key, "10.1.0.1".parse::<IpAddr>().unwrap(), 80), true);
    let text = MetricsSource::new(&mut publisher, vec![Arc::new(WorkerStats::new(8))])
        .with_health(Arc::new(Mutex::new(health)))
        .render();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        // Label values hold blanks (`TCP 10.0.0.1:80`); the value is after the last one.
        let series = line.rsplit_once(' ').unwrap().0;
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let names = labels
            .trim_end_matches('}')
            .split(',')
            .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.to_string()));
        out.entry(name.to_string()).or_default().extend(names);
    }
    out
}

/// Words of `text` made of `[a-z0-9_]` that start with `prefix`.
fn words_after<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let word = &rest[i..];
        let end = word
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(word.len());
        out.push(&word[..end]);
        rest = &word[end..];
    }
    out
}

/// Label names a query uses: in `by (...)`, and matched in `{...}`.
fn labels_used(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in expr.split("by (").skip(1) {
        let inside = part.split(')').next().unwrap();
        out.extend(inside.split(',').map(|l| l.trim().to_string()));
    }
    for part in expr.split('{').skip(1) {
        let inside = part.split('}').next().unwrap();
        out.extend(inside.split(',').filter_map(|m| {
            let end = m.find(['=', '!'])?;
            Some(m[..end].trim().to_string())
        }));
    }
    out
}

#[test]
fn every_dashboard_query_names_exported_metrics_and_labels() {
    let exported = exported();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/grafana/fastlb.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut used = BTreeSet::new();
    let mut queries = 0;
    for panel in dash["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let names = words_after(expr, "fastlb_");
            assert!(!names.is_empty(), "{title}: no fastlb metric in {expr}");
            let mut labels: BTreeSet<&String> = BTreeSet::new();
            for name in &names {
                let l = exported.get(*name).unwrap_or_else(|| {
                    panic!("{title}: {name} is not exported; fastlb exports {exported:?}")
                });
                labels.extend(l);
                used.insert(name.to_string());
            }
            let legend = target["legendFormat"].as_str().unwrap_or("");
            let legend_labels = legend
                .split("{{")
                .skip(1)
                .map(|p| p.split("}}").next().unwrap().trim().to_string());
            for label in labels_used(expr).into_iter().chain(legend_labels) {
                assert!(
                    labels.iter().any(|l| **l == label),
                    "{title}: label {label} is not on {names:?} (they have {labels:?})"
                );
            }
            queries += 1;
        }
    }
    assert!(queries >= 10, "{queries} queries");
    // The dashboard shows every family fastlb exports.
    let missing: Vec<_> = exported.keys().filter(|n| !used.contains(*n)).collect();
    assert!(missing.is_empty(), "not on the dashboard: {missing:?}");
    // The service variable reads an exported series and label.
    let var = &dash["templating"]["list"][1];
    assert_eq!(
        var["definition"],
        "label_values(fastlb_service_connections_total, service)"
    );
}

#[test]
fn the_checks_catch_a_wrong_name() {
    let exported = exported();
    assert!(!exported.contains_key("fastlb_real_server_packets_total"));
    assert_eq!(
        words_after("rate(fastlb_drops_total[5m]) / fastlb_x", "fastlb_"),
        ["fastlb_drops_total", "fastlb_x"]
    );
    assert_eq!(
        labels_used("sum by (service, real) (fastlb_a{service=~\"x\",reason!=\"y\"})"),
        ["service", "real", "service", "reason"]
    );
}
