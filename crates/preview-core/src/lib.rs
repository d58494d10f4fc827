//! Pure logic of preview-deployer: ids, port pools, the base-image table, the preview-config
//! schema, framework detection and rendering of the generated files. No I/O beyond reading a
//! checkout.

mod error;
pub mod id;
pub mod images;
pub mod ports;

pub use error::{Error, Result};
