-- textmill PostgreSQL schema, version 2: what each shard's last publish, and the last finish,
-- wrote here, by key. A shard whose key is recorded here and unchanged is not read again.

CREATE TABLE publish_keys (
    name         text PRIMARY KEY,               -- `shard-N`, or `finish`
    key          text NOT NULL,                  -- the publish key it was written under
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
