"""A small fake Telegram Bot API on 127.0.0.1, so the real python-telegram-bot can be tested end to end.

Why: the bot must be exercised through the library's own HTTP client (no mocks), without internet.
It runs an aiohttp server in its own thread and event loop, so tests, benchmarks and bots in other
processes can all talk to it. It queues updates for `getUpdates` (long polling), serves files under
`/file/bot<token>/<path>`, and records every call the bot made.
"""

from __future__ import annotations

import asyncio
import html
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

BOT_ID = 424242
BOT_USERNAME = "digits_test_bot"


@dataclass
class Call:
    """One request the bot made: method name, decoded parameters, uploaded files, arrival time."""

    method: str
    params: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    at: float = 0.0
    result: Any = None  # what the fake answered (e.g. the sent message, with its message_id)

    @property
    def chat_id(self) -> int | None:
        value = self.params.get("chat_id")
        return int(value) if value is not None else None

    @property
    def reply_to(self) -> int | None:
        """The message id this call quotes (reply_parameters or the legacy reply_to_message_id)."""
        rp = self.params.get("reply_parameters")
        if isinstance(rp, dict):
            return rp.get("message_id")
        return self.params.get("reply_to_message_id")


def _decode(value: str) -> Any:
    """PTB sends each non-string parameter JSON-encoded in a form field."""
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


_ENTITY_TYPES = {"b": "bold", "strong": "bold", "i": "italic", "em": "italic", "code": "code"}


def html_entities(markup: str) -> tuple[str, list[dict[str, Any]]]:
    """Telegram's reading of an HTML-formatted message: the plain text, and an entity per <b>/<i>/<code>
    span, with offsets and lengths in UTF-16 code units as the Bot API counts them."""
    text, entities, open_at = "", [], {}
    for piece in re.split(r"(<[^>]+>)", markup):
        tag = re.fullmatch(r"<(/?)(\w+)[^>]*>", piece)
        if tag is None:
            text += html.unescape(piece)
            continue
        closing, name = tag.group(1) == "/", tag.group(2).lower()
        units = len(text.encode("utf-16-le")) // 2
        if not closing:
            open_at[name] = units
        elif name in open_at and name in _ENTITY_TYPES:
            start = open_at.pop(name)
            entities.append({"type": _ENTITY_TYPES[name], "offset": start, "length": units - start})
    return text, entities


class FakeTelegram:
    """The fake Bot API server. Start with `start()`; `root` is what TELEGRAM_API_URL should be."""

    def __init__(self, token: str = "123456:TEST-token-abcdefghijklmnopqrstuvwxyz") -> None:
        self.token = token
        self.calls: list[Call] = []
        self.delivered_at: dict[int, float] = {}  # update_id -> when getUpdates handed it over
        self.webhook_url: str | None = None
        self.webhook_secret: str | None = None
        self.hold_updates = False
        self.held: list[dict[str, Any]] = []
        self.fail_chats: set[int] = set()  # send* calls to these chats fail like a deleted chat would
        # Telegram's flood control for groups: (max messages, per seconds) per group chat; more gets a 429
        # RetryAfter. Chat actions (typing) are not messages and are not counted.
        self.group_flood_limit: tuple[int, float] | None = None
        self.flooded: list[Call] = []  # the send* calls answered with 429 (not in `calls`)
        self._group_sends: dict[int, list[float]] = {}
        self._updates: list[dict[str, Any]] = []
        self._files: dict[str, tuple[str, bytes, int | None]] = {}
        self._ids = itertools.count(1)
        self._message_ids = itertools.count(1000)
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # notified on every recorded call
        self._loop: asyncio.AbstractEventLoop | None = None
        self._new_update: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeTelegram:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="fake-telegram", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake Telegram API did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(10)
        self._loop = None

    def __enter__(self) -> FakeTelegram:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        self._new_update = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_method)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_file)
        self._runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ready.set()
        loop.run_forever()
        loop.close()

    async def _shutdown(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    # -- what tests do -----------------------------------------------------------------------------
    def add_file(self, data: bytes, *, reported_size: int | None = None, name: str = "photo.jpg") -> str:
        """Store a downloadable file; returns its file_id. `reported_size` lets a test lie about the size."""
        file_id = f"file-{next(self._ids)}"
        with self._lock:
            self._files[file_id] = (f"files/{file_id}/{name}", data, reported_size)
        return file_id

    def push_update(self, payload: dict[str, Any]) -> int:
        """Queue an update (its `message`/... part); returns the update_id.

        With `hold_updates` set, the update is only kept in `held` (for webhook tests to POST themselves)."""
        update_id = next(self._ids)
        with self._lock:
            if self.hold_updates:
                self.held.append({"update_id": update_id, **payload})
                return update_id
            self._updates.append({"update_id": update_id, **payload})
        if self._loop is not None and self._new_update is not None:
            self._loop.call_soon_threadsafe(self._new_update.set)
        return update_id

    def message(
        self,
        *,
        chat_id: int = 111,
        user_id: int = 111,
        chat_type: str = "private",
        text: str | None = None,
        caption: str | None = None,
        reply_to_bot: bool = False,
        language_code: str | None = None,
        **content: Any,
    ) -> tuple[int, int]:
        """Queue a message update; returns (update_id, message_id)."""
        message_id = next(self._message_ids)
        chat: dict[str, Any] = {"id": chat_id, "type": chat_type}
        if chat_type == "private":
            chat["first_name"] = "Tester"
        else:
            chat["title"] = "Test group"
        msg: dict[str, Any] = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": chat,
            "from": self._user(user_id, language_code),
            **content,
        }
        if text is not None:
            msg["text"] = text
            if text.startswith("/"):
                command = text.split()[0]
                msg["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        if caption is not None:
            msg["caption"] = caption
            mention = f"@{BOT_USERNAME}"
            if mention in caption:
                msg["caption_entities"] = [
                    {"type": "mention", "offset": caption.index(mention), "length": len(mention)}
                ]
        if reply_to_bot:
            msg["reply_to_message"] = {
                "message_id": message_id - 1,
                "date": int(time.time()),
                "chat": chat,
                "from": {"id": BOT_ID, "is_bot": True, "first_name": "Digits", "username": BOT_USERNAME},
                "text": "It's 7.",
            }
        return self.push_update({"message": msg}), message_id

    @staticmethod
    def _user(user_id: int, language_code: str | None = None) -> dict[str, Any]:
        user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": "Tester"}
        if language_code:
            user["language_code"] = language_code
        return user

    def callback_query(self, message: dict[str, Any], data: str, *, user_id: int = 111,
                       language_code: str | None = None) -> tuple[int, str]:
        """Queue a tap on an inline button of `message` (a message the bot sent: a Call's `result`);
        returns (update_id, callback_query id)."""
        query_id = f"cq-{next(self._ids)}"
        query = {"id": query_id, "from": self._user(user_id, language_code), "message": message,
                 "chat_instance": "ci-1", "data": data}
        return self.push_update({"callback_query": query}), query_id

    def files_named(self, name: str) -> set[str]:
        """The file_ids stored under `name` (to check what the bot did or did not download)."""
        with self._lock:
            return {fid for fid, (path, _, _) in self._files.items() if path.endswith("/" + name)}

    def downloaded(self) -> set[str]:
        """The file_ids the bot asked for with getFile."""
        return {str(c.params.get("file_id")) for c in self.sent("getFile")}

    def photo(
        self, data: bytes, *, reported_size: int | None = None, name: str = "photo.jpg", **kw: Any
    ) -> tuple[int, int]:
        """A photo message: a tiny thumbnail plus the full-size image (the bot must pick the largest)."""
        thumb = self.add_file(b"not the real photo", name="thumb.jpg")
        big = self.add_file(data, reported_size=reported_size, name=name)
        size = reported_size if reported_size is not None else len(data)
        sizes = [
            {"file_id": thumb, "file_unique_id": f"u{thumb}", "width": 90, "height": 67, "file_size": 18},
            {"file_id": big, "file_unique_id": f"u{big}", "width": 640, "height": 480, "file_size": size},
        ]
        return self.message(photo=sizes, **kw)

    def document(
        self, data: bytes, *, mime_type: str, file_name: str, reported_size: int | None = None, **kw: Any
    ) -> tuple[int, int]:
        file_id = self.add_file(data, reported_size=reported_size, name=file_name)
        size = reported_size if reported_size is not None else len(data)
        doc = {"file_id": file_id, "file_unique_id": f"u{file_id}", "file_name": file_name,
               "mime_type": mime_type, "file_size": size}
        return self.message(document=doc, **kw)

    def sticker(self, data: bytes, *, animated: bool = False, **kw: Any) -> tuple[int, int]:
        file_id = self.add_file(data, name="sticker.webp")
        sticker = {"file_id": file_id, "file_unique_id": f"u{file_id}", "type": "regular", "width": 512,
                   "height": 512, "is_animated": animated, "is_video": False, "file_size": len(data)}
        return self.message(sticker=sticker, **kw)

    def sent(self, method: str | None = None, *, chat_id: int | None = None) -> list[Call]:
        """Calls recorded so far, optionally only one method and/or one chat."""
        with self._lock:
            calls = list(self.calls)
        return [
            c for c in calls if (method is None or c.method == method) and (chat_id is None or c.chat_id == chat_id)
        ]

    async def wait_for(self, method: str, *, reply_to: int | None = None, chat_id: int | None = None,
                       count: int = 1, timeout: float = 15.0) -> list[Call]:
        """Wait (without blocking the caller's event loop) until `count` matching calls arrived."""
        deadline = time.monotonic() + timeout
        while True:
            matches = [c for c in self.sent(method, chat_id=chat_id) if reply_to is None or c.reply_to == reply_to]
            if len(matches) >= count:
                return matches
            if time.monotonic() > deadline:
                seen = [(c.method, c.params.get("text")) for c in self.sent()][-10:]
                raise AssertionError(f"timed out waiting for {count} x {method} (reply_to={reply_to}); last: {seen}")
            await asyncio.sleep(0.01)

    def wait_for_sync(self, method: str, *, reply_to: int, timeout: float = 30.0) -> Call:
        """Blocking wait for the call that replies to `reply_to` (for benchmarks and process tests)."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                for call in reversed(self.calls):
                    if call.method == method and call.reply_to == reply_to:
                        return call
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no {method} replying to message {reply_to} within {timeout:g} s")
                self._arrived.wait(remaining)

    # -- the Bot API -------------------------------------------------------------------------------
    async def _handle_method(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response({"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401)
        method = request.match_info["method"]
        params: dict[str, Any] = {}
        files: dict[str, bytes] = {}
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                params = await request.json()
            else:
                form = await request.post()
                for key, value in form.items():
                    if isinstance(value, web.FileField):
                        files[key] = value.file.read()
                    else:
                        params[key] = _decode(value)
        params.update({k: _decode(v) for k, v in request.query.items()})
        handler = getattr(self, f"api_{method}", None)
        if handler is None:
            return web.json_response({"ok": False, "error_code": 404, "description": "Not Found"}, status=404)
        if method.startswith("send") and method != "sendChatAction" and self._over_group_limit(params.get("chat_id")):
            with self._lock:
                self.flooded.append(Call(method, params, files, time.perf_counter()))
            retry_after = max(1, round(self.group_flood_limit[1]))  # type: ignore[index]
            return web.json_response({"ok": False, "error_code": 429, "description": "Too Many Requests: retry after "
                                      f"{retry_after}", "parameters": {"retry_after": retry_after}}, status=429)
        call = Call(method, params, files, time.perf_counter())
        if method != "getUpdates":
            with self._lock:
                self.calls.append(call)
                self._arrived.notify_all()
        chat = params.get("chat_id")
        if method.startswith("send") and chat is not None and int(chat) in self.fail_chats:
            return web.json_response({"ok": False, "error_code": 400, "description": "Bad Request: chat not found"},
                                     status=400)
        result = await handler(params, files)
        if isinstance(result, web.Response):
            return result
        call.result = result
        return web.json_response({"ok": True, "result": result})

    async def _handle_file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        path = request.match_info["path"]
        with self._lock:
            found = [data for p, data, _ in self._files.values() if p == path]
        if not found:
            return web.Response(status=404)
        return web.Response(body=found[0], content_type="application/octet-stream")

    def _over_group_limit(self, chat: Any) -> bool:
        """Count a send to a group chat (negative id) in a sliding window; True when it is over the limit."""
        if self.group_flood_limit is None or chat is None or int(chat) >= 0:
            return False
        limit, period = self.group_flood_limit
        now = time.monotonic()
        with self._lock:
            sends = [t for t in self._group_sends.get(int(chat), []) if now - t < period]
            over = len(sends) >= limit
            if not over:
                sends.append(now)
            self._group_sends[int(chat)] = sends
        return over

    def _me(self) -> dict[str, Any]:
        return {"id": BOT_ID, "is_bot": True, "first_name": "Digits", "username": BOT_USERNAME,
                "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False}

    async def api_getMe(self, params, files):
        return self._me()

    async def api_getUpdates(self, params, files):
        offset = int(params.get("offset") or 0)
        limit = int(params.get("limit") or 100)
        timeout = float(params.get("timeout") or 0)
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if offset:
                    self._updates = [u for u in self._updates if u["update_id"] >= offset]
                batch = self._updates[:limit]
                now = time.perf_counter()
                for u in batch:
                    self.delivered_at.setdefault(u["update_id"], now)
            if batch or time.monotonic() >= deadline:
                return batch
            assert self._new_update is not None
            self._new_update.clear()
            try:
                await asyncio.wait_for(self._new_update.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                pass

    async def api_getFile(self, params, files):
        file_id = params.get("file_id")
        with self._lock:
            entry = self._files.get(file_id)
        if entry is None:
            return web.json_response({"ok": False, "error_code": 400, "description": "Bad Request: invalid file_id"},
                                     status=400)
        path, data, reported = entry
        size = reported if reported is not None else len(data)
        if size > 20 * 1024 * 1024:
            return web.json_response({"ok": False, "error_code": 400, "description": "Bad Request: file is too big"},
                                     status=400)
        return {"file_id": file_id, "file_unique_id": f"u{file_id}", "file_size": size, "file_path": path}

    def _sent_message(self, params: dict[str, Any], **content: Any) -> dict[str, Any]:
        return {"message_id": next(self._message_ids), "date": int(time.time()),
                "chat": {"id": int(params.get("chat_id", 0)), "type": "private"}, "from": self._me(), **content}

    async def api_sendMessage(self, params, files):
        markup = params.get("reply_markup")
        extra = {"reply_markup": markup} if isinstance(markup, dict) else {}
        text = str(params.get("text", ""))
        if params.get("parse_mode") == "HTML":  # as Telegram does: the text without the markup, plus entities
            text, entities = html_entities(text)
            extra["entities"] = entities
        return self._sent_message(params, text=text, **extra)

    async def api_answerCallbackQuery(self, params, files):
        return True

    async def api_editMessageText(self, params, files):
        return {"message_id": int(params.get("message_id", 0)), "date": int(time.time()),
                "chat": {"id": int(params.get("chat_id", 0)), "type": "private"}, "from": self._me(),
                "text": str(params.get("text", ""))}

    async def api_editMessageReplyMarkup(self, params, files):
        return {"message_id": int(params.get("message_id", 0)), "date": int(time.time()),
                "chat": {"id": int(params.get("chat_id", 0)), "type": "private"}, "from": self._me(), "text": "."}

    async def api_sendPhoto(self, params, files):
        size = len(files.get("photo", b""))
        photo = [{"file_id": "sent-photo", "file_unique_id": "sent", "width": 224, "height": 224, "file_size": size}]
        return self._sent_message(params, photo=photo, caption=params.get("caption"))

    async def api_sendChatAction(self, params, files):
        return True

    async def api_setMyCommands(self, params, files):
        return True

    async def api_deleteWebhook(self, params, files):
        self.webhook_url = None
        return True

    async def api_setWebhook(self, params, files):
        self.webhook_url = params.get("url")
        self.webhook_secret = params.get("secret_token")
        return True

    async def api_getWebhookInfo(self, params, files):
        return {"url": self.webhook_url or "", "has_custom_certificate": False, "pending_update_count": 0}

    async def api_close(self, params, files):
        return True

    async def api_logOut(self, params, files):
        return True
