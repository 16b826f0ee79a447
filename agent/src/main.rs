//! `buildagent`: run AWS CodeBuild buildspec files anywhere.
//!
//! The binary is glue: [`cli`] defines the arguments, each command lives in its own module,
//! and `main` maps the outcome to an exit status. Started under the name `codebuild-hash-files`
//! (a link the engine puts on each build's `PATH`), it is that helper instead ([`hash_files`]);
//! likewise `codebuild-tests-run` and `codebuild-glob-search` ([`sharding`]). `run --batch` runs
//! a buildspec's `batch` section ([`batch`]).

mod batch;
mod batch_render;
mod cli;
mod color;
mod dry_run;
mod fleet;
mod hash_files;
mod image;
mod log_sinks;
mod logs;
mod manual;
mod render;
mod run;
mod sharding;
mod validate;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    let argv0 = args.next();
    if hash_files::invoked_as_helper(argv0.as_ref()) {
        return hash_files::main(args);
    }
    if let Some(helper) = sharding::invoked_as(argv0.as_ref()) {
        return sharding::main(helper, args);
    }
    let cli = cli::Cli::parse();
    // Read by every network client deep inside; a bad value is bad input before anything runs.
    if let Err(message) = buildagent_runner::net::timeout() {
        eprintln!("error: {message}");
        return ExitCode::from(2);
    }
    let status = match cli.command {
        cli::Command::Validate(args) => validate::run(&args, cli.color),
        cli::Command::Schema(args) => print_schema(args.job),
        cli::Command::Run(args) if args.batch => batch::run(&args, cli.color),
        cli::Command::Run(args) => run::run(&args, cli.color),
        cli::Command::Image(args) => image::run(&args),
        cli::Command::Logs(args) => logs::run(&args, cli.color),
        cli::Command::Fleet(args) => match &args.command {
            fleet::FleetCommand::Init(args) => fleet::init::run(args),
        },
        cli::Command::Submit(args) => fleet::submit::run(&args, cli.color),
        cli::Command::Status(args) => fleet::status::status(&args),
        cli::Command::Stop(args) => fleet::status::stop(&args),
        cli::Command::List(args) => fleet::status::list(&args),
        cli::Command::Completions(args) => manual::completions(args.shell),
        cli::Command::Man(args) => manual::man(args.out_dir.as_deref()),
        cli::Command::Worker(args) => fleet::worker::run(&args),
    };
    match status {
        Ok(code) => code,
        Err(error) => {
            // A closed pipe (`buildagent schema | head`) is not a failure.
            if error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {error:#}");
            ExitCode::from(run::error_status(&error))
        }
    }
}

fn print_schema(job: bool) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let schema = if job {
        buildagent_fleet::job::json_schema()
    } else {
        buildagent_spec::schema::json_schema()
    };
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &schema)?;
    writeln!(out)?;
    Ok(ExitCode::SUCCESS)
}
