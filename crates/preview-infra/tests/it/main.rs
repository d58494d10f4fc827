//! Integration tests of the infrastructure code: the HCL of `terraform/` parsed and checked
//! structurally, and the real `terraform output -json` format read by [`preview_infra`].

mod hcl_structure;
mod terraform_outputs;

use std::path::PathBuf;

/// The repository's `terraform/` directory.
pub fn terraform_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../terraform")
}
