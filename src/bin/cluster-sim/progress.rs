//! A progress line on stderr: rewritten in place on a terminal, a line every tenth of the
//! way otherwise (so a log shows it too).

use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

/// Progress of the current experiment.
pub struct Progress {
    enabled: bool,
    terminal: bool,
    started: Instant,
    state: Mutex<State>,
}

struct State {
    label: &'static str,
    total: usize,
    done: usize,
    shown_tenth: usize,
}

impl Progress {
    /// A progress reporter; `enabled` false keeps it silent (tests).
    pub fn new(enabled: bool) -> Progress {
        use std::io::IsTerminal;
        Progress {
            enabled,
            terminal: std::io::stderr().is_terminal(),
            started: Instant::now(),
            state: Mutex::new(State {
                label: "",
                total: 0,
                done: 0,
                shown_tenth: 0,
            }),
        }
    }

    /// Starts an experiment of `total` steps.
    pub fn start(&self, label: &'static str, total: usize) {
        let mut s = self.state.lock().expect("no panic while held");
        *s = State {
            label,
            total,
            done: 0,
            shown_tenth: 0,
        };
        self.show(&s);
    }

    /// One step done.
    pub fn step(&self) {
        let mut s = self.state.lock().expect("no panic while held");
        s.done += 1;
        let tenth = s.done * 10 / s.total.max(1);
        if self.terminal || tenth > s.shown_tenth {
            s.shown_tenth = tenth;
            self.show(&s);
        }
    }

    /// Ends the experiment's line.
    pub fn finish(&self) {
        if self.enabled && self.terminal {
            eprintln!();
        }
    }

    fn show(&self, s: &State) {
        if !self.enabled {
            return;
        }
        let line = format!(
            "cluster-sim: {:<12} {:>5}/{:<5} {:6.1} s",
            s.label,
            s.done,
            s.total,
            self.started.elapsed().as_secs_f64()
        );
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }
}
