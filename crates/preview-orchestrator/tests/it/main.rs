//! Integration tests of the orchestrator: the webhook endpoint, the queue, the store, the
//! internal API and the real binary. Servers bind 127.0.0.1:0; jobs run on a recording runner.

mod access;
mod api;
mod bench_density;
mod binary;
mod cap;
mod compose_stack;
mod crash;
mod dashboard;
mod dashboard_browser;
mod density;
mod e2e_support;
mod gate;
mod grafana;
mod harness;
mod hostnames;
mod isolation;
mod queue;
mod runtime_e2e;
mod runtime_failures;
mod secrets;
mod shared_databases;
mod sleep_wake;
mod store;
mod storm;
mod swarm;
mod timeouts;
mod upstream_compose;
mod upstream_e2e;
mod webhook;
mod zero_downtime;
