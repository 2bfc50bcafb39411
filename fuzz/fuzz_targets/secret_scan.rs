#![no_main]
//! See `keygate::fuzzing::secret_scan` for what must hold.
libfuzzer_sys::fuzz_target!(|data: &[u8]| keygate::fuzzing::secret_scan(data));
