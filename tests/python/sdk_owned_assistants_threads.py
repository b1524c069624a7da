"""The official `gigachat` Python SDK creating and using an assistant and a
legacy thread through the proxy, as two end users (run by
tests/ownership.rs, not collected by pytest).

Each user's SDK client sends the user's proxy API key as its access token.
The owner creates an assistant and a thread, runs it (JSON and stream),
reads it back and finds both in its lists; the other user's SDK sees
empty lists and gets the 404 of a missing object for every use of the owner's ids. The
last line printed is `ok` when every check held.

Environment:
  GIGACHAT_PROXY_URL  the proxy's origin
  OWNER_KEY, OTHER_KEY  two end users' API keys
"""

import os
import sys

from gigachat import GigaChat
from gigachat.exceptions import ResponseError
from gigachat.models import Messages, MessagesRole

PROXY_URL = os.environ["GIGACHAT_PROXY_URL"].rstrip("/")


def client(key: str) -> GigaChat:
    return GigaChat(
        base_url=f"{PROXY_URL}/api/gigachat-api/v1",
        access_token=key,
        verify_ssl_certs=False,
        model="GigaChat",
        timeout=30.0,
        max_retries=0,
    )


def sealed(value: str) -> str:
    if "~" not in value:
        sys.exit(f"an id the proxy handed out is not sealed: {value!r}")
    return value


def refused(what: str, call) -> None:
    """The SDK raises NotFoundError for most calls and a bare ResponseError
    for `threads.delete`; both must carry the proxy's 404."""
    try:
        call()
    except ResponseError as err:
        if err.status_code == 404 and b"object_not_found" in (err.content or b""):
            return
        sys.exit(f"{what}: refused with {err.status_code}, not the 404 of a missing object")
    sys.exit(f"the other user was not refused: {what}")


owner = client(os.environ["OWNER_KEY"])
other = client(os.environ["OTHER_KEY"])

created = owner.assistants.create(model="GigaChat", name="helper", instructions="Answer briefly.")
assistant = sealed(created.assistant_id)
mine = owner.assistants.get()
assert [a.assistant_id for a in mine.data] == [assistant], mine
assert owner.assistants.get(assistant_id=assistant).data[0].instructions == "Answer briefly."

completion = owner.threads.run_messages(
    messages=[Messages(role=MessagesRole.USER, content="Hello there")],
    assistant_id=assistant,
)
thread = sealed(completion.thread_id)
assert completion.message.content, completion
chunks = list(
    owner.threads.run_messages_stream(
        messages=[Messages(role=MessagesRole.USER, content="And again")],
        thread_id=thread,
    )
)
assert chunks and all(chunk.thread_id == thread for chunk in chunks), chunks
history = owner.threads.get_messages(thread_id=thread)
assert history.thread_id == thread and len(history.messages) == 4, history
assert [t.id_ for t in owner.threads.list().threads] == [thread]
assert [t.id_ for t in owner.threads.list(assistants_ids=[assistant]).threads] == [thread]
assert [t.id_ for t in owner.threads.retrieve(threads_ids=[thread]).threads] == [thread]
empty = owner.threads.create_thread()
sealed(empty)
owner.threads.add_message(thread_id=empty, message="kept for later")
assert len(owner.threads.get_messages(thread_id=empty).messages) == 1

assert other.assistants.get().data == []
assert other.threads.list().threads == []
refused("assistants.get(assistant_id)", lambda: other.assistants.get(assistant_id=assistant))
refused("assistants.update", lambda: other.assistants.update(assistant_id=assistant, name="mine"))
refused("assistants.delete", lambda: other.assistants.delete(assistant_id=assistant))
refused("threads.retrieve", lambda: other.threads.retrieve(threads_ids=[thread]))
refused("threads.get_messages", lambda: other.threads.get_messages(thread_id=thread))
refused("threads.add_message", lambda: other.threads.add_message(thread_id=thread, message="hijack"))
refused(
    "threads.run_messages",
    lambda: other.threads.run_messages(messages=[Messages(role=MessagesRole.USER, content="x")], thread_id=thread),
)
refused("threads.rerun_messages", lambda: other.threads.rerun_messages(thread_id=thread))
refused("threads.delete", lambda: other.threads.delete(thread_id=thread))

assert owner.threads.delete(thread_id=thread) is True
assert owner.threads.delete(thread_id=empty) is True
assert owner.assistants.delete(assistant_id=assistant).deleted
assert owner.threads.list().threads == [] and owner.assistants.get().data == []
print("ok")
