//! `fastlb top`: a live view of the running director in the terminal, over the ctl socket.
//!
//! ```text
//! fastlb top ── {"args":["--top"]} ──> ctl socket ──> Director::top_snapshot()
//!     ^                                                   (snapshot.rs: counters, health,
//!     └───────── Snapshot as JSON, every second <──────     drops, workers)
//!  view.rs: rates = differences of two snapshots, history, sort, filter, render to a Buffer
//!  term.rs: raw mode, alternate screen, keys, restoring the terminal on every way out
//! ```
//!
//! Keys: `s` cycles the sort (config order, active connections, connections/s, packets/s,
//! bytes/s; largest first), `r` reverses it, `/` types a filter (Enter applies, Esc clears),
//! Esc clears the filter, `q` or Ctrl-C quits.

mod snapshot;
mod term;
mod view;

use std::io;
use std::path::Path;

pub use snapshot::{build, RealRow, ServiceRow, Snapshot, Totals, WorkerRow};
pub use term::run;
pub use view::{human, screen_text, sparkline, Key, Rate, SortKey, View, HISTORY};

use super::ctl::request;

/// The ctl verb that answers a [`Snapshot`] as one line of JSON.
pub const TOP_VERB: &str = "--top";

/// Reads one snapshot from the director at `socket`.
pub fn fetch(socket: &Path) -> io::Result<Snapshot> {
    let r = request(socket, &[TOP_VERB.to_string()], None).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot talk to fastlb at {}: {e}", socket.display()),
        )
    })?;
    if r.code != 0 {
        return Err(io::Error::other(format!(
            "fastlb refused {TOP_VERB}: {}",
            r.stderr.trim_end()
        )));
    }
    serde_json::from_str(&r.stdout).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad answer to {TOP_VERB}: {e}"),
        )
    })
}

#[cfg(test)]
mod tests;
