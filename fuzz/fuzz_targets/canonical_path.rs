#![no_main]
//! See `keygate::fuzzing::canonical_path` for what must hold.
libfuzzer_sys::fuzz_target!(|data: &[u8]| keygate::fuzzing::canonical_path(data));
