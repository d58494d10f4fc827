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
        assert_eq!(host.host_route(&id).unwrap().tls, Some(tls));
        assert_eq!(
            host.url(&id),
            "https://octo-org-api-pr-7.preview.example.com/"
        );
        assert_eq!(
            host.host_route(&id).unwrap().hostname,
            "octo-org-api-pr-7.preview.example.com"
        );
    }
}
