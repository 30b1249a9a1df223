//! What `mpbond decode` reports for each TCP packet, as typed values; turned into JSON (one
//! object per packet) or one human line only when printed, so decoding itself stays cheap.

use std::fmt::{self, Write as _};
use std::net::IpAddr;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

/// The outcome of a check of a key, token, HMAC or checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Check {
    /// The option carries nothing to check: the field is left out.
    #[default]
    NotApplicable,
    /// It could be checked if the capture held what is needed (keys, the subflow's handshake,
    /// the whole payload): `null`.
    Unknown,
    /// Checked: `true` or `false`.
    Checked(bool),
}

impl Check {
    #[expect(
        clippy::trivially_copy_pass_by_ref,
        reason = "serde's skip_serializing_if passes a reference"
    )]
    fn is_not_applicable(&self) -> bool {
        matches!(self, Check::NotApplicable)
    }

    /// A check from an optional comparison.
    #[must_use]
    pub fn from_option(v: Option<bool>) -> Self {
        v.map_or(Check::Unknown, Check::Checked)
    }
}

impl Serialize for Check {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Check::Checked(b) => s.serialize_bool(*b),
            _ => s.serialize_none(),
        }
    }
}

/// A value printed as fixed-width lowercase hex (keys, tokens, nonces, truncated HMACs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hex<const WIDTH: usize>(pub u64);

impl<const WIDTH: usize> fmt::Display for Hex<WIDTH> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:0width$x}", self.0, width = WIDTH)
    }
}

impl<const WIDTH: usize> Serialize for Hex<WIDTH> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Bytes printed as lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HexBytes(pub Vec<u8>);

impl fmt::Display for HexBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl Serialize for HexBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One MPTCP option, in the RFC's words. Fields that the option does not carry are absent.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OptionRecord {
    /// `MP_CAPABLE`, `MP_JOIN`, `DSS`, ... (`UNKNOWN` for unassigned subtypes).
    pub subtype: &'static str,
    /// Option length field.
    pub length: u8,
    /// Why the option could not be read, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The option's bytes, when it could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<HexBytes>,
    /// MPTCP version (`MP_CAPABLE`; `ADD_ADDR`: 0 for RFC 6824's form).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u8>,
    /// Flag letters (`MP_CAPABLE`: A–H; `MP_TCPRST`: U V W T).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flags: Option<String>,
    /// `MP_CAPABLE` A bit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum_required: Option<bool>,
    /// Option sender's key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender_key: Option<Hex<16>>,
    /// Option receiver's key (`MP_CAPABLE`, `MP_FASTCLOSE`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receiver_key: Option<Hex<16>>,
    /// `MP_JOIN` form: `syn`, `synack` or `ack`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub form: Option<&'static str>,
    /// Backup flag (`MP_JOIN`, `MP_PRIO`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<bool>,
    /// Address ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_id: Option<u8>,
    /// Receiver's token (`MP_JOIN` SYN).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Hex<8>>,
    /// Sender's random number (`MP_JOIN`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<Hex<8>>,
    /// HMAC as carried (`MP_JOIN`: truncated 64 or 160 bits; `ADD_ADDR`: 64 bits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hmac: Option<HexBytes>,
    /// `DATA_FIN` flag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_fin: Option<bool>,
    /// Data ACK as carried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_ack: Option<u64>,
    /// Data ACK width: 32 or 64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_ack_bits: Option<u8>,
    /// Data sequence number as carried (`DSS` mapping, `MP_FAIL`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dsn: Option<u64>,
    /// DSN width: 32 or 64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dsn_bits: Option<u8>,
    /// Subflow sequence number (relative).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssn: Option<u32>,
    /// Data-level length.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_len: Option<u16>,
    /// DSS checksum as carried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<Hex<4>>,
    /// `ADD_ADDR` address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// `ADD_ADDR` port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `ADD_ADDR` echo flag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub echo: Option<bool>,
    /// `REMOVE_ADDR` address IDs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_ids: Option<Vec<u8>>,
    /// `MP_TCPRST` reason code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<u8>,
    /// `MP_TCPRST` reason, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_text: Option<&'static str>,
    /// `MP_JOIN` SYN: the token names a connection whose key this capture holds.
    #[serde(skip_serializing_if = "Check::is_not_applicable")]
    pub token_ok: Check,
    /// `MP_JOIN` SYN/ACK and ACK, `ADD_ADDR` (not echo): the HMAC is right for the keys and
    /// random numbers of the connection.
    #[serde(skip_serializing_if = "Check::is_not_applicable")]
    pub hmac_ok: Check,
    /// `ADD_ADDR` whose HMAC is wrong but equals the *leftmost* 64 bits (Linux before it
    /// followed RFC 8684, early 2020).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hmac_leftmost: Option<bool>,
    /// `DSS` (and `MP_CAPABLE` with data) carrying a checksum: it matches the mapped data.
    #[serde(skip_serializing_if = "Check::is_not_applicable")]
    pub checksum_ok: Check,
    /// `MP_FASTCLOSE`: the key is the receiver's key.
    #[serde(skip_serializing_if = "Check::is_not_applicable")]
    pub key_ok: Check,
}

/// One TCP packet.
#[derive(Debug, Clone)]
pub struct PacketRecord {
    /// Frame number in the capture (1-based).
    pub frame: u64,
    /// Capture time, seconds since the epoch.
    pub time: f64,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// TCP flags as letters (`S`, `SA`, `A`, `PA`, `FA`, `R`, ...).
    pub flags: String,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Payload length (on the wire).
    pub len: u32,
    /// Connection number in this decode (1-based), when known.
    pub connection: Option<usize>,
    /// Subflow number in this decode (1-based).
    pub subflow: Option<usize>,
    /// MPTCP options, in order.
    pub mptcp: Vec<OptionRecord>,
    /// Problems with the packet itself (a cut header, a bad TCP option framing).
    pub error: Option<String>,
}

impl Serialize for PacketRecord {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("frame", &self.frame)?;
        m.serialize_entry("time", &self.time)?;
        m.serialize_entry("src", &self.src)?;
        m.serialize_entry("dst", &self.dst)?;
        m.serialize_entry("sport", &self.sport)?;
        m.serialize_entry("dport", &self.dport)?;
        m.serialize_entry("flags", &self.flags)?;
        m.serialize_entry("seq", &self.seq)?;
        m.serialize_entry("ack", &self.ack)?;
        m.serialize_entry("len", &self.len)?;
        if let Some(c) = self.connection {
            m.serialize_entry("connection", &c)?;
        }
        if let Some(sf) = self.subflow {
            m.serialize_entry("subflow", &sf)?;
        }
        m.serialize_entry("mptcp", &self.mptcp)?;
        if let Some(e) = &self.error {
            m.serialize_entry("error", e)?;
        }
        m.end()
    }
}

fn check_word(c: Check) -> &'static str {
    match c {
        Check::Checked(true) => "ok",
        Check::Checked(false) => "FAILED",
        _ => "unchecked",
    }
}

impl fmt::Display for OptionRecord {
    /// `DSS ack=... dsn=... ssn=1 len=8192 csum=9e91 checksum=ok`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.subtype)?;
        if let Some(e) = &self.error {
            write!(f, " (length {}) MALFORMED: {e}", self.length)?;
            if let Some(raw) = &self.raw {
                write!(f, " [{raw}]")?;
            }
            return Ok(());
        }
        let mut s = String::new();
        let o = self;
        if let Some(v) = o.version {
            let _ = write!(s, " v{v}");
        }
        if let Some(v) = o.form {
            let _ = write!(s, " {v}");
        }
        if let Some(v) = &o.flags {
            let _ = write!(s, " flags={}", if v.is_empty() { "-" } else { v });
        }
        if o.echo == Some(true) {
            s.push_str(" echo");
        }
        if o.backup == Some(true) {
            s.push_str(" backup");
        }
        if o.data_fin == Some(true) {
            s.push_str(" DATA_FIN");
        }
        let mut kv = |k: &str, v: &dyn fmt::Display| {
            let _ = write!(s, " {k}={v}");
        };
        if let Some(v) = o.address_id {
            kv("id", &v);
        }
        if let Some(v) = &o.address {
            kv("addr", v);
        }
        if let Some(v) = o.port {
            kv("port", &v);
        }
        if let Some(v) = &o.address_ids {
            let ids: Vec<String> = v.iter().map(u8::to_string).collect();
            kv("ids", &ids.join(","));
        }
        if let Some(v) = o.sender_key {
            kv("sender_key", &v);
        }
        if let Some(v) = o.receiver_key {
            kv("receiver_key", &v);
        }
        if let Some(v) = o.token {
            kv("token", &v);
        }
        if let Some(v) = o.nonce {
            kv("nonce", &v);
        }
        if let Some(v) = &o.hmac {
            kv("hmac", v);
        }
        if let Some(v) = o.data_ack {
            kv("ack", &v);
        }
        if let Some(v) = o.dsn {
            kv("dsn", &v);
        }
        if let Some(v) = o.ssn {
            kv("ssn", &v);
        }
        if let Some(v) = o.data_len {
            kv("len", &v);
        }
        if let Some(v) = o.checksum {
            kv("csum", &v);
        }
        if let Some(v) = o.reason_text {
            kv("reason", &v);
        }
        for (name, c) in [
            ("token", o.token_ok),
            ("hmac", o.hmac_ok),
            ("checksum", o.checksum_ok),
            ("key", o.key_ok),
        ] {
            if !c.is_not_applicable() {
                let _ = write!(s, " ({name} {})", check_word(c));
            }
        }
        if o.hmac_leftmost == Some(true) {
            s.push_str(" (hmac matches the leftmost 64 bits: Linux before RFC 8684)");
        }
        f.write_str(&s)
    }
}

impl fmt::Display for PacketRecord {
    /// `    7  10.0.2.1:10004 > 10.0.1.1:33306 [PA] seq 791415662 ack 2180764090 len 7100  DSS ...`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ep = |a: IpAddr, p: u16| {
            if a.is_ipv6() {
                format!("[{a}]:{p}")
            } else {
                format!("{a}:{p}")
            }
        };
        write!(
            f,
            "{:>6}  {} > {} [{}] seq {} ack {} len {}",
            self.frame,
            ep(self.src, self.sport),
            ep(self.dst, self.dport),
            self.flags,
            self.seq,
            self.ack,
            self.len
        )?;
        if let Some(e) = &self.error {
            write!(f, "  ERROR: {e}")?;
        }
        for o in &self.mptcp {
            write!(f, "  {o}")?;
        }
        Ok(())
    }
}
