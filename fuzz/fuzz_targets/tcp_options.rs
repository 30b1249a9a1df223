#![no_main]
//! Fuzz target: `mptcp_proto::fuzzing::tcp_options` (no panic; what parses re-emits identically).
libfuzzer_sys::fuzz_target!(|data: &[u8]| mptcp_proto::fuzzing::tcp_options(data));
