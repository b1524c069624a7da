//! The serverless adapters: the only place that knows `vercel_runtime` and
//! `lambda_http`. Each `api/*.rs` entrypoint calls [`run`], which builds the
//! core once per process and hands it to whichever platform started us.

pub mod lambda;
pub mod vercel;

use gigachat_proxy_core::{BoxError, Env, Platform, Proxy};

/// Which platform started this process, decided once from the variables
/// each platform sets for its functions. Vercel first: its functions run
/// on AWS Lambda underneath and may see Lambda's variables too, while only
/// Vercel's runtime hands a function `VERCEL_IPC_PATH`.
pub fn detect() -> Platform {
    if std::env::var_os("VERCEL_IPC_PATH").is_some() {
        Platform::Vercel
    } else if lambda::detected() {
        Platform::Lambda
    } else {
        Platform::Vercel
    }
}

/// Runs the function on the detected platform until the platform stops it.
/// The serverless entrypoints never fall back to the emulator: missing
/// credentials are a configuration error, answered as a JSON 500.
pub async fn run() -> Result<(), BoxError> {
    let platform = detect();
    init_tracing(platform);
    let proxy = Proxy::from_env(platform);
    match platform {
        Platform::Lambda => lambda::run(proxy).await,
        _ => vercel::run(proxy).await,
    }
}

/// Logs as JSON lines on the platforms (CloudWatch and Vercel's log drains
/// index fields), level from `RUST_LOG` (default `info`).
pub fn init_tracing(platform: Platform) {
    use tracing_subscriber::EnvFilter;
    let filter = Env::process()
        .get("RUST_LOG")
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::stderr);
    let result = match platform {
        Platform::Local => builder.try_init(),
        _ => builder.json().with_current_span(false).try_init(),
    };
    // Already initialised (tests, or an embedding program): keep theirs.
    drop(result);
}
