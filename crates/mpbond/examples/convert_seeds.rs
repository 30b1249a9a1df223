//! Writes the seed corpus of the `convert` fuzz target: `cargo run -p mpbond --example
//! convert_seeds -- fuzz/corpus` fills `fuzz/corpus/convert/` with one file per kind of message
//! the gateway and the converter send.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a seed writer stops on the first problem"
)]

use std::path::PathBuf;

use mpbond::convert::auth::{Auth, Key, Name};
use mpbond::convert::message::{Connect, ErrorCode, Message};

fn main() {
    let dir =
        PathBuf::from(std::env::args().nth(1).expect("usage: convert_seeds DIR")).join("convert");
    std::fs::create_dir_all(&dir).unwrap();
    let connect4 = Connect::new("203.0.113.2:80".parse().unwrap());
    let connect6 = Connect {
        remote: "[2001:db8:113::2]:443".parse().unwrap(),
        tcp_options: vec![2, 4, 5, 0xb4, 1, 3, 3, 7],
    };
    let auth = Auth::sign(
        &Key::from_bytes([0x11; 32]),
        &Name::new("home-gw").unwrap(),
        1_764_000_000,
        [0x22; 16],
        &connect4,
    );
    let seeds = [
        (
            "connect4",
            Message {
                connect: Some(connect4.clone()),
                ..Message::default()
            },
        ),
        (
            "connect6_options_info",
            Message {
                info: true,
                connect: Some(connect6),
                ..Message::default()
            },
        ),
        (
            "connect_auth",
            Message {
                connect: Some(connect4),
                auth: Some(auth),
                ..Message::default()
            },
        ),
        (
            "reply_extended",
            Message {
                extended_tcp_header: Some(vec![2, 4, 5, 0xb4, 4, 2, 3, 3, 7]),
                supported_tcp_extensions: Some(vec![2, 3, 4, 8]),
                ..Message::default()
            },
        ),
        (
            "cookie",
            Message {
                cookie: Some(vec![1, 2, 3, 4, 5, 6, 7, 8]),
                ..Message::default()
            },
        ),
        (
            "error_not_authorized",
            Message::error(ErrorCode::NotAuthorized, 0),
        ),
        (
            "error_unreachable",
            Message::error(ErrorCode::DestinationUnreachable, 1),
        ),
        ("empty", Message::default()),
    ];
    for (name, msg) in seeds {
        let mut bytes = msg.emit().unwrap();
        // Application bytes follow the message on the wire.
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
