//! `sundial`: one binary for the server (`serve`), remote workers (`worker`), thin API clients
//! (`job`, `run`, `workers`, `apply`), `cron next`, `openapi`, `completions`, and `bench`.

mod cli;

use clap::{CommandFactory, Parser, Subcommand};

/// A distributed, durable job scheduler.
#[derive(Parser)]
#[command(name = "sundial", version, about)]
pub struct Cli {
    /// Server URL for client commands.
    #[arg(long, global = true, env = "SUNDIAL_SERVER", default_value = "http://127.0.0.1:7070")]
    pub server: String,
    /// Bearer token for client commands and workers.
    #[arg(long = "auth-token", global = true, env = "SUNDIAL_AUTH_TOKEN")]
    pub auth_token: Option<String>,
    /// Output format of client commands.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = cli::client::Output::Table)]
    pub output: cli::client::Output,
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Run a node: API, scheduler, dispatcher, reaper, and an in-process worker pool.
    Serve(Box<cli::serve::ServeArgs>),
    /// Run a remote worker process serving the built-in handlers.
    Worker(cli::worker::WorkerArgs),
    /// Manage jobs.
    #[command(subcommand)]
    Job(cli::client::JobCmd),
    /// Inspect and cancel runs.
    #[command(subcommand)]
    Run(cli::client::RunCmd),
    /// List workers.
    Workers,
    /// Create or update the jobs of a YAML file by namespace/name.
    Apply(cli::client::ApplyArgs),
    /// Flow-control limits per key.
    #[command(subcommand)]
    Limit(cli::limit::LimitCmd),
    /// Calendars of excluded times that triggers name.
    #[command(subcommand)]
    Calendar(cli::calendar::CalendarCmd),
    /// Cron helpers.
    #[command(subcommand)]
    Cron(cli::cron::CronCmd),
    /// Print the API's OpenAPI document (JSON, or the Markdown of docs/api.md).
    Openapi(cli::openapi::OpenapiArgs),
    /// Print a shell completion script (e.g. `sundial completions bash > /etc/bash_completion.d/sundial`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Benchmark a server (started as a child on a fresh database) and check its results.
    Bench(cli::bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = rt.block_on(async move {
        match cli.command {
            Command::Serve(args) => cli::serve::run(*args).await,
            Command::Worker(args) => cli::worker::run(args, cli.server, cli.auth_token).await,
            Command::Job(cmd) => cli::client::Client::new(&cli.server, cli.auth_token, cli.output)?.job(cmd).await,
            Command::Run(cmd) => cli::client::Client::new(&cli.server, cli.auth_token, cli.output)?.run(cmd).await,
            Command::Workers => cli::client::Client::new(&cli.server, cli.auth_token, cli.output)?.workers().await,
            Command::Apply(args) => {
                cli::client::Client::new(&cli.server, cli.auth_token, cli.output)?.apply(args).await
            }
            Command::Openapi(args) => cli::openapi::run(args),
            Command::Completions { shell } => {
                clap_complete::generate(shell, &mut Cli::command(), "sundial", &mut std::io::stdout());
                Ok(())
            }
            Command::Limit(cmd) => cli::client::Client::new(&cli.server, cli.auth_token, cli.output)?.limit(cmd).await,
            Command::Calendar(cmd) => {
                cli::client::Client::new(&cli.server, cli.auth_token, cli.output)?.calendar(cmd).await
            }
            Command::Cron(cmd) => cli::cron::run(cmd),
            Command::Bench(args) => cli::bench::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
