//! mptcp-proto: Multipath TCP (RFC 8684) without I/O.
//!
//! Modelled on quinn-proto and smoltcp: nothing here reads a clock or touches a socket. This
//! first part holds the two layers everything else builds on:
//!
//! - [`wire`]: IPv4, IPv6 and TCP headers, TCP options and every MPTCP option of RFC 8684 (plus
//!   decoding of RFC 6824's version 0), as `Packet` views with checked lengths and `Repr`
//!   structs with `parse`/`emit`/`buffer_len`. Parsers never panic: bad input is an error value.
//! - [`crypto`]: keys to tokens and initial data sequence numbers, the `MP_JOIN` and `ADD_ADDR`
//!   HMACs, and the DSS checksum.
#![deny(unsafe_code)]

pub mod crypto;
mod deadline;
pub mod endpoint;
#[doc(hidden)]
pub mod fuzzing;
mod keyed_map;
pub mod mptcp;
pub mod tcp;
pub mod wire;
