//! The pcap backend: runs a [`PacketProcessor`] over a capture with the capture's clock.
//!
//! Each record is one batch: the processor's `between_batches` runs with the record's
//! timestamp before the frame is processed, so timers expire inside the capture exactly as
//! they would on a director that saw the same frames at the same times. Transmitted frames
//! keep their input timestamp. The same input always gives the same output bytes.

use std::io::{Read, Write};

use serde::Serialize;
use thiserror::Error;

use super::pcap::{PcapError, PcapReader, PcapWriter};
use super::{Frame, PacketProcessor, Verdict, HEADROOM};
use crate::time::Instant;

/// Largest frame replay accepts (a jumbo frame); anything longer is counted and skipped.
pub const MAX_FRAME: usize = 9216;

/// What happened to the frames of a capture.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReplayOutcome {
    /// Frames read.
    pub frames_in: u64,
    /// Frames written (transmitted by the processor).
    pub frames_out: u64,
    /// Frames the processor handed to the kernel.
    pub passed: u64,
    /// Frames the processor dropped.
    pub dropped: u64,
    /// Frames longer than [`MAX_FRAME`], skipped unprocessed.
    pub oversized: u64,
    /// Frames the processor held back (later fragments before their first one); those it
    /// sent later are counted again in `frames_out` (or `passed`, `dropped`). Left out of
    /// the JSON when zero.
    #[serde(skip_serializing_if = "is_zero")]
    pub held: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Replay failed to read or write a capture.
#[derive(Debug, Error)]
pub enum ReplayError {
    /// The input capture is unreadable.
    #[error(transparent)]
    Input(#[from] PcapError),
    /// The output could not be written.
    #[error("writing output capture: {0}")]
    Output(#[from] std::io::Error),
}

/// Runs `processor` over every frame of `input`, writing transmitted frames to `output`.
pub fn replay<P: PacketProcessor>(
    processor: &mut P,
    input: impl Read,
    output: impl Write,
) -> Result<ReplayOutcome, ReplayError> {
    let mut reader = PcapReader::new(input)?;
    let mut writer = PcapWriter::new(output)?;
    let mut buf = vec![0u8; HEADROOM + MAX_FRAME + 64];
    let mut out = ReplayOutcome::default();
    while let Some(rec) = reader.next_record()? {
        out.frames_in += 1;
        if rec.data.len() > MAX_FRAME {
            out.oversized += 1;
            continue;
        }
        let now = Instant::from_micros(rec.ts_micros);
        processor.between_batches(now);
        buf[HEADROOM..HEADROOM + rec.data.len()].copy_from_slice(&rec.data);
        let mut frame = Frame::new(&mut buf, HEADROOM, rec.data.len());
        let verdict = processor.process(now, &mut frame);
        tally(&mut writer, &mut out, rec.ts_micros, &frame, verdict)?;
        // What the processor sends of its own (held fragments their first one released)
        // follows the frame, with its timestamp.
        while processor.has_output() {
            let Some((frame, verdict)) = processor.emit(now, &mut buf) else {
                break;
            };
            tally(&mut writer, &mut out, rec.ts_micros, &frame, verdict)?;
        }
    }
    writer.finish()?;
    Ok(out)
}

/// Writes or counts one processed frame.
fn tally<W: Write>(
    writer: &mut PcapWriter<W>,
    out: &mut ReplayOutcome,
    ts_micros: u64,
    frame: &Frame<'_>,
    verdict: Verdict,
) -> Result<(), ReplayError> {
    match verdict {
        Verdict::Transmit => {
            writer.write(ts_micros, frame.data())?;
            out.frames_out += 1;
        }
        Verdict::Pass => out.passed += 1,
        Verdict::Drop(_) => out.dropped += 1,
        Verdict::Held => out.held += 1,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::DropReason;

    /// Swaps MACs of even-length frames, drops odd ones, and records the clock it saw.
    struct Bounce(Vec<u64>);

    impl PacketProcessor for Bounce {
        fn process(&mut self, now: Instant, frame: &mut Frame<'_>) -> Verdict {
            self.0.push(now.as_micros());
            if frame.len() % 2 == 1 {
                return Verdict::Drop(DropReason::Malformed);
            }
            let d = frame.data_mut();
            for i in 0..6 {
                d.swap(i, i + 6);
            }
            Verdict::Transmit
        }
    }

    #[test]
    fn transmitted_frames_keep_timestamps_and_drops_are_counted() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        let mut f = vec![0u8; 60];
        f[0] = 1;
        f[6] = 2;
        w.write(10, &f).unwrap();
        w.write(20, &[0u8; 61]).unwrap();
        w.write(30, &vec![0u8; MAX_FRAME + 1]).unwrap();
        let input = w.finish().unwrap();
        let mut p = Bounce(Vec::new());
        let mut output = Vec::new();
        let o = replay(&mut p, &input[..], &mut output).unwrap();
        assert_eq!(
            (o.frames_in, o.frames_out, o.dropped, o.oversized),
            (3, 1, 1, 1)
        );
        assert_eq!(p.0, vec![10, 20]);
        let mut r = PcapReader::new(&output[..]).unwrap();
        let rec = r.next_record().unwrap().unwrap();
        assert_eq!((rec.ts_micros, rec.data[0], rec.data[6]), (10, 2, 1));
    }
}
