//! The infrastructure commands of `preview`: `init`, `setup`, `sync`, `status`, `destroy` and
//! `access`, and what they share: the operator's home directory, its config file, the secret
//! store, the setup state, the server reached over SSH and GitHub's webhooks API.

pub mod access;
pub mod config;
pub mod dashboard;
pub mod destroy;
pub mod home;
pub mod infra;
pub mod init;
pub mod preview_secrets;
pub mod progress;
pub mod remote;
pub mod secrets;
pub mod setup;
pub mod state;
pub mod status;
pub mod sync;
pub mod tools;
pub mod webhooks;

pub use access::AccessArgs;
pub use dashboard::DashboardArgs;
pub use destroy::DestroyArgs;
pub use init::InitArgs;
pub use preview_secrets::SecretsArgs;
pub use setup::SetupArgs;
pub use status::StatusArgs;
pub use sync::SyncArgs;
