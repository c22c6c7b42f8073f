"""digits-discord: the Discord adapter over the shared bot core.

Why a separate module: `bots.core.Recognizer` decides everything (limits, wording, errors); this
file only does Discord I/O — slash command, message context menu, mentions/DMs — and turns an
`Answer` into an embed with the 28x28 image the model saw (a digit) or the photo with each digit
boxed (a number, bots/annotate.py) as its thumbnail.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import logging
import os
import re
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.app_commands import locale_str
from discord.gateway import DiscordWebSocket

from bots import replies
from bots.answer import Answer, Outcome
from bots.chatstate import ChatState, MemoryChatState
from bots.config import (
    EXIT_CONFIG,
    ConfigError,
    CoreConfig,
    OneLineParser,
    configure_logging,
    core_config_from_env,
    env_flag,
    env_int,
    env_log_level,
    env_url,
    load_env,
    log_level,
    parse_int,
)
from bots.config import fail as config_fail
from bots.core import Attachment, DownloadFailed, Recognizer, make_chat_state, make_client, make_recognizer
from bots.feedback import (
    CHOICE_NOT_DIGIT,
    CHOICE_RIGHT,
    CHOICE_WRONG,
    ID_PATTERN,
    NUMBER_REPLY,
    PENDING_TTL,
    Feedback,
    FeedbackConfig,
    Result,
    button_id,
    feedback_config_from_env,
    join_tokens,
    number_key,
    number_photo_key,
    split_tokens,
)
from bots.i18n import N_, Translate, english, translator
from bots.redact import protect_secrets
from bots.replies import plain_text

log = logging.getLogger("bots.discord")

PROG = "digits-discord"
DEFAULT_API_BASE = "https://discord.com/api/v10"
DEFAULT_GATEWAY_URL = "wss://gateway.discord.gg/"
SEEN_FILENAME = "seen.png"
NO_IMAGE_TEXT = N_("I don't see an image there. Attach a photo of one handwritten digit.")
DOWNLOAD_FAILED_TEXT = N_("I couldn't download that attachment from Discord. Please try again.")
TITLE_SURE = N_("It's {digit}")
TITLE_UNSURE = N_("Probably {digit}")
CONFIDENCE_FIELD = N_("Confidence")
RUNNER_UP_FIELD = N_("Runner-up")
WORDING = {Outcome.DOWNLOAD_FAILED: DOWNLOAD_FAILED_TEXT}
DIGIT_DESCRIPTION = N_("Read one handwritten digit from an image")
IMAGE_DESCRIPTION = N_("A photo or image file of one handwritten digit")
READ_DIGIT_MENU = N_("Read digit")
FORGET_DESCRIPTION = N_("Delete the corrections kept for you")
HELP_DESCRIPTION = N_("How to get a good result, and what is kept")
MARKDOWN = replies.Style(escape=discord.utils.escape_markdown, digit="**{}**", hint="*{}*")  # replies' wording, bold
COLOURS = {
    Outcome.DIGIT: discord.Colour.green(),
    Outcome.RATE_LIMITED: discord.Colour.orange(),
    Outcome.BUSY: discord.Colour.orange(),
}


@dataclass(frozen=True)
class DiscordConfig:
    """Discord-side settings; the recognizer's own settings come from bots.config.core_config_from_env."""

    token: str
    api_base: str = DEFAULT_API_BASE
    gateway_url: str | None = None  # None: ask GET /gateway/bot, as Discord recommends
    guild_id: int | None = None  # sync commands to one guild (instant) instead of globally (slow to appear)
    message_content: bool = True  # request the privileged intent; we fall back without it if refused
    shard_count: int | None = None  # set: run discord.AutoShardedClient with this many shards in this process

    def __repr__(self) -> str:  # never let the token reach a log line via repr()
        return (f"DiscordConfig(api_base={self.api_base!r}, gateway_url={self.gateway_url!r}, "
                f"guild_id={self.guild_id!r}, message_content={self.message_content!r}, "
                f"shard_count={self.shard_count!r}, token=***)")


def discord_config_from_env(env: Mapping[str, str] | None = None) -> DiscordConfig:
    """Read DISCORD_* settings, validated (a `.env` in the working directory is read first; env vars win)."""
    if env is None:
        load_env()
        env = dict(os.environ)
    token = (env.get("DISCORD_BOT_TOKEN") or "").strip()
    if not token:
        raise ConfigError("DISCORD_BOT_TOKEN is not set: create a bot at https://discord.com/developers/applications "
                          "and export its token (or put it in .env).")
    if any(c.isspace() for c in token):
        raise ConfigError("DISCORD_BOT_TOKEN must be the bot token from the developer portal, without spaces")
    guild = (env.get("DISCORD_GUILD_ID") or "").strip()
    if guild and not guild.isdigit():
        raise ConfigError(f"DISCORD_GUILD_ID must be a numeric guild id, got {guild!r}")
    shards = (env.get("DISCORD_SHARD_COUNT") or "").strip()
    return DiscordConfig(
        token=token,
        api_base=(env_url(env, "DISCORD_API_BASE", DEFAULT_API_BASE, ("https", "http")) or "").rstrip("/"),
        gateway_url=env_url(env, "DISCORD_GATEWAY_URL", None, ("wss", "ws")),
        guild_id=int(guild) if guild else None,
        message_content=env_flag(env, "DISCORD_MESSAGE_CONTENT", True),
        shard_count=env_int(env, "DISCORD_SHARD_COUNT", 0, low=1, high=10_000) if shards else None,
    )


def point_discord_py_at(api_base: str, gateway_url: str | None) -> None:
    """discord.py keeps its endpoints in class attributes; set them for this process."""
    discord.http.Route.BASE = api_base.rstrip("/")
    if gateway_url:
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


def with_seen(kwargs: dict, embed: discord.Embed, answer: Answer) -> dict:
    """The image the model saw (a digit) or the photo with each digit boxed (a number) as the embed's thumbnail."""
    if answer.seen_png:
        embed.set_thumbnail(url=f"attachment://{SEEN_FILENAME}")
        kwargs["file"] = discord.File(io.BytesIO(answer.seen_png), filename=SEEN_FILENAME)
    return kwargs


def render(answer: Answer, tr: Translate = english) -> dict:
    """Keyword arguments for send()/reply(): an embed for a digit or a number, plain text for everything else."""
    if answer.outcome == Outcome.NUMBER:
        embed = discord.Embed(description=replies.number_text(answer, tr, MARKDOWN),
                              colour=discord.Colour.gold() if answer.doubtful else COLOURS[Outcome.DIGIT])
        return with_seen({"embed": embed}, embed, answer)
    if answer.outcome != Outcome.DIGIT or answer.digit is None:
        return {"content": plain_text(answer, WORDING, tr)}
    confident = answer.runner_up is None
    embed = discord.Embed(
        title=tr(TITLE_SURE if confident else TITLE_UNSURE).format(digit=answer.digit),
        colour=COLOURS[Outcome.DIGIT] if confident else discord.Colour.gold(),
    )
    if answer.confidence is not None:
        embed.add_field(name=tr(CONFIDENCE_FIELD), value=f"{answer.confidence:.0%}", inline=True)
    if answer.runner_up is not None:
        other, other_conf = answer.runner_up
        embed.add_field(name=tr(RUNNER_UP_FIELD), value=f"{other} ({other_conf:.0%})", inline=True)
        if answer.hint:
            embed.set_footer(text=tr(answer.hint))
    return with_seen({"embed": embed}, embed, answer)


class FeedbackButton(discord.ui.DynamicItem[discord.ui.Button], template=ID_PATTERN.pattern):
    """A right / wrong / digit button under an answer. Its custom id (`fb:<token>:<choice>`) is matched
    by pattern, not by an in-memory view, so buttons keep working after the bot restarts."""

    def __init__(self, token: str, choice: str, label: str = "",
                 style: discord.ButtonStyle = discord.ButtonStyle.secondary, row: int | None = None) -> None:
        super().__init__(discord.ui.Button(label=label or choice, style=style, custom_id=button_id(token, choice),
                                           row=row))
        self.token, self.choice = token, choice

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match) -> FeedbackButton:
        return cls(match["token"], match["choice"])

    async def callback(self, interaction: discord.Interaction) -> None:
        client = interaction.client
        if isinstance(client, DigitsBot):
            await client.on_feedback(interaction, self.token, self.choice)


def feedback_view(token: str, tr: Translate) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(FeedbackButton(token, CHOICE_RIGHT, "✓ " + tr(replies.RIGHT_BUTTON), discord.ButtonStyle.success))
    view.add_item(FeedbackButton(token, CHOICE_WRONG, "✗ " + tr(replies.WRONG_BUTTON), discord.ButtonStyle.danger))
    return view


def digits_view(token: str, tr: Translate) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for d in range(10):
        view.add_item(FeedbackButton(token, str(d), str(d), row=d // 5))
    view.add_item(FeedbackButton(token, CHOICE_NOT_DIGIT, tr(replies.NOT_A_DIGIT_BUTTON), row=2))
    return view


def interaction_translator(interaction: discord.Interaction) -> Translate:
    return translator(str(interaction.locale.value) if interaction.locale else None)


class CatalogTranslator(app_commands.Translator):
    """The slash commands' descriptions and the "Read digit" menu in every language we have a catalog for:
    discord.py sends them to Discord as `*_localizations` at sync, and each user's client shows its own."""

    async def translate(self, string: locale_str, locale: discord.Locale, context) -> str | None:
        text = translator(str(locale.value))(string.message)
        return text if text != string.message else None  # None: Discord shows the English default


class UserLocales:
    """The locale each user's Discord client last reported, remembered from their interactions.

    Why: a message (a mention, a DM) carries no locale of its author; only interactions (/digit, the
    menu, a button) do. So a user who has once used a command or tapped a button is answered in their
    own language afterwards; before that, in a guild, the guild's preferred locale; in a DM, English.
    In this process only (a Discord bot is one process per shard set): bounded, oldest forgotten first."""

    def __init__(self, max_users: int = 100_000) -> None:
        self._locales: dict[int, str] = {}
        self._max_users = max_users

    def remember(self, interaction: discord.Interaction) -> None:
        if interaction.locale is None:
            return
        user_id = interaction.user.id
        self._locales.pop(user_id, None)  # re-inserted last: dict order is the recency order
        self._locales[user_id] = str(interaction.locale.value)
        while len(self._locales) > self._max_users:
            del self._locales[next(iter(self._locales))]

    def for_message(self, message: discord.Message) -> Translate:
        """The best signal for a message: the author's own locale if known, else the guild's, else English."""
        known = self._locales.get(message.author.id)
        if known is None and message.guild is not None:
            known = str(message.guild.preferred_locale.value)
        return translator(known)


def pick_attachment(attachments: list[discord.Attachment]) -> discord.Attachment | None:
    """The first image attachment, else the first attachment (so a PDF gets 'not an image', not silence)."""
    for attachment in attachments:
        if (attachment.content_type or "").startswith("image/"):
            return attachment
    return attachments[0] if attachments else None


class DigitsBot(discord.Client):
    """Answers `/digit`, the "Read digit" message menu, and images in DMs or messages that mention it."""

    def __init__(self, recognizer: Recognizer, config: DiscordConfig, feedback: Feedback | None = None,
                 chat_state: ChatState | None = None, **options) -> None:
        """`chat_state` keeps which digits a number answer read, for a reply with the right number (in Redis
        with DIGITS_REDIS_URL: bots.core.make_chat_state); default: in this process."""
        intents = discord.Intents.default()
        intents.message_content = config.message_content
        options.setdefault("allowed_mentions", discord.AllowedMentions.none())  # replies never ping anyone
        super().__init__(intents=intents, **options)
        self.recognizer = recognizer
        self.config = config
        self.feedback = feedback if feedback is not None else Feedback(recognizer.client, FeedbackConfig(enabled=False))
        self.chat_state: ChatState = chat_state if chat_state is not None else MemoryChatState()
        self.tree = app_commands.CommandTree(self)
        self.user_locales = UserLocales()
        self._register_commands()

    # -- startup ---------------------------------------------------------------------------
    def _register_commands(self) -> None:
        bot = self

        @app_commands.command(name="digit", description=locale_str(DIGIT_DESCRIPTION))
        @app_commands.describe(image=locale_str(IMAGE_DESCRIPTION))
        @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=True)
        async def digit(interaction: discord.Interaction, image: discord.Attachment) -> None:
            await bot.answer_interaction(interaction, image)

        @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=True)
        async def read_digit(interaction: discord.Interaction, message: discord.Message) -> None:
            await bot.answer_interaction(interaction, pick_attachment(message.attachments))

        @app_commands.command(name="forget", description=locale_str(FORGET_DESCRIPTION))
        @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=True)
        async def forget(interaction: discord.Interaction) -> None:
            await bot.forget(interaction)

        @app_commands.command(name="help", description=locale_str(HELP_DESCRIPTION))
        @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=True)
        async def help_command(interaction: discord.Interaction) -> None:
            bot.user_locales.remember(interaction)
            tr = interaction_translator(interaction)
            privacy = "\n\n" + tr(replies.PRIVACY_TEXT) if bot.feedback.enabled else ""
            await interaction.response.send_message(tr(replies.HELP_TEXT) + privacy, ephemeral=True)

        menu = app_commands.ContextMenu(name=locale_str(READ_DIGIT_MENU), callback=read_digit)
        self.tree.add_command(digit)
        self.tree.add_command(menu)
        self.tree.add_command(forget)
        self.tree.add_command(help_command)

    async def setup_hook(self) -> None:
        """After login, before the gateway: find the gateway and sync the application commands."""
        self.add_dynamic_items(FeedbackButton)  # buttons matched by custom id: they outlive a restart
        await self.tree.set_translator(CatalogTranslator())
        if self.config.gateway_url is None:
            try:
                _, url, _ = await self.http.get_bot_gateway()
                DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
            except discord.DiscordException as exc:
                log.warning("GET /gateway/bot failed (%s); using %s", exc, DiscordWebSocket.DEFAULT_GATEWAY)
        try:
            if self.config.guild_id is not None:
                guild = discord.Object(id=self.config.guild_id)
                self.tree.copy_global_to(guild=guild)
                synced = await self.tree.sync(guild=guild)
                log.info("synced %d commands to guild %s", len(synced), self.config.guild_id)
            else:
                synced = await self.tree.sync()
                log.info("synced %d global commands (they may take a while to appear)", len(synced))
        except discord.HTTPException as exc:
            # Mentions and DMs still work, and commands from an earlier sync stay registered.
            log.error("could not sync application commands: %s", exc)

    async def on_ready(self) -> None:
        log.info("connected to Discord as %s (message-content intent %s)", self.user,
                 "on" if self.intents.message_content else "off")

    # -- the shared flow (bots.core) with Discord's download ---------------------------------
    async def _handle(self, user_id: int, attachment: discord.Attachment, on_accepted) -> Answer:
        async def download() -> bytes:
            try:
                return await attachment.read()
            except (TimeoutError, discord.HTTPException, aiohttp.ClientError, OSError) as exc:
                raise DownloadFailed(str(exc)) from exc

        meta = Attachment(attachment.size, attachment.content_type, attachment.filename)
        return await self.recognizer.handle(f"discord:{user_id}", meta, download, on_accepted=on_accepted)

    async def _with_buttons(self, kwargs: dict, user_id: int, answer: Answer, tr: Translate) -> tuple[dict, list[str]]:
        """Add the right/wrong buttons to a digit answer (feedback on); keep a number answer's digits for a
        reply with the right number (their tokens are returned, to be kept under the sent message's id by
        `_keep_number`), and say so in the embed's footer."""
        if answer.outcome == Outcome.DIGIT and self.feedback.enabled:
            token = await self.feedback.offer("discord", user_id, answer.pixels, answer.digit, answer.model_version)
            if token:
                kwargs["view"] = feedback_view(token, tr)
        elif answer.outcome == Outcome.NUMBER and self.feedback.enabled and "embed" in kwargs:
            tokens = await self.feedback.offer_number("discord", user_id, list(answer.digit_pixels),
                                                      answer.model_version)
            if tokens:
                kwargs["embed"].set_footer(text=tr(replies.NUMBER_HINT))
            return kwargs, tokens
        return kwargs, []

    async def _keep_number(self, sent: discord.Message | None, tokens: list[str],
                           attachment: discord.Attachment) -> None:
        """A reply to `sent` with the right number finds the digits' tokens, and the photo's URL (to read it
        again, cut into the right digits), under its id."""
        if sent is not None and tokens:
            await self.chat_state.set_text(number_key("discord", sent.channel.id, sent.id), join_tokens(tokens),
                                           PENDING_TTL)
            await self.chat_state.set_text(number_photo_key("discord", sent.channel.id, sent.id), attachment.url,
                                           PENDING_TTL)

    async def answer_interaction(self, interaction: discord.Interaction, attachment: discord.Attachment | None) -> None:
        """Refusals answer at once (ephemeral); real work is deferred past Discord's 3-second window."""
        self.user_locales.remember(interaction)
        tr = interaction_translator(interaction)
        try:
            if attachment is None:
                await interaction.response.send_message(tr(NO_IMAGE_TEXT), ephemeral=True)
                return

            async def defer() -> None:
                await interaction.response.defer(thinking=True)

            answer = await self._handle(interaction.user.id, attachment, defer)
            if not answer.accepted:
                await interaction.response.send_message(**render(answer, tr), ephemeral=True)
                return
            kwargs, tokens = await self._with_buttons(render(answer, tr), interaction.user.id, answer, tr)
            sent = await interaction.followup.send(**kwargs, wait=True)
            await self._keep_number(sent, tokens, attachment)
        except discord.HTTPException:
            log.exception("could not answer interaction %s", interaction.id)

    async def on_message(self, message: discord.Message) -> None:
        """Images in DMs, or in guild messages that mention the bot (or reply to someone's image, mentioning
        it), get a reply."""
        if message.author.bot or self.user is None:
            return
        if await self.number_reply(message):
            return
        in_dm = message.guild is None
        mentioned = any(user.id == self.user.id for user in message.mentions)
        if not (in_dm or mentioned):
            return
        tr = self.user_locales.for_message(message)
        try:
            attachment = pick_attachment(message.attachments)
            referenced = message.reference.resolved if message.reference else None
            if attachment is None and isinstance(referenced, discord.Message) and referenced.author.id != self.user.id:
                attachment = pick_attachment(referenced.attachments)  # "@digits" in reply to someone's photo
            if attachment is None:
                await message.reply(tr(self.recognizer.HELP_TEXT), mention_author=False)
                return

            async def typing() -> None:
                try:
                    await message.channel.typing()  # one "digits is typing..." (10 s); cosmetic, so never fatal
                except discord.HTTPException as exc:
                    log.debug("typing indicator failed: %s", exc)

            answer = await self._handle(message.author.id, attachment, typing)
            kwargs, tokens = await self._with_buttons(render(answer, tr), message.author.id, answer, tr)
            await self._keep_number(await message.reply(**kwargs, mention_author=False), tokens, attachment)
        except discord.HTTPException:
            log.exception("could not reply to message %s", message.id)

    # -- corrections (bots.feedback) ----------------------------------------------------------
    async def on_feedback(self, interaction: discord.Interaction, token: str, choice: str) -> None:
        """A tap on right / wrong / a digit under an answer: only its sender may correct it, once."""
        self.user_locales.remember(interaction)
        tr = interaction_translator(interaction)
        try:
            outcome = await self.feedback.choose("discord", interaction.user.id, token, choice)
            if outcome.result == Result.NOT_YOURS:
                await interaction.response.send_message(tr(replies.NOT_YOURS), ephemeral=True)
            elif outcome.result == Result.ASK_DIGIT:
                await interaction.response.edit_message(view=digits_view(token, tr))
            elif outcome.result == Result.RECORDED:
                line = replies.correction_line(outcome.label, outcome.predicted, tr)
                message = interaction.message
                if message is not None and message.embeds:
                    embed = message.embeds[0]
                    embed.description = line
                    await interaction.response.edit_message(embed=embed, view=None)
                else:
                    content = f"{message.content}\n{line}" if message is not None else line
                    await interaction.response.edit_message(content=content, view=None)
                await interaction.followup.send(replies.recorded_text(outcome.label, tr), ephemeral=True)
            elif outcome.result == Result.ALREADY:
                await interaction.response.send_message(tr(replies.ALREADY_RECORDED), ephemeral=True)
            elif outcome.result == Result.FAILED:
                await interaction.response.send_message(tr(replies.FEEDBACK_FAILED), ephemeral=True)
            else:
                await interaction.response.send_message(tr(replies.EXPIRED), ephemeral=True)
        except discord.HTTPException:
            log.exception("could not answer button %s", interaction.id)

    async def number_reply(self, message: discord.Message) -> bool:
        """A reply of digits to one of our number answers: the right number, recorded digit by digit if it
        comes from the sender and has as many digits as were read; the answer is edited to show it and the
        user thanked, once. False when `message` is no such reply (the usual handling goes on)."""
        reference = message.reference
        if reference is None or reference.message_id is None or not self.feedback.enabled:
            return False
        assert self.user is not None
        text = re.sub(rf"<@!?{self.user.id}>", "", message.content or "")
        if not NUMBER_REPLY.fullmatch(text):
            return False
        channel_id = reference.channel_id or message.channel.id
        tokens = split_tokens(await self.chat_state.get_text(number_key("discord", channel_id, reference.message_id)))
        if not tokens:
            return False
        tr = self.user_locales.for_message(message)
        url = await self.chat_state.get_text(number_photo_key("discord", channel_id, reference.message_id))
        fetch = (lambda: self.http.get_from_cdn(url)) if url else None
        outcome = await self.feedback.correct_number("discord", message.author.id, tokens, text, fetch)
        wording = {
            Result.WRONG_LENGTH: lambda: tr(replies.NUMBER_LENGTH).format(count=len(tokens)),
            Result.NOT_YOURS: lambda: tr(replies.NOT_YOURS),
            Result.ALREADY: lambda: tr(replies.ALREADY_RECORDED),
            Result.FAILED: lambda: tr(replies.FEEDBACK_FAILED),
            Result.RECORDED: lambda: tr(replies.RECORDED_NUMBER).format(number=outcome.corrected),
        }
        try:
            if outcome.result == Result.RECORDED:
                await self._show_number_correction(reference.resolved, outcome.read, outcome.corrected, tr)
            await message.reply(wording.get(outcome.result, lambda: tr(replies.EXPIRED))(), mention_author=False)
        except discord.HTTPException:
            log.exception("could not answer the correction %s", message.id)
        return True

    async def _show_number_correction(self, answer: object, read: str, corrected: str, tr: Translate) -> None:
        """Edit the number answer: the correction under the reading, the invitation to correct gone."""
        if not isinstance(answer, discord.Message) or not answer.embeds:
            return  # cosmetic: the correction is stored either way
        embed = answer.embeds[0]
        embed.description = f"{embed.description or ''}\n{replies.number_correction_line(read, corrected, tr)}"
        embed.remove_footer()
        try:
            await answer.edit(embed=embed)
        except discord.HTTPException as exc:
            log.debug("could not edit the corrected answer: %s", exc)

    async def forget(self, interaction: discord.Interaction) -> None:
        """/forget: delete every correction kept for this user, and say how many went."""
        self.user_locales.remember(interaction)
        tr = interaction_translator(interaction)
        if not self.feedback.enabled:
            await interaction.response.send_message(tr(replies.FEEDBACK_OFF), ephemeral=True)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        deleted = await self.feedback.forget("discord", interaction.user.id)
        text = tr(replies.FORGET_FAILED) if deleted is None else tr(replies.FORGOTTEN).format(count=deleted)
        await interaction.followup.send(text, ephemeral=True)



class ShardedDigitsBot(DigitsBot, discord.AutoShardedClient):
    """DigitsBot over discord.py's AutoShardedClient: `shard_count` gateway sessions in this process.

    Why: Discord requires sharding from 2,500 guilds on, and spreads guilds over the shards itself.
    The per-user rate limit holds across shards as it is one Recognizer (and across processes with
    DIGITS_REDIS_URL)."""

    async def on_shard_ready(self, shard_id: int) -> None:
        log.info("shard %d of %s ready", shard_id, self.shard_count)


def make_bot(recognizer: Recognizer, config: DiscordConfig, feedback: Feedback | None = None,
             chat_state: ChatState | None = None, **options) -> DigitsBot:
    """A DigitsBot, auto-sharded when DISCORD_SHARD_COUNT (config.shard_count) is set."""
    if config.shard_count is not None:
        return ShardedDigitsBot(recognizer, config, feedback, chat_state, shard_count=config.shard_count, **options)
    return DigitsBot(recognizer, config, feedback, chat_state, **options)


async def serve(config: DiscordConfig, recognizer: Recognizer, feedback: Feedback | None = None,
                chat_state: ChatState | None = None, **options) -> None:
    """Run the bot until cancelled; without the message-content intent if Discord refuses it."""
    point_discord_py_at(config.api_base, config.gateway_url)
    while True:
        bot = make_bot(recognizer, config, feedback, chat_state, **options)
        try:
            async with bot:
                await bot.start(config.token)
            return
        except discord.PrivilegedIntentsRequired:
            if not config.message_content:
                raise
            log.warning(
                "Discord refused the message-content intent (enable it under Bot > Privileged Gateway Intents); "
                "running without it: /digit, 'Read digit', DMs and mentions still work"
            )
            config = dataclasses.replace(config, message_content=False)


async def _amain(config: DiscordConfig, core: CoreConfig, feedback_config: FeedbackConfig | None = None) -> int:
    recognizer = make_recognizer(core, make_client(core))
    feedback = Feedback(recognizer.client, feedback_config or FeedbackConfig(enabled=False), redis_url=core.redis_url)
    chat_state = make_chat_state(core)
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)  # type: ignore[union-attr]
    try:
        await serve(config, recognizer, feedback, chat_state)
    except asyncio.CancelledError:
        log.info("shutting down")
    except discord.LoginFailure:
        log.error("Discord rejected DISCORD_BOT_TOKEN (401): check the token")
        return EXIT_CONFIG
    finally:
        await recognizer.close()
        await feedback.aclose()
        await chat_state.close()
    return 0


def guild_id(value: str) -> int:
    """argparse type for --guild-id: a positive numeric id."""
    try:
        return parse_int(value, "--guild-id", low=1)
    except ConfigError:
        raise argparse.ArgumentTypeError(f"must be a numeric guild id, got {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Discord bot for the digits recognizer: /digit image:<attachment>, the 'Read digit' message "
        "menu, and images sent in DMs or in messages that mention the bot.",
        epilog="Environment (a .env file in the working directory is read too; env vars win): "
        "DISCORD_BOT_TOKEN (required), DIGITS_SERVER (default 127.0.0.1:50051), DISCORD_GUILD_ID (sync commands "
        "to one guild), DISCORD_MESSAGE_CONTENT (1/0, default 1: request the privileged intent, falling back "
        f"without it if refused), DISCORD_API_BASE (default {DEFAULT_API_BASE}), DISCORD_GATEWAY_URL (default: "
        "from GET /gateway/bot), DISCORD_SHARD_COUNT (run an auto-sharded client with this many shards), "
        "DIGITS_API_TOKEN, DIGITS_RATE_LIMIT, DIGITS_RATE_WINDOW, DIGITS_MAX_BYTES, DIGITS_LOW_CONFIDENCE, "
        "DIGITS_TIMEOUT, DIGITS_REDIS_URL, LOG_LEVEL. A bad setting exits with code 2 and one line naming it.",
    )
    parser.add_argument("--guild-id", type=guild_id,
                        help="sync commands to this guild only (overrides DISCORD_GUILD_ID)")
    parser.add_argument("--no-message-content", action="store_true",
                        help="do not request the privileged message-content intent")
    parser.add_argument("--log-level", type=log_level, default=None,
                        help="logging level (default LOG_LEVEL, else INFO)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of digits-discord; returns the exit code (2: configuration error)."""
    args = build_parser().parse_args(argv)
    load_env()
    try:
        level = args.log_level or env_log_level()
        config = discord_config_from_env()
        core = core_config_from_env()
        feedback = feedback_config_from_env()
    except ConfigError as exc:
        return config_fail(PROG, exc)
    configure_logging(level)
    protect_secrets(config.token, core.api_token, core.redis_url)
    for name in ("discord.http", "discord.webhook", "discord.gateway"):  # their debug lines carry interaction tokens
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLogger().level))
    if args.guild_id is not None or args.no_message_content:
        config = dataclasses.replace(
            config,
            guild_id=args.guild_id if args.guild_id is not None else config.guild_id,
            message_content=config.message_content and not args.no_message_content,
        )
    log.info("starting: digits server %s, %r", core.digits_server, config)
    return asyncio.run(_amain(config, core, feedback))


if __name__ == "__main__":
    sys.exit(main())
