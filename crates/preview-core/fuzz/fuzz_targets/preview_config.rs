//! The preview-config.yml parser on arbitrary input: it must return Ok or an error, never panic,
//! hang or exhaust memory (alias bombs are refused by the parser budget).
#![no_main]

use libfuzzer_sys::fuzz_target;
use preview_core::config::PreviewConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(err) = PreviewConfig::parse(text, "preview-config.yml") {
            // Every error names the file.
            assert!(err.to_string().starts_with("preview-config.yml"), "{err}");
        }
    }
});
