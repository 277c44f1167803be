//! Memory benchmark: the resident set size of every service, idle and under a realistic load.
//!
//! The whole system runs as real release processes ([`wa_demo::stack::Stack`]: graph-mock and the
//! four services on a fresh vhost and database of their own, deleted afterwards). RSS is read from
//! `/proc/<pid>/status`:
//! - idle: after every service is ready, the system is left alone for a few seconds, then `VmRSS` is
//!   sampled for a few seconds and the median taken (this is the same-run baseline);
//! - under load: the peak is reset (`5` written to `/proc/<pid>/clear_refs`, so `VmHWM` drops to the
//!   current RSS and startup allocations do not count), then for [`LOAD`] the platform publishes
//!   send-jobs to `whatsapp.commands`/`send` with publisher confirms and Meta posts signed inbound
//!   webhooks to ingress, while graph-mock answers every accepted send with its `sent`, `delivered`
//!   and `read` status webhooks. Sampling continues until the system has drained (every job accepted
//!   by graph-mock, every status webhook delivered, every consumed queue empty); the peak is the
//!   larger of `VmHWM` and the highest `VmRSS` sample.
//!
//! Per service the report has the peak under load against the idle figure (ratio peak/idle); the
//! target is a peak under [`TARGET_PEAK_MIB`], well inside the 256 MiB container limit of the
//! Kubernetes manifests. graph-mock is listed for reference only.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wa_amqp::{PublishOptions, Publisher};
use wa_common::topology::{exchange, routing};
use wa_demo::chaos::{signed_inbound_text, template_job};
use wa_demo::stack::{Endpoints, Program, Stack, StackConfig, demo_tenant, drop_isolation};

use crate::report::Figure;

const GROUP: &str = "memory";
/// Quiet time after every service is ready, before the idle figure is sampled.
const IDLE_SETTLE: Duration = Duration::from_secs(5);
/// How long the idle figure is sampled.
const IDLE_WINDOW: Duration = Duration::from_secs(3);
/// How long the load runs.
const LOAD: Duration = Duration::from_secs(25);
/// Send-jobs published per second (the per-number cap is 80).
const JOBS_PER_SECOND: u32 = 50;
/// Signed inbound-message webhooks posted to ingress per second.
const INBOUND_PER_SECOND: u32 = 20;
/// Longest wait for the system to finish the load's work after the last publish.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);
/// RSS sampling period.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// Target for each service's peak RSS under this load.
const TARGET_PEAK_MIB: f64 = 100.0;
/// Status webhooks graph-mock sends for each accepted send to an unscripted number.
const STATUSES_PER_SEND: u64 = 3;

/// The programs measured, in report order: the four services, then graph-mock for reference.
const MEASURED: [Program; 5] = [
    Program::Ingress,
    Program::Sender,
    Program::ConversationSync,
    Program::ReminderScheduler,
    Program::GraphMock,
];

/// Runs the memory benchmark and returns one figure per program.
pub async fn run() -> anyhow::Result<Vec<Figure>> {
    anyhow::ensure!(
        std::path::Path::new("/proc/self/status").exists(),
        "the memory benchmark reads /proc/<pid>/status and needs Linux"
    );
    let id = std::process::id();
    let work_dir = std::env::temp_dir().join(format!("wa-bench-memory-{id}"));
    let config = StackConfig {
        base_port: free_base_port().context("finding five free ports for the stack")?,
        vhost: format!("wa-bench-memory-{id}"),
        database: format!("wa_bench_memory_{id}"),
        work_dir: work_dir.clone(),
        extra_env: BTreeMap::new(),
        endpoints: Endpoints::default(),
    };
    let (vhost, database_url) = (config.vhost.clone(), config.database_url());
    // On Ctrl-C the measurement is dropped (which kills the stack's processes) and the vhost and
    // database are still deleted.
    let measured = tokio::select! {
        measured = measure(config) => measured,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    let cleaned = drop_isolation(&vhost, &database_url)
        .await
        .with_context(|| format!("deleting vhost {vhost} and database {database_url}"));
    let figures = measured.with_context(|| {
        format!(
            "memory benchmark (service logs kept in {})",
            work_dir.display()
        )
    })?;
    cleaned?;
    std::fs::remove_dir_all(&work_dir)
        .with_context(|| format!("removing {}", work_dir.display()))?;
    Ok(figures)
}

/// Starts the stack, measures, and stops every process whatever happened.
async fn measure(config: StackConfig) -> anyhow::Result<Vec<Figure>> {
    eprintln!(
        "memory: starting graph-mock and the four services (release binaries, vhost {}) ...",
        config.vhost
    );
    let stack = Stack::start(config, &Program::ALL).await?;
    let measured = measure_running(&stack).await;
    let stopped = stack.shutdown().await;
    let figures = measured?;
    stopped.context("stopping the stack")?;
    Ok(figures)
}

async fn measure_running(stack: &Stack) -> anyhow::Result<Vec<Figure>> {
    let pids: Vec<(Program, u32)> = MEASURED
        .iter()
        .map(|p| {
            stack
                .pid(*p)
                .map(|pid| (*p, pid))
                .with_context(|| format!("{} has no process id", p.binary()))
        })
        .collect::<anyhow::Result<_>>()?;

    tokio::time::sleep(IDLE_SETTLE).await;
    let idle = idle_rss(&pids).await?;
    let load_before = load_average();

    // Peaks from here on only: startup allocations (config, pools, topology) are not the load's.
    let mut peak_reset = BTreeMap::new();
    for (program, pid) in &pids {
        peak_reset.insert(*program, reset_peak(*pid).is_ok());
    }
    let stop_sampling = CancellationToken::new();
    let sampler = tokio::spawn(sample_max(pids.clone(), stop_sampling.clone()));

    let started = Instant::now();
    let until = started + LOAD;
    let publisher = Publisher::connect(&stack.config.amqp_url(), "wa-bench-memory-platform")
        .await
        .context("connecting the platform's publisher")?;
    let (jobs, inbound) = tokio::join!(
        publish_jobs(&publisher, until),
        post_inbound(stack.config.url(Program::Ingress), until)
    );
    publisher.close().await;
    let (jobs, inbound) = (jobs?, inbound?);
    let drained = drain(stack, jobs).await;
    let elapsed = started.elapsed();

    stop_sampling.cancel();
    let sampled_max = sampler.await.context("RSS sampler panicked")??;
    let load_after = load_average();

    let mut figures = Vec::new();
    let load_text = format!(
        "peak RSS under load ({} s of {JOBS_PER_SECOND} send-jobs/s + {INBOUND_PER_SECOND} inbound webhooks/s + their status webhooks)",
        LOAD.as_secs()
    );
    for (program, pid) in &pids {
        let now = read_memory(*pid)?;
        let sampled = sampled_max.get(program).copied().unwrap_or(0);
        let peak_kib = if peak_reset.get(program).copied().unwrap_or(false) {
            now.hwm_kib.max(sampled)
        } else {
            // Without the reset VmHWM would include startup; the samples are all there is.
            sampled
        };
        let idle_kib = idle.get(program).copied().unwrap_or(0);
        eprintln!(
            "memory: {:<19} idle {:>6.1} MiB, peak under load {:>6.1} MiB, after the load {:>6.1} MiB{}",
            program.binary(),
            mib(idle_kib),
            mib(peak_kib),
            mib(now.rss_kib),
            if peak_reset.get(program).copied().unwrap_or(false) {
                ""
            } else {
                " (VmHWM reset refused: peak from 200 ms samples only)"
            }
        );
        let reference = *program == Program::GraphMock;
        figures.push(Figure {
            group: GROUP.into(),
            name: format!("{}: {load_text}", program.binary()),
            value: mib(peak_kib),
            unit: "MiB".into(),
            baseline_name: Some("idle RSS".into()),
            baseline_value: Some(mib(idle_kib)),
            target: if reference {
                "-".into()
            } else {
                format!("< {TARGET_PEAK_MIB:.0} MiB")
            },
            met: reference || mib(peak_kib) < TARGET_PEAK_MIB,
        });
    }
    eprintln!(
        "memory: load: {} send-jobs confirmed by the broker, {} inbound webhooks answered 200 ({} otherwise: {:?}); \
         graph-mock accepted {} sends and delivered {} status webhooks; {} after {:.1} s; \
         load average {} before, {} after",
        jobs,
        inbound.ok,
        inbound.refused.values().sum::<u64>(),
        inbound.refused,
        drained.accepted,
        drained.statuses_delivered,
        if drained.done {
            "drained"
        } else {
            "NOT drained"
        },
        elapsed.as_secs_f64(),
        load_before,
        load_after,
    );
    anyhow::ensure!(
        inbound.refused.is_empty(),
        "ingress refused inbound webhooks during the memory benchmark: {:?}",
        inbound.refused
    );
    anyhow::ensure!(
        drained.done,
        "the system did not finish the load's work within {DRAIN_LIMIT:?} (graph-mock accepted {} of {jobs} sends, {} status webhooks delivered, {} messages still queued)",
        drained.accepted,
        drained.statuses_delivered,
        drained.queued
    );
    Ok(figures)
}

/// Memory figures of one process, in KiB (as `/proc` reports them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Memory {
    /// `VmRSS`: resident now.
    rss_kib: u64,
    /// `VmHWM`: the highest resident since start or the last peak reset.
    hwm_kib: u64,
}

/// Extracts `VmRSS` and `VmHWM` from the text of `/proc/<pid>/status`.
fn parse_status(status: &str) -> Option<Memory> {
    let field = |name: &str| {
        status.lines().find_map(|line| {
            let value = line.strip_prefix(name)?.strip_prefix(':')?.trim();
            value.strip_suffix("kB")?.trim().parse::<u64>().ok()
        })
    };
    Some(Memory {
        rss_kib: field("VmRSS")?,
        hwm_kib: field("VmHWM")?,
    })
}

fn read_memory(pid: u32) -> anyhow::Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {path} (did the process exit?)"))?;
    parse_status(&status).with_context(|| format!("{path} has no VmRSS/VmHWM"))
}

/// Resets `VmHWM` to the current RSS (Linux ≥ 4.0; allowed on our own children).
fn reset_peak(pid: u32) -> std::io::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The median `VmRSS` of each program over [`IDLE_WINDOW`].
async fn idle_rss(pids: &[(Program, u32)]) -> anyhow::Result<BTreeMap<Program, u64>> {
    let mut samples: BTreeMap<Program, Vec<u64>> = BTreeMap::new();
    let until = Instant::now() + IDLE_WINDOW;
    while Instant::now() < until {
        for (program, pid) in pids {
            samples
                .entry(*program)
                .or_default()
                .push(read_memory(*pid)?.rss_kib);
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    Ok(samples
        .into_iter()
        .map(|(program, mut values)| {
            values.sort_unstable();
            (program, values[values.len() / 2])
        })
        .collect())
}

/// The highest `VmRSS` of each program, sampled until `stop`; fails if a process disappears.
async fn sample_max(
    pids: Vec<(Program, u32)>,
    stop: CancellationToken,
) -> anyhow::Result<BTreeMap<Program, u64>> {
    let mut max: BTreeMap<Program, u64> = BTreeMap::new();
    let mut ticker = tokio::time::interval(SAMPLE_EVERY);
    loop {
        for (program, pid) in &pids {
            let rss = read_memory(*pid)
                .with_context(|| format!("sampling {} under load", program.binary()))?
                .rss_kib;
            let entry = max.entry(*program).or_default();
            *entry = (*entry).max(rss);
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(max),
            _ = ticker.tick() => {}
        }
    }
}

/// The platform: template send-jobs at [`JOBS_PER_SECOND`] to distinct recipients (so graph-mock's
/// pair rate never refuses one), each publish confirmed; returns how many were confirmed.
async fn publish_jobs(publisher: &Publisher, until: Instant) -> anyhow::Result<u64> {
    let mut ticker = steady(JOBS_PER_SECOND);
    let mut published: u64 = 0;
    while Instant::now() < until {
        ticker.tick().await;
        let index = published + 1;
        let job_id = format!("bench-mem-job-{index:06}");
        let to = format!("+62812{:08}", 30_000_000 + index);
        // One in four is a bulk (broadcast) job, as on a day with a departure notice.
        let priority = if index.is_multiple_of(4) {
            "bulk"
        } else {
            "transactional"
        };
        let options = PublishOptions {
            message_id: Some(job_id.clone()),
            tenant_id: Some(demo_tenant::TENANT_ID.into()),
            ..Default::default()
        };
        publisher
            .publish_json(
                exchange::COMMANDS,
                routing::SEND,
                &template_job(&job_id, &to, priority),
                options,
            )
            .await
            .with_context(|| format!("publishing send-job {job_id}"))?;
        published = index;
    }
    Ok(published)
}

/// Ticks `per_second` times a second; a late tick delays the next ones instead of bursting.
fn steady(per_second: u32) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(per_second)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker
}

/// How ingress answered the inbound webhooks.
#[derive(Debug, Default)]
struct InboundTally {
    /// Answered 200.
    ok: u64,
    /// Any other answer (status, or `no answer`), by kind.
    refused: BTreeMap<String, u64>,
}

/// Meta: signed inbound text webhooks at [`INBOUND_PER_SECOND`], each from its own jamaah, posted
/// without waiting for the previous answer (Meta does not either).
async fn post_inbound(ingress: String, until: Instant) -> anyhow::Result<InboundTally> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let url = Arc::new(format!("{ingress}/api/v1/whatsapp/webhook"));
    let mut ticker = steady(INBOUND_PER_SECOND);
    let mut posts = JoinSet::new();
    let mut index: u64 = 0;
    while Instant::now() < until {
        ticker.tick().await;
        index += 1;
        let (body, signature) = signed_inbound_text(
            &format!("62813{:08}", 30_000_000 + index),
            &format!("wamid.BENCH-MEM-IN-{index:06}"),
            &format!("Jamaah {index}"),
            &format!(
                "Assalamualaikum, cicilan ke-{} sudah saya transfer, mohon dicek 🙏",
                index % 12 + 1
            ),
        );
        let (http, url) = (http.clone(), url.clone());
        posts.spawn(async move {
            let answer = http
                .post(url.as_str())
                .header("content-type", "application/json")
                .header(wa_graph_mock::webhook::SIGNATURE_HEADER, signature)
                .body(body)
                .send()
                .await;
            match answer {
                Ok(response) => response.status().as_u16().to_string(),
                Err(_) => "no answer".to_owned(),
            }
        });
    }
    let mut tally = InboundTally::default();
    while let Some(answer) = posts.join_next().await {
        let answer = answer.context("inbound webhook task panicked")?;
        if answer == "200" {
            tally.ok += 1;
        } else {
            *tally.refused.entry(answer).or_default() += 1;
        }
    }
    Ok(tally)
}

/// Where the load's work stood when [`drain`] returned.
struct Drained {
    done: bool,
    accepted: u64,
    statuses_delivered: u64,
    queued: u64,
}

/// One queue of the management API's answer.
#[derive(Deserialize)]
struct QueueInfo {
    #[serde(default)]
    messages: u64,
    #[serde(default)]
    consumers: u64,
}

/// Waits until graph-mock accepted every job and delivered its status webhooks and every queue
/// a service consumes is empty (the platform's own queues have no consumer here and are ignored).
async fn drain(stack: &Stack, jobs: u64) -> Drained {
    let http = reqwest::Client::new();
    let stats_url = format!("{}/_mock/stats", stack.config.url(Program::GraphMock));
    let queues_url = format!(
        "{}/queues/{}",
        stack.config.endpoints.management_api, stack.config.vhost
    );
    let until = Instant::now() + DRAIN_LIMIT;
    loop {
        let stats = async {
            http.get(&stats_url)
                .send()
                .await?
                .json::<wa_graph_mock::Stats>()
                .await
        }
        .await;
        let queues = async {
            http.get(&queues_url)
                .basic_auth("guest", Some("guest"))
                .send()
                .await?
                .json::<Vec<QueueInfo>>()
                .await
        }
        .await;
        let (accepted, statuses_delivered) = stats.as_ref().map_or((0, 0), |s| {
            (
                s.phone_numbers.values().map(|p| p.accepted).sum(),
                s.webhooks.statuses_delivered,
            )
        });
        let queued = queues.as_ref().map_or(u64::MAX, |qs| {
            qs.iter()
                .filter(|q| q.consumers > 0)
                .map(|q| q.messages)
                .sum()
        });
        let done =
            accepted >= jobs && statuses_delivered >= accepted * STATUSES_PER_SEND && queued == 0;
        if done || Instant::now() > until {
            return Drained {
                done,
                accepted,
                statuses_delivered,
                queued,
            };
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The 1-minute load average, to say in the output how busy the machine was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// A base port whose five consecutive ports are free now (other stacks, e.g. `make run` or the
/// chaos run, may hold the usual ones).
fn free_base_port() -> anyhow::Result<u16> {
    let span = Program::ALL.len() as u16;
    (18_400..19_400)
        .step_by(usize::from(span) * 2)
        .find(|base| {
            (0..span).all(|offset| TcpListener::bind(("127.0.0.1", base + offset)).is_ok())
        })
        .context("no five consecutive free ports between 18400 and 19400")
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tsender\nUmask:\t0022\nState:\tS (sleeping)\nVmPeak:\t  812345 kB\n\
        VmSize:\t  812000 kB\nVmHWM:\t   45312 kB\nVmRSS:\t   30720 kB\nRssAnon:\t   20480 kB\nThreads:\t9\n";

    #[test]
    fn status_gives_rss_and_peak_in_kib() {
        assert_eq!(
            parse_status(STATUS),
            Some(Memory {
                rss_kib: 30_720,
                hwm_kib: 45_312
            })
        );
    }

    #[test]
    fn status_without_rss_is_refused() {
        // Kernel threads and zombies have no VmRSS line.
        assert_eq!(parse_status("Name:\tkworker\nState:\tZ (zombie)\n"), None);
        // A prefix of another field must not match (VmRSSx would be a different field).
        assert_eq!(parse_status("VmRSSx:\t 1 kB\nVmHWM:\t 2 kB\n"), None);
    }

    #[test]
    fn peak_reset_forgets_a_freed_allocation() {
        use std::alloc::{GlobalAlloc, Layout, System};
        const BIG: usize = 64 << 20;
        let pid = std::process::id();
        // Every byte written, so it is resident. Taken from the system allocator, which maps a block
        // this large on its own and unmaps it when freed (the global allocator, jemalloc, may keep
        // freed memory for reuse a little longer).
        let layout = Layout::from_size_align(BIG, 4096).expect("layout");
        // SAFETY: `layout` has a non-zero size; the block is written within its size and freed
        // once, with the same layout, by the allocator that gave it.
        unsafe {
            let block = System.alloc(layout);
            assert!(!block.is_null());
            std::ptr::write_bytes(block, 1, BIG);
            assert_eq!(*block.add(BIG - 1), 1);
            System.dealloc(block, layout);
        }
        let before = read_memory(pid).expect("own status");
        assert!(before.hwm_kib >= before.rss_kib + (BIG as u64 >> 10) / 2);
        reset_peak(pid).expect("resetting our own peak");
        let after = read_memory(pid).expect("own status");
        assert!(after.hwm_kib < before.hwm_kib - (BIG as u64 >> 10) / 2);
    }

    #[test]
    fn free_base_port_leaves_five_bindable_ports() {
        let base = free_base_port().expect("a free range");
        for offset in 0..5 {
            assert!(TcpListener::bind(("127.0.0.1", base + offset)).is_ok());
        }
    }
}
