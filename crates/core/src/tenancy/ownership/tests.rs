//! Unit tests of ownership: sealing, opening, and the lists.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::stream::last_event_end;
use super::*;
use serde_json::json;

const ALICE: &str = "key:aaaaaaaaaaaa";
const BOB: &str = "key:bbbbbbbbbbbb";
const ID: &str = "c757a9c5-1b2d-4f1e-9d7a-0123456789ab";

fn ownership() -> Ownership {
    ownership_under(7)
}

/// An instance whose session secret is 32 bytes of `secret`: another
/// secret is another deployment.
fn ownership_under(secret: u8) -> Ownership {
    Ownership::new(
        &OwnershipConfig {
            enabled: true,
            admins: vec!["sub:root".into()],
        },
        &Secret::new(vec![secret; 32]),
        None,
    )
}

#[test]
fn operators_are_listed_keys_or_holders_of_the_admin_scope() {
    let own = ownership();
    let who = |key: &str, operator: bool| Identity {
        key: key.into(),
        anonymous: false,
        token_budget: None,
        operator,
    };
    assert!(own.is_operator(&who("sub:root", false)));
    assert!(own.is_operator(&who(ALICE, true)));
    assert!(!own.is_operator(&who(ALICE, false)));
}

/// An answer rewritten and its records kept, as `seal_answer` does
/// without Redis.
/// A `HEAD` of a list gets GigaChat's empty body: answered (never a
/// 500), and without the length of everyone's list.
#[tokio::test]
async fn a_head_of_a_list_is_answered_without_its_length() {
    let own = Arc::new(ownership());
    for rewrite in [
        AnswerRewrite::FileList,
        AnswerRewrite::Batches {
            asked: Box::default(),
        },
    ] {
        let mut response = Response::new(crate::body::empty());
        response.headers_mut().insert(
            header::CONTENT_LENGTH,
            http::HeaderValue::from_static("5120"),
        );
        let mut answer = Some(Bytes::new());
        own.seal_answer(ALICE, rewrite, &mut response, false, &mut answer)
            .await
            .unwrap();
        assert!(response.headers().get(header::CONTENT_LENGTH).is_none());
    }
    // A body that is not a list still fails closed.
    let mut response = Response::new(crate::body::empty());
    let mut answer = Some(Bytes::from_static(b"<html>"));
    assert!(
        own.seal_answer(
            ALICE,
            AnswerRewrite::FileList,
            &mut response,
            false,
            &mut answer
        )
        .await
        .is_err()
    );
}

fn rewrite(own: &Ownership, identity: &str, rewrite: AnswerRewrite, answer: &[u8]) -> Value {
    let mut ledger = Ledger::default();
    let owned = own.owned_in_memory(identity);
    let bytes = own
        .rewrite_answer(identity, &rewrite, answer, &owned, &mut ledger)
        .unwrap();
    own.remember_in_memory(identity, &ledger);
    serde_json::from_slice(&bytes).unwrap()
}

/// The raw ids a list answer may show because the call asked for them.
fn asked(ids: &[&str]) -> Box<[String]> {
    ids.iter().map(|id| (*id).to_owned()).collect()
}

/// What a list of batches, threads or assistants that asked for `ids`
/// needs done to its answer.
fn batch_list(ids: &[&str]) -> AnswerRewrite {
    AnswerRewrite::Batches { asked: asked(ids) }
}

fn thread_list(ids: &[&str]) -> AnswerRewrite {
    AnswerRewrite::Threads { asked: asked(ids) }
}

fn assistant_list(ids: &[&str]) -> AnswerRewrite {
    AnswerRewrite::Assistants { asked: asked(ids) }
}

/// A chat call at its endpoint's path.
fn chat(
    own: &Ownership,
    identity: &str,
    endpoint: Endpoint,
    body: &Bytes,
) -> Result<Checked, Error> {
    let path = match endpoint {
        Endpoint::ChatV2 => "v2/chat/completions",
        _ => "chat/completions",
    };
    own.check_request(identity, false, endpoint, path, body)
}

fn config(platform: Platform, vars: &[(&str, &str)]) -> Result<OwnershipConfig, ConfigError> {
    let lookup = |name: &str| {
        vars.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| (*v).to_owned())
    };
    let env = Env::new(&lookup);
    let access = AccessConfig::from_env(&env).unwrap();
    OwnershipConfig::from_env(&env, platform, &access)
}

#[test]
fn ownership_is_on_where_callers_are_many_and_admins_are_known_keys() {
    const KEY: (&str, &str) = ("GIGACHAT_PROXY_API_KEYS", "operator-key-0123456789");
    assert!(!config(Platform::Local, &[]).unwrap().enabled);
    assert!(config(Platform::Local, &[KEY]).unwrap().enabled);
    assert!(config(Platform::Vercel, &[]).unwrap().enabled);
    assert!(
        !config(Platform::Lambda, &[(VAR_OWNERSHIP, "off")])
            .unwrap()
            .enabled
    );
    let admins = config(
        Platform::Local,
        &[KEY, (VAR_ADMIN_KEYS, "operator-key-0123456789, sub:alice")],
    )
    .unwrap()
    .admins;
    assert_eq!(admins.len(), 2);
    assert!(admins[0].starts_with("key:") && admins[1] == "sub:alice");
    for bad in ["not-a-configured-key-0123", "sub:"] {
        let err = config(Platform::Local, &[KEY, (VAR_ADMIN_KEYS, bad)]).unwrap_err();
        assert_eq!(err.variable, VAR_ADMIN_KEYS);
        assert!(
            !err.problem.contains(bad) || bad == "sub:",
            "{}",
            err.problem
        );
    }
}

#[test]
fn a_sealed_id_opens_only_for_its_owner_and_only_untouched() {
    let own = ownership();
    let sealed = own.seal(ALICE, ID);
    assert!(sealed.starts_with(SEALED_PREFIX), "{sealed}");
    assert_eq!(own.open(ALICE, &sealed).as_deref(), Some(ID));
    assert_eq!(own.open(BOB, &sealed).as_deref(), None, "another identity");
    assert_eq!(own.open(ALICE, ID).as_deref(), None, "a raw id");
    assert_eq!(
        own.open(ALICE, &sealed[..sealed.len() - 1]).as_deref(),
        None,
        "truncated"
    );
    assert_eq!(
        own.open(ALICE, &format!("{sealed}A")).as_deref(),
        None,
        "extended"
    );
    // Any one character changed, anywhere past the prefix.
    for at in SEALED_PREFIX.len()..sealed.len() {
        let mut tampered = sealed.clone().into_bytes();
        tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(own.open(ALICE, &tampered).as_deref(), None, "{tampered}");
    }
    let encoded = &sealed[SEALED_PREFIX.len()..];
    for odd in [
        encoded.to_owned(),
        format!("s2~{encoded}"),
        format!("{SEALED_PREFIX}{encoded}=="),
        format!("{SEALED_PREFIX}{}", encoded.replace(['-', '_'], "+")),
        format!("{SEALED_PREFIX}{}", "A".repeat(5000)),
        SEALED_PREFIX.to_owned(),
        "~".to_owned(),
        String::new(),
    ] {
        assert_eq!(own.open(ALICE, &odd).as_deref(), None, "{odd}");
    }
    // Another secret (another deployment) does not open it either.
    let other = ownership_under(8);
    assert_eq!(other.open(ALICE, &sealed).as_deref(), None);
}

/// A sealed id is handed to whoever its owner shares it with; it must not
/// tell them GigaChat's id, which a model could be made to repeat as a
/// generated image sealed for them.
#[test]
fn a_sealed_id_hides_gigachats_id_and_is_the_same_every_time() {
    let own = ownership();
    let long = "x".repeat(MAX_RAW_ID);
    for raw in [
        ID,
        "C757A9C5-1B2D-4F1E-9D7A-0123456789AB",
        "c757a9c51b2d4f1e9d7a0123456789ab",
        "thread-1",
        "файл-1",
        "a",
        long.as_str(),
    ] {
        let sealed = own.seal(ALICE, raw);
        assert_eq!(own.open(ALICE, &sealed).as_deref(), Some(raw));
        assert_eq!(own.seal(ALICE, raw), sealed, "deterministic");
        assert_ne!(own.seal(BOB, raw), sealed, "bound to the identity");
        // Nothing of the id shows: not as text, not as hex of its bytes.
        let hex: String = raw.bytes().map(|byte| format!("{byte:02x}")).collect();
        let packed = raw.replace('-', "");
        for shown in [raw, hex.as_str(), packed.as_str()] {
            if shown.len() >= 4 {
                assert!(!sealed.contains(shown), "{sealed} shows {shown}");
            }
        }
        // Safe in a path and a query as it is.
        assert!(
            sealed[SEALED_PREFIX.len()..]
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
            "{sealed}"
        );
    }
    // GigaChat's UUIDs seal short.
    assert!(own.seal(ALICE, ID).len() <= 48, "{}", own.seal(ALICE, ID));
    // Past the bound an id seals to something that opens for no one.
    let too_long = "x".repeat(MAX_RAW_ID + 1);
    assert_eq!(own.open(ALICE, &own.seal(ALICE, &too_long)), None);
    assert_eq!(own.open(ALICE, &own.seal(ALICE, "")), None);
}

/// Threads at once each seal with a cipher of their own; an id seals the
/// same on every one and opens.
#[test]
fn sealing_from_many_threads_at_once_gives_the_same_ids() {
    let own = Arc::new(ownership());
    let expected = own.seal(ALICE, ID);
    let sealers: Vec<_> = (0..4)
        .map(|_| {
            let own = Arc::clone(&own);
            std::thread::spawn(move || {
                (0..2_000)
                    .map(|_| {
                        let sealed = own.seal(ALICE, ID);
                        let opened = own.open(ALICE, &sealed);
                        (sealed, opened)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for sealer in sealers {
        for (sealed, opened) in sealer.join().unwrap() {
            assert_eq!(sealed, expected);
            assert_eq!(opened.as_deref(), Some(ID));
        }
    }
}

/// What AES-SIV (RFC 5297) under the derived key gives for these ids,
/// computed by another implementation: ids already handed out keep
/// opening only while the cipher, the key's derivation, the packing and
/// the encoding all stay as they are.
const SEALED_ALICE_ID_UNDER_7: &str = "s1~AqB-kTA_qAmlHoIfSSx-eBAnP4Jx0svPYS27Hwsitt09";
const SEALED_ALICE_ID_UNDER_8: &str = "s1~bWlC_-HM4l5AB71DJJ4RyTYx0oBlVwynGf2P2N9R58Lo";

#[test]
fn sealed_ids_are_the_same_bytes_they_always_were() {
    let own = ownership();
    assert_eq!(own.seal(ALICE, ID), SEALED_ALICE_ID_UNDER_7);
    assert_eq!(
        own.seal(ALICE, "thread-1"),
        "s1~zb90v4BRLj1M0jCjwkYUSwN0bxYrSoYAbg"
    );
    assert_eq!(
        own.seal(BOB, ID),
        "s1~V_VK11LKbZViaFr3kcMLsZx09qk6Xawc6CdHO4idFTSw"
    );
    assert_eq!(own.seal(ALICE, ID), SEALED_ALICE_ID_UNDER_7, "again");
    assert_eq!(
        own.open(ALICE, SEALED_ALICE_ID_UNDER_7).as_deref(),
        Some(ID)
    );
}

/// A thread keeps the cipher of the instance it last served: instances
/// under other secrets (several proxies in one process), used in turn on
/// one thread and on several, each seal and open with their own key only.
#[test]
fn instances_under_different_secrets_in_turn_keep_their_own_keys() {
    let seven = Arc::new(ownership_under(7));
    let eight = Arc::new(ownership_under(8));
    let in_turn = move || {
        for _ in 0..3 {
            assert_eq!(seven.seal(ALICE, ID), SEALED_ALICE_ID_UNDER_7);
            assert_eq!(eight.seal(ALICE, ID), SEALED_ALICE_ID_UNDER_8);
            assert_eq!(seven.open(ALICE, SEALED_ALICE_ID_UNDER_8), None);
            assert_eq!(
                eight.open(ALICE, SEALED_ALICE_ID_UNDER_8).as_deref(),
                Some(ID)
            );
            assert_eq!(eight.open(ALICE, SEALED_ALICE_ID_UNDER_7), None);
            assert_eq!(
                seven.open(ALICE, SEALED_ALICE_ID_UNDER_7).as_deref(),
                Some(ID)
            );
        }
    };
    let threads: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(in_turn.clone()))
        .collect();
    in_turn();
    for thread in threads {
        thread.join().unwrap();
    }
    // A new instance under the first secret seals as the first did.
    assert_eq!(ownership().seal(ALICE, ID), SEALED_ALICE_ID_UNDER_7);
}

/// Ids sealed the earlier way (`{id}~{hex HMAC tag}` under the same
/// secret) are no longer accepted: they showed GigaChat's id.
#[test]
fn an_id_sealed_the_earlier_way_opens_for_no_one() {
    let own = ownership();
    let mut key = <Hmac<Sha256> as Mac>::new_from_slice(&[7; 32]).unwrap();
    key.update(b"gigachat-proxy object ownership tag key v1");
    let key = key.finalize().into_bytes();
    let mut tag = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
    for part in [ALICE.as_bytes(), ID.as_bytes()] {
        tag.update(&(part.len() as u64).to_be_bytes());
        tag.update(part);
    }
    let tag: String = tag.finalize().into_bytes()[..12]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let earlier = format!("{ID}~{tag}");
    assert_eq!(own.open(ALICE, &earlier), None);
    assert_eq!(own.open(ALICE, &format!("{SEALED_PREFIX}{earlier}")), None);
    let path = format!("files/{earlier}");
    assert!(matches!(
        own.check_request(ALICE, false, Endpoint::FileInfo, &path, &Bytes::new()),
        Err(Error::ObjectNotFound("File"))
    ));
}

#[test]
fn file_paths_open_for_the_owner_and_are_not_found_for_others() {
    let own = ownership();
    let sealed = own.seal(ALICE, ID);
    let body = Bytes::new();
    for (path, expected) in [
        (format!("files/{sealed}"), format!("files/{ID}")),
        (
            format!("v1/files/{sealed}/content"),
            format!("v1/files/{ID}/content"),
        ),
        (
            format!("files/{sealed}/delete"),
            format!("files/{ID}/delete"),
        ),
    ] {
        let method = if path.ends_with("delete") {
            http::Method::POST
        } else {
            http::Method::GET
        };
        let endpoint = Endpoint::classify(&method, &path, crate::endpoint::ApiVersion::V1);
        let checked = own
            .check_request(ALICE, false, endpoint, &path, &body)
            .unwrap();
        assert_eq!(checked.path.as_deref(), Some(expected.as_str()));
        assert!(matches!(
            own.check_request(BOB, false, endpoint, &path, &body),
            Err(Error::ObjectNotFound("File"))
        ));
    }
    let raw = format!("files/{ID}");
    assert!(matches!(
        own.check_request(ALICE, false, Endpoint::FileInfo, &raw, &body),
        Err(Error::ObjectNotFound("File"))
    ));
    // The operator passes unchanged.
    let checked = own
        .check_request("sub:root", true, Endpoint::FileInfo, &raw, &body)
        .unwrap();
    assert!(checked.path.is_none());
}

#[test]
fn chat_bodies_carry_only_the_callers_files() {
    let own = ownership();
    let sealed = own.seal(ALICE, ID);
    let v1 = Bytes::from(
        serde_json::json!({"model":"GigaChat","messages":[{"role":"user","content":"x","attachments":[sealed]}]})
            .to_string(),
    );
    let opened = sent(&chat(&own, ALICE, Endpoint::Chat, &v1).unwrap());
    assert_eq!(opened["messages"][0]["attachments"][0], ID);
    assert!(matches!(
        chat(&own, BOB, Endpoint::Chat, &v1),
        Err(Error::ObjectNotFound("File"))
    ));
    let v2 = Bytes::from(
        serde_json::json!({"messages":[{"role":"user","content":[{"text":"x"},{"files":[{"id":sealed}]}]}]})
            .to_string(),
    );
    let opened = sent(&chat(&own, ALICE, Endpoint::ChatV2, &v2).unwrap());
    assert_eq!(opened["messages"][0]["content"][1]["files"][0]["id"], ID);
    assert!(chat(&own, BOB, Endpoint::ChatV2, &v2).is_err());
    // A duplicated key is read once, the last one, and sent that way.
    let duplicated = Bytes::from(format!(
        r#"{{"messages":[{{"role":"user","content":"x","attachments":["{sealed}"],"attachments":["{ID}"]}}]}}"#
    ));
    assert!(chat(&own, ALICE, Endpoint::Chat, &duplicated).is_err());
    // Threads: a sealed one opens for its owner only.
    let thread = own.seal(ALICE, "thread-1");
    let continued = Bytes::from(format!(
        r#"{{"storage":{{"thread_id":"{thread}"}},"messages":[]}}"#
    ));
    let opened = sent(&chat(&own, ALICE, Endpoint::ChatV2, &continued).unwrap());
    assert_eq!(opened["storage"]["thread_id"], "thread-1");
    for foreign in [
        continued,
        Bytes::from_static(br#"{"storage":{"thread_id":"thread-1"},"messages":[]}"#),
        Bytes::from_static(br#"{"storage":{"thread_id":7},"messages":[]}"#),
    ] {
        assert!(matches!(
            chat(&own, BOB, Endpoint::ChatV2, &foreign),
            Err(Error::ObjectNotFound("Thread"))
        ));
    }
    // Assistants: a sealed one opens for its owner only, at the top level
    // and in `storage`.
    let assistant = own.seal(ALICE, "assistant-1");
    for (body, pointer) in [
        (
            format!(r#"{{"storage":{{"assistant_id":"{assistant}"}},"messages":[]}}"#),
            "/storage/assistant_id",
        ),
        (
            format!(r#"{{"assistant_id":"{assistant}","messages":[]}}"#),
            "/assistant_id",
        ),
    ] {
        let body = Bytes::from(body);
        let opened = sent(&chat(&own, ALICE, Endpoint::ChatV2, &body).unwrap());
        assert_eq!(opened.pointer(pointer).unwrap(), "assistant-1");
        assert!(matches!(
            chat(&own, BOB, Endpoint::ChatV2, &body),
            Err(Error::ObjectNotFound("Assistant"))
        ));
    }
    for foreign in [
        &br#"{"storage":{"assistant_id":"assistant-1"},"messages":[]}"#[..],
        br#"{"assistant_id":"assistant-1","messages":[]}"#,
        br#"{"assistant_id":["x"],"messages":[]}"#,
    ] {
        assert!(matches!(
            chat(&own, ALICE, Endpoint::ChatV2, &Bytes::from_static(foreign)),
            Err(Error::ObjectNotFound("Assistant"))
        ));
    }
    assert!(matches!(
        chat(&own, ALICE, Endpoint::Chat, &Bytes::from_static(b"{bad")),
        Err(Error::OwnershipUnreadableBody)
    ));
}

#[test]
fn stream_events_end_at_a_blank_line_in_any_line_ending() {
    assert_eq!(last_event_end(b"data: a\n\ndata: b"), Some(9));
    assert_eq!(last_event_end(b"data: a\r\n\r\n"), Some(11));
    assert_eq!(last_event_end(b"data: a\r\rdata"), Some(9));
    assert_eq!(last_event_end(b"data: a\ndata: b\r\n"), None);
    assert_eq!(last_event_end(b""), None);
    let own = ownership();
    let mut ledger = Ledger::default();
    let event =
        b"data: {\"choices\":[{\"delta\":{\"content\":\"<img src=\\\"f-1\\\"/>\"}}]}\r\n\r\n";
    let sealed = own.seal_event(ALICE, event, &mut ledger).unwrap();
    let sealed = String::from_utf8(sealed).unwrap();
    assert!(
        sealed.ends_with("\r\n\r\n") && sealed.contains('~'),
        "{sealed}"
    );
    assert_eq!(ledger.added, ["f-1"]);
    assert!(
        own.seal_event(ALICE, b"data: {\"choices\":[]}\n\n", &mut ledger)
            .is_none()
    );
}

#[test]
fn answers_are_sealed_and_lists_hold_only_the_callers_files() {
    let own = ownership();
    let upload = format!(r#"{{"id":"{ID}","object":"file"}}"#);
    let uploaded = rewrite(&own, ALICE, AnswerRewrite::File, upload.as_bytes());
    assert_eq!(
        own.open(ALICE, uploaded["id"].as_str().unwrap()).as_deref(),
        Some(ID)
    );
    let list = format!(r#"{{"data":[{{"id":"{ID}"}},{{"id":"someone-else"}}]}}"#);
    let mine = rewrite(&own, ALICE, AnswerRewrite::FileList, list.as_bytes());
    assert_eq!(mine["data"].as_array().unwrap().len(), 1);
    assert_eq!(mine["data"][0]["id"], uploaded["id"]);
    let theirs = rewrite(&own, BOB, AnswerRewrite::FileList, list.as_bytes());
    assert!(theirs["data"].as_array().unwrap().is_empty());
    let image = r#"{"choices":[{"message":{"role":"assistant","content":"Here <img src=\"img-1\" fuse=\"true\"/> done"}}]}"#;
    let chat = rewrite(&own, BOB, AnswerRewrite::Chat, image.as_bytes());
    let content = chat["choices"][0]["message"]["content"].as_str().unwrap();
    let sealed = content
        .split("src=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert_eq!(own.open(BOB, sealed).as_deref(), Some("img-1"));
    assert!(content.ends_with("fuse=\"true\"/> done"));
    assert!(own.owned_in_memory(BOB).contains("img-1"));
    let threaded = rewrite(
        &own,
        BOB,
        AnswerRewrite::Chat,
        br#"{"thread_id":"t-9","messages":[]}"#,
    );
    assert_eq!(
        own.open(BOB, threaded["thread_id"].as_str().unwrap())
            .as_deref(),
        Some("t-9")
    );
    // A deletion takes the file off the list.
    let deleted = format!(r#"{{"id":"{ID}","deleted":true}}"#);
    rewrite(&own, ALICE, AnswerRewrite::Deleted, deleted.as_bytes());
    let mine = rewrite(&own, ALICE, AnswerRewrite::FileList, list.as_bytes());
    assert!(mine["data"].as_array().unwrap().is_empty());
}

fn batch_call(
    own: &Ownership,
    identity: &str,
    method: http::Method,
    query: Option<&str>,
    body: &[u8],
) -> Result<Checked, Error> {
    own.check_call(
        identity,
        false,
        Endpoint::Batches,
        &method,
        "batches",
        query,
        &Bytes::copy_from_slice(body),
    )
}

#[test]
fn batch_queries_open_for_the_owner_only_and_are_sent_as_checked() {
    let own = ownership();
    let sealed = own.seal(ALICE, ID);
    let query = format!("batch_id={sealed}");
    let checked = batch_call(&own, ALICE, http::Method::GET, Some(&query), b"").unwrap();
    assert_eq!(
        checked.query.as_deref(),
        Some(format!("batch_id={ID}").as_str())
    );
    assert_eq!(checked.answer, batch_list(&[ID]));
    // The tag encoded the way some clients encode `~` opens too.
    let encoded = format!("batch_id={}", sealed.replace('~', "%7E"));
    let checked = batch_call(&own, ALICE, http::Method::GET, Some(&encoded), b"").unwrap();
    assert_eq!(
        checked.query.as_deref(),
        Some(format!("batch_id={ID}").as_str())
    );
    // Another identity, the raw id, an encoded name, a duplicate: none
    // reaches GigaChat.
    for foreign in [
        (BOB, query.clone()),
        (ALICE, format!("batch_id={ID}")),
        (ALICE, format!("batch%5Fid={ID}")),
        (ALICE, format!("batch_id={sealed}&batch_id={ID}")),
        (ALICE, "batch_id=".to_owned()),
        (ALICE, "batch_id=%FF".to_owned()),
    ] {
        assert!(
            matches!(
                batch_call(&own, foreign.0, http::Method::GET, Some(&foreign.1), b""),
                Err(Error::ObjectNotFound("Batch"))
            ),
            "{foreign:?}"
        );
    }
    // A separator the proxy does not split at is sent encoded, so no
    // server can read a `batch_id` in it.
    let checked = batch_call(
        &own,
        ALICE,
        http::Method::GET,
        Some(&format!("x=1;batch_id={ID}")),
        b"",
    )
    .unwrap();
    assert_eq!(
        checked.query.as_deref(),
        Some(format!("x=1%3Bbatch_id%3D{ID}").as_str())
    );
    // The list asks for no batch: the caller's recorded ones answer.
    let listed = batch_call(&own, ALICE, http::Method::GET, None, b"").unwrap();
    assert_eq!(listed.answer, batch_list(&[]));
    assert!(listed.query.is_none());
    // Calls GigaChat's batch API does not have are the operator's.
    assert!(matches!(
        batch_call(&own, ALICE, http::Method::DELETE, None, b""),
        Err(Error::OperatorOnly)
    ));
    assert!(matches!(
        own.check_call(
            ALICE,
            false,
            Endpoint::Batches,
            &http::Method::GET,
            "batches/x",
            None,
            &Bytes::new()
        ),
        Err(Error::OperatorOnly)
    ));
    // The operator passes unchanged.
    let operator = own
        .check_call(
            "sub:root",
            true,
            Endpoint::Batches,
            &http::Method::GET,
            "batches",
            Some(&format!("batch_id={ID}")),
            &Bytes::new(),
        )
        .unwrap();
    assert!(operator.query.is_none() && operator.answer == AnswerRewrite::None);
}

#[test]
fn batch_lines_carry_only_the_callers_objects() {
    let own = ownership();
    let sealed = own.seal(ALICE, ID);
    let thread = own.seal(ALICE, "thread-1");
    let body = format!(
        "{}\n\n{}\r\n{}\n",
        serde_json::json!({"key": "1", "request": {"model": "GigaChat", "messages": [
            {"role": "user", "content": "x\u{2028}y", "attachments": [sealed]}]}}),
        serde_json::json!({"key": "2", "request": {"messages": [
            {"role": "user", "content": [{"text": "x"}, {"files": [{"id": sealed}]}]}],
            "storage": {"thread_id": thread}}}),
        serde_json::json!({"key": "3", "request": {"model": "Embeddings", "input": ["a"],
            "functions": [{"name": "f", "parameters": {"properties": {"files": {"type": "array"}}}}]}}),
    );
    let checked = batch_call(
        &own,
        ALICE,
        http::Method::POST,
        Some("method=chat_completions"),
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(checked.answer, AnswerRewrite::BatchCreated);
    assert_eq!(checked.query.as_deref(), Some("method=chat_completions"));
    let sent = String::from_utf8(checked.body.unwrap().to_vec()).unwrap();
    let lines: Vec<&str> = sent.split('\n').collect();
    assert_eq!(lines.len(), 5, "{sent}");
    assert!(lines[1].is_empty() && lines[4].is_empty());
    // A line separator inside a string is escaped: one line stays one.
    assert!(lines[0].contains("\\u2028") && !lines[0].contains('\u{2028}'));
    let first: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(first["request"]["messages"][0]["attachments"][0], ID);
    assert_eq!(first["request"]["messages"][0]["content"], "x\u{2028}y");
    let second: Value = serde_json::from_str(lines[2]).unwrap();
    assert_eq!(
        second["request"]["messages"][0]["content"][1]["files"][0]["id"],
        ID
    );
    assert_eq!(second["request"]["storage"]["thread_id"], "thread-1");
    // Another identity, or a raw id anywhere a file is named, is the
    // 404 of a missing file.
    assert!(matches!(
        batch_call(&own, BOB, http::Method::POST, None, body.as_bytes()),
        Err(Error::ObjectNotFound("File"))
    ));
    for foreign in [
        format!(r#"{{"request":{{"messages":[{{"attachments":["{ID}"]}}]}}}}"#),
        format!(r#"{{"body":{{"file_ids":["{ID}"]}}}}"#),
        format!(r#"{{"request":{{"files":[{{"file_id":"{ID}"}}]}}}}"#),
        r#"{"request":{"messages":[{"attachments":[7]}]}}"#.to_owned(),
    ] {
        assert!(
            matches!(
                batch_call(&own, ALICE, http::Method::POST, None, foreign.as_bytes()),
                Err(Error::ObjectNotFound("File"))
            ),
            "{foreign}"
        );
    }
    assert!(matches!(
        batch_call(
            &own,
            BOB,
            http::Method::POST,
            None,
            format!(r#"{{"request":{{"storage":{{"thread_id":"{thread}"}}}}}}"#).as_bytes()
        ),
        Err(Error::ObjectNotFound("Thread"))
    ));
    assert!(matches!(
        batch_call(
            &own,
            ALICE,
            http::Method::POST,
            None,
            br#"{"request":{"assistant_id":"a"}}"#
        ),
        Err(Error::ObjectNotFound("Assistant"))
    ));
    let assistant = own.seal(ALICE, "a");
    let checked = batch_call(
        &own,
        ALICE,
        http::Method::POST,
        None,
        format!(r#"{{"request":{{"assistant_id":"{assistant}"}}}}"#).as_bytes(),
    )
    .unwrap();
    assert_eq!(
        &checked.body.unwrap()[..],
        br#"{"request":{"assistant_id":"a"}}"#
    );
    for (unreadable, line) in [
        (&b"{\"a\":1}\n{bad"[..], Some("line 2")),
        (b"[1]", Some("line 1")),
        (b"{\"a\":1}\r{\"b\":2}", Some("line 1")),
        (b"\xff", None),
    ] {
        match batch_call(&own, ALICE, http::Method::POST, None, unreadable) {
            Err(Error::InvalidRequest { param, code, .. }) => {
                assert_eq!(param.as_deref(), line);
                assert_eq!(code, "batch_not_jsonl");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn batch_answers_are_sealed_and_lists_hold_only_the_callers_batches() {
    let own = ownership();
    let created = rewrite(
        &own,
        ALICE,
        AnswerRewrite::BatchCreated,
        br#"{"id":"b-1","method":"chat_completions","request_counts":{"total":2},"status":"created"}"#,
    );
    let sealed = created["id"].as_str().unwrap().to_owned();
    assert_eq!(own.open(ALICE, &sealed).as_deref(), Some("b-1"));
    assert_eq!(created["request_counts"]["total"], 2);
    let list = br#"{"batches":[{"id":"b-1","status":"completed","output_file_id":"out-1"},{"id":"b-2","output_file_id":"out-2"}]}"#;
    let listed = |identity: &str, ids: &[&str]| rewrite(&own, identity, batch_list(ids), list);
    let mine = listed(ALICE, &[]);
    let batches = mine["batches"].as_array().unwrap();
    assert_eq!(batches.len(), 1, "{mine}");
    assert_eq!(batches[0]["id"], sealed.as_str());
    let output = batches[0]["output_file_id"].as_str().unwrap();
    assert_eq!(own.open(ALICE, output).as_deref(), Some("out-1"));
    assert_eq!(own.open(BOB, output).as_deref(), None);
    // The results are the owner's file: listed, and downloadable.
    assert!(own.owned_in_memory(ALICE).contains("out-1"));
    let path = format!("files/{output}/content");
    let checked = own
        .check_request(ALICE, false, Endpoint::FileContent, &path, &Bytes::new())
        .unwrap();
    assert_eq!(checked.path.as_deref(), Some("files/out-1/content"));
    assert!(listed(BOB, &[])["batches"].as_array().unwrap().is_empty());
    // A batch asked for by its sealed id is the caller's even where
    // this instance has no record of it (another instance created it).
    let by_id = listed(BOB, &["b-2"]);
    assert_eq!(by_id["batches"].as_array().unwrap().len(), 1, "{by_id}");
    assert_eq!(
        own.open(BOB, by_id["batches"][0]["id"].as_str().unwrap())
            .as_deref(),
        Some("b-2")
    );
    // A list that cannot be read is not passed on.
    let mut ledger = Ledger::default();
    assert!(
        own.rewrite_answer(
            ALICE,
            &batch_list(&[]),
            br#"{"data":[]}"#,
            &HashSet::new(),
            &mut ledger
        )
        .is_none()
    );
}

/// The calls of one API (threads, assistants), made by a caller who is
/// not an operator.
struct Api<'a> {
    own: &'a Ownership,
    endpoint: Endpoint,
}

impl Api<'_> {
    fn call(
        &self,
        identity: &str,
        method: http::Method,
        path: &str,
        query: Option<&str>,
        body: &[u8],
    ) -> Result<Checked, Error> {
        self.own.check_call(
            identity,
            false,
            self.endpoint,
            &method,
            path,
            query,
            &Bytes::copy_from_slice(body),
        )
    }

    fn post(&self, identity: &str, path: &str, body: &str) -> Result<Checked, Error> {
        self.call(identity, http::Method::POST, path, None, body.as_bytes())
    }

    fn get(&self, identity: &str, path: &str, query: &str) -> Result<Checked, Error> {
        self.call(identity, http::Method::GET, path, Some(query), b"")
    }
}

fn sent(checked: &Checked) -> Value {
    serde_json::from_slice(checked.body.as_deref().unwrap()).unwrap()
}

#[test]
fn assistant_calls_name_only_the_callers_assistants_and_files() {
    let own = ownership();
    let assistant = own.seal(ALICE, "as-1");
    let file = own.seal(ALICE, ID);
    let post = http::Method::POST;
    let api = Api {
        own: &own,
        endpoint: Endpoint::Assistants,
    };
    // Creation: the files it is given are opened; the answer is sealed.
    let creation = format!(
        r#"{{"model":"GigaChat","name":"n","file_ids":["{file}"],"metadata":{{"file_id":"mine"}}}}"#
    );
    let created = api.post(ALICE, "assistants", &creation).unwrap();
    assert_eq!(created.answer, AnswerRewrite::Stateful);
    assert_eq!(sent(&created)["file_ids"][0], ID);
    assert_eq!(sent(&created)["metadata"]["file_id"], "mine");
    assert!(matches!(
        api.post(
            BOB,
            "v1/assistants",
            &format!(r#"{{"file_ids":["{file}"]}}"#)
        ),
        Err(Error::ObjectNotFound("File"))
    ));
    // Modify, delete, files/delete: the owner's sealed id opens, nobody
    // else's and no raw id.
    for path in [
        "assistants/modify",
        "assistants/delete",
        "assistants/files/delete",
    ] {
        let body = format!(r#"{{"assistant_id":"{assistant}","file_id":"{file}"}}"#);
        let checked = api.post(ALICE, path, &body).unwrap();
        assert_eq!(sent(&checked)["assistant_id"], "as-1", "{path}");
        assert_eq!(sent(&checked)["file_id"], ID, "{path}");
        for (who, body) in [
            (BOB, body.clone()),
            (ALICE, r#"{"assistant_id":"as-1"}"#.to_owned()),
            (ALICE, r#"{"assistant_id":7}"#.to_owned()),
        ] {
            assert!(
                matches!(
                    api.post(who, path, &body),
                    Err(Error::ObjectNotFound("Assistant"))
                ),
                "{path} {who} {body}"
            );
        }
    }
    let deletion = format!(r#"{{"assistant_id":"{assistant}"}}"#);
    let deleted = api.post(ALICE, "assistants/delete", &deletion).unwrap();
    assert_eq!(
        deleted.answer,
        AnswerRewrite::Removed { raw: "as-1".into() }
    );
    // The one read: `?assistant_id=` opens, and is what the list may show.
    let query = format!("assistant_id={assistant}");
    let read = api.get(ALICE, "assistants", &query).unwrap();
    assert_eq!(read.query.as_deref(), Some("assistant_id=as-1"));
    assert_eq!(read.answer, assistant_list(&["as-1"]));
    assert!(matches!(
        api.get(BOB, "assistants", &query),
        Err(Error::ObjectNotFound("Assistant"))
    ));
    // Calls the assistants API does not have, a query on a POST, and a
    // body that is not an object are not passed on.
    for (method, path, query, body) in [
        (post.clone(), "assistants/other", None, "{}"),
        (http::Method::DELETE, "assistants", None, ""),
        (post.clone(), "assistants", Some("assistant_id=x"), "{}"),
    ] {
        assert!(matches!(
            api.call(ALICE, method, path, query, body.as_bytes()),
            Err(Error::OperatorOnly)
        ));
    }
    assert!(matches!(
        api.post(ALICE, "assistants", "[1]"),
        Err(Error::OwnershipUnreadableBody)
    ));
}

#[test]
fn thread_calls_name_only_the_callers_threads_assistants_and_files() {
    let own = ownership();
    let thread = own.seal(ALICE, "th-1");
    let assistant = own.seal(ALICE, "as-1");
    let file = own.seal(ALICE, ID);
    let api = Api {
        own: &own,
        endpoint: Endpoint::Threads,
    };
    // Creating a thread names nothing; its answer is a new thread.
    let created = api.post(ALICE, "threads", "{}").unwrap();
    assert_eq!(created.answer, AnswerRewrite::ThreadCreated);
    // Every call that names a thread, an assistant or a file.
    let body = format!(
        r#"{{"thread_id":"{thread}","assistant_id":"{assistant}","messages":[{{"role":"user","content":"x","attachments":["{file}"]}}]}}"#
    );
    for path in [
        "threads/run",
        "threads/messages",
        "threads/messages/run",
        "v1/threads/messages/rerun",
    ] {
        let checked = api.post(ALICE, path, &body).unwrap();
        assert_eq!(checked.answer, AnswerRewrite::Stateful);
        let sent = sent(&checked);
        assert_eq!(
            (
                &sent["thread_id"],
                &sent["assistant_id"],
                &sent["messages"][0]["attachments"][0]
            ),
            (&json!("th-1"), &json!("as-1"), &json!(ID)),
            "{path}"
        );
        assert!(matches!(
            api.post(BOB, path, &body),
            Err(Error::ObjectNotFound(_))
        ));
    }
    for foreign in [
        r#"{"thread_id":"th-1"}"#.to_owned(),
        format!(r#"{{"thread_id":"{thread}","assistant_id":"as-1"}}"#),
        format!(r#"{{"thread_id":"{thread}","messages":[{{"attachments":["{ID}"]}}]}}"#),
    ] {
        assert!(
            api.post(ALICE, "threads/messages/run", &foreign).is_err(),
            "{foreign}"
        );
    }
    // Retrieval: every id is the caller's, and is what the list may show.
    let retrieval = format!(r#"{{"threads_ids":["{thread}"]}}"#);
    let retrieve = api.post(ALICE, "threads/retrieve", &retrieval).unwrap();
    assert_eq!(sent(&retrieve)["threads_ids"][0], "th-1");
    assert_eq!(retrieve.answer, thread_list(&["th-1"]));
    assert!(matches!(
        api.post(
            ALICE,
            "threads/retrieve",
            &format!(r#"{{"threads_ids":["{thread}","th-2"]}}"#)
        ),
        Err(Error::ObjectNotFound("Thread"))
    ));
    let deletion = format!(r#"{{"thread_id":"{thread}"}}"#);
    let deleted = api.post(ALICE, "threads/delete", &deletion).unwrap();
    assert_eq!(
        deleted.answer,
        AnswerRewrite::Removed { raw: "th-1".into() }
    );
    // Reads by query: the thread's run and messages, the list by
    // assistant.
    for path in ["threads/run", "threads/messages"] {
        let checked = api
            .get(ALICE, path, &format!("thread_id={thread}&limit=5"))
            .unwrap();
        assert_eq!(checked.query.as_deref(), Some("thread_id=th-1&limit=5"));
        assert!(matches!(
            api.get(BOB, path, &format!("thread_id={thread}")),
            Err(Error::ObjectNotFound("Thread"))
        ));
        assert!(matches!(
            api.get(ALICE, path, "thread_id=th-1"),
            Err(Error::ObjectNotFound("Thread"))
        ));
    }
    let by_assistant = format!("assistants_ids={assistant}&assistants_ids={assistant}");
    let listed = api.get(ALICE, "threads", &by_assistant).unwrap();
    assert_eq!(
        listed.query.as_deref(),
        Some("assistants_ids=as-1&assistants_ids=as-1")
    );
    assert_eq!(listed.answer, thread_list(&[]));
    assert!(matches!(
        api.get(
            ALICE,
            "threads",
            &format!("assistants_ids={assistant}&assistants_ids=as-2")
        ),
        Err(Error::ObjectNotFound("Assistant"))
    ));
    // Function declarations and calls are text to GigaChat: a parameter
    // named like an object passes as written.
    let declared = api.post(
        ALICE,
        "threads/messages/run",
        &format!(
            r#"{{"thread_id":"{thread}","functions":[{{"name":"f","few_shot_examples":[{{"params":{{"file_id":"x"}}}}]}}],"messages":[{{"role":"assistant","function_call":{{"name":"f","arguments":{{"thread_id":"t"}}}}}}]}}"#
        ),
    )
    .unwrap();
    assert_eq!(
        sent(&declared)["functions"][0]["few_shot_examples"][0]["params"]["file_id"],
        "x"
    );
    assert_eq!(
        sent(&declared)["messages"][0]["function_call"]["arguments"]["thread_id"],
        "t"
    );
    // Anything else in the family is the operator's.
    for path in ["threads/other", "threads/messages/run/x"] {
        assert!(matches!(
            api.post(ALICE, path, "{}"),
            Err(Error::OperatorOnly)
        ));
    }
}

#[test]
fn thread_and_assistant_answers_are_sealed_and_lists_hold_only_the_callers() {
    let own = ownership();
    // A created assistant is sealed and listed for its owner only.
    let created = rewrite(
        &own,
        ALICE,
        AnswerRewrite::Stateful,
        br#"{"assistant_id":"as-1","created_at":1}"#,
    );
    let sealed = created["assistant_id"].as_str().unwrap().to_owned();
    assert_eq!(own.open(ALICE, &sealed).as_deref(), Some("as-1"));
    let list = br#"{"data":[{"assistant_id":"as-1","model":"GigaChat","files":[{"file_id":"f-1","name":"a"}],"metadata":{"assistant_id":"as-9"}},{"assistant_id":"as-2","model":"GigaChat"}]}"#;
    let assistants =
        |identity: &str, ids: &[&str]| rewrite(&own, identity, assistant_list(ids), list);
    let mine = assistants(ALICE, &[]);
    assert_eq!(mine["data"].as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(mine["data"][0]["assistant_id"], sealed.as_str());
    assert_eq!(
        own.open(
            ALICE,
            mine["data"][0]["files"][0]["file_id"].as_str().unwrap()
        )
        .as_deref(),
        Some("f-1")
    );
    assert_eq!(mine["data"][0]["metadata"]["assistant_id"], "as-9");
    let theirs = assistants(BOB, &[]);
    assert!(theirs["data"].as_array().unwrap().is_empty());
    // One asked for by its sealed id is the caller's, recorded or not.
    let by_id = assistants(BOB, &["as-2"]);
    assert_eq!(by_id["data"].as_array().unwrap().len(), 1);
    // A thread: created, run (a generated image in the answer), listed.
    let thread = rewrite(
        &own,
        ALICE,
        AnswerRewrite::ThreadCreated,
        br#"{"id":"th-1","model":"GigaChat","created_at":1,"updated_at":1,"run_lock":false,"status":"ready"}"#,
    );
    let sealed_thread = thread["id"].as_str().unwrap().to_owned();
    assert_eq!(own.open(ALICE, &sealed_thread).as_deref(), Some("th-1"));
    let run = rewrite(
        &own,
        ALICE,
        AnswerRewrite::Stateful,
        br#"{"object":"thread.completion","model":"GigaChat","thread_id":"th-1","message_id":"m-1","created":1,"usage":{},"message":{"role":"assistant","content":"<img src=\"img-1\" fuse=\"true\"/>"},"finish_reason":"stop"}"#,
    );
    assert_eq!(run["thread_id"], sealed_thread.as_str());
    assert_eq!(run["message_id"], "m-1");
    assert!(own.owned_in_memory(ALICE).contains("img-1"));
    // A message the caller wrote comes back as written: an id typed into
    // it (someone else's file, say) is not made theirs. Function calls are
    // the model's text, not objects.
    let history = rewrite(
        &own,
        BOB,
        AnswerRewrite::Stateful,
        br#"{"thread_id":"th-b","messages":[{"role":"user","content":"<img src=\"alices-file\"/>"},{"role":"assistant","content":"<img src=\"img-2\"/>","function_call":{"name":"f","arguments":{"thread_id":"th-1"}}}]}"#,
    );
    assert_eq!(
        history["messages"][0]["content"],
        r#"<img src="alices-file"/>"#
    );
    assert_eq!(
        history["messages"][1]["function_call"]["arguments"]["thread_id"],
        "th-1"
    );
    let owned = own.owned_in_memory(BOB);
    assert!(
        owned.contains("img-2") && owned.contains("th-b"),
        "{owned:?}"
    );
    assert!(
        !owned.contains("alices-file") && !owned.contains("th-1"),
        "{owned:?}"
    );
    let threads = br#"{"threads":[{"id":"th-1","assistant_id":"as-1"},{"id":"th-2"}]}"#;
    let threads_of = |identity: &str| rewrite(&own, identity, thread_list(&[]), threads);
    let listed = threads_of(ALICE);
    assert_eq!(listed["threads"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["threads"][0]["id"], sealed_thread.as_str());
    assert_eq!(listed["threads"][0]["assistant_id"], sealed.as_str());
    let theirs = threads_of(BOB);
    assert!(theirs["threads"].as_array().unwrap().is_empty());
    // A deletion takes the object off the list, even though its answer
    // names it.
    rewrite(
        &own,
        ALICE,
        AnswerRewrite::Removed { raw: "th-1".into() },
        br#"{"thread_id":"th-1","deleted":true}"#,
    );
    let listed = threads_of(ALICE);
    assert!(listed["threads"].as_array().unwrap().is_empty());
    // A list that cannot be read is not passed on.
    let mut ledger = Ledger::default();
    for rewrite in [thread_list(&[]), assistant_list(&[])] {
        assert!(
            own.rewrite_answer(
                ALICE,
                &rewrite,
                br#"{"x":[]}"#,
                &HashSet::new(),
                &mut ledger
            )
            .is_none()
        );
    }
}

#[test]
fn thread_run_streams_hand_out_sealed_thread_ids() {
    let own = ownership();
    let mut ledger = Ledger::default();
    let event = b"data: {\"object\":\"thread.completion.chunk\",\"thread_id\":\"th-1\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";
    let sealed = own.seal_event(ALICE, event, &mut ledger).unwrap();
    let data: Value = serde_json::from_slice(&sealed[6..]).unwrap();
    assert_eq!(
        own.open(ALICE, data["thread_id"].as_str().unwrap())
            .as_deref(),
        Some("th-1")
    );
    assert_eq!(ledger.added, ["th-1"]);
}

/// The CPU time of this thread so far, in nanoseconds: what a call costs
/// on a machine others share, where wall time counts their work too.
fn thread_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// Nanoseconds of this thread's CPU (wall time where that is unreadable)
/// per call of `call`, over `calls` calls.
fn cpu_ns_per_call(calls: u32, mut call: impl FnMut()) -> f64 {
    let (wall, cpu) = (std::time::Instant::now(), thread_cpu_ns());
    for _ in 0..calls {
        call();
    }
    let spent = match (cpu, thread_cpu_ns()) {
        (Some(start), Some(end)) => end - start,
        _ => wall.elapsed().as_nanos() as u64,
    };
    spent as f64 / f64::from(calls)
}

/// Not a check, a measurement: prints what sealing and opening one id
/// cost, alone and with two threads sharing one instance, for comparing
/// ways of holding the cipher. Run it by hand, in a release build:
/// `cargo test --release -p gigachat-proxy-core --lib seal_and_open_cost -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement to read, not a check; run by hand in a release build"]
fn seal_and_open_cost() {
    const CALLS: u32 = 200_000;
    let own = Arc::new(ownership());
    let sealed = own.seal(ALICE, ID);
    for round in 1..=5 {
        let seal = cpu_ns_per_call(CALLS, || {
            std::hint::black_box(own.seal(ALICE, std::hint::black_box(ID)));
        });
        let open = cpu_ns_per_call(CALLS, || {
            std::hint::black_box(own.open(ALICE, std::hint::black_box(&sealed)));
        });
        let shared: Vec<f64> = (0..2)
            .map(|_| {
                let own = Arc::clone(&own);
                let sealed = sealed.clone();
                std::thread::spawn(move || {
                    cpu_ns_per_call(CALLS, || {
                        let again = own.seal(ALICE, std::hint::black_box(ID));
                        std::hint::black_box(own.open(ALICE, &again));
                        std::hint::black_box(own.open(ALICE, &sealed));
                    })
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|thread| thread.join().unwrap())
            .collect();
        let key_schedule = cpu_ns_per_call(CALLS, || {
            std::hint::black_box(Aes128Siv::new(std::hint::black_box(&own.key)));
        });
        println!(
            "round {round}: cipher built {key_schedule:.0} ns; seal {seal:.0} ns, open {open:.0} ns; two threads at once, seal+open+open {:.0} / {:.0} ns",
            shared[0], shared[1]
        );
    }
}
