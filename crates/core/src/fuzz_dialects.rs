//! Entry points for the `dialects` fuzz target: every translator of the
//! OpenAI and `useChat` routes on untrusted bytes. They must never panic,
//! and a translated stream must stay well-formed SSE whatever GigaChat (or
//! something pretending to be it) sends.

use bytes::BytesMut;

use crate::openai::stream_body::Translate;
use crate::upstream::sse::SseScanner;

/// A client's request body, through every request translator (errors are
/// expected; panics are not).
pub fn translate_requests(body: &[u8]) {
    let Ok(request) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let config = crate::openai::config::OpenAiConfig::default();
    let full = crate::openai::request::translate(&request, &config);
    if let Ok(chat) = &full {
        // What goes upstream is always a JSON object that serializes.
        assert!(serde_json::to_vec(&chat.body).is_ok());
    }
    // The fast path for plain chats answers only where the full
    // translation answers the same bytes and plan.
    if let Some((body, plan)) = crate::openai::plain_chat::translate(body, &config) {
        let chat = full.as_ref().ok();
        assert!(
            chat.is_some(),
            "the fast path took a chat request the full translation refuses"
        );
        let full_body = chat.and_then(|chat| serde_json::to_vec(&chat.body).ok());
        assert_eq!(full_body.as_deref(), Some(&body[..]));
        let full_plan = chat.map(|chat| format!("{:?}", chat.plan));
        assert_eq!(full_plan, Some(format!("{plan:?}")));
    }
    let _ = crate::openai::responses::translate_request(&request, &config);
    let _ = crate::openai::embeddings::translate_request(&request, &config);
    // The same for plain `useChat` chats, with and without an operator's
    // system prompt.
    for system_prompt in [Some("server prompt"), None] {
        let full = crate::ai_sdk::request::translate(&request, &config, system_prompt);
        if let Some((body, plan)) =
            crate::ai_sdk::plain_chat::translate(body, &config, system_prompt)
        {
            let chat = full.as_ref().ok();
            assert!(
                chat.is_some_and(|(chat, _)| chat.uploads.is_empty()),
                "the fast path took a useChat request the general translation refuses"
            );
            let full_body = chat.and_then(|(chat, _)| serde_json::to_vec(&chat.body).ok());
            assert_eq!(full_body.as_deref(), Some(&body[..]));
            assert_eq!(chat.map(|(_, plan)| plan), Some(&plan));
        }
    }
}

/// An upstream answer, through every answer translator: as a whole JSON
/// answer, and as a stream fed in chunks of `cut` bytes.
pub fn translate_answers(answer: &[u8], cut: usize) {
    let config = crate::openai::config::OpenAiConfig::default();
    let plan = crate::openai::ChatPlan {
        model: "GigaChat".into(),
        include_usage: cut.is_multiple_of(2),
        stop: if cut.is_multiple_of(3) {
            vec!["\n\n".into(), "END".into()]
        } else {
            Vec::new()
        },
        ..Default::default()
    };
    same_events_however_cut(answer, cut);
    let _ = crate::openai::answer::chat_completion(answer, &plan, "r");
    let _ = crate::openai::models::list(answer, &config);
    let _ = crate::openai::models::model(answer, "GigaChat");
    let request = serde_json::json!({"model": "GigaChat", "input": "q"});
    if let Ok((_, responses_plan)) = crate::openai::responses::translate_request(&request, &config)
    {
        let _ = crate::openai::responses::response_object(answer, &responses_plan, "r");
        well_formed(
            crate::openai::responses_stream::ResponseEvents::new(responses_plan, "r"),
            answer,
            cut,
        );
    }
    well_formed(
        crate::openai::chunks::ChatChunks::new(plan, "r"),
        answer,
        cut,
    );
    let ui = serde_json::json!({"messages": [{"id": "u", "role": "user", "parts": [{"type": "text", "text": "q"}]}]});
    if let Ok((_, ui_plan)) = crate::ai_sdk::request::translate(&ui, &config, None) {
        well_formed(
            crate::ai_sdk::stream::UiChunks::new(ui_plan, "r"),
            answer,
            cut,
        );
    }
}

/// The scanner reads the events of a chunk where they lie and copies
/// only what it leaves unfinished: the events (and whether it gave up)
/// must not depend on where the stream was cut.
fn same_events_however_cut(stream: &[u8], cut: usize) {
    type Events = (Vec<(Option<String>, String)>, bool);
    fn scan<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> Events {
        let mut scanner = SseScanner::new();
        let mut events = Vec::new();
        for chunk in chunks {
            scanner.feed(chunk, |event| {
                events.push((
                    event.event.map(|name| name.into_owned()),
                    event.data.into_owned(),
                ));
            });
        }
        (events, scanner.gave_up())
    }
    // Whole, an oversized event is read as it lies; cut, it is given up.
    if stream.len() > crate::upstream::sse::MAX_EVENT_BYTES {
        return;
    }
    let whole = scan(std::iter::once(stream));
    assert_eq!(scan(stream.chunks(cut.max(1))), whole);
    assert_eq!(scan(stream.chunks(1)), whole);
}

/// Feeds `stream` to a translator the way `TranslatedStream` does and
/// checks what it writes: whole events, each `data:` JSON or `[DONE]`.
fn well_formed(mut translator: impl Translate, stream: &[u8], cut: usize) {
    let mut scanner = SseScanner::new();
    let mut out = BytesMut::new();
    let mut open = true;
    for chunk in stream.chunks(cut.max(1)) {
        scanner.feed(chunk, |event| {
            if open {
                open = translator.event(&event.data, &mut out);
            }
        });
        if !open {
            break;
        }
    }
    translator.finish(&mut out);
    let mut events = 0usize;
    let mut reader = SseScanner::new();
    reader.feed(&out, |event| {
        events += 1;
        let data = event.data.as_ref();
        assert!(
            data == "[DONE]" || serde_json::from_str::<serde_json::Value>(data).is_ok(),
            "a translated event is not JSON: {data:?}"
        );
    });
    assert!(
        out.is_empty() || out.ends_with(b"\n\n"),
        "the output ends inside an event"
    );
    assert!(!reader.gave_up());
    let _ = events;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    /// The fuzz entry points run on a real stream and on hostile bytes (the
    /// fuzz target covers the rest).
    #[test]
    fn the_fuzz_entry_points_accept_real_and_hostile_input() {
        let stream = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\",\"role\":\"assistant\"},\"index\":0}],\"created\":1,\"model\":\"GigaChat\",\"object\":\"chat.completion\"}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"\"},\"index\":0,\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,\"total_tokens\":2}}\n\n",
            "data: [DONE]\n\n"
        );
        for cut in [1, 2, 3, 7, 1000] {
            super::translate_answers(stream.as_bytes(), cut);
            super::translate_answers(b"data: {\"choices\":[{\"delta\":{\"function_call\":{\"name\":\"f\",\"arguments\":7}}}]}\n\ndata: \xff\n\n", cut);
        }
        super::translate_requests(br##"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}],"tools":[{"type":"function","function":{"name":"f","parameters":{"$ref":"#"}}}]}"##);
        super::translate_requests(br#"{"messages":[{"id":"u","role":"user","parts":[{"type":"text","text":"q"}]}],"input":[1,2]}"#);
        super::translate_requests(r#"{"id":"c","messages":[{"id":"s","role":"system","parts":[{"type":"text","text":"be brief"}]},{"id":"u","role":"user","parts":[{"type":"text","text":"\u2028q\n"},{"type":"text","text":"🦀"}]}],"trigger":"submit-message"}"#.as_bytes());
        super::translate_requests(br#"{"model":"gpt-4o","messages":[{"role":"system","content":"s"},{"role":"user","content":"q"}],"temperature":0,"stream":true}"#);
    }
}
