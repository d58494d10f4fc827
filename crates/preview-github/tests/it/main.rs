//! Integration tests of preview-github: webhook verification and parsing against real payloads,
//! and the REST client against the in-process fake GitHub.

mod client;
mod webhook;

use std::path::PathBuf;

/// A vendored payload from tests/fixtures (see its README for the source and license).
pub fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
