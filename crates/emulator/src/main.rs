//! `gigachat-emulator`: the emulator as a standalone process, for frontend
//! work without credentials and for black-box tests in other languages.
//! Arguments are hand-parsed to keep the dependency set small.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use gigachat_emulator::{Credential, DEFAULT_CREDENTIALS, Emulator, EmulatorConfig, EmulatorTls};

const USAGE: &str = "\
Usage: gigachat-emulator [options]

Options (each also readable from the environment variable in brackets):
  --host HOST                bind address [GIGACHAT_EMULATOR_HOST] (default 127.0.0.1)
  --port PORT                port, 0 = random [GIGACHAT_EMULATOR_PORT] (default 8090)
  --credentials KEY          accepted authorization key, repeatable
                             [GIGACHAT_EMULATOR_CREDENTIALS, comma-separated]
                             (default: the built-in emulator key)
  --scope SCOPE              scope of the keys [GIGACHAT_EMULATOR_SCOPE] (default GIGACHAT_API_PERS)
  --token-ttl-secs N         access token lifetime [GIGACHAT_EMULATOR_TOKEN_TTL_SECS] (default 1800)
  --chunk-delay-ms N         delay between SSE events [GIGACHAT_EMULATOR_CHUNK_DELAY_MS] (default 0)
  --concurrency-limit N      concurrent API requests per key, excess gets 429
                             [GIGACHAT_EMULATOR_CONCURRENCY_LIMIT] (default unlimited)
  --tls-cert FILE            serve HTTPS with this PEM certificate chain, issued for
                             localhost (the URLs then say https://localhost)
                             [GIGACHAT_EMULATOR_TLS_CERT]; needs --tls-key
  --tls-key FILE             its PEM private key [GIGACHAT_EMULATOR_TLS_KEY]
  -h, --help                 print this help
";

#[derive(Debug, PartialEq)]
struct Options {
    host: String,
    port: u16,
    credentials: Vec<String>,
    scope: String,
    token_ttl_secs: u64,
    chunk_delay_ms: u64,
    concurrency_limit: Option<usize>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
}

#[derive(Debug, PartialEq)]
enum Parsed {
    Run(Options),
    Help,
}

fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("{name}: '{value}' is not a valid number"))
}

/// Flags win over environment variables, which win over defaults.
fn parse(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Parsed, String> {
    let mut opts = Options {
        host: env("GIGACHAT_EMULATOR_HOST").unwrap_or_else(|| "127.0.0.1".to_owned()),
        port: env("GIGACHAT_EMULATOR_PORT")
            .map(|v| number("GIGACHAT_EMULATOR_PORT", &v))
            .transpose()?
            .unwrap_or(8090),
        credentials: env("GIGACHAT_EMULATOR_CREDENTIALS")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        scope: env("GIGACHAT_EMULATOR_SCOPE").unwrap_or_else(|| "GIGACHAT_API_PERS".to_owned()),
        token_ttl_secs: env("GIGACHAT_EMULATOR_TOKEN_TTL_SECS")
            .map(|v| number("GIGACHAT_EMULATOR_TOKEN_TTL_SECS", &v))
            .transpose()?
            .unwrap_or(30 * 60),
        chunk_delay_ms: env("GIGACHAT_EMULATOR_CHUNK_DELAY_MS")
            .map(|v| number("GIGACHAT_EMULATOR_CHUNK_DELAY_MS", &v))
            .transpose()?
            .unwrap_or(0),
        concurrency_limit: env("GIGACHAT_EMULATOR_CONCURRENCY_LIMIT")
            .map(|v| number("GIGACHAT_EMULATOR_CONCURRENCY_LIMIT", &v))
            .transpose()?,
        tls_cert: env("GIGACHAT_EMULATOR_TLS_CERT"),
        tls_key: env("GIGACHAT_EMULATOR_TLS_KEY"),
    };
    let mut cli_credentials = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        if matches!(flag, "-h" | "--help") {
            return Ok(Parsed::Help);
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag {
            "--host" => opts.host = value()?,
            "--port" => opts.port = number(flag, &value()?)?,
            "--credentials" => cli_credentials.push(value()?),
            "--scope" => opts.scope = value()?,
            "--token-ttl-secs" => opts.token_ttl_secs = number(flag, &value()?)?,
            "--chunk-delay-ms" => opts.chunk_delay_ms = number(flag, &value()?)?,
            "--concurrency-limit" => opts.concurrency_limit = Some(number(flag, &value()?)?),
            "--tls-cert" => opts.tls_cert = Some(value()?),
            "--tls-key" => opts.tls_key = Some(value()?),
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    if !cli_credentials.is_empty() {
        opts.credentials = cli_credentials;
    }
    if opts.credentials.is_empty() {
        opts.credentials.push(DEFAULT_CREDENTIALS.to_owned());
    }
    if opts.tls_cert.is_some() != opts.tls_key.is_some() {
        return Err("--tls-cert and --tls-key go together".to_owned());
    }
    Ok(Parsed::Run(opts))
}

/// Signal listeners, registered before the "listening" line is printed so a
/// supervisor that signals right after reading it cannot kill us uncleanly.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let install = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for {name}");
                    None
                }
            };
            Signals {
                term: install(SignalKind::terminate(), "SIGTERM"),
                int: install(SignalKind::interrupt(), "SIGINT"),
            }
        }
        #[cfg(not(unix))]
        {
            Signals {}
        }
    }

    async fn wait(self) {
        #[cfg(unix)]
        {
            async fn recv(s: Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                () = recv(self.term) => {}
                () = recv(self.int) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn run(opts: Options) -> Result<(), String> {
    let addr = tokio::net::lookup_host((opts.host.as_str(), opts.port))
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", opts.host))?
        .next()
        .ok_or_else(|| format!("cannot resolve {}", opts.host))?;
    let config = EmulatorConfig {
        credentials: opts
            .credentials
            .iter()
            .map(|k| Credential::new(k.as_str(), opts.scope.as_str()))
            .collect(),
        token_ttl: Duration::from_secs(opts.token_ttl_secs),
        chunk_delay: Duration::from_millis(opts.chunk_delay_ms),
        concurrency_limit: opts.concurrency_limit,
    };
    let tls = match (&opts.tls_cert, &opts.tls_key) {
        (Some(cert), Some(key)) => Some(EmulatorTls {
            cert_chain_pem: std::fs::read(cert).map_err(|e| format!("--tls-cert: {e}"))?,
            key_pem: std::fs::read(key).map_err(|e| format!("--tls-key: {e}"))?,
            client_ca_pem: None,
        }),
        _ => None,
    };
    let signals = Signals::install();
    let emulator = match tls {
        None => Emulator::start(config, addr).await,
        Some(tls) => Emulator::start_tls(config, addr, tls).await,
    }
    .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = emulator.addr();
    let scheme = if opts.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let mut out = std::io::stdout().lock();
    // Tests parse the port from this exact line when started with --port 0.
    let line = format!(
        "gigachat-emulator listening on {scheme}://{bound} (base_url={}, auth_url={})",
        emulator.base_url(),
        emulator.auth_url()
    );
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write to stdout: {e}"))?;
    drop(out);
    tracing::info!(addr = %bound, scope = %opts.scope, "emulator ready");
    signals.wait().await;
    tracing::info!("shutting down");
    emulator.shutdown().await;
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse(&args, &|name| std::env::var(name).ok()) {
        Ok(Parsed::Run(opts)) => opts,
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("gigachat-emulator: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gigachat-emulator: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gigachat-emulator: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    fn run_opts(p: Parsed) -> Options {
        match p {
            Parsed::Run(o) => o,
            Parsed::Help => panic!("unexpected help"),
        }
    }

    #[test]
    fn defaults() {
        let o = run_opts(parse(&[], &|_| None).unwrap());
        assert_eq!(o.host, "127.0.0.1");
        assert_eq!(o.port, 8090);
        assert_eq!(o.credentials, [DEFAULT_CREDENTIALS]);
        assert_eq!(o.scope, "GIGACHAT_API_PERS");
        assert_eq!(o.token_ttl_secs, 1800);
        assert_eq!(o.concurrency_limit, None);
    }

    #[test]
    fn flags_override_env() {
        let env = |name: &str| match name {
            "GIGACHAT_EMULATOR_PORT" => Some("9000".to_owned()),
            "GIGACHAT_EMULATOR_CREDENTIALS" => Some("a,b".to_owned()),
            _ => None,
        };
        let o = run_opts(parse(&args(&[]), &env).unwrap());
        assert_eq!((o.port, o.credentials.len()), (9000, 2));
        let o = run_opts(
            parse(
                &args(&[
                    "--port",
                    "0",
                    "--credentials",
                    "k1",
                    "--credentials=k2",
                    "--scope",
                    "GIGACHAT_API_B2B",
                    "--chunk-delay-ms",
                    "5",
                    "--concurrency-limit",
                    "1",
                ]),
                &env,
            )
            .unwrap(),
        );
        assert_eq!(o.port, 0);
        assert_eq!(o.credentials, ["k1", "k2"]);
        assert_eq!(o.scope, "GIGACHAT_API_B2B");
        assert_eq!(o.chunk_delay_ms, 5);
        assert_eq!(o.concurrency_limit, Some(1));
    }

    #[test]
    fn errors_and_help() {
        assert!(parse(&args(&["--port"]), &|_| None).is_err());
        assert!(parse(&args(&["--port", "x"]), &|_| None).is_err());
        assert!(parse(&args(&["--bogus"]), &|_| None).is_err());
        assert!(parse(&args(&["--tls-cert", "c.pem"]), &|_| None).is_err());
        let o = run_opts(
            parse(&args(&["--tls-cert", "c.pem", "--tls-key=k.pem"]), &|_| {
                None
            })
            .unwrap(),
        );
        assert_eq!(
            (o.tls_cert.as_deref(), o.tls_key.as_deref()),
            (Some("c.pem"), Some("k.pem"))
        );
        assert_eq!(parse(&args(&["-h"]), &|_| None).unwrap(), Parsed::Help);
    }
}
