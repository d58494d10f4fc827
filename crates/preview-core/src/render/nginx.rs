//! The nginx location block that routes `/{slug}/pr-{N}/` to the app's host port.

use serde::Serialize;

use super::{RenderInput, render_template};
use crate::Result;

#[derive(Serialize)]
struct Context<'a> {
    repo: &'a str,
    pr: u64,
    sha: &'a str,
    deployment_id: &'a str,
    slug: &'a str,
    prefix: String,
    host_port: u16,
}

/// Renders the location block. It declares nothing outside its `location`s, so any number of
/// them can be included in one server block.
pub fn render_nginx(input: &RenderInput) -> Result<String> {
    input.validate()?;
    render_template(
        "nginx-location.conf.j2",
        Context {
            repo: &input.repo,
            pr: input.pr,
            sha: &input.sha,
            deployment_id: &input.deployment_id,
            slug: &input.slug,
            prefix: input.path_prefix(),
            host_port: input.host_port,
        },
    )
}
