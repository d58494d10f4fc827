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
}

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
    };
    render_template(template, ctx).map(Some)
}
