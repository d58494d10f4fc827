//! The docker-compose.preview.yml sanitiser on arbitrary input, against a small checkout with a
//! symlink leading outside: it must accept or refuse, never panic, and whatever it accepts must
//! hold no bind mount outside the checkout and no host port.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use preview_core::checkout::Checkout;
use preview_core::sanitize::{Mount, SanitizeContext, sanitize};

fn checkout() -> &'static Checkout {
    static CHECKOUT: OnceLock<Checkout> = OnceLock::new();
    CHECKOUT.get_or_init(|| {
        let root =
            std::env::temp_dir().join(format!("preview-fuzz-checkout-{}", std::process::id()));
        let _ = std::fs::create_dir_all(root.join("data"));
        let _ = std::fs::write(root.join("Dockerfile"), "FROM scratch\n");
        let _ = std::fs::write(root.join(".env"), "A=1\n");
        let _ = std::os::unix::fs::symlink("/etc", root.join("etc-link"));
        Checkout::open(&root).expect("the fuzz checkout")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let ctx = SanitizeContext {
        checkout: checkout(),
        file: "docker-compose.preview.yml".to_owned(),
    };
    if let Ok(compose) = sanitize(text, &ctx) {
        for service in &compose.services {
            assert!(!service.passthrough.contains_key("ports"));
            assert!(!service.passthrough.contains_key("privileged"));
            for mount in &service.volumes {
                if let Mount::Bind { source, .. } = mount {
                    // Relative, and every component a plain name: nothing climbs out.
                    let path = std::path::Path::new(source);
                    assert!(
                        path.components()
                            .all(|c| matches!(c, std::path::Component::Normal(_))),
                        "{source}"
                    );
                    assert_ne!(
                        path.components().next(),
                        Some(std::path::Component::Normal("etc-link".as_ref())),
                        "{source}"
                    );
                }
            }
        }
    }
});
