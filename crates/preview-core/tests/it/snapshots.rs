//! One snapshot of the plan and of every generated file per fixture, and one of each refusal.

use crate::harness::{PLANNABLE, REFUSED, fixture, fixtures_dir, plan, snapshot_input};
use preview_core::render::render;

fn settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    let root = fixtures_dir().display().to_string();
    settings.add_filter(&regex_escape(&root), "[FIXTURES]");
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if "\\.+*?()|[]{}^$#&-~".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}

#[test]
fn every_fixture_is_covered() {
    let mut listed: Vec<&str> = PLANNABLE
        .iter()
        .copied()
        .chain(REFUSED.iter().map(|(name, _)| *name))
        .collect();
    listed.sort_unstable();
    let mut present: Vec<String> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    present.sort();
    assert_eq!(
        listed, present,
        "fixtures/apps and the harness's lists differ"
    );
}

#[test]
fn plans_and_generated_files() {
    let settings = settings();
    settings.bind(|| {
        for name in PLANNABLE {
            let planned = plan(name);
            insta::assert_snapshot!(format!("{name}@plan"), planned.plan.to_json());
            let rendered = render(&planned, &snapshot_input(name))
                .unwrap_or_else(|e| panic!("rendering {name}: {e}"));
            match &rendered.dockerfile {
                Some(d) => insta::assert_snapshot!(format!("{name}@Dockerfile"), d),
                None => assert_eq!(
                    planned.plan.dockerfile,
                    preview_core::model::DockerfileSource::Repo,
                    "{name}"
                ),
            }
            insta::assert_snapshot!(format!("{name}@docker-compose.yml"), rendered.compose);
            insta::assert_snapshot!(format!("{name}@nginx.conf"), rendered.nginx);
        }
    });
}

#[test]
fn refusals_name_the_file_and_key() {
    let settings = settings();
    settings.bind(|| {
        for (name, expected) in REFUSED {
            let err = match preview_core::plan(&fixture(name)) {
                Ok(planned) => panic!("{name} should be refused, got {:#?}", planned.plan),
                Err(e) => e.to_string(),
            };
            assert!(
                err.contains(expected),
                "{name}:\n got: {err}\nwant: {expected}"
            );
            insta::assert_snapshot!(format!("{name}@error"), err);
        }
    });
}

#[test]
fn json_plan_has_the_documented_fields() {
    let planned = plan("nestjs");
    let json: serde_json::Value = serde_json::from_str(&planned.plan.to_json()).unwrap();
    for field in [
        "language",
        "framework",
        "language_version",
        "package_manager",
        "app_dir",
        "build_command",
        "start_command",
        "port",
        "port_env",
        "health_path",
        "database",
        "extra_services",
        "dockerfile",
        "reasons",
        "warnings",
    ] {
        assert!(json.get(field).is_some(), "missing {field}");
    }
    assert_eq!(json["language"], "node");
    assert_eq!(json["framework"], "nestjs");
    assert_eq!(json["dockerfile"], "generated");
    assert_eq!(json["start_command"], "node dist/main");
    assert!(
        json["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "framework=nestjs because package.json depends on @nestjs/core"),
        "{}",
        json["reasons"]
    );
}

/// With PREVIEW_DOMAIN, the preview's nginx config is a server block for its own hostname, and
/// the app is told that nothing prefixes its paths.
#[test]
fn hostname_routing_renders_a_server_block() {
    let settings = settings();
    settings.bind(|| {
        let planned = plan("express");
        let mut input = snapshot_input("express");
        input.host = Some(preview_core::render::HostRoute {
            hostname: "octo-org-hello-api-pr-7.preview.example.com".into(),
            listen: vec!["80".into(), "[::]:80".into()],
            tls: None,
        });
        let rendered = render(&planned, &input).unwrap();
        insta::assert_snapshot!("express@nginx-hostname.conf", rendered.nginx);
        input.host.as_mut().unwrap().tls = Some(preview_core::render::HostTls {
            listen: vec!["443".into(), "[::]:443".into()],
            certificate: "/opt/preview-deployer/tls/fullchain.pem".into(),
            key: "/opt/preview-deployer/tls/privkey.pem".into(),
        });
        let rendered = render(&planned, &input).unwrap();
        insta::assert_snapshot!("express@nginx-hostname-tls.conf", rendered.nginx);
        input.host.as_mut().unwrap().tls.as_mut().unwrap().key =
            "/etc/x; include /etc/passwd".into();
        assert!(
            render(&planned, &input).is_err(),
            "a certificate path cannot inject"
        );
        input.host.as_mut().unwrap().tls = None;
        assert!(
            rendered.compose.contains("PREVIEW_BASE_PATH: \"\""),
            "{}",
            rendered.compose
        );

        input.host.as_mut().unwrap().hostname = "bad_host.example.com".into();
        assert!(
            render(&planned, &input).is_err(),
            "an invalid hostname is refused"
        );
        input.host.as_mut().unwrap().hostname = "ok.example.com".into();
        input.host.as_mut().unwrap().listen = vec!["80; include /etc/passwd".into()];
        assert!(
            render(&planned, &input).is_err(),
            "a listen address cannot inject"
        );
    });
}

/// An update renders the app in the green slot: renamed, aliased to its usual name, labelled
/// with its slot; every other service, network and volume is exactly as in the blue render, so
/// Compose leaves them running.
#[test]
fn green_slot_compose_files() {
    let settings = settings();
    settings.bind(|| {
        for name in ["node-postgres", "compose-ok"] {
            let planned = plan(name);
            let blue = render(&planned, &snapshot_input(name)).unwrap();
            let mut input = snapshot_input(name);
            input.app_slot = preview_core::render::AppSlot::Green;
            input.host_port = 8008;
            let green = render(&planned, &input).unwrap();
            insta::assert_snapshot!(format!("{name}@green@docker-compose.yml"), green.compose);
            assert_eq!(green.services.others, blue.services.others, "{name}");
            assert_eq!(green.services.app, format!("{}-green", blue.services.app));
            let top = |compose: &str| -> serde_json::Value {
                let mut v: serde_json::Value = serde_saphyr::from_str(compose).unwrap();
                v["services"]
                    .as_object_mut()
                    .unwrap()
                    .retain(|k, _| k != "app" && k != "app-green");
                v
            };
            assert_eq!(top(&green.compose), top(&blue.compose), "{name}");
        }
    });
}

/// An update of a preview whose second web service is routed at its own hostname renders that
/// service in the green slot with the app: renamed `admin-green`, reachable as `admin`, labelled
/// with the slot, published at the new slot's port; the nginx conf routes both hosts to the new
/// slot's ports. In the blue slot it is `admin-blue`. Without a route (hostnames off) it keeps
/// its name, unslotted.
#[test]
fn a_routed_second_web_service_is_slotted_with_the_app() {
    use preview_core::id::{PrNumber, PreviewId, RepoSlug};
    use preview_core::render::{AppSlot, ServiceRoute, labels};
    use preview_core::routing::Routing;

    let settings = settings();
    settings.bind(|| {
        let name = "compose-two-web";
        let id = PreviewId::new(
            &RepoSlug::parse("acme-compose-two-web").unwrap(),
            PrNumber::new(7).unwrap(),
        );
        let routing = Routing::Hostname {
            domain: "preview.example.com".into(),
            listen: vec!["80".into()],
            tls: None,
        };
        let mut planned = plan(name);
        planned.route_hostname_service(|label| {
            routing.service_host_route(&id, label).map(|r| r.hostname)
        });
        let mut input = snapshot_input(name);
        input.host = routing.host_route(&id);
        input.service_route = Some(ServiceRoute {
            host_port: 8107,
            route: routing.service_host_route(&id, "admin").unwrap(),
        });
        let blue = render(&planned, &input).unwrap();
        assert_eq!(blue.services.routed.as_deref(), Some("admin-blue"));
        input.app_slot = AppSlot::Green;
        input.host_port = 8008;
        input.service_route.as_mut().unwrap().host_port = 8109;
        let green = render(&planned, &input).unwrap();
        insta::assert_snapshot!(
            format!("{name}@green-hostnames@docker-compose.yml"),
            green.compose
        );
        insta::assert_snapshot!(format!("{name}@green-hostnames@nginx.conf"), green.nginx);
        assert_eq!(green.services.app, "web-green");
        assert_eq!(green.services.routed.as_deref(), Some("admin-green"));
        assert_eq!(green.services.others, ["admin-green"]);

        let parsed =
            |compose: &str| -> serde_json::Value { serde_saphyr::from_str(compose).unwrap() };
        let (blue, green) = (parsed(&blue.compose), parsed(&green.compose));
        let admin = &green["services"]["admin-green"];
        assert!(green["services"].get("admin").is_none(), "renamed");
        assert_eq!(
            admin["networks"]["default"]["aliases"],
            serde_json::json!(["admin"])
        );
        assert_eq!(admin["labels"][labels::SLOT], "green");
        assert_eq!(
            blue["services"]["admin-blue"]["labels"][labels::SLOT],
            "blue"
        );
        assert!(
            blue["services"].get("admin").is_none(),
            "named for its slot"
        );
        assert_eq!(admin["ports"][0]["published"], "8109");
        assert_eq!(admin["ports"][0]["host_ip"], "127.0.0.1");
        assert_eq!(
            green["services"]["web-green"]["ports"][0]["published"],
            "8008"
        );
        // nginx routes both hosts to the new slot's ports.
        let nginx = render(&planned, &input).unwrap().nginx;
        assert!(
            nginx.contains("proxy_pass http://127.0.0.1:8008"),
            "{nginx}"
        );
        assert!(
            nginx.contains("proxy_pass http://127.0.0.1:8109"),
            "{nginx}"
        );

        // Private (no route): not slotted, not labelled with a slot, not published.
        let mut private = plan(name);
        private.route_hostname_service(|_| None);
        let mut input = snapshot_input(name);
        input.app_slot = AppSlot::Green;
        let rendered = render(&private, &input).unwrap();
        assert_eq!(rendered.services.routed, None);
        assert_eq!(rendered.services.others, ["admin"]);
        let compose = parsed(&rendered.compose);
        let admin = &compose["services"]["admin"];
        assert!(admin["labels"].get(labels::SLOT).is_none(), "{admin}");
        assert!(admin.get("ports").is_none(), "{admin}");
        assert!(admin.get("networks").is_none(), "{admin}");
    });
}

/// Sleep and wake: a preview that may sleep logs its requests to its activity log and sends
/// nginx's own 502 (its port refuses connections while it sleeps) to the orchestrator's wake
/// endpoint, in both routing modes.
#[test]
fn sleeping_previews_log_activity_and_wake_through_the_orchestrator() {
    let settings = settings();
    settings.bind(|| {
        let planned = plan("express");
        let mut input = snapshot_input("express");
        input.sleep = Some(preview_core::render::SleepRoute {
            activity_log: "/opt/preview-deployments/acme-express-pr-7/logs/access.log".into(),
            flush_secs: 60,
            wake_addr: "127.0.0.1:3000".parse().unwrap(),
        });
        let rendered = render(&planned, &input).unwrap();
        insta::assert_snapshot!("express@nginx-sleep.conf", rendered.nginx);
        input.host = Some(preview_core::render::HostRoute {
            hostname: "octo-org-hello-api-pr-7.preview.example.com".into(),
            listen: vec!["80".into()],
            tls: None,
        });
        let rendered = render(&planned, &input).unwrap();
        insta::assert_snapshot!("express@nginx-hostname-sleep.conf", rendered.nginx);
        // Nothing reaches the config unchecked.
        let mut bad = input.clone();
        bad.sleep.as_mut().unwrap().activity_log = "/tmp/x; error_log /etc/passwd".into();
        assert!(
            render(&planned, &bad)
                .unwrap_err()
                .to_string()
                .contains("activity log")
        );
        let mut bad = input.clone();
        bad.sleep.as_mut().unwrap().wake_addr = "10.0.0.1:3000".parse().unwrap();
        assert!(
            render(&planned, &bad)
                .unwrap_err()
                .to_string()
                .contains("wake address")
        );
    });
}

/// Access control (`preview access`): every preview's block includes its repository's access
/// file by a glob, in both routing modes, and the access file and htpasswd file are rendered from
/// the repository's policy.
#[test]
fn access_files_and_the_includes_that_apply_them() {
    use preview_core::access::{AccessFiles, AccessPolicy, BasicAuth, PasswordHash, render_access};
    use preview_core::id::RepoFullName;
    let settings = settings();
    settings.bind(|| {
        let repo = RepoFullName::parse("acme/express").unwrap();
        let files = AccessFiles::new(
            std::path::Path::new("/etc/nginx/preview-configs/access"),
            &repo,
        )
        .unwrap();
        let planned = plan("express");
        let mut input = snapshot_input("express");
        input.access_include = Some(files.include_pattern.clone());
        let rendered = render(&planned, &input).unwrap();
        insta::assert_snapshot!("express@nginx-access-include.conf", rendered.nginx);
        input.host = Some(preview_core::render::HostRoute {
            hostname: "acme-express-pr-7.preview.example.com".into(),
            listen: vec!["80".into()],
            tls: None,
        });
        let rendered = render(&planned, &input).unwrap();
        insta::assert_snapshot!("express@nginx-hostname-access-include.conf", rendered.nginx);
        input.access_include = Some("/etc/x.con[f]; include /etc/passwd".into());
        assert!(
            render(&planned, &input).is_err(),
            "an include pattern cannot inject"
        );

        let basic_auth = BasicAuth {
            user: "reviewer".into(),
            password_hash: PasswordHash::new("correct horse battery", "0123456789abcdef").unwrap(),
        };
        let both = AccessPolicy {
            basic_auth: Some(basic_auth.clone()),
            allow: vec![
                "203.0.113.0/24".parse().unwrap(),
                "2001:db8::/32".parse().unwrap(),
            ],
        };
        let access = render_access(&repo, &files, &both).unwrap();
        insta::assert_snapshot!("access@both.conf", access.conf.unwrap());
        insta::assert_snapshot!("access@both.htpasswd", access.htpasswd.unwrap());
        let only_auth = AccessPolicy {
            basic_auth: Some(basic_auth),
            allow: Vec::new(),
        };
        insta::assert_snapshot!(
            "access@basic-auth.conf",
            render_access(&repo, &files, &only_auth)
                .unwrap()
                .conf
                .unwrap()
        );
        let only_cidrs = AccessPolicy {
            basic_auth: None,
            allow: vec!["127.0.0.1/32".parse().unwrap()],
        };
        let access = render_access(&repo, &files, &only_cidrs).unwrap();
        assert_eq!(access.htpasswd, None, "no htpasswd without basic auth");
        insta::assert_snapshot!("access@allow.conf", access.conf.unwrap());
        let public = render_access(&repo, &files, &AccessPolicy::default()).unwrap();
        assert_eq!((public.conf, public.htpasswd), (None, None));
    });
}

/// A trusted preview's secrets are named in the app's environment without a value (Compose
/// takes each from its own environment at start): never in another service, in build args or
/// anywhere with a value. A secret replaces preview-config.yml's or the repo compose file's
/// variable of the same name.
#[test]
fn secret_names_compose_files() {
    use preview_core::repo_secrets::SecretName;
    let settings = settings();
    settings.bind(|| {
        for name in ["node-postgres", "compose-ok"] {
            let planned = plan(name);
            let plain = render(&planned, &snapshot_input(name)).unwrap();
            let mut input = snapshot_input(name);
            input.secret_names = ["STRIPE_KEY", "SENTRY_DSN", "FEATURE_FLAG"]
                .into_iter()
                .map(|n| SecretName::parse(n).unwrap())
                .collect();
            let with = render(&planned, &input).unwrap();
            insta::assert_snapshot!(format!("{name}@secrets@docker-compose.yml"), with.compose);
            let v: serde_json::Value = serde_saphyr::from_str(&with.compose).unwrap();
            let services = v["services"].as_object().unwrap();
            for (service, config) in services {
                let env = &config["environment"];
                for secret in ["STRIPE_KEY", "SENTRY_DSN", "FEATURE_FLAG"] {
                    if service == &with.services.app {
                        assert_eq!(env[secret], serde_json::Value::Null, "{name}: {env}");
                        assert!(
                            env.as_object().unwrap().contains_key(secret),
                            "{name}: {secret} is named in the app's environment: {env}"
                        );
                    } else {
                        assert!(env.get(secret).is_none(), "{name}: not in {service}");
                    }
                    assert!(
                        config["build"]["args"].get(secret).is_none(),
                        "{name}: never a build arg"
                    );
                }
            }
            // Nothing else changed: the same file once the secrets' lines are taken out.
            let without_secret_lines: String = with
                .compose
                .lines()
                .filter(|l| {
                    !["STRIPE_KEY: null", "SENTRY_DSN: null", "FEATURE_FLAG: null"]
                        .contains(&l.trim())
                })
                .map(|l| format!("{l}\n"))
                .collect();
            let plain_without_flag: String = plain
                .compose
                .lines()
                .filter(|l| !l.trim().starts_with("FEATURE_FLAG:"))
                .map(|l| format!("{l}\n"))
                .collect();
            assert_eq!(without_secret_lines, plain_without_flag, "{name}");
        }
    });
}

/// DATABASE_MODE=shared: the app's database lives on the engine's shared server, so the compose
/// file has no database service or volume; the app joins the orchestrator's database network
/// (in both slots) and its DATABASE_URL (and Laravel's DB_*) name the shared server.
#[test]
fn shared_database_compose_files() {
    use preview_core::model::Database;
    use preview_core::render::SharedDatabase;
    let settings = settings();
    settings.bind(|| {
        for (name, engine, host, port) in [
            ("node-postgres", Database::Postgres, "shared-postgres", 5432),
            ("laravel", Database::Mysql, "shared-mysql", 3306),
        ] {
            let mut planned = plan(name);
            planned.plan.database = Some(engine);
            for slot in [
                preview_core::render::AppSlot::Blue,
                preview_core::render::AppSlot::Green,
            ] {
                let mut input = snapshot_input(name);
                input.app_slot = slot;
                input.shared_database = Some(SharedDatabase {
                    engine,
                    host: host.to_owned(),
                    port,
                    name: "pv_acme_pr_7_0123abcd".to_owned(),
                    password: "00112233445566778899aabbccddeeff".to_owned(),
                    network: format!("acme-{name}-pr-7-shared-db"),
                });
                let rendered = render(&planned, &input).unwrap();
                insta::assert_snapshot!(
                    format!("{name}@shared-db@{}@docker-compose.yml", slot.as_str()),
                    rendered.compose
                );
                assert!(
                    !rendered.services.others.contains(&"db".to_owned()),
                    "{name}: no db service"
                );
                let compose: serde_json::Value = serde_saphyr::from_str(&rendered.compose).unwrap();
                assert!(compose["services"].get("db").is_none(), "{name}");
                assert!(compose.get("volumes").is_none(), "{name}");
                let network = &compose["networks"]["shared-db"];
                assert_eq!(network["external"], true, "{name}");
                assert_eq!(
                    network["name"],
                    format!("acme-{name}-pr-7-shared-db"),
                    "{name}"
                );
            }
        }
    });
}

/// A second web service (`preview.hostname: admin`): with hostnames, the plan routes it at
/// `{slug}-pr-{N}-admin.{domain}`, the compose file publishes it on 127.0.0.1 at its own port,
/// and the nginx conf serves it in a second server block with the app's access control, headers
/// and certificate. Under paths it stays private and the plan's warnings say why.
#[test]
fn a_second_web_service_is_routed_at_its_own_hostname() {
    use preview_core::id::{PrNumber, PreviewId, RepoSlug};
    use preview_core::render::{HostTls, ServiceRoute};
    use preview_core::routing::Routing;

    let settings = settings();
    settings.bind(|| {
        let name = "compose-two-web";
        let id = PreviewId::new(
            &RepoSlug::parse("acme-compose-two-web").unwrap(),
            PrNumber::new(7).unwrap(),
        );
        let routing = Routing::Hostname {
            domain: "preview.example.com".into(),
            listen: vec!["80".into(), "[::]:80".into()],
            tls: None,
        };
        let mut planned = plan(name);
        planned.route_hostname_service(|label| {
            routing.service_host_route(&id, label).map(|r| r.hostname)
        });
        insta::assert_snapshot!(format!("{name}@plan-hostnames"), planned.plan.to_json());
        let admin = &planned.plan.compose.as_ref().unwrap().services[0];
        assert_eq!(
            admin.routed_at.as_deref(),
            Some("acme-compose-two-web-pr-7-admin.preview.example.com")
        );

        let mut input = snapshot_input(name);
        input.host = routing.host_route(&id);
        input.service_route = Some(ServiceRoute {
            host_port: 8107,
            route: routing.service_host_route(&id, "admin").unwrap(),
        });
        input.access_include =
            Some("/etc/nginx/preview-deployer/access/acme-compose-two-web.con[f]".into());
        let rendered = render(&planned, &input).unwrap();
        insta::assert_snapshot!(format!("{name}@docker-compose-hostnames.yml"), rendered.compose);
        insta::assert_snapshot!(format!("{name}@nginx-hostnames.conf"), rendered.nginx);
        assert_eq!(rendered.nginx.matches("server_name").count(), 2);
        assert_eq!(
            rendered.nginx.matches("include /etc/nginx/preview-deployer/access/").count(),
            2,
            "the same access control on both hosts"
        );

        let tls = HostTls {
            listen: vec!["443".into()],
            certificate: "/opt/preview-deployer/tls/fullchain.pem".into(),
            key: "/opt/preview-deployer/tls/privkey.pem".into(),
        };
        input.host.as_mut().unwrap().tls = Some(tls.clone());
        input.service_route.as_mut().unwrap().route.tls = Some(tls);
        let rendered = render(&planned, &input).unwrap();
        insta::assert_snapshot!(format!("{name}@nginx-hostnames-tls.conf"), rendered.nginx);
        assert_eq!(
            rendered
                .nginx
                .matches("ssl_certificate /opt/preview-deployer/tls/fullchain.pem;")
                .count(),
            2,
            "the one wildcard certificate serves both hosts"
        );

        // The same port as the app's, a bad hostname, or a route without hostnames: refused.
        let mut same = input.clone();
        same.service_route.as_mut().unwrap().host_port = same.host_port;
        assert!(render(&planned, &same).is_err());
        let mut bad = input.clone();
        bad.service_route.as_mut().unwrap().route.hostname = "x;y.example.com".into();
        assert!(render(&planned, &bad).is_err());
        let mut pathless = input.clone();
        pathless.host = None;
        assert!(render(&planned, &pathless).is_err());

        // Under paths: private, with a warning, and nothing of it is published.
        let mut planned = plan(name);
        let path = Routing::Path {
            base_url: "http://203.0.113.10".into(),
        };
        planned.route_hostname_service(|label| {
            path.service_host_route(&id, label).map(|r| r.hostname)
        });
        assert_eq!(
            planned.plan.warnings.last().map(String::as_str),
            Some(
                "service `admin` of compose.yaml has the label `preview.hostname: admin` but stays private: hostnames are off (previews are served under a path; PREVIEW_DOMAIN gives each its own hostname)"
            )
        );
        assert_eq!(planned.repo_compose.as_ref().unwrap().hostname_service, None);
        let mut input = snapshot_input(name);
        input.service_route = None;
        let rendered = render(&planned, &input).unwrap();
        assert_eq!(rendered.compose.matches("published:").count(), 1, "{}", rendered.compose);
    });
}
