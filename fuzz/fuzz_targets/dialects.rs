//! The OpenAI and `useChat` translators on untrusted bytes: a client's
//! request body through every request translator, and an upstream answer
//! through every answer translator, whole and as a stream cut into chunks.
//! Nothing may panic, and every translated stream must stay well-formed SSE
//! (whole events, each `data:` JSON or `[DONE]`).
//!
//! Input: byte 0 picks the chunk size of the stream (1 + its value); the
//! rest is used both as a request body and as an upstream answer.

#![no_main]

use gigachat_proxy_core::fuzzing::{translate_answers, translate_requests};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    translate_requests(rest);
    translate_answers(rest, usize::from(cut) + 1);
});
