//! The Ansible orchestrator role's environment file against the orchestrator's real settings.
//!
//! `orchestrator.env.j2` is rendered with the role's defaults (plus sample secrets), every key
//! it writes is looked up among the settings of `preview-orchestrator` (its clap definition, so
//! a renamed or misspelt key fails here rather than being ignored on the server), and the whole
//! file is loaded by the orchestrator's own `Config::load`. The nginx commands are checked for
//! the production path: the root-run reload unit tests the config, so the orchestrator's own
//! `nginx -t` is switched off (its unprivileged user could not run it).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

use clap::CommandFactory;
use preview_orchestrator::Config;
use preview_orchestrator::config::EngineKind;
use serde_json::{Value, json};

fn role_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../ansible/roles/orchestrator")
}

/// The role's `defaults/main.yml`, with values that are templates themselves (such as
/// `"{{ orchestrator_home }}/orchestrator.env"`) rendered against the others.
fn role_defaults() -> BTreeMap<String, Value> {
    role_defaults_with(&[])
}

/// The role's defaults resolved with the site-wide variables `site` (as group_vars/all.yml sets
/// them) in scope.
fn role_defaults_with(site: &[(&str, Value)]) -> BTreeMap<String, Value> {
    let path = role_dir().join("defaults/main.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut vars: BTreeMap<String, Value> =
        serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for (key, value) in site {
        vars.insert((*key).to_owned(), value.clone());
    }
    let env = minijinja::Environment::new();
    // Two rounds resolve one level of nesting; the defaults use no more.
    for _ in 0..2 {
        let snapshot = vars.clone();
        for value in vars.values_mut() {
            if let Value::String(text) = value
                && text.contains("{{")
                // Defaults that need Ansible facts (service_mgr) keep their text.
                && let Ok(rendered) = env.render_str(text, minijinja::Value::from(minijinja::value::Serde(&snapshot)))
            {
                *text = rendered;
            }
        }
    }
    vars
}

/// `orchestrator.env.j2` rendered as the role renders it, as (key, value) pairs in file order.
fn rendered_env(extra_line: Option<&str>) -> Vec<(String, String)> {
    rendered_env_with(extra_line, &[])
}

/// The same, with `site` (group_vars) set before the role's defaults are resolved.
fn rendered_env_with(extra_line: Option<&str>, site: &[(&str, Value)]) -> Vec<(String, String)> {
    let mut vars = role_defaults_with(site);
    for (key, value) in [
        ("ansible_managed", json!("Ansible managed")),
        (
            "orchestrator_github_token",
            json!("ghp_sample_token_0123456789"),
        ),
        (
            "orchestrator_webhook_secret",
            json!("sample-webhook-secret-0123456789"),
        ),
        (
            "orchestrator_api_token",
            json!("sample-api-token-0123456789"),
        ),
        ("orchestrator_allowed_repos", json!(["acme/*", "octo/app"])),
        // The role's set_fact result for a server without a domain.
        ("orchestrator_base_url", json!("http://203.0.113.10")),
    ] {
        vars.insert(key.to_owned(), value);
    }
    let path = role_dir().join("templates/orchestrator.env.j2");
    let mut template = std::fs::read_to_string(&path).unwrap();
    if let Some(line) = extra_line {
        template.push_str(line);
        template.push('\n');
    }
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    let text = env
        .render_str(
            &template,
            minijinja::Value::from(minijinja::value::Serde(&vars)),
        )
        .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("not KEY='value': {line}"));
            let value = value
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or_else(|| panic!("{key}: the value is not single-quoted: {line}"));
            assert!(!value.contains('\''), "{key}: a quote inside the value");
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

/// The orchestrator's environment variables, each with its long flag.
fn settings() -> BTreeMap<String, String> {
    Config::command()
        .get_arguments()
        .filter_map(|arg| {
            let env = arg.get_env()?.to_string_lossy().into_owned();
            Some((env, arg.get_long()?.to_owned()))
        })
        .collect()
}

/// The keys of `env` that are no setting of the orchestrator.
fn unknown_keys(env: &[(String, String)]) -> Vec<String> {
    let settings = settings();
    env.iter()
        .map(|(key, _)| key.clone())
        .filter(|key| !settings.contains_key(key))
        .collect()
}

/// Loads the orchestrator's config from `env`, as flags (flags beat the test's environment).
fn load(env: &[(String, String)]) -> Config {
    let settings = settings();
    let mut args: Vec<OsString> = vec!["preview-orchestrator".into()];
    for (key, value) in env {
        args.push(format!("--{}={value}", settings[key]).into());
    }
    Config::load(args).unwrap_or_else(|e| panic!("the orchestrator refuses orchestrator.env: {e}"))
}

#[test]
fn every_key_of_the_env_file_is_an_orchestrator_setting() {
    let env = rendered_env(None);
    assert_eq!(unknown_keys(&env), Vec::<String>::new());
    let mut keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    let count = keys.len();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), count, "a key is set twice: {env:?}");
}

#[test]
fn a_key_the_orchestrator_does_not_know_is_caught() {
    let env = rendered_env(Some("NGINX_TEST_CMD='nginx -t'"));
    assert_eq!(unknown_keys(&env), ["NGINX_TEST_CMD"]);
}

#[test]
fn the_orchestrator_loads_the_env_file_with_the_seed_defaults() {
    let config = load(&rendered_env(None));
    assert_eq!(config.bind_addr().to_string(), "127.0.0.1:3000");
    assert_eq!(
        config.deployments_dir,
        PathBuf::from("/opt/preview-deployments")
    );
    assert_eq!(
        config.nginx_config_dir,
        PathBuf::from("/etc/nginx/preview-configs")
    );
    assert_eq!(
        config.deployments_db,
        PathBuf::from("/opt/preview-deployer/deployments.json")
    );
    assert_eq!(config.logs_dir, PathBuf::from("/opt/preview-deployer/logs"));
    assert_eq!(config.cleanup_ttl_days, 7);
    assert_eq!(config.max_concurrent_previews, 50);
    assert_eq!(config.memory_reserve_mb, 256);
    assert_eq!(config.min_free_disk_gb, 5.0);
    assert_eq!(
        config.log_retention_days.to_string(),
        role_defaults()["orchestrator_log_retention_days"].to_string(),
        "the orchestrator and tmpfiles.d expire logs at the same age"
    );
    assert_eq!(config.preview_base_url, "http://203.0.113.10");
    assert_eq!(config.allowed_repos.len(), 2);
}

#[test]
fn nginx_is_tested_and_reloaded_by_the_root_run_unit_only() {
    let config = load(&rendered_env(None));
    assert_eq!(
        config.nginx_reload_command,
        preview_infra::NGINX_RELOAD_COMMAND
    );
    assert_eq!(
        role_defaults()["orchestrator_reload_command"],
        json!(preview_infra::NGINX_RELOAD_COMMAND),
        "the role installs the script where the env file points"
    );
    // preview-nginx-apply runs `nginx -t` as root before reloading; the orchestrator's user
    // cannot (root-owned error log, pid file and TLS keys), so its own test must be off.
    assert_eq!(
        config.nginx_test_command.trim(),
        "",
        "NGINX_TEST_COMMAND must be empty on the server"
    );
}

#[test]
fn the_env_file_lives_where_the_cli_expects_it() {
    assert_eq!(
        role_defaults()["orchestrator_env_file"],
        json!(preview_infra::ORCHESTRATOR_ENV_FILE)
    );
}

#[test]
fn without_workers_the_engine_is_compose() {
    let env = rendered_env(None);
    let engine: Vec<&str> = env
        .iter()
        .filter(|(k, _)| k.starts_with("ENGINE") || k.starts_with("SWARM"))
        .map(|(k, v)| {
            if k == "ENGINE" {
                v.as_str()
            } else {
                k.as_str()
            }
        })
        .collect();
    assert_eq!(engine, ["compose"]);
    let config = load(&env);
    assert_eq!(config.engine, EngineKind::Compose);
    assert_eq!(config.swarm_registry, None);
}

#[test]
fn with_workers_the_engine_is_swarm_with_the_managers_registry() {
    // What group_vars/all.yml derives when the inventory has workers.
    let env = rendered_env_with(
        None,
        &[
            ("swarm_enabled", json!(true)),
            ("swarm_registry_address", json!("10.10.0.2:5000")),
        ],
    );
    assert_eq!(unknown_keys(&env), Vec::<String>::new());
    let get = |key: &str| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    assert_eq!(get("ENGINE"), Some("swarm"));
    assert_eq!(get("SWARM_REGISTRY"), Some("10.10.0.2:5000"));
    assert_eq!(
        get("SWARM_PUSH_REGISTRY"),
        None,
        "the manager pushes to the VPC address too"
    );
    let config = load(&env);
    assert_eq!(config.engine, EngineKind::Swarm);
    assert_eq!(config.swarm_registry.as_deref(), Some("10.10.0.2:5000"));
}
