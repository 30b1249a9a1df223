//! A trace of every packet a simulation sent, as a pcap file (`LINKTYPE_RAW`: each record is
//! an IP packet), so `mpbond decode`, tcpdump and tshark read simulated runs.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::Duration;

/// `LINKTYPE_RAW`: records start with an IPv4 or IPv6 header.
pub const LINKTYPE_RAW: u32 = 101;

/// Seconds from the Unix epoch at which a simulation's clock starts in its traces
/// (2026-01-01T00:00:00Z), so tools show plausible dates.
pub const TRACE_EPOCH_SECS: u64 = 1_767_225_600;

/// Writes pcap records.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
}

impl PcapWriter<BufWriter<File>> {
    /// Creates `path` and writes the file header.
    pub fn create(path: &Path) -> io::Result<Self> {
        Self::new(BufWriter::new(File::create(path)?))
    }
}

impl<W: Write> PcapWriter<W> {
    /// Writes the pcap file header (microsecond timestamps, snap length 65535).
    pub fn new(mut out: W) -> io::Result<Self> {
        out.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
        out.write_all(&2u16.to_le_bytes())?;
        out.write_all(&4u16.to_le_bytes())?;
        out.write_all(&0i32.to_le_bytes())?;
        out.write_all(&0u32.to_le_bytes())?;
        out.write_all(&65_535u32.to_le_bytes())?;
        out.write_all(&LINKTYPE_RAW.to_le_bytes())?;
        Ok(Self { out })
    }

    /// Writes one packet seen `at` after the simulation began.
    pub fn record(&mut self, at: Duration, packet: &[u8]) -> io::Result<()> {
        let secs = TRACE_EPOCH_SECS + at.as_secs();
        let len = u32::try_from(packet.len()).unwrap_or(u32::MAX);
        self.out
            .write_all(&u32::try_from(secs).unwrap_or(u32::MAX).to_le_bytes())?;
        self.out.write_all(&at.subsec_micros().to_le_bytes())?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(packet)
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_records_are_laid_out_as_pcap() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.record(Duration::from_micros(1_500_001), &[0x45, 0, 0, 20])
            .unwrap();
        let b = w.finish().unwrap();
        assert_eq!(b.len(), 24 + 16 + 4);
        assert_eq!(&b[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(u32::from_le_bytes(b[20..24].try_into().unwrap()), 101);
        let secs = u32::from_le_bytes(b[24..28].try_into().unwrap());
        assert_eq!(u64::from(secs), TRACE_EPOCH_SECS + 1);
        assert_eq!(u32::from_le_bytes(b[28..32].try_into().unwrap()), 500_001);
        assert_eq!(u32::from_le_bytes(b[32..36].try_into().unwrap()), 4);
        assert_eq!(&b[40..], &[0x45, 0, 0, 20]);
    }
}
