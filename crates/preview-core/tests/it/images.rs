//! The images a rendered fixture needs, found in its own files and in the render.

use preview_core::checkout::Checkout;

use crate::harness::{fixture, plan, snapshot_input};

/// Each image `name` needs, with who wants it, as the PR comment would list them.
fn needed(name: &str) -> Vec<String> {
    let planned = plan(name);
    let input = snapshot_input(name);
    let rendered = preview_core::render::render(&planned, &input).unwrap();
    let needs = rendered.needed_images(&input, &Checkout::open(&fixture(name)).unwrap());
    assert!(needs.unchecked.is_empty(), "{name}: {:?}", needs.unchecked);
    needs
        .images
        .iter()
        .map(|i| format!("{} ({})", i.reference, i.wanted_by_text()))
        .collect()
}

#[test]
fn a_compose_stack_needs_its_services_images_and_its_dockerfiles_base_images() {
    assert_eq!(
        needed("compose-missing-images"),
        [
            "adminer (service `adminer`)",
            "postgres:18 (service `db`)",
            "oven/bun:1 (`Dockerfile:2`)",
            "python:3.12-slim-bookworm (`Dockerfile:6`)",
        ]
    );
    // Services built from the repo's Dockerfile need its base image once; those two images
    // are the local stand-ins of the test bed.
    assert_eq!(
        needed("compose-project"),
        [
            "redis:7-bookworm (service `cache`)",
            "postgres:16-bookworm (service `db`)",
            "python:3.12-slim-bookworm (`Dockerfile:1`)",
        ]
    );
}

/// The full-stack template's shape: the proxy is left out of the preview, so its image is not
/// needed; `backend:latest` is the name of what two services build, not an image to pull.
#[test]
fn images_of_services_left_out_or_built_are_not_needed() {
    assert_eq!(
        needed("upstream-shape-fullstack-fastapi"),
        [
            "adminer (service `adminer`)",
            "python:3.12-slim-bookworm (`backend/Dockerfile:1`)",
            "postgres:18 (service `db`)",
        ]
    );
}

#[test]
fn a_generated_preview_needs_its_base_image_and_database() {
    let needs = needed("node-postgres");
    assert_eq!(needs.len(), 2, "{needs:?}");
    assert!(needs[0].starts_with("node:"), "{needs:?}");
    assert!(
        needs[0].contains("(the generated Dockerfile, line "),
        "{needs:?}"
    );
    assert_eq!(needs[1], "postgres:16-bookworm (service `db`)");
}
