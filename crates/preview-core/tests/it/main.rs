//! Integration tests of planning and rendering, on the sample apps in `fixtures/apps/` and the
//! real tools of the test bed: hadolint, `docker compose config`, `nginx -t` and real builds.

mod detection;
mod external;
mod harness;
mod hostile_input;
mod images;
mod real_builds;
mod snapshots;
