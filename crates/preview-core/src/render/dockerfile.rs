//! The generated Dockerfile: one template per language, rendered from the plan alone, so the same
//! commit always gives the same file (and the same layer cache).

use serde::Serialize;

use super::{APP_UID, render_template};
use crate::Result;
use crate::images;
use crate::model::{DockerfileSource, Framework, Plan, Recipe};

#[derive(Serialize)]
struct Context<'a> {
    plan: &'a Plan,
    recipe: &'a Recipe,
    framework: Option<&'static str>,
    base_image: &'a str,
    runtime_image: &'static str,
    uid: u32,
    start_argv: &'a [String],
    build_commands: &'a [String],
    /// For Rust: the `cargo build` flags.
    cargo_flags: String,
    /// For Node: the optional parts of its recipe, always defined for the template.
    runtime_setup: Option<&'a str>,
    keep_dev_dependencies: bool,
    static_root: Option<&'a str>,
    /// For Node static sites: the server's source (base64, which needs no escaping in the
    /// Dockerfile's JSON and which hadolint parses) and where the image keeps it.
    static_server: String,
    static_server_path: &'static str,
}

/// The static server of static front ends, written into their image.
pub const STATIC_SERVER: &str = include_str!("../../templates/static-server.mjs");
/// Where the image keeps the static server; outside /app, so it never meets the site's files.
pub const STATIC_SERVER_PATH: &str = "/usr/local/lib/preview-static-server.mjs";

/// Renders the Dockerfile, or `None` when the plan uses the repo's own.
pub fn render_dockerfile(plan: &Plan) -> Result<Option<String>> {
    if plan.dockerfile == DockerfileSource::Repo {
        return Ok(None);
    }
    let (Some(recipe), Some(base_image)) = (&plan.recipe, &plan.base_image) else {
        return Ok(None);
    };
    let template = match recipe {
        Recipe::Node(_) => "Dockerfile.node.j2",
        Recipe::Python(_) => "Dockerfile.python.j2",
        Recipe::Go(_) => "Dockerfile.go.j2",
        Recipe::Php(_) => "Dockerfile.php.j2",
        Recipe::Rust(_) => "Dockerfile.rust.j2",
    };
    let cargo_flags = match recipe {
        Recipe::Rust(r) => {
            let mut flags = vec!["--release".to_owned()];
            if r.locked {
                flags.push("--locked".to_owned());
            }
            if let Some(p) = &r.package {
                flags.push(format!("-p {p}"));
            }
            flags.push(format!("--bin {}", r.binary));
            flags.join(" ")
        }
        _ => String::new(),
    };
    let node = match recipe {
        Recipe::Node(r) => Some(r),
        _ => None,
    };
    let ctx = Context {
        plan,
        recipe,
        framework: plan.framework.map(Framework::as_str),
        base_image,
        runtime_image: images::image_for("runtime"),
        uid: APP_UID,
        start_argv: &plan.start_argv,
        build_commands: &plan.build_commands,
        cargo_flags,
        runtime_setup: node.and_then(|r| r.runtime_setup.as_deref()),
        keep_dev_dependencies: node.is_some_and(|r| r.keep_dev_dependencies),
        static_root: node.and_then(|r| r.static_root.as_deref()),
        static_server: super::compose::base64(STATIC_SERVER.as_bytes()),
        static_server_path: STATIC_SERVER_PATH,
    };
    render_template(template, ctx).map(Some)
}
