//! `preview plan [DIR] [--json] [--write OUT]`: what would be built for a checkout, and why.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use clap::Args;
use preview_core::id::{CommitSha, PrNumber, PreviewId, RepoFullName, RepoSlug};
use preview_core::model::Plan;
use preview_core::plan::Planned;
use preview_core::plan::error_json;
use preview_core::render::{RenderInput, ServiceRoute, render};
use preview_core::routing::Routing;

/// Arguments of `preview plan`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  preview plan                      # plan the current directory
  preview plan ../shop --json       # machine-readable plan (errors too: {\"error\": ...})
  preview plan ../shop --write out  # also write out/Dockerfile, out/docker-compose.yml, out/nginx.conf
  preview plan . --write out --repo acme/shop --pr 42 --host-port 8042")]
pub struct PlanArgs {
    /// The checkout to plan.
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Print the plan as one JSON object.
    #[arg(long)]
    json: bool,
    /// Also render the generated files into this directory.
    #[arg(long, value_name = "OUT")]
    write: Option<PathBuf>,
    /// Repository (`owner/name`) the written files (and hostnames) are labelled with.
    #[arg(long, default_value = "local/app")]
    repo: String,
    /// Pull request number the written files (and hostnames) are for.
    #[arg(long, default_value_t = 1)]
    pr: u64,
    /// Commit sha the written files are labelled with (40 hex digits).
    #[arg(
        long,
        default_value = "0000000000000000000000000000000000000000",
        requires = "write"
    )]
    sha: String,
    /// Port on 127.0.0.1 the app is published on in the written compose file.
    #[arg(long, default_value_t = 8000, requires = "write")]
    host_port: u16,
    /// Plan as the orchestrator does with hostnames on (each preview at
    /// `{slug}-pr-{N}.{domain}`): a second web service labelled `preview.hostname` is then
    /// routed at its own host (named after --repo and --pr), and the written files serve both.
    #[arg(long, env = "PREVIEW_DOMAIN", value_name = "DOMAIN")]
    preview_domain: Option<String>,
}

/// Runs `preview plan`. With `--json`, an error is also printed to stdout as `{"error": ...}`.
pub fn run(args: PlanArgs) -> Result<()> {
    let json = args.json;
    let result = plan_and_write(args);
    if let Err(err) = &result
        && json
    {
        println!("{}", error_json(&format!("{err:#}")));
    }
    result
}

fn plan_and_write(args: PlanArgs) -> Result<()> {
    let (planned, routing, id) = routed_plan(&args)?;
    let mut written = Vec::new();
    if let Some(out) = &args.write {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let out = out
            .canonicalize()
            .with_context(|| format!("resolving {}", out.display()))?;
        let checkout = args
            .dir
            .canonicalize()
            .with_context(|| format!("resolving {}", args.dir.display()))?;
        let repo = RepoFullName::parse(&args.repo).map_err(|e| anyhow!(e))?;
        let sha = CommitSha::parse(&args.sha).map_err(|e| anyhow!(e))?;
        let mut input = RenderInput::for_preview(
            &id,
            &repo,
            &sha,
            args.host_port,
            &checkout,
            out.join("Dockerfile"),
            random_secret()?,
        );
        input.host = routing.host_route(&id);
        // The second web service, at the port after the app's.
        input.service_route = planned
            .repo_compose
            .as_ref()
            .and_then(|c| c.hostname_service.as_ref())
            .and_then(|second| routing.service_host_route(&id, &second.label))
            .map(|route| ServiceRoute {
                host_port: args.host_port % u16::MAX + 1,
                route,
            });
        let rendered = render(&planned, &input).map_err(|e| anyhow!(e))?;
        for (name, text) in rendered.files() {
            let path = out.join(name);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            written.push(path);
        }
    }
    if args.json {
        println!("{}", planned.plan.to_json());
    } else {
        print!("{}", human(&planned.plan));
        for path in &written {
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}

/// Plans `args.dir`, with its second web service routed as the orchestrator would with (or
/// without) `--preview-domain`, for the preview of `--repo` and `--pr`.
fn routed_plan(args: &PlanArgs) -> Result<(Planned, Routing, PreviewId)> {
    let mut planned = preview_core::plan(&args.dir).map_err(|e| anyhow!(e))?;
    let repo = RepoFullName::parse(&args.repo).map_err(|e| anyhow!(e))?;
    let pr = PrNumber::new(args.pr).map_err(|e| anyhow!(e))?;
    let id = PreviewId::new(&RepoSlug::base_for(&repo), pr);
    let routing = match &args.preview_domain {
        Some(domain) if !preview_core::render::is_hostname(domain) => {
            return Err(anyhow!(
                "--preview-domain {domain:?} is not a DNS name of [a-z0-9-] labels"
            ));
        }
        Some(domain) => Routing::Hostname {
            domain: domain.clone(),
            listen: vec!["80".to_owned()],
            tls: None,
        },
        None => Routing::Path {
            base_url: "http://localhost".to_owned(),
        },
    };
    planned.route_hostname_service(|label| {
        routing
            .service_host_route(&id, label)
            .map(|route| route.hostname)
    });
    Ok((planned, routing, id))
}

/// 24 random alphanumerics from the kernel, for database passwords in written files.
pub(crate) fn random_secret() -> Result<String> {
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect())
}

/// The plan for people: the decisions, the repo's compose services, then why, what the
/// sanitiser changed, and warnings.
fn human(plan: &Plan) -> String {
    let or_none = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    let mut rows: Vec<(&str, String)> = vec![
        (
            "app",
            if plan.context_dir == plan.app_dir {
                plan.app_dir.clone()
            } else {
                format!("{} (built from {})", plan.app_dir, plan.context_dir)
            },
        ),
        (
            "language",
            match plan.language {
                Some(l) => {
                    let mut s = l.to_string();
                    if let Some(v) = &plan.language_version {
                        s.push_str(&format!(" {v}"));
                    }
                    if let Some(pm) = plan.package_manager {
                        s.push_str(&format!(" ({pm})"));
                    }
                    s
                }
                None => "-".to_owned(),
            },
        ),
        ("framework", or_none(plan.framework.map(|f| f.to_string()))),
        ("build", or_none(plan.build_command.clone())),
        ("start", or_none(plan.start_command.clone())),
        (
            "port",
            match &plan.port_env {
                Some(env) => format!("{} ({env})", plan.port),
                None => plan.port.to_string(),
            },
        ),
        ("health", plan.health_path.clone()),
        ("database", or_none(plan.database.map(|d| d.to_string()))),
    ];
    if !plan.extra_services.is_empty() {
        let list: Vec<String> = plan.extra_services.iter().map(|s| s.to_string()).collect();
        rows.push(("services", list.join(", ")));
    }
    if !plan.startup_commands.is_empty() {
        rows.push(("startup", plan.startup_commands.join(" && ")));
    }
    rows.push((
        "dockerfile",
        match (&plan.dockerfile_path, &plan.base_image) {
            (Some(path), _) => format!("repo ({path})"),
            (None, Some(image)) => format!("generated (from {image})"),
            (None, None) => "repo".to_owned(),
        },
    ));
    if let Some(compose) = &plan.compose_file {
        rows.push(("compose", format!("{compose} (sanitised)")));
    }
    if let Some(c) = &plan.compose {
        rows.push((
            "web",
            format!("{} because {}", c.web_service, c.web_service_reason),
        ));
    }
    let mut out = String::new();
    for (name, value) in rows {
        out.push_str(&format!("{:<11} {value}\n", format!("{name}:")));
    }
    let changed: &[String] = plan.compose.as_ref().map_or(&[], |c| c.changed.as_slice());
    if let (Some(c), Some(file)) = (&plan.compose, &plan.compose_file) {
        out.push_str(&format!("\nservices of {file}:\n"));
        for service in &c.services {
            let mut role = if service.routed {
                "routed: the web service".to_owned()
            } else if let Some(host) = &service.routed_at {
                format!("routed at {host} (its own hostname)")
            } else if service.hostname_label.is_some() {
                "private: hostnames are off (see warnings)".to_owned()
            } else {
                "private".to_owned()
            };
            if service.runs_to_completion {
                role.push_str(", runs to completion before the services that wait on it");
            }
            if let Some(restart) = &service.restart {
                role.push_str(&format!(" (restart: {restart})"));
            }
            if !service.profiles.is_empty() {
                role.push_str(&format!(
                    ", not started (profiles: {})",
                    service.profiles.join(", ")
                ));
            }
            out.push_str(&format!(
                "  - {}: {}, {role}\n",
                service.name, service.source
            ));
        }
    }
    out.push_str("\nwhy:\n");
    for reason in &plan.reasons {
        out.push_str(&format!("  - {reason}\n"));
    }
    if !changed.is_empty() {
        out.push_str("\nsanitiser changed:\n");
        for change in changed {
            out.push_str(&format!("  - {change}\n"));
        }
    }
    let warnings: Vec<&String> = plan
        .warnings
        .iter()
        .filter(|w| !changed.contains(w))
        .collect();
    if !warnings.is_empty() {
        out.push_str("\nwarnings:\n");
        for warning in warnings {
            out.push_str(&format!("  - {warning}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/apps")
            .join(name)
    }

    fn args(dir: PathBuf, write: Option<PathBuf>) -> PlanArgs {
        PlanArgs {
            dir,
            json: true,
            write,
            repo: "acme/shop".into(),
            pr: 42,
            sha: "0123456789abcdef0123456789abcdef01234567".into(),
            host_port: 8042,
            preview_domain: None,
        }
    }

    #[test]
    fn writes_the_generated_files() {
        let out = tempfile::tempdir().unwrap();
        run(args(fixture("express"), Some(out.path().to_owned()))).unwrap();
        let compose = std::fs::read_to_string(out.path().join("docker-compose.yml")).unwrap();
        assert!(compose.contains("name: \"acme-shop-pr-42\""), "{compose}");
        assert!(compose.contains("published: \"8042\""), "{compose}");
        let nginx = std::fs::read_to_string(out.path().join("nginx.conf")).unwrap();
        assert!(nginx.contains("location /acme-shop/pr-42/ {"), "{nginx}");
        assert!(out.path().join("Dockerfile").exists());
    }

    /// A second web service (`preview.hostname: admin`): with `--preview-domain` it is routed at
    /// its own host and the written files publish and serve it; without, it stays private and
    /// the warnings say why.
    #[test]
    fn a_second_web_service_by_preview_domain() {
        let mut with_domain = args(fixture("compose-two-web"), None);
        with_domain.preview_domain = Some("preview.example.com".into());
        let (planned, _, _) = routed_plan(&with_domain).unwrap();
        let text = human(&planned.plan);
        assert!(
            text.contains("\n  - admin: built from admin, routed at acme-shop-pr-42-admin.preview.example.com (its own hostname)\n"),
            "{text}"
        );
        assert!(!text.contains("stays private"), "{text}");
        insta::assert_snapshot!("plan-compose-two-web-hostnames", text);

        let (planned, _, _) = routed_plan(&args(fixture("compose-two-web"), None)).unwrap();
        let text = human(&planned.plan);
        assert!(
            text.contains(
                "\n  - admin: built from admin, private: hostnames are off (see warnings)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("\n  - service `admin` of compose.yaml has the label `preview.hostname: admin` but stays private: hostnames are off"),
            "{text}"
        );

        let out = tempfile::tempdir().unwrap();
        with_domain.write = Some(out.path().to_owned());
        run(with_domain).unwrap();
        let compose = std::fs::read_to_string(out.path().join("docker-compose.yml")).unwrap();
        assert!(compose.contains("published: \"8043\""), "{compose}");
        let nginx = std::fs::read_to_string(out.path().join("nginx.conf")).unwrap();
        assert!(
            nginx.contains("server_name acme-shop-pr-42-admin.preview.example.com;"),
            "{nginx}"
        );
        assert!(
            nginx.contains("proxy_pass http://127.0.0.1:8043;"),
            "{nginx}"
        );

        let mut bad = args(fixture("compose-two-web"), None);
        bad.preview_domain = Some("preview.example.com;".into());
        assert!(routed_plan(&bad).is_err(), "the domain is checked");
    }

    /// `preview plan` on the plex shape (a project file of images only, refused twice) names
    /// both refusals, in the order of the file's lines: `network_mode: host` (line 5) before
    /// the variable in `volumes` (line 10), which alone was named before.
    #[test]
    fn a_refused_file_names_every_refusal_in_line_order() {
        let mut human_args = args(fixture("upstream-shape-plex"), None);
        human_args.json = false;
        let err = format!("{:#}", run(human_args).unwrap_err());
        insta::assert_snapshot!("plan-upstream-shape-plex", err);
        let network_mode = err.find("\n- compose.yaml:5: service `media`: key `network_mode`");
        let volumes = err.find("\n- compose.yaml:10: service `media`: key `volumes`");
        assert!(
            matches!((network_mode, volumes), (Some(n), Some(v)) if n < v),
            "{err}"
        );
        // `--json` carries the same lines.
        let json: serde_json::Value = serde_json::from_str(&error_json(&err)).unwrap();
        assert_eq!(json["error"], err.as_str());
    }

    #[test]
    fn errors_name_the_file_and_key() {
        let err = run(args(fixture("hostile-bad-keys"), None)).unwrap_err();
        assert!(
            format!("{err:#}").starts_with("preview-config.yml:2: key `app_prot`"),
            "{err:#}"
        );
        assert_eq!(
            error_json("unsupported: ruby (found Gemfile)"),
            r#"{"error":"unsupported: ruby (found Gemfile)"}"#
        );
    }

    /// `preview plan`'s human output for the compose fixtures: the services, the web service and
    /// why, and what the sanitiser changed.
    #[test]
    fn human_output_of_compose_stacks() {
        for name in [
            "compose-ok",
            "compose-project",
            "compose-project-config",
            "compose-project-images-only",
            "compose-project-label",
            "upstream-shape-angular",
            "upstream-shape-django-subdir",
            "upstream-shape-file-secret",
            "upstream-shape-flask-redis",
            "upstream-shape-fullstack-fastapi",
            "upstream-shape-java-maven",
            "upstream-shape-nginx-proxy",
            "upstream-shape-react-proxy-dev",
            "upstream-shape-voting-app",
            "upstream-shape-vue-cli",
        ] {
            let planned = preview_core::plan(&fixture(name)).unwrap();
            insta::assert_snapshot!(format!("plan-{name}"), human(&planned.plan));
        }
        let text = human(
            &preview_core::plan(&fixture("compose-project"))
                .unwrap()
                .plan,
        );
        assert!(
            text.contains("\n  - web: built from ., routed: the web service\n"),
            "{text}"
        );
        assert!(
            text.contains("\nsanitiser changed:\n  - service `cache`: `ports` dropped"),
            "{text}"
        );
    }

    #[test]
    fn human_output_lists_decisions_then_reasons() {
        let planned = preview_core::plan(&fixture("nestjs")).unwrap();
        let text = human(&planned.plan);
        assert!(
            text.starts_with("app:        .\nlanguage:   node >=18 (npm)\nframework:  nestjs\n"),
            "{text}"
        );
        assert!(
            text.contains("\nwhy:\n  - app_dir=. because the root has package.json\n"),
            "{text}"
        );
    }
}
