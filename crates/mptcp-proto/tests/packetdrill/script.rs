//! The subset of packetdrill's script language that the upstream MPTCP scripts use: timed
//! lines, each a packet going in (`<`, injected into the engine) or out (`>`, expected from
//! it), a system call, or a shell command (`ip mptcp endpoint ...`, the `../common/*.sh`
//! set-ups).
//!
//! A line that cannot be read is an error with its line number: the scripts are third-party
//! input, and a silently skipped line would be a silently skipped check.

use core::net::IpAddr;

/// When a line happens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Time {
    /// `+x`: after the previous line; `x`: since the start.
    pub relative: bool,
    /// Seconds.
    pub start: f64,
    /// `x~y`: anywhere up to `y` (relative to the same base as `start`).
    pub end: Option<f64>,
}

/// Which way a packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// `<`: packetdrill sends it to the engine.
    In,
    /// `>`: the engine must send it.
    Out,
}

/// An address in a script: `caddr0`, `saddr1`, `saddr`, `ep=inet_addr("198.51.100.2")`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    /// The client's (`c`) or the server's (`s`) address number `n`.
    Named { server: bool, n: u8 },
    /// A literal address.
    Literal(IpAddr),
}

/// A key in `key[...]`: whose, and its value when the script gives one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRef {
    /// `skey` (the server's) or `ckey` (the client's).
    pub server: bool,
    /// `=N`.
    pub value: Option<u64>,
}

/// A 32- or 64-bit DSS field (`dack4=`, `dsn8=`), relative to its sender's IDSN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// The relative value.
    pub value: u64,
    /// Eight octets.
    pub long: bool,
}

/// One MPTCP option as scripts write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MpOpt {
    /// `mpcapable v1 flags[flag_h] key[ckey=2, skey] mpcdatalen 2`.
    Capable {
        version: u8,
        flags: u8,
        keys: Vec<KeyRef>,
        data_len: Option<u16>,
    },
    /// `mp_join_syn backup=1 address_id=1 token=sha256_32(skey)`.
    JoinSyn {
        backup: bool,
        address_id: Option<u8>,
        /// `None`: the server's token, `sha256_32(skey)`.
        token: Option<u32>,
    },
    /// `mp_join_syn_ack backup=1 address_id=1 sender_hmac=auto`.
    JoinSynAck {
        backup: bool,
        address_id: Option<u8>,
    },
    /// `mp_join_ack sender_hmac=auto`.
    JoinAck,
    /// `dss dack8=3 dsn8=1 ssn=1 dll=2 nocs fin`.
    Dss {
        ack: Option<Field>,
        dsn: Option<Field>,
        ssn: Option<u32>,
        dll: Option<u16>,
        fin: bool,
    },
    /// `add_address address_id=1 addr[saddr1] port=4321 hmac=auto` (or `addr_echo`).
    AddAddr {
        address_id: Option<u8>,
        addr: Addr,
        port: Option<u16>,
        echo: bool,
    },
    /// `remove_address address_id=[10]`.
    RemoveAddr { ids: Vec<u8> },
    /// `mp_prio backup=1` (with `address_id=`: the RFC 6824 form).
    Prio {
        backup: bool,
        address_id: Option<u8>,
    },
    /// `mp_fastclose` (the receiver's key) or `mp_fastclose ckey=42` (a literal key).
    Fastclose { key: Option<u64> },
    /// `mp_reset 1`: `MP_TCPRST` with this reason.
    Reset { reason: u8 },
    /// `mp_fail dsn=1`: `MP_FAIL` at this data sequence number, relative to the initial one
    /// of the engine's stream (mpbond's scripts only).
    Fail { dsn: u64 },
}

/// A TCP option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opt {
    Mss(u16),
    SackOk,
    Ts { val: u32, ecr: u32 },
    Nop,
    Wscale(u8),
    Mptcp(MpOpt),
}

/// A packet line.
#[expect(clippy::struct_excessive_bools, reason = "the flags of a TCP header")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub dir: Dir,
    /// `addr[a] > addr[b]`: the source (may be left out) and the destination.
    pub src: Option<Addr>,
    pub dst: Option<Addr>,
    /// Flag letters without `.` and `P` (PSH is the sender's business); `ack` tells ACK.
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    pub ack_flag: bool,
    /// Relative sequence number and payload length.
    pub seq: u32,
    pub len: u32,
    /// Relative acknowledgment number.
    pub ack: Option<u32>,
    pub win: Option<u16>,
    pub opts: Vec<Opt>,
}

/// A system call line (arguments as written; only those the harness acts on are read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Syscall {
    pub name: String,
    pub args: Vec<String>,
    /// The expected return value.
    pub ret: i64,
    /// The expected `errno` name, when `ret` is -1.
    pub errno: Option<String>,
}

/// What a line does.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Packet(Packet),
    Syscall(Syscall),
    Shell(String),
}

/// One line of a script.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// 1-based, in the file.
    pub number: usize,
    pub time: Time,
    pub event: Event,
}

/// Reads a whole script.
pub fn parse(text: &str) -> Result<Vec<Line>, String> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, raw)) = lines.next() {
        let number = i + 1;
        let mut line = raw.split("//").next().unwrap_or("").trim().to_owned();
        if line.is_empty() || line.starts_with("--") {
            continue;
        }
        // A system call may go on over several lines (`poll([{fd=3,` ...): until its
        // brackets close.
        let open = |l: &str| {
            l.chars()
                .map(|c| match c {
                    '(' | '[' | '{' => 1,
                    ')' | ']' | '}' => -1,
                    _ => 0,
                })
                .sum::<i32>()
        };
        while open(&line) > 0 {
            let (_, more) = lines
                .next()
                .ok_or_else(|| format!("line {number}: unclosed bracket at the end"))?;
            line.push(' ');
            line.push_str(more.split("//").next().unwrap_or("").trim());
        }
        let line = line.as_str();
        let l = parse_line(line).map_err(|e| format!("line {number}: {e}: {line}"))?;
        out.push(Line {
            number,
            time: l.0,
            event: l.1,
        });
    }
    Ok(out)
}

fn parse_line(line: &str) -> Result<(Time, Event), String> {
    // A shell command may stand alone (the `defaults.sh` line): it happens at `+0`.
    let (time, rest) = if line.starts_with('`') {
        (
            Time {
                relative: true,
                start: 0.0,
                end: None,
            },
            line,
        )
    } else {
        let (t, rest) = line.split_once(char::is_whitespace).ok_or("no event")?;
        (parse_time(t)?, rest.trim())
    };
    let event = if let Some(cmd) = rest.strip_prefix('`') {
        Event::Shell(cmd.trim_end_matches('`').trim().to_owned())
    } else if let Some(p) = rest.strip_prefix('<') {
        Event::Packet(parse_packet(Dir::In, p.trim())?)
    } else if let Some(p) = rest.strip_prefix('>') {
        Event::Packet(parse_packet(Dir::Out, p.trim())?)
    } else {
        Event::Syscall(parse_syscall(rest)?)
    };
    Ok((time, event))
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    s.trim_start_matches('+')
        .parse::<f64>()
        .map_err(|_| format!("bad time {s:?}"))
}

fn parse_time(t: &str) -> Result<Time, String> {
    // `a~b`: a packet anywhere in between; `a...b`: a blocking call that returns by `b`.
    let (a, b) = match t.split_once('~').or_else(|| t.split_once("...")) {
        Some((a, b)) => (a, Some(b)),
        None => (t, None),
    };
    Ok(Time {
        relative: a.starts_with('+'),
        start: parse_seconds(a)?,
        end: b.map(parse_seconds).transpose()?,
    })
}

fn parse_syscall(s: &str) -> Result<Syscall, String> {
    let open = s.find('(').ok_or("no '(' in a system call")?;
    let mut depth = 0;
    let close = s[open..]
        .char_indices()
        .find(|&(_, c)| {
            depth += match c {
                '(' => 1,
                ')' => -1,
                _ => 0,
            };
            depth == 0
        })
        .map(|(i, _)| open + i)
        .ok_or("no ')' closing a system call")?;
    let name = s[..open].trim().to_owned();
    let args = split_top(&s[open + 1..close], ',');
    let after = s[close + 1..].trim();
    let mut words = after
        .strip_prefix('=')
        .ok_or("no '= result' after a system call")?
        .split_whitespace();
    let ret = words.next().ok_or("no result")?;
    let errno = words
        .next()
        .filter(|w| w.starts_with('E'))
        .map(str::to_owned);
    let ret = if let Some(h) = ret.strip_prefix("0x") {
        i64::from_str_radix(h, 16).map_err(|_| format!("bad result {ret:?}"))?
    } else {
        ret.parse().map_err(|_| format!("bad result {ret:?}"))?
    };
    Ok(Syscall {
        name,
        args,
        ret,
        errno,
    })
}

/// Splits at `sep` outside brackets, parentheses and quotes; trims the pieces.
fn split_top(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut cur) = (0i32, false, String::new());
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            '[' | '(' if !quoted => depth += 1,
            ']' | ')' if !quoted => depth -= 1,
            _ => {}
        }
        let split = if sep == ' ' {
            c.is_whitespace()
        } else {
            c == sep
        };
        if split && depth == 0 && !quoted {
            if !cur.trim().is_empty() {
                out.push(cur.trim().to_owned());
            }
            cur.clear();
        } else {
            cur.push(c);
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_owned());
    }
    out
}

fn parse_addr(s: &str) -> Result<Addr, String> {
    let inner = s
        .strip_prefix("addr[")
        .and_then(|x| x.strip_suffix(']'))
        .ok_or_else(|| format!("bad address {s:?}"))?;
    if let Some(lit) = inner
        .strip_prefix("ep=inet_addr(\"")
        .and_then(|x| x.strip_suffix("\")"))
    {
        return lit
            .parse()
            .map(Addr::Literal)
            .map_err(|_| format!("bad literal address {lit:?}"));
    }
    let server = match inner.as_bytes().first() {
        Some(b's') => true,
        Some(b'c') => false,
        _ => return Err(format!("unknown address {inner:?}")),
    };
    let digits = inner.trim_start_matches(|c: char| c.is_ascii_alphabetic());
    let n = if digits.is_empty() {
        0
    } else {
        digits
            .parse()
            .map_err(|_| format!("bad address {inner:?}"))?
    };
    if !matches!(&inner[..inner.len() - digits.len()], "saddr" | "caddr") {
        return Err(format!("unknown address {inner:?}"));
    }
    Ok(Addr::Named { server, n })
}

fn parse_packet(dir: Dir, s: &str) -> Result<Packet, String> {
    let mut rest = s;
    let (mut src, mut dst) = (None, None);
    if rest.starts_with("addr[") {
        let end = rest.find(']').ok_or("unclosed addr[")? + 1;
        src = Some(parse_addr(&rest[..end])?);
        rest = rest[end..].trim_start();
    }
    if src.is_some() || rest.starts_with("> addr[") || rest.starts_with(">addr[") {
        rest = rest
            .strip_prefix('>')
            .ok_or("no '>' between addresses")?
            .trim();
        let end = rest.find(']').ok_or("unclosed addr[")? + 1;
        dst = Some(parse_addr(&rest[..end])?);
        rest = rest[end..].trim_start();
    }
    // Options: from the first '<' to the last '>'.
    let (head, opts) = match rest.find('<') {
        Some(i) => {
            let close = rest.rfind('>').ok_or("unclosed option list")?;
            (&rest[..i], parse_opts(&rest[i + 1..close])?)
        }
        None => (rest, Vec::new()),
    };
    let mut words = head.split_whitespace();
    let flags = words.next().ok_or("no flags")?;
    let (mut syn, mut fin, mut rst_flag, mut ack_flag) = (false, false, false, false);
    for c in flags.chars() {
        match c {
            'S' => syn = true,
            'F' => fin = true,
            'R' => rst_flag = true,
            '.' => ack_flag = true,
            'P' => {}
            _ => return Err(format!("unknown flag {c:?}")),
        }
    }
    let range = words.next().ok_or("no sequence range")?;
    let (se, len) = range
        .strip_suffix(')')
        .and_then(|r| r.split_once('('))
        .ok_or_else(|| format!("bad range {range:?}"))?;
    let (start, _end) = se
        .split_once(':')
        .ok_or_else(|| format!("bad range {range:?}"))?;
    let seq = start.parse().map_err(|_| format!("bad range {range:?}"))?;
    let len = len.parse().map_err(|_| format!("bad range {range:?}"))?;
    let (mut ack, mut win) = (None, None);
    while let Some(w) = words.next() {
        let v = words.next().ok_or_else(|| format!("{w} without a value"))?;
        match w {
            "ack" => ack = Some(v.parse().map_err(|_| format!("bad ack {v:?}"))?),
            "win" => win = Some(v.parse().map_err(|_| format!("bad win {v:?}"))?),
            _ => return Err(format!("unknown word {w:?}")),
        }
    }
    Ok(Packet {
        dir,
        src,
        dst,
        syn,
        fin,
        rst: rst_flag,
        ack_flag,
        seq,
        len,
        ack,
        win,
        opts,
    })
}

fn num<T: TryFrom<u64>>(s: &str) -> Result<T, String> {
    let v = if let Some(h) = s.strip_prefix("0x") {
        u64::from_str_radix(h, 16)
    } else {
        s.parse()
    }
    .map_err(|_| format!("bad number {s:?}"))?;
    T::try_from(v).map_err(|_| format!("number out of range {s:?}"))
}

/// `name=value` words of an option.
fn kv(word: &str) -> (&str, &str) {
    word.split_once('=').unwrap_or((word, ""))
}

fn parse_opts(s: &str) -> Result<Vec<Opt>, String> {
    split_top(s, ',').iter().map(|o| parse_opt(o)).collect()
}

fn parse_opt(s: &str) -> Result<Opt, String> {
    let w = split_top(s, ' ');
    let first = w.first().map(String::as_str).ok_or("empty option")?;
    let arg = |i: usize| -> Result<&str, String> {
        w.get(i)
            .map(String::as_str)
            .ok_or_else(|| format!("{first} lacks a value"))
    };
    Ok(match first {
        "nop" => Opt::Nop,
        "sackOK" => Opt::SackOk,
        "mss" => Opt::Mss(num(arg(1)?)?),
        "wscale" => Opt::Wscale(num(arg(1)?)?),
        "TS" => Opt::Ts {
            val: num(arg(2)?)?,
            ecr: num(arg(4)?)?,
        },
        _ => Opt::Mptcp(parse_mptcp(first, &w[1..])?),
    })
}

fn parse_keys(s: &str) -> Result<Vec<KeyRef>, String> {
    let inner = s
        .strip_prefix("key[")
        .and_then(|x| x.strip_suffix(']'))
        .ok_or_else(|| format!("bad keys {s:?}"))?;
    split_top(inner, ',')
        .iter()
        .map(|k| {
            let (name, v) = kv(k);
            let server = match name {
                "skey" => true,
                "ckey" => false,
                _ => return Err(format!("unknown key {name:?}")),
            };
            Ok(KeyRef {
                server,
                value: if v.is_empty() { None } else { Some(num(v)?) },
            })
        })
        .collect()
}

fn flag_bits(s: &str) -> Result<u8, String> {
    let inner = s
        .strip_prefix("flags[")
        .and_then(|x| x.strip_suffix(']'))
        .ok_or_else(|| format!("bad flags {s:?}"))?;
    split_top(inner, ',')
        .iter()
        .try_fold(0u8, |acc, f| match f.as_str() {
            "flag_a" => Ok(acc | 0x80),
            "flag_b" => Ok(acc | 0x40),
            "flag_c" => Ok(acc | 0x20),
            "flag_h" => Ok(acc | 0x01),
            _ => Err(format!("unknown MP_CAPABLE flag {f:?}")),
        })
}

#[expect(clippy::too_many_lines, reason = "one arm per option")]
fn parse_mptcp(name: &str, w: &[String]) -> Result<MpOpt, String> {
    let mut it = w.iter().map(String::as_str).peekable();
    let unknown = |x: &str| Err::<MpOpt, String>(format!("{name}: unknown word {x:?}"));
    Ok(match name {
        "mpcapable" => {
            let version = match it.next() {
                Some("v0") => 0,
                Some("v1") => 1,
                v => return Err(format!("mpcapable: bad version {v:?}")),
            };
            let (mut flags, mut keys, mut data_len) = (0, Vec::new(), None);
            while let Some(x) = it.next() {
                match x {
                    "flags" => flags = num(it.next().ok_or("flags without a value")?)?,
                    "nokey" => {}
                    "mpcdatalen" => {
                        data_len = Some(num(it.next().ok_or("mpcdatalen without a value")?)?);
                    }
                    x if x.starts_with("flags[") => flags = flag_bits(x)?,
                    x if x.starts_with("key[") => keys = parse_keys(x)?,
                    x => return unknown(x),
                }
            }
            MpOpt::Capable {
                version,
                flags,
                keys,
                data_len,
            }
        }
        "mp_join_syn" | "mp_join_syn_ack" | "mp_join_ack" => {
            let (mut backup, mut address_id, mut token) = (false, None, None);
            for x in it {
                match kv(x) {
                    ("backup", v) => backup = num::<u8>(v)? == 1,
                    ("address_id", v) => address_id = Some(num(v)?),
                    ("token", "sha256_32(skey)") => token = None,
                    ("token", v) => token = Some(num(v)?),
                    ("sender_hmac", "auto") => {}
                    _ => return unknown(x),
                }
            }
            match name {
                "mp_join_syn" => MpOpt::JoinSyn {
                    backup,
                    address_id,
                    token,
                },
                "mp_join_syn_ack" => MpOpt::JoinSynAck { backup, address_id },
                _ => MpOpt::JoinAck,
            }
        }
        "dss" => {
            let (mut ack, mut dsn, mut ssn, mut dll, mut fin) = (None, None, None, None, false);
            for x in it {
                match kv(x) {
                    ("dack4" | "dack8", v) => {
                        ack = Some(Field {
                            value: num(v)?,
                            long: x.starts_with("dack8"),
                        });
                    }
                    ("dsn4" | "dsn8", v) => {
                        dsn = Some(Field {
                            value: num(v)?,
                            long: x.starts_with("dsn8"),
                        });
                    }
                    ("ssn", v) => ssn = Some(num(v)?),
                    ("dll", v) => dll = Some(num(v)?),
                    ("nocs", _) => {}
                    ("fin", _) => fin = true,
                    _ => return unknown(x),
                }
            }
            MpOpt::Dss {
                ack,
                dsn,
                ssn,
                dll,
                fin,
            }
        }
        "add_address" => {
            let (mut address_id, mut addr, mut port, mut echo) = (None, None, None, false);
            for x in it {
                match kv(x) {
                    ("address_id", v) => address_id = Some(num(v)?),
                    ("port", v) => port = Some(num(v)?),
                    ("hmac", "auto") => {}
                    ("addr_echo", _) => echo = true,
                    _ if x.starts_with("addr[") => addr = Some(parse_addr(x)?),
                    _ => return unknown(x),
                }
            }
            MpOpt::AddAddr {
                address_id,
                addr: addr.ok_or("add_address without an address")?,
                port,
                echo,
            }
        }
        "remove_address" => {
            let x = it.next().ok_or("remove_address without ids")?;
            let list = kv(x)
                .1
                .strip_prefix('[')
                .and_then(|l| l.strip_suffix(']'))
                .ok_or_else(|| format!("bad id list {x:?}"))?;
            MpOpt::RemoveAddr {
                ids: split_top(list, ',')
                    .iter()
                    .map(|i| num(i))
                    .collect::<Result<_, _>>()?,
            }
        }
        "mp_prio" => {
            let (mut backup, mut address_id) = (false, None);
            for x in it {
                match kv(x) {
                    ("backup", v) => backup = num::<u8>(v)? == 1,
                    ("address_id", v) => address_id = Some(num(v)?),
                    _ => return unknown(x),
                }
            }
            MpOpt::Prio { backup, address_id }
        }
        "mp_fastclose" => {
            let key = match it.next() {
                None => None,
                Some(x) => match kv(x) {
                    ("ckey" | "skey", v) => Some(num(v)?),
                    _ => return unknown(x),
                },
            };
            MpOpt::Fastclose { key }
        }
        "mp_reset" => MpOpt::Reset {
            reason: num(it.next().ok_or("mp_reset without a reason")?)?,
        },
        "mp_fail" => match it.next().map(kv) {
            Some(("dsn", v)) => MpOpt::Fail { dsn: num(v)? },
            _ => return Err("mp_fail without dsn=".to_owned()),
        },
        _ => return Err(format!("unknown option {name:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_join_line() {
        let l = parse(
            "+0.1    <  addr[caddr1] > addr[saddr0]  S   0:0(0)  win 65535  <mss 1460, sackOK, \
             TS val 448955294 ecr 0, nop, wscale 8, mp_join_syn backup=1 address_id=1 \
             token=sha256_32(skey)>",
        )
        .unwrap();
        let Event::Packet(p) = &l[0].event else {
            panic!("not a packet")
        };
        assert_eq!(
            p.src,
            Some(Addr::Named {
                server: false,
                n: 1
            })
        );
        assert_eq!(p.dst, Some(Addr::Named { server: true, n: 0 }));
        assert!(p.syn && !p.ack_flag);
        assert_eq!(p.win, Some(65535));
        assert_eq!(
            p.opts.last(),
            Some(&Opt::Mptcp(MpOpt::JoinSyn {
                backup: true,
                address_id: Some(1),
                token: None
            }))
        );
    }

    #[test]
    fn reads_keys_flags_and_dss() {
        let l = parse(
            "+0 < P. 1:3(2) ack 1 win 256 <mpcapable v1 flags[flag_b, flag_h] key[ckey=2, skey] \
             mpcdatalen 2, nop, nop, dss dack4=1 dsn8=3 ssn=0 dll=1 nocs fin>",
        )
        .unwrap();
        let Event::Packet(p) = &l[0].event else {
            panic!("not a packet")
        };
        assert_eq!(
            p.opts[0],
            Opt::Mptcp(MpOpt::Capable {
                version: 1,
                flags: 0x41,
                keys: vec![
                    KeyRef {
                        server: false,
                        value: Some(2)
                    },
                    KeyRef {
                        server: true,
                        value: None
                    }
                ],
                data_len: Some(2),
            })
        );
        assert_eq!(
            p.opts[3],
            Opt::Mptcp(MpOpt::Dss {
                ack: Some(Field {
                    value: 1,
                    long: false
                }),
                dsn: Some(Field {
                    value: 3,
                    long: true
                }),
                ssn: Some(0),
                dll: Some(1),
                fin: true,
            })
        );
    }

    #[test]
    fn bad_lines_are_errors_with_their_number() {
        assert!(
            parse("+0 < S 0:0(0) <mystery 1>")
                .unwrap_err()
                .starts_with("line 1")
        );
        assert!(
            parse("\n+x write(4, ..., 1) = 1")
                .unwrap_err()
                .starts_with("line 2")
        );
        assert!(parse("+0 < Q 0:0(0)").is_err());
    }

    #[test]
    fn times_and_syscalls() {
        let l =
            parse("+0.2~+0.3 read (3, ..., 100) = 100\n0.0 connect(3, ..., ...) = -1 EINPROGRESS")
                .unwrap();
        assert_eq!(
            l[0].time,
            Time {
                relative: true,
                start: 0.2,
                end: Some(0.3)
            }
        );
        let Event::Syscall(s) = &l[1].event else {
            panic!("not a syscall")
        };
        assert_eq!((s.name.as_str(), s.ret), ("connect", -1));
    }
}
