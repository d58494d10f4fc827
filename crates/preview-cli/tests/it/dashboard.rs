//! `preview dashboard`: the URL from the setup state, the tunnel, JSON, `--show-token`, and
//! `--open` through a fake `xdg-open` on PATH.

use std::os::unix::fs::PermissionsExt;

use crate::harness::{Bed, SERVER_IP};

#[tokio::test(flavor = "multi_thread")]
async fn prints_the_url_the_tunnel_and_opens_it() {
    let bed = Bed::new().await;
    bed.init().await.ok();

    let before_setup = bed.run(bed.preview(&["dashboard"])).await;
    before_setup.failed();
    assert!(
        before_setup.stderr.contains("run `preview setup` first"),
        "{before_setup:?}"
    );

    bed.setup().await.ok();
    let text = bed.run(bed.preview(&["dashboard"])).await;
    text.ok();
    let first = text.stdout.lines().next().unwrap();
    assert_eq!(first, format!("http://{SERVER_IP}/_dashboard/"), "{text:?}");
    assert!(
        text.stdout.contains("ssh -N -L 3000:127.0.0.1:3000 "),
        "{text:?}"
    );
    let token = bed.secret("api_token");
    assert!(
        !text.stdout.contains(&token),
        "the token only with --show-token"
    );

    let json = bed
        .run(bed.preview(&["dashboard", "--json", "--show-token"]))
        .await;
    json.ok();
    let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["url"], first);
    assert_eq!(report["https"], false);
    assert_eq!(report["tunnelUrl"], "http://127.0.0.1:3000/dashboard/");
    assert_eq!(report["token"], token.as_str());

    // --open hands the URL to xdg-open, as one argument.
    let opened = bed.path("rec/xdg-open-args");
    let fake = bed.path("bin/xdg-open");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\n",
            opened.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    bed.run(bed.preview(&["dashboard", "--open"])).await.ok();
    assert_eq!(
        std::fs::read_to_string(&opened).unwrap(),
        format!("{first}\n")
    );
}
