//! The per-packet pipeline and the backends that feed it.
//!
//! A backend (pcap replay, AF_XDP) owns buffers and clocks; it hands received frames to a
//! [`PacketProcessor`] as [`Frame`]s and acts on each [`Verdict`]. The AF_XDP worker hands
//! over each received batch whole ([`PacketProcessor::process_batch`], the path the
//! pipeline benchmark measures); replay, which reads one packet at a time, and the tests use
//! [`PacketProcessor::process`]. The processor never touches a socket.

pub mod pcap;
pub mod pipeline;
pub mod replay;
pub mod report;
mod verdict;
#[cfg(target_os = "linux")]
pub mod xdp;

pub use crate::wire::Frame;
pub use verdict::Verdict;

use crate::time::Instant;

/// Headroom every backend reserves in front of a received frame, so tunnel encapsulation
/// (an outer IPv6 header is 40 bytes) can grow the frame without copying it.
pub const HEADROOM: usize = 256;

/// Something that decides what happens to each frame: the fastlb pipeline, or a trivial
/// forwarder used to measure the I/O ceiling.
pub trait PacketProcessor {
    /// Processes one received frame in place and says what to do with it.
    fn process(&mut self, now: Instant, frame: &mut Frame<'_>) -> Verdict;

    /// Processes a batch of received frames in order, writing frame i's verdict to
    /// `verdicts[i]` (the shorter of the two slices bounds the batch). The default calls
    /// [`PacketProcessor::process`] on each frame; a processor may look over the whole
    /// batch first, as the pipeline does to overlap the batch's connection-table misses.
    fn process_batch(&mut self, now: Instant, frames: &mut [Frame<'_>], verdicts: &mut [Verdict]) {
        for (frame, verdict) in frames.iter_mut().zip(verdicts.iter_mut()) {
            *verdict = self.process(now, frame);
        }
    }

    /// Called between batches: pick up a new configuration snapshot, expire connections.
    /// Must be cheap when there is nothing to do.
    fn between_batches(&mut self, now: Instant) {
        let _ = now;
    }

    /// Whether the processor has frames of its own to send ([`PacketProcessor::emit`]):
    /// frames it kept back from earlier batches and has now released (a fragment that
    /// arrived before its first one). The backend asks after each batch.
    fn has_output(&self) -> bool {
        false
    }

    /// Writes the next frame of the processor's own output into `buf` (a buffer of the
    /// backend's, at least [`HEADROOM`] plus the largest frame it receives) and says what
    /// to do with it, as for a received frame; `None` when there is none. The frame is
    /// counted by the processor (sent, passed or dropped; not as received).
    fn emit<'b>(&mut self, now: Instant, buf: &'b mut [u8]) -> Option<(Frame<'b>, Verdict)> {
        let _ = (now, buf);
        None
    }
}
