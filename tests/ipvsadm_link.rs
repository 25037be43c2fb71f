//! `fastlb` started through a link named `ipvsadm` is `fastlb ctl`: the real binary, run as
//! a process through a symlink, against a ctl server in this process (a real Unix socket,
//! a real Director), found through `$FASTLB_CTL_SOCKET` or `--socket` as a script would.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use fastlb::control::ctl::CtlServer;
use fastlb::control::Director;

#[path = "support/ctl_server.rs"]
mod ctl_server;

/// A scratch directory with `ipvsadm -> fastlb` and a ctl server on `ctl.sock`.
struct Rig {
    dir: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<Director>>,
}

impl Rig {
    fn start(name: &str) -> Rig {
        let dir = std::env::temp_dir().join(format!("fastlb-link-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_fastlb"), dir.join("ipvsadm")).unwrap();
        let server = CtlServer::bind(&dir.join("ctl.sock")).unwrap();
        let (stop, thread) = ctl_server::serve(server);
        Rig {
            dir,
            stop,
            thread: Some(thread),
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("ctl.sock")
    }

    /// `ipvsadm LINE` with the socket in the environment; (exit code, stdout, stderr).
    fn ipvsadm(&self, line: &str) -> (i32, String, String) {
        self.ipvsadm_with(line, Some(&self.socket()), "")
    }

    fn ipvsadm_with(&self, line: &str, env: Option<&Path>, stdin: &str) -> (i32, String, String) {
        ipvsadm(&self.dir.join("ipvsadm"), line, env, stdin)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ipvsadm(link: &Path, line: &str, socket: Option<&Path>, stdin: &str) -> (i32, String, String) {
    let mut cmd = Command::new(link);
    cmd.args(line.split_whitespace())
        .env_remove("FASTLB_CTL_SOCKET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(s) = socket {
        cmd.env("FASTLB_CTL_SOCKET", s);
    }
    let mut child = cmd.spawn().expect("running the ipvsadm link");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().expect("exited"),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn a_script_of_ipvsadm_commands_runs_unchanged() {
    let d = Rig::start("script");
    assert_eq!(d.ipvsadm("-A -t 10.0.0.1:80 -s wrr").0, 0);
    assert_eq!(d.ipvsadm("-a -t 10.0.0.1:80 -r 10.1.0.1:80 -g -w 2").0, 0);
    assert_eq!(d.ipvsadm("-a -t 10.0.0.1:80 -r 10.1.0.2:80 -m").0, 0);
    // The seed's health-check script greps `ipvsadm -L -n` for a real server.
    let (code, out, err) = d.ipvsadm("-L -n");
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(
        out,
        "IP Virtual Server version 1.2.1 (size=4096)\n\
         Prot LocalAddress:Port Scheduler Flags\n  \
         -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
         TCP  10.0.0.1:80 wrr\n  \
         -> 10.1.0.1:80                  Route   2      0          0         \n  \
         -> 10.1.0.2:80                  Masq    1      0          0         \n"
    );
    // No arguments: the listing, as ipvsadm.
    assert_eq!(d.ipvsadm("").1, d.ipvsadm("-L").1);
    // ipvsadm's exit codes and messages.
    assert_eq!(
        d.ipvsadm("-A -t 10.0.0.1:80"),
        (255, String::new(), "Service already exists\n".to_string())
    );
    assert_eq!(
        d.ipvsadm("-d -t 10.0.0.1:80 -r 10.1.0.9"),
        (255, String::new(), "No such destination\n".to_string())
    );
    assert_eq!(
        d.ipvsadm("-a -t 10.0.0.1:80 -r 10.1.0.3 -w 70000"),
        (2, String::new(), "illegal weight specified\n".to_string())
    );
    let (code, _, err) = d.ipvsadm("-L -n -t 10.0.0.9:80");
    assert_eq!((code, err.as_str()), (1, "No such service\n"));
    // The seed's delrs/addrs.
    assert_eq!(d.ipvsadm("-d -t 10.0.0.1:80 -r 10.1.0.1:80").0, 0);
    assert!(!d.ipvsadm("-L -n").1.contains("10.1.0.1:80"));
    assert_eq!(d.ipvsadm("-a -t 10.0.0.1:80 -r 10.1.0.1:80 -g -w 2").0, 0);
    // -S | -R through the link: all or nothing over a live table, then after -C.
    let (_, saved, _) = d.ipvsadm("-S -n");
    assert_eq!(
        saved,
        "-A -t 10.0.0.1:80 -s wrr\n\
         -a -t 10.0.0.1:80 -r 10.1.0.1:80 -g -w 2\n\
         -a -t 10.0.0.1:80 -r 10.1.0.2:80 -m -w 1\n"
    );
    let (code, _, _) = d.ipvsadm_with("-R", Some(&d.socket()), &saved);
    assert_eq!(code, 1, "restoring over the live table is refused");
    assert_eq!(d.ipvsadm("-C").0, 0);
    assert_eq!(d.ipvsadm_with("-R", Some(&d.socket()), &saved).0, 0);
    assert_eq!(d.ipvsadm("-S -n").1, saved);
}

#[test]
fn the_socket_comes_from_the_option_the_environment_or_the_default() {
    let d = Rig::start("socket");
    assert_eq!(d.ipvsadm("-A -u 10.0.0.1:53 -s rr").0, 0);
    let link = d.dir.join("ipvsadm");
    let line = format!("-L -n --socket {}", d.socket().display());
    let (code, out, _) = ipvsadm(&link, &line, None, "");
    assert_eq!(code, 0);
    assert!(out.ends_with("UDP  10.0.0.1:53 rr\n"), "{out}");
    let line = format!("--ctl-socket={} -S", d.socket().display());
    assert_eq!(
        ipvsadm(&link, &line, Some(Path::new("/nonexistent")), "").1,
        "-A -u 10.0.0.1:53 -s rr\n",
        "the option wins over the environment"
    );
    // `fastlb ctl` takes the same variable.
    let out = Command::new(env!("CARGO_BIN_EXE_fastlb"))
        .args(["ctl", "-S", "-n"])
        .env("FASTLB_CTL_SOCKET", d.socket())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "-A -u 10.0.0.1:53 -s rr\n"
    );
    // Neither: the default socket, which nobody serves here (or which the test cannot
    // know): a clear message naming it, exit code 2.
    if !Path::new("/run/fastlb/ctl.sock").exists() {
        let (code, _, err) = ipvsadm(&link, "-L -n", None, "");
        assert_eq!(code, 2);
        assert!(
            err.starts_with("ipvsadm: cannot talk to fastlb at /run/fastlb/ctl.sock"),
            "{err}"
        );
    }
}

#[test]
fn version_and_help_answer_without_a_director() {
    let dir = std::env::temp_dir().join(format!("fastlb-link-offline-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("ipvsadm");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_fastlb"), &link).unwrap();
    let nobody = Some(Path::new("/nonexistent/ctl.sock"));
    let (code, version, err) = ipvsadm(&link, "-v", nobody, "");
    assert_eq!((code, err.as_str()), (0, ""));
    assert!(version.starts_with("ipvsadm v1.31 2019/12/24 (compiled with fastlb "));
    let (code, help, _) = ipvsadm(&link, "-h", nobody, "");
    assert_eq!(code, 0);
    assert!(help.starts_with(&version));
    assert!(help.contains("  ipvsadm -L|l [virtual-service] [options]\n"));
    std::fs::remove_dir_all(&dir).unwrap();
}
