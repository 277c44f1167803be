//! End-to-end: the real binaries (graph-mock, ingress, sender, conversation-sync,
//! reminder-scheduler) as separate processes on a fresh vhost and database, playing whole stories.
//! Build the binaries first (`cargo build --workspace --bins`; `make test` does).

use std::collections::BTreeMap;

use wa_demo::scenario;
use wa_demo::stack::{Endpoints, Program, Stack, StackConfig};

fn isolated_config() -> StackConfig {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut extra_env = BTreeMap::new();
    extra_env.insert("REMINDER_SEND_WINDOW".to_owned(), "00:00-23:59".to_owned());
    StackConfig {
        // A block of five: graph-mock, ingress, sender, conversation-sync, reminder-scheduler.
        base_port: wa_testkit::ports::free_port_block(5),
        vhost: format!("wa-e2e-{id}"),
        database: format!("wa_e2e_{id}"),
        work_dir: std::env::temp_dir().join(format!("wa-e2e-{id}")),
        extra_env,
        endpoints: Endpoints::default(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_travel_agency_day_works_end_to_end() {
    let config = isolated_config();
    let (vhost, database_url) = (config.vhost.clone(), config.database_url());
    let stack = Stack::start(config, &Program::ALL)
        .await
        .expect("stack starts");
    let report = scenario::play(&stack).await;
    stack.shutdown().await.expect("graceful shutdown");
    wa_demo::stack::drop_isolation(&vhost, &database_url)
        .await
        .expect("cleanup");
    let report = report.expect("scenario ran");
    let rendered = report.render();
    assert!(report.all_passed(), "{rendered}");
}
