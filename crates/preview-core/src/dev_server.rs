//! Development servers that turn away requests for hosts they do not know, as a preview's host
//! is: webpack-dev-server (and Vue CLI, Angular's `ng serve`, and Create React App when
//! package.json sets `proxy`) answers "Invalid Host header" (with 200 in version 4, 403 in 5),
//! Vite (6.0.9 and later) "Blocked request" (403); both were seen on the test bed with
//! `--host 0.0.0.0` and a preview's Host. A repo's own image that runs one passes the health check
//! (any answer below 500) and shows visitors that page instead of the app.

use serde_json::Value;

/// A development server found in what an image runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevServer {
    /// What runs it, e.g. `ng serve`.
    pub name: &'static str,
    /// What it answers a host it does not know.
    pub answer: &'static str,
    /// How to let it answer any host.
    pub remedy: &'static str,
    /// The command it was found in, with the package.json script it runs, if any.
    pub found_in: String,
}

/// What webpack-dev-server answers a host it does not know.
const WEBPACK_ANSWER: &str = "\"Invalid Host header\"";

/// Servers by a piece of the command line that starts them, with how to let them answer any
/// host. Create React App is judged apart: it checks hosts only when package.json sets `proxy`.
const SERVERS: [(&str, &str, &str); 5] = [
    (
        "ng serve",
        "Angular's `ng serve`",
        "`ng serve --disable-host-check`, or `allowedHosts` in angular.json",
    ),
    (
        "vue-cli-service serve",
        "Vue CLI's `vue-cli-service serve`",
        "`devServer: { allowedHosts: 'all' }` in vue.config.js",
    ),
    (
        "webpack serve",
        "webpack-dev-server",
        "`devServer: { allowedHosts: 'all' }` in the webpack config",
    ),
    (
        "webpack-dev-server",
        "webpack-dev-server",
        "`devServer: { allowedHosts: 'all' }` in the webpack config",
    ),
    (
        "react-scripts start",
        "Create React App's `react-scripts start`",
        "DANGEROUSLY_DISABLE_HOST_CHECK=true in its environment",
    ),
];

/// The development server `command` runs, directly or through a script of `package_json` run by
/// npm, yarn, pnpm or bun; `None` for anything else.
pub fn find(command: &str, package_json: Option<&Value>) -> Option<DevServer> {
    let command = &single_spaced(command);
    let script = script_run_by(command).and_then(|name| {
        let text = package_json?.get("scripts")?.get(name)?.as_str()?;
        Some((name, single_spaced(text)))
    });
    let text = script.as_ref().map_or(command.as_str(), |(_, text)| text);
    let found_in = match &script {
        Some((name, text)) => format!("`{command}`, whose {name} script runs `{text}`"),
        None => format!("`{command}`"),
    };
    for (piece, name, remedy) in SERVERS {
        if !text.contains(piece) {
            continue;
        }
        if piece == "react-scripts start" && package_json.is_none_or(|p| p.get("proxy").is_none()) {
            continue;
        }
        return Some(DevServer {
            name,
            answer: WEBPACK_ANSWER,
            remedy,
            found_in,
        });
    }
    // `vite` alone (or `vite dev`/`vite serve`) is its dev server; `vite build` and
    // `vite preview` are not.
    let words: Vec<&str> = text.split_whitespace().collect();
    let vite = words
        .iter()
        .position(|w| *w == "vite" || w.ends_with("/vite"))?;
    match words.get(vite + 1) {
        Some(&("build" | "preview" | "optimize")) => None,
        _ => Some(DevServer {
            name: "Vite's dev server",
            answer: "\"Blocked request. This host is not allowed\"",
            remedy: "`server: { allowedHosts: true }` in vite.config",
            found_in,
        }),
    }
}

fn single_spaced(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The package.json script a package manager's command line runs: `npm start`, `npm run dev`,
/// `yarn serve`, `pnpm run dev`, `bun run dev`.
fn script_run_by(command: &str) -> Option<&str> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let manager = words.first()?.rsplit('/').next()?;
    match (manager, words.get(1).copied(), words.get(2).copied()) {
        ("npm" | "yarn" | "pnpm" | "bun", Some("run" | "run-script"), Some(script)) => Some(script),
        ("npm", Some(script @ ("start" | "test")), _) => Some(script),
        ("yarn" | "pnpm", Some(script), _) if !script.starts_with('-') => Some(script),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_servers_are_found_directly_or_through_scripts() {
        let vue = serde_json::json!({"scripts": {"serve": "vue-cli-service serve"}});
        let found = find("yarn run serve", Some(&vue)).unwrap();
        assert_eq!(found.name, "Vue CLI's `vue-cli-service serve`");
        assert_eq!(
            found.found_in,
            "`yarn run serve`, whose serve script runs `vue-cli-service serve`"
        );
        assert_eq!(
            find("ng serve --host 0.0.0.0", None).unwrap().name,
            "Angular's `ng serve`"
        );
        let vite = serde_json::json!({"scripts": {"dev": "vite --host", "build": "vite build"}});
        assert_eq!(
            find("npm run dev", Some(&vite)).unwrap().name,
            "Vite's dev server"
        );
        assert_eq!(find("npm run build", Some(&vite)), None);
        assert_eq!(find("npx vite preview --host", None), None);
        // Create React App checks hosts only with a proxy.
        let cra = serde_json::json!({"scripts": {"start": "react-scripts start"}});
        assert_eq!(find("npm start", Some(&cra)), None);
        let proxied = serde_json::json!({"scripts": {"start": "react-scripts start"}, "proxy": "http://backend:3000"});
        assert!(find("npm start", Some(&proxied)).is_some());
        // Production servers.
        assert_eq!(find("nginx -g daemon off;", None), None);
        assert_eq!(find("node server.js", None), None);
        assert_eq!(find("npm start", None), None);
    }
}
