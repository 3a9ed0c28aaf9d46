use std::process::ExitCode;

use clap::Parser;

use cairn_jepsen::cli::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckRegister(args) => {
            let all_completed = cairn_jepsen::cli::check_register(
                &args,
                &mut std::io::stdout().lock(),
                &mut std::io::stderr().lock(),
            )?;
            Ok(exit(all_completed))
        }
        Command::Run(args) => {
            // Ctrl-C ends the run early; dropping it kills the cluster.
            let summary = tokio::select! {
                summary = cairn_jepsen::run::run(&args) => summary?,
                _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
            };
            println!("{}", summary.line);
            Ok(exit(summary.valid))
        }
        Command::Suite(args) => {
            let passed = tokio::select! {
                passed = cairn_jepsen::suite::suite(&args) => passed?,
                _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
            };
            Ok(exit(passed))
        }
        Command::Soak(args) => {
            let passed = tokio::select! {
                passed = cairn_jepsen::suite::soak(&args) => passed?,
                _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
            };
            Ok(exit(passed))
        }
    }
}

fn exit(success: bool) -> ExitCode {
    if success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
