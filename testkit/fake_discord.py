"""A small fake Discord (REST + gateway websocket + CDN) on 127.0.0.1, for end-to-end bot tests.

The real discord.py talks to it over HTTP and websockets exactly as it talks to Discord; the fake
records everything the bot sends so tests can assert on replies. It models the parts of Discord
the bot relies on, including the ones that bite in production: bot-token auth on every REST call,
the privileged message-content intent (close code 4014 when not granted, blank content when not
requested), interaction callbacks/follow-ups, and attachments served from a separate CDN path.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

# Gateway opcodes and intents (https://discord.com/developers/docs/topics/gateway).
OP_DISPATCH, OP_HEARTBEAT, OP_IDENTIFY, OP_RESUME = 0, 1, 2, 6
OP_RECONNECT, OP_INVALID_SESSION, OP_HELLO, OP_HEARTBEAT_ACK = 7, 9, 10, 11
INTENT_GUILDS = 1 << 0
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15
CLOSE_AUTHENTICATION_FAILED = 4004
CLOSE_DISALLOWED_INTENTS = 4014

# Interaction types and callback types.
INTERACTION_APPLICATION_COMMAND = 2
INTERACTION_MESSAGE_COMPONENT = 3
CALLBACK_UPDATE_MESSAGE = 7
CALLBACK_CHANNEL_MESSAGE = 4
CALLBACK_DEFERRED_CHANNEL_MESSAGE = 5
EPHEMERAL_FLAG = 1 << 6


@dataclass
class Sent:
    """One message-like thing the bot sent: a channel message, an interaction callback or follow-up."""

    kind: str  # "message" | "callback" | "followup" | "edit"
    target: str  # channel id, or interaction token for interaction replies
    payload: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)
    message: dict[str, Any] | None = None  # the message as the fake created it (for button clicks on it)

    @property
    def components(self) -> list[dict[str, Any]]:
        data = self.payload.get("data", self.payload) if self.kind == "callback" else self.payload
        return data.get("components") or []

    @property
    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for row in self.components for c in row.get("components", []) if "custom_id" in c]

    @property
    def content(self) -> str:
        data = self.payload.get("data", self.payload) if self.kind == "callback" else self.payload
        return data.get("content") or ""

    @property
    def embeds(self) -> list[dict[str, Any]]:
        data = self.payload.get("data", self.payload) if self.kind == "callback" else self.payload
        return data.get("embeds") or []

    @property
    def flags(self) -> int:
        data = self.payload.get("data", self.payload) if self.kind == "callback" else self.payload
        return int(data.get("flags") or 0)

    @property
    def text(self) -> str:
        """Content plus every embed's visible text, for loose assertions on wording."""
        parts = [self.content]
        for embed in self.embeds:
            parts += [embed.get("title") or "", embed.get("description") or ""]
            parts += [f"{f.get('name')} {f.get('value')}" for f in embed.get("fields") or []]
            parts.append((embed.get("footer") or {}).get("text") or "")
        return "\n".join(p for p in parts if p)


def _json(data: Any, status: int = 200) -> web.Response:
    """Exactly `application/json` (no charset): discord.py only parses JSON when the header matches."""
    return web.Response(body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"})


class FakeDiscord:
    """Fake Discord REST API, gateway and CDN; start with `await start()`, stop with `await stop()`."""

    def __init__(
        self,
        token: str,
        *,
        grant_message_content: bool = True,
        heartbeat_interval_ms: int = 41_250,
    ) -> None:
        self.token = token
        self.grant_message_content = grant_message_content
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self._ids = itertools.count(1_100_000_000_000_000_000)
        self.application_id = self.new_id()
        self.bot_user = {"id": str(self.application_id), "username": "digits", "discriminator": "0",
                         "global_name": "digits", "avatar": None, "bot": True, "flags": 0}
        self.user = {"id": str(self.new_id()), "username": "alice", "discriminator": "0",
                     "global_name": "Alice", "avatar": None, "flags": 0}
        self.guild_id = self.new_id()
        self.guild_locale = "en-US"  # the guild's preferred locale (set_guild_locale changes it live)
        self.channel_id = self.new_id()
        self.dm_channel_id = self.new_id()
        # What the bot did, in order.
        self.requests: list[tuple[str, str]] = []  # (method, path) of every REST call
        self.sent: list[Sent] = []
        self.synced_commands: dict[str, list[dict[str, Any]]] = {}  # "global" or guild id -> commands
        self.identifies: list[dict[str, Any]] = []
        self.heartbeats = 0
        self.cdn_downloads: list[str] = []
        self.unauthorized = 0
        self._attachments: dict[str, tuple[bytes, str]] = {}
        self._sockets: list[web.WebSocketResponse] = []
        self._ready_sockets: list[web.WebSocketResponse] = []
        self.dispatched: list[tuple[tuple[int, int], str]] = []  # (shard, event) of every dispatch, in order
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ---------------------------------------------------------------- lifecycle
    def new_id(self) -> int:
        return next(self._ids)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.origin}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    async def start(self) -> FakeDiscord:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/attachments/{id}/{filename}", self._cdn)
        app.router.add_route("*", "/api/v10/{path:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # ---------------------------------------------------------------- test-side helpers
    @property
    def connected(self) -> bool:
        return bool(self._ready_sockets)

    async def wait_until(self, predicate, timeout: float = 20.0, what: str = "condition") -> Any:
        """Poll `predicate()` until it returns something truthy; fail loudly on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")

    async def wait_ready(self, timeout: float = 20.0) -> None:
        await self.wait_until(lambda: self.connected, timeout, "the bot to IDENTIFY and get READY")

    def new_user(self, name: str = "user") -> dict[str, Any]:
        """A fresh user (its own rate-limit bucket in the bot)."""
        user_id = self.new_id()
        return {"id": str(user_id), "username": f"{name}{user_id % 10_000}", "discriminator": "0",
                "global_name": name, "avatar": None, "flags": 0}

    def attachment(self, data: bytes, filename: str = "digit.jpg", content_type: str | None = "image/jpeg",
                   size: int | None = None) -> dict[str, Any]:
        """Register bytes on the fake CDN and return the attachment object Discord would send.

        `size` may be given to claim a size other than len(data) (Discord reports it from metadata).
        """
        att_id = str(self.new_id())
        self._attachments[att_id] = (data, content_type or "application/octet-stream")
        payload: dict[str, Any] = {
            "id": att_id,
            "filename": filename,
            "size": len(data) if size is None else size,
            "url": f"{self.origin}/attachments/{att_id}/{filename}",
            "proxy_url": f"{self.origin}/attachments/{att_id}/{filename}",
        }
        if content_type is not None:
            payload["content_type"] = content_type
        if content_type and content_type.startswith("image/"):
            payload.update(width=640, height=480)
        return payload

    def message(self, content: str = "", attachments: list[dict[str, Any]] | None = None, *,
                dm: bool = False, mention_bot: bool = False, author: dict[str, Any] | None = None,
                reply_to: dict[str, Any] | None = None) -> dict[str, Any]:
        """A message payload as Discord would deliver it in MESSAGE_CREATE (before intent filtering)."""
        author = author or self.user
        mentions = []
        if mention_bot:
            content = f"<@{self.application_id}> {content}".strip()
            mentions.append(dict(self.bot_user))
        data: dict[str, Any] = {
            "id": str(self.new_id()),
            "channel_id": str(self.dm_channel_id if dm else self.channel_id),
            "author": author,
            "content": content,
            "timestamp": "2026-01-01T00:00:00.000000+00:00",
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": mentions,
            "mention_roles": [],
            "attachments": attachments or [],
            "embeds": [],
            "pinned": False,
            "type": 0,
        }
        if reply_to is not None:
            data["type"] = 19  # REPLY
            data["message_reference"] = {"message_id": reply_to["id"], "channel_id": reply_to["channel_id"]}
            data["referenced_message"] = reply_to
        if not dm:
            data["guild_id"] = str(self.guild_id)
            data["member"] = {"roles": [], "joined_at": "2025-01-01T00:00:00+00:00", "deaf": False, "mute": False,
                              "flags": 0}
        return data

    async def send_message(self, content: str = "", attachments: list[dict[str, Any]] | None = None, *,
                           dm: bool = False, mention_bot: bool = False, author: dict[str, Any] | None = None,
                           reply_to: dict[str, Any] | None = None) -> dict[str, Any]:
        """A user posts a message: dispatch MESSAGE_CREATE to every identified bot session that may see it."""
        data = self.message(content, attachments, dm=dm, mention_bot=mention_bot, author=author, reply_to=reply_to)
        await self._dispatch_message(data)
        return data

    async def _dispatch_message(self, data: dict[str, Any]) -> None:
        dm = "guild_id" not in data
        for ws in list(self._ready_sockets):
            if not self._owns(ws, data.get("guild_id")):
                continue
            intents = getattr(ws, "intents", 0)
            if not intents & (INTENT_DIRECT_MESSAGES if dm else INTENT_GUILD_MESSAGES):
                continue
            visible = dict(data)
            mentioned = any(m["id"] == str(self.application_id) for m in data["mentions"])
            if not intents & INTENT_MESSAGE_CONTENT and not dm and not mentioned:
                visible.update(content="", attachments=[], embeds=[])  # what Discord does without the intent
            await self._dispatch(ws, "MESSAGE_CREATE", visible)

    def _interaction(self, data: dict[str, Any], *, dm: bool = False,
                     user: dict[str, Any] | None = None, locale: str = "en-US",
                     kind: int = INTERACTION_APPLICATION_COMMAND) -> dict[str, Any]:
        user = user or self.user
        interaction: dict[str, Any] = {
            "id": str(self.new_id()),
            "application_id": str(self.application_id),
            "type": kind,
            "data": data,
            "token": f"interaction-token-{self.new_id()}",
            "version": 1,
            "locale": locale,
            "app_permissions": "2248473465835073",
            "attachment_size_limit": 10 * 1024 * 1024,
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(self.guild_id)} if not dm else {"1": self.user["id"]},
            "context": 1 if dm else 0,
        }
        if dm:
            interaction["user"] = user
            interaction["channel"] = {"id": str(self.dm_channel_id), "type": 1, "recipients": [user]}
            interaction["channel_id"] = str(self.dm_channel_id)
        else:
            interaction["guild_id"] = str(self.guild_id)
            interaction["guild_locale"] = "en-US"
            interaction["channel"] = {"id": str(self.channel_id), "type": 0, "guild_id": str(self.guild_id),
                                      "name": "general", "position": 0, "permission_overwrites": []}
            interaction["channel_id"] = str(self.channel_id)
            interaction["member"] = {"user": user, "roles": [], "joined_at": "2025-01-01T00:00:00+00:00",
                                     "deaf": False, "mute": False, "flags": 0, "permissions": "2248473465835073"}
        return interaction

    def _command(self, name: str, command_type: int) -> dict[str, Any]:
        for commands in self.synced_commands.values():
            for command in commands:
                if command["name"] == name and command.get("type", 1) == command_type:
                    return command
        raise AssertionError(f"command {name!r} (type {command_type}) was never synced")

    async def invoke_slash(self, name: str, attachment: dict[str, Any] | None = None, option: str = "image", *,
                           dm: bool = False, user: dict[str, Any] | None = None, locale: str = "en-US") -> str:
        """A user runs `/name option:<attachment>` (or `/name` with no attachment); returns the interaction
        token to await the reply."""
        command = self._command(name, 1)
        data: dict[str, Any] = {"id": command["id"], "name": name, "type": 1}
        if attachment is not None:
            data["options"] = [{"name": option, "type": 11, "value": attachment["id"]}]
            data["resolved"] = {"attachments": {attachment["id"]: attachment}}
        if not dm and command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        interaction = self._interaction(data, dm=dm, user=user, locale=locale)
        await self._dispatch_all("INTERACTION_CREATE", interaction)
        return interaction["token"]

    async def invoke_message_command(self, name: str, message: dict[str, Any],
                                     user: dict[str, Any] | None = None) -> str:
        """A user right-clicks `message` > Apps > `name`; returns the interaction token."""
        command = self._command(name, 3)
        data = {
            "id": command["id"], "name": name, "type": 3, "target_id": message["id"],
            "resolved": {"messages": {message["id"]: message}},
        }
        interaction = self._interaction(data, dm="guild_id" not in message, user=user)
        await self._dispatch_all("INTERACTION_CREATE", interaction)
        return interaction["token"]

    async def click(self, message: dict[str, Any], custom_id: str, *, user: dict[str, Any] | None = None,
                    locale: str = "en-US", dm: bool = False) -> str:
        """A user clicks the button `custom_id` on `message` (a message the bot sent, as returned by the
        fake: see `Sent.message`); returns the interaction token to await the answer."""
        data = {"custom_id": custom_id, "component_type": 2}
        interaction = self._interaction(data, dm=dm, user=user, locale=locale, kind=INTERACTION_MESSAGE_COMPONENT)
        interaction["message"] = message
        await self._dispatch_all("INTERACTION_CREATE", interaction)
        return interaction["token"]

    def replies_to(self, target: str) -> list[Sent]:
        """Everything sent to one interaction token or channel/message, in order."""
        return [s for s in self.sent if s.target == target]

    async def final_reply(self, target: str, timeout: float = 20.0) -> Sent:
        """The visible answer to an interaction (a message callback, or the follow-up after a defer),
        or the bot's reply to a message (target = the user's message id)."""

        def done() -> Sent | None:
            for s in self.replies_to(target):
                if s.kind == "callback" and s.payload.get("type") == CALLBACK_DEFERRED_CHANNEL_MESSAGE:
                    continue
                return s
            return None

        return await self.wait_until(done, timeout, f"a reply to {target}")

    # ---------------------------------------------------------------- gateway
    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=None, max_msg_size=0)
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_json({"op": OP_HELLO, "d": {"heartbeat_interval": self.heartbeat_interval_ms}, "s": None,
                            "t": None})
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                payload = json.loads(msg.data)
                op = payload.get("op")
                if op == OP_HEARTBEAT:
                    self.heartbeats += 1
                    await ws.send_json({"op": OP_HEARTBEAT_ACK, "d": None, "s": None, "t": None})
                elif op == OP_IDENTIFY:
                    await self._identify(ws, payload["d"])
                elif op == OP_RESUME:
                    if payload["d"].get("token") != self.token:
                        await ws.close(code=CLOSE_AUTHENTICATION_FAILED, message=b"Authentication failed.")
                        break
                    await ws.send_json({"op": OP_INVALID_SESSION, "d": False, "s": None, "t": None})
        finally:
            self._sockets.remove(ws)
            if ws in self._ready_sockets:
                self._ready_sockets.remove(ws)
        return ws

    async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> None:
        self.identifies.append({k: v for k, v in data.items() if k != "token"} | {"token_ok": data.get("token")
                                                                                  == self.token})
        if data.get("token") != self.token:
            await ws.close(code=CLOSE_AUTHENTICATION_FAILED, message=b"Authentication failed.")
            return
        intents = int(data.get("intents", 0))
        if intents & INTENT_MESSAGE_CONTENT and not self.grant_message_content:
            await ws.close(code=CLOSE_DISALLOWED_INTENTS, message=b"Disallowed intent(s).")
            return
        ws.intents = intents  # type: ignore[attr-defined]
        ws.shard = tuple(data.get("shard") or (0, 1))  # type: ignore[attr-defined]
        ws.seq = 0  # type: ignore[attr-defined]
        owns_guild = self._owns(ws, str(self.guild_id))
        ready = {
            "v": 10,
            "user": self.bot_user,
            "guilds": [{"id": str(self.guild_id), "unavailable": True}] if owns_guild else [],
            "session_id": f"session-{self.new_id()}",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
        }
        if data.get("shard"):
            ready["shard"] = list(ws.shard)  # type: ignore[attr-defined]
        await self._dispatch(ws, "READY", ready)
        if intents & INTENT_GUILDS and owns_guild:
            await self._dispatch(ws, "GUILD_CREATE", self._guild())
        self._ready_sockets.append(ws)

    def _guild(self) -> dict[str, Any]:
        gid = str(self.guild_id)
        return {
            "id": gid, "name": "digits test guild", "icon": None, "owner_id": self.user["id"],
            "unavailable": False, "member_count": 2, "large": False, "features": [], "emojis": [], "stickers": [],
            "roles": [{"id": gid, "name": "@everyone", "permissions": "2248473465835073", "position": 0,
                       "color": 0, "hoist": False, "managed": False, "mentionable": False}],
            "channels": [{"id": str(self.channel_id), "type": 0, "name": "general", "position": 0,
                          "permission_overwrites": [], "guild_id": gid}],
            "members": [{"user": self.bot_user, "roles": [], "joined_at": "2025-01-01T00:00:00+00:00",
                         "deaf": False, "mute": False, "flags": 0}],
            "threads": [], "voice_states": [], "presences": [], "stage_instances": [],
            "guild_scheduled_events": [], "joined_at": "2025-01-01T00:00:00+00:00",
            "preferred_locale": self.guild_locale,
        }

    async def set_guild_locale(self, locale: str) -> None:
        """The guild's admins change its preferred locale: Discord sends GUILD_UPDATE to the bot."""
        self.guild_locale = locale
        await self._dispatch_all("GUILD_UPDATE", self._guild())

    @staticmethod
    def _owns(ws: web.WebSocketResponse, guild_id: str | None) -> bool:
        """Discord's routing: a guild's events go to shard (guild_id >> 22) % shard_count, DMs to shard 0."""
        shard_id, count = getattr(ws, "shard", (0, 1))
        return (int(guild_id) >> 22) % count == shard_id if guild_id else shard_id == 0

    @property
    def ready_shards(self) -> list[tuple[int, int]]:
        """(shard_id, shard_count) of each identified gateway session."""
        return [getattr(ws, "shard", (0, 1)) for ws in self._ready_sockets]

    async def _dispatch(self, ws: web.WebSocketResponse, event: str, data: dict[str, Any]) -> None:
        ws.seq = getattr(ws, "seq", 0) + 1  # type: ignore[attr-defined]
        self.dispatched.append((getattr(ws, "shard", (0, 1)), event))
        await ws.send_json({"op": OP_DISPATCH, "t": event, "s": ws.seq, "d": data})  # type: ignore[attr-defined]

    async def _dispatch_all(self, event: str, data: dict[str, Any]) -> None:
        """Send an event to the session(s) that own it: the guild's shard, or shard 0 for DMs."""
        targets = [ws for ws in self._ready_sockets if self._owns(ws, data.get("guild_id"))]
        if not targets:
            raise AssertionError("no bot is connected to the fake gateway")
        for ws in targets:
            await self._dispatch(ws, event, data)

    async def disconnect_all(self, code: int = 4000) -> None:
        """Drop every gateway connection (as Discord does on its side), to test reconnects."""
        for ws in list(self._sockets):
            await ws.close(code=code, message=b"fake disconnect")

    # ---------------------------------------------------------------- CDN
    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        att_id = request.match_info["id"]
        self.cdn_downloads.append(att_id)
        if att_id not in self._attachments:
            return web.Response(status=404)
        data, content_type = self._attachments[att_id]
        return web.Response(body=data, content_type=content_type)

    # ---------------------------------------------------------------- REST
    async def _read_body(self, request: web.Request) -> tuple[dict[str, Any], dict[str, bytes]]:
        """JSON body, or multipart (payload_json + files[n]) as discord.py sends uploads."""
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            payload = json.loads(form.get("payload_json") or "{}")  # type: ignore[arg-type]
            files = {}
            for key, value in form.items():
                if key.startswith("files[") and hasattr(value, "file"):
                    files[value.filename] = value.file.read()
            return payload, files
        if request.can_read_body:
            return await request.json(), {}
        return {}, {}

    def _message_payload(self, channel_id: str, payload: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        attachments = [{"id": str(self.new_id()), "filename": name, "size": len(data),
                        "url": f"{self.origin}/attachments/x/{name}", "proxy_url": f"{self.origin}/x/{name}"}
                       for name, data in files.items()]
        return {
            "id": str(self.new_id()), "channel_id": channel_id, "author": self.bot_user,
            "content": payload.get("content") or "", "timestamp": "2026-01-01T00:00:00.000000+00:00",
            "edited_timestamp": None, "tts": False, "mention_everyone": False, "mentions": [], "mention_roles": [],
            "attachments": attachments, "embeds": payload.get("embeds") or [], "pinned": False, "type": 0,
            "flags": payload.get("flags") or 0, "components": payload.get("components") or [],
        }

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["path"]
        method = request.method
        self.requests.append((method, path))
        parts = path.strip("/").split("/")
        # Interaction callbacks and webhooks are authenticated by their token in the URL.
        if parts[0] not in ("interactions", "webhooks") and request.headers.get("Authorization") != f"Bot {self.token}":
            self.unauthorized += 1
            return _json({"message": "401: Unauthorized", "code": 0}, status=401)

        if method == "GET" and path == "/users/@me":
            return _json(self.bot_user)
        if method == "GET" and path == "/oauth2/applications/@me":
            return _json({
                "id": str(self.application_id), "name": "digits", "description": "", "icon": None,
                "bot_public": True, "bot_require_code_grant": False, "owner": self.user, "verify_key": "0" * 64,
                "flags": 0, "team": None, "summary": "",
            })
        if method == "GET" and path in ("/gateway/bot", "/gateway"):
            return _json({"url": self.gateway_url, "shards": 1, "session_start_limit": {
                "total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}})
        if method == "PUT" and parts[0] == "applications" and parts[-1] == "commands":
            scope = parts[3] if len(parts) == 5 and parts[2] == "guilds" else "global"
            commands = await request.json()
            synced = []
            for command in commands:
                stored = dict(command)
                stored.update(id=str(self.new_id()), application_id=str(self.application_id), version="1")
                stored.setdefault("type", 1)
                stored.setdefault("description", "")
                if scope != "global":
                    stored["guild_id"] = scope
                synced.append(stored)
            self.synced_commands[scope] = synced
            return _json(synced)
        if method == "POST" and parts[0] == "interactions" and parts[-1] == "callback":
            token = parts[2]
            payload, files = await self._read_body(request)
            self.sent.append(Sent("callback", token, payload, files))
            response: dict[str, Any] = {"interaction": {
                "id": parts[1], "type": INTERACTION_APPLICATION_COMMAND,
                "response_message_loading": payload.get("type") == CALLBACK_DEFERRED_CHANNEL_MESSAGE,
                "response_message_ephemeral": bool(int((payload.get("data") or {}).get("flags") or 0)
                                                   & EPHEMERAL_FLAG),
            }, "resource": {"type": payload.get("type")}}
            if payload.get("type") in (CALLBACK_CHANNEL_MESSAGE, CALLBACK_UPDATE_MESSAGE):
                response["resource"]["message"] = self._message_payload(str(self.channel_id),
                                                                        payload.get("data") or {}, files)
            return _json(response)
        if parts[0] == "webhooks" and len(parts) >= 3:
            token = parts[2]
            payload, files = await self._read_body(request)
            kind = "followup" if method == "POST" else "edit"
            created = self._message_payload(str(self.channel_id), payload, files)
            self.sent.append(Sent(kind, token, payload, files, message=created))
            return _json(created)
        if method == "POST" and parts[0] == "channels" and parts[-1] == "messages":
            payload, files = await self._read_body(request)
            reference = (payload.get("message_reference") or {}).get("message_id")
            created = self._message_payload(parts[1], payload, files)
            self.sent.append(Sent("message", str(reference or parts[1]), payload, files, message=created))
            return _json(created)
        if method == "PATCH" and parts[0] == "channels" and len(parts) == 4 and parts[2] == "messages":
            payload, files = await self._read_body(request)  # the bot edits one of its messages
            edited = {**self._message_payload(parts[1], payload, files), "id": parts[3]}
            self.sent.append(Sent("edit", parts[3], payload, files, message=edited))
            return _json(edited)
        if method == "POST" and parts[0] == "channels" and parts[-1] == "typing":
            return web.Response(status=204)
        if method == "POST" and path == "/users/@me/channels":
            return _json({"id": str(self.dm_channel_id), "type": 1, "recipients": [self.user]})
        return _json({"message": f"fake Discord does not know {method} {path}", "code": 0}, status=404)
