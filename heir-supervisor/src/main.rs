//! `heir-supervisor`: parse the command line, hand over to the library, report errors.

use std::process::ExitCode;

use clap::Parser;
use heir_supervisor::cli::{Cli, Command};
use heir_supervisor::succession::RunConfig;
use heir_supervisor::{child, db, interface, log, status, succession};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The guard stays single-threaded and runtime-free (see child.rs).
    if let Command::Guard(g) = cli.command {
        return exit(
            child::guard_main(
                g.command,
                g.warm,
                std::time::Duration::from_millis(g.fence_grace_ms),
                g.run_as.as_deref(),
            )
            .map(|()| 0),
        );
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log::error(&format!("cannot start the async runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    exit(rt.block_on(dispatch(cli.command)))
}

async fn dispatch(cmd: Command) -> anyhow::Result<i32> {
    match cmd {
        Command::Run(a) => {
            let (margin, fence_grace) = (a.margin(), a.fence_grace());
            let cfg = RunConfig {
                member: a.member_id.unwrap_or_else(heir_supervisor::hostname),
                dsn: a.dsn.require()?,
                group: a.group,
                ttl: a.ttl,
                interval: a.interval,
                margin,
                fence_grace,
                stop_timeout: a.stop_timeout,
                hold_off: a.hold_off,
                warm: a.warm,
                run_as: a
                    .run_as
                    .as_deref()
                    .map(heir_supervisor::account::Account::for_run_as)
                    .transpose()?,
                command: a.command,
                news: a.news,
            };
            cfg.validate().map_err(anyhow::Error::msg)?;
            succession::run(cfg).await
        }
        Command::Status(a) => {
            status::run(&a.dsn.require()?, a.group.as_deref(), a.json, a.timeout).await
        }
        Command::Interface(a) => interface::run(a).await,
        Command::Db(a) => db::run(a).await,
        Command::Guard(_) => Ok(0),
    }
}

fn exit(res: anyhow::Result<i32>) -> ExitCode {
    match res {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            log::error(&format!("{e:#}"));
            ExitCode::from(1)
        }
    }
}
