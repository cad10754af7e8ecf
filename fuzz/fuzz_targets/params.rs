#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pitch::__fuzz::params(data));
