//! What every section measures against: the three processes, the three
//! paths a chat call takes to the emulator, the payload, and the row
//! durations.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use bytes::Bytes;
use hyper::StatusCode;

use crate::args::Args;
use crate::client::{self, Dialect, Target};
use crate::procs::{self, Nginx, Proc};

/// The one user message of every row (15 words: the emulator echoes it as
/// 16 content events plus the usage event and `[DONE]`).
const PROMPT: &str =
    "Напиши короткое стихотворение о весеннем утре в большом городе, где шумят машины и поют птицы";

pub const API_PATH: &str = "/api/gigachat-api/chat/completions";
const DIRECT_PATH: &str = "/api/v1/chat/completions";
/// The proxy's OpenAI dialect of the same call.
const OPENAI_PATH: &str = "/api/gigachat-openai/v1/chat/completions";
/// The proxy's `useChat` route (AI SDK UI message stream).
const UI_CHAT_PATH: &str = "/api/gigachat-chat";

/// The three ways a chat call reaches the emulator.
pub struct Targets {
    pub direct: Target,
    pub nginx: Target,
    pub proxy: Target,
    /// The hyper floor (`bare_hyper_proxy`), when it started.
    pub floor: Target,
}

/// One translated route: where it is, what it is sent (the native
/// payload's meaning in the route's own request dialect), and how its
/// stream carries text.
pub struct Translated {
    pub target: Target,
    /// `None` for a route that has no non-streaming form (`useChat`).
    pub body: Option<Bytes>,
    /// `body` as a file, for wrk's script.
    pub body_file: Option<PathBuf>,
    pub stream_body: Bytes,
    pub dialect: Dialect,
}

/// The running setup every section reads.
pub struct Bench {
    pub args: Args,
    pub emulator: Proc,
    pub proxy: Proc,
    /// `None` when nginx could not start; its rows then say so.
    pub nginx: Option<Nginx>,
    /// `None` when the `bare_hyper_proxy` example is not built or did not
    /// start; its rows are then left out.
    pub floor: Option<Proc>,
    pub targets: Targets,
    /// The non-streaming payload, and the same with `"stream":true`.
    pub body: Bytes,
    pub stream_body: Bytes,
    /// `body` as a file, for wrk's script.
    pub body_file: PathBuf,
    /// The OpenAI route (`/api/gigachat-openai/v1/chat/completions`).
    pub openai: Translated,
    /// The `useChat` route (`/api/gigachat-chat`), stream only.
    pub ui_chat: Translated,
    pub warm: Duration,
    pub measure: Duration,
}

impl Bench {
    /// Starts the emulator, the proxy and nginx, and checks that every path
    /// answers the same call with the same reply.
    pub async fn start(args: Args) -> Result<Self> {
        let (warm, measure) = if args.quick {
            (Duration::from_secs(1), Duration::from_secs(3))
        } else {
            (Duration::from_secs(2), Duration::from_secs(10))
        };

        let emulator =
            procs::start_emulator(&args.emulator_bin, &args.work_dir.join("emulator.log")).await?;
        let (token, _) = client::oauth(emulator.addr).await?;
        let body = chat_body(false);
        let stream_body = chat_body(true);
        let body_file = args.work_dir.join("body.json");
        std::fs::write(&body_file, &body)?;

        let proxy = procs::start_proxy(
            &args.proxy_bin,
            emulator.addr,
            "warn",
            &args.work_dir.join("proxy.log"),
            &[],
        )
        .await?;
        let nginx = match procs::start_nginx(
            &args.nginx,
            &args.bench_dir.join("nginx.conf.template"),
            &args.work_dir.join("nginx"),
            emulator.addr,
            &token,
        )
        .await
        {
            Ok(n) => Some(n),
            Err(e) => {
                eprintln!("nginx could not start: {e:#}");
                None
            }
        };
        let floor = match procs::start_hyper_floor(
            &args.bin_dir.join("examples").join("bare_hyper_proxy"),
            emulator.addr,
            &token,
            &args.work_dir.join("floor.log"),
        )
        .await
        {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("the hyper floor could not start: {e:#}");
                None
            }
        };
        let t = Targets {
            direct: Target {
                addr: emulator.addr,
                path: DIRECT_PATH.to_owned(),
                auth: Some(format!("Bearer {token}")),
            },
            nginx: Target {
                addr: nginx.as_ref().map_or(emulator.addr, |n| n.proc.addr),
                path: API_PATH.to_owned(),
                auth: None,
            },
            proxy: Target {
                addr: proxy.addr,
                path: API_PATH.to_owned(),
                auth: None,
            },
            floor: Target {
                addr: floor.as_ref().map_or(emulator.addr, |f| f.addr),
                path: API_PATH.to_owned(),
                auth: None,
            },
        };
        let openai_json = openai_body(false);
        let openai_body_file = args.work_dir.join("openai-body.json");
        std::fs::write(&openai_body_file, &openai_json)?;
        let openai = Translated {
            target: Target {
                addr: proxy.addr,
                path: OPENAI_PATH.to_owned(),
                auth: None,
            },
            body: Some(openai_json),
            body_file: Some(openai_body_file),
            stream_body: openai_body(true),
            dialect: Dialect::OpenAi,
        };
        let ui_chat = Translated {
            target: Target {
                addr: proxy.addr,
                path: UI_CHAT_PATH.to_owned(),
                auth: None,
            },
            body: None,
            body_file: None,
            stream_body: ui_chat_body(),
            dialect: Dialect::UiMessage,
        };

        // Every target answers the same call with the same reply.
        let mut replies = Vec::new();
        for (name, target) in [
            ("direct", &t.direct),
            ("nginx", &t.nginx),
            ("proxy", &t.proxy),
            ("hyper floor", &t.floor),
        ] {
            if (name == "nginx" && nginx.is_none()) || (name == "hyper floor" && floor.is_none()) {
                continue;
            }
            let mut sender = client::connect(target.addr).await?;
            let (status, answer) = client::post(&mut sender, target, body.clone()).await?;
            if status != StatusCode::OK {
                bail!("{name}: {status}: {}", String::from_utf8_lossy(&answer));
            }
            let v: serde_json::Value = serde_json::from_slice(&answer)?;
            replies.push(v["choices"][0]["message"]["content"].clone());
        }
        if replies.windows(2).any(|w| w[0] != w[1]) {
            bail!("the targets answered differently: {replies:?}");
        }

        Ok(Self {
            args,
            emulator,
            proxy,
            nginx,
            floor,
            targets: t,
            body,
            stream_body,
            body_file,
            openai,
            ui_chat,
            warm,
            measure,
        })
    }

    pub async fn stop(self) {
        if let Some(n) = self.nginx {
            n.proc.stop().await;
            let _ = n.dir;
        }
        if let Some(f) = self.floor {
            f.stop().await;
        }
        self.proxy.stop().await;
        self.emulator.stop().await;
    }
}

fn chat_body(stream: bool) -> Bytes {
    let mut body = serde_json::json!({
        "model": "GigaChat",
        "messages": [{"role": "user", "content": PROMPT}],
    });
    if stream {
        body["stream"] = serde_json::Value::Bool(true);
    }
    Bytes::from(body.to_string())
}

/// The native payload as OpenAI's chat request. GigaChat's v1 chat body is
/// already a valid OpenAI one (`model`, `messages` of role and string
/// content), so the bytes are the same; it is built here on its own so
/// the two can diverge without touching the native rows.
fn openai_body(stream: bool) -> Bytes {
    chat_body(stream)
}

/// The native payload as the AI SDK's `DefaultChatTransport` sends it for a
/// first user message (no `model`: the route's default answers).
fn ui_chat_body() -> Bytes {
    let body = serde_json::json!({
        "id": "c1",
        "messages": [{
            "id": "u1",
            "role": "user",
            "parts": [{"type": "text", "text": PROMPT}],
        }],
        "trigger": "submit-message",
    });
    Bytes::from(body.to_string())
}

/// `POST /_emulator/faults {"chunk_delay_ms": …}` for streams started after.
pub async fn set_chunk_delay(emulator: &std::net::SocketAddr, delay: Duration) -> Result<()> {
    let target = Target {
        addr: *emulator,
        path: "/_emulator/faults".to_owned(),
        auth: None,
    };
    let mut sender = client::connect(*emulator).await?;
    let body = format!("{{\"chunk_delay_ms\":{}}}", delay.as_millis());
    let (status, answer) = client::post(&mut sender, &target, Bytes::from(body)).await?;
    if !status.is_success() {
        bail!(
            "setting the chunk delay: {status} {}",
            String::from_utf8_lossy(&answer)
        );
    }
    Ok(())
}
