//! nginx has one config: tests and reloads of previews' confs (the deploy jobs) and of access
//! files (the access module) must not interleave, in this process.

/// Held while a change to nginx's config is tested, installed and reloaded.
pub(crate) static NGINX_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
