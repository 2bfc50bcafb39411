#![no_main]
//! See `keygate::fuzzing::aws_request` for what must hold.
libfuzzer_sys::fuzz_target!(|data: &[u8]| keygate::fuzzing::aws_request(data));
