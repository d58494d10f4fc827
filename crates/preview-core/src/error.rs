/// Errors of the core logic. Each variant names the thing (file, key, field) at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value failed validation; `field` names it.
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    /// Every port of a pool is allocated, bound on the host or published by a container.
    #[error("no free port in the {pool} port pool {range}")]
    PortsExhausted { pool: &'static str, range: String },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
