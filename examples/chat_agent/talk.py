"""Talk to the example agent from a terminal: send each argument as a message, print each reply.

    SESSIONS_API_KEY=tr_dev_… python talk.py "hello" "how are you?"

It creates (or, with ``--chat``, reuses) a ``chat.agent`` session for the ``chat-agent`` task,
appends each message to ``.in`` as Trigger.dev's chat clients do, and prints the reply streamed to
``.out`` until the agent's turn-complete for that message.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid

from session_client import SessionsClient
from session_client.chat import SESSION_IN_EVENT_ID, TURN_COMPLETE, message_chunk


def main() -> None:
    parser = argparse.ArgumentParser(description="Send messages to the example chat agent.")
    parser.add_argument("messages", nargs="+")
    parser.add_argument("--chat", default=f"chat-{uuid.uuid4().hex[:8]}", help="session externalId")
    parser.add_argument("--task", default=os.environ.get("AGENT_TASK", "chat-agent"))
    parser.add_argument("--close", action="store_true", help="close the session at the end")
    args = parser.parse_args()
    base_url = os.environ.get("SESSIONS_URL", "http://127.0.0.1:3030")
    with SessionsClient(base_url, os.environ["SESSIONS_API_KEY"]) as client:
        client.sessions.create(
            type="chat.agent",
            external_id=args.chat,
            task_identifier=args.task,
            trigger_config={"basePayload": {"chatId": args.chat}},
        )
        out = client.channel(args.chat, "out")
        after = None
        for record in out.records():  # replies from before this run of talk.py are not ours
            after = record.seq_num
        for text in args.messages:
            seq = client.channel(args.chat, "in").append(message_chunk(text, args.chat))
            print(f"> {text}")
            for record in out.subscribe(after=after):
                after = record.seq_num
                chunk = record.data if isinstance(record.data, dict) else {}
                if chunk.get("type") == "text-delta":
                    sys.stdout.write(chunk["delta"])
                    sys.stdout.flush()
                if record.control == TURN_COMPLETE and record.header(SESSION_IN_EVENT_ID) == str(seq):
                    print()
                    break
        if args.close:
            client.sessions.close(args.chat)
        print(f"(chat {args.chat})")


if __name__ == "__main__":
    main()
