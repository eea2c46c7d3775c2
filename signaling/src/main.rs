//! The `studyroom` binary: parse configuration, set up logging (and OpenTelemetry traces
//! when an OTLP endpoint is configured), run until SIGINT/SIGTERM, drain, exit.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// jemalloc returns what a churning node freed; glibc's malloc kept it (see `signaling::heap`).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    // One rustls crypto provider for every HTTP client of the process (the OTLP exporter's
    // and the audit webhook's reqwest are built with `rustls-no-provider`): ring, as the
    // TURN relay's TLS uses. Installed before anything can build a client; an error only
    // means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // `studyroom turn [flags]`: the TURN relay alone, same flags.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let turn_only = args.get(1).is_some_and(|a| a == "turn");
    if turn_only {
        args.remove(1);
    }
    let cfg = match signaling::config::load_from(args) {
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
    // Built outside the async runtime: the OTLP exporter's blocking HTTP client must not be
    // created or dropped inside it.
    let traces = match cfg.otlp_endpoint.as_deref().map(otlp_provider).transpose() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("studyroom: OTLP exporter: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let filter =
        || EnvFilter::try_from_env("STUDYROOM_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = if cfg.log_json {
        tracing_subscriber::fmt::layer().json().boxed()
    } else {
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
        tracing_subscriber::fmt::layer().with_ansi(ansi).boxed()
    };
    let otel = traces.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("studyroom"))
            .with_filter(EnvFilter::new("info,signaling=debug"))
    });
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter()))
        .with(otel)
        .init();

    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // A worker about to sleep gives back its allocator cache once per idle period
        // of the node (signaling::heap).
        .on_thread_park(signaling::heap::on_thread_idle)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("studyroom: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let code = rt.block_on(serve(cfg, turn_only));
    drop(rt);
    if let Some(p) = traces {
        // Flush the spans still batched.
        let _ = p.shutdown();
    }
    code
}

async fn serve(cfg: signaling::config::Config, turn_only: bool) -> std::process::ExitCode {
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
    let result = if turn_only {
        signaling::turn_relay::run_alone(cfg, shutdown).await
    } else {
        signaling::run(cfg, shutdown).await
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("studyroom: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

/// An OTLP/HTTP (protobuf) trace pipeline to `endpoint` (the collector's base URL, as in
/// `OTEL_EXPORTER_OTLP_ENDPOINT`; `/v1/traces` is appended).
fn otlp_provider(endpoint: &str) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::{SpanExporter, WithExportConfig};
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = SpanExporter::builder()
        .with_http()
        .with_endpoint(url)
        .build()
        .map_err(|e| e.to_string())?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("studyroom")
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}
