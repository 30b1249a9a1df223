//! mpbond: bond several Internet lines into one with Multipath TCP (RFC 8684).
//!
//! This crate is the `mpbond` program: its command line ([`cli`]), the network-namespace lab
//! with its link emulator ([`lab`]), the benchmark ([`bench`]) and the demo ([`demo`]). See
//! `docs/` for the user guide.

pub mod bench;
pub mod cli;
pub mod config;
pub mod convert;
pub mod converter;
pub mod decode;
pub mod demo;
pub mod gateway;
pub mod host;
pub mod lab;
pub mod log_rate;
pub mod metrics;
pub mod netcat;
pub mod netlink;
pub mod pm;
pub mod relay;
pub mod stack;
pub mod status;
pub mod sys;
pub mod tun;
pub mod units;
