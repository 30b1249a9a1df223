//! The kernel congestion control of a lab's hosts.
//!
//! A lab's namespaces inherit the host's default algorithm (`net.ipv4.tcp_congestion_control`:
//! BBR on some machines, CUBIC on a default Linux). A benchmark that compares mpbond with
//! "Linux" must run Linux's default, CUBIC, whatever the machine's: with BBR, random loss
//! costs the kernel's flows almost nothing, and the comparison says something else. A
//! namespace may only pick an algorithm of the host's allowed list
//! (`net.ipv4.tcp_allowed_congestion_control`, one list for every namespace; the write fails
//! with `EPERM` otherwise): [`Allowed`] adds one for as long as it lives.

use std::io;

use super::{LabInfo, Role, netns};

/// The host's allowed list, `net.ipv4.tcp_allowed_congestion_control`.
const ALLOWED: &str = "/proc/sys/net/ipv4/tcp_allowed_congestion_control";

/// The host's allowed list with an algorithm added, as it was again when dropped. Adding an
/// algorithm to the list changes no connection by itself.
#[derive(Debug)]
pub struct Allowed(Option<String>);

impl Allowed {
    /// Adds `algorithm` to the host's allowed list unless it is there.
    ///
    /// # Errors
    /// When the list cannot be read or written (not root, or the algorithm is not built in
    /// and its module not loaded).
    pub fn with(algorithm: &str) -> io::Result<Self> {
        let was = std::fs::read_to_string(ALLOWED)?;
        if was.split_whitespace().any(|a| a == algorithm) {
            return Ok(Self(None));
        }
        std::fs::write(ALLOWED, format!("{} {algorithm}", was.trim()))?;
        Ok(Self(Some(was)))
    }
}

impl Drop for Allowed {
    fn drop(&mut self) {
        if let Some(was) = &self.0 {
            let _ = std::fs::write(ALLOWED, was.trim());
        }
    }
}

/// Makes `algorithm` the default congestion control of every host of lab `info` (the
/// emulator forwards only).
///
/// # Errors
/// When a namespace refuses it (not in the host's allowed list: see [`Allowed`]).
pub fn set(info: &LabInfo, algorithm: &str) -> io::Result<()> {
    for role in Role::ALL.into_iter().filter(|r| *r != Role::Emu) {
        netns::sysctl(
            info.netns(role),
            "net.ipv4.tcp_congestion_control",
            algorithm,
        )?;
    }
    Ok(())
}
