-- Invalidation of the key rows each backend remembers for apikey_verify
-- (extension/src/known_keys.rs). Every change verification could notice sends a relcache
-- invalidation of the table, delivered to every session after commit; a session drops its
-- remembered rows when it sees one. ENABLE ALWAYS: the triggers also fire where
-- session_replication_role = replica (logical replication, some restore tools).
-- Disabling them would let sessions verify against rows as they were.
CREATE FUNCTION apikey.forget_known_keys() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'apikey_forget_known_keys';

CREATE TRIGGER keys_added_or_removed
    AFTER INSERT OR DELETE OR TRUNCATE ON apikey.keys
    FOR EACH STATEMENT EXECUTE FUNCTION apikey.forget_known_keys();
-- Only the columns apikey_verify reads: the once-a-minute last_used_at update that
-- verification itself makes must not clear every session's rows.
CREATE TRIGGER keys_verification_columns_changed
    AFTER UPDATE ON apikey.keys
    FOR EACH ROW
    WHEN ((OLD.key_id, OLD.partner_id, OLD.secret_hash, OLD.pepper_fingerprint, OLD.scopes,
           OLD.rate_per_minute, OLD.expires_at, OLD.not_before, OLD.revoked_at, OLD.enabled,
           OLD.allowed_cidrs)
          IS DISTINCT FROM
          (NEW.key_id, NEW.partner_id, NEW.secret_hash, NEW.pepper_fingerprint, NEW.scopes,
           NEW.rate_per_minute, NEW.expires_at, NEW.not_before, NEW.revoked_at, NEW.enabled,
           NEW.allowed_cidrs))
    EXECUTE FUNCTION apikey.forget_known_keys();
CREATE TRIGGER partners_changed
    AFTER UPDATE OR DELETE OR TRUNCATE ON apikey.partners
    FOR EACH STATEMENT EXECUTE FUNCTION apikey.forget_known_keys();

-- A balance's row changes for the worker's writes too, which keep the balance as it was
-- (see extension/src/credits.rs): only a set, a top-up, a refill or a move to a successor
-- needs sessions to read it again.
CREATE TRIGGER key_credits_added_or_removed
    AFTER INSERT OR DELETE OR TRUNCATE ON apikey.key_credits
    FOR EACH STATEMENT EXECUTE FUNCTION apikey.forget_known_keys();
CREATE TRIGGER key_credits_changed
    AFTER UPDATE ON apikey.key_credits
    FOR EACH ROW
    WHEN ((OLD.key_id, OLD.generation, OLD.refill_amount, OLD.next_refill_at)
          IS DISTINCT FROM (NEW.key_id, NEW.generation, NEW.refill_amount, NEW.next_refill_at))
    EXECUTE FUNCTION apikey.forget_known_keys();
CREATE TRIGGER partner_credits_added_or_removed
    AFTER INSERT OR DELETE OR TRUNCATE ON apikey.partner_credits
    FOR EACH STATEMENT EXECUTE FUNCTION apikey.forget_known_keys();
CREATE TRIGGER partner_credits_changed
    AFTER UPDATE ON apikey.partner_credits
    FOR EACH ROW
    WHEN ((OLD.partner_id, OLD.generation, OLD.refill_amount, OLD.next_refill_at)
          IS DISTINCT FROM
          (NEW.partner_id, NEW.generation, NEW.refill_amount, NEW.next_refill_at))
    EXECUTE FUNCTION apikey.forget_known_keys();

-- Imported keys are found by their lookup (extension/src/imported.rs): any change of one
-- may change which key a token finds.
CREATE TRIGGER imported_keys_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON apikey.imported_keys
    FOR EACH STATEMENT EXECUTE FUNCTION apikey.forget_known_keys();

ALTER TABLE apikey.keys ENABLE ALWAYS TRIGGER keys_added_or_removed;
ALTER TABLE apikey.keys ENABLE ALWAYS TRIGGER keys_verification_columns_changed;
ALTER TABLE apikey.partners ENABLE ALWAYS TRIGGER partners_changed;
ALTER TABLE apikey.key_credits ENABLE ALWAYS TRIGGER key_credits_added_or_removed;
ALTER TABLE apikey.key_credits ENABLE ALWAYS TRIGGER key_credits_changed;
ALTER TABLE apikey.partner_credits ENABLE ALWAYS TRIGGER partner_credits_added_or_removed;
ALTER TABLE apikey.partner_credits ENABLE ALWAYS TRIGGER partner_credits_changed;
ALTER TABLE apikey.imported_keys ENABLE ALWAYS TRIGGER imported_keys_changed;
