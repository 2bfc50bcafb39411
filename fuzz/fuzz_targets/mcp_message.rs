#![no_main]
//! See `keygate::fuzzing::mcp_message` for what must hold.
libfuzzer_sys::fuzz_target!(|data: &[u8]| keygate::fuzzing::mcp_message(data));
