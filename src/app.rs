//! The program: command line → configuration → pipeline → run until a signal.
//! Exit codes as Fluent Bit: 0 normal, 1 configuration or usage error, 255 when the
//! pipeline cannot start.

use std::path::Path;
use std::sync::Arc;

use crate::cli::{self, Action, Cli};
use crate::config::{
    self,
    props::{render_help, render_table},
    Config, ConfigError, Document, PluginKind,
};
use crate::log::{self, Level};
use crate::pipeline::{shutdown, Pipeline};
use crate::plugins;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Runs the agent with `args` (without argv[0]); returns the exit code.
pub fn main(args: &[String]) -> u8 {
    let cli = match cli::parse(args) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("{}", e.0);
            print!("{}", cli::help_text());
            return 1;
        }
    };
    match &cli.action {
        Action::Version => {
            println!("agent v{VERSION} (Fluent Bit 5.1.1 compatible)");
            return 0;
        }
        Action::Help => {
            print!("{}", cli::help_text());
            return 0;
        }
        Action::PluginHelp(kind, name) => return plugin_help(*kind, name),
        Action::Run => {}
    }
    if let Some(dir) = &cli.workdir {
        if let Err(e) = std::env::set_current_dir(dir) {
            crate::error!("cannot change to working directory {}: {e}", dir.display());
            return 1;
        }
    }
    apply_cli_log_level(&cli, None);
    let pipeline = match load(&cli) {
        Ok(p) => p,
        Err(e) => {
            report(&e);
            return 1;
        }
    };
    if cli.dry_run {
        eprintln!("configuration test is successful");
        return 0;
    }
    raise_nofile_limit();
    run(&cli, pipeline)
}

fn apply_cli_log_level(cli: &Cli, config: Option<Level>) {
    let level = if cli.quiet {
        Level::Off
    } else {
        match cli.verbose {
            0 => config.unwrap_or(Level::Info),
            1 => Level::Debug,
            _ => Level::Trace,
        }
    };
    let level = std::env::var("FLB_LOG_LEVEL")
        .ok()
        .and_then(|l| Level::parse(&l))
        .unwrap_or(level);
    log::set_level(level);
}

/// Prints a configuration error as Fluent Bit does: the error, a `[ help]` line, then
/// `configuration file contains errors, aborting.`
pub fn report(e: &ConfigError) {
    crate::error!("{e}");
    if let Some(help) = e.help() {
        log::help(format_args!("{help}"));
    }
    crate::error!("configuration file contains errors, aborting.");
}

/// Loads, validates and builds everything; nothing runs yet.
fn load(cli: &Cli) -> Result<Pipeline, ConfigError> {
    let mut doc = Document::default();
    doc.sections.extend(cli.sections.iter().cloned());
    if let Some(path) = &cli.config {
        let file = if config::yaml::is_yaml(path) {
            config::yaml::load(path)?
        } else {
            config::parser::load(Path::new(path))?
        };
        doc.sections.extend(file.sections);
        doc.warnings.extend(file.warnings);
        doc.vars = file.vars;
    } else if cli.sections.is_empty() {
        return Err(ConfigError::Usage(
            "agent: no configuration given: use -c FILE, or -i INPUT -o OUTPUT".into(),
        ));
    }
    // Command-line [SERVICE] flags go first so that the file's keys override them.
    doc.sections.insert(
        0,
        config::Section {
            kind: config::SectionKind::Service,
            header: "SERVICE".into(),
            span: config::Span::new("command line", 0),
            entries: cli.service.clone(),
            processors: Vec::new(),
        },
    );
    let mut config = Config::from_document(&doc)?;
    let main_dir = cli
        .config
        .as_deref()
        .and_then(|p| Path::new(p).parent())
        .map(|d| {
            if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            }
        });
    let service: Vec<config::Entry> = doc
        .sections
        .iter()
        .filter(|s| s.kind == config::SectionKind::Service)
        .flat_map(|s| s.entries.iter().cloned())
        .collect();
    config::service::check_unsupported_files(&service, main_dir)?;
    config.parsers = std::sync::Arc::new(crate::parser::Parsers::load(
        &config.service,
        &doc.sections,
        main_dir,
    )?);
    config.main_dir = main_dir.map(Path::to_path_buf);
    apply_cli_log_level(cli, Some(config.service.log_level));
    if let Some(file) = &config.service.log_file {
        if let Err(e) = log::set_file(file) {
            return Err(ConfigError::invalid(
                &config::Span::new("[SERVICE] log_file", 0),
                format!("cannot open log file {file}: {e}"),
                None,
            ));
        }
    }
    for w in &doc.warnings {
        crate::warn!("{w}");
    }
    if config.inputs.is_empty() {
        // Fluent Bit starts (and passes --dry-run) without inputs: FireLens fragments and
        // health-check configs have only [SERVICE]. Say so; run until stopped.
        crate::warn!("[config] no input defined: the agent runs but reads nothing (add an [INPUT] section or -i NAME)");
    }
    Pipeline::build(config)
}

fn plugin_help(kind: PluginKind, name: &str) -> u8 {
    let found = match kind {
        PluginKind::Input => plugins::input(name).map(|p| (p.name, p.description, p.props)),
        PluginKind::Filter => plugins::filter(name).map(|p| (p.name, p.description, p.props)),
        PluginKind::Output => plugins::output(name).map(|p| (p.name, p.description, p.props)),
    };
    let upstream = (kind == PluginKind::Output && plugins::output(name).is_some_and(|p| p.net))
        || (kind == PluginKind::Input && plugins::input(name).is_some_and(|p| p.upstream));
    let downstream = kind == PluginKind::Input && plugins::input(name).is_some_and(|p| p.net);
    match found {
        Some((n, d, props)) => {
            print!("{}", render_help(kind, n, d, props));
            if upstream {
                print!("\nNETWORKING\n{}", render_table(crate::net::NET_PROPS));
                print!("\nTLS\n{}", render_table(crate::net::TLS_PROPS));
            }
            if downstream {
                print!(
                    "\nNETWORKING\n{}",
                    render_table(crate::net::DOWNSTREAM_NET_PROPS)
                );
                print!(
                    "\nTLS\n{}{}",
                    render_table(crate::net::TLS_PROPS),
                    render_table(crate::net::DOWNSTREAM_TLS_PROPS)
                );
            }
            0
        }
        None => {
            crate::error!(
                "[config] {} plugin '{name}' does not exist; list them with: agent -h",
                kind.section()
            );
            1
        }
    }
}

fn run(cli: &Cli, pipeline: Pipeline) -> u8 {
    let threads = crate::pipeline::runtime_threads();
    if threads > 2 {
        crate::info!("[engine] runtime threads: {threads} (the inputs' workers)");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            crate::error!("[engine] cannot start the runtime: {e}");
            return 255;
        }
    };
    crate::info!("[agent] version={VERSION}, pid={}", std::process::id());
    let report = rt.block_on(supervise(cli, pipeline));
    // Tasks still running past the grace period are abandoned here.
    rt.shutdown_background();
    let Some(report) = report else { return 255 };
    match report.pending {
        0 => crate::info!("[engine] service has stopped (0 pending tasks)"),
        n => crate::error!("[engine] service has stopped with {n} records not delivered: the grace period ended first (raise 'grace' in [SERVICE], or -1 to wait until delivered)"),
    }
    if report.input_failed {
        crate::error!("[engine] the pipeline could not run as configured; see the error above");
        return 255;
    }
    report.exit_status.unwrap_or(0)
}

/// Runs pipelines until the process is told to stop. A reload (SIGHUP or
/// `/api/v2/reload`, with `hot_reload on`) builds the new configuration first: if it is
/// invalid, the error is logged and the running pipeline keeps going; if it is valid,
/// the running pipeline stops gracefully (inputs stop, everything buffered is
/// delivered within `grace`) and the new one starts.
async fn supervise(cli: &Cli, mut pipeline: Pipeline) -> Option<crate::pipeline::RunReport> {
    let (stop, _) = shutdown::channel();
    let stop = Arc::new(stop);
    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel::<()>(4);
    let hot_reload = pipeline.config.service.hot_reload;
    if let Err(e) = watch_signals(stop.clone(), hot_reload.then(|| reload_tx.clone())) {
        crate::error!("[engine] cannot install signal handlers: {e}");
        return None;
    }
    let mut monitor = None;
    if let Some((listen, port)) = pipeline.config.service.http.clone() {
        match crate::http::bind(&listen, port).await {
            Ok(listener) => {
                let m = crate::http::Monitor::new(
                    pipeline.registry(),
                    pipeline.config.service.health,
                    hot_reload.then(|| crate::http::Reload {
                        tx: reload_tx.clone(),
                        token: pipeline.config.service.reload_token.clone(),
                    }),
                );
                crate::http::spawn(listener, m.clone());
                monitor = Some(m);
            }
            Err(e) => {
                crate::error!("{e}");
                return None;
            }
        }
    }
    drop(reload_tx);
    // After a reload: the configuration that ran before, to go back to if the new one
    // cannot start (a port another process holds): a reload never stops the agent.
    let mut previous: Option<crate::config::Config> = None;
    loop {
        // This pipeline's own stop, fired by the process stop or by a reload.
        let (current, _) = shutdown::channel();
        let current = Arc::new(current);
        let mut process_stop = stop.subscribe();
        let started = std::time::Instant::now();
        let config = pipeline.config.clone();
        let run = pipeline.run(current.clone());
        tokio::pin!(run);
        let next = loop {
            tokio::select! {
                ended = &mut run => {
                    let at_start = ended.input_failed && started.elapsed() < ROLLBACK_WINDOW;
                    match previous.take().filter(|_| at_start).map(Pipeline::build) {
                        Some(Ok(old)) => {
                            crate::error!("[reload] the new configuration failed to start: the previous one runs again");
                            break Next::RollBack(old);
                        }
                        Some(Err(e)) => {
                            report(&e);
                            return Some(ended);
                        }
                        None => return Some(ended),
                    }
                }
                _ = process_stop.wait() => {
                    current.trigger();
                    return Some(run.await);
                }
                Some(()) = reload_rx.recv() => {
                    crate::info!("[reload] reloading the configuration");
                    match load(cli) {
                        Ok(new) => break Next::Reload(new),
                        Err(e) => {
                            report(&e);
                            crate::error!("[reload] the new configuration is invalid: the running one stays");
                        }
                    }
                }
            }
        };
        match next {
            Next::RollBack(old) => pipeline = old,
            Next::Reload(new) => {
                current.trigger();
                let ended = run.await;
                if ended.pending > 0 {
                    crate::warn!(
                        "[reload] {} records of the previous configuration were not delivered within grace",
                        ended.pending
                    );
                }
                previous = Some(config);
                pipeline = new;
                crate::info!("[reload] the new configuration is running");
            }
        }
        if let Some(m) = &monitor {
            m.reloaded(pipeline.registry());
        }
    }
}

/// What runs after the current pipeline.
enum Next {
    /// The reloaded configuration.
    Reload(Pipeline),
    /// The previous configuration again: the reloaded one failed to start.
    RollBack(Pipeline),
}

/// How soon after a reload a failed start sends the agent back to the previous
/// configuration (binding a listener, opening a db: the first moments of a run).
const ROLLBACK_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// SIGINT, SIGTERM and SIGQUIT start a graceful shutdown; a second one exits at once.
/// SIGHUP reloads the configuration when `reload` is given (`hot_reload on`). We use
/// tokio's signal streams rather than `ctrlc` because Fluent Bit's log names the signal
/// and treats SIGHUP differently, and `ctrlc` reports every signal alike.
fn watch_signals(
    trigger: Arc<shutdown::ShutdownTrigger>,
    reload: Option<tokio::sync::mpsc::Sender<()>>,
) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut quit = signal(SignalKind::quit())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        let mut stopping = false;
        loop {
            let name = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
                _ = quit.recv() => "SIGQUIT",
                _ = hup.recv() => {
                    match &reload {
                        Some(tx) => {
                            log::raw(format_args!("[engine] caught signal (SIGHUP)"));
                            let _ = tx.try_send(());
                        }
                        None => crate::warn!("[reload] hot reloading is not enabled"),
                    }
                    continue;
                }
            };
            log::raw(format_args!("[engine] caught signal ({name})"));
            if stopping {
                crate::error!(
                    "[engine] second signal: exiting now; records still buffered are lost"
                );
                std::process::exit(1);
            }
            stopping = true;
            trigger.trigger();
        }
    });
    Ok(())
}

/// Raises the soft limit on open files to the hard limit, as Go programs and most
/// servers do: every client of a server input, output connection and watched file is a
/// descriptor, and the usual soft limit of 1,024 is what one server input's connection
/// cap alone may take. What is still short is handled at accept (see
/// `crate::net::downstream`).
fn raise_nofile_limit() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on this process with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 || r.rlim_cur >= r.rlim_max {
            return;
        }
        let soft = r.rlim_cur;
        r.rlim_cur = r.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &r) == 0 {
            crate::debug!(
                "[engine] open files limit raised from {soft} to {}",
                r.rlim_max
            );
        }
    }
}
