//! Integration tests of the `preview` binary's infrastructure commands, with fake `terraform`,
//! `ansible-playbook`, `ssh` and `rsync` on PATH and a fake GitHub API; `init`'s prompts on a
//! pseudo-terminal.

mod access;
mod dashboard;
mod errors;
mod flow;
mod harness;
mod prompts;
mod secrets;
