-- textmill PostgreSQL schema, version 1. Runs inside the target schema (search_path).

CREATE TABLE documents (
    id             text PRIMARY KEY,             -- relative path; `path#n` for a JSON Lines record
    path           text NOT NULL,
    sha256         text NOT NULL,                -- of the source file
    status         text NOT NULL,                -- ok | duplicate | rejected
    reason         text,                         -- why a record was rejected
    text           text NOT NULL,                -- cleaned text
    meta           jsonb NOT NULL,
    lang           text,
    lang_score     double precision,
    cluster        text,                         -- id of the cluster's canonical document
    duplicate_of   text,
    entity_count   integer NOT NULL,
    row_hash       text NOT NULL,                -- digest of every published field: unchanged rows are not written
    run_id         text NOT NULL,                -- the run that last changed the row
    published_at   timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    deleted_at     timestamptz                   -- tombstone: the source is gone from the corpus
);
CREATE INDEX documents_lang ON documents (lang) WHERE deleted_at IS NULL;
CREATE INDEX documents_cluster ON documents (cluster) WHERE deleted_at IS NULL;
CREATE INDEX documents_status ON documents (status) WHERE deleted_at IS NULL;

CREATE TABLE entities (
    doc_id      text NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    ord         integer NOT NULL,                -- position among the document's entities
    text        text NOT NULL,
    label       text NOT NULL,
    start_char  integer NOT NULL,
    end_char    integer NOT NULL,
    canonical   text,
    PRIMARY KEY (doc_id, ord)
);
CREATE INDEX entities_canonical ON entities (canonical);

CREATE TABLE clusters (
    id         text PRIMARY KEY,
    canonical  text NOT NULL,
    size       integer NOT NULL
);

CREATE TABLE runs (
    run_id         text PRIMARY KEY,
    run_name       text,
    published_at   timestamptz NOT NULL DEFAULT now(),
    config_digest  text,
    documents      integer NOT NULL,
    inserted       integer NOT NULL,
    updated        integer NOT NULL,
    unchanged      integer NOT NULL,
    deleted        integer NOT NULL
);
