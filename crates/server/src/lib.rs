//! The local and self-hosted server: every route on one port.
//!
//! In development it replaces the Vite dev proxy (which vanishes in
//! production); on a VPS, Railway or Render it is the deployment. Without
//! `GIGACHAT_CREDENTIALS` it starts the built-in GigaChat emulator, so a
//! fresh clone answers chats offline.

mod cli;
mod connections;
mod cores;
mod emulated;
mod linger;
mod probe;
mod serve;
pub mod site;

use std::process::ExitCode;

use gigachat_proxy_core::{Config, Env, Proxy};

pub use cli::Options;
pub use serve::{ConnectionLimits, Server, serve};

/// `cargo run --release`: parse flags, pick the upstream, serve until
/// SIGTERM or Ctrl-C.
pub async fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1), |name| std::env::var(name).ok()) {
        Ok(cli::Parsed::Run(options)) => options,
        Ok(cli::Parsed::CheckHealth(options)) => {
            return probe::check_health(&options.host, options.port).await;
        }
        Ok(cli::Parsed::Help) => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("gigachat-proxy: {message}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    init_tracing();

    let credentials_set = Env::process().get("GIGACHAT_CREDENTIALS").is_some();
    // The core reads `HOST` to know whether it serves only this machine
    // (then it answers only to local host names: DNS rebinding); `--host`
    // must count the same as the variable.
    let host = options.host.clone();
    let environment = move |name: &str| match name {
        "HOST" => Some(host.clone()),
        other => std::env::var(other).ok(),
    };
    let (proxy, emulator) = if credentials_set {
        let config = Config::from_lookup(options.platform, environment);
        (config.map_or_else(Proxy::misconfigured, Proxy::new), None)
    } else {
        match emulated::start(options.platform, environment).await {
            Ok((config, emulator)) => (Proxy::new(config), Some(emulator)),
            Err(err) => {
                eprintln!("gigachat-proxy: could not start the built-in GigaChat emulator: {err}");
                return ExitCode::FAILURE;
            }
        }
    };

    let server = match Server::bind(
        &options.host,
        options.port,
        proxy.clone(),
        ConnectionLimits::from_options(&options),
        options.workers,
    )
    .await
    {
        Ok(server) => server,
        Err(err) => {
            eprintln!(
                "gigachat-proxy: cannot listen on {}:{}: {err} (choose another with --port or PORT)",
                options.host, options.port
            );
            return ExitCode::FAILURE;
        }
    };
    print_banner(&server, proxy.config(), emulator.is_some());
    if let Err(err) = server.run_until_shutdown().await {
        eprintln!("gigachat-proxy: cannot start the worker threads: {err}");
        return ExitCode::FAILURE;
    }
    if let Some(emulator) = emulator {
        emulator.shutdown().await;
    }
    ExitCode::SUCCESS
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let env = Env::process();
    let filter = env
        .get("RUST_LOG")
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let json = env
        .get("GIGACHAT_PROXY_LOG_FORMAT")
        .is_some_and(|format| format.trim() == "json");
    // Colours only for a person at a terminal, not for log files or pipes.
    let colors = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colors)
        .with_writer(std::io::stderr);
    let result = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    drop(result);
}

fn print_banner(server: &Server, config: Option<&Config>, emulated: bool) {
    let url = format!("http://{}", server.local_addr());
    let upstream = match config {
        Some(config) if emulated => format!(
            "the BUILT-IN GIGACHAT EMULATOR at {} (no GIGACHAT_CREDENTIALS set; replies are echoes)",
            config.base_url
        ),
        Some(config) => format!(
            "GigaChat at {} (scope {})",
            config.base_url,
            config.scope.as_str()
        ),
        None => {
            "nothing: the configuration is invalid, every request answers 500 (see the error above)"
                .into()
        }
    };
    // stdout, flushed: tests and scripts read the address from this line.
    println!("gigachat-proxy listening on {url}");
    println!("  upstream: {upstream}");
    println!(
        "  try:      curl -N {url}/api/gigachat-api/chat/completions -H 'Content-Type: application/json' \\"
    );
    println!(
        "              -d '{{\"model\":\"GigaChat\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"Привет\"}}]}}'"
    );
    println!("  health:   {url}/api/gigachat-health");
    println!(
        "  openai:   {url}/api/gigachat-openai/v1  (baseURL for the openai SDKs, the AI SDK, LangChain)"
    );
    println!("  useChat:  {url}/api/gigachat-chat  (the AI SDK's DefaultChatTransport api)");
    println!("  demo:     {url}/  (a chat page that streams replies through the proxy)");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
}
