//! Data planes: how mpbond's connections are carried.
//!
//! - [`kernel`]: the Linux kernel's MPTCP (`IPPROTO_MPTCP` sockets).
//! - [`user`]: mpbond's own sans-IO engine (`mptcp-proto`) over a TUN device; plain TCP so
//!   far (MPTCP in the engine comes next).

pub mod kernel;
pub mod user;

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

impl Stack {
    /// Fails for a data plane this command cannot run on yet: `what` names the command.
    pub fn check_available(self, what: &str) -> Result<(), String> {
        match self {
            Self::Kernel => Ok(()),
            Self::User => Err(format!(
                "{what} --stack user is not built yet (the user-space stack runs connect and listen so far); use --stack kernel"
            )),
        }
    }
}
