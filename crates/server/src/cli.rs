//! Flags and their environment equivalents. Two options do not justify an
//! argument-parsing crate; the variables go through the core's reader, so
//! they are spelled and checked like every other setting.

use gigachat_proxy_core::{Env, whole_seconds};

pub const USAGE: &str = "\
Usage: gigachat-proxy [--host HOST] [--port PORT]

Serves /api/gigachat-api/*, /api/gigachat-oauth, /api/gigachat-health and,
at /, a demo chat page.

Options:
  --host HOST   address to listen on (env HOST, default 127.0.0.1;
                use 0.0.0.0 in a container or behind nginx)
  --port PORT   port to listen on (env PORT, default 3000; 0 = any free port)
  -h, --help    this text

Environment: GIGACHAT_PROXY_HEADER_TIMEOUT (seconds, default 30) is how long
a connection may go without a request in flight: from being accepted to its
first request's head, and between requests (HTTP/1.1 and h2c alike).
GIGACHAT_PROXY_MAX_CONNECTIONS caps open client connections (default: half
of the file-descriptor limit left after 64, at most 10000); at the cap the
longest-idle connections are closed, and if every one is busy a new one gets
a 503.

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
}

pub const HEADER_TIMEOUT: &str = "GIGACHAT_PROXY_HEADER_TIMEOUT";
pub const MAX_CONNECTIONS: &str = "GIGACHAT_PROXY_MAX_CONNECTIONS";

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Run(Options),
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
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
                None => (arg.clone(), None),
            };
            match flag.as_str() {
                "-h" | "--help" => return Ok(Parsed::Help),
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
        Ok(Parsed::Run(Options {
            host: host.unwrap_or_else(|| "127.0.0.1".into()),
            port,
            header_timeout,
            max_connections,
        }))
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
        }))
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
        let err = parse(&[], &[(MAX_CONNECTIONS, "lots")]).unwrap_err();
        assert!(!err.contains("lots"), "the value is echoed: {err}");
        assert!(
            parse(&["--verbose"], &[])
                .unwrap_err()
                .contains("--verbose")
        );
    }
}
