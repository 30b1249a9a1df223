//! The engine's packets through the TUN in batches, with the device's offloads when the kernel
//! gives them (`IFF_VNET_HDR`, `TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6`, the virtio-net header
//! of `include/uapi/linux/virtio_net.h`).
//!
//! - **Out:** the segments one round of the engine produced go in one batch; consecutive
//!   segments of one subflow whose TCP headers differ only in sequence number (bare segments
//!   of one mapping, RFC 8684 §3.3.1, with the same timestamp) are merged into one GSO packet,
//!   one `write` for up to 64 KiB, and the kernel cuts it back into the same segments (each
//!   with the same TCP options) where it leaves the host. Segments whose options differ (a new
//!   DSS, another `DATA_ACK`) are never merged, so what goes on the wire is what the engine
//!   wrote.
//! - **In:** a packet the host merged (GRO on the receiving interface) comes as one read and is
//!   cut here into the segments it was made of; a packet whose checksum the host left to us
//!   (`VIRTIO_NET_HDR_F_NEEDS_CSUM`) gets it before the engine sees it.
//!
//! The merging and cutting are `tun-rs`'s (its port of wireguard-go's offload code; it turns
//! on the UDP offloads too where the kernel has them, which the engine, TCP only, never uses).
//! Without the header (an older kernel, or `MPBOND_TUN_OFFLOAD=0`), one packet per call, as
//! before.

use std::io;

use tun_rs::{AsyncDevice, GROTable, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

/// Room before each outgoing packet for the virtio-net header.
const HEADROOM: usize = VIRTIO_NET_HDR_LEN;
/// The largest packet merged segments make (an IP packet's length field).
const MAX_GSO: usize = 65_535;

/// Buffers for the TUN's reads and writes, kept from round to round.
pub(super) struct TunIo {
    /// One read (a header and up to 64 KiB of merged segments).
    read: Vec<u8>,
    /// The packets of the last read, `sizes[i]` bytes of `packets[i]`.
    packets: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    /// Outgoing packets, each after [`HEADROOM`]; `out_len` of them hold this round's.
    out: Vec<Vec<u8>>,
    out_len: usize,
    gro: GROTable,
    mtu: usize,
}

/// A read's result: the system's errors stay errors; one without an OS error code is
/// `tun-rs` refusing what it read, and the packet is dropped (`None`).
fn dropped_or(r: io::Result<usize>) -> io::Result<Option<usize>> {
    match r {
        Ok(n) => Ok(Some(n)),
        Err(e) if e.raw_os_error().is_none() => {
            tracing::debug!("dropped a packet from the TUN: {e}");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

impl TunIo {
    pub(super) fn new(mtu: usize) -> Self {
        Self {
            read: vec![0; VIRTIO_NET_HDR_LEN + MAX_GSO],
            // The first also takes a whole read when the device has no offloads (a packet
            // longer than the MTU is then read whole, not cut short); the others take the
            // segments of a merged packet.
            packets: std::iter::once(vec![0; MAX_GSO])
                .chain(std::iter::repeat_with(|| vec![0; mtu]))
                .take(IDEAL_BATCH_SIZE)
                .collect(),
            sizes: vec![0; IDEAL_BATCH_SIZE],
            out: Vec::new(),
            out_len: 0,
            gro: GROTable::default(),
            mtu,
        }
    }

    /// Waits for the next read; its packets are then [`TunIo::packets`]`(n)`. An error is the
    /// device's (the system's); a packet `tun-rs` could not make sense of (a header or a GSO
    /// packet it cannot cut) is dropped and the next one read.
    pub(super) async fn recv(&mut self, dev: &AsyncDevice) -> io::Result<usize> {
        loop {
            let r = dev
                .recv_multiple(&mut self.read, &mut self.packets, &mut self.sizes, 0)
                .await;
            if let Some(n) = dropped_or(r)? {
                return Ok(n);
            }
        }
    }

    /// The next read if one is waiting (`WouldBlock` if not); `Ok(0)` when what came was
    /// dropped (see [`TunIo::recv`]).
    pub(super) fn try_recv(&mut self, dev: &AsyncDevice) -> io::Result<usize> {
        let r = dev.try_recv_multiple(&mut self.read, &mut self.packets, &mut self.sizes, 0);
        Ok(dropped_or(r)?.unwrap_or(0))
    }

    /// The `n` packets of the last read.
    pub(super) fn packets(&self, n: usize) -> impl Iterator<Item = &[u8]> {
        self.packets
            .iter()
            .zip(&self.sizes)
            .take(n)
            .map(|(p, &len)| &p[..len])
    }

    /// Fills the next outgoing packet with `fill` (which writes at most the MTU and says how
    /// much it wrote, or `None`: nothing to send). Whether it wrote one.
    pub(super) fn push_with(&mut self, fill: impl FnOnce(&mut [u8]) -> Option<usize>) -> bool {
        if self.out_len == self.out.len() {
            // Room for what merging appends (`tun-rs` merges only into a buffer that holds the
            // whole GSO packet already); untouched, the capacity costs address space only.
            self.out.push(Vec::with_capacity(2 * HEADROOM + MAX_GSO));
        }
        let buf = &mut self.out[self.out_len];
        // Back to full size: zeroes only what a shorter packet left, drops what merging added.
        buf.resize(HEADROOM + self.mtu, 0);
        match fill(&mut buf[HEADROOM..]) {
            Some(len) => {
                buf.truncate(HEADROOM + len);
                self.out_len += 1;
                true
            }
            None => false,
        }
    }

    /// Writes this round's packets, [`IDEAL_BATCH_SIZE`] at a time (merged where they can
    /// be); the first error, if any, after trying them all.
    pub(super) async fn flush(&mut self, dev: &AsyncDevice) -> io::Result<()> {
        let mut result = Ok(());
        for batch in self.out[..self.out_len].chunks_mut(IDEAL_BATCH_SIZE) {
            if let Err(e) = dev.send_multiple(&mut self.gro, batch, HEADROOM).await {
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        self.out_len = 0;
        // A round of thousands of packets (a burst of connections) leaves no thousands of
        // 64 KiB buffers behind.
        self.out.truncate(IDEAL_BATCH_SIZE);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each outgoing packet gets the MTU to fill after the header's room, whatever the last
    /// round's merging did to its buffer, and nothing counts that was not filled.
    #[test]
    fn outgoing_buffers_are_whole_again_each_round() {
        let mut io = TunIo::new(1500);
        assert!(io.push_with(|b| {
            assert_eq!(b.len(), 1500);
            b[..3].copy_from_slice(b"abc");
            Some(3)
        }));
        assert!(!io.push_with(|_| None));
        assert_eq!(io.out_len, 1);
        assert_eq!(&io.out[0][HEADROOM..], b"abc");
        assert!(io.out[0].capacity() >= 2 * HEADROOM + MAX_GSO);
        // Merging appended segments to it, and the round ended.
        io.out[0].resize(HEADROOM + 40_000, 7);
        io.out_len = 0;
        assert!(io.push_with(|b| {
            assert_eq!(b.len(), 1500);
            Some(1500)
        }));
        assert_eq!(io.out[0].len(), HEADROOM + 1500);
    }

    /// What `tun-rs` refuses is one packet lost; what the system says stops the driver.
    #[test]
    fn a_packet_tun_rs_refuses_is_dropped_and_a_device_error_is_not() {
        assert_eq!(dropped_or(Ok(3)).unwrap(), Some(3));
        assert_eq!(dropped_or(Err(io::Error::other("bad GSO"))).unwrap(), None);
        let e = dropped_or(Err(io::Error::from_raw_os_error(libc::EBADFD))).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADFD));
    }
}
