//! An upstream repository's own compose stack, unchanged, through the orchestrator, a private
//! nginx and the fake GitHub: the official full-stack FastAPI template
//! (github.com/fastapi/full-stack-fastapi-template). Its code is not ours to commit, so this
//! test is ignored by the test command; fetch the repository and run it by hand:
//!
//! ```sh
//! git clone https://github.com/fastapi/full-stack-fastapi-template /tmp/fastapi-template
//! PREVIEW_UPSTREAM_FASTAPI_TEMPLATE=/tmp/fastapi-template \
//!   cargo test -p preview-orchestrator --test it upstream_compose -- --ignored --nocapture
//! ```
//!
//! On a host whose registries serve its images it goes live; on the test bed, which reaches no
//! image registry, it must fail before any build, with a comment naming exactly the images the
//! host lacks. The images named here are those of its commit 68adb40 (August 2026).

use std::path::PathBuf;
use std::time::Duration;

use preview_testkit::http_get;

use crate::e2e_support::{E2e, Tree};

const TIMEOUT: Duration = Duration::from_secs(900);

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs PREVIEW_UPSTREAM_FASTAPI_TEMPLATE, a checkout of fastapi/full-stack-fastapi-template"]
async fn the_fastapi_full_stack_template_goes_live_or_names_each_image_it_lacks() {
    let dir = PathBuf::from(
        std::env::var_os("PREVIEW_UPSTREAM_FASTAPI_TEMPLATE")
            .expect("set PREVIEW_UPSTREAM_FASTAPI_TEMPLATE to a checkout of the template"),
    );
    let mut tree = Tree::dir(&dir);
    tree.0.retain(|path, _| !path.starts_with(".git/"));
    let e2e = E2e::start("fastapi-template", &[]).await;
    let pr = 1;
    let sha = e2e.commit(pr, &tree, "the template as it ships").await;
    let started = std::time::Instant::now();
    e2e.send("opened", pr, &sha).await;
    let comment = e2e.wait_comment(pr, &[&sha[..7]], TIMEOUT).await;
    let mut comment = comment.body;
    while !comment.contains("Preview live") && !comment.contains("Preview failed") {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(started.elapsed() < TIMEOUT, "no outcome: {comment}");
        comment = e2e.github.comments().last().unwrap().body.clone();
    }
    println!(
        "outcome after {:.1} s:\n{comment}",
        started.elapsed().as_secs_f64()
    );
    if comment.contains("Preview live") {
        let answer = http_get(e2e.nginx.port(), &e2e.path(pr)).await.unwrap();
        assert!(answer.status < 500, "{answer:?}");
    } else {
        assert!(
            comment.contains("failed in the **images** phase"),
            "{comment}"
        );
        for needle in [
            "- `adminer` (service `adminer`): ",
            "- `postgres:18` (service `db`): ",
            "- `oven/bun:1` (`backend/Dockerfile:1`): ",
        ] {
            assert!(comment.contains(needle), "{needle} in {comment}");
        }
        // Left out (Traefik) or built here (backend:latest): never pulled.
        for absent in ["- `traefik", "- `backend:latest`"] {
            assert!(!comment.contains(absent), "{absent} in {comment}");
        }
    }
    e2e.close_and_assert_nothing_left(pr, &sha).await;
    e2e.shutdown().await;
}
