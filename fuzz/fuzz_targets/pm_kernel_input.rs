#![no_main]
//! Fuzz target: what mpbond's path manager reads from the kernel and the network (`mptcp_pm`
//! events, ICMP echo replies).
libfuzzer_sys::fuzz_target!(|data: &[u8]| mpbond::pm::fuzz_kernel_input(data));
