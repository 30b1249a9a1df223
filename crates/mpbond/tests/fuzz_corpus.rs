//! Runs the `capture` fuzz target's body (the whole decoder) over its seed corpus
//! (`fuzz/corpus/capture/`: small captures of the lab's own traffic) and over deterministic
//! mutations of each: truncations, and byte flips spread over the file.

use std::path::PathBuf;

#[test]
fn capture_corpus() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/capture");
    let mut seeds = 0;
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let seed = std::fs::read(entry.unwrap().path()).unwrap();
        seeds += 1;
        mpbond::decode::fuzz_capture(&seed);
        for n in (0..seed.len()).step_by(61) {
            mpbond::decode::fuzz_capture(&seed[..n]);
            inputs += 1;
        }
        for i in (0..seed.len()).step_by(7) {
            for b in [0x00, 0xff, seed[i] ^ 0x80] {
                let mut m = seed.clone();
                m[i] = b;
                mpbond::decode::fuzz_capture(&m);
                inputs += 1;
            }
        }
    }
    assert!(
        seeds >= 4 && inputs > 1000,
        "{seeds} seeds, {inputs} inputs"
    );
}

/// Runs the `convert` fuzz target's body over its seeds (`fuzz/corpus/convert/`, written by
/// `cargo run -p mpbond --example convert_seeds -- fuzz/corpus`) and over every truncation and
/// every single-byte change of each.
#[test]
fn convert_corpus() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/convert");
    let mut seeds = 0;
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let seed = std::fs::read(entry.unwrap().path()).unwrap();
        seeds += 1;
        for n in 0..=seed.len() {
            mpbond::convert::fuzz_message(&seed[..n]);
            inputs += 1;
        }
        for i in 0..seed.len() {
            for b in [0x00, 0x01, 0xff, seed[i] ^ 0x80, seed[i].wrapping_add(1)] {
                let mut m = seed.clone();
                m[i] = b;
                mpbond::convert::fuzz_message(&m);
                inputs += 1;
            }
        }
    }
    assert!(
        seeds >= 8 && inputs > 1000,
        "{seeds} seeds, {inputs} inputs"
    );
}

/// Runs the `pm_kernel_input` fuzz target's body over deterministic inputs: every reader, every
/// length up to 96 bytes, patterns of attribute headers and of ICMP replies.
#[test]
fn pm_kernel_input_samples() {
    let mut inputs = 0;
    for sel in 0..=255u8 {
        for len in 0..96u8 {
            let bytes: Vec<u8> = (0..len)
                .map(|i| i.wrapping_mul(sel).wrapping_add(len))
                .collect();
            let mut data = vec![sel];
            data.extend_from_slice(&bytes);
            mpbond::pm::fuzz_kernel_input(&data);
            inputs += 1;
        }
    }
    assert_eq!(inputs, 256 * 96);
}
