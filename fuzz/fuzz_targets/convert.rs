#![no_main]
//! Fuzz target: a Convert message (RFC 8803) as the converter reads a client's first bytes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mpbond::convert::fuzz_message(data));
