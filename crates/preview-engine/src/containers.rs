use std::time::Duration;

use preview_exec::Cmd;
use preview_exec::compose::with_docker_env;

use preview_core::render::labels;

use crate::{Error, Result};

/// One container of a compose project, as `docker ps -a` reports it (on a swarm: one task). Its
/// JSON is what `GET /api/previews/{id}/services` lists.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    pub name: String,
    pub service: String,
    /// `created`, `running`, `restarting`, `exited`, `dead`, ...
    pub state: String,
    /// The engine's words for people: `Up 3 minutes (healthy)`, `Exited (0) 2 minutes ago`;
    /// on a swarm the task's state, node and error.
    pub status: String,
    /// Parsed from the status text when the container has exited.
    pub exit_code: Option<i32>,
    /// Whether it runs a task meant to end, such as a migration ([`labels::ONE_SHOT`]).
    pub one_shot: bool,
}

impl ContainerState {
    /// True when the container stopped or is crash-looping; a task meant to end that ended
    /// with 0 has not stopped, it is done.
    pub fn has_stopped(&self) -> bool {
        matches!(self.state.as_str(), "exited" | "dead" | "restarting") && !self.is_done()
    }

    /// True for a task meant to end that ended with 0.
    pub fn is_done(&self) -> bool {
        self.one_shot && self.state == "exited" && self.exit_code == Some(0)
    }
}

/// The containers of compose project `project`, found by the label both Compose v1 and v2 set.
pub async fn project_containers(project: &str) -> Result<Vec<ContainerState>> {
    let out = with_docker_env(Cmd::new("docker", "list the preview's containers"))
        .args([
            "ps",
            "-a",
            "--no-trunc",
            "--format",
            "{{json .}}",
            "--filter",
        ])
        .arg(format!("label=com.docker.compose.project={project}"))
        .timeout(Duration::from_secs(30))
        .run()
        .await?;
    out.stdout_text()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_ps_line)
        .collect()
}

fn parse_ps_line(line: &str) -> Result<ContainerState> {
    let row: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| Error::Parse(format!("docker ps line {line:?}: {e}")))?;
    let field = |name: &str| row[name].as_str().unwrap_or_default().to_owned();
    let container_labels = field("Labels");
    let service = container_labels
        .split(',')
        .find_map(|kv| kv.strip_prefix("com.docker.compose.service="))
        .unwrap_or_default()
        .to_owned();
    let one_shot = container_labels
        .split(',')
        .any(|kv| kv.strip_prefix(labels::ONE_SHOT) == Some("=true"));
    let status = field("Status");
    // "Exited (1) 3 seconds ago"
    let exit_code = status
        .strip_prefix("Exited (")
        .and_then(|rest| rest.split(')').next())
        .and_then(|code| code.parse().ok());
    Ok(ContainerState {
        name: field("Names"),
        service,
        state: field("State").to_ascii_lowercase(),
        status,
        exit_code,
        one_shot,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_ps_json_lines() {
        let line = r#"{"Command":"\"python3 app.py\"","Labels":"com.docker.compose.project=p,com.docker.compose.service=app,x=y","Names":"p-app-1","State":"exited","Status":"Exited (3) 2 seconds ago"}"#;
        let c = parse_ps_line(line).unwrap();
        assert_eq!(c.name, "p-app-1");
        assert_eq!(c.service, "app");
        assert_eq!(c.exit_code, Some(3));
        assert_eq!(c.status, "Exited (3) 2 seconds ago");
        assert!(c.has_stopped());
        assert!(!c.one_shot);
        assert!(parse_ps_line("not json").is_err());
    }

    #[test]
    fn a_task_meant_to_end_has_stopped_only_when_it_failed() {
        let line = |status: &str| {
            format!(
                r#"{{"Labels":"com.docker.compose.service=migrate,{}=true","Names":"p-migrate-1","State":"exited","Status":"{status}"}}"#,
                labels::ONE_SHOT
            )
        };
        let done = parse_ps_line(&line("Exited (0) 2 seconds ago")).unwrap();
        assert!(done.one_shot);
        assert!(!done.has_stopped(), "{done:?}");
        let failed = parse_ps_line(&line("Exited (1) 2 seconds ago")).unwrap();
        assert!(failed.has_stopped(), "{failed:?}");
    }
}
