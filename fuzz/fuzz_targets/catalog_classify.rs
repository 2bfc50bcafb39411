#![no_main]
//! See `keygate::fuzzing::catalog_classify` for what must hold.
libfuzzer_sys::fuzz_target!(|data: &[u8]| keygate::fuzzing::catalog_classify(data));
