//! Data planes: how mpbond's connections are carried.
//!
//! - [`kernel`]: the Linux kernel's MPTCP (`IPPROTO_MPTCP` sockets).
//! - `user` (not built yet): mpbond's own sans-IO engine over TUN.

pub mod kernel;

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
    /// mpbond's own TCP + MPTCP engine over TUN (not built yet).
    User,
}

impl Stack {
    /// Fails for a data plane this build cannot run yet.
    pub fn check_available(self) -> Result<(), String> {
        match self {
            Self::Kernel => Ok(()),
            Self::User => Err("--stack user is not built yet; use --stack kernel".to_owned()),
        }
    }
}
