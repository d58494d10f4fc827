//! Integration tests of the `preview` binary's infrastructure commands, with fake `terraform`,
//! `ansible-playbook`, `ssh` and `rsync` on PATH and a fake GitHub API.

mod errors;
mod flow;
mod harness;
