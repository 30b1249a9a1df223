//! Reading captures: pcap (microsecond and nanosecond) and pcapng files, through the
//! `pcap-parser` crate, into frames with their link type and time.

use std::io::Read;

use pcap_parser::pcapng::Block;
use pcap_parser::{PcapBlockOwned, PcapError, create_reader};

/// One captured frame.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// 1-based position in the file.
    pub number: u64,
    /// Capture time, seconds since the Unix epoch (0 when the format gives none).
    pub time: f64,
    /// Link-layer type (LINKTYPE_* of the tcpdump.org registry).
    pub linktype: i32,
    /// The captured bytes (possibly fewer than `orig_len`).
    pub data: &'a [u8],
    /// Length of the frame on the wire.
    pub orig_len: u32,
}

/// Why a file could not be read as a capture.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Neither pcap nor pcapng.
    #[error("not a pcap or pcapng file")]
    NotACapture,
    /// The file is empty.
    #[error("the file is empty")]
    Empty,
    /// Reading failed.
    #[error("reading the capture failed")]
    Read,
    /// A block in the file is not well-formed.
    #[error("malformed capture block after {frames} frames: {detail}")]
    Malformed {
        /// Frames read before the bad block.
        frames: u64,
        /// The parser's description.
        detail: String,
    },
}

/// How reading ended.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOutcome {
    /// Frames read.
    pub frames: u64,
    /// The file ends in the middle of a block (a capture that was cut off).
    pub truncated: bool,
}

/// An interface of a pcapng section.
#[derive(Debug, Clone, Copy)]
struct Interface {
    linktype: i32,
    /// Timestamp units per second.
    resolution: f64,
    /// Seconds added to every timestamp (`if_tsoffset`, may be negative).
    offset: f64,
}

impl Interface {
    /// A packet's time in seconds. Computed in floating point: the file's fields are not
    /// trusted not to overflow integer arithmetic.
    fn time(&self, high: u32, low: u32) -> f64 {
        let ticks = (u64::from(high) << 32) | u64::from(low);
        ticks as f64 / self.resolution + self.offset
    }
}

/// Largest block accepted (a frame of a jumbo-frame capture fits many times over).
const MAX_BLOCK: usize = 64 << 20;

/// Calls `f` for every frame of the capture read from `reader`.
pub fn for_each_frame<R: Read + Send>(
    reader: R,
    mut f: impl FnMut(Frame<'_>),
) -> Result<ReadOutcome, CaptureError> {
    let mut capacity = 1 << 20;
    let mut reader = match create_reader(capacity, reader) {
        Ok(r) => r,
        Err(PcapError::Eof) => return Err(CaptureError::Empty),
        Err(PcapError::ReadError) => return Err(CaptureError::Read),
        Err(_) => return Err(CaptureError::NotACapture),
    };
    let mut out = ReadOutcome::default();
    let mut legacy: Option<(i32, bool)> = None;
    let mut interfaces: Vec<Interface> = Vec::new();
    loop {
        match reader.next() {
            Ok((offset, block)) => {
                match block {
                    PcapBlockOwned::LegacyHeader(h) => {
                        legacy = Some((h.network.0, h.is_nanosecond_precision()));
                    }
                    PcapBlockOwned::Legacy(b) => {
                        let (linktype, nanos) = legacy.unwrap_or((1, false));
                        let frac = f64::from(b.ts_usec) / if nanos { 1e9 } else { 1e6 };
                        out.frames += 1;
                        let len = (b.caplen as usize).min(b.data.len());
                        f(Frame {
                            number: out.frames,
                            time: f64::from(b.ts_sec) + frac,
                            linktype,
                            data: &b.data[..len],
                            orig_len: b.origlen,
                        });
                    }
                    PcapBlockOwned::NG(Block::SectionHeader(_)) => interfaces.clear(),
                    PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                        let resolution =
                            idb.ts_resolution().filter(|&r| r > 0).unwrap_or(1_000_000);
                        interfaces.push(Interface {
                            linktype: idb.linktype.0,
                            resolution: resolution as f64,
                            offset: idb.ts_offset() as f64,
                        });
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                        let iface = interfaces.get(epb.if_id as usize).copied();
                        out.frames += 1;
                        let len = (epb.caplen as usize).min(epb.data.len());
                        f(Frame {
                            number: out.frames,
                            time: iface.map_or(0.0, |i| i.time(epb.ts_high, epb.ts_low)),
                            linktype: iface.map_or(-1, |i| i.linktype),
                            data: &epb.data[..len],
                            orig_len: epb.origlen,
                        });
                    }
                    PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                        out.frames += 1;
                        let len = (spb.origlen as usize).min(spb.data.len());
                        f(Frame {
                            number: out.frames,
                            time: 0.0,
                            linktype: interfaces.first().map_or(-1, |i| i.linktype),
                            data: &spb.data[..len],
                            orig_len: spb.origlen,
                        });
                    }
                    PcapBlockOwned::NG(_) => {}
                }
                reader.consume(offset);
            }
            Err(PcapError::Eof) => return Ok(out),
            Err(PcapError::UnexpectedEof) => {
                out.truncated = true;
                return Ok(out);
            }
            Err(PcapError::Incomplete(_)) => {
                let before = reader.data().len();
                reader.refill().map_err(|_| CaptureError::Read)?;
                // Once the file is exhausted the next call says whether it ended cleanly (Eof)
                // or inside a block (UnexpectedEof).
                if reader.data().len() == before && !reader.reader_exhausted() {
                    // The buffer is full and the block still does not fit: grow it.
                    capacity *= 2;
                    if capacity > MAX_BLOCK || !reader.grow(capacity) {
                        return Err(CaptureError::Malformed {
                            frames: out.frames,
                            detail: "block too large".into(),
                        });
                    }
                }
            }
            Err(PcapError::ReadError) => return Err(CaptureError::Read),
            Err(e) => {
                return Err(CaptureError::Malformed {
                    frames: out.frames,
                    detail: format!("{e:?}"),
                });
            }
        }
    }
}

/// Writes pcap files (microsecond timestamps): for tests, benchmarks, and anything that records
/// packets it made itself.
#[derive(Debug)]
pub struct PcapWriter<W: std::io::Write> {
    out: W,
}

impl<W: std::io::Write> PcapWriter<W> {
    /// Starts a file with link type `linktype` (see [`super::link::linktype`]).
    pub fn new(mut out: W, linktype: i32) -> std::io::Result<Self> {
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&262_144u32.to_le_bytes());
        h.extend_from_slice(&linktype.to_le_bytes());
        out.write_all(&h)?;
        Ok(PcapWriter { out })
    }

    /// Appends a frame captured at `time` (seconds since the epoch).
    pub fn write(&mut self, time: f64, frame: &[u8]) -> std::io::Result<()> {
        let len =
            u32::try_from(frame.len()).map_err(|_| std::io::Error::other("frame over 4 GiB"))?;
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "capture times fit u32 seconds"
        )]
        let (secs, micros) = (time.trunc() as u32, (time.fract() * 1e6) as u32);
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&secs.to_le_bytes());
        h[4..8].copy_from_slice(&micros.to_le_bytes());
        h[8..12].copy_from_slice(&len.to_le_bytes());
        h[12..].copy_from_slice(&len.to_le_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(frame)
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}
