#![no_main]
//! Fuzz target: `mptcp_proto::fuzzing::tcp_connection` (a server connection fed arbitrary
//! segments, timers and application calls: no panic, no loop, memory within its buffers).
libfuzzer_sys::fuzz_target!(|data: &[u8]| mptcp_proto::fuzzing::tcp_connection(data));
