//! Flags and their environment equivalents. Two options do not justify an
//! argument-parsing crate; the variables go through the core's reader, so
//! they are spelled and checked like every other setting.

use gigachat_proxy_core::{Env, Platform, whole_seconds};

pub const USAGE: &str = "\
Usage: gigachat-proxy [--host HOST] [--port PORT] [--check-health]

Serves /api/gigachat-api/* (GigaChat's API), /api/gigachat-openai/v1/*
(OpenAI's API over GigaChat), /api/gigachat-chat (the AI SDK's useChat),
/api/gigachat-oauth, /api/gigachat-health, /api/gigachat-budget and, at /,
a demo chat page.

Options:
  --host HOST   address to listen on (env HOST, default 127.0.0.1;
                use 0.0.0.0 in a container or behind nginx)
  --port PORT   port to listen on (env PORT, default 3000; 0 = any free port)
  --check-health
                do not serve: ask the server already running at HOST:PORT
                for /api/gigachat-health (0.0.0.0 means 127.0.0.1) and exit
                0 if it answers 200, else 1 (a container's HEALTHCHECK)
  -h, --help    this text

Environment: GIGACHAT_PROXY_HEADER_TIMEOUT (seconds, default 30) is how long
a connection may go without a request in flight: from being accepted to its
first request's head, and between requests (HTTP/1.1 and h2c alike).
GIGACHAT_PROXY_MAX_CONNECTIONS caps open client connections (default: half
of the file-descriptor limit left after 64, at most 10000); at the cap the
longest-idle connections are closed, and if every one is busy a new one gets
a 503. GIGACHAT_PROXY_WORKERS is how many threads serve connections, each
with its own event loop and upstream connections (default: one per CPU).

GIGACHAT_PROXY_PLATFORM=container (set in the Dockerfile) gives a public
deployment's defaults (rate limits, ownership, the public-page policy,
same-origin CORS) instead of the open local ones (default: local).

Without GIGACHAT_CREDENTIALS the built-in GigaChat emulator is started and used.
See docs/configuration.md for every variable.
";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub host: String,
    pub port: u16,
    /// `GIGACHAT_PROXY_HEADER_TIMEOUT`: see [`USAGE`].
    pub header_timeout: std::time::Duration,
    /// `GIGACHAT_PROXY_MAX_CONNECTIONS`; `None` derives it from the
    /// file-descriptor limit when the server starts.
    pub max_connections: Option<usize>,
    /// `GIGACHAT_PROXY_WORKERS`; `None` is one per CPU the process may use.
    pub workers: Option<usize>,
    /// `GIGACHAT_PROXY_PLATFORM`: the open local defaults, or a public
    /// deployment's in a container.
    pub platform: Platform,
}

pub const PLATFORM: &str = "GIGACHAT_PROXY_PLATFORM";
pub const HEADER_TIMEOUT: &str = "GIGACHAT_PROXY_HEADER_TIMEOUT";
pub const MAX_CONNECTIONS: &str = "GIGACHAT_PROXY_MAX_CONNECTIONS";
pub const WORKERS: &str = "GIGACHAT_PROXY_WORKERS";

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Run(Options),
    /// `--check-health`: probe the server these options describe.
    CheckHealth(Options),
    Help,
}

impl Options {
    /// Flags win over `HOST`/`PORT`, which win over the defaults.
    pub fn parse(
        args: impl IntoIterator<Item = String>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Parsed, String> {
        let env = Env::new(&lookup);
        let mut host = env.get("HOST");
        let mut port = env.get("PORT");
        let mut args = args.into_iter();
        let mut check_health = false;
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
                None => (arg.clone(), None),
            };
            match flag.as_str() {
                "-h" | "--help" => return Ok(Parsed::Help),
                "--check-health" if inline.is_none() => check_health = true,
                "--host" | "--port" => {
                    let value = inline
                        .or_else(|| args.next())
                        .ok_or_else(|| format!("{flag} needs a value"))?;
                    if flag == "--host" {
                        host = Some(value);
                    } else {
                        port = Some(value);
                    }
                }
                other => return Err(format!("unknown argument `{other}`")),
            }
        }
        let port = match port {
            None => 3000,
            Some(port) => port.trim().parse::<u16>().map_err(|_| {
                "the port (--port or PORT) must be a number from 0 to 65535".to_owned()
            })?,
        };
        let header_timeout = env
            .parse(HEADER_TIMEOUT, |value| whole_seconds(value, 1..=3600))
            .map_err(|err| err.to_string())?
            .unwrap_or(std::time::Duration::from_secs(30));
        let max_connections = env
            .count(MAX_CONNECTIONS, 1..=1_000_000)
            .map_err(|err| err.to_string())?;
        let workers = env
            .count(WORKERS, 1..=1024)
            .map_err(|err| err.to_string())?;
        let platform = env
            .parse(PLATFORM, |value| {
                match value.to_ascii_lowercase().as_str() {
                    "local" => Ok(Platform::Local),
                    "container" => Ok(Platform::Container),
                    _ => Err("expected `local` or `container`".to_owned()),
                }
            })
            .map_err(|err| err.to_string())?
            .unwrap_or(Platform::Local);
        let options = Options {
            host: host.unwrap_or_else(|| "127.0.0.1".into()),
            port,
            header_timeout,
            max_connections,
            workers,
            platform,
        };
        Ok(if check_health {
            Parsed::CheckHealth(options)
        } else {
            Parsed::Run(options)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Parsed, String> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Options::parse(args.iter().map(|s| s.to_string()), |name| {
            env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    fn run(host: &str, port: u16) -> Result<Parsed, String> {
        Ok(Parsed::Run(Options {
            host: host.into(),
            port,
            header_timeout: std::time::Duration::from_secs(30),
            max_connections: None,
            workers: None,
            platform: Platform::Local,
        }))
    }

    #[test]
    fn a_container_asks_for_a_deployments_defaults() {
        let Ok(Parsed::Run(options)) = parse(&[], &[("GIGACHAT_PROXY_PLATFORM", "Container")])
        else {
            panic!("GIGACHAT_PROXY_PLATFORM=container is not accepted");
        };
        assert_eq!(options.platform, Platform::Container);
        assert_eq!(
            parse(&[], &[("GIGACHAT_PROXY_PLATFORM", "local")]),
            run("127.0.0.1", 3000)
        );
        let err = parse(&[], &[("GIGACHAT_PROXY_PLATFORM", "vercel")]).unwrap_err();
        assert!(err.contains("GIGACHAT_PROXY_PLATFORM"), "{err}");
    }

    #[test]
    fn defaults_env_and_flags() {
        assert_eq!(parse(&[], &[]), run("127.0.0.1", 3000));
        assert_eq!(
            parse(&[], &[("HOST", "0.0.0.0"), ("PORT", "8080")]),
            run("0.0.0.0", 8080)
        );
        assert_eq!(
            parse(&["--port", "4000"], &[("PORT", "8080")]),
            run("127.0.0.1", 4000)
        );
        assert_eq!(parse(&["--host=::1", "--port=0"], &[]), run("::1", 0));
        assert_eq!(parse(&["--help"], &[]), Ok(Parsed::Help));
        let Ok(Parsed::CheckHealth(options)) = parse(
            &["--check-health"],
            &[("HOST", "0.0.0.0"), ("PORT", "8080")],
        ) else {
            panic!("--check-health is not recognised");
        };
        assert_eq!((options.host.as_str(), options.port), ("0.0.0.0", 8080));
        let Ok(Parsed::Run(options)) = parse(&[], &[(HEADER_TIMEOUT, " 5 ")]) else {
            panic!("a valid header timeout is refused");
        };
        assert_eq!(options.header_timeout, std::time::Duration::from_secs(5));
        let Ok(Parsed::Run(options)) = parse(&[], &[(MAX_CONNECTIONS, "200")]) else {
            panic!("a valid connection cap is refused");
        };
        assert_eq!(options.max_connections, Some(200));
        let Ok(Parsed::Run(options)) = parse(&[], &[(MAX_CONNECTIONS, " ")]) else {
            panic!("an empty connection cap is refused");
        };
        assert_eq!(options.max_connections, None);
        let Ok(Parsed::Run(options)) = parse(&[], &[(WORKERS, "3")]) else {
            panic!("a valid worker count is refused");
        };
        assert_eq!(options.workers, Some(3));
    }

    #[test]
    fn bad_input_is_explained() {
        assert!(
            parse(&["--port"], &[])
                .unwrap_err()
                .contains("--port needs a value")
        );
        assert!(
            parse(&["--port", "http"], &[])
                .unwrap_err()
                .contains("0 to 65535")
        );
        assert!(parse(&[], &[("PORT", "70000")]).is_err());
        for bad in ["0", "1.5", "soon", "3601"] {
            let err = parse(&[], &[(HEADER_TIMEOUT, bad)]).unwrap_err();
            assert!(err.contains(HEADER_TIMEOUT), "{bad}: {err}");
        }
        for bad in ["0", "-1", "1.5", "many", "1000001"] {
            let err = parse(&[], &[(MAX_CONNECTIONS, bad)]).unwrap_err();
            assert!(err.contains(MAX_CONNECTIONS), "{bad}: {err}");
        }
        for bad in ["0", "1025", "all"] {
            let err = parse(&[], &[(WORKERS, bad)]).unwrap_err();
            assert!(err.contains(WORKERS), "{bad}: {err}");
        }
        let err = parse(&[], &[(MAX_CONNECTIONS, "lots")]).unwrap_err();
        assert!(!err.contains("lots"), "the value is echoed: {err}");
        assert!(parse(&["--check-health=yes"], &[]).is_err());
        assert!(
            parse(&["--verbose"], &[])
                .unwrap_err()
                .contains("--verbose")
        );
    }
}
