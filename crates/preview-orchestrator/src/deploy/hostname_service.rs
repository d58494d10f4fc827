//! A repository's second web service (a front end beside its API), labelled
//! `preview.hostname` in its compose file ([`preview_core::sanitize::HostnameService`]). With
//! hostnames on, it is published on 127.0.0.1 at a port of the preview's (the allocation's
//! `service`), and the preview's nginx conf serves it at its own host beside the app's;
//! teardown removes both with that one conf, and gives the port back with the others. It is
//! slotted with the app ([`preview_core::render::AppSlot`]): an update starts the new commit's
//! beside the serving one, at a second port (`nextService`), readiness waits for the new app and
//! then for it, and the one nginx switch moves both hosts; the two ports switch together and
//! the old slot's app and service are retired together. A deploy where it never answers fails
//! (an update's new slot is then removed, the serving one untouched). A private one (hostnames
//! off) has no port and no slot.

use std::collections::BTreeSet;

use preview_core::id::PreviewId;
use preview_core::model::ReadyWhen;
use preview_core::plan::Planned;
use preview_core::render::ServiceRoute;
use preview_core::routing::Routing;
use preview_core::sanitize::HostnameService;
use preview_engine::{ComposeProject, Engine, HealthPolicy};

use crate::feedback::ServiceUrl;

/// Routes the plan's second web service by `routing`: at its own host, or (under paths) it
/// stays private and the plan's warnings say why.
pub(super) fn route(planned: &mut Planned, routing: &Routing, id: &PreviewId) {
    planned.route_hostname_service(|label| {
        routing
            .service_host_route(id, label)
            .map(|route| route.hostname)
    });
}

/// The port the rendered files publish the service at, when the plan routes one: on a first
/// deploy the one it holds (or a new one), on an update (`updating`) the new slot's second port,
/// which becomes its port at the switch. When the plan routes none, its port is given back: at
/// once on a first deploy, at the switch on an update (the serving commit's still serves there
/// until then, and stays if the update fails).
pub(super) async fn hold_port(
    store: &crate::Store,
    id: &PreviewId,
    planned: &Planned,
    published: &BTreeSet<u16>,
    updating: bool,
) -> crate::Result<Option<u16>> {
    match (routed(planned), updating) {
        (Some(_), true) => store
            .allocate_next_service_port(id, published)
            .await
            .map(Some),
        (Some(_), false) => store.allocate_service_port(id, published).await.map(Some),
        (None, true) => Ok(None),
        (None, false) => store.release_service_port(id).await.map(|()| None),
    }
}

/// Where the rendered files publish and serve the service, when the plan routes one.
pub(super) fn service_route(
    routing: &Routing,
    id: &PreviewId,
    planned: &Planned,
    port: Option<u16>,
) -> Option<ServiceRoute> {
    let label = routed(planned)?;
    Some(ServiceRoute {
        host_port: port?,
        route: routing.service_host_route(id, label)?,
    })
}

/// Waits until the routed service answers at its `port` (any HTTP answer below 500, as the
/// app's default), failing fast when its container stops: the comment lists its URL, so it must
/// serve once the preview is live. `service` is its compose service in the slot it starts in
/// ([`preview_core::render::ComposeServices::routed`]). Nothing to wait for when the plan
/// routes none.
pub(super) async fn wait_ready(
    engine: &dyn Engine,
    project: &ComposeProject,
    planned: &Planned,
    service: Option<&str>,
    port: Option<u16>,
    policy: HealthPolicy,
) -> Result<(), String> {
    let (Some(second), Some(service), Some(port)) = (routed_service(planned), service, port) else {
        return Ok(());
    };
    engine
        .wait_ready(
            project,
            Some(service),
            port,
            "/",
            ReadyWhen::AnyAnswer,
            policy,
        )
        .await
        .map(|_| ())
        .map_err(|e| format!("service `{}` (its own hostname): {e}", second.service))
}

/// The service's public URL, for the PR comment beside the app's.
pub(super) fn urls(routing: &Routing, id: &PreviewId, planned: &Planned) -> Vec<ServiceUrl> {
    let Some(second) = planned
        .repo_compose
        .as_ref()
        .and_then(|c| c.hostname_service.as_ref())
    else {
        return Vec::new();
    };
    routing
        .service_url(id, &second.label)
        .map(|url| ServiceUrl {
            service: second.service.clone(),
            url,
        })
        .into_iter()
        .collect()
}

/// The label of the plan's routed second web service.
fn routed(planned: &Planned) -> Option<&str> {
    routed_service(planned).map(|h| h.label.as_str())
}

/// The plan's routed second web service.
fn routed_service(planned: &Planned) -> Option<&HostnameService> {
    planned.repo_compose.as_ref()?.hostname_service.as_ref()
}
