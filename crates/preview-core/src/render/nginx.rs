//! The nginx config of one preview: a location block that routes `/{slug}/pr-{N}/` to the app's
//! host port, or, with hostnames, a server block for the preview's own host.

use serde::Serialize;

use super::{HostRoute, RenderInput, render_template};
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
    upstream: String,
    hostname: Option<&'a str>,
    listen: &'a [String],
    tls_listen: &'a [String],
    certificate: Option<&'a str>,
    certificate_key: Option<&'a str>,
    access_include: Option<&'a str>,
    activity_log: Option<&'a str>,
    flush_secs: u64,
    wake_addr: Option<String>,
}

/// Renders the location block (it declares nothing outside its `location`s, so any number of
/// them can be included in one server block), or the server block of the preview's hostname,
/// followed by the server block of its second web service's hostname when it has one
/// ([`RenderInput::service_route`]): the same access control, headers, certificate and sleep
/// hooks, so one file (and one removal) routes both.
pub fn render_nginx(input: &RenderInput) -> Result<String> {
    input.validate()?;
    let template = match input.host {
        Some(_) => "nginx-server.conf.j2",
        None => "nginx-location.conf.j2",
    };
    let mut conf = render_template(
        template,
        context(input, input.host.as_ref(), input.host_port),
    )?;
    if let Some(service) = &input.service_route {
        conf.push('\n');
        conf.push_str(&render_template(
            "nginx-server.conf.j2",
            context(input, Some(&service.route), service.host_port),
        )?);
    }
    Ok(conf)
}

/// The template's context for the block that serves `host` (or the path prefix) from
/// `host_port`.
fn context<'a>(input: &'a RenderInput, host: Option<&'a HostRoute>, host_port: u16) -> Context<'a> {
    let tls = host.and_then(|h| h.tls.as_ref());
    Context {
        repo: &input.repo,
        pr: input.pr,
        sha: &input.sha,
        deployment_id: &input.deployment_id,
        slug: &input.slug,
        prefix: input.path_prefix(),
        host_port,
        upstream: match input.upstream {
            std::net::IpAddr::V4(ip) => ip.to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        },
        hostname: host.map(|h| h.hostname.as_str()),
        listen: host.map_or(&[], |h| h.listen.as_slice()),
        tls_listen: tls.map_or(&[], |t| t.listen.as_slice()),
        certificate: tls.map(|t| t.certificate.as_str()),
        certificate_key: tls.map(|t| t.key.as_str()),
        access_include: input.access_include.as_deref(),
        activity_log: input.sleep.as_ref().map(|s| s.activity_log.as_str()),
        flush_secs: input.sleep.as_ref().map_or(0, |s| s.flush_secs),
        wake_addr: input.sleep.as_ref().map(|s| s.wake_addr.to_string()),
    }
}
