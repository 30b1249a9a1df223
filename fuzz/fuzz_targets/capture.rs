#![no_main]
//! Fuzz target: `mpbond decode` over arbitrary bytes taken as a pcap/pcapng file.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mpbond::decode::fuzz_capture(data));
