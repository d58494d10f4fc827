use std::time::Duration;

use preview_exec::Cmd;
use preview_exec::compose::with_docker_env;

use crate::{Error, Result};

/// One container of a compose project, as `docker ps -a` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    pub name: String,
    pub service: String,
    /// `created`, `running`, `restarting`, `exited`, `dead`, ...
    pub state: String,
    /// Parsed from the status text when the container has exited.
    pub exit_code: Option<i32>,
}

impl ContainerState {
    /// True when the container stopped or is crash-looping.
    pub fn has_stopped(&self) -> bool {
        matches!(self.state.as_str(), "exited" | "dead" | "restarting")
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
    let labels = field("Labels");
    let service = labels
        .split(',')
        .find_map(|kv| kv.strip_prefix("com.docker.compose.service="))
        .unwrap_or_default()
        .to_owned();
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
        exit_code,
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
        assert!(c.has_stopped());
        assert!(parse_ps_line("not json").is_err());
    }
}
