//! Port pools (owned by the intake work; see issue 3).
