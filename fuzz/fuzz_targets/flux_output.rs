#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pitch::__fuzz::flux_output(data));
