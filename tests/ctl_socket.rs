//! `fastlb ctl` end to end over a real Unix socket: a server thread turning a control loop
//! (the ctl socket, then the director's reconcile step) over a real Director, driven by the
//! client as `fastlb ctl` would drive it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use fastlb::control::ctl::{ctl_run, CtlServer};
use fastlb::control::Director;

#[path = "support/ctl_server.rs"]
mod ctl_server;

struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<Director>>,
}

impl Server {
    fn start(name: &str) -> Server {
        let dir = std::env::temp_dir().join(format!("fastlb-ctl-{name}-{}", std::process::id()));
        let path = dir.join("ctl.sock");
        let _ = std::fs::remove_dir_all(&dir);
        let server = CtlServer::bind(&path).unwrap();
        let (stop, thread) = ctl_server::serve(server);
        Server {
            path,
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Director {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(self.path.parent().unwrap());
    }
}

/// Runs `fastlb ctl LINE` with `stdin`; returns (code, stdout, stderr).
fn ctl(socket: &Path, line: &str, stdin: &str) -> (i32, String, String) {
    let args: Vec<String> = line.split_whitespace().map(String::from).collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = ctl_run(socket, &args, stdin.as_bytes(), &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[test]
fn add_list_save_restore_round_trip() {
    let s = Server::start("roundtrip");
    let p = &s.path;
    let mode = std::fs::metadata(p).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    for line in [
        "-A -t 10.0.0.1:80 -s wrr -p 120 -M 255.255.255.0",
        "-a -t 10.0.0.1:80 -r 10.1.0.2:8080 -m -w 3",
        "-a -t 10.0.0.1:80 -r 10.1.0.1:8080 -m -w 1",
        "-A -u 10.0.0.1:53 -s sh -b sh-port",
        "-a -u 10.0.0.1:53 -r 10.1.0.3 -g",
        "-A -f 5 -s rr",
    ] {
        assert_eq!(
            ctl(p, line, ""),
            (0, String::new(), String::new()),
            "{line}"
        );
    }

    let (code, list, _) = ctl(p, "-L -n", "");
    assert_eq!(code, 0);
    assert_eq!(
        list,
        "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.0.0.1:80 wrr persistent 120 mask 255.255.255.0
  -> 10.1.0.1:8080                Masq    1      0          0         
  -> 10.1.0.2:8080                Masq    3      0          0         
UDP  10.0.0.1:53 sh (sh-port)
  -> 10.1.0.3:53                  Route   1      0          0         
FWM  5 rr
"
    );

    let (code, saved, _) = ctl(p, "-S -n", "");
    assert_eq!(code, 0);
    assert_eq!(
        saved,
        "\
-A -t 10.0.0.1:80 -s wrr -p 120 -M 255.255.255.0
-a -t 10.0.0.1:80 -r 10.1.0.1:8080 -m -w 1
-a -t 10.0.0.1:80 -r 10.1.0.2:8080 -m -w 3
-A -u 10.0.0.1:53 -s sh -b sh-port
-a -u 10.0.0.1:53 -r 10.1.0.3:53 -g -w 1
-A -f 5 -s rr
"
    );

    // ctl -S -n | ctl -R on a cleared table gives the same table back.
    assert_eq!(ctl(p, "-C", "").0, 0);
    assert_eq!(ctl(p, "-L -n", "").1.lines().count(), 3);
    assert_eq!(ctl(p, "-R", &saved), (0, String::new(), String::new()));
    assert_eq!(ctl(p, "-S -n", "").1, saved);
    assert_eq!(ctl(p, "-L -n", "").1, list);

    let (code, json, _) = ctl(p, "-L -n --json", "");
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["services"][0]["reals"][1]["weight"], 3);
    assert_eq!(v["services"][2]["fwmark"], 5);

    let director = s.finish();
    assert_eq!(director.config().services.len(), 3);
    assert_eq!(director.table().services[0].dests.len(), 2);
}

#[test]
fn errors_read_like_ipvsadm_and_change_nothing() {
    let s = Server::start("errors");
    let p = &s.path;
    ctl(p, "-A -t 10.0.0.1:80 -s rr", "");
    ctl(p, "-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m", "");
    let before = ctl(p, "-S -n", "").1;
    let cases = [
        ("-A -t 10.0.0.1:80", 255, "Service already exists\n"),
        ("-E -t 10.0.0.2:80", 255, "No such service\n"),
        (
            "-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m",
            255,
            "Destination already exists\n",
        ),
        (
            "-e -t 10.0.0.1:80 -r 10.1.0.9:80 -m",
            255,
            "No such destination\n",
        ),
        (
            "-a -t 10.0.0.2:80 -r 10.1.0.1:80",
            255,
            "Service not defined\n",
        ),
        (
            "-A -t 10.0.0.3:80 -s foo",
            2,
            "Scheduler or persistence engine not found\n",
        ),
        (
            "-A -t 10.0.0.3:80 -w 1",
            2,
            "Illegal 'weight' option with the 'add-service' command\n",
        ),
        ("-L -n -t 10.0.0.9:80", 1, "No such service\n"),
        ("-Q", 2, "-Q: unknown option\n"),
        ("-S --json", 2, "--json: only with -L/-l\n"),
    ];
    for (line, code, msg) in cases {
        assert_eq!(
            ctl(p, line, ""),
            (code, String::new(), msg.to_string()),
            "{line}"
        );
    }
    // A rule file with one bad line applies none of it.
    let (code, _, err) = ctl(
        p,
        "-R",
        "-A -u 10.0.0.5:53\n-a -u 10.0.0.6:53 -r 10.1.0.1\n",
    );
    assert_eq!(code, 1);
    assert!(err.starts_with("-:2: "), "{err}");
    assert_eq!(ctl(p, "-S -n", "").1, before);
}

#[test]
fn a_second_server_on_a_live_socket_is_refused_and_a_stale_one_replaced() {
    let s = Server::start("twice");
    let e = CtlServer::bind(&s.path).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    let path = s.path.clone();
    drop(s.finish());
    // A socket file nobody serves (a crashed fastlb) is taken over.
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
    drop(stale);
    let again = CtlServer::bind(&path).unwrap();
    drop(again);
    assert!(!path.exists());
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
    let (code, _, err) = ctl(&path, "-L -n", "");
    assert_eq!(code, 2);
    assert!(
        err.starts_with("fastlb ctl: cannot talk to fastlb at"),
        "{err}"
    );
}
