//! Runs every fuzz target's body over its seed corpus (`fuzz/corpus/<target>/`) and over
//! deterministic mutations of each seed (every truncation, and flips of every byte), so the
//! targets are exercised on a stable toolchain in every test run.

#![allow(clippy::unwrap_used, reason = "a test fails loudly")]

use std::path::PathBuf;

use mptcp_proto::fuzzing;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    seeds.sort();
    assert!(
        seeds.len() >= 4,
        "{}: only {} seeds",
        dir.display(),
        seeds.len()
    );
    seeds
}

/// The seed, each of its truncations, and each byte replaced by 0x00, 0xff and itself ^ 0x80.
fn mutations(seed: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    let prefixes = (0..=seed.len()).map(|n| seed[..n].to_vec());
    let flips = (0..seed.len()).flat_map(move |i| {
        [0x00, 0xff, seed[i] ^ 0x80].into_iter().map(move |b| {
            let mut m = seed.to_vec();
            m[i] = b;
            m
        })
    });
    prefixes.chain(flips)
}

fn run(target: &str, body: fn(&[u8])) {
    let mut n = 0;
    for seed in corpus(target) {
        for m in mutations(&seed) {
            body(&m);
            n += 1;
        }
    }
    eprintln!("{target}: {n} inputs");
    assert!(n > 100, "{target}: {n} inputs");
}

#[test]
fn mptcp_option_corpus() {
    run("mptcp_option", fuzzing::mptcp_option);
}

#[test]
fn tcp_options_corpus() {
    run("tcp_options", fuzzing::tcp_options);
}

#[test]
fn tcp_segment_corpus() {
    run("tcp_segment", fuzzing::tcp_segment);
}

#[test]
fn ipv4_corpus() {
    run("ipv4", fuzzing::ipv4);
}

#[test]
fn ipv6_corpus() {
    run("ipv6", fuzzing::ipv6);
}

#[test]
fn tcp_connection_corpus() {
    run("tcp_connection", fuzzing::tcp_connection);
}

#[test]
fn mptcp_connection_corpus() {
    run("mptcp_connection", fuzzing::mptcp_connection);
}
