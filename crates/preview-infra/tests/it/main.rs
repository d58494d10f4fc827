//! Integration tests of the infrastructure code: the HCL of `terraform/` parsed and checked
//! structurally, the real `terraform output -json` format read by [`preview_infra`], and the
//! Ansible role's orchestrator env file loaded by the orchestrator's own settings parser.

mod hcl_structure;
mod orchestrator_env;
mod terraform_outputs;

use std::path::PathBuf;

/// The repository's `terraform/` directory.
pub fn terraform_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../terraform")
}
