-- The platform threads the bot follows (bot/threads.py), shared by every bot process: a Slack thread answered by
-- one process goes on with the same conversation when its next message reaches another.
-- conversation_thread '' is the channel's own conversation (a /ask thread). Forgotten after 30 days unused.

CREATE TABLE followed_threads (
    platform text NOT NULL,
    channel text NOT NULL,
    thread text NOT NULL,
    conversation_channel text NOT NULL,
    conversation_thread text NOT NULL DEFAULT '',
    followed_at double precision NOT NULL,
    PRIMARY KEY (platform, channel, thread)
);
CREATE INDEX followed_threads_by_age ON followed_threads (followed_at);
