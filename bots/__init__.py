"""Chat bots (Telegram, Discord) over one shared core: see bots.core."""
