//! The one table of base images, shared with scripts/testbed.sh (see base-images.tsv).

const TABLE: &str = include_str!("../base-images.tsv");

/// One row of the base-image table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseImage {
    /// What the image is for: `python`, `node`, `go`, `php`, `rust`, `runtime`, `postgres`, ...
    pub role: &'static str,
    /// The pinned image reference that generated files use.
    pub image: &'static str,
}

/// Every row of the table, in file order.
pub fn all() -> impl Iterator<Item = BaseImage> {
    TABLE.lines().filter_map(|line| {
        if line.trim().is_empty() || line.starts_with('#') {
            return None;
        }
        let mut cols = line.split('\t');
        Some(BaseImage {
            role: cols.next()?,
            image: cols.next()?,
        })
    })
}

/// The image for `role`; panics on an unknown role, which is a programming error.
pub fn image_for(role: &str) -> &'static str {
    all()
        .find(|row| row.role == role)
        .map(|row| row.image)
        .unwrap_or_else(|| panic!("no base image for role {role:?} in base-images.tsv"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_has_one_pinned_image() {
        let rows: Vec<_> = all().collect();
        for role in [
            "python", "node", "go", "php", "rust", "runtime", "postgres", "mysql", "mongodb",
            "redis",
        ] {
            assert_eq!(rows.iter().filter(|r| r.role == role).count(), 1, "{role}");
        }
        for row in rows {
            let (_, tag) = row.image.split_once(':').expect("a tag");
            assert_ne!(tag, "latest", "{}", row.image);
        }
        assert_eq!(image_for("python"), "python:3.12-slim-bookworm");
    }
}
