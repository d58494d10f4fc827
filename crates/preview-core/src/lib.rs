//! Pure logic of preview-deployer: ids, port pools, the base-image table, the preview-config
//! schema, framework detection and rendering of the generated files. No I/O beyond reading a
//! checkout.

pub mod access;
pub mod checkout;
pub mod config;
pub mod detect;
pub mod dev_server;
pub mod dotenv;
mod error;
pub mod id;
pub mod images;
pub mod model;
pub mod plan;
pub mod ports;
pub mod render;
pub mod repo_secrets;
pub mod routing;
pub mod sanitize;
pub mod seed;
#[cfg(test)]
mod test_support;
pub mod versions;

pub use error::{Error, Result};
pub use model::Plan;
pub use plan::{Planned, plan};
