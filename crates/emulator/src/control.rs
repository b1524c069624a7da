//! The `/_emulator/*` control surface: the same switches and snapshots as the
//! Rust API, for black-box tests driving the emulator from other processes.
//! Not a GigaChat path, so it is neither recorded nor counted.

use bytes::Bytes;
use http::{Method, Response, StatusCode};

use crate::faults::FaultRequest;
use crate::state::Shared;
use crate::util::{Body, api_error, empty, json};

fn no_content() -> Response<Body> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}

pub(crate) fn handle(shared: &Shared, method: &Method, path: &str, body: &Bytes) -> Response<Body> {
    match (path, method) {
        ("/_emulator/stats", &Method::GET) => json(StatusCode::OK, &shared.stats()),
        ("/_emulator/requests", &Method::GET) => {
            let list: Vec<_> = crate::lock(&shared.recorded).iter().cloned().collect();
            json(StatusCode::OK, &list)
        }
        ("/_emulator/requests", &Method::DELETE) | ("/_emulator/clear-requests", &Method::POST) => {
            crate::lock(&shared.recorded).clear();
            no_content()
        }
        ("/_emulator/faults", &Method::POST) => {
            let parsed = if body.iter().all(u8::is_ascii_whitespace) {
                Ok(FaultRequest::default())
            } else {
                serde_json::from_slice::<FaultRequest>(body)
            };
            match parsed {
                Ok(req) => {
                    shared.faults.apply(&req);
                    no_content()
                }
                Err(e) => api_error(StatusCode::BAD_REQUEST, &format!("invalid faults: {e}")),
            }
        }
        ("/_emulator/reset-stats", &Method::POST) => {
            shared.reset_stats();
            no_content()
        }
        ("/_emulator/health", &Method::GET) => {
            json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
        }
        (
            "/_emulator/stats"
            | "/_emulator/requests"
            | "/_emulator/clear-requests"
            | "/_emulator/faults"
            | "/_emulator/reset-stats"
            | "/_emulator/health",
            _,
        ) => api_error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
        _ => api_error(StatusCode::NOT_FOUND, "Not found"),
    }
}
