//! NginxControl against a real private nginx: a good conf goes live, a bad one is rolled back.

use std::time::Duration;

use preview_exec::nginx::NginxControl;
use preview_testkit::{PrivateNginx, nginx_binary, wait_for_http};

fn control(nginx: &PrivateNginx) -> NginxControl {
    let base = |extra: &[&str]| {
        let mut argv: Vec<std::ffi::OsString> = vec![nginx_binary().into()];
        argv.extend([
            "-p".into(),
            nginx.prefix().into(),
            "-c".into(),
            nginx.conf_file().into(),
        ]);
        argv.extend(extra.iter().map(Into::into));
        argv
    };
    NginxControl::new(base(&["-t"]), base(&["-s", "reload"])).unwrap()
}

#[tokio::test]
async fn install_tests_then_reloads_and_rolls_back_bad_confs() {
    let nginx = PrivateNginx::start().await;
    let control = control(&nginx);
    let conf = nginx.conf_dir().join("pr-1.conf");

    control
        .install(&conf, "location /a/ { return 200 \"first\"; }\n")
        .await
        .unwrap();
    wait_for_http(nginx.port(), "/a/", Duration::from_secs(10), |a| {
        a.body == "first"
    })
    .await;

    let err = control
        .install(&conf, "location /a/ { return 200 \"second\" }\n")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("check the nginx configuration"),
        "{err}"
    );
    assert!(
        err.stderr_tail().contains("emerg"),
        "nginx's message is carried: {err}"
    );
    assert_eq!(
        std::fs::read_to_string(&conf).unwrap(),
        "location /a/ { return 200 \"first\"; }\n",
        "the previous conf is restored"
    );
    let leftovers: Vec<_> = std::fs::read_dir(nginx.conf_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["pr-1.conf"]);
    control.test().await.expect("the live config still passes");

    let new = nginx.conf_dir().join("pr-2.conf");
    assert!(control.install(&new, "garbage;").await.is_err());
    assert!(!new.exists(), "a refused new conf is removed");

    control.remove(&conf).await.unwrap();
    wait_for_http(nginx.port(), "/a/", Duration::from_secs(10), |a| {
        a.status == 404
    })
    .await;
    control.remove(&conf).await.expect("removing twice is fine");
}
