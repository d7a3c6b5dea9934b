-- History, channel data and the message record (inbox) in PostgreSQL: the meaning of SQLite schema v3.
-- Times the bot writes are seconds since the epoch (double precision), as in SQLite; liveness uses the server's clock.

CREATE TABLE messages (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    platform text NOT NULL,
    channel text NOT NULL,
    thread text NOT NULL DEFAULT '',
    role text NOT NULL CHECK (role IN ('user', 'assistant')),
    content text NOT NULL,
    created_at double precision NOT NULL,
    interrupted boolean NOT NULL DEFAULT false,
    author text,
    author_id text
);
CREATE INDEX messages_by_conversation ON messages (platform, channel, thread, id);
CREATE INDEX messages_by_age ON messages (created_at);

CREATE TABLE personas (
    platform text NOT NULL,
    channel text NOT NULL,
    prompt text NOT NULL,
    set_by text NOT NULL,
    set_at double precision NOT NULL,
    PRIMARY KEY (platform, channel)
);

CREATE TABLE feedback (
    platform text NOT NULL,
    channel text NOT NULL,
    thread text NOT NULL DEFAULT '',
    message_id text NOT NULL,
    user_id text NOT NULL,
    helpful boolean NOT NULL,
    created_at double precision NOT NULL,
    PRIMARY KEY (platform, channel, message_id, user_id)
);

-- One row per running bot process; seen_at is refreshed by its heartbeat.
CREATE TABLE instances (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT now(),
    seen_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE inbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    platform text NOT NULL,
    channel text NOT NULL,
    thread text NOT NULL DEFAULT '',
    message_id text,
    reply_to text,
    author text NOT NULL,
    author_name text NOT NULL DEFAULT '',
    roles text NOT NULL DEFAULT '',
    text text NOT NULL DEFAULT '',
    command text,
    state text NOT NULL,
    owner bigint,
    received_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    -- NULLs are distinct: a message without a platform id is never a duplicate.
    UNIQUE (platform, channel, message_id)
);
CREATE INDEX inbox_unfinished ON inbox (platform, channel, thread, id) WHERE state <> 'done';
CREATE INDEX inbox_by_age ON inbox (state, updated_at);
