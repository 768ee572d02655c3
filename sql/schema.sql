-- Tables of the apikey extension. Functions (apikey_*) are generated from Rust; roles,
-- grants and row-level security are in security.sql, which runs after them.

CREATE SCHEMA apikey;
COMMENT ON SCHEMA apikey IS 'Partners, API keys and their audit log (extension apikey)';

CREATE TABLE apikey.partners (
    partner_id    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    contact_email text CHECK (length(contact_email) <= 254),
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    -- One bucket shared by every key of the partner, checked as well as each key's own
    -- (apikey_partner_set_limits); NULL: none.
    rate_per_minute integer CHECK (rate_per_minute >= 1)
);
CREATE UNIQUE INDEX partners_name_key ON apikey.partners (lower(name));

CREATE TABLE apikey.keys (
    key_id             text PRIMARY KEY,
    partner_id         uuid NOT NULL REFERENCES apikey.partners (partner_id),
    -- Argon2id PHC string of HMAC-SHA256(pepper, secret); never the secret or the token.
    secret_hash        text NOT NULL,
    -- Which pepper of apikey.pepper_file made secret_hash (not the pepper itself).
    pepper_fingerprint text NOT NULL,
    name               text,
    scopes             text[] NOT NULL DEFAULT '{}',
    tags               text[] NOT NULL DEFAULT '{}',
    metadata           jsonb NOT NULL DEFAULT '{}',
    environment        text NOT NULL CHECK (environment IN ('live', 'test')),
    enabled            boolean NOT NULL DEFAULT true,
    not_before         timestamptz,
    expires_at         timestamptz,
    -- In the future while a rotated key is in its grace period.
    revoked_at         timestamptz,
    revoke_reason      text,
    rotated_to         text REFERENCES apikey.keys (key_id),
    rate_per_minute    integer NOT NULL CHECK (rate_per_minute > 0),
    allowed_cidrs      cidr[],
    created_at         timestamptz NOT NULL DEFAULT now(),
    created_by         text NOT NULL DEFAULT current_user,
    last_used_at       timestamptz,
    -- Disabled by an operator: only an operator may enable it again (apikey_set_enabled).
    disabled_by_operator boolean NOT NULL DEFAULT false
);
CREATE INDEX keys_partner_id_idx ON apikey.keys (partner_id);
CREATE UNIQUE INDEX keys_rotated_to_key ON apikey.keys (rotated_to);

-- Lifecycle events and failed verifications. Append-only: see the trigger below.
CREATE TABLE apikey.audit_log (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    action     text NOT NULL,
    key_id     text,
    partner_id uuid,
    actor      text NOT NULL,
    reason     text,
    client_ip  inet,
    detail     jsonb NOT NULL DEFAULT '{}',
    -- The key verified in the acting transaction (a request through the shim names the key
    -- that made it); NULL for SQL callers who verified none.
    actor_key_id text
);
CREATE INDEX audit_log_key_id_idx ON apikey.audit_log (key_id, at);
CREATE INDEX audit_log_partner_id_idx ON apikey.audit_log (partner_id, at);

-- UPDATE, DELETE and TRUNCATE raise 42501, except the background worker's retention
-- DELETEs (extension/src/flush.rs), which nothing reachable from SQL can imitate.
CREATE FUNCTION apikey.audit_log_is_append_only() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'apikey_audit_log_is_append_only';
CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON apikey.audit_log
    FOR EACH ROW EXECUTE FUNCTION apikey.audit_log_is_append_only();
CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON apikey.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION apikey.audit_log_is_append_only();
-- ALWAYS: also where session_replication_role = replica, which a superuser (or a
-- replication role) could otherwise set to skip them.
ALTER TABLE apikey.audit_log ENABLE ALWAYS TRIGGER audit_log_append_only;
ALTER TABLE apikey.audit_log ENABLE ALWAYS TRIGGER audit_log_no_truncate;

CREATE INDEX audit_log_at_idx ON apikey.audit_log (at);

-- Verification counts per key, minute and reason, written by the background worker from
-- shared memory (key_id NULL where no key was identified). NULLS NOT DISTINCT: the counts
-- without a key of one minute and reason are one row.
CREATE TABLE apikey.usage (
    minute     timestamptz NOT NULL,
    key_id     text,
    partner_id uuid,
    reason     text NOT NULL,
    count      bigint NOT NULL CHECK (count > 0),
    -- Credits these verifications spent from a key's or partner's balance (0.8.0).
    spent      bigint NOT NULL DEFAULT 0 CHECK (spent >= 0),
    CONSTRAINT usage_minute_key_id_reason_key UNIQUE NULLS NOT DISTINCT (minute, key_id, reason)
);
CREATE INDEX usage_key_id_idx ON apikey.usage (key_id, minute);
CREATE INDEX usage_partner_id_idx ON apikey.usage (partner_id, minute);

-- Credit balances of keys (extension/src/credits.rs). Verification spends in shared memory;
-- the background worker moves what was spent into `remaining` and records in `spent_mark`
-- how much of the server's running count (of epoch `mark_epoch`) the row holds, so a write
-- is never lost or applied twice. The row moves to a rotated key's successor: the family
-- spends one balance. `credit_id` names the balance in shared memory and is never reused.
CREATE TABLE apikey.key_credits (
    key_id          text PRIMARY KEY REFERENCES apikey.keys (key_id) ON DELETE CASCADE,
    credit_id       bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    remaining       bigint NOT NULL,
    refill_amount   bigint CHECK (refill_amount >= 0),
    refill_interval interval,
    -- When the balance was set: refills fall at set_at + n * refill_interval (UTC).
    set_at          timestamptz NOT NULL,
    next_refill_at  timestamptz,
    spent_mark      bigint NOT NULL DEFAULT 0,
    mark_epoch      bigint NOT NULL DEFAULT 0,
    -- Moves on with every set and top-up (what sessions must read again); the worker's
    -- writes keep the balance as it was and leave it alone.
    generation      bigint NOT NULL DEFAULT 0,
    CHECK ((refill_amount IS NULL) = (refill_interval IS NULL)),
    CHECK ((refill_amount IS NULL) = (next_refill_at IS NULL))
);

-- The balance every key of a partner spends from as well as its own
-- (apikey_partner_set_limits), kept as apikey.key_credits keeps a key's. Its credit_id comes
-- from the same sequence, so one id names one balance in shared memory.
CREATE TABLE apikey.partner_credits (
    partner_id      uuid PRIMARY KEY REFERENCES apikey.partners (partner_id) ON DELETE CASCADE,
    credit_id       bigint NOT NULL UNIQUE
                    DEFAULT nextval('apikey.key_credits_credit_id_seq'),
    remaining       bigint NOT NULL,
    refill_amount   bigint CHECK (refill_amount >= 0),
    refill_interval interval,
    set_at          timestamptz NOT NULL,
    next_refill_at  timestamptz,
    spent_mark      bigint NOT NULL DEFAULT 0,
    mark_epoch      bigint NOT NULL DEFAULT 0,
    generation      bigint NOT NULL DEFAULT 0,
    CHECK ((refill_amount IS NULL) = (refill_interval IS NULL)),
    CHECK ((refill_amount IS NULL) = (next_refill_at IS NULL))
);

-- Keys another system issued, brought in by their stored hash (apikey_import,
-- extension/src/imported.rs). The key's row in apikey.keys holds that hash until its first
-- successful verification (pepper_fingerprint 'imported:<format>'), then apikey's own.
-- lookup is how verification finds the key from its token: 'hmac:<hex>' (a sha256 key's:
-- an HMAC under the pepper of the token's digest), 'id:<id>' or 'prefix:<the token's first
-- characters>'.
CREATE TABLE apikey.imported_keys (
    lookup      text PRIMARY KEY,
    key_id      text NOT NULL UNIQUE REFERENCES apikey.keys (key_id) ON DELETE CASCADE,
    hash_format text NOT NULL
                CHECK (hash_format IN ('sha256', 'argon2id-hmac', 'bcrypt', 'argon2id')),
    imported_at timestamptz NOT NULL DEFAULT now()
);

-- The lookup forms imported keys use (and the prefix lengths), so verification computes no
-- other; written with apikey.imported_keys, never shrinks.
CREATE TABLE apikey.import_forms (
    form          text NOT NULL CHECK (form IN ('hmac', 'id', 'prefix')),
    prefix_length integer NOT NULL DEFAULT 0,
    PRIMARY KEY (form, prefix_length)
);

-- The outbox: events for partners (key.issued, key.revoked, ...), written in the same
-- transaction as their cause, so a change that rolls back announces nothing. Deleted by the
-- background worker after apikey.event_retention. Never holds a token or a secret.
CREATE TABLE apikey.events (
    event_id   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    partner_id uuid NOT NULL REFERENCES apikey.partners (partner_id),
    type       text NOT NULL,
    key_id     text,
    -- The webhook body: {"type", "timestamp", "data"}.
    payload    jsonb NOT NULL
);
CREATE INDEX events_created_at_idx ON apikey.events (created_at);
CREATE INDEX events_partner_id_idx ON apikey.events (partner_id, created_at);

-- Partners' webhook endpoints. The signing secret is sealed (ChaCha20-Poly1305 under a key
-- derived from the pepper named by secret_pepper, extension/src/webhook_endpoints.rs): no
-- role but the owner reads those columns, and what they hold signs nothing without the
-- pepper file. During a rotation's grace the previous secret signs too.
CREATE TABLE apikey.webhook_endpoints (
    endpoint_id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    partner_id             uuid NOT NULL REFERENCES apikey.partners (partner_id),
    url                    text NOT NULL,
    events                 text[] NOT NULL,
    enabled                boolean NOT NULL DEFAULT true,
    secret_sealed          bytea NOT NULL,
    secret_pepper          text NOT NULL,
    previous_secret_sealed bytea,
    previous_secret_pepper text,
    previous_secret_until  timestamptz,
    created_at             timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at             timestamptz NOT NULL DEFAULT clock_timestamp(),
    secret_rotated_at      timestamptz,
    -- Since when every attempt failed; cleared by a success. Too long, and the endpoint is
    -- disabled (disabled_at, disabled_reason) until re-enabled.
    failing_since          timestamptz,
    disabled_at            timestamptz,
    disabled_reason        text,
    -- Failed attempts since the last success, and until when the last one pauses the
    -- endpoint (apikey_webhook_report): a failing receiver is tried now and then, not
    -- once per queued event.
    failures_in_a_row      int NOT NULL DEFAULT 0,
    paused_until           timestamptz
);
CREATE INDEX webhook_endpoints_partner_id_idx ON apikey.webhook_endpoints (partner_id);

-- One row per event and endpoint subscribed to it, written with the event. The shims lease
-- due rows (apikey_webhook_claim) and report each attempt (apikey_webhook_report).
CREATE TABLE apikey.webhook_deliveries (
    delivery_id     bigserial PRIMARY KEY,
    event_id        uuid NOT NULL REFERENCES apikey.events (event_id) ON DELETE CASCADE,
    endpoint_id     uuid NOT NULL REFERENCES apikey.webhook_endpoints (endpoint_id) ON DELETE CASCADE,
    partner_id      uuid NOT NULL,
    event_type      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    leased_until    timestamptz,
    delivered_at    timestamptz,
    last_status     int,
    last_error      text
);
CREATE INDEX webhook_deliveries_due_idx ON apikey.webhook_deliveries (next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_endpoint_id_idx ON apikey.webhook_deliveries (endpoint_id, delivery_id);
CREATE INDEX webhook_deliveries_event_id_idx ON apikey.webhook_deliveries (event_id);
-- The attempts in flight, which apikey_webhook_claim shares out per endpoint and partner.
CREATE INDEX webhook_deliveries_leased_idx ON apikey.webhook_deliveries (leased_until)
    WHERE state = 'pending' AND leased_until IS NOT NULL;

-- Every attempt: HTTP status (NULL without an answer), latency and what went wrong.
CREATE TABLE apikey.webhook_attempts (
    attempt_id  bigserial PRIMARY KEY,
    delivery_id bigint NOT NULL REFERENCES apikey.webhook_deliveries (delivery_id) ON DELETE CASCADE,
    endpoint_id uuid NOT NULL,
    partner_id  uuid NOT NULL,
    event_id    uuid NOT NULL,
    attempt     int NOT NULL,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    status_code int,
    latency_ms  int,
    error       text
);
CREATE INDEX webhook_attempts_delivery_id_idx ON apikey.webhook_attempts (delivery_id, attempt);

-- Reminders already sent (apikey_send_reminders): one row per key and kind ('expiring_7d',
-- 'expiring_1d', 'rotation_due'), so each is sent once even after its event is deleted.
-- No foreign key, as for events and the audit log: what a DBA may do to apikey.keys
-- (TRUNCATE among it) stays as it was.
CREATE TABLE apikey.key_reminders (
    key_id  text NOT NULL,
    kind    text NOT NULL,
    sent_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (key_id, kind)
);
-- The keys a minute's reminder pass looks at: live ones with an expiry.
CREATE INDEX keys_expires_at_idx ON apikey.keys (expires_at)
    WHERE revoked_at IS NULL AND expires_at IS NOT NULL;
-- pg_dump keeps the contents of these tables (they would otherwise be treated as part of
-- the extension's definition and left out), so a restore keeps every key working.
SELECT pg_catalog.pg_extension_config_dump('apikey.partners', '');
SELECT pg_catalog.pg_extension_config_dump('apikey.keys', '');
SELECT pg_catalog.pg_extension_config_dump('apikey.audit_log', '');
SELECT pg_catalog.pg_extension_config_dump('apikey.audit_log_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('apikey.usage', '');
SELECT pg_catalog.pg_extension_config_dump('apikey.events', '');
SELECT pg_catalog.pg_extension_config_dump('apikey.webhook_endpoints', '');
SELECT pg_catalog.pg_extension_config_dump('apikey.webhook_deliveries', '');
SELECT pg_catalog.pg_extension_config_dump('apikey.webhook_attempts', '');
SELECT pg_catalog.pg_extension_config_dump('apikey.webhook_deliveries_delivery_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('apikey.webhook_attempts_attempt_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('apikey.key_reminders', '');
SELECT pg_catalog.pg_extension_config_dump('apikey.key_credits', '');
SELECT pg_catalog.pg_extension_config_dump('apikey.key_credits_credit_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('apikey.partner_credits', '');
SELECT pg_catalog.pg_extension_config_dump('apikey.imported_keys', '');
SELECT pg_catalog.pg_extension_config_dump('apikey.import_forms', '');
