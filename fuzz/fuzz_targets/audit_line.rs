#![no_main]
//! See `keygate::fuzzing::audit_line` for what must hold.
libfuzzer_sys::fuzz_target!(|data: &[u8]| keygate::fuzzing::audit_line(data));
