#!/usr/bin/env python3
"""A minimal Python asyncio gateway: the yardstick for hermes-gateway's hot path.

It speaks the gateway side of the relay contract (../../../shared/spec/
relay-contract.md; the repository's docs/contract.md) as plainly as asyncio
and `websockets` allow, with no sandbox and no sessions beyond what a reply
needs:

- dial `<url>/relay` with a fresh upgrade token (§6.1), send `hello`;
- wait for the first `descriptor` (§7.2);
- for each `passthrough_forward` (§5.2): decode `bodyB64`, parse the Discord
  interaction (conversion.md §4.1, slash commands: `/name` + leaf option
  values), compute the session key (§5.3), and answer with an echo
  `follow_up` (`discord.interaction_token`) carrying the event's scope and
  author (§5.6); ack a `bufferId` when present (§5.4);
- read `outbound_result`s and count failures.

It is what a small team would write first in Python, and what
`cargo bench -p hermes-tests --bench forwards` (HERMES_BENCH_BASELINE=1)
drives with the same generator as the real gateway, in the same run.

Environment: GATEWAY_RELAY_URL, GATEWAY_RELAY_ID, GATEWAY_RELAY_SECRET.
Needs the `websockets` package (scripts/bench-baseline installs it into a
virtual environment under target/).
"""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import signal
import sys
import time
import uuid

from websockets.asyncio.client import connect


def make_token(payload: str, secret: str, ttl: int = 300) -> str:
    """The upgrade token (relay-contract §6.1)."""
    exp = int(time.time()) + ttl if ttl else 0
    signed = f"{payload}:{exp}"
    sig = hmac.new(secret.encode(), signed.encode(), hashlib.sha256).hexdigest()
    return base64.urlsafe_b64encode(f"{signed}:{sig}".encode()).decode().rstrip("=")


def dial_url(url: str) -> str:
    """The dial URL (relay-contract §7.1)."""
    url = url.strip()
    if url.startswith("https://"):
        url = "wss://" + url[len("https://"):]
    elif url.startswith("http://"):
        url = "ws://" + url[len("http://"):]
    url = url.rstrip("/")
    return url if url.endswith("/relay") else url + "/relay"


def leaf_values(options):
    """Leaf option values in payload order (sub-command names first)."""
    for option in options or []:
        if option.get("type") in (1, 2):
            yield option["name"]
            yield from leaf_values(option.get("options"))
        elif "value" in option:
            value = option["value"]
            yield ("true" if value else "false") if isinstance(value, bool) else str(value)


def convert_discord(body: bytes):
    """A slash command as (session_key, text, scope, user), else None."""
    interaction = json.loads(body)
    if interaction.get("type") != 2:
        return None
    data = interaction.get("data") or {}
    text = " ".join(["/" + data.get("name", ""), *leaf_values(data.get("options"))])
    user = (interaction.get("member") or {}).get("user") or interaction.get("user") or {}
    user_id = user.get("id", "")
    guild = interaction.get("guild_id")
    channel = interaction.get("channel") or {}
    chat_id = channel.get("id") or interaction.get("channel_id", "")
    if channel.get("type") == 1 or (guild is None and "type" not in channel):
        key = f"agent:main:discord:dm:{chat_id}"
    else:
        key = f"agent:main:discord:group:{chat_id}" + (f":{user_id}" if user_id else "")
    return key, text, guild, user_id


class Gateway:
    def __init__(self, ws):
        self.ws = ws
        self.failed = 0

    async def send(self, frame: dict) -> None:
        await self.ws.send(json.dumps(frame, separators=(",", ":")) + "\n")

    async def on_forward(self, frame: dict) -> None:
        forward = frame.get("forward") or {}
        converted = None
        if forward.get("platform") == "discord":
            try:
                converted = convert_discord(base64.b64decode(forward.get("bodyB64", "")))
            except (ValueError, KeyError, TypeError):
                converted = None
        if converted:
            key, text, scope, user_id = converted
            metadata = {"user_id": user_id} if user_id else {}
            if scope:
                metadata.update(scope_id=scope, guild_id=scope)
            await self.send({
                "type": "outbound",
                "requestId": uuid.uuid4().hex,
                "action": {
                    "op": "follow_up",
                    "session_key": key,
                    "kind": "discord.interaction_token",
                    "content": text or "(empty)",
                    "metadata": metadata,
                },
            })
        if frame.get("bufferId"):
            await self.send({"type": "inbound_ack", "bufferId": frame["bufferId"]})

    async def serve(self) -> None:
        buffered = ""
        async for message in self.ws:
            buffered += message if isinstance(message, str) else message.decode()
            *lines, buffered = buffered.split("\n")
            for line in lines:
                if not line.strip():
                    continue
                try:
                    frame = json.loads(line)
                except ValueError:
                    continue
                kind = frame.get("type") if isinstance(frame, dict) else None
                if kind == "passthrough_forward":
                    await self.on_forward(frame)
                elif kind == "outbound_result":
                    if not (frame.get("result") or {}).get("success"):
                        self.failed += 1


async def main() -> None:
    url = dial_url(os.environ["GATEWAY_RELAY_URL"])
    token = make_token(os.environ["GATEWAY_RELAY_ID"], os.environ["GATEWAY_RELAY_SECRET"])
    async with connect(
        url,
        additional_headers={"Authorization": f"Bearer {token}"},
        max_size=None,
        compression=None,
    ) as ws:
        await ws.send(json.dumps({"type": "hello", "platform": "relay", "botId": ""}) + "\n")
        print("baseline: connected", file=sys.stderr, flush=True)
        await Gateway(ws).serve()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
