//! The `studyroom` binary: parse configuration, set up logging, run until SIGINT/SIGTERM.

use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cfg = match signaling::config::load() {
        Ok(c) => c,
        Err(e) => {
            // clap's help/version output arrives here too.
            let help = e.starts_with("studyroom") || e.contains("Usage:");
            if help && !e.contains("error:") {
                print!("{e}");
                return std::process::ExitCode::SUCCESS;
            }
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let filter =
        EnvFilter::try_from_env("STUDYROOM_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    if cfg.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
        tracing_subscriber::fmt()
            .with_ansi(ansi)
            .with_env_filter(filter)
            .init();
    }
    // Installed now, not on first poll: a SIGTERM during start-up must drain, not kill.
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("studyroom: cannot install the SIGTERM handler: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        tracing::info!("signal received, shutting down");
    };
    match signaling::run(cfg, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("studyroom: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
