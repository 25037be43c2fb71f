//! The BIRD that announces a director's VIPs: fastlb runs it as a child and reconfigures it
//! with `birdc` whenever what it announces changes.
//!
//! fastlb writes BIRD's whole configuration ([`bird_config`]) into `[bgp] state_dir`, starts
//! `bird -f -c CONF -s CTL -P PID` and, on every change, writes the file again and runs
//! `birdc -s CTL configure`: BIRD then adds or removes only the static routes that changed,
//! and the BGP session stays up. BIRD is fastlb's child on purpose: it is told to end with
//! its parent (`PR_SET_PDEATHSIG`, SIGTERM), so a fastlb that dies, even by SIGKILL, takes
//! its announcements with it (BIRD closes the session with a Cease notification) instead
//! of leaving the router sending traffic to a director that no longer forwards it. A whole
//! machine that goes silent is BFD's to detect.

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::bgp::bird_config;
use crate::log::log;
use crate::service::bgp::BgpSettings;

/// A running BIRD and what it was last told to announce.
pub struct Bird {
    child: Child,
    settings: BgpSettings,
    conf: PathBuf,
    ctl: PathBuf,
    /// What the configuration file says now.
    written: BTreeSet<IpAddr>,
    /// The file changed and BIRD has not yet confirmed it read it.
    pending: bool,
}

impl Bird {
    /// Writes the configuration announcing `vips` and starts BIRD on it.
    pub fn start(settings: &BgpSettings, vips: &BTreeSet<IpAddr>) -> io::Result<Bird> {
        std::fs::create_dir_all(&settings.state_dir)?;
        let conf = settings.state_dir.join("bird.conf");
        let ctl = settings.state_dir.join("bird.ctl");
        let pid = settings.state_dir.join("bird.pid");
        write_atomic(&conf, &bird_config(settings, vips))?;
        let mut cmd = Command::new(&settings.bird);
        cmd.arg("-f")
            .arg("-c")
            .arg(&conf)
            .arg("-s")
            .arg(&ctl)
            .arg("-P")
            .arg(&pid)
            .stdin(Stdio::null());
        // SAFETY: the closure runs in the child between fork and exec and only makes the
        // async-signal-safe prctl system call.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        log(format_args!(
            "bgp: started BIRD (pid {}) for the session to {} (AS {}), announcing {}",
            child.id(),
            settings.neighbor,
            settings.neighbor_as,
            list(vips)
        ));
        Ok(Bird {
            child,
            settings: settings.clone(),
            conf,
            ctl,
            written: vips.clone(),
            pending: false,
        })
    }

    /// What BIRD is configured to announce.
    pub fn announced(&self) -> &BTreeSet<IpAddr> {
        &self.written
    }

    /// Announces `vips` from now on under `settings`: rewrites the configuration and asks
    /// BIRD to read it. A failure is logged and retried by [`Bird::retry`].
    pub fn update(&mut self, settings: &BgpSettings, vips: &BTreeSet<IpAddr>) {
        if *settings == self.settings && *vips == self.written && !self.pending {
            return;
        }
        if let Err(e) = write_atomic(&self.conf, &bird_config(settings, vips)) {
            log(format_args!("bgp: writing {}: {e}", self.conf.display()));
            return;
        }
        log(format_args!("bgp: announcing {}", list(vips)));
        self.settings = settings.clone();
        self.written = vips.clone();
        self.pending = true;
        self.retry();
    }

    /// Asks BIRD again to read a configuration it has not yet confirmed (it may still be
    /// starting). Call every control-loop turn; does nothing when nothing is pending.
    pub fn retry(&mut self) {
        if !self.pending {
            return;
        }
        match self.configure() {
            Ok(()) => self.pending = false,
            Err(e) => log(format_args!("bgp: birdc configure: {e} (will retry)")),
        }
    }

    fn configure(&self) -> io::Result<()> {
        let out = Command::new(&self.settings.birdc)
            .arg("-s")
            .arg(&self.ctl)
            .arg("configure")
            .stdin(Stdio::null())
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status.success()
            && (text.contains("Reconfigured")
                || text.contains("Reconfiguration in progress")
                || text.contains("Nothing to do"))
        {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "{}{}",
                text.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    /// Withdraws every VIP, keeps serving for `[bgp] shutdown_grace_ms` while the router
    /// moves the flows away, then stops BIRD (SIGTERM: it closes the session cleanly).
    pub fn stop(mut self) {
        let settings = self.settings.clone();
        self.update(&settings, &BTreeSet::new());
        let grace = Duration::from_millis(u64::from(settings.shutdown_grace_ms));
        log(format_args!(
            "bgp: withdrawn; serving {} ms more before BIRD stops",
            grace.as_millis()
        ));
        std::thread::sleep(grace);
        self.terminate();
    }

    fn terminate(&mut self) {
        // SAFETY: kill(2) on the pid of our own child, which we have not yet reaped.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

fn list(vips: &BTreeSet<IpAddr>) -> String {
    if vips.is_empty() {
        return "nothing".into();
    }
    vips.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Replaces `path` with `text` in one rename, so BIRD never reads half a file.
fn write_atomic(path: &std::path::Path, text: &str) -> io::Result<()> {
    let tmp = path.with_extension("conf.new");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}
