-- Moves the PAR pack's partners and live keys into apikey in one statement: each partner
-- becomes an apikey partner, each key an imported one that its holder keeps presenting as
-- <key_id>.<secret>. Returns the old key id next to the new one.
WITH moved AS MATERIALIZED (
    SELECT p.partner_id AS old_partner_id,
           apikey_partner_create(p.name, p.contact_email) AS partner_id
    FROM partners p
    WHERE p.active
)
SELECT k.key_id AS par_key_id,
       apikey_import(m.partner_id, k.secret_hash, 'argon2id-hmac',
                     string_to_array(k.scopes, ','),
                     lookup => k.key_id,
                     name => k.key_id,
                     not_before => k.not_before,
                     expires_at => k.not_after,
                     rate_per_minute => k.rate_per_minute) AS key_id
FROM api_keys k
JOIN moved m ON m.old_partner_id = k.partner_id
WHERE k.status = 'active'
  AND (k.not_after IS NULL OR k.not_after > now());
