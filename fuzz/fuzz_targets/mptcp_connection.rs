#![no_main]
//! Fuzz target: `mptcp_proto::fuzzing::mptcp_connection` (an MPTCP server connection fed
//! arbitrary segments with MPTCP options on several subflows, timers and application calls:
//! no panic, no loop, bounded memory, and every byte read is the client's at that offset).
libfuzzer_sys::fuzz_target!(|data: &[u8]| mptcp_proto::fuzzing::mptcp_connection(data));
