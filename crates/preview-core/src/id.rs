//! Deployment ids and URL slugs (owned by the intake work; see issue 3).
