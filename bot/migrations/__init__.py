"""Versioned database migrations shipped with the bot (``postgresql/NNNN_name.sql``), applied by ``bot.pg_migrate``."""
