//! Web frameworks' own ways to start: their server entry points and default ports (Next.js,
//! Nuxt, SvelteKit, Astro, Remix, React Router, Angular SSR, NestJS), and the output directory
//! of static front ends, which the built-in static server serves.

use serde_json::Value;

use super::{Manifest, Start, plain_node};
use crate::detect::{Ctx, command_argv};
use crate::model::Framework;
use crate::render::dockerfile::STATIC_SERVER_PATH;

/// The framework's name as its users write it, for reasons.
pub(super) fn label(framework: Framework) -> &'static str {
    match framework {
        Framework::Nextjs => "Next.js",
        Framework::Nuxt => "Nuxt",
        Framework::Sveltekit => "SvelteKit",
        Framework::Astro => "Astro",
        Framework::Remix => "Remix",
        Framework::ReactRouter => "React Router",
        Framework::Angular => "Angular",
        Framework::Vite => "Vite",
        Framework::Cra => "Create React App",
        Framework::Nestjs => "NestJS",
        _ => framework.as_str(),
    }
}

/// The build a framework needs when package.json has no build script: (command, short name).
pub(super) fn default_build(ctx: &Ctx, framework: Framework) -> Option<(String, &'static str)> {
    let (bin, args, short) = match framework {
        Framework::Nextjs => ("next", "build", "next build"),
        Framework::Nuxt => ("nuxt", "build", "nuxt build"),
        Framework::Sveltekit | Framework::Vite => ("vite", "build", "vite build"),
        Framework::Astro => ("astro", "build", "astro build"),
        Framework::Angular => ("ng", "build", "ng build"),
        Framework::Cra => ("react-scripts", "build", "react-scripts build"),
        Framework::ReactRouter => ("react-router", "build", "react-router build"),
        Framework::Remix if vite_config(ctx).is_some() => {
            ("remix", "vite:build", "remix vite:build")
        }
        Framework::Remix => ("remix", "build", "remix build"),
        _ => return None,
    };
    Some((format!("node_modules/.bin/{bin} {args}"), short))
}

/// How the framework starts, or `None` when the generic rules (start script, main, entry files)
/// decide.
pub(super) fn start(
    ctx: &Ctx,
    m: &Manifest,
    framework: Framework,
    reasons: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Option<Start> {
    // A plain `node <file>` start script is the app's own server (a custom Express server for
    // Remix, say), whatever builds its pages.
    let plain_start = m.script("start").filter(|s| plain_node(s));
    match framework {
        Framework::Nextjs => Some(nextjs(ctx, reasons)),
        Framework::Nestjs => Some(nestjs(ctx, m, reasons)),
        Framework::Nuxt => nuxt(m, plain_start, reasons),
        Framework::Sveltekit => Some(sveltekit(ctx, m, reasons, warnings)),
        Framework::Astro => astro(ctx, m, plain_start, reasons, warnings),
        Framework::Remix | Framework::ReactRouter => plain_start
            .is_none()
            .then(|| remix(ctx, m, framework, reasons, warnings)),
        Framework::Angular => Some(angular(ctx, m, reasons, warnings)),
        Framework::Vite => plain_start.is_none().then(|| {
            let out = vite_out_dir(ctx);
            static_site(
                out.clone(),
                format!("Vite builds the app into {out}"),
                reasons,
            )
        }),
        Framework::Cra => plain_start.is_none().then(|| {
            static_site(
                "build".to_owned(),
                "react-scripts build puts the app in build".to_owned(),
                reasons,
            )
        }),
        Framework::Static => Some(static_site(
            ".".to_owned(),
            "preview-config.yml names a static site".to_owned(),
            reasons,
        )),
        _ => None,
    }
}

/// A static site served from `root` by the built-in server.
pub(super) fn static_site(root: String, why: String, reasons: &mut Vec<String>) -> Start {
    reasons.push(format!(
        "start_command=the built-in static server on {root} because {why} (paths that are not files fall back to index.html)"
    ));
    Start {
        argv: vec!["node".into(), STATIC_SERVER_PATH.into(), root.clone()],
        port: Some(super::STATIC_PORT),
        static_root: Some(root),
        ..Start::default()
    }
}

fn nextjs(ctx: &Ctx, reasons: &mut Vec<String>) -> Start {
    let config = [
        "next.config.js",
        "next.config.mjs",
        "next.config.ts",
        "next.config.cjs",
    ]
    .into_iter()
    .find_map(|f| Some((f, ctx.peek_source(f)?)));
    if let Some((file, text)) = &config
        && text.contains("output")
        && (text.contains("'standalone'") || text.contains("\"standalone\""))
    {
        reasons.push(format!(
            "start_command=node .next/standalone/server.js because {} sets output: 'standalone'",
            ctx.show(file)
        ));
        // The standalone server serves .next/static and public only from beside itself.
        let mut build = vec!["cp -r .next/static .next/standalone/.next/static".to_owned()];
        if ctx.is_dir("public") {
            build.push("cp -r public .next/standalone/public".to_owned());
        }
        return Start {
            argv: vec!["node".into(), ".next/standalone/server.js".into()],
            build,
            ..Start::default()
        };
    }
    reasons.push("start_command=next start because the app uses Next.js".to_owned());
    Start {
        argv: vec![
            "node_modules/.bin/next".into(),
            "start".into(),
            "-H".into(),
            "0.0.0.0".into(),
            "-p".into(),
            "3000".into(),
        ],
        ..Start::default()
    }
}

fn nestjs(ctx: &Ctx, m: &Manifest, reasons: &mut Vec<String>) -> Start {
    let source_file = ["src/main.ts", "src/main.js"]
        .into_iter()
        .find(|f| ctx.is_file(f))
        .map(str::to_owned);
    let argv = match m.script("start:prod").filter(|s| plain_node(s)) {
        Some(s) => {
            reasons.push(format!("start_command={s} from the start:prod script"));
            command_argv(&s)
        }
        None => {
            reasons.push("start_command=node dist/main, NestJS's start:prod default".to_owned());
            vec!["node".into(), "dist/main".into()]
        }
    };
    Start {
        argv,
        source_file,
        ..Start::default()
    }
}

fn nuxt(m: &Manifest, plain_start: Option<String>, reasons: &mut Vec<String>) -> Option<Start> {
    if m.script("build")
        .is_some_and(|b| b.contains("nuxt generate"))
    {
        return Some(static_site(
            ".output/public".to_owned(),
            "the build script runs nuxt generate, which puts the site in .output/public".to_owned(),
            reasons,
        ));
    }
    if plain_start.is_some() {
        return None;
    }
    reasons.push(
        "start_command=node .output/server/index.mjs, where nuxt build puts Nuxt's server (it reads PORT and HOST)"
            .to_owned(),
    );
    Some(Start::command(&["node", ".output/server/index.mjs"]))
}

fn sveltekit(
    ctx: &Ctx,
    m: &Manifest,
    reasons: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Start {
    let config = ["svelte.config.js", "svelte.config.mjs", "svelte.config.ts"]
        .into_iter()
        .find_map(|f| Some((f, ctx.peek_source(f)?)));
    let text = config.as_ref().map(|(_, t)| t.as_str()).unwrap_or_default();
    let uses = |adapter: &str| text.contains(adapter) || m.has(adapter);
    if uses("@sveltejs/adapter-node") {
        let out = option_string(text, "out").unwrap_or_else(|| "build".to_owned());
        reasons.push(format!(
            "start_command=node {out} because the app uses @sveltejs/adapter-node (it reads PORT and HOST)"
        ));
        return Start::command(&["node", &out]);
    }
    if uses("@sveltejs/adapter-static") {
        let out = option_string(text, "pages").unwrap_or_else(|| "build".to_owned());
        return static_site(
            out.clone(),
            format!("@sveltejs/adapter-static writes the site to {out}"),
            reasons,
        );
    }
    // adapter-auto (the starter's default) builds nothing runnable outside the hosts it knows;
    // vite preview serves what `vite build` left in .svelte-kit/output with any adapter.
    reasons.push(
        "start_command=vite preview because the app has no adapter with a server of its own (adapter-node) or a static site (adapter-static)"
            .to_owned(),
    );
    warnings.push(format!(
        "{} uses no @sveltejs/adapter-node or adapter-static, so the preview runs `vite preview`, which is not meant for production and needs the dev dependencies; use adapter-node",
        config.map_or_else(|| "the SvelteKit app".to_owned(), |(f, _)| ctx.show(f))
    ));
    Start {
        argv: vec![
            "node_modules/.bin/vite".into(),
            "preview".into(),
            "--host".into(),
            "0.0.0.0".into(),
            "--port".into(),
            "4173".into(),
            "--strictPort".into(),
        ],
        port: Some(4173),
        keep_dev: true,
        ..Start::default()
    }
}

fn astro(
    ctx: &Ctx,
    m: &Manifest,
    plain_start: Option<String>,
    reasons: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Option<Start> {
    let config = [
        "astro.config.mjs",
        "astro.config.js",
        "astro.config.ts",
        "astro.config.mts",
        "astro.config.cjs",
    ]
    .into_iter()
    .find_map(|f| Some((f, ctx.peek_source(f)?)));
    let text = config.as_ref().map(|(_, t)| t.as_str()).unwrap_or_default();
    let server_output = option_string(text, "output").is_some_and(|o| o != "static");
    if m.has("@astrojs/node") {
        if text.contains("middleware") {
            warnings.push(
                "@astrojs/node in middleware mode has no server of its own; use mode: 'standalone'"
                    .to_owned(),
            );
        }
        let argv = match plain_start {
            Some(s) => {
                reasons.push(format!(
                    "start_command={s} from the start script, the @astrojs/node server"
                ));
                command_argv(&s)
            }
            None => {
                reasons.push(
                    "start_command=node dist/server/entry.mjs because the app uses @astrojs/node"
                        .to_owned(),
                );
                vec!["node".into(), "dist/server/entry.mjs".into()]
            }
        };
        reasons.push("port=4321, Astro's default, via PORT".to_owned());
        return Some(Start {
            argv,
            port: Some(4321),
            ..Start::default()
        });
    }
    let adapter = [
        "@astrojs/vercel",
        "@astrojs/netlify",
        "@astrojs/cloudflare",
        "@astrojs/deno",
    ]
    .into_iter()
    .find(|a| m.has(a));
    if server_output || adapter.is_some() {
        warnings.push(format!(
            "the Astro app renders on a server{} that previews cannot run; use @astrojs/node (mode: 'standalone') or static output",
            adapter.map(|a| format!(" for {a}")).unwrap_or_default()
        ));
        return plain_start.is_none().then(Start::default);
    }
    let out = option_string(text, "outDir").unwrap_or_else(|| "dist".to_owned());
    Some(static_site(
        out.clone(),
        format!("Astro's static output goes to {out}"),
        reasons,
    ))
}

fn remix(
    ctx: &Ctx,
    m: &Manifest,
    framework: Framework,
    reasons: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Start {
    let (server_pkg, bin) = match framework {
        Framework::Remix => ("@remix-run/serve", "remix-serve"),
        _ => ("@react-router/serve", "react-router-serve"),
    };
    // SPA mode (ssr: false) builds a client-only app into build/client.
    let spa = ["react-router.config.ts", "react-router.config.js"]
        .into_iter()
        .chain(VITE_CONFIGS)
        .filter_map(|f| ctx.peek_source(f))
        .any(|t| t.contains("ssr: false") || t.contains("ssr:false"));
    if spa {
        return static_site(
            "build/client".to_owned(),
            format!("{} is in SPA mode (ssr: false)", label(framework)),
            reasons,
        );
    }
    let start = m.script("start");
    let from_script = start.as_deref().and_then(|s| {
        let mut words = s.split_whitespace();
        (words.next() == Some(bin)).then(|| words.next().map(str::to_owned))?
    });
    let build = from_script.clone().unwrap_or_else(|| {
        if framework == Framework::Remix && vite_config(ctx).is_none() {
            "build/index.js".to_owned()
        } else {
            "build/server/index.js".to_owned()
        }
    });
    let build = build.trim_start_matches("./").to_owned();
    match &from_script {
        Some(_) => reasons.push(format!(
            "start_command={bin} {build} from the start script ({} reads PORT and HOST)",
            bin
        )),
        None => reasons.push(format!(
            "start_command={bin} {build}, {}'s server for its build",
            label(framework)
        )),
    }
    let mut keep_dev = false;
    if !m.has_runtime(server_pkg) {
        if m.has(server_pkg) {
            keep_dev = true;
            warnings.push(format!(
                "{server_pkg} is a dev dependency, so dev dependencies stay in the image; move it to dependencies"
            ));
        } else {
            warnings.push(format!(
                "{bin} comes from {server_pkg}, which package.json does not depend on; add it to dependencies"
            ));
        }
    }
    Start {
        argv: vec![format!("node_modules/.bin/{bin}"), build],
        keep_dev,
        ..Start::default()
    }
}

fn angular(
    ctx: &Ctx,
    m: &Manifest,
    reasons: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Start {
    let name = m.pkg.get("name").and_then(Value::as_str).unwrap_or("app");
    let workspace: Option<Value> = ctx
        .peek_source("angular.json")
        .and_then(|t| serde_json::from_str(&t).ok());
    let project = workspace.as_ref().and_then(|w| {
        let projects = w.get("projects")?.as_object()?;
        let chosen = w
            .get("defaultProject")
            .and_then(Value::as_str)
            .and_then(|d| projects.get_key_value(d))
            .or_else(|| {
                projects.iter().find(|(_, p)| {
                    p.get("projectType").and_then(Value::as_str) == Some("application")
                })
            })?;
        Some((
            chosen.0.clone(),
            chosen.1.pointer("/architect/build")?.clone(),
        ))
    });
    let (base, browser) = match &project {
        Some((project, build)) => {
            let builder = build
                .get("builder")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let output = build.pointer("/options/outputPath");
            // The application builder (Angular 17+) writes into browser/ and server/ under the
            // output path; the older browser builder writes the site into the path itself.
            let (base, browser) = match output {
                Some(Value::Object(o)) => (
                    o.get("base").and_then(Value::as_str).map(str::to_owned),
                    o.get("browser")
                        .and_then(Value::as_str)
                        .unwrap_or("browser")
                        .to_owned(),
                ),
                Some(Value::String(s)) => (Some(s.clone()), String::new()),
                _ => (None, String::new()),
            };
            let base = base.unwrap_or_else(|| format!("dist/{project}"));
            let browser = if builder.ends_with(":application") && browser.is_empty() {
                "browser".to_owned()
            } else {
                browser
            };
            (base, browser)
        }
        None => {
            warnings.push(format!(
                "angular.json has no application project with a build target; the site is assumed to be in dist/{name}/browser"
            ));
            (format!("dist/{name}"), "browser".to_owned())
        }
    };
    let base = base
        .trim_start_matches("./")
        .trim_end_matches('/')
        .to_owned();
    let ssr = project
        .as_ref()
        .is_some_and(|(_, b)| b.pointer("/options/ssr").is_some_and(|s| s != false));
    if m.has("@angular/ssr") && ssr {
        let entry = format!("{base}/server/server.mjs");
        reasons.push(format!(
            "start_command=node {entry} because the app renders on the server with @angular/ssr"
        ));
        reasons.push("port=4000, Angular SSR's default, via PORT".to_owned());
        return Start {
            argv: vec!["node".into(), entry],
            port: Some(4000),
            ..Start::default()
        };
    }
    let root = if browser.is_empty() {
        base
    } else {
        format!("{base}/{browser}")
    };
    static_site(
        root.clone(),
        format!("ng build puts the app in {root}"),
        reasons,
    )
}

const VITE_CONFIGS: [&str; 4] = [
    "vite.config.ts",
    "vite.config.js",
    "vite.config.mjs",
    "vite.config.mts",
];

fn vite_config(ctx: &Ctx) -> Option<String> {
    VITE_CONFIGS.into_iter().find_map(|f| ctx.peek_source(f))
}

fn vite_out_dir(ctx: &Ctx) -> String {
    vite_config(ctx)
        .and_then(|t| option_string(&t, "outDir"))
        .unwrap_or_else(|| "dist".to_owned())
}

/// The string literal given to `key:` in a JS config, when it is a plain relative path.
fn option_string(text: &str, key: &str) -> Option<String> {
    text.match_indices(key).find_map(|(i, _)| {
        let before = text[..i].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        let rest = text[i + key.len()..].trim_start();
        let rest = rest.strip_prefix(':')?.trim_start();
        let quote = rest.chars().next().filter(|c| "'\"`".contains(*c))?;
        let value = rest[1..].split(quote).next()?;
        let value = value.trim_start_matches("./").trim_end_matches('/');
        (!value.is_empty()
            && !value.starts_with('/')
            && !value.split('/').any(|s| s == "..")
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c)))
        .then(|| value.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_options() {
        assert_eq!(
            option_string("build: { outDir: './www/' }", "outDir").as_deref(),
            Some("www")
        );
        assert_eq!(
            option_string("adapter({ pages: \"public\" })", "pages").as_deref(),
            Some("public")
        );
        assert_eq!(
            option_string("output: 'server',", "output").as_deref(),
            Some("server")
        );
        assert_eq!(option_string("outDir: '../x'", "outDir"), None);
        assert_eq!(option_string("myoutDir: 'x'", "outDir"), None);
        assert_eq!(option_string("outDir: resolve('x')", "outDir"), None);
    }
}
