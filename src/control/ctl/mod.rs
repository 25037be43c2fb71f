//! `fastlb ctl`: ipvsadm's language spoken to the running appliance over a Unix socket.
//!
//! ```text
//! fastlb ctl -A -t 10.0.0.1:80 -s rr          client (ctl_main)
//!        |  {"args":["-A","-t",...],"stdin":null}\n
//!        v
//!   /run/fastlb/ctl.sock (0600)                CtlServer::poll, a source of the control loop
//!        |  execute(director, args, stdin)
//!        v
//!   Director: config, configure, views, zero   the one owner of the control plane
//!        |  {"code":0,"stdout":"...","stderr":""}\n
//!        v
//!   client prints stdout and stderr, exits with code
//! ```
//!
//! One request per connection. Commands are parsed by the ipvsadm module's [`parse`] and
//! applied with its [`apply`], [`restore`] and [`save`]; the listings come from
//! [`listing`]. A command that fails changes nothing: the new
//! configuration is built on a copy and handed to [`Director::configure`] only when whole.
//!
//! Exit codes follow ipvsadm: 0 success, 2 a command-line error (ipvsadm's `fail(2, ...)`),
//! 255 a refused table change (ipvsadm returns -1 from libipvs errors), 1 a listing of a
//! missing service or a failed `-R` (whose message names the line).

mod client;
mod server;

pub use client::{
    ctl_main, ctl_run, default_socket, invoked_as_ipvsadm, ipvsadm_main, request, run_as,
    take_socket_option, usage, version_line, SOCKET_ENV,
};
pub use server::{answer, CtlServer};

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::control::listing;
use crate::control::Director;
use crate::service::config::ipvsadm::{apply, parse, restore, save, IpvsCommand, IpvsError};

/// Where the appliance listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/fastlb/ctl.sock";

/// Largest request accepted (a `-R` rule file travels inside it).
pub const MAX_REQUEST_BYTES: u64 = 16 << 20;

/// What the client sends: one JSON object on one line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The ipvsadm arguments, without a program name.
    pub args: Vec<String>,
    /// Standard input, sent for `-R` only.
    pub stdin: Option<String>,
}

/// What the server answers: one JSON object on one line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The exit code the client exits with.
    pub code: i32,
    /// Text for standard output.
    pub stdout: String,
    /// Text for standard error.
    pub stderr: String,
}

impl Response {
    fn ok(stdout: String) -> Response {
        Response {
            code: 0,
            stdout,
            stderr: String::new(),
        }
    }

    fn fail(code: i32, message: impl std::fmt::Display) -> Response {
        Response {
            code,
            stdout: String::new(),
            stderr: format!("{message}\n"),
        }
    }
}

/// Exit code of a refused table change (ipvsadm exits with libipvs's -1).
const EXIT_TABLE: i32 = 255;
/// Exit code of a command-line error.
const EXIT_USAGE: i32 = 2;

fn table_error(e: &IpvsError) -> Response {
    let code = match e {
        IpvsError::Usage(_) => EXIT_USAGE,
        _ => EXIT_TABLE,
    };
    Response::fail(code, e)
}

/// Runs one ctl command against `director`: the whole server side, without sockets.
///
/// `--json` may appear anywhere among the arguments of a `-L`/`-l` command (or alone: no
/// arguments at all lists the table, as ipvsadm does).
pub fn execute(director: &mut Director, args: &[String], stdin: Option<&str>) -> Response {
    let json = args.iter().any(|a| a == "--json");
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--json")
        .collect();
    if let [SYSCTL_VERB, settings @ ..] = &args[..] {
        return sysctl(director, settings);
    }
    if let [verb] = args[..] {
        if verb == crate::control::top::TOP_VERB {
            let snapshot = director.top_snapshot();
            return Response::ok(
                serde_json::to_string(&snapshot).expect("plain data serializes") + "\n",
            );
        }
        if let Some(r) = bgp_verb(director, verb, json) {
            return r;
        }
    }
    let cmd = if args.is_empty() {
        IpvsCommand::List(Default::default())
    } else {
        match parse(&args) {
            Ok(c) => c,
            Err(e) => return table_error(&e),
        }
    };
    if json && !matches!(cmd, IpvsCommand::List(_)) {
        return Response::fail(EXIT_USAGE, "--json: only with -L/-l");
    }
    match cmd {
        IpvsCommand::List(o) => {
            if o.daemon {
                let d = director.sync_daemons();
                Response::ok(if json {
                    let v = serde_json::json!({
                        "master": d.master,
                        "backup": d.backup,
                        "counters": director.sync_counters(),
                    });
                    v.to_string() + "\n"
                } else {
                    d.listing()
                })
            } else if o.connections {
                let conns = director.connections();
                Response::ok(if json {
                    listing::list_connections_json(&conns)
                } else {
                    listing::list_connections(&conns, &o)
                })
            } else if o.timeout {
                let t = &director.config().timeouts;
                Response::ok(if json {
                    listing::list_timeouts_json(t)
                } else {
                    listing::list_timeouts(t)
                })
            } else {
                let view = director.table_view();
                let text = if json {
                    listing::list_services_json(&view, &o)
                } else {
                    listing::list_services(&view, &o)
                };
                match text {
                    Ok(t) => Response::ok(t),
                    Err(e) => Response::fail(1, e),
                }
            }
        }
        IpvsCommand::Save { .. } => Response::ok(save(director.config())),
        IpvsCommand::Restore => {
            let Some(text) = stdin else {
                return Response::fail(EXIT_USAGE, "-R: no rules on standard input");
            };
            let mut config = director.config().clone();
            if let Err(e) = restore(&mut config, text, Path::new("-")) {
                return Response::fail(1, e);
            }
            match director.configure(config) {
                Ok(()) => Response::ok(String::new()),
                Err(e) => Response::fail(EXIT_TABLE, e),
            }
        }
        // The client answers these itself; a bare socket client gets the same text.
        IpvsCommand::Help => Response::ok(usage("fastlb ctl")),
        IpvsCommand::Version => Response::ok(version_line("fastlb ctl")),
        IpvsCommand::StartDaemon { role, config } => {
            match director.start_sync_daemon(role, &config) {
                Ok(()) => Response::ok(String::new()),
                Err(e) => Response::fail(EXIT_TABLE, e),
            }
        }
        IpvsCommand::StopDaemon(role) => match director.stop_sync_daemon(role) {
            Ok(()) => Response::ok(String::new()),
            Err(e) => Response::fail(EXIT_TABLE, e),
        },
        IpvsCommand::Zero(key) => {
            // apply() only checks that the service exists.
            let mut config = director.config().clone();
            if let Err(e) = apply(&mut config, &IpvsCommand::Zero(key)) {
                return table_error(&e);
            }
            director.zero(key.as_ref());
            Response::ok(String::new())
        }
        IpvsCommand::SetTimeouts { .. } => {
            let mut config = director.config().clone();
            if let Err(e) = apply(&mut config, &cmd) {
                return table_error(&e);
            }
            match director.set_timeouts(config.timeouts) {
                Ok(()) => Response::ok(String::new()),
                Err(e) => Response::fail(EXIT_TABLE, e),
            }
        }
        change => {
            let mut config = director.config().clone();
            if let Err(e) = apply(&mut config, &change) {
                return table_error(&e);
            }
            match director.configure(config) {
                Ok(()) => Response::ok(String::new()),
                Err(e) => Response::fail(EXIT_TABLE, e),
            }
        }
    }
}

/// fastlb's own verbs, each alone on the command line (with `--json` at most). `--top` is
/// what `fastlb top` reads: always JSON ([`crate::control::top::Snapshot`]).
pub(crate) const OWN_VERBS: [&str; 4] = ["--drain", "--undrain", "--announced", "--top"];

/// `--sysctl [NAME[=VALUE]]...`: the defence strategies' settings, named as the kernel's
/// `net.ipv4.vs.*` sysctls (the prefix may be left out), read and written as `sysctl`
/// does. Reading `drop_entry`, `drop_packet` or `secure_tcp` gives the mode now (1 and 2
/// switch into each other as the table fills); no name reads them all.
pub(crate) const SYSCTL_VERB: &str = "--sysctl";

/// The sysctls `--sysctl` knows, in the order it lists them.
const SYSCTLS: [&str; 5] = [
    "drop_entry",
    "drop_packet",
    "secure_tcp",
    "amemthresh",
    "am_droprate",
];

fn sysctl(director: &mut Director, settings: &[&str]) -> Response {
    let names: Vec<&str> = if settings.is_empty() {
        SYSCTLS.to_vec()
    } else {
        settings.to_vec()
    };
    let mut out = String::new();
    for s in names {
        let (name, value) = match s.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (s.trim(), None),
        };
        let key = name.strip_prefix("net.ipv4.vs.").unwrap_or(name);
        if !SYSCTLS.contains(&key) {
            return Response::fail(
                EXIT_USAGE,
                format!(
                    "--sysctl: unknown setting '{name}' (known: {})",
                    SYSCTLS.join(", ")
                ),
            );
        }
        if let Some(v) = value {
            let mut config = director.config().clone();
            let d = &mut config.defence;
            let bad = || Response::fail(EXIT_USAGE, format!("--sysctl: {key}: bad value '{v}'"));
            match key {
                "drop_entry" | "drop_packet" | "secure_tcp" => {
                    let n = match v.parse::<u8>() {
                        Ok(n @ 0..=3) => n,
                        _ => return bad(),
                    };
                    match key {
                        "drop_entry" => d.drop_entry = n,
                        "drop_packet" => d.drop_packet = n,
                        _ => d.secure_tcp = n,
                    }
                }
                _ => {
                    let Ok(n) = v.parse::<u32>() else {
                        return bad();
                    };
                    if key == "amemthresh" {
                        d.amemthresh = n;
                    } else {
                        d.am_droprate = n;
                    }
                }
            }
            if let Err(e) = director.configure(config) {
                return Response::fail(EXIT_TABLE, e);
            }
        }
        let (drop_packet, secure_tcp) = director.defence_modes();
        let d = director.config().defence;
        let now = match key {
            "drop_entry" => director.drop_entry_mode().into(),
            "drop_packet" => drop_packet.into(),
            "secure_tcp" => secure_tcp.into(),
            "amemthresh" => d.amemthresh,
            _ => d.am_droprate,
        };
        out += &format!("net.ipv4.vs.{key} = {now}\n");
    }
    Response::ok(out)
}

/// fastlb's own verbs beside ipvsadm's: `--drain`, `--undrain` and `--announced` (what the
/// director announces by BGP, and whether it is drained). `None` for any other argument.
fn bgp_verb(director: &mut Director, verb: &str, json: bool) -> Option<Response> {
    match verb {
        "--drain" => director.drain(true),
        "--undrain" => director.drain(false),
        "--announced" => {}
        _ => return None,
    }
    // What the next reconcile step will announce, so the answer does not wait for it.
    let table = director.table();
    let settings = director.config().bgp.as_ref();
    let vips: Vec<String> = settings
        .map(|s| {
            let health = &director.config().health;
            crate::ha::bgp::announcements(&table, health, s, director.drained())
        })
        .unwrap_or_default()
        .iter()
        .map(|v| v.to_string())
        .collect();
    let drained = director.drained();
    Some(Response::ok(if json {
        serde_json::json!({ "bgp": settings.is_some(), "drained": drained, "announced": vips })
            .to_string()
            + "\n"
    } else {
        let mut t = format!("drained: {}\n", if drained { "yes" } else { "no" });
        if settings.is_none() {
            t.push_str("announced: nothing (no [bgp] in the configuration)\n");
        } else if vips.is_empty() {
            t.push_str("announced: nothing\n");
        } else {
            t += &format!("announced: {}\n", vips.join(" "));
        }
        t
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::conn::ConnTable;
    use crate::control::DataPlane;
    use crate::forward::nexthop::NextHops;
    use crate::service::{Config, DestRegistry};
    use crate::stats::WorkerStats;
    use crate::time::Instant;

    /// A director over an empty table, and its one worker's counters.
    fn state() -> (Director, Arc<WorkerStats>) {
        let registry = Arc::new(DestRegistry::new(16));
        let worker = Arc::new(WorkerStats::new(16));
        let plane = DataPlane {
            conns: Arc::new(ConnTable::new(64, 1, Arc::clone(&registry))),
            registry,
            workers: vec![Arc::clone(&worker)],
            nexthops: Arc::new(NextHops::default()),
            standby: Default::default(),
        };
        (Director::new(Config::default(), plane).unwrap(), worker)
    }

    fn run(s: &mut Director, line: &str) -> Response {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        execute(s, &args, None)
    }

    #[test]
    fn sysctl_reads_and_writes_the_defence_settings() {
        let (mut s, _) = state();
        assert_eq!(
            run(&mut s, "--sysctl").stdout,
            "net.ipv4.vs.drop_entry = 0\nnet.ipv4.vs.drop_packet = 0\nnet.ipv4.vs.secure_tcp = 0\n\
             net.ipv4.vs.amemthresh = 1024\nnet.ipv4.vs.am_droprate = 10\n"
        );
        let r = run(&mut s, "--sysctl net.ipv4.vs.drop_packet=1 amemthresh=1");
        assert_eq!(
            r.stdout,
            "net.ipv4.vs.drop_packet = 1\nnet.ipv4.vs.amemthresh = 1\n"
        );
        assert_eq!(s.config().defence.drop_packet, 1);
        assert_eq!(s.config().defence.amemthresh, 1);
        // The table is empty: every entry free, not below 1; a threshold above its size
        // switches drop_packet to 2 at the next evaluation, as the kernel's sysctl reads.
        s.tick(Instant::from_secs(1));
        s.tick(Instant::from_secs(3));
        assert_eq!(
            run(&mut s, "--sysctl drop_packet").stdout,
            "net.ipv4.vs.drop_packet = 1\n"
        );
        run(&mut s, "--sysctl amemthresh=1000000");
        s.tick(Instant::from_secs(5));
        assert_eq!(
            run(&mut s, "--sysctl drop_packet").stdout,
            "net.ipv4.vs.drop_packet = 2\n"
        );
        // drop_entry switches as drop_packet does.
        assert_eq!(
            run(&mut s, "--sysctl drop_entry=1").stdout,
            "net.ipv4.vs.drop_entry = 1\n"
        );
        s.tick(Instant::from_secs(7));
        assert_eq!(
            run(&mut s, "--sysctl drop_entry").stdout,
            "net.ipv4.vs.drop_entry = 2\n"
        );
        assert_eq!(s.config().defence.drop_entry, 1);
        for bad in ["secure_tcp=4", "drop_packet=x", "nonsense", "drop_entry=4"] {
            let r = run(&mut s, &format!("--sysctl {bad}"));
            assert_eq!(r.code, EXIT_USAGE, "{bad}");
            assert!(!r.stderr.is_empty(), "{bad}");
        }
        assert_eq!(s.config().defence.secure_tcp, 0);
    }

    #[test]
    fn drain_and_undrain_say_what_is_announced() {
        let (mut s, _) = state();
        let r = run(&mut s, "--announced");
        assert_eq!(r.code, 0);
        assert!(r.stdout.contains("no [bgp]"), "{}", r.stdout);
        let text = "[bgp]\nlocal_as = 65001\nneighbor = \"10.9.9.1\"\nneighbor_as = 65000\n\n\
            [[service]]\nprotocol = \"tcp\"\naddress = \"10.0.0.1\"\nport = 80\n\
            [[service.real]]\naddress = \"10.1.0.1\"\n";
        let config = crate::service::config::parse(text, Path::new("t.toml")).unwrap();
        s.configure(config).unwrap();
        assert_eq!(
            run(&mut s, "--announced").stdout,
            "drained: no\nannounced: 10.0.0.1\n"
        );
        assert_eq!(
            run(&mut s, "--drain").stdout,
            "drained: yes\nannounced: nothing\n"
        );
        assert!(s.drained());
        let r = run(&mut s, "--undrain --json");
        assert_eq!(
            r.stdout,
            "{\"announced\":[\"10.0.0.1\"],\"bgp\":true,\"drained\":false}\n"
        );
        // Not a verb to combine with others.
        assert_eq!(run(&mut s, "--drain -L").code, 2);
    }

    #[test]
    fn changes_go_through_the_publisher_and_errors_change_nothing() {
        let (mut s, _) = state();
        assert_eq!(run(&mut s, "-A -t 10.0.0.1:80 -s rr").code, 0);
        assert_eq!(
            run(&mut s, "-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 2").code,
            0
        );
        assert_eq!(s.table().services[0].dests.len(), 1);
        let before = s.config().clone();
        let r = run(&mut s, "-A -t 10.0.0.1:80");
        assert_eq!(
            (r.code, r.stderr.as_str()),
            (255, "Service already exists\n")
        );
        let r = run(&mut s, "-a -t 10.0.0.1:80 -r 10.1.0.1:80 -w 70000");
        assert_eq!(
            (r.code, r.stderr.as_str()),
            (2, "illegal weight specified\n")
        );
        let r = run(&mut s, "-d -t 10.0.0.9:80 -r 10.1.0.1");
        assert_eq!((r.code, r.stderr.as_str()), (255, "Service not defined\n"));
        assert_eq!(s.config(), &before);
        assert_eq!(
            run(&mut s, "-S -n").stdout,
            "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 2\n"
        );
    }

    #[test]
    fn list_variants_and_json_flag() {
        let (mut s, _) = state();
        run(&mut s, "-A -u 10.0.0.1:53 -s rr");
        let r = execute(&mut s, &[], None);
        assert!(r
            .stdout
            .starts_with("IP Virtual Server version 1.2.1 (size=4096)\n"));
        assert!(r.stdout.ends_with("UDP  10.0.0.1:53 rr\n"), "{}", r.stdout);
        let r = run(&mut s, "-L --json -n");
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(v["services"][0]["port"], 53);
        let r = run(&mut s, "-A --json -t 10.0.0.1:80");
        assert_eq!(r.code, 2);
        assert_eq!(
            run(&mut s, "-L -n -t 10.0.0.9:80").stderr,
            "No such service\n"
        );
        run(&mut s, "--set 1000 0 60");
        assert_eq!(
            run(&mut s, "-L --timeout").stdout,
            "Timeout (tcp tcpfin udp): 1000 120 60\n"
        );
        assert_eq!(
            run(&mut s, "-L -c").stdout,
            "IPVS connection entries\npro expire state       source             virtual            destination\n"
        );
    }

    #[test]
    fn zero_clears_counters_of_one_service() {
        let (mut s, worker) = state();
        run(&mut s, "-A -u 10.0.0.1:53 -s rr");
        run(&mut s, "-a -u 10.0.0.1:53 -r 10.1.0.1 -m");
        run(&mut s, "-A -u 10.0.0.2:53 -s rr");
        run(&mut s, "-a -u 10.0.0.2:53 -r 10.1.0.1 -m");
        let t = s.table();
        let (a, b) = (t.services[0].dests[0].id, t.services[1].dests[0].id);
        worker.dest(a).in_pkts.add(7);
        worker.dest(b).in_pkts.add(9);
        assert_eq!(run(&mut s, "-Z -u 10.0.0.1:53").code, 0);
        assert_eq!(worker.dest(a).in_pkts.get(), 0);
        assert_eq!(worker.dest(b).in_pkts.get(), 9);
        assert_eq!(run(&mut s, "-Z -u 10.0.0.3:53").stderr, "No such service\n");
        run(&mut s, "-Z");
        assert_eq!(worker.dest(b).in_pkts.get(), 0);
    }

    #[test]
    fn top_verb_answers_a_snapshot() {
        let (mut s, worker) = state();
        run(&mut s, "-A -t 10.0.0.1:80 -s wlc");
        run(&mut s, "-a -t 10.0.0.1:80 -r 10.1.0.1:8080 -m -w 3");
        let id = s.table().services[0].dests[0].id;
        worker.dest(id).in_pkts.add(5);
        worker.drops[0].add(2);
        let r = run(&mut s, "--top");
        assert_eq!(r.code, 0, "{}", r.stderr);
        let snap: crate::control::top::Snapshot = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(snap.services[0].service, "TCP 10.0.0.1:80");
        assert_eq!(snap.services[0].scheduler, "wlc");
        let real = &snap.services[0].reals[0];
        assert_eq!(
            (
                real.real.as_str(),
                real.weight,
                real.totals.in_pkts,
                real.healthy
            ),
            ("10.1.0.1:8080", 3, 5, None)
        );
        assert_eq!(snap.services[0].totals.in_pkts, 5);
        assert_eq!(snap.drops.values().sum::<u64>(), 2);
        assert_eq!(snap.workers.len(), 1);
        // Alone only, as the other verbs.
        assert_eq!(run(&mut s, "--top -L").code, 2);
    }

    #[test]
    fn restore_is_all_or_nothing() {
        let (mut s, _) = state();
        let r = execute(
            &mut s,
            &["-R".to_string()],
            Some("-A -t 10.0.0.1:80\n-a -t 10.0.0.2:80 -r 10.1.0.1\n"),
        );
        assert_eq!(r.code, 1);
        assert_eq!(
            r.stderr,
            "-:2: service \"TCP 10.0.0.2:80\" real 10.1.0.1:80: Service not defined\n"
        );
        assert!(s.config().services.is_empty());
        assert_eq!(run(&mut s, "-R").code, 2);
    }
}
