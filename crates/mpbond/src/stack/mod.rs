//! Data planes: how mpbond's connections are carried.
//!
//! - [`kernel`]: the Linux kernel's MPTCP (`IPPROTO_MPTCP` sockets).
//! - [`user`]: mpbond's own sans-IO engine (`mptcp-proto`, TCP and MPTCP) over a TUN device.
//! - [`conn`]: a connection of either, as the relay and the Convert exchange use it.

pub mod conn;
pub mod kernel;
pub mod user;

pub use conn::{AnyConn, Conn};

/// The data plane chosen with `--stack`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Deserialize,
    serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Stack {
    /// The Linux kernel's MPTCP.
    #[default]
    Kernel,
    /// mpbond's own engine (TCP and MPTCP) over a TUN device.
    User,
}
