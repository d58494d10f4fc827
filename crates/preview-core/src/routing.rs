//! How previews are reached: each under a path of one host (the default, which works with a bare
//! IP), or each at the root of its own hostname under `PREVIEW_DOMAIN`.

use crate::id::PreviewId;
use crate::render::{HostRoute, HostTls};

/// How previews are reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routing {
    /// At `{base_url}/{slug}/pr-{N}/`.
    Path {
        /// `PREVIEW_BASE_URL` without a trailing `/`.
        base_url: String,
    },
    /// At `http://{label}.{domain}/`, one nginx server block each; at `https://` once `tls`
    /// is set and its certificate exists ([`HostTls::is_ready`]), with HTTP redirecting to it.
    Hostname {
        /// `PREVIEW_DOMAIN`, e.g. `preview.example.com`.
        domain: String,
        /// nginx `listen` addresses of each preview's server block.
        listen: Vec<String>,
        /// HTTPS, used once its certificate exists. The check is made at each use, so
        /// previews deployed after the first issuance get HTTPS without a restart.
        tls: Option<HostTls>,
    },
}

impl Routing {
    /// The preview's public URL, ending in `/`.
    pub fn url(&self, id: &PreviewId) -> String {
        match self {
            Routing::Path { base_url } => {
                format!("{}{}", base_url.trim_end_matches('/'), id.url_path())
            }
            Routing::Hostname { domain, tls, .. } => {
                let ready = tls.as_ref().is_some_and(HostTls::is_ready);
                let scheme = if ready { "https" } else { "http" };
                format!("{scheme}://{}.{domain}/", id.host_label())
            }
        }
    }

    /// The preview's own host, when previews have hostnames.
    pub fn host_route(&self, id: &PreviewId) -> Option<HostRoute> {
        match self {
            Routing::Path { .. } => None,
            Routing::Hostname {
                domain,
                listen,
                tls,
            } => Some(HostRoute {
                hostname: format!("{}.{domain}", id.host_label()),
                listen: listen.clone(),
                tls: tls.clone().filter(HostTls::is_ready),
            }),
        }
    }

    /// The own host of the preview's second web service with `preview.hostname: label`
    /// (`{slug}-pr-{N}-{label}.{domain}`, one label deep so the wildcard certificate covers
    /// it), when previews have hostnames; `None` under paths, where it stays private.
    pub fn service_host_route(&self, id: &PreviewId, label: &str) -> Option<HostRoute> {
        let mut route = self.host_route(id)?;
        let Routing::Hostname { domain, .. } = self else {
            return None;
        };
        route.hostname = format!("{}.{domain}", id.service_host_label(label));
        Some(route)
    }

    /// The public URL of the second web service labelled `label`, ending in `/`, when
    /// previews have hostnames.
    pub fn service_url(&self, id: &PreviewId, label: &str) -> Option<String> {
        let route = self.service_host_route(id, label)?;
        let scheme = if route.tls.is_some() { "https" } else { "http" };
        Some(format!("{scheme}://{}/", route.hostname))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{PrNumber, RepoSlug};

    #[test]
    fn urls_by_path_and_by_hostname() {
        let id = PreviewId::new(
            &RepoSlug::parse("octo-org-api").unwrap(),
            PrNumber::new(7).unwrap(),
        );
        let path = Routing::Path {
            base_url: "http://203.0.113.10/".into(),
        };
        assert_eq!(path.url(&id), "http://203.0.113.10/octo-org-api/pr-7/");
        assert_eq!(path.host_route(&id), None);
        let mut host = Routing::Hostname {
            domain: "preview.example.com".into(),
            listen: vec!["80".into()],
            tls: None,
        };
        assert_eq!(
            host.url(&id),
            "http://octo-org-api-pr-7.preview.example.com/"
        );
        let dir = tempfile::tempdir().unwrap();
        let tls = HostTls {
            listen: vec!["443".into()],
            certificate: dir.path().join("fullchain.pem").display().to_string(),
            key: dir.path().join("privkey.pem").display().to_string(),
        };
        if let Routing::Hostname { tls: t, .. } = &mut host {
            *t = Some(tls.clone());
        }
        assert_eq!(
            host.url(&id),
            "http://octo-org-api-pr-7.preview.example.com/",
            "no certificate yet: plain HTTP"
        );
        assert_eq!(host.host_route(&id).unwrap().tls, None);
        std::fs::write(&tls.certificate, "chain").unwrap();
        std::fs::write(&tls.key, "key").unwrap();
        assert_eq!(host.host_route(&id).unwrap().tls, Some(tls.clone()));
        assert_eq!(
            host.url(&id),
            "https://octo-org-api-pr-7.preview.example.com/"
        );
        assert_eq!(
            host.host_route(&id).unwrap().hostname,
            "octo-org-api-pr-7.preview.example.com"
        );
        assert_eq!(
            host.service_url(&id, "admin").as_deref(),
            Some("https://octo-org-api-pr-7-admin.preview.example.com/")
        );
        assert_eq!(
            host.service_host_route(&id, "admin").unwrap().tls,
            Some(tls),
            "the same wildcard certificate"
        );
        assert_eq!(path.service_url(&id, "admin"), None, "private under paths");
    }

    #[test]
    fn a_service_host_is_one_dns_label_that_no_preview_or_other_service_has() {
        let id = |slug: &str, pr: u64| {
            PreviewId::new(&RepoSlug::parse(slug).unwrap(), PrNumber::new(pr).unwrap())
        };
        assert_eq!(
            id("octo-api", 7).service_host_label("admin"),
            "octo-api-pr-7-admin"
        );
        // The preview `admin-octo-api` PR 7 is `admin-octo-api-pr-7`: a prefix would clash.
        assert_ne!(
            id("octo-api", 7).service_host_label("admin"),
            id("admin-octo-api", 7).host_label()
        );
        let long = "a".repeat(50) + "-x1";
        let label = id(&long, 2_147_483_647).service_host_label("a-twenty-char-label1");
        assert!(label.len() <= 63, "{label}");
        assert!(
            label.ends_with("-pr-2147483647-a-twenty-char-label1"),
            "{label}"
        );
        assert!(crate::render::is_hostname(&label), "{label}");
        assert_ne!(
            label,
            id(&("a".repeat(50) + "-x2"), 2_147_483_647).service_host_label("a-twenty-char-label1"),
        );
    }
}
